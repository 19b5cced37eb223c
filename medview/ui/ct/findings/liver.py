"""Liver segmentation (paper 001) from the findings panel: the mask painted as it is computed.

The EAS U-Net runs over the whole series on a worker; each batch's mask is
painted into a "running" layer as it comes back, so the radiologist sees it
grow slice by slice.  When the run ends that layer gives way to the finding's
final mask and its probability map (a heatmap with a colour bar, off until
asked for).  A cancelled or failed run leaves no half mask behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medview.engine.api import SegmentationResult
from medview.engine.manifest import ModelCard
from medview.io.volume import Volume
from medview.progress import CancelCheck, ProgressCallback
from medview.tasks import ClinicalTask
from medview.ui.ct.findings.base import Finding, FindingTab, input_warnings
from medview.ui.ct.layers import HeatmapLayer, LabelLayer, LayerStack
from medview.ui.provenance import ModelChooserBox, verdict_html
from medview.ui.qt import QtCore, QtWidgets
from medview.ui.workers import StartTask, Task

LIVER_COLOUR = (255, 140, 40)
PAINT_INTERVAL_MS = 150  # redraw of the growing mask while a run goes on


def liver_finding(
    result: SegmentationResult, card: ModelCard, slice_count: int, warnings: Sequence[str] = ()
) -> Finding:
    """The finding of a liver segmentation: volume, slice range, mask and probability layers.

    A mask on the first or last slice of the series means the liver goes on
    beyond the scan: the volume is then a lower bound, and says so.  Built on
    the worker: the sums over a 148-slice mask and the layers' label range cost
    ~80 ms the GUI thread would stall for.
    """
    slices, volume_ml, voxels = result.slice_range, result.volume_ml, int(result.mask.sum())
    extent = f"Liver on slices {slices[0] + 1}-{slices[1] + 1} of {slice_count}" if slices else "No liver voxels found"
    spacing = " x ".join(f"{value:.2f}" for value in result.spacing)
    demo = " (demo)" if result.provenance.demo else ""
    cut = cut_ends(slices, slice_count)
    if cut:
        headline = f"Liver volume {volume_ml:,.1f} mL, a lower bound: the liver continues beyond the scanned range"
        title = f"Liver ≥ {volume_ml:,.0f} mL (continues beyond the scan): {result.provenance.label}{demo}"
        beyond = (
            f"<p>The mask reaches the {cut} of the series: part of the liver lies outside the scan, "
            "so its whole volume is larger than this.</p>"
        )
    elif not slices:  # "0.0 mL" would read as a measured liver
        headline = "No liver found in this series"
        title = f"No liver found: {result.provenance.label}{demo}"
        beyond = ""
    else:
        headline = f"Liver volume {volume_ml:,.1f} mL"
        title = f"Liver {volume_ml:,.0f} mL: {result.provenance.label}{demo}"
        beyond = ""
    return Finding(
        kind="liver",
        title=title,
        provenance=result.provenance,
        summary_html=(
            verdict_html(headline, result.provenance, warnings)
            + f"<p>{extent}<br>{voxels:,} voxels of {spacing} mm (z, y, x)</p>{beyond}"
        ),
        result=result,
        mask_layer=LabelLayer(
            name=f"Liver [{card.label}]",
            labels=result.mask.view(np.uint8),  # 0/1 without a copy: 250 MB fewer for 1,000 slices of 512x512
            names={1: "liver"},
            colours={1: LIVER_COLOUR},
            opacity=0.4,
            demo=card.is_demo,
        ),
        heatmap_layer=HeatmapLayer(
            name=f"Liver probability [{card.label}]",
            values=result.probability,
            levels=(0.0, 1.0),
            threshold=0.05,
            opacity=0.6,
            visible=False,
            demo=card.is_demo,
            legend="liver probability 0-1",
        ),
        export_label="Liver",
        warnings=tuple(warning for warning in warnings if warning),
    )


def cut_ends(slices: tuple[int, int] | None, slice_count: int) -> str:
    """Which ends of the scan a structure spanning ``slices`` touches, in words ("first and last slice");
    empty when it lies inside the scan.  A structure touching an end may go on beyond it."""
    if slices is None:
        return ""
    first, last = slices[0] == 0, slices[1] == slice_count - 1
    if first and last:
        return "first and last slice"
    return "first slice" if first else "last slice" if last else ""


class LiverTab(FindingTab):
    """Model chooser and *Segment liver*."""

    title = "Liver"

    def __init__(self, layers: LayerStack, start_task: StartTask, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(layers, start_task, parent)
        self._paint_timer = QtCore.QTimer(self, interval=PAINT_INTERVAL_MS)
        self._paint_timer.timeout.connect(self._paint_live)
        self._live: LabelLayer | None = None  # the running segmentation's mask, filled as batches arrive
        self.model_box = ModelChooserBox()
        self.segment_button = QtWidgets.QPushButton("Segment liver")
        layout = QtWidgets.QFormLayout(self)
        layout.addRow("Model", self.model_box)
        layout.addRow(self.segment_button)
        layout.addRow(self.blocked_note)
        layout.addRow(self.note)
        self.segment_button.clicked.connect(lambda: self.run())
        self.model_box.currentIndexChanged.connect(lambda _i: self.update_controls())
        self.update_controls()

    def refresh_models(self) -> None:
        """List the installed liver-segmentation bundles again."""
        if self.engine is not None:
            self.model_box.set_cards(self.engine.cards(ClinicalTask.LIVER_SEGMENTATION))
        self.update_controls()

    def run(self) -> Task | None:
        """Segment the liver of the open series with the chosen model, painting the mask as it comes."""
        volume, card, engine = self.volume, self.model_box.selected_card(), self.engine
        if self.blocked_reason(card, "liver") or volume is None or card is None or engine is None:
            return None
        warnings = input_warnings(card, volume)
        self.note.setText(" ".join(warnings))
        # the engine writes the mask into this array as batches arrive, and it becomes the finding's mask: the
        # running layer shows it as it fills, and no copy of a whole series' mask is ever made
        mask = np.zeros(volume.shape, bool)
        live = LabelLayer(
            name=f"Liver (running: {card.label})",
            labels=mask.view(np.uint8),
            names={1: "liver"},
            colours={1: LIVER_COLOUR},
            opacity=0.4,
            demo=card.is_demo,
        )
        self.layers.add(live)
        self._live = live

        def work(progress: ProgressCallback, cancelled: CancelCheck, _partial: Any) -> Finding:
            result = engine.segment_liver(
                card,
                volume,
                mask_out=mask,
                progress=progress,
                cancelled=cancelled,
            )
            return liver_finding(result, card, volume.shape[0], warnings)

        task = Task(work, f"Segmenting the liver of {volume.description or 'the series'} ({volume.shape[0]} slices)")
        task.signals.succeeded.connect(lambda finding: self._on_segmented(live, volume, finding))
        task.signals.finished.connect(lambda: self._on_finished(live))
        self.task = task
        self._paint_timer.start()
        self.update_controls()
        return self.start_task(task, task.description + "…")

    def _on_segmented(self, live: LabelLayer, volume: Volume, finding: Finding) -> None:
        self._drop(live)  # the finding's own mask takes its place
        self.note.setText("")  # the input's warning is the finding's now, beside its verdict
        self.found.emit(volume, finding)

    def _paint_live(self) -> None:
        if self._live is not None and self._live in self.layers.layers:
            self.layers.touch(self._live)

    def _on_finished(self, live: LabelLayer) -> None:
        self._paint_timer.stop()
        self._live = None
        self._drop(live)
        # the task (kept as ``self.task`` until the next run) still holds this layer through its slots: a
        # cancelled or failed run's mask goes with it
        live.labels = np.zeros((0, 0, 0), np.uint8)
        self.update_controls()

    def _drop(self, live: LabelLayer) -> None:
        if live in self.layers.layers:
            self.layers.remove(live)

    def update_controls(self) -> None:
        """Enable Segment when a bundle and a complete series are there; say why not otherwise."""
        reason = self.blocked_reason(self.model_box.selected_card(), "liver")
        ready = "Run the liver segmentation model over every slice of the series"
        self.show_readiness(self.segment_button, reason, ready)
