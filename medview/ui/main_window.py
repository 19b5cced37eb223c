"""The main window: a workspace per kind of input (CT studies, lung sounds, lesion photos), loading in the background.

The CT workspace has the study browser, MPR viewer, tags and layers; the lung
sound workspace the waveform, spectrogram and cycles; the skin workspace the
lesion gallery.  Whatever is dropped on the window or opened goes to the
workspace that reads it: photos to the skin lesions, WAV/FLAC/OGG to the lung
sounds, the rest to DICOM and volume reading.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medview.audit import Outcome, audit_log
from medview.config import Settings
from medview.engine.api import InferenceService
from medview.errors import ExportError, MedviewError
from medview.io.anonymise import AnonymisationResult, anonymise_series
from medview.io.audio import AUDIO_SUFFIXES
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
from medview.io.photo import split_photo_paths
from medview.io.sources import is_volume_name
from medview.io.volume import Volume
from medview.progress import CancelCheck
from medview.ui.audit_dialog import AuditLogDialog
from medview.ui.ct.findings.base import FindingTab
from medview.ui.ct.findings.panel import FindingsPanel
from medview.ui.ct.layers import LabelLayer, Layer, LayerStack
from medview.ui.ct.mpr_view import MprView
from medview.ui.ct.panels import LayersPanel, StudyBrowserPanel, TagBrowserPanel, thumbnail_image
from medview.ui.ct.slice_view import voxel_label
from medview.ui.dialogs import AboutDialog, ShortcutsDialog, show_message
from medview.ui.lung.panel import AUDIO_FILTER, LungSoundPanel
from medview.ui.models_dialog import ModelsDialog
from medview.ui.pacs.receiver import PacsReceiver, PacsSettingsDialog
from medview.ui.qt import GarbageCollector, QtCore, QtGui, QtWidgets
from medview.ui.skin.panel import PHOTO_FILTER, SkinPanel
from medview.ui.workers import Task, TaskRunner
from medview.ui.workspace import ModelWorkspace
from medview.workflows.audit import AuditedExport

if TYPE_CHECKING:
    from medview.ui.pacs.query_dialog import PacsQueryDialog

log = logging.getLogger(__name__)

DEFAULT_THUMBNAIL_WINDOW = (40.0, 400.0)  # soft-tissue window for series that suggest none
#: the window's size when it is not maximised, where the screen has room
PREFERRED_SIZE = QtCore.QSize(1600, 1000)
#: keys that move through the slices; they reach the axial view whenever the CT workspace is shown
NAVIGATION_KEYS = frozenset(
    {
        QtCore.Qt.Key.Key_Up,
        QtCore.Qt.Key.Key_Down,
        QtCore.Qt.Key.Key_PageUp,
        QtCore.Qt.Key.Key_PageDown,
        QtCore.Qt.Key.Key_Home,
        QtCore.Qt.Key.Key_End,
    }
)
MASK_FILTER = "Masks (*.nii *.nii.gz *.nrrd *.nhdr *.mha *.dcm);;All files (*)"


#: widgets whose own keys include the slice keys: these keep them while they have the focus
KEY_USING_WIDGETS = (
    QtWidgets.QAbstractItemView,
    QtWidgets.QAbstractSpinBox,
    QtWidgets.QAbstractSlider,
    QtWidgets.QLineEdit,
    QtWidgets.QTextEdit,
    QtWidgets.QPlainTextEdit,
    QtWidgets.QComboBox,
)


def is_volume_file(path: Path) -> bool:
    """NIfTI/NRRD/MetaImage files open as volumes, everything else is scanned as DICOM."""
    return path.is_file() and is_volume_name(path)


class MainWindow(QtWidgets.QMainWindow):
    """Everything a radiologist needs to open and read a CT study."""

    volume_loaded = QtCore.Signal(object)  # Volume, once fully decoded
    first_slice_shown = QtCore.Signal()  # a series being decoded has put its first slice on screen
    engine_ready = QtCore.Signal(object)  # the InferenceService, once torch has loaded (after the window shows)

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__()
        self.setObjectName("main_window")
        self.setWindowTitle("MedView")
        self.setAcceptDrops(True)
        # Python's cycle collector runs on the GUI thread only, on a timer (pyqtgraph's GarbageCollector): run by
        # an allocation on a worker (an import while exporting a DICOM SEG), it freed a closed widget's wrapper
        # there, whose QObject lock the GUI thread held while waiting for the GIL the worker held: a deadlock
        self._garbage_collector = GarbageCollector(interval=1.0)
        self.settings = settings or Settings.load()
        self.tasks = TaskRunner(self)
        self._prepared: set[tuple[str, tuple[str, ...]]] = set()  # identity of each model prepare_models loaded
        self.preparation: Task | None = None  # the latest prepare_models task
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
        self.engine: InferenceService | None = None  # set by medview.app once torch has loaded
        self.engine_problem = ""  # why there is no engine, when loading it failed

        self.mpr = MprView(self.layers)
        self.skin = SkinPanel(self._start)
        self.lung = LungSoundPanel(self._start)
        self.workspaces = QtWidgets.QTabWidget()
        self.workspaces.setObjectName("workspaces")
        self.workspaces.setDocumentMode(True)
        self.workspaces.addTab(self.mpr, "CT studies")
        self.workspaces.addTab(self.lung, "Lung sounds")
        self.workspaces.addTab(self.skin, "Skin lesions")
        self.setCentralWidget(self.workspaces)
        self._size_to_current_workspace()
        self.browser = StudyBrowserPanel()
        self.tags = TagBrowserPanel()
        self.layers_panel = LayersPanel(self.layers)
        self.ct_docks = [
            self._dock("Studies", self.browser, QtCore.Qt.DockWidgetArea.LeftDockWidgetArea),
            self._dock("Layers", self.layers_panel, QtCore.Qt.DockWidgetArea.LeftDockWidgetArea),
        ]
        self.findings = FindingsPanel(self.layers, self._start)
        self.model_workspaces: tuple[ModelWorkspace, ...] = (self.skin, self.lung, self.findings)
        # the current slice, its display window and the ROIs drawn on it come from the axial view
        self.findings.current_slice = lambda: self.mpr.axial.index
        self.findings.display_window = lambda: self.mpr.axial.window
        kidney = self.findings.kidney
        kidney.current_slice = lambda: self.mpr.axial.index
        kidney.drawn_rois = lambda: self.mpr.axial.measurements
        kidney.selected_finding = self.findings.selected_finding
        self.mpr.axial.measurements_changed.connect(kidney.refresh_rois)
        self.ct_docks.append(self._dock("AI findings", self.findings, QtCore.Qt.DockWidgetArea.RightDockWidgetArea))
        self.tags_dock = self._dock("DICOM tags", self.tags, QtCore.Qt.DockWidgetArea.RightDockWidgetArea)
        self.tags_dock.hide()
        self.ct_docks.append(self.tags_dock)
        self._ct_docks_shown: list[QtWidgets.QDockWidget] = []  # what to show again on coming back to CT
        self._on_ct = True

        self.progress = QtWidgets.QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.setVisible(False)
        self.cancel_button = QtWidgets.QPushButton("Cancel")
        self.cancel_button.setVisible(False)
        self.cancel_button.clicked.connect(self.cancel_running)
        self.cursor_label = QtWidgets.QLabel()
        self.statusBar().addPermanentWidget(self.cursor_label)
        self.statusBar().addPermanentWidget(self.progress)
        self.statusBar().addPermanentWidget(self.cancel_button)

        self.cine_timer = QtCore.QTimer(self)
        self.cine_timer.timeout.connect(self._cine_step)
        self.partial_refresh = QtCore.QTimer(self)
        self.partial_refresh.setInterval(250)
        self.partial_refresh.timeout.connect(self.mpr.refresh)
        self.tag_timer = QtCore.QTimer(self, singleShot=True, interval=150)
        self.tag_timer.timeout.connect(self._update_tags)

        self.pacs = PacsReceiver(self.settings, tasks=self.tasks, parent=self)
        self.pacs.series_updated.connect(self._on_received_series)
        self.pacs.status_changed.connect(lambda text: self.statusBar().showMessage(f"DICOM receiver: {text}", 10000))
        QtCore.QTimer.singleShot(0, self.pacs.apply_settings)  # starts it only when the settings enable it
        QtCore.QTimer.singleShot(0, self.pacs.publish_stored)  # what was received before, in the browser

        self._build_actions()
        self.workspaces.currentChanged.connect(self._on_workspace_changed)
        self.findings.task_tabs.currentChanged.connect(lambda _index: self.prepare_models())
        self.browser.series_activated.connect(self.load_series)
        self.mpr.axial.slice_changed.connect(lambda _i: self.tag_timer.start())
        self.tags_dock.visibilityChanged.connect(lambda visible: visible and self.tag_timer.start())
        for view in self.mpr.views.values():
            view.hovered.connect(self._on_hovered)
        self.mpr.window_changed.connect(self._show_preset_of)
        QtWidgets.QApplication.instance().installEventFilter(self)  # slice keys, whatever has the focus (eventFilter)
        self._fit_to_screen()

    def _fit_to_screen(self) -> None:
        """Open maximised, as reading software does (the views get the whole screen, from 1280x720 laptops to
        reading-room monitors); restored, the window takes the preferred size, within the screen."""
        available = self.screen().availableGeometry()
        self.resize(PREFERRED_SIZE.boundedTo(available.size()))
        self.move(available.center() - self.rect().center())
        self.setWindowState(self.windowState() | QtCore.Qt.WindowState.WindowMaximized)
        # the side panels take what their names need, the views the rest
        side = max(240, min(320, available.width() // 7))
        self.resizeDocks(self.ct_docks[:1], [side], QtCore.Qt.Orientation.Horizontal)

    def _size_to_current_workspace(self) -> None:
        """Only the shown workspace's minimum size counts: a QTabWidget otherwise takes the widest page's, and
        the lung sound toolbar's width plus the CT docks forced a window 1663 px wide."""
        current = self.workspaces.currentWidget()
        ignored, preferred = QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred
        for index in range(self.workspaces.count()):
            page = self.workspaces.widget(index)
            policy = preferred if page is current else ignored
            page.setSizePolicy(policy, policy)
        self.workspaces.updateGeometry()

    # ------------------------------------------------------------------ building

    def _dock(self, title: str, widget: QtWidgets.QWidget, area: QtCore.Qt.DockWidgetArea) -> QtWidgets.QDockWidget:
        dock = QtWidgets.QDockWidget(title, self)
        dock.setObjectName(f"{widget.objectName()}_dock")
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def _action(
        self, text: str, slot: object, shortcut: str | QtGui.QKeySequence | None = None, checkable: bool = False
    ) -> QtGui.QAction:
        action = QtGui.QAction(text, self)
        if shortcut:
            action.setShortcut(QtGui.QKeySequence(shortcut))
        action.setCheckable(checkable)
        action.triggered.connect(slot)
        self.addAction(action)
        self.all_actions.append(action)
        return action

    def _build_actions(self) -> None:
        self.all_actions: list[QtGui.QAction] = []
        menu = self.menuBar()
        file_menu = menu.addMenu("&File")
        file_menu.addAction(self._action("Open &folder…", self._choose_folder, QtGui.QKeySequence.StandardKey.Open))
        file_menu.addAction(self._action("Open f&iles (DICOM, zip, DICOMDIR)…", self._choose_files, "Ctrl+Shift+O"))
        file_menu.addAction(self._action("Open &volume (NIfTI, NRRD)…", self._choose_volume))
        file_menu.addAction(self._action("Open lung sound &recording…", self._choose_recording, "Ctrl+Shift+R"))
        file_menu.addAction(self._action("Open lesion &photos…", self._choose_photos, "Ctrl+Shift+P"))
        self.recent_menu = file_menu.addMenu("&Recent")
        self._rebuild_recent()
        file_menu.addSeparator()
        file_menu.addAction(self._action("Export series &anonymised (DICOM)…", self._choose_anonymised_export))
        file_menu.addAction(self._action("Export the &view as PNG…", self._choose_view_export, "Ctrl+Shift+S"))
        file_menu.addAction(self._action("Export case &report (PDF)…", self._choose_report, "Ctrl+Shift+E"))
        file_menu.addAction(
            self._action("Export anonymised case report (PDF)…", lambda: self._choose_report(anonymise=True))
        )
        file_menu.addSeparator()
        file_menu.addAction(self._action("DICOM &receiver (PACS)…", self.show_pacs_settings))
        file_menu.addAction(self._action("&Query/retrieve from PACS…", self.show_pacs_query, "Ctrl+Shift+Q"))
        file_menu.addAction(self._action("&Audit log…", self.show_audit_log))
        file_menu.addSeparator()
        file_menu.addAction(self._action("Show &problems of the last open", self.show_problems))
        file_menu.addAction(self._action("&Quit", self.close, QtGui.QKeySequence.StandardKey.Quit))

        overlay_menu = menu.addMenu("&Overlay")
        overlay_menu.addAction(self._action("Load &mask (NIfTI, NRRD, DICOM SEG)…", self._choose_mask, "Ctrl+M"))
        ai_menu = menu.addMenu("&AI")
        ai_menu.addAction(
            self._action("Segment &liver", lambda: self._run_finding(self.findings.liver), "Ctrl+Shift+L")
        )
        ai_menu.addAction(
            self._action("Find &kidney stones", lambda: self._run_finding(self.findings.kidney), "Ctrl+Shift+K")
        )
        ai_menu.addAction(
            self._action("Classify &COVID-19", lambda: self._run_finding(self.findings.covid), "Ctrl+Shift+C")
        )

        view_menu = menu.addMenu("&View")
        toolbar = self.addToolBar("Tools")
        toolbar.setObjectName("tools_toolbar")
        self.ct_toolbar = toolbar
        tools = QtGui.QActionGroup(self)
        for tool, text, key in (
            ("navigate", "Navigate", "Esc"),
            ("distance", "Distance", "D"),
            ("rectangle", "Rectangle ROI", "B"),
            ("ellipse", "Ellipse ROI", "E"),
        ):
            action = self._action(text, lambda _c=False, t=tool: self.mpr.set_tool(t), key, checkable=True)
            action.setObjectName(f"tool_{tool}")
            action.setChecked(tool == "navigate")
            tools.addAction(action)
            toolbar.addAction(action)
            view_menu.addAction(action)
        toolbar.addSeparator()
        view_menu.addSeparator()
        self.preset_box = QtWidgets.QComboBox()
        self.preset_box.setObjectName("preset_box")
        self.preset_box.addItem("Window preset…")
        for number, name in enumerate(self.settings.window_presets, start=1):
            self.preset_box.addItem(name)
            action = self._action(
                f"{name} window", lambda _c=False, n=name: self.apply_preset(n), str(number) if number < 10 else None
            )
            view_menu.addAction(action)
        self.preset_box.textActivated.connect(
            lambda name: self.apply_preset(name) if name in self.settings.window_presets else None
        )
        toolbar.addWidget(self.preset_box)
        toolbar.addSeparator()
        self.cine_action = self._action("Cine", self.toggle_cine, "Space", checkable=True)
        toolbar.addAction(self.cine_action)
        self.cine_fps = QtWidgets.QSpinBox(minimum=1, maximum=60, value=10, suffix=" fps")
        self.cine_fps.valueChanged.connect(lambda fps: self.cine_timer.setInterval(int(1000 / fps)))
        toolbar.addWidget(self.cine_fps)
        view_menu.addAction(self.cine_action)
        self.single_action = self._action(
            "Enlarge the view under the mouse", lambda checked: self.mpr.set_single(checked), "F2", checkable=True
        )
        view_menu.addAction(self.single_action)
        self.mpr.enlarged_changed.connect(self.single_action.setChecked)
        view_menu.addAction(
            self._action("Reset zoom", lambda: [v.reset_view() for v in self.mpr.views.values()], "Ctrl+0")
        )
        view_menu.addSeparator()
        for dock in self.findChildren(QtWidgets.QDockWidget):
            view_menu.addAction(dock.toggleViewAction())

        models_menu = menu.addMenu("&Models")
        models_menu.addAction(self._action("Installed &models and import…", self.show_models))

        help_menu = menu.addMenu("&Help")
        help_menu.addAction(
            self._action("&Keyboard shortcuts", self.show_shortcuts, QtGui.QKeySequence.StandardKey.HelpContents)
        )
        help_menu.addAction(self._action("&About MedView", self.show_about))

    def _rebuild_recent(self) -> None:
        self.recent_menu.clear()
        for path in self.settings.recent_paths:
            self.recent_menu.addAction(path, lambda p=path: self.open_paths([Path(p)]))
        self.recent_menu.setEnabled(bool(self.settings.recent_paths))

    # ------------------------------------------------------------------ opening

    def _choose_folder(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Open DICOM folder", self.settings.last_directory)
        if folder:
            self.open_paths([Path(folder)])

    def _choose_files(self) -> None:
        files, _ = QtWidgets.QFileDialog.getOpenFileNames(self, "Open DICOM files", self.settings.last_directory)
        if files:
            self.open_paths([Path(f) for f in files])

    def _choose_volume(self) -> None:
        file, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "Open volume", self.settings.last_directory, "Volumes (*.nii *.nii.gz *.nrrd *.nhdr *.mha *.mhd)"
        )
        if file:
            self.open_paths([Path(file)])

    def _choose_mask(self) -> None:
        file, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Load mask", self.settings.last_directory, MASK_FILTER)
        if file:
            self.load_mask(Path(file))

    def open_paths(self, paths: list[Path]) -> Task | None:
        """Open dropped or chosen paths: photos in the skin workspace, NIfTI/NRRD volumes directly,
        the rest scanned for DICOM.  Returns the CT task, if one was started."""
        if not paths:
            return None
        self.settings.last_directory = str(paths[0].parent if paths[0].is_file() else paths[0])
        self.settings.save()
        photos, paths = split_photo_paths(paths)
        if photos:
            self.skin.add_photos(photos)
            self.workspaces.setCurrentWidget(self.skin)
            self._remember(photos)
        recordings = [path for path in paths if path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES]
        if recordings:
            paths = [path for path in paths if path not in recordings]
            self.lung.open(recordings[0])  # one recording at a time: the last dropped ones are not queued
            self.workspaces.setCurrentWidget(self.lung)
            self._remember(recordings[:1])
            if len(recordings) > 1:
                self.statusBar().showMessage(f"Opened {recordings[0].name}; one recording is shown at a time", 10000)
        if not paths:
            return None
        self.workspaces.setCurrentWidget(self.mpr)
        volumes = [p for p in paths if is_volume_file(p)]
        if volumes:
            self._scan_problems = []
            self._remember(volumes[:1])
            return self.load_volume_file(volumes[0])
        task = Task(lambda progress, cancelled, _partial: scan_paths(paths, progress, cancelled), "Scanning for DICOM")
        task.signals.succeeded.connect(lambda result: self._on_scanned(result, paths))
        return self._start(task, "Scanning…")

    def _remember(self, paths: list[Path]) -> None:
        """Put what opened in File > Recent (what held nothing to open is not offered again)."""
        for path in reversed(paths[:10]):
            self.settings.add_recent(path)
        self._rebuild_recent()
        self.settings.save()

    def _choose_recording(self) -> None:
        file, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "Open a lung sound recording", self.settings.last_directory, AUDIO_FILTER
        )
        if file:
            self.open_paths([Path(file)])  # as a drop: the lung sound tab comes to the front

    def _choose_photos(self) -> None:
        files, _ = QtWidgets.QFileDialog.getOpenFileNames(
            self, "Open lesion photos", self.settings.last_directory, PHOTO_FILTER
        )
        if files:
            self.open_paths([Path(file) for file in files])  # as a drop: the skin lesion tab comes to the front

    def _on_scanned(self, result: ScanResult, paths: list[Path] | None = None) -> None:
        self._scan_problems = [str(p) for p in result.problems]
        self.problems = list(self._scan_problems)
        self.browser.add_series(result.series)
        opened = max(result.series, key=lambda s: s.slice_count) if result.series else None
        # the series being opened gets its thumbnail from its own decoded volume: not decoded twice
        self._thumbnail_from_load = opened
        self._start_thumbnails([s for s in result.series if s is not opened])
        if result.problems:
            self.statusBar().showMessage(
                f"{len(result.problems)} file(s) skipped — File > Show problems for the list", 10000
            )
        if not result.series:
            where = ", ".join(str(path) for path in paths or []) or "what was opened"
            self.statusBar().showMessage(f"No DICOM images found in {where}", 10000)
            skipped = "\n".join(self.problems[:8]) + ("\n…" if len(self.problems) > 8 else "")
            text = f"No DICOM images found in {where}." + (f"\n\nFiles skipped:\n{skipped}" if skipped else "")
            show_message(self, "No DICOM images", text, "\n".join(self.problems))
        if opened is not None:
            self._remember(paths or [])
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
            self.browser.set_thumbnail(series, thumbnail_image(plane, series.window or DEFAULT_THUMBNAIL_WINDOW))

        task = Task(work, "Making thumbnails", background=True)
        task.signals.partial.connect(show)
        self.tasks.start(task)

    def load_series(self, series: SeriesInfo) -> Task:
        """Decode a series in the background; the first slice shows as soon as it is ready."""
        self._begin_load()

        def work(progress: object, cancelled: object, partial: object) -> Volume:
            return load_dicom_series(series, progress, cancelled, lambda volume, z: partial((volume, z)))  # type: ignore[arg-type, misc]

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
        return self._start(task, f"Loading {series.display_name}…")

    def load_volume_file(self, path: Path) -> Task:
        """Open a NIfTI/NRRD/MetaImage volume in the background."""
        self._begin_load()

        def work(_progress: object, _cancelled: object, _partial: object) -> Volume:
            from medview.io.volume_files import read_volume

            return read_volume(path)

        task = Task(work, f"Opening {path.name}")
        self._audit_load(task, {"kind": "volume", "path": path})
        self._watch_load(task, None)
        return self._start(task, f"Opening {path.name}…")

    @staticmethod
    def _audit_load(task: Task, audited: dict) -> None:
        """Record in the audit log what ``task`` opened, or that it failed to."""
        task.signals.succeeded.connect(lambda _volume: audit_log().record_open(**audited))
        task.signals.errored.connect(
            lambda message, _details: audit_log().record_open(
                **audited, outcome=Outcome.SERIOUS_FAILURE, outcome_description=message
            )
        )

    def _on_received_series(self, series: SeriesInfo) -> None:
        """A series arriving from a PACS: listed (or its image count updated) as it arrives."""
        item = self.browser.add_or_update_series(series)
        if item.icon(0).isNull():
            self._start_thumbnails([series])

    def _choose_anonymised_export(self) -> None:
        if self.series is None or self.volume is None:
            show_message(self, "No DICOM series open", "Open a DICOM series first, then export it anonymised.")
            return
        folder = QtWidgets.QFileDialog.getExistingDirectory(
            self, "Export the series anonymised into an empty folder", self.settings.last_directory
        )
        if folder:
            self.export_anonymised(Path(folder))

    def export_anonymised(self, destination: Path) -> Task | None:
        """Write the open series into ``destination`` with PS3.15's basic confidentiality profile applied, new UIDs."""
        series = self.series
        if series is None:
            return None
        sources = [header.source for header in series.slices]

        audited = AuditedExport(
            "series",
            destination,
            "DICOM",
            anonymised=True,
            study_uid=series.study_uid,
            series_uid=dicom_series_uid(series.series_uid),
            patient_id=series.patient_id,
        )

        def work(progress: object, cancelled: object, _partial: object) -> AnonymisationResult:
            return audited.write(
                lambda: anonymise_series(sources, destination, progress=progress, cancelled=cancelled)  # type: ignore[arg-type]
            )

        def on_done(result: AnonymisationResult) -> None:
            lines = [f"Exported {len(result.files)} images to {result.folders[0]}." if result.folders else "", ""]
            lines += [*result.warnings, "Text burned into the pixels is not removed: check the images before sharing."]
            show_message(self, "Anonymised export", "\n".join(lines).strip(), warning=bool(result.warnings))

        task = Task(work, f"Exporting {series.display_name} anonymised")
        task.signals.succeeded.connect(on_done)
        return self._start(task, f"Exporting {series.display_name} anonymised…")

    def _choose_report(self, anonymise: bool = False) -> None:
        # the user's documents, not the study's folder (a PACS import folder, or the app's own resources)
        documents = QtCore.QStandardPaths.writableLocation(QtCore.QStandardPaths.StandardLocation.DocumentsLocation)
        name = str(Path(documents or Path.home()) / "case_report.pdf")
        title = "Export anonymised case report" if anonymise else "Export case report"
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, title, name, "PDF (*.pdf)")
        if path:
            self.export_report(Path(path), anonymise=anonymise)

    def export_report(self, path: Path, *, anonymise: bool = False) -> Task | None:
        """The current case (CT findings, lung cycles, skin results, with provenance) as a PDF.

        Key images are drawn here, on the GUI thread (widgets draw them); the PDF is written on a worker.
        """
        from medview.ui.report import collect_report, write_pdf  # on first use: start-up does not pay for it

        try:
            report = collect_report(self, anonymise=anonymise)
        except MedviewError as error:
            show_message(self, "No report", str(error))
            return None
        volume = self.volume
        audited = AuditedExport(
            "case report",
            path,
            "PDF",
            anonymised=anonymise,
            series_uid=dicom_series_uid(volume.series_uid) if volume is not None else None,
            patient_id=volume.info.get("PatientID") if volume is not None and not anonymise else None,
        )

        def work(_progress: object, _cancelled: object, _partial: object) -> Path:
            audited.write(lambda: write_pdf(report, path))
            return path

        task = Task(work, f"Writing {path.name}")
        saved = f"Saved the case report to {path}"
        task.signals.succeeded.connect(lambda _path: self.statusBar().showMessage(saved, 8000))
        return self._start(task, f"Writing {path.name}…")

    def _choose_view_export(self) -> None:
        name = str(Path(self.settings.last_directory or Path.home()) / "medview_view.png")
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Export the view as PNG", name, "PNG image (*.png)")
        if path:
            self.export_view(Path(path))

    def export_view(self, path: Path) -> bool:
        """Save what the current workspace shows (images, overlays, read-outs, banner) as a PNG."""
        volume = self.volume if self.workspaces.currentWidget() is self.mpr else None
        audited = AuditedExport(
            f"view of {self.workspaces.tabText(self.workspaces.currentIndex())}",
            path,
            "PNG",
            series_uid=dicom_series_uid(volume.series_uid) if volume is not None else None,
            patient_id=volume.info.get("PatientID") if volume is not None else None,
        )

        def save() -> None:
            if not self.workspaces.currentWidget().grab().save(str(path), "PNG"):
                raise ExportError("the image could not be written there.", path=path)

        try:
            audited.write(save)
        except ExportError as error:
            show_message(self, "Could not export the view", str(error))
            return False
        self.statusBar().showMessage(f"Saved the view to {path}", 5000)
        return True

    def show_pacs_settings(self) -> None:
        """The DICOM receiver's settings (on/off, AE title, port); applied on OK."""
        dialog = PacsSettingsDialog(self.settings, self, status=self.pacs.status)
        if dialog.exec() == QtWidgets.QDialog.DialogCode.Accepted:
            self.settings.save()
            self.pacs.apply_settings()

    def show_pacs_query(self) -> PacsQueryDialog:
        """Search a PACS and fetch studies into the received studies; they are listed in the browser as they come."""
        from medview.ui.pacs.query_dialog import PacsQueryDialog  # on first use: the C-FIND/C-GET client's imports

        dialog = PacsQueryDialog(self.settings, self.pacs.store, parent=self)
        dialog.series_retrieved.connect(self._on_received_series)
        dialog.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.show()
        return dialog

    def show_audit_log(self) -> AuditLogDialog:
        """Who opened, ran and exported what: the audit log, read-only."""
        dialog = AuditLogDialog(self.tasks, parent=self)
        dialog.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.show()
        return dialog

    def _begin_load(self) -> None:
        """Stop a running load; remember what is on screen so a cancel or failure can bring it back."""
        if not self._partial_on_screen:  # else keep what was shown before that unfinished load
            self._shown_before_load = (self.volume, list(self.layers.layers))
        self.cancel_loading()
        self._first_slice_shown = False

    def _watch_load(self, task: Task, series: SeriesInfo | None) -> None:
        """Route the outcome of ``task`` (reading ``series``, or a volume file) to the window while it is current."""
        self.load_task = task

        def loaded(volume: Volume) -> None:
            if task is self.load_task:
                self.series = series
                self._on_volume_loaded(volume)

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

    def load_mask(self, path: Path, name: str | None = None) -> Task | None:
        """Put a NIfTI/NRRD/DICOM SEG mask over the open volume as a label layer.

        ``name`` labels the layer; by default the segment names the file carries.
        """
        volume = self.volume
        if volume is None:
            show_message(self, "No image open", "Open a CT series first, then load its mask.")
            return None

        def work(_progress: object, _cancelled: object, _partial: object) -> object:
            from medview.io.volume_files import read_label_map

            return read_label_map(path, volume)

        task = Task(work, f"Loading mask {path.name}")
        task.signals.succeeded.connect(lambda label_map: self._on_mask_loaded(label_map, path, name))
        return self._start(task, f"Loading mask {path.name}…")

    def _on_mask_loaded(self, label_map: object, path: Path, name: str | None) -> None:
        names = getattr(label_map, "names", {})
        name = name or f"{', '.join(names.values()) if names else 'mask'} [{path.name}]"
        self.layers.add(LabelLayer(name=name, labels=label_map.labels, names=dict(names)))  # type: ignore[attr-defined]
        self.statusBar().showMessage(f"Mask {path.name} loaded", 5000)

    def _start(self, task: Task, message: str) -> Task:
        task.signals.progress.connect(self._on_progress)
        task.signals.errored.connect(lambda text, details: self._on_task_error(text, details, task.description))
        task.signals.cancelled.connect(lambda: self.statusBar().showMessage(f"{task.description}: cancelled", 5000))
        task.signals.finished.connect(self._on_task_finished)
        # "Classifying…" must not outlive the work; a message the outcome put there stays
        task.signals.finished.connect(
            lambda: self.statusBar().currentMessage() == message and self.statusBar().clearMessage()
        )
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        self.cancel_button.setVisible(True)
        self.statusBar().showMessage(message)
        return self.tasks.start(task)

    def cancel_loading(self) -> None:
        """Stop the running load (the previously shown volume stays)."""
        if self.load_task is not None and not self.load_task.done.is_set():
            self.load_task.cancel()
        self.partial_refresh.stop()

    def cancel_running(self) -> None:
        """The status bar's Cancel: stop every task it shows progress for (loads, classifications)."""
        self.cancel_loading()
        for task in self.tasks.running:
            if not task.background:
                task.cancel()

    def _on_progress(self, done: int, total: int, what: str) -> None:
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self.progress.setToolTip(what)

    def _on_task_error(self, message: str, details: str, description: str) -> None:
        self.statusBar().showMessage(message, 10000)
        show_message(self, f"{description}: failed", message, details)

    def _on_task_finished(self) -> None:
        busy = [t for t in self.tasks.running if not t.done.is_set() and not t.background]
        if not busy:
            self.progress.setVisible(False)
            self.cancel_button.setVisible(False)
            self.partial_refresh.stop()

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

    def _on_volume_loaded(self, volume: Volume) -> None:
        self.partial_refresh.stop()
        if self._first_slice_shown and self.volume is not None and self.volume.series_uid == volume.series_uid:
            self._replace_volume(volume)
        else:
            self._show_volume(volume)
        self._first_slice_shown = self._partial_on_screen = False
        self._shown_before_load = None
        self.findings.set_volume(volume)
        self.prepare_models()
        series = self._thumbnail_from_load
        if series is not None and series.series_uid == volume.series_uid:
            window = volume.default_window or DEFAULT_THUMBNAIL_WINDOW
            self.browser.set_thumbnail(series, thumbnail_image(volume.voxels[volume.shape[0] // 2], window))
        self._thumbnail_from_load = None
        self.problems = self._scan_problems + list(volume.warnings)
        if volume.warnings:
            self.statusBar().showMessage(f"Loaded with {len(volume.warnings)} warning(s): {volume.warnings[0]}", 15000)
        else:
            self.statusBar().showMessage(f"Loaded {volume.description}: {volume.shape[0]} slices", 5000)
        self.volume_loaded.emit(volume)

    def _show_volume(self, volume: Volume | None) -> None:
        self.volume = volume
        self.layers.clear()
        self.mpr.set_volume(volume, volume.default_window if volume is not None else None)
        if volume is None:
            self.setWindowTitle("MedView")
            return
        name = volume.info.get("PatientName") or ""
        self.setWindowTitle(f"MedView — {name} {volume.description}".strip())
        self.tag_timer.start()

    def _replace_volume(self, volume: Volume) -> None:
        """Swap in the finished volume (same data) without moving the user's slice or zoom."""
        self.volume = volume
        for view in self.mpr.views.values():
            view.volume = volume
        self.mpr.refresh()

    # ------------------------------------------------------------------ viewing

    def _on_workspace_changed(self, _index: int) -> None:
        """The study browser, layers and tags belong to the CT workspace: shown with it, as the user left them.

        Cine (Space) is a CT action: off the CT tab Space plays and pauses the lung sound.
        """
        on_ct = self.workspaces.currentWidget() is self.mpr
        if not on_ct and self.cine_action.isChecked():
            self.cine_action.trigger()
        self.cine_action.setEnabled(on_ct)
        self._size_to_current_workspace()
        self.ct_toolbar.setVisible(on_ct)  # window presets, measurements and cine are CT tools
        self.cursor_label.setVisible(on_ct)
        if self._on_ct and not on_ct:
            self._ct_docks_shown = [dock for dock in self.ct_docks if not dock.isHidden()]
            for dock in self.ct_docks:
                dock.hide()
        elif on_ct and not self._on_ct:
            for dock in self._ct_docks_shown:
                dock.show()
        self._on_ct = on_ct
        self.prepare_models()

    def apply_preset(self, name: str) -> None:
        """Set a named window (Lung, Abdomen, Liver, Bone, Brain, or the user's own)."""
        center, width = self.settings.window_presets[name]
        self.mpr.set_window(center, width)
        self.statusBar().showMessage(f"{name} window: W {width:.0f} L {center:.0f}", 3000)

    def _show_preset_of(self, center: float, width: float) -> None:
        """The preset box names the window shown (keys 1-5 included), or its prompt for a window of one's own."""
        names = [name for name, window in self.settings.window_presets.items() if window == (center, width)]
        self.preset_box.setCurrentIndex(self.preset_box.findText(names[0]) if names else 0)

    def toggle_cine(self, running: bool) -> None:
        """Play the axial slices in a loop at the chosen frame rate."""
        if running:
            self.cine_timer.start(int(1000 / self.cine_fps.value()))
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
        self.cursor_label.setText(
            f"{value:.0f}{unit}  {voxel_label(z, y, x, self.volume.shape[0])}"
            f"  LPS ({lps[0]:.1f}, {lps[1]:.1f}, {lps[2]:.1f}) mm"
        )

    def _update_tags(self) -> None:
        if not self.tags_dock.isVisible() or self.volume is None:
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

    # ------------------------------------------------------------------ dialogs

    def show_problems(self) -> None:
        """List the files skipped or the warnings of the last open, each naming its file."""
        if not self.problems:
            show_message(self, "No problems", "The last open reported no problems.", warning=False)
            return
        shown = "\n".join(self.problems[:8]) + ("\n…" if len(self.problems) > 8 else "")
        show_message(self, "Problems while opening", shown, "\n".join(self.problems))

    def show_shortcuts(self) -> None:
        """The keyboard shortcut list."""
        ShortcutsDialog(self.all_actions, self).show()

    def show_models(self) -> ModelsDialog:
        """The installed model bundles, their model cards, and import of new ones."""
        dialog = ModelsDialog(self.settings, self.tasks, self)
        dialog.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
        # on close too: an import finishing after the dialog closed has no dialog left to signal it
        dialog.bundles_changed.connect(self._refresh_engine)
        dialog.finished.connect(self._refresh_engine)
        dialog.show()
        return dialog

    def _refresh_engine(self) -> None:
        if self.engine is not None:
            self.engine.refresh()
            self._prepared.clear()  # a bundle replaced in place has other files to load
            for workspace in self.model_workspaces:
                workspace.refresh_models()

    def set_engine(self, engine: InferenceService) -> None:
        """Receive the inference service built off the GUI thread; the AI features use it from now on."""
        self.engine = engine
        for workspace in self.model_workspaces:
            workspace.set_engine(engine)
        self.engine_ready.emit(engine)
        self.prepare_models()

    def _run_finding(self, runner: FindingTab) -> Task | None:
        """Run ``runner``'s model from the AI menu, its tab shown (its controls, notes and progress)."""
        self.findings.task_tabs.setCurrentWidget(runner)
        return runner.run()

    def prepare_models(self) -> Task | None:
        """Load, off the GUI thread, the models the current workspace would run now (each once per bundle).

        A model's first run would load it itself, importing the libraries its
        architecture needs, and an import holds the GIL while an extension module
        sets itself up: the window stalled 130-870 ms while that first run went on
        (bench.responsiveness). Done when the workspace is shown (CT: the task on
        show, once a whole series is open; lung sounds: never, see
        ``LungSoundPanel.chosen_cards``), the first run finds its model loaded. A
        model that cannot be loaded is left for its run to report.
        """
        if self.engine is None:
            return None
        current = self.workspaces.currentWidget()
        panel = self.findings if current is self.mpr else current
        cards = [card for card in panel.chosen_cards() if card.identity not in self._prepared]
        if not cards:
            return None
        self._prepared.update(card.identity for card in cards)
        engine = self.engine

        def work(_progress: object, cancelled: CancelCheck, _partial: object) -> None:
            for card in cards:
                if cancelled():
                    return
                engine.prepare(card)

        task = Task(work, "Preparing AI models", background=True)
        task.signals.errored.connect(lambda message, _details: log.warning("preparing models: %s", message))
        self.preparation = self.tasks.start(task)
        return self.preparation

    def set_engine_problem(self, message: str) -> None:
        """The inference service could not start: the viewer works on, and says why there is no AI."""
        self.engine_problem = message
        self.findings.set_engine_problem(message)
        self.statusBar().showMessage(f"AI models unavailable: {message}", 15000)

    def show_about(self) -> None:
        """Versions and device."""
        if self.engine is not None:
            device = self.engine.device_name()
        else:
            device = f"none ({self.engine_problem})" if self.engine_problem else ""
        receiver = self.pacs.status if self.pacs.is_running else ""
        AboutDialog(self, device=device, receiver=receiver, settings=self.settings).show()

    def eventFilter(self, watched: QtCore.QObject, event: QtCore.QEvent) -> bool:
        """Slice keys scroll the axial view whenever the CT workspace is shown, unless the focused widget uses
        them itself (a list, a text or number field, a slider): after a click on a Layers check box its arrow
        keys moved the focus and Home/End went nowhere."""
        if (
            event.type() == QtCore.QEvent.Type.KeyPress
            and event.key() in NAVIGATION_KEYS
            and not event.modifiers() & ~QtCore.Qt.KeyboardModifier.KeypadModifier
            and isinstance(watched, QtWidgets.QWidget)
            and self.isAncestorOf(watched)  # not watched.window(): SliceView.window is its W/L
            and self.workspaces.currentWidget() is self.mpr
            and self.mpr.volume_shown()
            and watched is QtWidgets.QApplication.focusWidget()  # once, where the key lands first
            and not isinstance(watched, (*KEY_USING_WIDGETS, type(self.mpr.axial)))
        ):
            self.mpr.navigation_target().keyPressEvent(event)
            return True
        return super().eventFilter(watched, event)

    # ------------------------------------------------------------------ drag and drop, closing

    def dragEnterEvent(self, event: QtGui.QDragEnterEvent) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QtGui.QDropEvent) -> None:
        paths = [Path(url.toLocalFile()) for url in event.mimeData().urls() if url.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.open_paths(paths)

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        QtWidgets.QApplication.instance().removeEventFilter(self)
        self._garbage_collector.timer.stop()
        gc.enable()  # the collector's timer stops with the window
        self.cine_timer.stop()
        self.pacs.shutdown()
        for workspace in self.model_workspaces:
            workspace.shutdown()
        self.tasks.cancel_all()
        self.settings.save()
        super().closeEvent(event)
