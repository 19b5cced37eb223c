"""The CT workspace's AI findings: run a model on the open series, list every result with its provenance.

One tab per clinical task holds the controls that run its model (a
``FindingTab``); every result becomes a ``Finding`` in one list.  Findings
are kept per series while the app is open: opening the series again brings its
findings and overlays back, and running another model (or another version)
adds a second finding beside the first, for comparison.

Each finding shows what was found, then the model id and version, the
training-data line of its manifest, its validation metrics, the threshold, the
device and the time; a demo bundle's overlays put "demo model: not for
diagnosis" on the image itself (``Layer.demo``, drawn by ``MprView``).  The
overlay controls act on the selected finding's mask and map; a finding with a
mask of an anatomical structure exports it as DICOM SEG or NIfTI.
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medview.engine.api import InferenceService
from medview.engine.manifest import ModelCard
from medview.io.dicom import dicom_series_uid
from medview.io.volume import Volume
from medview.ui.ct.findings.base import Finding, FindingTab, finding_tooltip, series_id
from medview.ui.ct.findings.covid import CovidTab
from medview.ui.ct.findings.kidney import KidneyTab
from medview.ui.ct.findings.liver import LiverTab
from medview.ui.ct.findings.report import series_section
from medview.ui.ct.layers import LayerStack
from medview.ui.ct.slice_view import DEFAULT_WINDOW
from medview.ui.provenance import demo_warning_html, provenance_table_html
from medview.ui.qt import QtCore, QtGui, QtWidgets
from medview.ui.report.sections import SeriesSection
from medview.ui.workers import StartTask, Task
from medview.workflows.audit import AuditedExport, audit_model_run


class FindingsPanel(QtWidgets.QWidget):
    """AI runs on the open CT series and the list of their results."""

    finding_added = QtCore.Signal(object)  # Finding

    def __init__(self, layers: LayerStack, start_task: StartTask, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("findings_panel")
        self.layers = layers
        self.start_task = start_task
        self.volume: Volume | None = None
        self.volume_complete = False
        #: the axial view's slice index and display window (centre, width), for the case report's key images
        self.current_slice: Callable[[], int] | None = None
        self.display_window: Callable[[], tuple[float, float]] | None = None
        self.findings: dict[str, list[Finding]] = {}  # by series key, for as long as the app runs
        self._looked_up: set[str] = set()  # series whose stored results were looked for
        self.stored_lookup: Task | None = None  # the latest look for them

        self.liver = LiverTab(layers, start_task)
        self.runners: list[FindingTab] = [self.liver]
        self.kidney = KidneyTab(layers, start_task)
        self.runners.append(self.kidney)
        self.covid = CovidTab(layers, start_task)
        self.runners.append(self.covid)
        self.task_tabs = QtWidgets.QTabWidget()
        for runner in self.runners:
            self.task_tabs.addTab(runner, runner.title)
            runner.found.connect(self._on_found)
            runner.finding_changed.connect(self._on_finding_changed)
        self.note = QtWidgets.QLabel()
        self.note.setObjectName("findings_note")
        self.note.setWordWrap(True)
        self.list = QtWidgets.QListWidget()
        self.list.setObjectName("findings_list")
        # a long name ends in "…" (the whole of it in the entry's tooltip), not behind a horizontal scroll bar
        self.list.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setTextElideMode(QtCore.Qt.TextElideMode.ElideRight)
        self.show_mask = QtWidgets.QCheckBox("Mask")
        self.outline_box = QtWidgets.QCheckBox("Outline only")
        self.outline_box.setToolTip("Draw the mask's border only, so the anatomy under it stays visible")
        self.heatmap_box = QtWidgets.QCheckBox("Map")
        self.heatmap_box.setToolTip("The probability or Grad-CAM map, with its colour bar")
        self.opacity = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.colour_button = QtWidgets.QPushButton("Colour…")
        self.seg_button = QtWidgets.QPushButton("DICOM SEG…")
        self.nifti_button = QtWidgets.QPushButton("NIfTI…")
        self.dicom_button = QtWidgets.QPushButton("For the PACS…")
        self.dicom_button.setObjectName("findings_dicom")
        dicom_menu = QtWidgets.QMenu(self.dicom_button)
        self.dicom_action = dicom_menu.addAction("Report, segmentation and maps…")
        self.dicom_action.setToolTip(
            "A DICOM structured report (TID 1500), the SEG and the probability or Grad-CAM map"
        )
        self.dicom_captures_action = dicom_menu.addAction("…with overlay screenshots for PACS viewers")
        self.dicom_captures_action.setToolTip(
            "Also a screenshot series with the overlay and the warning burned in, for viewers that show "
            "neither SEG nor parametric maps"
        )
        dicom_menu.addSeparator()
        self.send_action = dicom_menu.addAction("Send to the PACS")
        self.send_action.setToolTip(
            "The report, SEG and maps to the PACS set up in File > Query/retrieve; what does not arrive waits in "
            "File > Outbox and is sent again by itself"
        )
        self.dicom_button.setMenu(dicom_menu)
        #: set by the window: puts files in the outbox and sends them (``PacsOutbox.send``)
        self.send_to_pacs: Callable[..., Task] | None = None
        # a text browser, not a word-wrapped QLabel: COVID's details (a table of every slice) took a QLabel
        # 170-190 ms to lay out on the GUI thread when the finding arrived, a QTextBrowser 20 ms
        self.details = QtWidgets.QTextBrowser()
        self.details.setObjectName("findings_details")
        self.details.setOpenLinks(False)
        self.details.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)
        self.details.anchorClicked.connect(self._on_details_link)
        self._more_shown = False  # the selected finding's long table unfolded

        overlay = QtWidgets.QHBoxLayout()
        for widget in (self.show_mask, self.outline_box, self.heatmap_box, self.colour_button):
            overlay.addWidget(widget)
        opacity_row = QtWidgets.QHBoxLayout()
        opacity_row.addWidget(QtWidgets.QLabel("Opacity"))
        opacity_row.addWidget(self.opacity)
        export_row = QtWidgets.QHBoxLayout()
        export_row.addWidget(QtWidgets.QLabel("Export"))
        export_row.addWidget(self.seg_button)
        export_row.addWidget(self.nifti_button)
        export_row.addWidget(self.dicom_button)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.task_tabs)
        layout.addWidget(QtWidgets.QLabel("Findings of this series"))
        layout.addWidget(self.list, stretch=1)
        layout.addLayout(overlay)
        layout.addLayout(opacity_row)
        layout.addLayout(export_row)
        layout.addWidget(self.note)
        layout.addWidget(self.details, stretch=2)

        self.list.currentRowChanged.connect(lambda _row: self._on_row_chosen())
        # a map hidden in the Layers dock, or by a kidney run's one-map rule, unticks its box here too
        layers.changed.connect(self._sync_overlay_controls)
        self.show_mask.toggled.connect(lambda on: self._update_selected(mask=dict(visible=on)))
        self.outline_box.toggled.connect(lambda on: self._update_selected(mask=dict(outline_only=on)))
        self.heatmap_box.toggled.connect(lambda on: self._update_selected(heatmap=dict(visible=on)))
        self.opacity.valueChanged.connect(
            lambda value: self._update_selected(mask=dict(opacity=value / 100), heatmap=dict(opacity=value / 100))
        )
        self.colour_button.clicked.connect(self._choose_colour)
        self.seg_button.clicked.connect(lambda: self._choose_export("DICOM SEG (*.dcm)", ".dcm", self.export_seg))
        self.nifti_button.clicked.connect(
            lambda: self._choose_export("NIfTI (*.nii.gz *.nii)", ".nii.gz", self.export_nifti)
        )
        self.dicom_action.triggered.connect(lambda: self._choose_dicom_folder(captures=False))
        self.dicom_captures_action.triggered.connect(lambda: self._choose_dicom_folder(captures=True))
        self.send_action.triggered.connect(self.send_results)
        self._show_selected()

    # ------------------------------------------------------------------ engine and series

    def set_engine(self, engine: InferenceService) -> None:
        """The AI engine is ready: every task lists its models."""
        for runner in self.runners:
            runner.set_engine(engine)

    def set_engine_problem(self, message: str) -> None:
        """The AI engine could not start: every task says so, and why, instead of waiting for it."""
        for runner in self.runners:
            runner.set_engine_problem(message)

    def refresh_models(self) -> None:
        """Every task tab lists its installed bundles again (after an import)."""
        for runner in self.runners:
            runner.refresh_models()

    def chosen_cards(self) -> list[ModelCard]:
        """The models the task on show would run on the open series now; none while no whole series is open.

        Only that task's: loading all three tasks' models (and exporting the COVID-19 model's ONNX graph) as a
        series opened took a 1,000-slice series from 1.9 to 2.6 GB at its peak (bench.scale).
        """
        runner = self.task_tabs.currentWidget()
        return runner.chosen_cards() if self.volume_complete and isinstance(runner, FindingTab) else []

    def set_volume(self, volume: Volume | None, complete: bool = True) -> None:
        """A series is shown (``complete``: every slice decoded): list its findings, and once it is complete
        put their overlays back (the window clears the layers when it shows another series)."""
        if series_id(volume) != series_id(self.volume):
            for runner in self.runners:
                runner.cancel()  # a run belongs to the series it started on
        self.volume, self.volume_complete = volume, volume is not None and complete
        for runner in self.runners:
            runner.set_volume(volume, complete)
        if self.volume_complete:
            missing = [layer for f in self.current_findings() for layer in f.layers if layer not in self.layers.layers]
            if missing:
                self.layers.add(*missing)
            self._look_for_stored_results()
        self._rebuild_list()

    def _look_for_stored_results(self) -> Task | None:
        """Reports (with their SEG and map) made from the open series and stored beside it, read back as findings
        in the background; once per series."""
        volume = self.volume
        if volume is None or not volume.slice_files or series_id(volume) in self._looked_up:
            return None
        self._looked_up.add(series_id(volume))

        def work(_progress: object, cancelled: Callable[[], bool], _partial: object) -> Any:
            # imported here: highdicom and SimpleITK load with the first series that has neighbours to look at
            from medview.ui.ct.findings.reopened import reopened_finding
            from medview.workflows.dicom_results import reopen_results

            results, problems = reopen_results(volume, cancelled)
            # the findings and their volume-sized overlays are built here, not on the GUI thread
            return [reopened_finding(result, volume) for result in results], problems

        def found(answer: Any) -> None:
            findings, problems = answer
            for finding in findings:
                self._add_stored(volume, finding)
            if findings or problems:
                text = f"{len(findings)} stored result(s) found beside the series, shown as findings"
                self.note.setText(text + "".join(f"; {problem}" for problem in problems))

        task = Task(work, "Looking for stored results beside the series", background=True)
        task.signals.succeeded.connect(found)
        self.stored_lookup = task
        return self.start_task(task, "")

    def _add_stored(self, volume: Volume, finding: Finding) -> None:
        """A finding read back (no model ran: not audited as a run)."""
        self.findings.setdefault(series_id(volume), []).append(finding)
        shown = series_id(volume) == series_id(self.volume)
        if shown and self.volume_complete:
            self.layers.add(*finding.layers)
        self._list_found(finding, shown)

    def report_section(self, *, anonymise: bool = False) -> SeriesSection | None:
        """The open series with its findings and their key images, for the case report (None: no series)."""
        volume = self.volume
        if volume is None:
            return None
        current = self.current_slice() if self.current_slice is not None else volume.shape[0] // 2
        window = self.display_window() if self.display_window is not None else volume.default_window or DEFAULT_WINDOW
        return series_section(volume, self.current_findings(), self.layers, current, window, anonymise=anonymise)

    def shutdown(self) -> None:
        """Stop the runs (the window closes)."""
        for runner in self.runners:
            runner.cancel()

    def current_findings(self) -> list[Finding]:
        """The findings of the open series, oldest first."""
        return self.findings.get(series_id(self.volume), []) if self.volume is not None else []

    def _on_found(self, volume: Volume, finding: Finding) -> None:
        audit_model_run(
            finding.provenance, series_uid=dicom_series_uid(volume.series_uid), patient_id=volume.info.get("PatientID")
        )
        self.findings.setdefault(series_id(volume), []).append(finding)
        shown = series_id(volume) == series_id(self.volume)
        if shown:
            self.layers.add(*finding.layers)
        # the list and the details once the views have been drawn, in a later pass of the event loop: a COVID-19
        # finding's overlays, then its long details, took the GUI thread 90-120 ms in one go
        QtCore.QTimer.singleShot(0, self, lambda: self._list_found(finding, shown))

    def _on_finding_changed(self, finding: Finding) -> None:
        """A runner rewrote a finding (its map on another scale): its entry and details say what it is now."""
        findings = self.current_findings()
        if finding not in findings:
            return
        item = self.list.item(findings.index(finding))
        if item is not None:
            item.setText(finding.title)
            item.setToolTip(finding_tooltip(finding))
        if finding is self.selected_finding():
            scrolled = self.details.verticalScrollBar().value()
            self._show_selected()
            self.details.verticalScrollBar().setValue(scrolled)

    def _list_found(self, finding: Finding, shown: bool) -> None:
        if shown:
            self._rebuild_list()
        self.finding_added.emit(finding)

    # ------------------------------------------------------------------ showing

    def selected_finding(self) -> Finding | None:
        """The finding selected in the list of the open series' findings, if any."""
        findings, row = self.current_findings(), self.list.currentRow()
        return findings[row] if 0 <= row < len(findings) else None

    def _rebuild_list(self) -> None:
        self.list.blockSignals(True)  # the details are shown once, below, not again for the row chosen
        self.list.clear()
        for finding in self.current_findings():
            item = QtWidgets.QListWidgetItem(finding.title)
            item.setToolTip(finding_tooltip(finding))
            self.list.addItem(item)
        if self.list.count():
            self.list.setCurrentRow(self.list.count() - 1)
        self.list.blockSignals(False)
        self._show_selected(fold=True)

    def _on_row_chosen(self) -> None:
        """A finding chosen in the list: while maps are shown, the map shown is the chosen finding's (two maps
        under one colour bar read as one), then its details."""
        chosen = self.selected_finding()
        if chosen is not None and chosen.heatmap_layer is not None:
            others = [
                f.heatmap_layer
                for f in self.current_findings()
                if f is not chosen and f.heatmap_layer is not None and f.heatmap_layer.visible
            ]
            if others:
                for layer in others:
                    self.layers.update(layer, visible=False)
                self.layers.update(chosen.heatmap_layer, visible=True)
        self._show_selected(fold=True)

    def _sync_overlay_controls(self) -> None:
        """The overlay boxes and opacity say what the selected finding's layers are now."""
        finding = self.selected_finding()
        if finding is None:
            return
        controls = (self.show_mask, self.outline_box, self.heatmap_box, self.opacity)
        for control in controls:
            control.blockSignals(True)
        mask, heatmap = finding.mask_layer, finding.heatmap_layer
        self.show_mask.setChecked(mask is not None and mask.visible)
        self.outline_box.setChecked(mask is not None and mask.outline_only)
        self.heatmap_box.setChecked(heatmap is not None and heatmap.visible)
        shown = mask or heatmap
        self.opacity.setValue(round(shown.opacity * 100) if shown is not None else 50)
        for control in controls:
            control.blockSignals(False)

    def _show_selected(self, fold: bool = False) -> None:
        """Show the selected finding's details and overlay settings; ``fold``: its long table folded again."""
        finding = self.selected_finding()
        if fold:
            self._more_shown = False
        if finding is None:
            self.details.setHtml("" if self.volume is None else "<i>No AI findings for this series yet.</i>")
        else:
            self.details.setHtml(self.details_html(finding))
            self._sync_overlay_controls()
        has_mask = finding is not None and finding.mask_layer is not None
        for control in (self.show_mask, self.outline_box, self.colour_button):
            control.setEnabled(has_mask)
        self.heatmap_box.setEnabled(finding is not None and finding.heatmap_layer is not None)
        self.opacity.setEnabled(finding is not None and bool(finding.layers))
        exportable = finding is not None and finding.export_label is not None and finding.mask_layer is not None
        self.nifti_button.setEnabled(exportable)
        from_dicom = self.volume is not None and bool(self.volume.slice_files)
        self.seg_button.setEnabled(exportable and from_dicom)
        self.dicom_button.setEnabled(finding is not None and from_dicom and not finding.stored)
        self.dicom_button.setToolTip(
            "A stored result is in DICOM already"
            if finding is not None and finding.stored
            else "DICOM objects need the DICOM series the finding was made on; this volume came from a file"
            if finding is not None and not from_dicom
            else "The finding as DICOM objects for the PACS: a structured report, the SEG, the maps"
        )
        self.seg_button.setToolTip(
            "A DICOM SEG needs a DICOM series; this volume came from a file: export NIfTI instead"
            if exportable and not from_dicom
            else "The mask as a DICOM Segmentation referencing this series, for PACS and viewers"
        )

    def details_html(self, finding: Finding) -> str:
        """What the panel says of ``finding``: the demo warning, the summary (warnings, verdict, validated
        performance, what was found), the provenance, then its long table, folded unless it was opened."""
        parts = [demo_warning_html(finding.provenance), finding.summary_html, provenance_table_html(finding.provenance)]
        if finding.more_html:
            title = html.escape(finding.more_title or "Details")
            if self._more_shown:
                parts.append(f"<p><a name='more' href='#fold'>▾ {title}: hide</a></p>{finding.more_html}")
            else:
                parts.append(f"<p><a href='#more'>▸ {title}: show</a></p>")
        return "".join(parts)

    def _on_details_link(self, url: QtCore.QUrl) -> None:
        self._more_shown = url.fragment() == "more"
        self._show_selected()
        if self._more_shown:
            self.details.scrollToAnchor("more")

    def _update_selected(self, mask: dict[str, Any] | None = None, heatmap: dict[str, Any] | None = None) -> None:
        finding = self.selected_finding()
        if finding is None:
            return
        if mask and finding.mask_layer is not None:
            self.layers.update(finding.mask_layer, **mask)
        if heatmap and finding.heatmap_layer is not None:
            self.layers.update(finding.heatmap_layer, **heatmap)

    def _choose_colour(self) -> None:
        finding = self.selected_finding()
        if finding is None or finding.mask_layer is None:
            return
        colour = QtWidgets.QColorDialog.getColor(QtGui.QColor(*finding.mask_layer.colour(1)), self, "Mask colour")
        if colour.isValid():
            self.layers.update(finding.mask_layer, colours={1: (colour.red(), colour.green(), colour.blue())})

    # ------------------------------------------------------------------ export

    def export_seg(self, path: Path) -> Task | None:
        """Write the selected finding's mask as a DICOM SEG of the open series (in the background)."""
        finding, volume = self.selected_finding(), self.volume
        if finding is None or finding.mask_layer is None or finding.export_label is None or volume is None:
            return None
        provenance, label, layer = finding.provenance, finding.export_label, finding.mask_layer
        description = f"{label} AI {provenance.label}" + (" DEMO not for diagnosis" if provenance.demo else "")

        def work(_progress: object, _cancelled: object, _partial: object) -> Path:
            # imported on first export: SimpleITK's import (~0.1 s) is not worth paying at every start-up
            from medview.io.mask_export import write_dicom_seg

            return write_dicom_seg(
                path,
                layer.labels > 0,
                volume,
                algorithm_name=provenance.model_id,
                algorithm_version=provenance.model_version,
                algorithm_parameters={"threshold": f"{provenance.threshold:g}", "demo": str(provenance.demo).lower()},
                segment_label=label,
                display_rgb=layer.colour(1),
                series_description=description,
            )

        return self._export(work, path, "DICOM SEG", finding, volume)

    def export_nifti(self, path: Path) -> Task | None:
        """Write the selected finding's mask as a NIfTI file with the series' geometry (in the background)."""
        finding, volume = self.selected_finding(), self.volume
        if finding is None or finding.mask_layer is None or finding.export_label is None or volume is None:
            return None
        labels, names = finding.mask_layer.labels > 0, {1: finding.export_label.lower()}

        def work(_progress: object, _cancelled: object, _partial: object) -> Path:
            from medview.io.mask_export import write_nifti_mask  # as in export_seg

            return write_nifti_mask(path, labels, volume, label_names=names)

        return self._export(work, path, "NIfTI", finding, volume)

    def export_dicom_results(self, folder: Path, *, captures: bool = False) -> Task | None:
        """Write the selected finding as DICOM objects (report, SEG, maps, optionally screenshots) into
        ``folder``, in the background."""
        finding, volume = self.selected_finding(), self.volume
        if finding is None or volume is None:
            return None
        result, roi = _result_as_shown(finding), getattr(finding, "roi_name", "")

        def work(_progress: object, cancelled: Callable[[], bool], _partial: object) -> Any:
            # imported on first use: highdicom and SimpleITK are not worth loading at every start-up
            from medview.workflows.dicom_results import write_result_objects

            return write_result_objects(folder, volume, result, roi=roi, captures=captures, cancelled=cancelled)

        def done(written: Any) -> None:
            notes = "".join(f"; {note}" for note in written.notes)
            self.note.setText(f"Saved {len(written.files)} DICOM file(s) in {folder}{notes}")

        kind = f"{finding.kind} results as DICOM ({finding.provenance.label})"
        return self._export(work, folder, "DICOM SR, SEG, parametric map", finding, volume, kind=kind, done=done)

    def send_results(self, *, every_finding: bool = False) -> Task | None:
        """Send the selected finding's report, SEG and maps (or those of every finding made on the open series:
        File > Send the series' results) to the PACS, through the outbox; None when there is nothing to send."""
        volume = self.volume
        selected = self.selected_finding()
        chosen = self.current_findings() if every_finding else [selected] if selected is not None else []
        findings = [finding for finding in chosen if not finding.stored]
        if not findings or volume is None or self.send_to_pacs is None:
            if every_finding:
                self.note.setText(
                    "No result of this series to send: run a model first (stored results are in the PACS)"
                )
            return None
        runs = [(_result_as_shown(finding), getattr(finding, "roi_name", "")) for finding in findings]

        def make_files(folder: Path, cancelled: Callable[[], bool]) -> list[Path]:
            from medview.workflows.dicom_results import write_result_objects  # as in export_dicom_results

            files: list[Path] = []
            for number, (result, roi) in enumerate(runs):
                into = folder / str(number)  # each run's files apart: two runs of one model share file names
                into.mkdir()
                files += write_result_objects(into, volume, result, roi=roi, cancelled=cancelled).files
            return files

        if len(findings) == 1:
            description = f"{findings[0].kind} results ({findings[0].provenance.label})"
        else:
            description = f"results of {len(findings)} findings ({', '.join(f.kind for f in findings)})"
        task = self.send_to_pacs(
            make_files,
            description,
            study_uid=volume.info.get("StudyInstanceUID", ""),
            patient_id=volume.info.get("PatientID", ""),
        )
        task.signals.succeeded.connect(lambda summary: self.note.setText(f"{description}: {summary}"))
        task.signals.errored.connect(lambda message, _details: self.note.setText(f"Not sent: {message}"))
        return task

    def _export(
        self,
        work: Callable[..., Any],
        path: Path,
        file_format: str,
        finding: Finding,
        volume: Volume,
        *,
        kind: str = "",
        done: Callable[[Any], None] | None = None,
    ) -> Task:
        audited = AuditedExport(
            kind or f"{(finding.export_label or 'AI').lower()} segmentation ({finding.provenance.label})",
            path,
            file_format,
            series_uid=dicom_series_uid(volume.series_uid),
            patient_id=volume.info.get("PatientID"),
        )

        def audited_work(progress: object, cancelled: object, partial: object) -> Any:
            return audited.write(lambda: work(progress, cancelled, partial))

        task = Task(audited_work, f"Exporting {path.name}")
        task.signals.succeeded.connect(done or (lambda written: self.note.setText(f"Exported {written}")))
        return self.start_task(task, f"Exporting {path.name}…")

    def _choose_dicom_folder(self, *, captures: bool) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Save the finding as DICOM into the folder")
        if folder:
            self.export_dicom_results(Path(folder), captures=captures)

    def _choose_export(self, file_filter: str, suffix: str, export: Callable[[Path], Task | None]) -> None:
        finding = self.selected_finding()
        if finding is None or finding.export_label is None:
            return
        provenance = finding.provenance
        name = f"{finding.export_label.lower()}_{provenance.model_id}_{provenance.model_version}{suffix}"
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Export the mask", name, file_filter)
        if path:
            export(Path(path))


def _result_as_shown(finding: Finding) -> Any:
    """The finding's result with every Grad-CAM the panel shows: a kidney finding gathers those of its positive
    slices and of *Grad-CAM of this slice* after the run, beside the result's own."""
    shown = getattr(finding, "heatmaps", None)
    if shown and hasattr(finding.result, "heatmaps"):
        return dataclasses.replace(finding.result, heatmaps={**finding.result.heatmaps, **shown})
    return finding.result
