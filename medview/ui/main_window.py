"""The main window: the shell around a workspace per kind of input (CT studies, lung sounds, lesion photos).

The CT workspace (``ui.ct.workspace.CtWorkspace``) has the study browser, MPR
viewer, tags, layers and AI findings; the lung sound workspace the waveform,
spectrogram and cycles; the skin workspace the lesion gallery.  Whatever is
dropped on the window or opened goes to the workspace that reads it: photos to
the skin lesions, WAV/FLAC/OGG to the lung sounds, the rest to DICOM and volume
reading.  The window holds what they share: menus and toolbar, docks, the
status bar with progress and Cancel, the task pool, the AI engine, the PACS
receiver, the exports and the case report.
"""

from __future__ import annotations

import functools
import gc
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from medview.config import Settings
from medview.engine.api import InferenceService
from medview.errors import ExportError, MedviewError
from medview.io.anonymise import AnonymisationResult, anonymise_series
from medview.io.audio import AUDIO_SUFFIXES
from medview.io.dicom import (
    dicom_series_uid,
)
from medview.io.photo import split_photo_paths
from medview.progress import CancelCheck
from medview.ui.audit_dialog import AuditLogDialog
from medview.ui.ct.findings.base import FindingTab
from medview.ui.ct.workspace import CtWorkspace
from medview.ui.dialogs import AboutDialog, ShortcutsDialog, show_message
from medview.ui.lung.panel import AUDIO_FILTER, LungSoundPanel
from medview.ui.models_dialog import ModelsDialog
from medview.ui.pacs.outbox import OutboxDialog, PacsOutbox
from medview.ui.pacs.receiver import PacsReceiver, PacsSettingsDialog
from medview.ui.qt import GarbageCollector, QtCore, QtGui, QtWidgets
from medview.ui.skin.panel import PHOTO_FILTER, SkinPanel
from medview.ui.workers import Task, TaskRunner
from medview.ui.workspace import ModelWorkspace
from medview.workflows.audit import AuditedExport

if TYPE_CHECKING:
    from medview.ui.pacs.query_dialog import PacsQueryDialog

log = logging.getLogger(__name__)

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


def application() -> QtCore.QCoreApplication:
    """The running Qt application (the window exists only inside one)."""
    app = QtWidgets.QApplication.instance()
    if app is None:
        raise RuntimeError("no QApplication")
    return app


class MainWindow(QtWidgets.QMainWindow):
    """The application's window: workspaces as tabs, their panels as docks, and what they share."""

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
        self.engine: InferenceService | None = None  # set by medview.app once torch has loaded
        self.engine_problem = ""  # why there is no engine, when loading it failed

        self.ct = CtWorkspace(self.settings, self._start, self.tasks, self)
        self.skin = SkinPanel(self._start)
        self.lung = LungSoundPanel(self._start)
        self.workspaces = QtWidgets.QTabWidget()
        self.workspaces.setObjectName("workspaces")
        self.workspaces.setDocumentMode(True)
        self.workspaces.addTab(self.ct.mpr, "CT studies")
        self.workspaces.addTab(self.lung, "Lung sounds")
        self.workspaces.addTab(self.skin, "Skin lesions")
        self.setCentralWidget(self.workspaces)
        self._size_to_current_workspace()
        self.ct_docks = [
            self._dock("Studies", self.ct.browser, QtCore.Qt.DockWidgetArea.LeftDockWidgetArea),
            self._dock("Layers", self.ct.layers_panel, QtCore.Qt.DockWidgetArea.LeftDockWidgetArea),
            self._dock("AI findings", self.ct.findings, QtCore.Qt.DockWidgetArea.RightDockWidgetArea),
        ]
        self.model_workspaces: tuple[ModelWorkspace, ...] = (self.skin, self.lung, self.ct.findings)
        self.tags_dock = self._dock("DICOM tags", self.ct.tags, QtCore.Qt.DockWidgetArea.RightDockWidgetArea)
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

        self.ct.status.connect(self.statusBar().showMessage)
        self.ct.title_changed.connect(lambda shown: self.setWindowTitle(f"MedView — {shown}" if shown else "MedView"))
        self.ct.cursor_text.connect(self.cursor_label.setText)
        self.ct.opened.connect(self._remember)
        self.ct.volume_loaded.connect(lambda _volume: self.prepare_models())

        self.pacs = PacsReceiver(self.settings, tasks=self.tasks, parent=self)
        self.pacs.series_updated.connect(self.ct.add_received_series)
        self.pacs.status_changed.connect(lambda text: self.statusBar().showMessage(f"DICOM receiver: {text}", 10000))
        QtCore.QTimer.singleShot(0, self.pacs.apply_settings)  # starts it only when the settings enable it
        QtCore.QTimer.singleShot(0, self.pacs.publish_stored)  # what was received before, in the browser
        self.outbox = PacsOutbox(self.settings, self._start, self)
        self.outbox.status_changed.connect(lambda text: self.statusBar().showMessage(text, 15000))
        self.ct.findings.send_to_pacs = self.outbox.send
        self.outbox.start()  # what a previous session left waiting goes out once the window is up

        self._build_actions()
        self.workspaces.currentChanged.connect(self._on_workspace_changed)
        self.ct.findings.task_tabs.currentChanged.connect(lambda _index: self.prepare_models())
        self.tags_dock.visibilityChanged.connect(lambda visible: visible and self.ct.tag_timer.start())
        self.ct.mpr.window_changed.connect(self._show_preset_of)
        application().installEventFilter(self)  # slice keys, whatever has the focus (eventFilter)
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
            if page is not None:
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
        self,
        text: str,
        slot: Callable[..., object],
        shortcut: str | QtGui.QKeySequence | QtGui.QKeySequence.StandardKey | None = None,
        checkable: bool = False,
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
        file_menu.addAction(self._action("Send the series' AI &results to the PACS", self.send_series_results))
        file_menu.addAction(self._action("Send case report to the &PACS", self.send_report_to_pacs))
        file_menu.addAction(self._action("&Outbox (results sent to the PACS)…", self.show_outbox))
        file_menu.addAction(self._action("&Audit log…", self.show_audit_log))
        file_menu.addSeparator()
        file_menu.addAction(self._action("Show &problems of the last open", self.ct.show_problems))
        file_menu.addAction(self._action("&Quit", self.close, QtGui.QKeySequence.StandardKey.Quit))

        overlay_menu = menu.addMenu("&Overlay")
        overlay_menu.addAction(self._action("Load &mask (NIfTI, NRRD, DICOM SEG)…", self._choose_mask, "Ctrl+M"))
        ai_menu = menu.addMenu("&AI")
        ai_menu.addAction(
            self._action("Segment &liver", lambda: self._run_finding(self.ct.findings.liver), "Ctrl+Shift+L")
        )
        ai_menu.addAction(
            self._action("Find &kidney stones", lambda: self._run_finding(self.ct.findings.kidney), "Ctrl+Shift+K")
        )
        ai_menu.addAction(
            self._action("Classify &COVID-19", lambda: self._run_finding(self.ct.findings.covid), "Ctrl+Shift+C")
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
            action = self._action(text, lambda _c=False, t=tool: self.ct.mpr.set_tool(t), key, checkable=True)
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
                f"{name} window", lambda _c=False, n=name: self.ct.apply_preset(n), str(number) if number < 10 else None
            )
            view_menu.addAction(action)
        self.preset_box.textActivated.connect(
            lambda name: self.ct.apply_preset(name) if name in self.settings.window_presets else None
        )
        toolbar.addWidget(self.preset_box)
        toolbar.addSeparator()
        self.cine_fps = QtWidgets.QSpinBox()
        self.cine_fps.setRange(1, 60)
        self.cine_fps.setValue(10)
        self.cine_fps.setSuffix(" fps")
        self.cine_action = self._action(
            "Cine", lambda running: self.ct.set_cine(running, self.cine_fps.value()), "Space", checkable=True
        )
        toolbar.addAction(self.cine_action)
        self.cine_fps.valueChanged.connect(lambda fps: self.ct.cine_timer.setInterval(int(1000 / fps)))
        toolbar.addWidget(self.cine_fps)
        view_menu.addAction(self.cine_action)
        self.single_action = self._action(
            "Enlarge the view under the mouse", lambda checked: self.ct.mpr.set_single(checked), "F2", checkable=True
        )
        view_menu.addAction(self.single_action)
        self.ct.mpr.enlarged_changed.connect(self.single_action.setChecked)
        view_menu.addAction(self._action("Reset zoom", self._reset_zoom, "Ctrl+0"))
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

    def _reset_zoom(self) -> None:
        for view in self.ct.mpr.views.values():
            view.reset_view()

    def _rebuild_recent(self) -> None:
        self.recent_menu.clear()
        for path in self.settings.recent_paths:
            self.recent_menu.addAction(path, functools.partial(self.open_paths, [Path(path)]))
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
            self.ct.load_mask(Path(file))

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
        self.workspaces.setCurrentWidget(self.ct.mpr)
        return self.ct.open(paths)

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

    def _choose_anonymised_export(self) -> None:
        if self.ct.series is None or self.ct.volume is None:
            show_message(self, "No DICOM series open", "Open a DICOM series first, then export it anonymised.")
            return
        folder = QtWidgets.QFileDialog.getExistingDirectory(
            self, "Export the series anonymised into an empty folder", self.settings.last_directory
        )
        if folder:
            self.export_anonymised(Path(folder))

    def export_anonymised(self, destination: Path) -> Task | None:
        """Write the open series into ``destination`` with PS3.15's basic confidentiality profile applied, new UIDs."""
        series = self.ct.series
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
        # on first use: start-up does not pay for them (the workspaces import only the sections they fill)
        from medview.ui.report.collect import collect_report
        from medview.ui.report.document import write_pdf

        try:
            report = collect_report(self, anonymise=anonymise)
        except MedviewError as error:
            show_message(self, "No report", str(error))
            return None
        volume = self.ct.volume
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
        volume = self.ct.volume if self.workspaces.currentWidget() is self.ct.mpr else None
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
        dialog.series_retrieved.connect(self.ct.add_received_series)
        dialog.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.show()
        return dialog

    def send_series_results(self) -> Task | None:
        """Every AI result of the open series (reports, SEG, maps) to the PACS, through the outbox."""
        return self.ct.findings.send_results(every_finding=True)

    def send_report_to_pacs(self) -> Task | None:
        """The case report's CT part (not anonymised: it joins the patient's study; no lung sound or skin section,
        which may be another patient's) as an Encapsulated PDF in the open CT series' study, through the outbox."""
        from medview.ui.report.collect import collect_report  # on first use, as in export_report
        from medview.ui.report.document import write_pdf

        volume = self.ct.volume
        if volume is None or not volume.slice_files:
            show_message(
                self,
                "No study to send to",
                "The case report goes into the CT study it is about: open its DICOM "
                "series first (a series opened from a NIfTI or NRRD file has no study in the PACS).",
            )
            return None
        try:
            report = collect_report(self, anonymise=False, ct_only=True)
        except MedviewError as error:
            show_message(self, "No report", str(error))
            return None

        def make_files(folder: Path, _cancelled: object) -> list[Path]:
            from medview.io.dicom_results import write_encapsulated_pdf

            pdf = folder / "case_report.pdf"
            write_pdf(report, pdf)
            title = "MedView case report"
            return [write_encapsulated_pdf(folder / "case_report.dcm", pdf.read_bytes(), volume, title=title)]

        return self.outbox.send(
            make_files,
            "case report (PDF)",
            study_uid=volume.info.get("StudyInstanceUID", ""),
            patient_id=volume.info.get("PatientID", ""),
        )

    def show_outbox(self) -> OutboxDialog:
        """What was sent to the PACS and what is waiting, with why; retry or remove."""
        dialog = OutboxDialog(self.outbox, parent=self)
        dialog.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.show()
        return dialog

    def show_audit_log(self) -> AuditLogDialog:
        """Who opened, ran and exported what: the audit log, read-only."""
        dialog = AuditLogDialog(self.tasks, parent=self)
        dialog.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.show()
        return dialog

    def _start(self, task: Task, message: str) -> Task:
        task.signals.progress.connect(self._on_progress)
        task.signals.errored.connect(lambda text, details: self._on_task_error(text, details, task.description))
        task.signals.cancelled.connect(lambda: self.statusBar().showMessage(f"{task.description}: cancelled", 5000))
        task.signals.finished.connect(self._on_task_finished)

        # "Classifying…" must not outlive the work; a message the outcome put there stays
        def clear_own_message() -> None:
            if self.statusBar().currentMessage() == message:
                self.statusBar().clearMessage()

        task.signals.finished.connect(clear_own_message)
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        self.cancel_button.setVisible(True)
        self.statusBar().showMessage(message)
        return self.tasks.start(task)

    def cancel_running(self) -> None:
        """The status bar's Cancel: stop every task it shows progress for (loads, classifications)."""
        self.ct.cancel_loading()
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
            self.ct.partial_refresh.stop()

    # ------------------------------------------------------------------ viewing

    def _on_workspace_changed(self, _index: int) -> None:
        """The study browser, layers and tags belong to the CT workspace: shown with it, as the user left them.

        Cine (Space) is a CT action: off the CT tab Space plays and pauses the lung sound.
        """
        on_ct = self.workspaces.currentWidget() is self.ct.mpr
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

    def _show_preset_of(self, center: float, width: float) -> None:
        """The preset box names the window shown (keys 1-5 included), or its prompt for a window of one's own."""
        names = [name for name, window in self.settings.window_presets.items() if window == (center, width)]
        self.preset_box.setCurrentIndex(self.preset_box.findText(names[0]) if names else 0)

    # ------------------------------------------------------------------ dialogs

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
        self.ct.findings.task_tabs.setCurrentWidget(runner)
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
        panel: ModelWorkspace = (
            self.lung if current is self.lung else self.skin if current is self.skin else self.ct.findings
        )
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
        self.ct.findings.set_engine_problem(message)
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
            isinstance(event, QtGui.QKeyEvent)
            and event.type() == QtCore.QEvent.Type.KeyPress
            and event.key() in NAVIGATION_KEYS
            and not event.modifiers() & ~QtCore.Qt.KeyboardModifier.KeypadModifier
            and isinstance(watched, QtWidgets.QWidget)
            and self.isAncestorOf(watched)  # a widget of this window: a dialog keeps its own keys
            and self.workspaces.currentWidget() is self.ct.mpr
            and self.ct.mpr.volume_shown()
            and watched is QtWidgets.QApplication.focusWidget()  # once, where the key lands first
            and not isinstance(watched, (*KEY_USING_WIDGETS, type(self.ct.mpr.axial)))
        ):
            self.ct.mpr.navigation_target().keyPressEvent(event)
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
        application().removeEventFilter(self)
        self._garbage_collector.timer.stop()
        gc.enable()  # the collector's timer stops with the window
        self.pacs.shutdown()
        self.outbox.close()
        self.ct.shutdown()
        for workspace in (self.skin, self.lung):
            workspace.shutdown()
        self.tasks.cancel_all()
        self.settings.save()
        super().closeEvent(event)
