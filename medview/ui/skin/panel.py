"""The skin lesion workspace: drop photos in, read benign / malignant with the forest's votes and a saliency map.

Photos are read and classified on a worker (``medview.workflows.skin``: the
photo reader, then the engine's skin pipeline, paper 003: CNN features ->
random forest); each one
appears in the gallery as soon as it is read and gets its result as soon as it
is classified, so a folder of a hundred photos fills in while the dermatologist
starts reading the first.  The gallery is sorted by malignant probability, most
suspicious first.  A photo that cannot be read stays in the list with the reason,
named by its file.

The saliency map explains the CNN part of the model only: where the photo's
pixels drive the CNN features that the forest relies on most (integrated
gradients from a featureless photo of the same mean colour, weighted by the
forest's feature importances; ``medview.engine.pipelines.skin``).  It does not
say which way the features pushed the vote, and the panel says so beside it.
It is off until asked for, since a map over the photo hides the lesion's own
border and colours, and it is computed only then (it costs ~3x the verdict:
a verdict in ~0.2 s, its map ~0.4 s later, the shown photos' maps first);
when shown, a colour bar beside the photo names it and its scale (relative:
1 is the photo's own peak, so colours do not compare photos).

After each sort the gallery scrolls to its top, where the most suspicious
photo is: the selection stays where it was, shown in the view, but the list
does not follow it down.

A second batch of photos (drop, Open photos…, Open folder…) is added to the
list, not in place of it: a photo already listed is not added twice, the
selected photo and its view stay as they were, and Remove takes photos out.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medview.engine.api import Heatmap, InferenceService, PhotoResult, Provenance
from medview.engine.manifest import ModelCard
from medview.io.photo import PHOTO_SUFFIXES, Photo, split_photo_paths
from medview.progress import CancelCheck, ProgressCallback
from medview.tasks import ClinicalTask
from medview.ui.provenance import (
    WARNING_STYLE,
    DemoBannerLabel,
    ModelChooserBox,
    provenance_html,
    provenance_rows,
    validated_line,
)
from medview.ui.qt import QtCore, QtGui, QtWidgets, pg
from medview.ui.report.identifiers import FILE_NAME_WITHHELD
from medview.ui.report.sections import ModelSummary, PhotoRow, SkinSection
from medview.ui.workers import StartTask, Task
from medview.workflows.skin import (
    PhotoClassified,
    PhotoExplained,
    PhotoJob,
    PhotoRead,
    PhotoUnreadable,
    PhotoUpdate,
    classify_photos,
    explain_photos,
)

THUMBNAIL_SIDE = 72
PHOTO_SIDE = 150  # px of a lesion photo (and of its saliency) in the case report
PHOTO_FILTER = f"Photos ({' '.join('*' + suffix for suffix in PHOTO_SUFFIXES)});;All files (*)"
MALIGNANT_COLOUR = "#ff8a65"
BENIGN_COLOUR = "#9ccc65"
PROBLEM_COLOUR = "#e0b040"
NO_MODEL = "No skin lesion model installed: add one in Models > Installed models and import…"


@dataclass(eq=False)
class LesionEntry:
    """One photo in the gallery: the picture once read, its result once classified, or why it has neither."""

    path: Path
    photo: Photo | None = None
    thumbnail: np.ndarray | None = None
    result: PhotoResult | None = None
    problem: str = ""  # why the photo could not be read or classified
    status: str = "reading…"  # what is happening to it while it has no result
    warnings: tuple[str, ...] = ()  # what about the photo the model was not validated on (shown with the verdict)
    explaining: bool = False  # its saliency map is being computed

    @property
    def positive_probability(self) -> float | None:
        """The forest's vote share for the positive (malignant) class, once classified."""
        if self.result is None:
            return None
        return float(self.result.scores.probabilities[self.result.positive_class])

    def summary(self) -> str:
        """One line for the gallery."""
        if self.problem:
            return f"⚠ {self.problem}"
        if self.result is None:
            return self.status
        return f"{self.result.label}  ·  {self.result.positive_class} {self.positive_probability:.0%}"


class GalleryItem(QtWidgets.QListWidgetItem):
    """A gallery row that sorts by malignant probability (highest first), then unclassified, then problems."""

    def __init__(self, entry: LesionEntry) -> None:
        super().__init__()
        self.entry = entry
        self.refresh()

    def sort_key(self) -> tuple[int, float, str]:
        """Classified photos first, most likely malignant first; then unclassified, then unreadable ones."""
        entry = self.entry
        rank = 2 if entry.problem else 1 if entry.result is None else 0
        return (rank, -(entry.positive_probability or 0.0), entry.path.name)

    def __lt__(self, other: QtWidgets.QListWidgetItem) -> bool:
        if isinstance(other, GalleryItem):
            return self.sort_key() < other.sort_key()
        return super().__lt__(other)

    def refresh(self) -> None:
        """Show the entry's name, verdict, thumbnail and problem as they are now."""
        entry = self.entry
        self.setText(f"{entry.path.name}\n{entry.summary()}")
        self.setToolTip(str(entry.path) + (f"\n{entry.problem}" if entry.problem else ""))
        if entry.thumbnail is not None:
            self.setIcon(QtGui.QIcon(QtGui.QPixmap.fromImage(rgb_image(entry.thumbnail))))
        if entry.problem:
            colour = PROBLEM_COLOUR
        elif entry.result is not None:
            colour = MALIGNANT_COLOUR if entry.result.label == entry.result.positive_class else BENIGN_COLOUR
        else:
            colour = "#d0d0d0"
        self.setForeground(QtGui.QBrush(QtGui.QColor(colour)))


def rgb_image(rgb: np.ndarray) -> QtGui.QImage:
    """A QImage copy of an (h, w, 3) uint8 array."""
    rgb = np.ascontiguousarray(rgb)
    image = QtGui.QImage(rgb.data, rgb.shape[1], rgb.shape[0], rgb.strides[0], QtGui.QImage.Format.Format_RGB888)
    return image.copy()  # detach from the numpy buffer


SALIENCY_SCALE = "Saliency, relative: 1 = this photo's peak"


def saliency_lookup_table() -> np.ndarray:
    """Inferno colours whose opacity rises with the value, so the lesion shows through where saliency is low."""
    table = pg.colormap.get("inferno").getLookupTable(nPts=256, alpha=True)
    table[:, 3] = np.linspace(0, 255, 256).astype(np.uint8)
    return table


def saliency_colour_bar() -> pg.ColorBarItem:
    """The saliency overlay's colour bar: its colours and opacity ramp over 0-1, labelled with what 1 means."""
    table = saliency_lookup_table()
    colour_map = pg.ColorMap(np.linspace(0.0, 1.0, len(table)), table)
    bar = pg.ColorBarItem(
        values=(0.0, 1.0), width=16, colorMap=colour_map, label=SALIENCY_SCALE, interactive=False, colorMapMenu=False
    )
    bar.axis.setTicks([[(0.0, "0"), (0.5, "0.5"), (1.0, "1")]])
    return bar


class LesionView(QtWidgets.QWidget):
    """One photo with zoom/pan, its saliency map, the verdict and how it was reached."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.entry: LesionEntry | None = None
        self.graphics = pg.GraphicsLayoutWidget()
        self.view_box = self.graphics.addViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.photo_item = pg.ImageItem(axisOrder="row-major")
        self.saliency_item = pg.ImageItem(axisOrder="row-major")
        self.saliency_item.setLookupTable(saliency_lookup_table())
        self.saliency_item.setZValue(1)
        self.view_box.addItem(self.photo_item)
        self.view_box.addItem(self.saliency_item)
        self.colour_bar: pg.ColorBarItem | None = None  # built with the first saliency map (~20 ms, not at start-up)
        self._saliency_wanted = False
        self.banner = DemoBannerLabel()
        self.verdict = QtWidgets.QLabel()
        self.verdict.setObjectName("verdict")
        self.verdict.setWordWrap(True)
        self.details = QtWidgets.QLabel()
        self.details.setWordWrap(True)
        self.details.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details.setAlignment(QtCore.Qt.AlignmentFlag.AlignTop)
        image_area = QtWidgets.QGridLayout()
        image_area.addWidget(self.graphics, 0, 0)
        image_area.addWidget(self.banner, 0, 0, QtCore.Qt.AlignmentFlag.AlignTop | QtCore.Qt.AlignmentFlag.AlignHCenter)
        details_scroll = QtWidgets.QScrollArea()
        details_scroll.setWidget(self.details)
        details_scroll.setWidgetResizable(True)
        details_scroll.setMaximumHeight(190)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(image_area, stretch=1)
        layout.addWidget(self.verdict)
        layout.addWidget(details_scroll)
        self._shown_photo: Photo | None = None
        self._shown_saliency: Heatmap | None = None
        self.show_entry(None)

    def show_entry(self, entry: LesionEntry | None) -> None:
        """Show ``entry`` (None: an empty view with a hint)."""
        self.entry = entry
        photo = entry.photo if entry is not None else None
        result = entry.result if entry is not None else None
        # images are uploaded only when they change: other photos' progress re-shows this view too
        if photo is not self._shown_photo:
            self._shown_photo = photo
            if photo is None:
                self.photo_item.clear()
            else:
                self.photo_item.setImage(photo.rgb, levels=(0, 255))
                self.view_box.autoRange(padding=0.02)
        saliency = result.saliency if result is not None else None
        if saliency is not self._shown_saliency:
            self._shown_saliency = saliency
            if saliency is None:
                self.saliency_item.clear()
            else:
                self.saliency_item.setImage(saliency.relative(), levels=(0.0, 1.0))
            self._show_saliency_layers()
        self.banner.setVisible(result is not None and result.provenance.demo)
        self.verdict.setText(self._verdict_html(entry))
        self.details.setText(self._details_html(entry))

    def set_saliency(self, visible: bool, opacity: float) -> None:
        """Show or hide the saliency map and its colour bar, the map at ``opacity`` (0-1)."""
        self._saliency_wanted = visible
        self.saliency_item.setOpacity(opacity)
        self._show_saliency_layers()

    def _show_saliency_layers(self) -> None:
        # the colour bar only beside a map: a photo without one (not classified, unreadable) gets none
        shown = self._saliency_wanted and self._shown_saliency is not None
        self.saliency_item.setVisible(shown)
        if shown and self.colour_bar is None:
            self.colour_bar = saliency_colour_bar()
            self.graphics.addItem(self.colour_bar, row=0, col=1)
        if self.colour_bar is not None:
            self.colour_bar.setVisible(shown)

    @staticmethod
    def _verdict_html(entry: LesionEntry | None) -> str:
        if entry is None:
            return "<i>Drop lesion photos here, or use Open photos… / Open folder…</i>"
        name = html.escape(entry.path.name)
        if entry.problem:
            return f"<b>{name}</b><br><span style='color:{PROBLEM_COLOUR}'>{html.escape(entry.problem)}</span>"
        result = entry.result
        if result is None:
            return f"<b>{name}</b><br>{html.escape(entry.status)}"
        positive = result.positive_class
        colour = MALIGNANT_COLOUR if result.label == positive else BENIGN_COLOUR
        threshold = result.provenance.threshold if result.provenance.threshold is not None else 0.5
        return (
            f"<b>{name}</b><br><span style='font-size:15pt; color:{colour}'><b>{html.escape(result.label)}</b></span>"
            f"&nbsp;&nbsp;{html.escape(positive)} probability <b>{entry.positive_probability:.0%}</b>"
            f" (called {html.escape(positive)} at ≥ {threshold:.0%})"
            f"<br><i>{html.escape(validated_line(result.provenance))}</i>"  # what the verdict rests on, beside it
            + "".join(
                f"<br><span style='{WARNING_STYLE}'>&nbsp;⚠ {html.escape(warning)}&nbsp;</span>"
                for warning in entry.warnings
            )
        )

    @staticmethod
    def _details_html(entry: LesionEntry | None) -> str:
        if entry is None or entry.result is None:
            return ""
        result = entry.result
        votes = html.escape(result.votes_text())
        saliency = (
            "Saliency (shown with the Saliency box): where the photo's pixels drive the CNN features the forest "
            "relies on most, compared with a featureless photo of the same mean colour (integrated gradients); "
            "relative to this photo's peak, so its colours do not compare photos. "
            "It does not show which way the features pushed the vote."
            if result.saliency is not None
            else "Saliency map being computed…"
            if entry.explaining
            else "Saliency map: computed when the Saliency box is ticked."
        )
        photo = entry.photo
        size = f"{photo.original_size[0]}x{photo.original_size[1]} pixels" if photo is not None else ""
        return f"<p>{votes}. {html.escape(size)}</p><p><i>{saliency}</i></p>" + provenance_html(result.provenance)


class SkinPanel(QtWidgets.QWidget):
    """Gallery of lesion photos sorted by malignant probability, one or two photos with their results."""

    results_changed = QtCore.Signal()  # an entry was read, classified or failed

    def __init__(self, start_task: StartTask, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("skin_panel")
        self.start_task = start_task
        self.engine: InferenceService | None = None
        self.entries: list[LesionEntry] = []
        self.running: list[Task] = []
        self._busy: set[int] = set()  # ids of entries a running task is working on
        self.saliency_task: Task | None = None  # the saliency maps being computed (one task at a time)

        self.open_button = QtWidgets.QPushButton("Open photos…")
        self.folder_button = QtWidgets.QPushButton("Open folder…")
        self.model_box = ModelChooserBox()
        self.model_box.setObjectName("skin_model_box")
        self.classify_button = QtWidgets.QPushButton("Classify")
        self.classify_button.setToolTip("Classify every photo that has no result from the chosen model yet")
        self.saliency_box = QtWidgets.QCheckBox("Saliency")
        self.saliency_box.setChecked(False)  # off until asked for: the map hides the lesion's border and colours
        self.saliency_box.setToolTip("Where the photo drives the CNN features the forest relies on most")
        self.opacity = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(50)
        self.opacity.setToolTip("Opacity of the saliency map")
        self.opacity.setMaximumWidth(120)
        self.compare_box = QtWidgets.QCheckBox("Compare two")
        self.compare_box.setToolTip("Select two photos in the list to see them side by side")
        self.remove_button = QtWidgets.QPushButton("Remove")
        self.status = QtWidgets.QLabel()
        self.status.setWordWrap(True)
        controls = QtWidgets.QHBoxLayout()
        widget: QtWidgets.QWidget  # the loops below lay out widgets of several kinds
        for widget in (self.open_button, self.folder_button, QtWidgets.QLabel("Model:"), self.model_box):
            controls.addWidget(widget)
        controls.addWidget(self.classify_button)
        controls.addSpacing(12)
        for widget in (self.saliency_box, QtWidgets.QLabel("Opacity"), self.opacity, self.compare_box):
            controls.addWidget(widget)
        controls.addStretch(1)
        controls.addWidget(self.remove_button)

        self.gallery = QtWidgets.QListWidget()
        self.gallery.setObjectName("lesion_gallery")
        self.gallery.setIconSize(QtCore.QSize(THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        self.gallery.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.ExtendedSelection)
        self.gallery.setMinimumWidth(300)
        self.views = (LesionView(), LesionView())
        self.views[1].hide()
        view_split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        for view in self.views:
            view_split.addWidget(view)
        split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        split.addWidget(self.gallery)
        split.addWidget(view_split)
        split.setStretchFactor(1, 1)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(controls)
        layout.addWidget(self.status)
        layout.addWidget(split, stretch=1)

        self.open_button.clicked.connect(self.choose_photos)
        self.folder_button.clicked.connect(self._choose_folder)
        self.classify_button.clicked.connect(lambda: self.classify_pending())
        self.model_box.activated.connect(self._on_model_chosen)
        self.saliency_box.toggled.connect(self._on_saliency_toggled)
        self.opacity.valueChanged.connect(self._apply_saliency)
        self.compare_box.toggled.connect(self._show_selection)
        self.gallery.itemSelectionChanged.connect(self._show_selection)
        self.remove_button.clicked.connect(self._remove_selected)
        self._apply_saliency()
        self._update_status()

    # ------------------------------------------------------------------ models

    def set_engine(self, engine: InferenceService) -> None:
        """The AI engine is ready: list its skin models and classify what waited for it."""
        self.engine = engine
        self.refresh_models()

    def refresh_models(self) -> None:
        """List the installed skin models (non-demo first); classify photos that have no result yet."""
        if self.engine is None:
            return
        self.model_box.set_cards(self.engine.cards(ClinicalTask.SKIN_LESION))
        self._update_status()
        self.classify_pending()

    def selected_card(self) -> ModelCard | None:
        """The skin model chosen in the toolbar, if any is installed."""
        return self.model_box.selected_card()

    def chosen_cards(self) -> list[ModelCard]:
        """The model a classification would use now."""
        card = self.selected_card()
        return [card] if card is not None else []

    # ------------------------------------------------------------------ adding photos

    def choose_photos(self) -> None:
        """File dialog for one or more photos."""
        files, _ = QtWidgets.QFileDialog.getOpenFileNames(self, "Open lesion photos", "", PHOTO_FILTER)
        if files:
            self.add_photos([Path(file) for file in files])

    def _choose_folder(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Open a folder of lesion photos")
        if folder:
            photos, _ = split_photo_paths([Path(folder)])
            if not photos:
                self.status.setText(f"No photos ({', '.join(PHOTO_SUFFIXES)}) found in {folder}.")
                return
            self.add_photos(photos)

    def add_photos(self, paths: Sequence[Path]) -> Task | None:
        """Read and classify ``paths`` in the background; each appears in the gallery at once."""
        known = {entry.path for entry in self.entries}
        new = [LesionEntry(path) for path in dict.fromkeys(paths) if path not in known]
        if not new:
            return None
        self.entries.extend(new)
        for entry in new:
            self.gallery.addItem(GalleryItem(entry))
        self._sort()
        if not self.gallery.selectedItems():
            self.gallery.setCurrentRow(0)
        return self._run(new)

    def classify_pending(self) -> Task | None:
        """Read and classify the photos that have no result from the chosen model (after a cancel, another model)."""
        card = self.selected_card()
        pending = [
            entry
            for entry in self.entries
            if not entry.problem
            and (entry.result is None or card is None or entry.result.provenance.label != card.label)
        ]
        return self._run(pending) if pending else None

    def _on_model_chosen(self, _index: int) -> None:
        if self.saliency_task is not None:  # maps of the previous model's results
            self.saliency_task.cancel()
        if self.running:  # results of the previous model are not wanted: the stopped batch hands over when it ends
            for task in self.running:
                task.cancel()
        else:
            self.classify_pending()

    def _run(self, entries: list[LesionEntry]) -> Task | None:
        entries = [entry for entry in entries if id(entry) not in self._busy]
        if not entries:
            return None
        engine, card = self.engine, self.selected_card()
        if engine is None:
            waiting = "waiting for the AI engine to load"
        elif card is None:
            waiting = "not classified: no skin lesion model installed"
        else:
            waiting = "waiting to be classified"
        for entry in entries:
            entry.status = "reading…" if entry.photo is None else waiting
        self._refresh_items(entries)

        jobs = [PhotoJob(entry.path, entry.photo) for entry in entries]

        def work(progress: ProgressCallback, cancelled: CancelCheck, partial: Any) -> None:
            for update in classify_photos(jobs, engine, card, progress, cancelled, thumbnail_side=THUMBNAIL_SIDE):
                partial(update)

        task = Task(work, f"Classifying {len(entries)} photo(s)" if card is not None else "Reading photos")
        self._busy.update(map(id, entries))
        self.running.append(task)
        task.signals.partial.connect(lambda update: self._on_update(entries, update, waiting, card))
        task.signals.cancelled.connect(lambda: self._on_stopped(entries, "not classified (cancelled)"))
        task.signals.errored.connect(lambda message, _details: self._on_stopped(entries, f"not classified: {message}"))
        task.signals.finished.connect(lambda: self._on_finished(task, entries, card))
        return self.start_task(task, task.description + "…")

    def _on_finished(self, task: Task, entries: list[LesionEntry], card: ModelCard | None) -> None:
        self.running.remove(task)
        self._busy.difference_update(map(id, entries))
        chosen = self.selected_card()
        if chosen is not None and (card is None or card.label != chosen.label):
            self.classify_pending()  # another model was chosen meanwhile
        else:
            self.explain_missing()

    def explain_missing(self) -> Task | None:
        """While the Saliency box is ticked: compute the maps the photos lack, the shown ones first, off the GUI
        thread (a map costs ~3x a verdict, so none is computed before it is asked for)."""
        engine, card = self.engine, self.selected_card()
        if self.saliency_task is not None or engine is None or card is None or not self.saliency_box.isChecked():
            return None
        shown = [view.entry for view in self.views if view.isVisible() and view.entry is not None]
        ordered = {id(entry): entry for entry in [*shown, *(item.entry for item in self.items())]}.values()
        wanted, jobs = [], []  # the photos, and what explaining each needs
        for entry in ordered:
            photo, result = entry.photo, entry.result
            if (
                photo is not None
                and result is not None
                and result.saliency is None
                and result.provenance.label == card.label
            ):
                wanted.append(entry)
                jobs.append((photo, result))
        if not wanted:
            return None

        def work(progress: ProgressCallback, cancelled: CancelCheck, partial: Any) -> None:
            for update in explain_photos(jobs, engine, card, progress, cancelled):
                partial(update)

        task = Task(work, f"Saliency maps of {len(wanted)} photo(s)")
        for entry in wanted:
            entry.explaining = True
        self.saliency_task = task
        task.signals.partial.connect(lambda update: self._on_explained(wanted[update.index], jobs, update))
        task.signals.errored.connect(lambda message, _details: self.status.setText(f"Saliency maps stopped: {message}"))
        task.signals.finished.connect(lambda: self._on_explaining_ended(task, wanted))
        self._refresh_items(wanted)
        return self.start_task(task, task.description + "…")

    def _on_explained(self, entry: LesionEntry, jobs: list[tuple[Photo, PhotoResult]], update: PhotoExplained) -> None:
        entry.explaining = False
        if entry.result is jobs[update.index][1]:  # still the result the map explains
            entry.result = update.result
        self._refresh_items([entry])
        self.results_changed.emit()

    def _on_explaining_ended(self, task: Task, entries: list[LesionEntry]) -> None:
        stopped = [entry for entry in entries if entry.explaining]
        for entry in stopped:
            entry.explaining = False
        self._refresh_items(stopped)
        if self.saliency_task is task:
            self.saliency_task = None
            if not task.is_cancelled:
                self.explain_missing()  # photos classified while these maps were computed

    def _on_update(self, entries: list[LesionEntry], update: PhotoUpdate, waiting: str, card: ModelCard | None) -> None:
        entry = entries[update.index]
        if isinstance(update, PhotoUnreadable):
            entry.problem = update.problem
        elif isinstance(update, PhotoRead):
            entry.photo, entry.thumbnail = update.photo, update.thumbnail
            entry.status = waiting if card is None else f"classifying with {card.label}…"
        elif isinstance(update, PhotoClassified):
            entry.result, entry.warnings = update.result, update.warnings
        self._refresh_items([entry])
        if not isinstance(update, PhotoRead):
            self._sort()
            self._update_status()
        self.results_changed.emit()

    def _on_stopped(self, entries: list[LesionEntry], status: str) -> None:
        stopped = [entry for entry in entries if entry.result is None and not entry.problem]
        for entry in stopped:
            entry.status = status if entry.photo is not None else "not read (cancelled): press Classify"
        self._refresh_items(stopped)
        self._update_status()

    # ------------------------------------------------------------------ showing

    def items(self) -> list[GalleryItem]:
        """The gallery rows in display order."""
        return [self.gallery.item(row) for row in range(self.gallery.count())]  # type: ignore[misc]

    def _refresh_items(self, entries: list[LesionEntry]) -> None:
        wanted = set(map(id, entries))
        for item in self.items():
            if id(item.entry) in wanted:
                item.refresh()
        if any(id(view.entry) in wanted for view in self.views):
            self._show_selection()

    def _sort(self) -> None:
        self.gallery.sortItems(QtCore.Qt.SortOrder.AscendingOrder)
        self.gallery.scrollToTop()  # the most suspicious photo in sight, wherever the selection went

    def _show_selection(self) -> None:
        selected = [item.entry for item in self.items() if item.isSelected()]  # in gallery order
        compare = self.compare_box.isChecked()
        self.views[0].show_entry(selected[0] if selected else None)
        self.views[1].setVisible(compare)
        if compare:
            self.views[1].show_entry(selected[1] if len(selected) > 1 else None)
        self._apply_saliency()

    def _on_saliency_toggled(self, checked: bool) -> None:
        if checked:
            self.explain_missing()
        elif self.saliency_task is not None:  # no one is waiting for the maps: give the cores back
            self.saliency_task.cancel()
        self._apply_saliency()

    def _apply_saliency(self) -> None:
        self.opacity.setEnabled(self.saliency_box.isChecked())
        for view in self.views:
            view.set_saliency(self.saliency_box.isChecked(), self.opacity.value() / 100)

    def _update_status(self) -> None:
        if self.engine is not None and self.selected_card() is None:
            self.status.setText(NO_MODEL)
            return
        done = sum(entry.result is not None for entry in self.entries)
        failed = sum(bool(entry.problem) for entry in self.entries)
        text = f"{len(self.entries)} photo(s), {done} classified" if self.entries else ""
        if failed:
            text += f", {failed} could not be read (hover a row for why)"
        self.status.setText(text)

    def _remove_selected(self) -> None:
        for item in self.gallery.selectedItems():
            self.entries.remove(item.entry)  # type: ignore[attr-defined]
            self.gallery.takeItem(self.gallery.row(item))
        self._show_selection()
        self._update_status()

    # ------------------------------------------------------------------ case report

    def shutdown(self) -> None:
        """Stop classifying and explaining (the window closes)."""
        for task in [*self.running, *([self.saliency_task] if self.saliency_task else [])]:
            task.cancel()

    def report_section(self, *, anonymise: bool = False) -> SkinSection | None:
        """The photos, most suspicious first as in the gallery, with their verdicts (and saliency maps when the
        workspace shows them), for the case report; anonymised, numbered instead of named by their files."""
        entries = [item.entry for item in self.items()]
        if not entries:
            return None
        saliency_shown = self.saliency_box.isChecked()
        opacity = self.opacity.value() / 100
        photos, models = [], {}
        for number, entry in enumerate(entries, start=1):
            name = f"photo {number} ({FILE_NAME_WITHHELD})" if anonymise else entry.path.name
            photos.append(_photo_row(entry, name, saliency_shown, opacity))
            result = entry.result
            if result is not None and result.provenance.label not in models:
                models[result.provenance.label] = _model_summary(result.provenance, entries)
        return SkinSection(tuple(photos), tuple(models.values()), saliency_shown)


def _photo_row(entry: LesionEntry, name: str, saliency_shown: bool, opacity: float) -> PhotoRow:
    photo, result = entry.photo, entry.result
    picture = _scaled(rgb_image(photo.rgb)) if photo is not None else None
    overlay = None
    if photo is not None and result is not None and result.saliency is not None and saliency_shown:
        overlay = _saliency_over(rgb_image(photo.rgb), result.saliency.relative(), opacity)
    if result is None:
        problem = entry.problem or entry.status
        if name != entry.path.name:  # anonymised: the reader's message names the file
            problem = problem.replace(str(entry.path), "the file").replace(entry.path.name, "the file")
        return PhotoRow(name, picture, None, "", "", None, 0.5, "", "", False, problem)
    votes = result.votes_text()
    provenance = result.provenance
    return PhotoRow(
        file=name,
        photo=picture,
        saliency=overlay,
        verdict=result.label,
        positive_class=result.positive_class,
        probability=entry.positive_probability,
        threshold=provenance.threshold if provenance.threshold is not None else 0.5,
        votes=votes,
        model=provenance.label,
        demo=provenance.demo,
        problem="",
        validated=validated_line(provenance),
    )


def _model_summary(provenance: Provenance, entries: Sequence[LesionEntry]) -> ModelSummary:
    """The model's provenance; its run time is the sum over the photos it classified."""
    runs = [entry.result.provenance for entry in entries if entry.result is not None]
    runs = [run for run in runs if run.label == provenance.label]
    seconds = sum(run.seconds for run in runs)
    rows = [
        (name, f"{provenance.device}, {seconds:.2f} s for {len(runs)} photo(s)" if name == "Ran on" else value)
        for name, value in provenance_rows(provenance)
    ]
    return ModelSummary(provenance.label, tuple(rows), provenance.demo)


def _scaled(image: QtGui.QImage) -> QtGui.QImage:
    return image.scaled(
        PHOTO_SIDE,
        PHOTO_SIDE,
        QtCore.Qt.AspectRatioMode.KeepAspectRatio,
        QtCore.Qt.TransformationMode.SmoothTransformation,
    )


def _saliency_over(photo: QtGui.QImage, relative: np.ndarray, opacity: float) -> QtGui.QImage:
    """The photo with its saliency map over it, coloured and faded as the skin panel draws it."""
    table = saliency_lookup_table()
    rgba = np.ascontiguousarray(table[np.clip(relative * 255, 0, 255).astype(np.uint8)])
    height, width = rgba.shape[:2]
    saliency = QtGui.QImage(rgba.data, width, height, width * 4, QtGui.QImage.Format.Format_RGBA8888).copy()
    picture = _scaled(photo).convertToFormat(QtGui.QImage.Format.Format_RGB32)
    painter = QtGui.QPainter(picture)
    painter.setRenderHint(QtGui.QPainter.RenderHint.SmoothPixmapTransform)
    painter.setOpacity(opacity)
    painter.drawImage(QtCore.QRectF(picture.rect()), saliency)
    painter.end()
    return picture
