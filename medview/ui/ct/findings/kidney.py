"""Kidney stone (paper 000) from the findings panel: per-slice stone probability in a kidney ROI, with Grad-CAM.

The hybrid CNN classifies axial slices with everything outside a kidney region
of interest masked out.  The radiologist chooses the slices (the whole series
or the axial slice on screen) and the region: the whole slice (what the demo
bundle was trained on, the public samples having no kidney masks), a kidney
mask already over the series (a mask file loaded with Overlay > Load mask whose
segments, or whose file, are named as kidneys: ``kidney_labels``; a liver or
other organ's mask is not offered), or a rectangle/ellipse drawn with the
viewer's ROI tools.  A drawn ROI is a 2-D shape on one axial slice; it is used
as the same shape on every slice of the run, and the finding says so.

The finding's list line names the ROI, so runs in different ROIs are told
apart.  Its details start with the verdict, with the model's validated
performance and any warning about the input beside it (``verdict_html``), then
the ROI and the positive slices; every slice's probability is folded below.  It draws
the region that was used (an outline, so the anatomy under it shows) and a
Grad-CAM map of the slice on screen (and of the positive slices when there are
only a few), kept inside the ROI and the body by the pipeline.  One map is shown
at a time while a kidney map is among them (``KidneyTab``): stacked maps
would share one colour bar.  *Grad-CAM of this slice* adds the
map of another slice to an existing finding.  The maps are shown each scaled to
its own maximum (the usual display) or, with *Absolute Grad-CAM scale*, all by
one scale (the largest value over the explained slices) so slices can be
compared with each other.
"""

from __future__ import annotations

import html
import re
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medview.engine.api import Heatmap, SliceClassificationResult
from medview.engine.manifest import ModelCard
from medview.errors import InputError
from medview.io.volume import Volume
from medview.measure import region_mask
from medview.progress import CancelCheck, ProgressCallback
from medview.tasks import ClinicalTask
from medview.ui.ct.findings.base import Finding, FindingTab, input_warnings, series_id
from medview.ui.ct.layers import HeatmapLayer, LabelLayer, LayerStack
from medview.ui.ct.planes import plane_spacing
from medview.ui.ct.slice_view import Measurement
from medview.ui.provenance import ModelChooserBox, verdict_html
from medview.ui.qt import QtWidgets
from medview.ui.workers import StartTask, Task
from medview.workflows.kidney import classify_and_explain, grad_cam_values, plan_kidney_run

#: the ROI outline: cyan, apart from the liver's orange, the measurement tools' green and the map's inferno
ROI_COLOUR = (0, 230, 255)
#: Grad-CAM values below this (of the scale shown) are transparent, so the anatomy shows through
GRAD_CAM_THRESHOLD = 0.1
WHOLE_SLICE = "whole slice (no kidney mask: the model saw the entire slice)"
#: the whole slice, as a finding's list line names it
WHOLE_SLICE_NAME = "whole slice"
#: words in a segment's (or a mask file's) name that make it a kidney ROI; "adrenal" is a word of its own
KIDNEY_WORDS = frozenset({"kidney", "kidneys", "renal"})


@dataclass(eq=False)
class KidneyFinding(Finding):
    """A kidney-stone finding, with what *Grad-CAM of this slice* and the scale switch need."""

    card: ModelCard | None = None
    roi: np.ndarray | None = None  # what the pipeline got: bool (z, y, x) or (y, x), None for the whole slice
    heatmaps: dict[int, Heatmap] = field(default_factory=dict)  # Grad-CAM by slice index
    scope: str = ""  # which slices were run, in words
    series_id: str = ""
    roi_name: str = ""  # the ROI in a few words, as the list line names it ("ROI rectangle 1 (slice 12)")


ROI_TOOLTIP = (
    "Where the model looks: the whole slice, a kidney mask over this series (Overlay > Load mask…; its "
    "segments or its file named as kidneys), or a rectangle/ellipse drawn on an axial slice (used on every "
    "slice run)"
)


@dataclass(frozen=True, eq=False)
class RoiSource:
    """One entry of the ROI chooser: the whole slice, a kidney mask (or some of its labels), or a drawn shape.

    ``text`` is the chooser's entry, ``name`` the few words the finding's list line names it by.
    """

    text: str
    name: str = WHOLE_SLICE_NAME
    layer: LabelLayer | None = None
    labels: tuple[int, ...] | None = None  # the kidney labels of a label map; None: every label > 0
    drawn: Measurement | None = None

    @property
    def key(self) -> tuple[int, tuple[int, ...] | None, int]:
        """What identifies this source across refreshes of the list (its layer, labels and drawn shape)."""
        return (id(self.layer), self.labels, id(self.drawn))


def _names_kidney(text: str) -> bool:
    return not KIDNEY_WORDS.isdisjoint(re.findall(r"[a-z]+", text.lower()))


def kidney_labels(layer: LabelLayer) -> tuple[int, ...]:
    """The labels of ``layer`` that are kidneys, by name; empty when the mask is not a kidney mask.

    A label counts when its segment name says kidney or renal ("kidney_left", "Right kidney", "kidney_cyst_left";
    not "adrenal_gland").  A mask whose segments carry no names of their own (a NIfTI file: "label 1") counts
    as a whole when its layer name, which holds the file name, says so ("label 1 [kidney_mask.nii.gz]").
    """
    named = {value: name for value, name in layer.names.items() if value > 0}
    kidneys = tuple(sorted(value for value, name in named.items() if _names_kidney(name)))
    if kidneys:
        return kidneys
    unnamed = all(re.fullmatch(r"\s*(label\s*\d+)?\s*", name, re.IGNORECASE) for name in named.values())
    if unnamed and _names_kidney(layer.name):
        return tuple(sorted(named)) or tuple(range(1, int(layer.labels.max(initial=0)) + 1))
    return ()


def drawn_roi_mask(measurement: Measurement, volume: Volume) -> np.ndarray:
    """The (y, x) pixels of a rectangle or ellipse drawn on an axial view (its handles live in mm): exactly the
    pixels its measurement read-out counts (``measure.region_mask``)."""
    row_mm, col_mm = plane_spacing(volume.spacing, "axial")
    position, size = measurement.roi.pos(), measurement.roi.size()
    kind = measurement.kind
    if kind not in ("rectangle", "ellipse"):  # only these are offered as ROIs (refresh_rois)
        raise ValueError(f"a {kind} measurement is not a region")
    return region_mask(
        volume.shape[1:],
        (position.y() / row_mm, position.x() / col_mm),
        (size.y() / row_mm, size.x() / col_mm),
        kind,
    )


def _slice_list(indices: Sequence[int], probabilities: Mapping[int, float]) -> str:
    """1-based slice numbers with their probabilities: '3 (0.71), 9 (0.66)'."""
    return ", ".join(f"{index + 1} ({probabilities[index]:.2f})" for index in indices) or "none"


def grad_cam_legend(positive_class: str, roi_name: str, absolute: bool) -> str:
    """What the kidney map's colour bar shows: Grad-CAM of which class, on which scale, where."""
    scale = "one scale for the explained slices" if absolute else "each slice by its own maximum"
    where = "the body" if roi_name == WHOLE_SLICE_NAME else f"{roi_name}, in the body"
    return f"Grad-CAM, {positive_class} class, {scale}\ninside {where}"


def kidney_summary(
    result: SliceClassificationResult,
    heatmaps: Mapping[int, Heatmap],
    scope: str,
    absolute: bool,
    warnings: Sequence[str] = (),
) -> str:
    """The finding's HTML: the verdict with the model's validated performance and the warnings beside it
    (``verdict_html``), then the ROI, the slices run, Grad-CAM and the positive slices.  Every slice's
    probability is the finding's folded ``more_html`` (``every_slice_html``)."""
    threshold = result.provenance.threshold if result.provenance.threshold is not None else 0.5
    probabilities = {index: float(p) for index, p in zip(result.slice_indices, result.probabilities, strict=True)}
    positives = result.positive_slices()
    count = len(result.slice_indices)
    explained = ", ".join(str(index + 1) for index in sorted(heatmaps)) or "none"
    empty = [index + 1 for index in sorted(heatmaps) if not heatmaps[index].values.any()]
    # a map scaled to its own maximum looks as strong on a slice the model calls normal as on a stone
    below = [
        index + 1
        for index in sorted(heatmaps)
        if heatmaps[index].values.any() and probabilities.get(index, threshold) < threshold
    ]
    scale = "one scale for all explained slices" if absolute else "each slice scaled to its own maximum"
    verdict = (
        f"{result.positive_class.capitalize()} probability ≥ {threshold:g} on {len(positives)} of {count} "
        f"slice{'s' if count != 1 else ''}"
    )
    return (
        verdict_html(verdict, result.provenance, warnings) + f"<p>Kidney ROI: {html.escape(result.roi)}<br>"
        f"Slices run: {count} ({html.escape(scope)})<br>"
        f"Grad-CAM of slice(s) {explained} ({scale}), shown inside the ROI and the body only"
        + (
            f"<br>No region raises the {html.escape(result.positive_class)} score on slice(s) "
            f"{', '.join(map(str, empty))}: their maps are empty"
            if empty
            else ""
        )
        + (
            f"<br>Slice(s) {', '.join(map(str, below))} below the threshold: the map shows where the "
            f"{html.escape(result.positive_class)} score rose most, not a {html.escape(result.positive_class)}"
            if below
            else ""
        )
        + "</p>"
        f"<p>Slices at or above the threshold: {_slice_list(positives, probabilities)}</p>"
    )


def every_slice_html(result: SliceClassificationResult) -> str:
    """Every slice run with its probability, the finding's long list (folded in the panel, not printed)."""
    probabilities = {index: float(p) for index, p in zip(result.slice_indices, result.probabilities, strict=True)}
    return f"<p>Every slice run: {_slice_list(result.slice_indices, probabilities)}</p>"


def kidney_title(result: SliceClassificationResult, roi_name: str) -> str:
    """The list line: the ROI first (what tells runs apart), then the count, then the model."""
    threshold = result.provenance.threshold if result.provenance.threshold is not None else 0.5
    positives, count = len(result.positive_slices()), len(result.slice_indices)
    counted = (
        f"{positives} of 1 slice (slice {result.slice_indices[0] + 1})"
        if count == 1
        else f"{positives} of {count} slices"
    )
    demo = " (demo)" if result.provenance.demo else ""
    return f"Kidney stone · {roi_name} · {counted} ≥ {threshold:g} · {result.provenance.label}{demo}"


def kidney_finding(
    result: SliceClassificationResult,
    card: ModelCard,
    volume_shape: tuple[int, int, int],
    roi: np.ndarray | None,
    heatmaps: Mapping[int, Heatmap],
    *,
    scope: str = "whole series",
    absolute: bool = False,
    series_id: str = "",
    roi_name: str = WHOLE_SLICE_NAME,
    warnings: Sequence[str] = (),
) -> KidneyFinding:
    """The finding of a kidney-stone run: the summary, the ROI drawn as an outline and the Grad-CAM map.

    ``roi`` is what the pipeline got (None: the whole slice, then there is no
    ROI layer: the summary says the whole slice was used).  It is drawn on the
    slices that were run only: a 2-D drawn shape on each of them.  ``roi_name``
    names it in the list line and the layers; ``warnings`` (``input_warnings``)
    are set beside the verdict.
    """
    mask_layer = None
    if roi is not None:
        labels = np.zeros(volume_shape, np.uint8)
        run = list(result.slice_indices)
        labels[run] = roi[run] if roi.ndim == 3 else roi
        mask_layer = LabelLayer(
            name=f"Kidney ROI: {roi_name} [{card.label}]",
            labels=labels,
            names={1: "kidney ROI"},
            colours={1: ROI_COLOUR},
            opacity=0.9,
            outline_only=True,
            demo=card.is_demo,
        )
    explained = dict(heatmaps)
    warnings = tuple(warning for warning in warnings if warning)
    heatmap_layer = HeatmapLayer(
        name=f"Kidney stone Grad-CAM · {roi_name} [{card.label}]",
        values=grad_cam_values(volume_shape, explained, absolute),
        levels=(0.0, 1.0),
        threshold=GRAD_CAM_THRESHOLD,
        opacity=0.5,
        demo=card.is_demo,
        legend=grad_cam_legend(result.positive_class, roi_name, absolute),
    )
    return KidneyFinding(
        kind="kidney stone",
        title=kidney_title(result, roi_name),
        provenance=result.provenance,
        summary_html=kidney_summary(result, explained, scope, absolute, warnings),
        result=result,
        mask_layer=mask_layer,
        heatmap_layer=heatmap_layer,
        card=card,
        roi=roi,
        heatmaps=explained,
        scope=scope,
        series_id=series_id,
        warnings=warnings,
        more_html=every_slice_html(result),
        more_title=f"Every slice run ({len(result.slice_indices)}): {result.positive_class} probability",
        roi_name=roi_name,
    )


class RoiChooserBox(QtWidgets.QComboBox):
    """The kidney ROIs to choose from; the list is brought up to date each time it opens."""

    def __init__(self, refresh: Callable[[], None], parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumContentsLength(24)
        self.setSizeAdjustPolicy(QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self._refresh = refresh

    def showPopup(self) -> None:
        """List the ROI sources as they are now (masks or shapes may have changed), then open the list."""
        self._refresh()
        super().showPopup()

    def set_sources(self, sources: Sequence[RoiSource]) -> None:
        """List ``sources``, keeping the chosen one when it is still there (else the whole slice)."""
        shown = [(self.itemData(i).key, self.itemText(i)) for i in range(self.count())]
        if shown == [(source.key, source.text) for source in sources]:
            return
        chosen = self.selected_source()
        self.blockSignals(True)
        self.clear()
        for source in sources:
            self.addItem(source.text, source)
        keys = [source.key for source in sources]
        self.setCurrentIndex(keys.index(chosen.key) if chosen is not None and chosen.key in keys else 0)
        self.blockSignals(False)

    def selected_source(self) -> RoiSource | None:
        """The ROI source chosen; None before the list is filled."""
        source = self.currentData()
        return source if isinstance(source, RoiSource) else None


class KidneyTab(FindingTab):
    """Model, slices and kidney ROI choosers, *Find kidney stones*, the Grad-CAM scale and *Grad-CAM of this slice*.

    The runner needs three things of the viewer, given as callables (the panel
    builds it with ``(layers, start_task)``; the window sets them):
    ``current_slice`` the axial index on screen, ``drawn_rois`` the
    measurements drawn on the axial view, ``selected_finding`` the finding
    selected in the panel (*Grad-CAM of this slice* acts on it when it is a
    kidney-stone finding; else on this series' newest one).

    While a kidney Grad-CAM map is among the maps shown, one map is shown at a
    time: the one shown last (a new finding's, or one switched on in the panel or
    the layer list) hides the others, whose colour bars would otherwise be one.
    """

    title = "Kidney stone"

    def __init__(
        self,
        layers: LayerStack,
        start_task: StartTask,
        parent: QtWidgets.QWidget | None = None,
        *,
        current_slice: Callable[[], int] | None = None,
        drawn_rois: Callable[[], Sequence[Measurement]] | None = None,
        selected_finding: Callable[[], Finding | None] | None = None,
    ) -> None:
        super().__init__(layers, start_task, parent)
        self.current_slice = current_slice
        self.drawn_rois = drawn_rois
        self.selected_finding = selected_finding
        self.findings: list[KidneyFinding] = []  # made by this runner, every series
        self._roi_layers: weakref.WeakSet[LabelLayer] = weakref.WeakSet()  # never offered as a kidney ROI
        self._maps_shown: weakref.WeakSet[HeatmapLayer] = weakref.WeakSet()  # visible at the last change
        self._hiding_maps = False

        self.model_box = ModelChooserBox()
        self.scope_box = QtWidgets.QComboBox()
        self.scope_box.addItems(["Whole series", "Current axial slice only"])
        self.roi_box = RoiChooserBox(self.refresh_rois)
        self.roi_box.setToolTip(ROI_TOOLTIP)
        self.absolute_box = QtWidgets.QCheckBox("Absolute Grad-CAM scale")
        self.absolute_box.setToolTip(
            "On: one scale for every explained slice, so their maps compare. Off: each slice by its own maximum"
        )
        self.run_button = QtWidgets.QPushButton("Find kidney stones")
        self.explain_button = QtWidgets.QPushButton("Grad-CAM of this slice")
        layout = QtWidgets.QFormLayout(self)
        layout.addRow("Model", self.model_box)
        layout.addRow("Slices", self.scope_box)
        layout.addRow("Kidney ROI", self.roi_box)
        layout.addRow(self.run_button)
        layout.addRow(self.blocked_note)
        layout.addRow(self.absolute_box)
        layout.addRow(self.explain_button)
        layout.addRow(self.note)

        self.run_button.clicked.connect(lambda: self.run())
        self.explain_button.clicked.connect(lambda: self.explain_current_slice())
        self.absolute_box.toggled.connect(lambda _on: self.rescale_heatmaps())
        self.model_box.currentIndexChanged.connect(lambda _i: self.update_controls())
        self.layers.changed.connect(self.refresh_rois)
        self.layers.changed.connect(self._show_one_map)
        self.refresh_rois()
        self.update_controls()

    # ------------------------------------------------------------------ choices

    def refresh_models(self) -> None:
        """List the installed kidney-stone bundles again."""
        if self.engine is not None:
            self.model_box.set_cards(self.engine.cards(ClinicalTask.KIDNEY_STONE))
        self.update_controls()

    def set_volume(self, volume: Volume | None, complete: bool) -> None:
        """Follow the open series (``complete``: all of it decoded) and offer its ROI sources."""
        super().set_volume(volume, complete)
        self.refresh_rois()

    def refresh_rois(self) -> None:
        """Offer the whole slice, the kidney masks over this series and the shapes drawn on axial slices.

        A label map that is not a kidney mask (a liver mask, an unnamed mask file) is not offered; the
        chooser's tooltip names it and says why.
        """
        volume = self.volume
        sources = [RoiSource("Whole slice (no kidney mask)")]
        refused = []
        if volume is not None:
            for layer in self.layers.layers:
                if not isinstance(layer, LabelLayer) or layer in self._roi_layers or layer.labels.shape != volume.shape:
                    continue
                kidneys = kidney_labels(layer)
                if not kidneys:
                    refused.append(layer.name)
                    continue
                named = [layer.names[value] for value in kidneys if value in layer.names]
                whole = set(kidneys) >= {value for value in layer.names if value > 0}
                segments = " + ".join(named) if named and not whole else layer.name
                sources.append(
                    RoiSource(f"Kidney mask: {segments}", f"mask {segments}", layer, None if whole else kidneys)
                )
                if len(kidneys) > 1:  # left and right: each kidney on its own too
                    sources.extend(
                        RoiSource(
                            f"Kidney mask: {layer.names.get(value, f'label {value}')}",
                            f"mask {layer.names.get(value, f'label {value}')}",
                            layer,
                            (value,),
                        )
                        for value in kidneys
                    )
            numbers: dict[str, int] = {}
            for measurement in self.drawn_rois() if self.drawn_rois is not None else ():
                if measurement.plane == "axial" and measurement.kind in ("rectangle", "ellipse"):
                    numbers[measurement.kind] = number = numbers.get(measurement.kind, 0) + 1
                    size = measurement.roi.size()
                    name = f"ROI {measurement.kind} {number}"
                    sources.append(
                        RoiSource(
                            f"{name} on axial slice {measurement.index + 1} ({size.x():.0f} x {size.y():.0f} mm)",
                            f"{name} (slice {measurement.index + 1})",
                            drawn=measurement,
                        )
                    )
        self.roi_box.set_sources(sources)
        not_offered = "".join(f"\n  {name}" for name in refused)
        self.roi_box.setToolTip(
            ROI_TOOLTIP
            + (f"\nNot offered, their segments and file not named as kidneys:{not_offered}" if refused else "")
        )

    def _resolve_roi(self, source: RoiSource, volume: Volume) -> tuple[np.ndarray | None, str]:
        """The ROI mask the pipeline gets and how the finding's details name it."""
        if source.layer is not None:
            labels = source.layer.labels
            if source.labels is None:
                return labels > 0, f"mask {source.layer.name}"
            which = ", ".join(f"{value} {source.layer.names.get(value, '')}".rstrip() for value in source.labels)
            plural = "s" if len(source.labels) > 1 else ""
            return np.isin(labels, source.labels), f"mask {source.layer.name}, label{plural} {which}"
        if source.drawn is not None:
            drawn, size = source.drawn, source.drawn.roi.size()
            return drawn_roi_mask(drawn, volume), (
                f"{source.name}: {drawn.kind} drawn on axial slice {drawn.index + 1} "
                f"({size.x():.0f} x {size.y():.0f} mm), the same region on every slice run"
            )
        return None, WHOLE_SLICE

    def _current_index(self, volume: Volume) -> int:
        index = self.current_slice() if self.current_slice is not None else volume.shape[0] // 2
        return int(np.clip(index, 0, volume.shape[0] - 1))

    # ------------------------------------------------------------------ running

    def run(self) -> Task | None:
        """Classify the chosen slices in the chosen ROI; Grad-CAM of the slice on screen (and of few positives)."""
        volume, card, engine = self.volume, self.model_box.selected_card(), self.engine
        if self.blocked_reason(card, "kidney stone") or volume is None or card is None or engine is None:
            return None
        self.refresh_rois()
        source = self.roi_box.selected_source() or RoiSource("Whole slice")
        roi, roi_text = self._resolve_roi(source, volume)
        current = self._current_index(volume)
        try:
            plan = plan_kidney_run(volume, roi, roi_text, current, whole_series=self.scope_box.currentIndex() == 0)
        except InputError as error:  # nothing to run: said here; warnings about the input go beside the verdict
            self.note.setText(str(error))
            return None
        self.note.setText("")
        named = (source.name, (*input_warnings(card, volume), *plan.warnings))

        def work(progress: ProgressCallback, cancelled: CancelCheck, _partial: Any) -> Any:
            return classify_and_explain(engine, card, volume, plan, roi, roi_text, progress, cancelled)

        task = Task(work, f"Kidney stone: {len(plan.slices)} slice(s) of {volume.description or 'the series'}")
        task.signals.succeeded.connect(
            lambda outcome: self._on_classified(volume, card, roi, plan.scope, named, *outcome)
        )
        task.signals.finished.connect(self.update_controls)
        self.task = task
        self.update_controls()
        return self.start_task(task, task.description + "…")

    def _on_classified(
        self,
        volume: Volume,
        card: ModelCard,
        roi: np.ndarray | None,
        scope: str,
        named: tuple[str, tuple[str, ...]],
        result: SliceClassificationResult,
        heatmaps: dict[int, Heatmap],
    ) -> None:
        finding = kidney_finding(
            result,
            card,
            volume.shape,
            roi,
            heatmaps,
            scope=scope,
            absolute=self.absolute_box.isChecked(),  # the scale on screen now, switched during the run or not
            series_id=series_id(volume),
            roi_name=named[0],
            warnings=named[1],
        )
        if finding.mask_layer is not None:
            self._roi_layers.add(finding.mask_layer)
        self.findings.append(finding)
        self.found.emit(volume, finding)

    # ------------------------------------------------------------------ Grad-CAM

    def target_finding(self) -> KidneyFinding | None:
        """The finding *Grad-CAM of this slice* acts on: the selected one, else this series' newest."""
        key = series_id(self.volume)
        selected = self.selected_finding() if self.selected_finding is not None else None
        if isinstance(selected, KidneyFinding) and selected.series_id == key:
            return selected
        return next((finding for finding in reversed(self.findings) if finding.series_id == key), None)

    def explain_current_slice(self) -> Task | None:
        """Add the Grad-CAM of the axial slice on screen to the target finding (same model and ROI)."""
        volume, engine, finding = self.volume, self.engine, self.target_finding()
        if volume is None or engine is None or finding is None or finding.card is None:
            return None
        if self.blocked_reason(finding.card, "kidney stone"):
            return None
        index, card, roi = self._current_index(volume), finding.card, finding.roi
        if index in finding.heatmaps:
            self.note.setText(f"Slice {index + 1} already has its Grad-CAM in this finding.")
            return None
        if roi is not None and not (roi[index] if roi.ndim == 3 else roi).any():
            self.note.setText(f"The finding's kidney ROI has no voxel on slice {index + 1}: nothing to explain.")
            return None
        self.note.setText("")
        result: SliceClassificationResult = finding.result

        def work(progress: ProgressCallback, cancelled: CancelCheck, _partial: Any) -> Any:
            return engine.classify_kidney_slices(
                card,
                volume,
                [index],
                roi=roi,
                roi_source=result.roi,
                explain_slices=[index],
                progress=progress,
                cancelled=cancelled,
            )

        task = Task(work, f"Kidney stone Grad-CAM of slice {index + 1}")
        task.signals.succeeded.connect(lambda explained: self._add_heatmaps(finding, explained.heatmaps))
        task.signals.finished.connect(self.update_controls)
        self.task = task
        self.update_controls()
        return self.start_task(task, task.description + "…")

    def _add_heatmaps(self, finding: KidneyFinding, heatmaps: Mapping[int, Heatmap]) -> None:
        finding.heatmaps.update(heatmaps)
        self._show_heatmaps(finding)

    def rescale_heatmaps(self) -> None:
        """Rebuild every kidney finding's Grad-CAM layer with the scale now chosen."""
        for finding in self.findings:
            self._show_heatmaps(finding)

    def _show_heatmaps(self, finding: KidneyFinding) -> None:
        layer = finding.heatmap_layer
        if layer is None:
            return
        absolute = self.absolute_box.isChecked()
        values = grad_cam_values(layer.values.shape, finding.heatmaps, absolute)
        finding.summary_html = kidney_summary(
            finding.result, finding.heatmaps, finding.scope, absolute, finding.warnings
        )
        legend = grad_cam_legend(finding.result.positive_class, finding.roi_name, absolute)
        if layer in self.layers.layers:
            self.layers.update(layer, values=values, legend=legend)
        else:  # a finding of another series: shown with this scale when it comes back
            layer.values, layer.legend = values, legend
        self.finding_changed.emit(finding)

    def _show_one_map(self) -> None:
        """While a kidney Grad-CAM map is among the visible maps, keep only the one shown last visible."""
        if self._hiding_maps:
            return
        visible = [layer for layer in self.layers.layers if isinstance(layer, HeatmapLayer) and layer.visible]
        kidney_maps = {id(finding.heatmap_layer) for finding in self.findings}
        new = [layer for layer in visible if layer not in self._maps_shown]
        if new and len(visible) > 1 and any(id(layer) in kidney_maps for layer in visible):
            self._hiding_maps = True
            try:
                for layer in visible:
                    if layer is not new[-1]:
                        self.layers.update(layer, visible=False)
            finally:
                self._hiding_maps = False
            visible = new[-1:]
        self._maps_shown = weakref.WeakSet(visible)

    # ------------------------------------------------------------------ state

    def update_controls(self) -> None:
        """Enable Run and Grad-CAM of this slice when they can run; say why not otherwise."""
        card = self.model_box.selected_card()
        ready = "Stone probability of each slice chosen, inside the kidney ROI, with Grad-CAM of this slice"
        self.show_readiness(self.run_button, self.blocked_reason(card, "kidney stone"), ready)
        target = self.target_finding()
        reason = (
            self.blocked_reason(target.card if target is not None else card, "kidney stone")
            or ("Run the kidney stone model on this series first" if target is None else "")
            or ("Not connected to the axial view" if self.current_slice is None else "")
        )
        self.explain_button.setEnabled(not reason)
        self.explain_button.setToolTip(reason or "Add the Grad-CAM of the axial slice on screen to the finding")
        current_item = self.scope_box.model().item(1)  # type: ignore[attr-defined]
        current_item.setEnabled(self.current_slice is not None)
