"""What an AI finding of the CT workspace is, and the base of the widgets that run a model to make one.

A ``Finding`` is one result on one series with everything the findings panel
shows of it: a title for the list, an HTML summary of what was found (the
provenance is added by the panel), and the overlays that draw it (a mask, a
probability or Grad-CAM map, a region of interest).  Each clinical task has a
``FindingTab``: the controls that start its model on the open series and
emit the finding when it is done.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medview.engine.api import DEMO_BANNER, InferenceService, Provenance
from medview.engine.fitness import volume_fitness
from medview.engine.manifest import ModelCard
from medview.io.volume import Volume
from medview.ui.ct.layers import HeatmapLayer, LabelLayer, Layer, LayerStack
from medview.ui.provenance import ENGINE_LOADING, ModelChooserBox, validated_line
from medview.ui.qt import QtCore, QtWidgets
from medview.ui.workers import StartTask, Task


@dataclass(eq=False)
class Finding:
    """One AI result on one series, with the overlays that show it."""

    kind: str  # "liver", "kidney stone", "COVID-19"
    title: str  # one line for the findings list
    provenance: Provenance
    #: what was found, starting with ``verdict_html`` (the verdict, the model's validated performance under it,
    #: then the warnings); the panel adds the demo warning above it and the provenance below it
    summary_html: str
    result: Any  # the engine's result object (SegmentationResult, ...)
    mask_layer: LabelLayer | None = None  # the structure found (liver, lungs) or the region used
    heatmap_layer: HeatmapLayer | None = None  # probability map or Grad-CAM
    other_layers: list[Layer] = field(default_factory=list)
    export_label: str | None = None  # the mask exports as DICOM SEG / NIfTI under this segment label
    #: why the input may not suit the model (``input_warning``): beside the verdict and in the list's tooltip
    warnings: tuple[str, ...] = ()
    #: a long per-slice table, folded under ``more_title`` below the provenance until the reader opens it
    more_html: str = ""
    more_title: str = ""
    #: read back from a stored report (SR, SEG, map) found beside the series, not run now
    stored: bool = False

    @property
    def layers(self) -> list[Layer]:
        """Every overlay of the finding, bottom first."""
        return [layer for layer in (self.mask_layer, self.heatmap_layer, *self.other_layers) if layer is not None]


def finding_tooltip(finding: Finding) -> str:
    """The findings list entry's tooltip: the whole title, the model's validated performance, the warnings."""
    lines = [finding.title, validated_line(finding.provenance), *filter(None, finding.warnings)]
    if finding.provenance.demo:
        lines.append(DEMO_BANNER.capitalize())
    return "\n".join(lines)


def series_id(volume: Volume | None) -> str:
    """Which series a finding belongs to: its UID, or (a volume file) its description and shape."""
    if volume is None:
        return ""
    return volume.series_uid or f"{volume.description}|{volume.shape}"


def _body_part_term(text: str) -> str:
    """Body Part Examined as a comparable term: scanners write "CHEST_ABDOMEN" or "Chest abdomen" for CHESTABDOMEN."""
    return "".join(character for character in text.upper() if character.isalnum())


def input_warning(card: ModelCard, volume: Volume) -> str:
    """Why ``volume`` may not be what ``card`` was trained for (modality, body part); empty when it matches.

    The body part comes from the series' Body Part Examined tag; a series without
    it is not warned about, since many scanners leave it empty.
    """
    expected = card.input.modality.upper()
    found = (volume.modality or "").upper()
    if found and found != expected:
        return f"{card.label} expects {expected} images; this series is {found}: the result may be meaningless."
    body_part = volume.info.get("BodyPartExamined", "")
    accepted = {_body_part_term(term) for term in card.input.body_parts}
    if accepted and body_part and _body_part_term(body_part) not in accepted:
        return (
            f"{card.label} is meant for {expected} of the {', '.join(card.input.body_parts)}; this series is "
            f"recorded as {body_part}: the result may be meaningless."
        )
    return ""


def input_warnings(card: ModelCard, volume: Volume) -> list[str]:
    """Everything about ``volume`` that ``card`` was not validated on: modality and body part
    (``input_warning``), then a blank series, a slice spacing or slice count outside its data's
    (``medview.engine.fitness``). Shown beside the model's verdict."""
    return [warning for warning in (input_warning(card, volume), *volume_fitness(card, volume)) if warning]


class FindingTab(QtWidgets.QWidget):
    """Controls that run one task's model on the open series; ``found`` carries (volume, Finding)."""

    found = QtCore.Signal(object, object)  # Volume, Finding
    #: a finding this tab made was rewritten in place (its map rescaled, its summary with it)
    finding_changed = QtCore.Signal(object)  # Finding
    #: the tab title in the findings panel
    title = ""
    #: the chooser of this task's model, made by each tab
    model_box: ModelChooserBox

    def __init__(self, layers: LayerStack, start_task: StartTask, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.layers = layers
        self.start_task = start_task
        self.engine: InferenceService | None = None
        self.volume: Volume | None = None
        self.volume_complete = False  # every slice decoded: only then can a model run on it
        self.task: Task | None = None
        self.engine_problem = ""  # why the AI engine did not start, when it failed
        self.note = QtWidgets.QLabel()
        self.note.setWordWrap(True)
        #: why the run button is greyed, in words under it (a tooltip alone goes unseen)
        self.blocked_note = QtWidgets.QLabel()
        self.blocked_note.setObjectName("blocked_reason")
        self.blocked_note.setWordWrap(True)
        self.blocked_note.setStyleSheet("font-style: italic;")

    def set_engine(self, engine: InferenceService) -> None:
        """The AI engine is ready: list its models of this task."""
        self.engine, self.engine_problem = engine, ""
        self.refresh_models()

    def set_engine_problem(self, message: str) -> None:
        """The AI engine could not start: say so in the model chooser and under the run button."""
        self.engine_problem = message
        self.model_box.setPlaceholderText("AI engine unavailable")
        self.update_controls()

    def refresh_models(self) -> None:
        """List the installed bundles again (one was imported or removed)."""

    def chosen_cards(self) -> list[ModelCard]:
        """The models a run would use now (to load them before it)."""
        card = self.model_box.selected_card()
        return [card] if card is not None else []

    def set_volume(self, volume: Volume | None, complete: bool) -> None:
        """The series shown; a run on the previous series is cancelled by the panel before this."""
        if self.task is not None and self.task.done.is_set():
            self.task = None  # its closures hold the series it ran on: 500 MB of voxels for 1,000 slices
        self.volume, self.volume_complete = volume, volume is not None and complete
        self.update_controls()

    def run(self) -> Task | None:
        """Run this tab's model on the open series with the chosen settings (a task; None when it cannot run)."""
        raise NotImplementedError

    def running(self) -> bool:
        """Whether this tab's model run is still going."""
        return self.task is not None and not self.task.done.is_set()

    def cancel(self) -> None:
        """Ask the running model run to stop (at its next batch)."""
        if self.running():
            self.task.cancel()  # type: ignore[union-attr]

    def update_controls(self) -> None:
        """Enable what can run now."""

    def blocked_reason(self, card: ModelCard | None, what: str) -> str:
        """Why the model cannot run now, or empty when it can (``show_readiness`` shows it).

        The engine comes first: without it the model chooser is empty too, and
        the window opens a series (the sample) while the engine still loads.
        """
        if self.engine is None:
            if self.engine_problem:
                return f"The AI engine did not start: {self.engine_problem}"
            return ENGINE_LOADING
        if self.volume is None:
            return "Open a CT series first"
        if not self.volume_complete:
            return "The series is still loading"
        if card is None:
            return f"No {what} model installed: add one in Models > Installed models…"
        if self.running():
            return "Running…"
        return ""

    def show_readiness(self, button: QtWidgets.QPushButton, reason: str, ready_tip: str) -> None:
        """Enable ``button`` when nothing blocks it (``reason`` empty); else grey it and say why, under it."""
        button.setEnabled(not reason)
        button.setToolTip(reason or ready_tip)
        self.blocked_note.setText(reason)
        self.blocked_note.setVisible(bool(reason))
