"""The Models dialog: which model bundles are installed, their model cards, what is missing, and import.

Torch-free: it reads manifests (``medview.engine.manifest``) and never loads
weights.  Importing copies a bundle folder or zip into the user's model folder
after its manifest and every checksum have been verified; that runs on a worker
thread (checksumming a large weights file takes a moment) and a refused bundle
leaves nothing behind.
"""

from __future__ import annotations

import html
from pathlib import Path

from medview.config import Settings
from medview.engine.api import DEMO_BANNER
from medview.engine.bundles import BundleScan, find_bundles, import_bundle
from medview.engine.manifest import TASKS, ModelCard
from medview.tasks import ClinicalTask
from medview.ui.dialogs import show_message
from medview.ui.qt import QtCore, QtWidgets
from medview.ui.workers import Task, TaskRunner

TASK_TITLES: dict[str, str] = {  # by clinical task (a str enum): the manifest's task string finds it
    ClinicalTask.LIVER_SEGMENTATION: "Liver segmentation (CT)",
    ClinicalTask.KIDNEY_STONE: "Kidney stone (CT)",
    ClinicalTask.LUNG_SEGMENTATION: "Lung segmentation (chest CT, used by the COVID model)",
    ClinicalTask.COVID_CT: "COVID pneumonia (chest CT)",
    ClinicalTask.SKIN_LESION: "Skin lesion (photo)",
    ClinicalTask.LUNG_SOUND: "Lung sounds (auscultation)",
}
COLUMNS = ("Task", "Model", "Version", "Trained on", "Key metrics", "Location")


def model_card_html(card: ModelCard) -> str:
    """Everything a clinician or IT person needs to judge a bundle, from its manifest."""
    trained = card.trained_on
    rows = [
        ("Model", f"{card.id} {card.version}"),
        ("Task", TASK_TITLES.get(card.task, card.task)),
        ("Architecture", f"{card.arch} {dict(card.arch_args) if card.arch_args else ''}"),
        ("Classes", ", ".join(card.class_names)),
        ("Thresholds", ", ".join(f"{k} {v:g}" for k, v in card.thresholds.items()) or "default 0.5"),
        ("Trained on", f"{trained.dataset}; split {trained.split}"),
        ("Counts", ", ".join(f"{v} {k}" for k, v in trained.counts.items()) or "not recorded"),
        ("ImageNet backbone", trained.imagenet_backbone or "none"),
        ("Validation metrics", ", ".join(f"{k} {v:.3g}" for k, v in card.metrics.items()) or "none recorded"),
        ("Input", _input_text(card)),
        ("Files", ", ".join(f"{w.path} ({w.role})" for w in card.weights)),
        ("Created", card.created or "unknown"),
        ("Libraries", ", ".join(f"{k} {v}" for k, v in card.library_versions.items())),
        ("Folder", str(card.bundle_dir)),
    ]
    if trained.notes:
        rows.append(("Notes", trained.notes))
    body = "".join(f"<tr><td><b>{html.escape(k)}</b></td><td>{html.escape(v)}</td></tr>" for k, v in rows)
    banner = ""
    if card.is_demo:
        kind = "synthetic" if trained.synthetic else "demo"
        banner = (
            f"<p style='color:#ffb347'><b>{DEMO_BANNER.capitalize()}.</b> Trained on {kind} data; "
            "every result it produces carries this warning.</p>"
        )
    return f"{banner}<table cellspacing='4'>{body}</table>"


def _input_text(card: ModelCard) -> str:
    spec = card.input
    parts = [spec.modality]
    if spec.size:
        parts.append("x".join(map(str, spec.size)))
    if spec.hu_window:
        parts.append(f"HU [{spec.hu_window[0]:g}, {spec.hu_window[1]:g}]")
    if spec.sample_rate:
        parts.append(f"{spec.sample_rate} Hz")
    parts.append(f"normalisation {spec.normalisation}")
    return ", ".join(parts)


class ModelsDialog(QtWidgets.QDialog):
    """Installed bundles with their model cards, refused bundles with why, and import of new ones."""

    bundles_changed = QtCore.Signal()

    def __init__(self, settings: Settings, tasks: TaskRunner, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("models_dialog")
        self.setWindowTitle("Models")
        self.settings = settings
        self.tasks = tasks
        self.scan = BundleScan()
        self.import_task: Task | None = None

        self.table = QtWidgets.QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.itemSelectionChanged.connect(self._show_selected)
        self.card_view = QtWidgets.QTextBrowser()
        self.card_view.setOpenLinks(False)
        self.missing_label = QtWidgets.QLabel()
        self.missing_label.setWordWrap(True)
        self.missing_label.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status_label = QtWidgets.QLabel()
        self.status_label.setWordWrap(True)

        self.import_folder_button = QtWidgets.QPushButton("Import bundle folder…")
        self.import_zip_button = QtWidgets.QPushButton("Import bundle zip…")
        self.import_folder_button.clicked.connect(self._choose_folder)
        self.import_zip_button.clicked.connect(self._choose_zip)
        buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        buttons.addButton(self.import_folder_button, QtWidgets.QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(self.import_zip_button, QtWidgets.QDialogButtonBox.ButtonRole.ActionRole)

        splitter = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        splitter.addWidget(self.table)
        splitter.addWidget(self.card_view)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(splitter, stretch=1)
        layout.addWidget(self.missing_label)
        layout.addWidget(self.status_label)
        layout.addWidget(buttons)
        self.resize(980, 640)
        self.refresh()

    # ------------------------------------------------------------------ contents

    def refresh(self) -> None:
        """Scan the model folders again and show what is there."""
        self.scan = find_bundles(self.settings.model_folders())
        self.table.setRowCount(len(self.scan.cards))
        for row, card in enumerate(self.scan.cards):
            metrics = ", ".join(f"{k} {v:.3g}" for k, v in list(card.metrics.items())[:3])
            trained = card.trained_on.dataset + (" [demo]" if card.is_demo else "")
            values = (
                TASK_TITLES.get(card.task, card.task),
                card.id,
                card.version,
                trained,
                metrics,
                str(card.bundle_dir),
            )
            for column, value in enumerate(values):
                self.table.setItem(row, column, QtWidgets.QTableWidgetItem(value))
        self.table.resizeColumnsToContents()
        if self.scan.cards:
            self.table.selectRow(0)
        else:
            self.card_view.setHtml("<p>No model bundle is installed. MedView works as a viewer without one.</p>")
        self.missing_label.setText(self.missing_text())
        refused = [str(problem) for problem in self.scan.problems]
        self.status_label.setText("Refused bundles:\n" + "\n".join(refused) if refused else "")

    def missing_text(self) -> str:
        """Which tasks have no model, and how to get one."""
        installed = {card.task for card in self.scan.cards}
        missing = [TASK_TITLES[task] for task in sorted(TASKS) if task not in installed]
        if not missing:
            return "Every task has a model installed."
        return (
            f"No model installed for: {'; '.join(missing)}.\nTo add one, import a bundle folder or zip "
            f"(made with the training package, medview-train) or copy it into {self.settings.user_models_dir()}."
        )

    def _show_selected(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if rows:
            self.card_view.setHtml(model_card_html(self.scan.cards[rows[0].row()]))

    # ------------------------------------------------------------------ import

    def _choose_folder(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Import a model bundle folder")
        if folder:
            self.import_from(Path(folder))

    def _choose_zip(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Import a model bundle zip", "", "Zip files (*.zip)")
        if path:
            self.import_from(Path(path))

    def import_from(self, source: Path) -> Task:
        """Verify and copy the bundle at ``source`` into the user's model folder, off the GUI thread."""
        destination = self.settings.user_models_dir()
        built_in = [folder for folder in self.settings.model_folders() if folder != destination]

        def work(_progress: object, _cancelled: object, _partial: object) -> ModelCard:
            return import_bundle(source, destination, other_folders=built_in)

        task = Task(work, "Importing model bundle")
        task.signals.succeeded.connect(self._on_imported)
        task.signals.errored.connect(self._on_import_failed)
        task.signals.finished.connect(self._on_import_finished)
        self._set_busy(True)
        self.status_label.setText(f"Checking {source.name}…")
        self.import_task = self.tasks.start(task)
        return task

    def _on_import_finished(self) -> None:
        self._set_busy(False)

    def _set_busy(self, busy: bool) -> None:
        self.import_folder_button.setEnabled(not busy)
        self.import_zip_button.setEnabled(not busy)

    def _on_imported(self, card: ModelCard) -> None:
        self.refresh()
        self.status_label.setText(f"Imported {card.label} (checksums verified) into {card.bundle_dir}.")
        self.bundles_changed.emit()

    def _on_import_failed(self, message: str, details: str) -> None:
        self.status_label.setText(f"Not imported: {message}")
        show_message(self, "Model bundle not imported", message, details)
