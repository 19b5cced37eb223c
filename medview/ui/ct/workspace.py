"""The CT studies workspace: what is open, how it loads, and everything shown of it.

It owns the open volume and the DICOM series it came from, the layer stack
over it, the MPR views, the study browser, the DICOM tags, the layers panel
and the AI findings panel, and the work behind them: scanning what was opened
for DICOM, decoding a series in the background with its first slice on screen
as soon as it is decoded (a cancel or a failure brings back what was shown
before), thumbnails, loading a mask over the volume, window presets, cine and
the tags of the slice on screen.  The window (``MainWindow``) places its
panels in docks, starts its tasks (progress, Cancel) and shows what it reports
in the status bar and title.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from medview.audit import Outcome, audit_log
from medview.config import Settings
from medview.errors import MedviewError
from medview.io.dicom import (
    DicomSource,
    ScanResult,
    SeriesInfo,
    decode_slice,
    dicom_series_uid,
    scan_paths,
    tag_rows,
)
from medview.io.dicom import load_series as load_dicom_series
from medview.io.sources import is_volume_name
from medview.io.volume import Volume
from medview.progress import CancelCheck, ProgressCallback
from medview.ui.ct.findings.panel import FindingsPanel
from medview.ui.ct.layers import LabelLayer, Layer, LayerStack
from medview.ui.ct.mpr_view import MprView
from medview.ui.ct.panels import LayersPanel, StudyBrowserPanel, TagBrowserPanel, thumbnail_image
from medview.ui.ct.slice_view import DEFAULT_WINDOW, voxel_label
from medview.ui.dialogs import show_message
from medview.ui.qt import QtCore, QtWidgets
from medview.ui.workers import StartTask, Task, TaskRunner

TAG_DELAY_MS = 150  # the tags follow the slice once scrolling pauses
PARTIAL_REFRESH_MS = 250  # how often the views redraw the slices decoded meanwhile


def is_volume_file(path: Path) -> bool:
    """NIfTI/NRRD/MetaImage files open as volumes, everything else is scanned as DICOM."""
    return path.is_file() and is_volume_name(path)


class CtWorkspace(QtCore.QObject):
    """The open CT volume, its views and panels, and loading; the window shows what it reports."""

    volume_loaded = QtCore.Signal(object)  # Volume, once fully decoded
    first_slice_shown = QtCore.Signal()  # a series being decoded has put its first slice on screen
    status = QtCore.Signal(str, int)  # a line for the status bar, and for how long (ms)
    title_changed = QtCore.Signal(str)  # what the window's title should say of the open volume
    cursor_text = QtCore.Signal(str)  # the value and position under the mouse
    opened = QtCore.Signal(list)  # paths that opened something: the window keeps them in File > Recent

    def __init__(
        self, settings: Settings, start_task: StartTask, tasks: TaskRunner, dialog_parent: QtWidgets.QWidget
    ) -> None:
        super().__init__(dialog_parent)
        self.settings = settings
        self.start_task = start_task
        self.tasks = tasks
        self.dialog_parent = dialog_parent
        self.layers = LayerStack(self)
        self.volume: Volume | None = None
        self.series: SeriesInfo | None = None  # the DICOM series the open volume was read from
        self.load_task: Task | None = None
        self.problems: list[str] = []
        self._scan_problems: list[str] = []  # files the last scan skipped; kept beside the volume's warnings
        self._first_slice_shown = False  # the current load has put its first slice on screen
        self._partial_on_screen = False  # the screen shows a volume whose load has not finished
        self._shown_before_load: tuple[Volume | None, list[Layer]] | None = None  # what a cancel brings back
        self._thumbnail_from_load: SeriesInfo | None = None

        self.mpr = MprView(self.layers)
        self.browser = StudyBrowserPanel()
        self.tags = TagBrowserPanel()
        self.layers_panel = LayersPanel(self.layers)
        self.findings = FindingsPanel(self.layers, start_task)
        # the current slice, its display window and the ROIs drawn on it come from the axial view
        axial = self.mpr.axial
        self.findings.current_slice = lambda: axial.index
        self.findings.display_window = lambda: axial.display_window
        kidney = self.findings.kidney
        kidney.current_slice = lambda: axial.index
        kidney.drawn_rois = lambda: axial.measurements
        kidney.selected_finding = self.findings.selected_finding
        axial.measurements_changed.connect(kidney.refresh_rois)

        self.cine_timer = QtCore.QTimer(self)
        self.cine_timer.timeout.connect(self._cine_step)
        self.partial_refresh = QtCore.QTimer(self, interval=PARTIAL_REFRESH_MS)
        self.partial_refresh.timeout.connect(self.mpr.refresh)
        self.tag_timer = QtCore.QTimer(self, singleShot=True, interval=TAG_DELAY_MS)
        self.tag_timer.timeout.connect(self._update_tags)
        self.browser.series_activated.connect(self.load_series)
        axial.slice_changed.connect(lambda _index: self.tag_timer.start())
        for view in self.mpr.views.values():
            view.hovered.connect(self._on_hovered)

    # ------------------------------------------------------------------ opening

    def open(self, paths: list[Path]) -> Task:
        """Open NIfTI/NRRD volumes directly (the first one), scan everything else for DICOM and open its largest
        series."""
        volumes = [path for path in paths if is_volume_file(path)]
        if volumes:
            self._scan_problems = []
            self.opened.emit(volumes[:1])
            return self.load_volume_file(volumes[0])
        task = Task(lambda progress, cancelled, _partial: scan_paths(paths, progress, cancelled), "Scanning for DICOM")
        task.signals.succeeded.connect(lambda result: self._on_scanned(result, paths))
        return self.start_task(task, "Scanning…")

    def _on_scanned(self, result: ScanResult, paths: list[Path]) -> None:
        self._scan_problems = [str(p) for p in result.problems]
        self.problems = list(self._scan_problems)
        self.browser.add_series(result.series)
        opened = max(result.series, key=lambda s: s.slice_count) if result.series else None
        # the series being opened gets its thumbnail from its own decoded volume: not decoded twice
        self._thumbnail_from_load = opened
        self._start_thumbnails([s for s in result.series if s is not opened])
        if result.problems:
            self.status.emit(f"{len(result.problems)} file(s) skipped — File > Show problems for the list", 10000)
        if not result.series:
            where = ", ".join(str(path) for path in paths) or "what was opened"
            self.status.emit(f"No DICOM images found in {where}", 10000)
            skipped = "\n".join(self.problems[:8]) + ("\n…" if len(self.problems) > 8 else "")
            text = f"No DICOM images found in {where}." + (f"\n\nFiles skipped:\n{skipped}" if skipped else "")
            show_message(self.dialog_parent, "No DICOM images", text, "\n".join(self.problems))
        if opened is not None:
            self.opened.emit(paths)
            self.load_series(opened)

    def _start_thumbnails(self, series_list: list[SeriesInfo]) -> None:
        def work(_progress: object, cancelled: object, partial: object) -> None:
            for series in series_list:
                if cancelled():  # type: ignore[operator]
                    return
                try:
                    plane = decode_slice(series.slices[len(series.slices) // 2])
                except MedviewError:
                    continue
                partial((series, plane))  # type: ignore[operator]

        def show(item: tuple[SeriesInfo, np.ndarray]) -> None:
            series, plane = item
            self.browser.set_thumbnail(series, thumbnail_image(plane, series.window or DEFAULT_WINDOW))

        task = Task(work, "Making thumbnails", background=True)
        task.signals.partial.connect(show)
        self.tasks.start(task)

    def load_series(self, series: SeriesInfo) -> Task:
        """Decode a series in the background; the first slice shows as soon as it is ready."""
        self._begin_load()

        def work(progress: ProgressCallback, cancelled: CancelCheck, partial: Callable[[object], None]) -> Volume:
            return load_dicom_series(
                series,
                progress,
                cancelled,
                lambda volume, z: partial((volume, z)),
                workers=self.settings.decode_threads,
            )

        task = Task(work, f"Loading {series.display_name}")
        task.signals.partial.connect(lambda item, t=task: self._on_slice_decoded(item) if t is self.load_task else None)
        audited = {
            "kind": "series",
            "path": series.slices[0].source.path.parent if series.slices else series.display_name,
            "study_uid": series.study_uid or None,
            "series_uid": dicom_series_uid(series.series_uid),
            "patient_id": series.patient_id or None,
            "sop_count": series.slice_count,
            "description": series.display_name,
        }
        self._audit_load(task, audited)
        self._watch_load(task, series)
        self.partial_refresh.start()
        return self.start_task(task, f"Loading {series.display_name}…")

    def load_volume_file(self, path: Path) -> Task:
        """Open a NIfTI/NRRD/MetaImage volume in the background."""
        self._begin_load()

        def work(_progress: object, _cancelled: object, _partial: object) -> Volume:
            from medview.io.volume_files import read_volume

            return read_volume(path)

        task = Task(work, f"Opening {path.name}")
        self._audit_load(task, {"kind": "volume", "path": path})
        self._watch_load(task, None)
        return self.start_task(task, f"Opening {path.name}…")

    @staticmethod
    def _audit_load(task: Task, audited: dict) -> None:
        """Record in the audit log what ``task`` opened, or that it failed to."""
        task.signals.succeeded.connect(lambda _volume: audit_log().record_open(**audited))
        task.signals.errored.connect(
            lambda message, _details: audit_log().record_open(
                **audited, outcome=Outcome.SERIOUS_FAILURE, outcome_description=message
            )
        )

    def add_received_series(self, series: SeriesInfo) -> None:
        """A series arriving from a PACS: listed (or its image count updated) as it arrives."""
        item = self.browser.add_or_update_series(series)
        if item.icon(0).isNull():
            self._start_thumbnails([series])

    def _begin_load(self) -> None:
        """Stop a running load; remember what is on screen so a cancel or failure can bring it back."""
        if not self._partial_on_screen:  # else keep what was shown before that unfinished load
            self._shown_before_load = (self.volume, list(self.layers.layers))
        self.cancel_loading()
        self._first_slice_shown = False

    def _watch_load(self, task: Task, series: SeriesInfo | None) -> None:
        """Route the outcome of ``task`` (reading ``series``, or a volume file) here while it is current."""
        self.load_task = task

        def loaded(volume: Volume) -> None:
            if task is self.load_task:
                self.series = series
                self.show_loaded_volume(volume)

        task.signals.succeeded.connect(loaded)
        task.signals.cancelled.connect(lambda: self._on_load_abandoned() if task is self.load_task else None)
        task.signals.errored.connect(lambda *_: self._on_load_abandoned() if task is self.load_task else None)

    def _on_load_abandoned(self) -> None:
        """A cancelled or failed load leaves no half-decoded volume behind: show what was there before."""
        self.partial_refresh.stop()
        if self._partial_on_screen and self._shown_before_load is not None:
            volume, layers = self._shown_before_load
            self._show_volume(volume)
            self.layers.add(*layers)
            self.findings.set_volume(volume)
        self._first_slice_shown = self._partial_on_screen = False
        self._shown_before_load = None

    def cancel_loading(self) -> None:
        """Stop the running load (the previously shown volume stays)."""
        if self.load_task is not None and not self.load_task.done.is_set():
            self.load_task.cancel()
        self.partial_refresh.stop()

    def load_mask(self, path: Path, name: str | None = None) -> Task | None:
        """Put a NIfTI/NRRD/DICOM SEG mask over the open volume as a label layer.

        ``name`` labels the layer; by default the segment names the file carries.
        """
        volume = self.volume
        if volume is None:
            show_message(self.dialog_parent, "No image open", "Open a CT series first, then load its mask.")
            return None

        def work(_progress: object, _cancelled: object, _partial: object) -> object:
            from medview.io.volume_files import read_label_map

            return read_label_map(path, volume)

        task = Task(work, f"Loading mask {path.name}")
        task.signals.succeeded.connect(lambda label_map: self._on_mask_loaded(label_map, path, name))
        return self.start_task(task, f"Loading mask {path.name}…")

    def _on_mask_loaded(self, label_map: object, path: Path, name: str | None) -> None:
        names = getattr(label_map, "names", {})
        name = name or f"{', '.join(names.values()) if names else 'mask'} [{path.name}]"
        self.layers.add(LabelLayer(name=name, labels=label_map.labels, names=dict(names)))  # type: ignore[attr-defined]
        self.status.emit(f"Mask {path.name} loaded", 5000)

    # ------------------------------------------------------------------ showing

    def _on_slice_decoded(self, item: tuple[Volume, int]) -> None:
        volume, z = item
        if not self._first_slice_shown:
            self._first_slice_shown = self._partial_on_screen = True
            self._show_volume(volume)
            self.findings.set_volume(volume, complete=False)
            _, y, x = (size // 2 for size in volume.shape)
            self.mpr.set_position(z, y, x)  # the slice that just arrived: never an undecoded one
            self.first_slice_shown.emit()
        elif z == self.mpr.axial.index:
            self.mpr.axial.refresh()

    def show_loaded_volume(self, volume: Volume) -> None:
        """Show ``volume``, fully decoded (a load hands it over here): its findings, thumbnail and problems."""
        self.partial_refresh.stop()
        if self._first_slice_shown and self.volume is not None and self.volume.series_uid == volume.series_uid:
            self._replace_volume(volume)
        else:
            self._show_volume(volume)
        self._first_slice_shown = self._partial_on_screen = False
        self._shown_before_load = None
        self.findings.set_volume(volume)
        series = self._thumbnail_from_load
        if series is not None and series.series_uid == volume.series_uid:
            window = volume.default_window or DEFAULT_WINDOW
            self.browser.set_thumbnail(series, thumbnail_image(volume.voxels[volume.shape[0] // 2], window))
        self._thumbnail_from_load = None
        self.problems = self._scan_problems + list(volume.warnings)
        if volume.warnings:
            self.status.emit(f"Loaded with {len(volume.warnings)} warning(s): {volume.warnings[0]}", 15000)
        else:
            self.status.emit(f"Loaded {volume.description}: {volume.shape[0]} slices", 5000)
        self.volume_loaded.emit(volume)

    def _show_volume(self, volume: Volume | None) -> None:
        self.volume = volume
        self.layers.clear()
        self.mpr.set_volume(volume, volume.default_window if volume is not None else None)
        if volume is None:
            self.title_changed.emit("")
            return
        name = volume.info.get("PatientName") or ""
        self.title_changed.emit(f"{name} {volume.description}".strip())
        self.tag_timer.start()

    def _replace_volume(self, volume: Volume) -> None:
        """Swap in the finished volume (same data) without moving the user's slice or zoom."""
        self.volume = volume
        for view in self.mpr.views.values():
            view.volume = volume
        self.mpr.refresh()

    def apply_preset(self, name: str) -> None:
        """Set a named window (Lung, Abdomen, Liver, Bone, Brain, or the user's own)."""
        center, width = self.settings.window_presets[name]
        self.mpr.set_window(center, width)
        self.status.emit(f"{name} window: W {width:.0f} L {center:.0f}", 3000)

    def set_cine(self, running: bool, fps: int) -> None:
        """Play the axial slices in a loop at ``fps`` frames a second, or stop."""
        if running:
            self.cine_timer.start(int(1000 / fps))
        else:
            self.cine_timer.stop()

    def _cine_step(self) -> None:
        view = self.mpr.axial
        if view.slice_count:
            view.set_index((view.index + 1) % view.slice_count)

    def _on_hovered(self, z: int, y: int, x: int, value: float) -> None:
        if self.volume is None:
            return
        lps = self.volume.index_to_lps(z, y, x)
        unit = self.mpr.axial.value_unit
        self.cursor_text.emit(
            f"{value:.0f}{unit}  {voxel_label(z, y, x, self.volume.shape[0])}"
            f"  LPS ({lps[0]:.1f}, {lps[1]:.1f}, {lps[2]:.1f}) mm"
        )

    def _update_tags(self) -> None:
        if not self.tags.isVisible() or self.volume is None:
            return
        index = self.mpr.axial.index
        files = self.volume.slice_files
        if not files:
            reason = "acquired coronal or sagittal" if self.volume.series_uid else "a volume file, not DICOM"
            self.tags.set_message(f"No DICOM header for axial slices: the series was {reason}.")
            return
        if not files[index]:
            self.tags.set_message("No DICOM header for this slice: it is missing from the series.")
            return
        try:
            self.tags.set_rows(files[index], tag_rows(DicomSource.from_label(files[index])))
        except MedviewError as error:
            self.tags.set_message(str(error))

    def show_problems(self) -> None:
        """List the files skipped or the warnings of the last open, each naming its file."""
        if not self.problems:
            show_message(self.dialog_parent, "No problems", "The last open reported no problems.", warning=False)
            return
        shown = "\n".join(self.problems[:8]) + ("\n…" if len(self.problems) > 8 else "")
        show_message(self.dialog_parent, "Problems while opening", shown, "\n".join(self.problems))

    def shutdown(self) -> None:
        """Stop cine, loading and the findings' runs (the window closes)."""
        self.cine_timer.stop()
        self.cancel_loading()
        self.findings.shutdown()
