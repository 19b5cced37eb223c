"""COVID-19 from a chest CT (paper 002) in the findings panel: the patient verdict and everything behind it.

The pipeline runs on a worker: a lung mask (the lung U-Net bundle, or the
classical threshold method), slice elimination, 50-slice groups, the CNN +
biLSTM per group, the majority vote with the 0.9 rule, and Grad-CAM per slice
when asked.  The finding shows each step so a radiologist can check it: the
verdict with the vote spelled out, which slices were kept and why the others
were left out, how the kept slices were grouped (padded or resampled as the
paper says when the count is not a multiple of 50) with each group's class
probabilities; the lung mask is drawn as an outline and Grad-CAM as a map.
The model's validated performance sits under the verdict; the reason of every
slice comes last, folded until asked for.

Grad-CAM is shown on one scale for the whole volume by default (the largest
value inside the lungs over every explained slice), so slices compare with each
other and the sagittal and coronal cuts through the map show no stripes; each
slice scaled to its own maximum (the usual display) is the other choice.  A
kept slice without a map to show says so on the image.

Slice numbers in the summary count from 1, as the views' read-outs do.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medview.engine.api import CovidResult
from medview.engine.fitness import padding_warnings
from medview.engine.manifest import ModelCard
from medview.io.volume import Volume
from medview.progress import CancelCheck, ProgressCallback
from medview.tasks import ClinicalTask
from medview.ui.ct.findings.base import Finding, FindingTab, input_warnings
from medview.ui.ct.layers import HeatmapLayer, LabelLayer, LayerStack
from medview.ui.provenance import ModelChooserBox, verdict_html
from medview.ui.qt import QtWidgets
from medview.ui.workers import StartTask, Task

LUNG_COLOUR = (64, 200, 255)
#: Grad-CAM below this fraction of its scale (the volume's or the slice's maximum) is transparent, so the
#: anatomy shows through
GRAD_CAM_THRESHOLD = 0.1
CLASSICAL_LUNG_MASK = "Classical method (no model)"
#: what the axial view says on a kept slice that shows no Grad-CAM
NO_MAP_INTERPOLATED = "No Grad-CAM map on this slice (only in interpolated slots of a resampled group)"
NO_MAP_ZERO = "No Grad-CAM map on this slice (zero inside the lungs)"
NO_MAP_FAINT_ABSOLUTE = f"No Grad-CAM map on this slice (below {GRAD_CAM_THRESHOLD:g} of the volume's largest value)"
NO_MAP_FAINT_RELATIVE = f"No Grad-CAM map on this slice (below {GRAD_CAM_THRESHOLD:g} of its own maximum)"

_AREA_REASON = re.compile(r"lung area [\d.]+ of max < ([\d.]+) \((.+)\)")


# --------------------------------------------------------------------------- the finding


@dataclass(eq=False)
class CovidFinding(Finding):
    """A COVID-19 finding, with what showing its Grad-CAM on another scale needs."""

    healthy: str = "healthy"  # the model's healthy class, for the 0.9 rule's wording
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)  # of the series, for the lung volume
    absolute: bool = True  # Grad-CAM on one scale for the volume (else each slice by its own maximum)


def covid_finding(
    result: CovidResult,
    card: ModelCard,
    volume: Volume,
    lung_card: ModelCard | None = None,
    *,
    absolute: bool = True,
    warnings: Sequence[str] = (),
) -> CovidFinding:
    """The finding of one COVID-19 run: verdict, slices, groups, lung mask and Grad-CAM layers.

    ``absolute``: Grad-CAM on one scale for the whole volume, else each slice
    by its own maximum; ``warnings``: why the series may not suit the models.
    """
    demo = card.is_demo or (lung_card is not None and lung_card.is_demo)
    groups = len(result.groups)
    votes = f"{result.votes.get(result.verdict, 0)}/{groups} group{'s' if groups != 1 else ''}"
    if result.switched:
        votes += f", {_switch_threshold(result):g} rule"
    # the groups read off padding are said of the result itself: the input's warnings cannot know them
    warnings = tuple(warning for warning in (*warnings, *padding_warnings(result.groups)) if warning)
    heatmap_layer = None
    notes: dict[int, str] = {}
    if result.heatmaps:
        values = grad_cam_volume(result, absolute)
        notes = grad_cam_notes(result, values, absolute)
        heatmap_layer = HeatmapLayer(
            name=f"Grad-CAM [{card.label}]",
            values=values,
            levels=(0.0, 1.0),
            threshold=GRAD_CAM_THRESHOLD,
            opacity=0.5,
            demo=demo,
            slice_notes=notes,
            legend=grad_cam_legend(result, absolute),
        )
    healthy = _healthy_class(card)
    return CovidFinding(
        kind="COVID-19",
        title=f"COVID-19: {result.verdict} ({votes}): {result.provenance.label}{' (demo)' if demo else ''}",
        provenance=result.provenance,
        summary_html=covid_summary_html(
            result, volume.spacing, healthy=healthy, absolute=absolute, warnings=warnings, grad_cam_notes=notes
        ),
        result=result,
        mask_layer=LabelLayer(
            name=f"Lungs [{f'lung U-Net {lung_card.label}' if lung_card is not None else 'classical method'}]",
            labels=result.lung_mask.astype(np.uint8),
            names={1: "lungs"},
            colours={1: LUNG_COLOUR},
            opacity=0.6,
            outline_only=True,  # the lung parenchyma under it is what the radiologist reads
            demo=demo,
            slice_notes=slice_notes(result),
        ),
        heatmap_layer=heatmap_layer,
        warnings=warnings,
        more_html=every_slice_html(result),
        more_title=f"Every slice ({len(result.slice_reasons)}): kept or left out, and why",
        healthy=healthy,
        spacing=volume.spacing,
        absolute=absolute,
    )


def grad_cam_volume(result: CovidResult, absolute: bool) -> np.ndarray:
    """The Grad-CAM maps on the volume grid, inside the lungs only, zero on slices not explained.

    Absolute: every slice by the largest value inside the lungs over all the
    explained slices, so a weaker map looks weaker and the sagittal and coronal
    cuts show the map, not stripes of per-slice scales.  Relative: each slice
    by its own maximum.  The network's input is black outside the lung mask: a
    map there says nothing about the image, and at the CNN's coarse last layer
    it spreads over the whole slice, hiding the anatomy; it is not drawn.
    float16: half the memory of float32, plenty for a display map.
    """
    mask = result.lung_mask
    values = np.zeros(mask.shape, np.float16)
    if absolute:
        inside = {index: heatmap.values * mask[index] for index, heatmap in result.heatmaps.items()}
        scale = max((float(each.max()) for each in inside.values() if each.size), default=0.0)
        if scale > 0:
            for index, each in inside.items():
                values[index] = np.clip(each / scale, 0.0, 1.0)
    else:
        for index, heatmap in result.heatmaps.items():
            values[index] = heatmap.relative() * mask[index]
    return values


def grad_cam_notes(result: CovidResult, values: np.ndarray, absolute: bool) -> dict[int, str]:
    """What the axial view says on each kept slice that shows no Grad-CAM (``values`` as drawn), and why."""
    notes = {}
    for index in result.kept_slices:
        peak = float(values[index].max()) if index in result.heatmaps else 0.0
        if index not in result.heatmaps:
            notes[index] = NO_MAP_INTERPOLATED
        elif peak == 0:
            notes[index] = NO_MAP_ZERO
        elif peak < GRAD_CAM_THRESHOLD:
            notes[index] = NO_MAP_FAINT_ABSOLUTE if absolute else NO_MAP_FAINT_RELATIVE
    return notes


def grad_cam_legend(result: CovidResult, absolute: bool) -> str:
    """The Grad-CAM colour bar's label: which class the map is of, and its scale (two lines)."""
    classes = {heatmap.target_class for heatmap in result.heatmaps.values()}
    target = f"{next(iter(classes)).replace('_', ' ')} class" if len(classes) == 1 else "each group's class"
    return f"Grad-CAM, {target}\n{'one scale for the volume' if absolute else 'each slice by its own max'}"


def covid_summary_html(
    result: CovidResult,
    spacing: tuple[float, float, float],
    *,
    healthy: str = "healthy",
    absolute: bool = True,
    warnings: Sequence[str] = (),
    grad_cam_notes: Mapping[int, str] | None = None,
) -> str:
    """The warnings, the verdict with the model's validated performance and the vote, the slices kept and
    left out, the groups with their probabilities, how Grad-CAM is shown (every slice's reason is apart).

    ``grad_cam_notes``: the kept slices without a map to show (``grad_cam_notes``), counted by reason."""
    return "".join(
        (
            verdict_html(f"Verdict: {result.verdict}", result.provenance, warnings),
            _vote_html(result, healthy),
            _slices_html(result, spacing),
            _groups_html(result),
            _grad_cam_html(result, absolute, grad_cam_notes or {}),
        )
    )


def _vote_html(result: CovidResult, healthy: str) -> str:
    threshold = _switch_threshold(result)
    groups = len(result.groups)
    counts = ", ".join(f"{html.escape(name)} {result.votes.get(name, 0)}" for name in result.class_names)
    if result.switched:
        rule = (
            f"The majority was {html.escape(healthy)}, but a group predicts a pneumonia class with probability "
            f"above {threshold:g}, so the verdict switched to {html.escape(result.verdict)}."
        )
    elif result.verdict == healthy:
        rule = f"The majority is {html.escape(healthy)} and no group predicts a pneumonia class above {threshold:g}."
    else:
        rule = f"Not needed here: the majority is not {html.escape(healthy)}."
    return (
        f"<p>Group votes ({groups} group{'s' if groups != 1 else ''}): {counts}.<br>"
        f"{html.escape(result.reason)}.</p>"
        f"<p>Each group of slices votes for the class it finds most probable; the patient gets the class of the "
        f"majority. The {threshold:g} rule: when the majority is {html.escape(healthy)} but a group predicts "
        f"a pneumonia class with probability above {threshold:g}, the verdict becomes that class. "
        f"{rule}</p>"
    )


def _slices_html(result: CovidResult, spacing: tuple[float, float, float]) -> str:
    total = len(result.slice_reasons)
    kept = len(result.kept_slices)
    lung_ml = float(result.lung_mask.sum()) * float(np.prod(spacing)) / 1000.0
    left_out: dict[str, list[int]] = {}
    for index, reason in enumerate(result.slice_reasons):
        if not reason.startswith("kept"):
            left_out.setdefault(_reason_kind(reason), []).append(index)
    rows = "".join(
        f"<tr><td>{html.escape(kind)}</td><td align='right'>{len(indices)}</td><td>{slice_ranges(indices)}</td></tr>"
        for kind, indices in sorted(left_out.items(), key=lambda item: item[1][0])
    )
    table = (
        "<table cellspacing='2' cellpadding='2'><tr><th align='left'>Left out because</th><th>count</th>"
        f"<th align='left'>slices</th></tr>{rows}</table>"
        if rows
        else ""
    )
    return (
        f"<p><b>Lungs</b>: {html.escape(result.lung_mask_source)}; {lung_ml:,.0f} mL in the mask.<br>"
        f"<b>{kept} of {total} slices kept</b>: {slice_ranges(result.kept_slices) or 'none'} "
        f"(slice numbers as in the views). The paper drops slices without lung and those whose lung area is "
        f"small relative to the largest: below 0.4 of it towards the apex (upper end), below 0.9 towards the "
        f"base (lower end); kept slices are masked to the lungs.</p>{table}"
        f"<p>{html.escape(grouping_text(result))}</p>"
    )


def grouping_text(result: CovidResult) -> str:
    """How the kept slices were grouped, in words: the paper's padding or resampling when they do not divide."""
    kept = len(result.kept_slices)
    if not result.groups:
        return f"{kept} slices kept, no group."
    size = len(result.groups[0].sources)
    half = size / 2
    full = sum(group.kind == "full" for group in result.groups)
    last = result.groups[-1]
    plural = "s" if full != 1 else ""
    before = f"{full} group{plural} of {size}, then " if full else ""
    if last.kind == "padded":
        black = sum(source is None for source in last.sources)
        remaining = size - black
        text = (
            f"{kept} slices kept: {before}{'the last' if full else 'one'} group of {remaining} slices "
            f"padded with {black} black slices to {size}"
        )
        if remaining > half:
            return text + f", as the paper does when more than {half:g} slices remain."
        if remaining == half:
            return text + f"; the paper gives no rule for exactly {half:g}: MedView pads, so no slice is lost."
        return text + (
            f"; the paper merges fewer than {half:g} remaining slices into the previous group, but there is "
            f"none: MedView pads, so no slice is lost or invented."
        )
    if last.kind == "resampled":
        merged = kept - (len(result.groups) - 1) * size
        before = f"{full} group{plural} of {size}, then " if full else ""
        return (
            f"{kept} slices kept: {before}the last {merged} slices ({merged - size} left over after a group "
            f"of {size}) resampled to {size} by interpolation, as the paper does when fewer than {half:g} "
            "slices remain."
        )
    return f"{kept} slices kept: {full} group{plural} of {size}."


def _groups_html(result: CovidResult) -> str:
    # class names split at their underscores and the kind under the slices: the table fits a narrow panel
    header = "".join(f"<th align='right'>{html.escape(name.replace('_', ' '))}</th>" for name in result.class_names)
    rows = []
    for number, group in enumerate(result.groups, start=1):
        probabilities = group.scores.probabilities
        winner = group.scores.label
        cells = "".join(
            f"<td align='right'>{'<b>' if name == winner else ''}{probabilities[name]:.3f}"
            f"{'</b>' if name == winner else ''}</td>"
            for name in result.class_names
        )
        rows.append(
            f"<tr><td align='right'>{number}</td><td>{html.escape(describe_group(group.sources))}<br>"
            f"<i>{html.escape(group.kind)}</i></td>{cells}</tr>"
        )
    return (
        "<p><b>Groups</b>: class probabilities of each group, its vote in bold</p>"
        "<table cellspacing='2' cellpadding='1'><tr><th>#</th><th align='left'>slices, kind</th>"
        f"{header}</tr>{''.join(rows)}</table>"
    )


def describe_group(sources: Sequence[int | float | None]) -> str:
    """A group's slices in the views' numbering, e.g. "94-120 + 23 black" or "71-119 resampled to 50"."""
    real = [source for source in sources if source is not None]
    if not real:
        return f"{len(sources)} black"
    first, last = (f"{value + 1:g}" if isinstance(value, int) else f"{value + 1:.1f}" for value in (real[0], real[-1]))
    black = len(sources) - len(real)
    if black:
        return f"{first}-{last} + {black} black"
    if any(isinstance(source, float) for source in real):
        return f"{first}-{last} resampled to {len(sources)}"
    return f"{first}-{last}"


def _grad_cam_html(result: CovidResult, absolute: bool, notes: Mapping[int, str]) -> str:
    if not result.heatmaps:
        return ""
    reasons = list(notes.values())
    without, flat = reasons.count(NO_MAP_INTERPOLATED), reasons.count(NO_MAP_ZERO)
    faint = len(reasons) - without - flat
    counts = []
    if without:
        counts.append(f"{_count(without, 'kept slice')} only in interpolated slots of a resampled group: no map")
    if flat:
        counts.append(f"{_count(flat, 'slice')} with a map that is zero inside the lungs")
    if faint:
        counts.append(f"{_count(faint, 'slice')} with the map below {GRAD_CAM_THRESHOLD:g} of the scale")
    scale = (
        "on one scale for the whole volume (its largest value inside the lungs over every explained slice), so "
        "slices compare with each other"
        if absolute
        else "each slice scaled to its own maximum, so a weak map looks as strong as a strong one"
    )
    listed = f" No map is drawn on {'; '.join(counts)}: the axial view says so on each." if counts else ""
    return (
        f"<p><b>Grad-CAM</b> on {len(result.heatmaps)} slices, for the class each slice's group votes for, "
        f"{scale}; drawn inside the lung mask only (the network's input is black outside it), and not below "
        f"{GRAD_CAM_THRESHOLD:g} of the scale.{listed}</p>"
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'s' if number != 1 else ''}"


def every_slice_html(result: CovidResult) -> str:
    """The table of every slice of the series: kept, or why it was left out."""
    rows = "".join(
        f"<tr><td align='right'>{index + 1}</td><td>{html.escape(reason)}</td></tr>"
        for index, reason in enumerate(result.slice_reasons)
    )
    header = "<tr><th>slice</th><th align='left'>why</th></tr>"
    return f"<table cellspacing='1' cellpadding='2'>{header}{rows}</table>"


def slice_notes(result: CovidResult) -> dict[int, str]:
    """What the axial view says on each slice: kept into which group (and its vote), or why it was left out."""
    notes = {index: f"COVID-19: {reason}" for index, reason in enumerate(result.slice_reasons)}
    kept = np.asarray(result.kept_slices)
    for number, group in enumerate(result.groups, start=1):
        real = [source for source in group.sources if source is not None]
        if not real:
            continue
        label = group.scores.label
        vote = f"group {number}/{len(result.groups)} votes {label} ({group.scores.probabilities[label]:.2f})"
        # a resampled group's sources are fractional positions between kept slices: it holds those in its span
        for index in kept[(kept >= min(real)) & (kept <= max(real))]:
            notes[int(index)] = f"COVID-19: {result.slice_reasons[index]}; {vote}"
    return notes


def slice_ranges(indices: Sequence[int]) -> str:
    """Slice indices as runs in the views' numbering (from 1), e.g. "44-120, 125"."""
    runs: list[list[int]] = []
    for index in sorted(int(i) for i in indices):
        if runs and index == runs[-1][1] + 1:
            runs[-1][1] = index
        else:
            runs.append([index, index])
    return ", ".join(f"{a + 1}" if a == b else f"{a + 1}-{b + 1}" for a, b in runs)


def _reason_kind(reason: str) -> str:
    """An elimination reason without the slice's own ratio, so slices left out for the same rule count together."""
    match = _AREA_REASON.fullmatch(reason)
    return f"lung area < {match[1]} of the largest ({match[2]})" if match else reason


def _switch_threshold(result: CovidResult) -> float:
    threshold = result.provenance.threshold
    return 0.9 if threshold is None else threshold


def _healthy_class(card: ModelCard) -> str:
    return str(card.input.extra.get("healthy_class", "healthy"))


# --------------------------------------------------------------------------- the runner


class LungMaskBox(QtWidgets.QComboBox):
    """Where the lung mask comes from: an installed lung U-Net bundle or the classical method (None)."""

    def set_cards(self, cards: Sequence[ModelCard]) -> None:
        """List the lung bundles and the classical method; keep the choice when it is still there.

        The first choice is a non-demo U-Net (the paper's stage 0); with only demo U-Nets installed it is the
        classical method: a demo U-Net learned from the classical masks, so it cannot do better than them,
        and it takes many times longer on a CPU.
        """
        chosen = self.currentText() if self.count() else None
        ordered = sorted(cards, key=lambda card: card.is_demo)
        self.clear()
        for card in ordered:
            self.addItem(f"lung U-Net {card.label}{' (demo)' if card.is_demo else ''}", card)
        self.addItem(CLASSICAL_LUNG_MASK, None)
        texts = [self.itemText(i) for i in range(self.count())]
        if chosen in texts:
            self.setCurrentIndex(texts.index(chosen))
        elif ordered and not ordered[0].is_demo:
            self.setCurrentIndex(0)
        else:
            self.setCurrentIndex(texts.index(CLASSICAL_LUNG_MASK))

    def selected_card(self) -> ModelCard | None:
        """The chosen lung bundle; None for the classical method."""
        card = self.currentData()
        return card if isinstance(card, ModelCard) else None

    def choose(self, card: ModelCard | None) -> None:
        """Select ``card`` (None: the classical method)."""
        for index in range(self.count()):
            data = self.itemData(index)
            if (card is None and data is None) or (
                isinstance(data, ModelCard) and card is not None and data.label == card.label
            ):
                self.setCurrentIndex(index)
                return
        raise ValueError(f"lung mask choice not listed: {card.label if card else CLASSICAL_LUNG_MASK}")


class CovidTab(FindingTab):
    """Model and lung-mask choosers, the Grad-CAM switch and *Classify COVID-19*."""

    title = "COVID-19"

    def __init__(self, layers: LayerStack, start_task: StartTask, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(layers, start_task, parent)
        self.model_box = ModelChooserBox()
        self.lung_box = LungMaskBox()
        self.lung_box.setToolTip(
            "Stage 0 of the paper: the lung U-Net bundle, or the classical method (air inside the body, "
            "connected components, hole filling) that needs no model"
        )
        self.grad_cam_box = QtWidgets.QCheckBox("Grad-CAM")
        self.grad_cam_box.setChecked(True)
        self.grad_cam_box.setToolTip("Where the CNN looked, per kept slice (a second pass over each group)")
        self.absolute_box = QtWidgets.QCheckBox("One Grad-CAM scale for the volume")
        self.absolute_box.setChecked(True)
        self.absolute_box.setToolTip(
            "On: every slice's map by the largest value over the volume, so slices compare and the sagittal and "
            "coronal views show the map. Off: each slice by its own maximum (a faint map looks as strong as any)"
        )
        self.classify_button = QtWidgets.QPushButton("Classify COVID-19")
        self.findings: list[CovidFinding] = []  # made by this runner, every series: rescaled with the switch
        layout = QtWidgets.QFormLayout(self)
        layout.addRow("Model", self.model_box)
        layout.addRow("Lung mask", self.lung_box)
        layout.addRow(self.grad_cam_box)
        layout.addRow(self.absolute_box)
        layout.addRow(self.classify_button)
        layout.addRow(self.blocked_note)
        layout.addRow(self.note)
        self.classify_button.clicked.connect(lambda: self.run())
        self.absolute_box.toggled.connect(lambda _on: self.rescale_heatmaps())
        self.model_box.currentIndexChanged.connect(lambda _i: self.update_controls())
        self.update_controls()

    def refresh_models(self) -> None:
        """List the installed COVID-19 and lung-segmentation bundles again."""
        if self.engine is not None:
            self.model_box.set_cards(self.engine.cards(ClinicalTask.COVID_CT))
            self.lung_box.set_cards(self.engine.cards(ClinicalTask.LUNG_SEGMENTATION))
        self.update_controls()

    def run(self) -> Task | None:
        """Classify the open series with the chosen model and lung mask; the finding comes with ``found``."""
        volume, card, engine = self.volume, self.model_box.selected_card(), self.engine
        if self.blocked_reason(card, "COVID-19") or volume is None or card is None or engine is None:
            return None
        lung_card, explain = self.lung_box.selected_card(), self.grad_cam_box.isChecked()
        absolute = self.absolute_box.isChecked()
        cards = (card, lung_card) if lung_card is not None else (card,)
        warnings = list(dict.fromkeys(warning for each in cards for warning in input_warnings(each, volume)))
        self.note.setText(" ".join(warnings))

        def work(progress: ProgressCallback, cancelled: CancelCheck, _partial: Any) -> Finding:
            result = engine.classify_covid(
                card,
                volume,
                lung_card=lung_card,
                explain=explain,
                progress=progress,
                cancelled=cancelled,
            )
            # built here, not on the GUI thread: the Grad-CAM volume and the summary take about half a second
            return covid_finding(result, card, volume, lung_card, absolute=absolute, warnings=warnings)

        task = Task(work, f"COVID-19 analysis of {volume.description or 'the series'} ({volume.shape[0]} slices)")
        task.signals.succeeded.connect(lambda finding: self._on_classified(volume, finding))
        task.signals.finished.connect(self.update_controls)
        self.task = task
        self.update_controls()
        return self.start_task(task, task.description + "…")

    def _on_classified(self, volume: Volume, finding: CovidFinding) -> None:
        self.note.setText("")  # the input's warnings are the finding's now, beside its verdict
        self.findings.append(finding)
        if finding.absolute != self.absolute_box.isChecked():  # switched while the model ran
            self._show_scale(finding, self.absolute_box.isChecked())
        self.found.emit(volume, finding)

    def rescale_heatmaps(self) -> None:
        """Show every COVID-19 finding's Grad-CAM on the scale now chosen (its summary and notes with it)."""
        absolute = self.absolute_box.isChecked()
        for finding in self.findings:
            if finding.absolute != absolute:
                self._show_scale(finding, absolute)
                self.finding_changed.emit(finding)

    def _show_scale(self, finding: CovidFinding, absolute: bool) -> None:
        result: CovidResult = finding.result
        finding.absolute = absolute
        notes: dict[int, str] = {}
        layer = finding.heatmap_layer
        if layer is not None:
            values = grad_cam_volume(result, absolute)
            notes = grad_cam_notes(result, values, absolute)
            settings = dict(values=values, slice_notes=notes, legend=grad_cam_legend(result, absolute))
            if layer in self.layers.layers:
                self.layers.update(layer, **settings)
            else:  # a finding of another series: shown on this scale when it comes back
                for key, value in settings.items():
                    setattr(layer, key, value)
        finding.summary_html = covid_summary_html(
            result,
            finding.spacing,
            healthy=finding.healthy,
            absolute=absolute,
            warnings=finding.warnings,
            grad_cam_notes=notes,
        )

    def chosen_cards(self) -> list[ModelCard]:
        """The COVID-19 bundle chosen and, when one is chosen, the lung U-Net that makes its lung mask."""
        lung_card = self.lung_box.selected_card()
        return super().chosen_cards() + ([lung_card] if lung_card is not None else [])

    def update_controls(self) -> None:
        """Enable Classify when a bundle and a complete series are there; say why not otherwise."""
        reason = self.blocked_reason(self.model_box.selected_card(), "COVID-19")
        ready = "Lung mask, slice elimination, 50-slice groups, CNN + biLSTM per group and the patient vote"
        self.show_readiness(self.classify_button, reason, ready)
