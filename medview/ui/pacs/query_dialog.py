"""Query/retrieve in the window: search a PACS for studies and fetch the chosen ones into the local study store.

The network work (``medview.pacs.query``: C-FIND, C-GET) runs in a ``Task``
off the GUI thread, with progress and Stop.  Each study fetched is scanned
(headers only) on that thread and its series are announced through
``series_retrieved``, the same ``SeriesInfo`` the receiver's
``PacsReceiver.series_updated`` carries, so the study browser lists them the
same way.  The PACS's AE title, host and port are remembered in ``Settings``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medview.config import Settings
from medview.errors import Cancelled, MedviewError
from medview.io.dicom import SeriesInfo, scan_paths
from medview.pacs.query import MAX_RESULTS, RemoteNode, RemoteStudy, RetrieveResult, find_studies, retrieve_study
from medview.pacs.receiver import validate_ae_title
from medview.pacs.store import LocalStudyStore
from medview.ui.qt import QtCore, QtWidgets
from medview.ui.workers import Task, TaskRunner

if TYPE_CHECKING:
    from medview.pacs.dicomweb import WebNode

log = logging.getLogger(__name__)

COLUMNS = ("Patient", "Patient ID", "Birth date", "Study date", "Description", "Modalities", "Images", "Accession")
MODALITIES = ("", "CT", "MR", "CR", "DX", "MG", "US", "NM", "PT", "XA", "RF", "SC", "SEG", "SR", "OT")
ERROR_COLOUR = "#e05050"


def person_name(value: str) -> str:
    """A DICOM person name for reading: "DOE^JOHN^A" becomes "DOE, JOHN A"."""
    parts = [part.strip() for part in value.split("=")[0].split("^")]
    family, given = parts[0], " ".join(part for part in parts[1:] if part)
    return f"{family}, {given}" if family and given else family or given


def dicom_date(value: str) -> str:
    """YYYYMMDD as YYYY-MM-DD; anything else as it is."""
    return f"{value[:4]}-{value[4:6]}-{value[6:]}" if len(value) == 8 and value.isdigit() else value


@dataclass
class RetrieveSummary:
    """What one Retrieve brought: a result per study fetched, and the studies that failed with the reason."""

    results: list[RetrieveResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        """The files of every retrieved instance, in the order they arrived."""
        return [path for result in self.results for path in result.paths]


def announce_study(store: LocalStudyStore, study_uid: str) -> list[SeriesInfo]:
    """The series of a study in ``store``, scanned (headers only) as the study browser lists them."""
    files = [path for series in store.series(study_uid) for path in store.series_files(series.series_uid, study_uid)]
    if not files:
        return []
    result = scan_paths(files)
    for problem in result.problems:
        log.info("retrieved file not listed: %s", problem)
    return result.series


class PacsQueryDialog(QtWidgets.QDialog):
    """Find studies on a PACS (C-FIND) and fetch the selected ones (C-GET) into the local study store.

    Signals: ``series_retrieved(SeriesInfo)`` for each series of each study
    fetched (also of one stopped or failed half-way: what arrived is stored),
    ``retrieved(list[Path])`` with the files one Retrieve stored,
    ``searched(list[RemoteStudy])`` when a search's rows are shown.
    """

    series_retrieved = QtCore.Signal(object)  # SeriesInfo
    retrieved = QtCore.Signal(list)  # list[Path]
    searched = QtCore.Signal(list)  # list[RemoteStudy]

    def __init__(
        self,
        settings: Settings,
        store: LocalStudyStore,
        tasks: TaskRunner | None = None,
        parent: QtWidgets.QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("pacs_query_dialog")
        self.setWindowTitle("Query/retrieve from PACS")
        self.settings = settings
        self.store = store
        # a pool of its own by default: a long retrieve must not hold up the window's loads
        self.tasks = tasks if tasks is not None else TaskRunner(self, max_threads=1)
        self.task: Task | None = None
        self._running = False
        self.studies: list[RemoteStudy] = []
        #: (study index, study count) while a retrieve runs, None while a search runs
        self._retrieving: tuple[int, int] | None = None

        self.ae_title = QtWidgets.QLineEdit(settings.pacs_remote_ae_title)
        self.ae_title.setMaxLength(16)
        self.ae_title.setPlaceholderText("e.g. ORTHANC")
        self.host = QtWidgets.QLineEdit(settings.pacs_remote_host)
        self.host.setPlaceholderText("name or address, e.g. 10.0.0.5")
        self.port = QtWidgets.QSpinBox()
        self.port.setRange(1, 65535)
        self.port.setValue(settings.pacs_remote_port)
        self.calling_label = QtWidgets.QLabel(
            f"This workstation calls as {settings.pacs_ae_title}: the PACS must know that AE title."
        )
        self.calling_label.setWordWrap(True)
        node_form = QtWidgets.QFormLayout()
        node_form.addRow("AE title", self.ae_title)
        node_form.addRow("Host", self.host)
        node_form.addRow("Port", self.port)
        self.method = QtWidgets.QComboBox()
        self.method.setObjectName("retrieve_method")
        self.method.addItem("C-GET: the images come back on this workstation's connection", "C-GET")
        self.method.addItem("C-MOVE: the PACS sends them to this workstation's receiver", "C-MOVE")
        self.method.addItem("DICOMweb: search, retrieve and send over HTTP(S)", "DICOMweb")
        self.method.setCurrentIndex(max(self.method.findData(settings.pacs_remote_retrieve), 0))
        self.method.setToolTip(
            "Many PACS allow only C-MOVE. It needs this workstation's DICOM receiver on (File > DICOM receiver), "
            "and the PACS must know its AE title, host and port"
        )
        node_form.addRow("Retrieve with", self.method)
        self.url = QtWidgets.QLineEdit(settings.pacs_remote_url)
        self.url.setPlaceholderText("e.g. https://pacs.hospital:8042/dicom-web")
        self.ca_file = QtWidgets.QLineEdit(settings.pacs_remote_ca_file)
        self.ca_file.setPlaceholderText("the hospital's CA file (HTTPS, TLS); empty: the system's")
        self.tls = QtWidgets.QCheckBox("TLS (the PACS's certificate checked against the CA file)")
        self.tls.setChecked(settings.pacs_remote_tls)
        node_form.addRow("", self.tls)
        node_form.addRow("DICOMweb URL", self.url)
        node_form.addRow("CA file", self.ca_file)
        node_form.addRow(self.calling_label)
        self.method.currentIndexChanged.connect(lambda _index: self._show_method())
        self.tls.toggled.connect(lambda _on: self._show_method())
        self._show_method()
        node_box = QtWidgets.QGroupBox("PACS")
        node_box.setLayout(node_form)

        self.patient_name = QtWidgets.QLineEdit()
        self.patient_name.setPlaceholderText("DOE^JOHN, or DOE* (* and ? are wildcards)")
        self.patient_id = QtWidgets.QLineEdit()
        self.study_date = QtWidgets.QLineEdit()
        self.study_date.setPlaceholderText("YYYYMMDD, or a range YYYYMMDD-YYYYMMDD")
        self.modality = QtWidgets.QComboBox()
        self.modality.setEditable(True)
        self.modality.addItems(MODALITIES)
        self.accession = QtWidgets.QLineEdit()
        search_form = QtWidgets.QFormLayout()
        search_form.addRow("Patient name", self.patient_name)
        search_form.addRow("Patient ID", self.patient_id)
        search_form.addRow("Study date", self.study_date)
        search_form.addRow("Modality", self.modality)
        search_form.addRow("Accession number", self.accession)
        search_box = QtWidgets.QGroupBox("Search")
        search_box.setLayout(search_form)

        self.table = QtWidgets.QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.itemDoubleClicked.connect(lambda _item: self.retrieve_selected())

        self.search_button = QtWidgets.QPushButton("Search")
        self.search_button.setDefault(True)
        self.search_button.clicked.connect(self.search)
        self.retrieve_button = QtWidgets.QPushButton("Retrieve")
        self.retrieve_button.setToolTip("Fetch the selected studies into this workstation's received studies")
        self.retrieve_button.clicked.connect(self.retrieve_selected)
        self.stop_button = QtWidgets.QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop)
        self.close_button = QtWidgets.QPushButton("Close")
        self.close_button.clicked.connect(self.reject)
        buttons = QtWidgets.QHBoxLayout()
        for button in (self.search_button, self.retrieve_button, self.stop_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(self.close_button)

        self.progress = QtWidgets.QProgressBar()
        self.progress.setVisible(False)
        self.status_label = QtWidgets.QLabel()
        self.status_label.setWordWrap(True)
        self.error_label = QtWidgets.QLabel()
        self.error_label.setObjectName("pacs_query_error")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet(f"color: {ERROR_COLOUR}")
        self.error_label.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label.setVisible(False)

        top = QtWidgets.QHBoxLayout()
        top.addWidget(node_box)
        top.addWidget(search_box, stretch=1)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(buttons)
        layout.addWidget(self.table, stretch=1)
        layout.addWidget(self.progress)
        layout.addWidget(self.status_label)
        layout.addWidget(self.error_label)
        self.resize(1000, 640)
        self._update_buttons()

    # ------------------------------------------------------------------ input

    def _show_method(self) -> None:
        web = self.method.currentData() == "DICOMweb"
        for widget in (self.ae_title, self.host, self.port, self.tls):
            widget.setEnabled(not web)
        self.url.setEnabled(web)
        self.ca_file.setEnabled(web or self.tls.isChecked())

    def node(self) -> RemoteNode | WebNode:
        """The PACS as entered (a DICOMweb server when that is chosen); ``PacsError`` saying what is wrong."""
        if self.method.currentData() == "DICOMweb":
            from medview.pacs.dicomweb import WebNode

            return WebNode(self.url.text(), self.ca_file.text().strip())
        validate_ae_title(self.settings.pacs_ae_title)  # ours: the receiver's settings dialog sets it
        tls = self.tls.isChecked()
        ca_file = self.ca_file.text().strip() if tls else ""
        return RemoteNode(self.ae_title.text(), self.host.text(), self.port.value(), tls=tls, ca_file=ca_file)

    def _remember(self, node: RemoteNode | WebNode) -> None:
        settings = self.settings
        if settings.pacs_remote_retrieve != self.method.currentData():
            settings.pacs_remote_retrieve = self.method.currentData()
            settings.save()
        if not isinstance(node, RemoteNode):
            if (settings.pacs_remote_url, settings.pacs_remote_ca_file) != (node.url, node.ca_file):
                settings.pacs_remote_url, settings.pacs_remote_ca_file = node.url, node.ca_file
                settings.save()
            return
        ca_file = node.ca_file if node.tls else settings.pacs_remote_ca_file  # kept for when TLS is ticked again
        if (settings.pacs_remote_tls, settings.pacs_remote_ca_file) != (node.tls, ca_file):
            settings.pacs_remote_tls, settings.pacs_remote_ca_file = node.tls, ca_file
            settings.save()
        if (settings.pacs_remote_ae_title, settings.pacs_remote_host, settings.pacs_remote_port) != (
            node.ae_title,
            node.host,
            node.port,
        ):
            settings.pacs_remote_ae_title, settings.pacs_remote_host = node.ae_title, node.host
            settings.pacs_remote_port = node.port
            settings.save()

    def _valid_node(self) -> RemoteNode | WebNode | None:
        try:
            node = self.node()
        except MedviewError as error:
            self._show_error(str(error))
            return None
        self._remember(node)
        return node

    def _show_error(self, text: str) -> None:
        self.error_label.setText(text)
        self.error_label.setVisible(bool(text))

    @property
    def busy(self) -> bool:
        """A search or retrieve is running (until its outcome has reached the GUI thread)."""
        return self._running

    def _update_buttons(self) -> None:
        busy = self.busy
        self.search_button.setEnabled(not busy)
        self.retrieve_button.setEnabled(not busy and bool(self.selected_studies()))
        self.stop_button.setEnabled(busy)

    def selected_studies(self) -> list[RemoteStudy]:
        """The studies selected in the result table, top to bottom."""
        rows = sorted({index.row() for index in self.table.selectionModel().selectedRows()})
        return [self.studies[row] for row in rows if row < len(self.studies)]

    # ------------------------------------------------------------------ search

    def search(self) -> Task | None:
        """Search the PACS with the keys entered (on a worker thread); None when the input is invalid."""
        if self.busy:
            return None
        node = self._valid_node()
        if node is None:
            return None
        our_title = self.settings.pacs_ae_title
        keys: dict[str, str] = {
            "patient_name": self.patient_name.text(),
            "patient_id": self.patient_id.text(),
            "study_date": self.study_date.text(),
            "modality": self.modality.currentText(),
            "accession": self.accession.text(),
        }

        def work(_progress: object, cancelled: Any, _partial: object) -> list[RemoteStudy]:
            if not isinstance(node, RemoteNode):
                from medview.pacs import dicomweb  # loaded with the first DICOMweb search

                return dicomweb.find_studies(node, **keys)  # type: ignore[arg-type]  # the 5 str keys
            return find_studies(node, our_title, cancelled=cancelled, **keys)  # type: ignore[arg-type]  # the 5 str keys

        task = Task(work, f"Searching {node}")
        self._retrieving = None
        self.status_label.setText(f"Searching {node}…")
        return self._start(task, self._on_found)

    def _on_found(self, studies: list[RemoteStudy]) -> None:
        self.studies = list(studies)
        self.table.setRowCount(len(self.studies))
        for row, study in enumerate(self.studies):
            cells = (
                person_name(study.patient_name),
                study.patient_id,
                dicom_date(study.patient_birth_date),
                dicom_date(study.study_date),
                study.study_description,
                ", ".join(study.modalities),
                "" if study.instance_count is None else str(study.instance_count),
                study.accession_number,
            )
            for column, text in enumerate(cells):
                item = QtWidgets.QTableWidgetItem(text)
                item.setToolTip(f"Study Instance UID {study.study_uid}")
                self.table.setItem(row, column, item)
        self.table.resizeColumnsToContents()
        count = len(self.studies)
        found = f"{count} stud{'y' if count == 1 else 'ies'} found" if count else "No study found"
        if count >= MAX_RESULTS:
            found = f"The first {count} studies found are shown: narrow the search to see the others"
        self.status_label.setText(found)
        self.searched.emit(self.studies)

    # ------------------------------------------------------------------ retrieve

    def retrieve_selected(self) -> Task | None:
        """Fetch the selected studies into the store (on a worker thread); None when none is selected."""
        studies = self.selected_studies()
        if self.busy or not studies:
            return None
        node = self._valid_node()
        if node is None:
            return None
        return self.retrieve(node, studies)

    def retrieve(self, node: RemoteNode | WebNode, studies: list[RemoteStudy]) -> Task | None:
        """Fetch ``studies`` from ``node`` one after the other (C-GET, or C-MOVE to this workstation's receiver as
        chosen); a study that fails does not stop the others."""
        our_title, store = self.settings.pacs_ae_title, self.store
        move = self.method.currentData() == "C-MOVE"
        if move and not self.settings.pacs_enabled:
            self._show_error(
                "C-MOVE sends the images to this workstation's DICOM receiver, which is off: turn it on in "
                "File > DICOM receiver (PACS), or retrieve with C-GET"
            )
            return None

        def fetch(study: RemoteStudy, progress: Any, cancelled: Any) -> RetrieveResult:
            if not isinstance(node, RemoteNode):
                from medview.pacs import dicomweb

                return dicomweb.retrieve_study(node, study.study_uid, store, progress=progress, cancelled=cancelled)
            if move:
                from medview.pacs.move import move_study  # as the C-GET client: loaded with the first use

                return move_study(node, our_title, study.study_uid, store, progress=progress, cancelled=cancelled)
            return retrieve_study(
                node,
                our_title,
                study.study_uid,
                store,
                progress=progress,
                cancelled=cancelled,
                sop_classes=study.sop_classes,
            )

        def work(progress: Any, cancelled: Any, partial: Any) -> RetrieveSummary:
            summary = RetrieveSummary()
            for index, study in enumerate(studies):
                partial(("study", index, len(studies)))
                try:
                    summary.results.append(fetch(study, progress, cancelled))
                except Cancelled:
                    partial(("series", announce_study(store, study.study_uid)))
                    raise
                except MedviewError as error:
                    summary.errors.append(str(error))
                partial(("series", announce_study(store, study.study_uid)))
            return summary

        count = len(studies)
        task = Task(work, f"Retrieving {count} stud{'y' if count == 1 else 'ies'} from {node}")
        task.signals.partial.connect(self._on_retrieve_partial)
        self._retrieving = (0, count)
        self.status_label.setText(f"Retrieving from {node}…")
        return self._start(task, self._on_retrieved)

    def _on_retrieve_partial(self, message: tuple[Any, ...]) -> None:
        if message[0] == "study":
            _kind, index, count = message
            self._retrieving = (index, count)
            self.status_label.setText(f"Retrieving study {index + 1} of {count}…")
        elif message[0] == "series":
            for series in message[1]:
                self.series_retrieved.emit(series)

    def _on_retrieved(self, summary: RetrieveSummary) -> None:
        images = sum(len(result.instances) for result in summary.results)
        studies = len(summary.results)
        self.status_label.setText(
            f"Retrieved {images} image{'s' * (images != 1)} of {studies} stud{'y' if studies == 1 else 'ies'}"
        )
        problems = list(summary.errors)
        for result in summary.results:
            if result.missing:
                problems.append(f"study {result.study_uid}: the PACS could not send {result.missing} instances")
            problems.extend(f"study {result.study_uid}: refused {refused}" for refused in result.refused)
        self._show_error("\n".join(problems))
        self.retrieved.emit(summary.paths)

    def _on_progress(self, done: int, total: int, _what: str) -> None:
        self.progress.setRange(0, total)  # total 0: a busy bar until the PACS says how many
        self.progress.setValue(done)
        if total and self._retrieving is not None:
            index, count = self._retrieving
            prefix = f"Study {index + 1} of {count}: " if count > 1 else ""
            self.status_label.setText(f"{prefix}{done} of {total} images")

    # ------------------------------------------------------------------ running

    def _start(self, task: Task, on_succeeded: Any) -> Task:
        self._show_error("")
        # settled first: when the outcome's own slot runs (and emits searched/retrieved) the dialog is idle again
        for outcome in (task.signals.succeeded, task.signals.errored, task.signals.cancelled):
            outcome.connect(self._on_settled)
        task.signals.succeeded.connect(on_succeeded)
        task.signals.progress.connect(self._on_progress)
        task.signals.errored.connect(self._on_errored)
        task.signals.cancelled.connect(lambda: self.status_label.setText("Stopped"))
        self.task = task
        self._running = True
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        self.tasks.start(task)
        self._update_buttons()
        return task

    def _on_errored(self, message: str, details: str) -> None:
        if details:
            log.error("%s\n%s", message, details)
        self.status_label.setText("")
        self._show_error(message)

    def _on_settled(self, *_outcome: object) -> None:
        self._running = False
        self.progress.setVisible(False)
        self._update_buttons()

    def stop(self) -> None:
        """Stop the running search or retrieve (the association is aborted; what arrived stays stored)."""
        if self.task is not None:
            self.task.cancel()

    def done(self, result: int) -> None:
        """Close the dialog; a search or retrieve still running is stopped first."""
        self.stop()
        if self.tasks.parent() is self:
            self.tasks.pool.waitForDone(5000)  # the cancel aborts the association within a fraction of a second
        super().done(result)
