"""The CT workspace's AI findings: run a model on the open series, list every result with its provenance.

Liver segmentation (paper 001) runs over the whole series on a worker; the mask
is painted slice by slice as the batches come back, then replaced by the final
mask and its probability map (a heatmap layer with a colour bar, off until
asked for).  Each result is kept per series while the app is open: opening the
series again brings its findings and overlays back, and running another model
(or another version) adds a second finding beside the first for comparison.

Every finding shows the model id and version, the training-data line of its
manifest, its validation metrics, the threshold, the device and the time, and a
demo bundle's overlays put "demo model: not for diagnosis" on the image itself
(``Layer.demo``, drawn by ``MprView``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medview.engine.api import InferenceService, SegmentationResult
from medview.engine.manifest import ModelCard
from medview.io.mask_export import write_dicom_seg, write_nifti_mask
from medview.io.volume import Volume
from medview.ui.layers import HeatmapLayer, LabelLayer, Layer, LayerStack
from medview.ui.provenance import ModelChooserBox, provenance_html
from medview.ui.qt import QtCore, QtGui, QtWidgets
from medview.ui.workers import Task

LIVER_COLOUR = (255, 140, 40)
PAINT_INTERVAL_MS = 150  # redraw of the growing mask while a run goes on
StartTask = Callable[[Task, str], Task]


@dataclass(eq=False)
class LiverFinding:
    """A liver segmentation of one series, with the overlays that show it."""

    result: SegmentationResult
    mask_layer: LabelLayer
    probability_layer: HeatmapLayer
    slice_count: int

    @property
    def layers(self) -> list[Layer]:
        return [self.mask_layer, self.probability_layer]

    @property
    def title(self) -> str:
        demo = " (demo)" if self.result.provenance.demo else ""
        return f"Liver {self.result.volume_ml:,.0f} mL: {self.result.provenance.label}{demo}"

    def summary_html(self) -> str:
        slices = self.result.slice_range
        extent = f"slices {slices[0] + 1}-{slices[1] + 1} of {self.slice_count}" if slices else "no liver voxels found"
        spacing = " x ".join(f"{value:.2f}" for value in self.result.spacing)
        return (
            f"<p><b>Liver volume {self.result.volume_ml:,.1f} mL</b>, {extent}<br>"
            f"{int(self.result.mask.sum()):,} voxels of {spacing} mm (z, y, x)</p>"
        )


def modality_warning(card: ModelCard, volume: Volume) -> str:
    """Why ``volume`` may not be what ``card`` was trained for; empty when it matches its input spec."""
    expected = card.input.modality.upper()
    found = (volume.modality or "").upper()
    if found and found != expected:
        return f"{card.label} expects {expected} images; this series is {found}: the result may be meaningless."
    return ""


class FindingsPanel(QtWidgets.QWidget):
    """AI runs on the open CT series and the list of their results."""

    finding_added = QtCore.Signal(object)  # LiverFinding

    def __init__(self, layers: LayerStack, start_task: StartTask, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("findings_panel")
        self.layers = layers
        self.start_task = start_task
        self.engine: InferenceService | None = None
        self.volume: Volume | None = None
        self.volume_complete = False  # every slice decoded: only then can a model run on it
        self.findings: dict[str, list[LiverFinding]] = {}  # by series key, for as long as the app runs
        self.task: Task | None = None
        self._live_layer: LabelLayer | None = None
        self._paint_timer = QtCore.QTimer(self, interval=PAINT_INTERVAL_MS)
        self._paint_timer.timeout.connect(self.layers.changed.emit)

        self.liver_box = ModelChooserBox()
        self.segment_button = QtWidgets.QPushButton("Segment liver")
        self.segment_button.setToolTip("Run the liver segmentation model over every slice of the open series")
        self.note = QtWidgets.QLabel()
        self.note.setObjectName("findings_note")
        self.note.setWordWrap(True)
        self.list = QtWidgets.QListWidget()
        self.list.setObjectName("findings_list")
        self.show_mask = QtWidgets.QCheckBox("Mask")
        self.outline_box = QtWidgets.QCheckBox("Outline only")
        self.outline_box.setToolTip("Draw the mask's border only, so the anatomy under it stays visible")
        self.probability_box = QtWidgets.QCheckBox("Probability map")
        self.opacity = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal, minimum=0, maximum=100)
        self.colour_button = QtWidgets.QPushButton("Colour…")
        self.seg_button = QtWidgets.QPushButton("Export DICOM SEG…")
        self.seg_button.setToolTip("The mask as a DICOM Segmentation referencing this series, for PACS and viewers")
        self.nifti_button = QtWidgets.QPushButton("Export NIfTI…")
        self.details = QtWidgets.QLabel()
        self.details.setObjectName("findings_details")
        self.details.setWordWrap(True)
        self.details.setAlignment(QtCore.Qt.AlignmentFlag.AlignTop)
        self.details.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)

        run = QtWidgets.QFormLayout()
        run.addRow("Liver model", self.liver_box)
        run.addRow(self.segment_button)
        overlay = QtWidgets.QHBoxLayout()
        for widget in (self.show_mask, self.outline_box, self.probability_box, self.colour_button):
            overlay.addWidget(widget)
        scroll = QtWidgets.QScrollArea()
        scroll.setWidget(self.details)
        scroll.setWidgetResizable(True)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(run)
        layout.addWidget(self.note)
        layout.addWidget(self.list, stretch=1)
        layout.addLayout(overlay)
        opacity_row = QtWidgets.QHBoxLayout()
        opacity_row.addWidget(QtWidgets.QLabel("Opacity"))
        opacity_row.addWidget(self.opacity)
        layout.addLayout(opacity_row)
        export_row = QtWidgets.QHBoxLayout()
        export_row.addWidget(self.seg_button)
        export_row.addWidget(self.nifti_button)
        layout.addLayout(export_row)
        layout.addWidget(scroll, stretch=2)

        self.segment_button.clicked.connect(lambda: self.segment_liver())
        self.list.currentRowChanged.connect(lambda _row: self._show_selected())
        self.show_mask.toggled.connect(lambda on: self._update_selected(mask=dict(visible=on)))
        self.outline_box.toggled.connect(lambda on: self._update_selected(mask=dict(outline_only=on)))
        self.probability_box.toggled.connect(lambda on: self._update_selected(probability=dict(visible=on)))
        self.opacity.valueChanged.connect(
            lambda value: self._update_selected(mask=dict(opacity=value / 100), probability=dict(opacity=value / 100))
        )
        self.colour_button.clicked.connect(self._choose_colour)
        self.seg_button.clicked.connect(lambda: self._choose_export("DICOM SEG (*.dcm)", ".dcm", self.export_seg))
        self.nifti_button.clicked.connect(
            lambda: self._choose_export("NIfTI (*.nii.gz *.nii)", ".nii.gz", self.export_nifti)
        )
        self._update_controls()

    # ------------------------------------------------------------------ engine and series

    def set_engine(self, engine: InferenceService) -> None:
        """The AI engine is ready: list its liver models."""
        self.engine = engine
        self.refresh_models()

    def refresh_models(self) -> None:
        if self.engine is not None:
            self.liver_box.set_cards(self.engine.cards("liver_segmentation"))
        self._update_controls()

    def set_volume(self, volume: Volume | None, complete: bool = True) -> None:
        """A series is shown (``complete``: every slice decoded): list its findings, and once it is complete
        put their overlays back (the window clears the layers when it shows another series)."""
        if _series_key(volume) != _series_key(self.volume) and self.task is not None and not self.task.done.is_set():
            self.task.cancel()  # a run belongs to the series it started on
        self.volume, self.volume_complete = volume, volume is not None and complete
        if self.volume_complete:
            for finding in self.current_findings():
                for layer in finding.layers:
                    if layer not in self.layers.layers:
                        self.layers.add(layer)
        self._rebuild_list()

    def current_findings(self) -> list[LiverFinding]:
        """The findings of the open series, oldest first."""
        return self.findings.get(_series_key(self.volume), []) if self.volume is not None else []

    # ------------------------------------------------------------------ running

    def segment_liver(self) -> Task | None:
        """Segment the liver of the open series with the chosen model, painting the mask as it comes."""
        volume, card, engine = self.volume, self.liver_box.selected_card(), self.engine
        if volume is None or not self.volume_complete or engine is None or card is None:
            self._update_controls()
            return None
        if self.task is not None and not self.task.done.is_set():
            self.task.cancel()
        self.note.setText(modality_warning(card, volume))
        live = LabelLayer(
            name=f"Liver (running: {card.label})",
            labels=np.zeros(volume.shape, np.uint8),
            names={1: "liver"},
            colours={1: LIVER_COLOUR},
            opacity=0.4,
            demo=card.is_demo,
        )
        self._drop_live_layer()
        self._live_layer = live
        self.layers.add(live)
        threshold = float(card.thresholds.get("liver", 0.5))

        def work(progress: Callable[[int, int], None], cancelled: Callable[[], bool], partial: Any) -> Any:
            return engine.segment_liver(
                card,
                volume,
                on_slices=lambda start, probabilities: partial((start, probabilities >= threshold)),
                progress=lambda done, total, _text: progress(done, total),
                cancelled=cancelled,
            )

        task = Task(work, f"Segmenting the liver of {volume.description or 'the series'} ({volume.shape[0]} slices)")
        task.signals.partial.connect(lambda item: self._paint(live, *item))
        task.signals.succeeded.connect(lambda result: self._on_segmented(volume, card, result))
        task.signals.finished.connect(lambda: self._on_run_finished(live))
        self.task = task
        self._paint_timer.start()
        self._update_controls()
        return self.start_task(task, task.description + "…")

    def _paint(self, layer: LabelLayer, start: int, mask: np.ndarray) -> None:
        layer.labels[start : start + len(mask)] = mask  # drawn at the next paint tick, not per batch

    def _on_run_finished(self, live: LabelLayer) -> None:
        self._paint_timer.stop()
        if self._live_layer is live:
            self._drop_live_layer()
        self._update_controls()

    def _drop_live_layer(self) -> None:
        live, self._live_layer = self._live_layer, None
        if live is not None and live in self.layers.layers:
            self.layers.remove(live)

    def _on_segmented(self, volume: Volume, card: ModelCard, result: SegmentationResult) -> None:
        name = f"Liver [{card.label}]"
        finding = LiverFinding(
            result=result,
            mask_layer=LabelLayer(
                name=name,
                labels=result.mask.astype(np.uint8),
                names={1: "liver"},
                colours={1: LIVER_COLOUR},
                opacity=0.4,
                demo=card.is_demo,
            ),
            probability_layer=HeatmapLayer(
                name=f"Liver probability [{card.label}]",
                values=result.probability,
                levels=(0.0, 1.0),
                threshold=0.05,
                opacity=0.6,
                visible=False,
                demo=card.is_demo,
            ),
            slice_count=volume.shape[0],
        )
        self.findings.setdefault(_series_key(volume), []).append(finding)
        if volume is self.volume:
            self._drop_live_layer()
            for layer in finding.layers:
                self.layers.add(layer)
            self._rebuild_list()
            self.list.setCurrentRow(self.list.count() - 1)
        self.finding_added.emit(finding)

    # ------------------------------------------------------------------ showing

    def selected_finding(self) -> LiverFinding | None:
        findings, row = self.current_findings(), self.list.currentRow()
        return findings[row] if 0 <= row < len(findings) else None

    def _rebuild_list(self) -> None:
        self.list.blockSignals(True)
        self.list.clear()
        for finding in self.current_findings():
            self.list.addItem(finding.title)
        self.list.blockSignals(False)
        if self.list.count():
            self.list.setCurrentRow(self.list.count() - 1)
        self._show_selected()

    def _show_selected(self) -> None:
        finding = self.selected_finding()
        if finding is None:
            self.details.setText("" if self.volume is None else "<i>No AI findings for this series yet.</i>")
        else:
            self.details.setText(finding.summary_html() + provenance_html(finding.result.provenance))
            controls = (self.show_mask, self.outline_box, self.probability_box, self.opacity)
            for control in controls:
                control.blockSignals(True)
            self.show_mask.setChecked(finding.mask_layer.visible)
            self.outline_box.setChecked(finding.mask_layer.outline_only)
            self.probability_box.setChecked(finding.probability_layer.visible)
            self.opacity.setValue(round(finding.mask_layer.opacity * 100))
            for control in controls:
                control.blockSignals(False)
        self._update_controls()

    def _update_selected(self, mask: dict[str, Any] | None = None, probability: dict[str, Any] | None = None) -> None:
        finding = self.selected_finding()
        if finding is None:
            return
        if mask:
            self.layers.update(finding.mask_layer, **mask)
        if probability:
            self.layers.update(finding.probability_layer, **probability)

    def _choose_colour(self) -> None:
        finding = self.selected_finding()
        if finding is None:
            return
        colour = QtWidgets.QColorDialog.getColor(QtGui.QColor(*finding.mask_layer.colour(1)), self, "Mask colour")
        if colour.isValid():
            self.layers.update(finding.mask_layer, colours={1: (colour.red(), colour.green(), colour.blue())})

    # ------------------------------------------------------------------ export

    def export_seg(self, path: Path) -> Task | None:
        """Write the selected finding's mask as a DICOM SEG of the open series (in the background)."""
        finding, volume = self.selected_finding(), self.volume
        if finding is None or volume is None:
            return None
        provenance = finding.result.provenance
        description = f"Liver AI {provenance.label}" + (" DEMO not for diagnosis" if provenance.demo else "")

        def work(_progress: object, _cancelled: object, _partial: object) -> Path:
            return write_dicom_seg(
                path,
                finding.result.mask,
                volume,
                algorithm_name=provenance.model_id,
                algorithm_version=provenance.model_version,
                algorithm_parameters={"threshold": f"{provenance.threshold:g}", "demo": str(provenance.demo).lower()},
                display_rgb=finding.mask_layer.colour(1),
                series_description=description,
            )

        return self._export(work, path)

    def export_nifti(self, path: Path) -> Task | None:
        """Write the selected finding's mask as a NIfTI file with the series' geometry (in the background)."""
        finding, volume = self.selected_finding(), self.volume
        if finding is None or volume is None:
            return None

        def work(_progress: object, _cancelled: object, _partial: object) -> Path:
            return write_nifti_mask(path, finding.result.mask, volume, label_names={1: "liver"})

        return self._export(work, path)

    def _export(self, work: Callable[..., Path], path: Path) -> Task:
        task = Task(work, f"Exporting {path.name}")
        task.signals.succeeded.connect(lambda written: self.note.setText(f"Exported {written}"))
        return self.start_task(task, f"Exporting {path.name}…")

    def _choose_export(self, file_filter: str, suffix: str, export: Callable[[Path], Task | None]) -> None:
        finding = self.selected_finding()
        if finding is None:
            return
        name = f"liver_{finding.result.provenance.model_id}_{finding.result.provenance.model_version}{suffix}"
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Export the liver mask", name, file_filter)
        if path:
            export(Path(path))

    def _update_controls(self) -> None:
        running = self.task is not None and not self.task.done.is_set()
        ready = self.volume_complete and self.engine is not None and self.liver_box.selected_card() is not None
        self.segment_button.setEnabled(ready and not running)
        if self.volume is None:
            self.segment_button.setToolTip("Open a CT series first")
        elif not self.volume_complete:
            self.segment_button.setToolTip("The series is still loading")
        elif self.engine is None:
            self.segment_button.setToolTip("Waiting for the AI engine to load…")
        elif self.liver_box.selected_card() is None:
            self.segment_button.setToolTip("No liver model installed: add one in Models > Installed models…")
        else:
            self.segment_button.setToolTip("Run the liver segmentation model over every slice of the open series")
        selected = self.selected_finding() is not None
        for control in (self.show_mask, self.outline_box, self.probability_box, self.opacity, self.colour_button):
            control.setEnabled(selected)
        self.nifti_button.setEnabled(selected)
        self.seg_button.setEnabled(selected and self.volume is not None and bool(self.volume.slice_files))
        self.seg_button.setToolTip(
            "The mask as a DICOM Segmentation referencing this series, for PACS and viewers"
            if self.seg_button.isEnabled() or not selected
            else "A DICOM SEG needs a DICOM series; this volume came from a file: export NIfTI instead"
        )


def _series_key(volume: Volume | None) -> str:
    """Findings belong to a series: its UID, or (a volume file) its description and shape."""
    if volume is None:
        return ""
    return volume.series_uid or f"{volume.description}|{volume.shape}"
