"""COVID-19 from a chest CT (paper 002) in the findings panel: the patient verdict and everything behind it.

The pipeline runs on a worker: a lung mask (the lung U-Net bundle, or the
classical threshold method), slice elimination, 50-slice groups, the CNN +
biLSTM per group, the majority vote with the 0.9 rule, and Grad-CAM per slice
when asked.  The finding shows each step so a radiologist can check it: the
verdict with the vote spelled out, which slices were kept and why the others
were left out, how the kept slices were grouped (padded or resampled as the
paper says when the count is not a multiple of 50) with each group's class
probabilities; the lung mask is drawn as an outline and Grad-CAM as a map.

Slice numbers in the summary count from 1, as the views' read-outs do.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from medview.engine.api import CovidResult
from medview.engine.manifest import ModelCard
from medview.io.volume import Volume
from medview.ui.findings import Finding, FindingRunner, StartTask, input_warning
from medview.ui.layers import HeatmapLayer, LabelLayer, LayerStack
from medview.ui.provenance import ModelChooserBox
from medview.ui.qt import QtWidgets
from medview.ui.workers import Task

LUNG_COLOUR = (64, 200, 255)
#: Grad-CAM below this fraction of its slice's maximum is transparent, so the anatomy shows through
GRAD_CAM_THRESHOLD = 0.1
CLASSICAL_LUNG_MASK = "Classical method (no model)"
#: starts the summary's last part, the reason of every slice: a panel reads it, a printed report leaves it out
EVERY_SLICE_HEADING = "<p><b>Every slice</b></p>"

_AREA_REASON = re.compile(r"lung area [\d.]+ of max < ([\d.]+) \((.+)\)")


# --------------------------------------------------------------------------- the finding


def covid_finding(result: CovidResult, card: ModelCard, volume: Volume, lung_card: ModelCard | None = None) -> Finding:
    """The finding of one COVID-19 run: verdict, slices, groups, lung mask and Grad-CAM layers."""
    demo = card.is_demo or (lung_card is not None and lung_card.is_demo)
    groups = len(result.groups)
    votes = f"{result.votes.get(result.verdict, 0)}/{groups} group{'s' if groups != 1 else ''}"
    if result.switched:
        votes += f", {_switch_threshold(result):g} rule"
    heatmap_layer = None
    if result.heatmaps:
        values = np.zeros(volume.shape, np.float16)  # half the memory of float32; plenty for a display map
        for index, heatmap in result.heatmaps.items():
            # the network's input is black outside the lung mask: a map there says nothing about the image,
            # and at the CNN's coarse last layer it spreads over the whole slice, hiding the anatomy
            values[index] = heatmap.relative() * result.lung_mask[index]
        heatmap_layer = HeatmapLayer(
            name=f"Grad-CAM [{card.label}]",
            values=values,
            levels=(0.0, 1.0),
            threshold=GRAD_CAM_THRESHOLD,
            opacity=0.5,
            demo=demo,
        )
    return Finding(
        kind="COVID-19",
        title=f"COVID-19: {result.verdict} ({votes}): {result.provenance.label}{' (demo)' if demo else ''}",
        provenance=result.provenance,
        summary_html=covid_summary_html(result, volume, healthy=_healthy_class(card)),
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
    )


def covid_summary_html(result: CovidResult, volume: Volume, *, healthy: str = "healthy") -> str:
    """The verdict and the reason, the slices kept and left out, the groups with their probabilities."""
    return "".join(
        (
            _verdict_html(result, healthy),
            _slices_html(result, volume),
            _groups_html(result),
            _grad_cam_html(result),
            _every_slice_html(result),
        )
    )


def _verdict_html(result: CovidResult, healthy: str) -> str:
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
        f"<p><b>Verdict: {html.escape(result.verdict)}</b><br>"
        f"Group votes ({groups} group{'s' if groups != 1 else ''}): {counts}.<br>"
        f"{html.escape(result.reason)}.</p>"
        f"<p>Each group of slices votes for the class it finds most probable; the patient gets the class of the "
        f"majority. The {threshold:g} rule: when the majority is {html.escape(healthy)} but a group predicts "
        f"a pneumonia class with probability above {threshold:g}, the verdict becomes that class. "
        f"{rule}</p>"
    )


def _slices_html(result: CovidResult, volume: Volume) -> str:
    total = len(result.slice_reasons)
    kept = len(result.kept_slices)
    lung_ml = float(result.lung_mask.sum()) * float(np.prod(volume.spacing)) / 1000.0
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


def _grad_cam_html(result: CovidResult) -> str:
    if not result.heatmaps:
        return ""
    without = len(set(result.kept_slices) - set(result.heatmaps))
    flat = sum(not heatmap.values.any() for heatmap in result.heatmaps.values())
    notes = []
    if without:
        notes.append(f"{_count(without, 'kept slice')} only in interpolated slots of a resampled group: no map.")
    if flat:
        notes.append(f"{_count(flat, 'slice')} with an all-zero map: nothing drawn.")
    return (
        f"<p><b>Grad-CAM</b> on {len(result.heatmaps)} slices, for the class each slice's group votes for, "
        f"scaled to each slice's own maximum and drawn inside the lung mask only (the network's input is black "
        f"outside it); below {GRAD_CAM_THRESHOLD:g} it is not drawn. {' '.join(notes)}</p>"
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'s' if number != 1 else ''}"


def _every_slice_html(result: CovidResult) -> str:
    rows = "".join(
        f"<tr><td align='right'>{index + 1}</td><td>{html.escape(reason)}</td></tr>"
        for index, reason in enumerate(result.slice_reasons)
    )
    header = "<tr><th>slice</th><th align='left'>why</th></tr>"
    return f"{EVERY_SLICE_HEADING}<table cellspacing='1' cellpadding='2'>{header}{rows}</table>"


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


class CovidRunner(FindingRunner):
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
        self.classify_button = QtWidgets.QPushButton("Classify COVID-19")
        layout = QtWidgets.QFormLayout(self)
        layout.addRow("Model", self.model_box)
        layout.addRow("Lung mask", self.lung_box)
        layout.addRow(self.grad_cam_box)
        layout.addRow(self.classify_button)
        layout.addRow(self.note)
        self.classify_button.clicked.connect(lambda: self.run())
        self.model_box.currentIndexChanged.connect(lambda _i: self.update_controls())
        self.update_controls()

    def refresh_models(self) -> None:
        if self.engine is not None:
            self.model_box.set_cards(self.engine.cards("covid_ct"))
            self.lung_box.set_cards(self.engine.cards("lung_segmentation"))
        self.update_controls()

    def run(self) -> Task | None:
        """Classify the open series with the chosen model and lung mask; the finding comes with ``found``."""
        volume, card, engine = self.volume, self.model_box.selected_card(), self.engine
        if self.blocked_reason(card, "COVID-19") or volume is None or card is None or engine is None:
            return None
        lung_card, explain = self.lung_box.selected_card(), self.grad_cam_box.isChecked()
        warnings = [input_warning(each, volume) for each in (card, lung_card) if each is not None]
        self.note.setText(" ".join(dict.fromkeys(warning for warning in warnings if warning)))

        def work(progress: Callable[[int, int], None], cancelled: Callable[[], bool], _partial: Any) -> Finding:
            result = engine.classify_covid(
                card,
                volume,
                lung_card=lung_card,
                explain=explain,
                progress=lambda done, total, _text: progress(done, total),
                cancelled=cancelled,
            )
            # built here, not on the GUI thread: the Grad-CAM volume and the summary take about half a second
            return covid_finding(result, card, volume, lung_card)

        task = Task(work, f"COVID-19 analysis of {volume.description or 'the series'} ({volume.shape[0]} slices)")
        task.signals.succeeded.connect(lambda finding: self.found.emit(volume, finding))
        task.signals.finished.connect(self.update_controls)
        self.task = task
        self.update_controls()
        return self.start_task(task, task.description + "…")

    def chosen_cards(self) -> list[ModelCard]:
        lung_card = self.lung_box.selected_card()
        return super().chosen_cards() + ([lung_card] if lung_card is not None else [])

    def update_controls(self) -> None:
        reason = self.blocked_reason(self.model_box.selected_card(), "COVID-19")
        self.classify_button.setEnabled(not reason)
        self.classify_button.setToolTip(
            reason or "Lung mask, slice elimination, 50-slice groups, CNN + biLSTM per group and the patient vote"
        )
