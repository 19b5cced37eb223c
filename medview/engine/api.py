"""What the engine hands the UI (torch-free): results with their provenance, and the service protocol.

Every result carries a ``Provenance``: which bundle produced it (id, version,
the training-data line of its manifest, its validation metrics, the demo flag),
the threshold it was read with, the device and the time it took.  The findings
panel shows exactly these fields, and a demo bundle's results are marked
"demo model: not for diagnosis" wherever they are displayed.

Arrays live in the input's own grid: a mask or heatmap of a CT volume is indexed
``[z, y, x]`` like ``Volume.voxels``; a photo's saliency map has the photo's
height and width.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from medview.engine.manifest import ModelCard
from medview.io.audio import Recording
from medview.io.volume import Volume
from medview.progress import CancelCheck, ProgressCallback
from medview.tasks import ClinicalTask

DEMO_BANNER = "demo model: not for diagnosis"

SlicePaintCallback = Callable[[int, np.ndarray], None]  # first slice index, probabilities (n, y, x)


@dataclass(frozen=True)
class Provenance:
    """Which model produced a result, how it was trained, and how it ran."""

    model_id: str
    model_version: str
    task: str
    arch: str
    demo: bool
    training_data: str  # one line: dataset, split, counts
    metrics: Mapping[str, float]
    threshold: float | None
    device: str
    seconds: float
    notes: tuple[str, ...] = ()  # e.g. "CUDA out of memory: ran on the CPU", "lung mask: classical fallback"
    validated: str = ""  # one line: the model's validated performance (``validated_summary``)

    @property
    def label(self) -> str:
        return f"{self.model_id} {self.model_version}"

    @classmethod
    def of(
        cls, card: ModelCard, *, threshold: float | None, device: str, seconds: float, notes: Sequence[str] = ()
    ) -> Provenance:
        """The provenance of a result of ``card``."""
        trained = card.trained_on
        counts = ", ".join(f"{value} {name}" for name, value in trained.counts.items())
        line = f"{trained.dataset} ({trained.split}{'; ' + counts if counts else ''})"
        if trained.demo or trained.synthetic:
            line += " [demo]" if not trained.synthetic else " [synthetic]"
        return cls(
            model_id=card.id,
            model_version=card.version,
            task=card.task,
            arch=card.arch,
            demo=card.is_demo,
            training_data=line,
            metrics=dict(card.metrics),
            threshold=threshold,
            device=device,
            seconds=seconds,
            notes=tuple(notes),
            validated=validated_summary(card, threshold),
        )


def validated_summary(card: ModelCard, threshold: float | None = None) -> str:
    """One line of what the bundle's validation showed: sensitivity and specificity (or Dice, or the ICBHI
    score) at its threshold, their 95% intervals when the bundle records them, and on how much held-out
    data; shown beside every verdict of the model."""
    metrics, counts = card.metrics, card.trained_on.counts
    positive = card.class_names[0] if card.class_names else ""
    sensitivity = metrics.get("sensitivity", metrics.get(f"sensitivity/{positive}"))
    specificity = metrics.get("specificity", metrics.get(f"specificity/{positive}"))
    suffix = "" if "sensitivity" in metrics else f"/{positive}"
    intervals = [
        (name, metrics.get(f"{name}_ci_low{suffix}"), metrics.get(f"{name}_ci_high{suffix}"))
        for name in ("sensitivity", "specificity")
    ]
    parts = []
    if "score" in metrics:
        parts.append(f"ICBHI score {metrics['score']:.2f}")
    if "infection_auc" in metrics:
        parts.append(f"slice infection AUC {metrics['infection_auc']:.2f} on patients left out of training")
    if "dice" in metrics:
        parts.append(f"Dice {metrics['dice']:.2f}")
    if sensitivity is not None and specificity is not None:
        of_class = f" for {positive.replace('_', ' ')}" if f"sensitivity/{positive}" in metrics else ""
        parts.append(f"sensitivity {sensitivity:.2f}, specificity {specificity:.2f}{of_class}")
    elif "auc" in metrics:
        parts.append(f"AUC {metrics['auc']:.2f}")
    held_out = counts.get("test", counts.get("test_volumes"))
    if not parts and held_out != 0:
        return "Validated performance: none recorded in the bundle"
    if threshold is not None and sensitivity is not None:
        parts[-1] += f" at threshold {threshold:g}"
    if sensitivity is not None and specificity is not None and all(None not in pair[1:] for pair in intervals):
        # intervals over images are too narrow where many images come from few patients, whose images are
        # alike (kidney 1.4.0: 320 slices of 7 scans, 2 of them normal); training now counts each patient once
        patients = counts.get("test_patients")
        clustered = patients is not None and held_out is not None and 0 < patients < held_out
        basis = "95% CI"
        if "interval_positive_patients" in metrics and "interval_negative_patients" in metrics:
            negative, positive_class = _binary_classes(card)
            basis += (
                f" over {metrics['interval_positive_patients']:.0f} {positive_class} and "
                f"{metrics['interval_negative_patients']:.0f} {negative} patients"
            )
        elif clustered:
            basis += f" counting images as independent, too narrow for {patients} patients"
        parts[-1] += f" ({basis}: " + ", ".join(f"{name} {low:.2f}–{high:.2f}" for name, low, high in intervals) + ")"
    if held_out == 0:
        parts.append("no patient held out for the verdict: untested on unseen patients")
    elif held_out is not None:
        unit = next(
            (name for name in ("images", "cycles", "volumes") if name in counts or f"test_{name}" in counts), "patients"
        )
        parts.append(f"on {held_out} held-out {unit[:-1] if held_out == 1 else unit}")
        if counts.get("test_patients") and unit != "patients":
            parts[-1] += f" of {counts['test_patients']} patients"
    elif "patients" in counts:
        parts.append(f"from {counts['patients']} patients in all")
    return "Validated: " + "; ".join(parts)


def _binary_classes(card: ModelCard) -> tuple[str, str]:
    """The negative and the positive class of a two-class card, in words (the input spec's ``positive_class``,
    as ``medview-train evaluate`` reads it)."""
    positive = str(card.input.extra.get("positive_class", card.class_names[-1] if card.class_names else "positive"))
    negative = next((name for name in card.class_names if name != positive), "negative")
    return negative.replace("_", " "), positive.replace("_", " ")


@dataclass(frozen=True, eq=False)
class Heatmap:
    """A Grad-CAM / saliency map in the input's grid.

    ``values`` are the raw ReLU'd class-activation values; ``relative`` scales them
    to [0, 1] by their own maximum (the usual display), ``absolute`` by a fixed
    scale so two images or two slices can be compared.
    """

    values: np.ndarray
    target_class: str
    layer: str

    def relative(self) -> np.ndarray:
        peak = float(self.values.max()) if self.values.size else 0.0
        return self.values / peak if peak > 0 else np.zeros_like(self.values)

    def absolute(self, scale: float) -> np.ndarray:
        if scale <= 0:
            raise ValueError(f"scale: expected a positive number, got {scale}")
        return np.clip(self.values / scale, 0.0, 1.0)


@dataclass(frozen=True, eq=False)
class SegmentationResult:
    """A per-voxel segmentation of a CT volume (liver, lungs)."""

    provenance: Provenance
    label_name: str
    probability: np.ndarray  # float16 [z, y, x], probability of the structure
    mask: np.ndarray  # bool [z, y, x], probability >= threshold
    spacing: tuple[float, float, float]  # (z, y, x) mm, for the volume

    @property
    def volume_ml(self) -> float:
        """Volume of the mask in millilitres (1 mL = 1000 mm^3)."""
        return float(self.mask.sum()) * float(np.prod(self.spacing)) / 1000.0

    @property
    def slice_range(self) -> tuple[int, int] | None:
        """First and last slice index that holds mask voxels, or None for an empty mask."""
        slices = np.flatnonzero(self.mask.any(axis=(1, 2)))
        return (int(slices[0]), int(slices[-1])) if slices.size else None


@dataclass(frozen=True)
class ClassScores:
    """Class probabilities of one item (a slice, a group of slices, a cycle, a photo)."""

    probabilities: Mapping[str, float]

    @property
    def label(self) -> str:
        return max(self.probabilities, key=self.probabilities.__getitem__)


@dataclass(frozen=True, eq=False)
class LungSoundResult:
    """Per-cycle classification of one recording by a snapshot ensemble."""

    provenance: Provenance
    class_names: tuple[str, ...]
    cycles: tuple[tuple[float, float], ...]  # (start_s, end_s) of each cycle, as classified
    scores: tuple[ClassScores, ...]  # one per cycle, averaged over chunks and snapshots
    snapshots: int
    chunks_per_cycle: tuple[int, ...]


@dataclass(frozen=True, eq=False)
class SliceClassificationResult:
    """A binary per-slice classification over a series (kidney stone), with the ROI that was used."""

    provenance: Provenance
    positive_class: str
    slice_indices: tuple[int, ...]
    probabilities: np.ndarray  # float32, probability of ``positive_class`` per listed slice
    roi: str  # where the ROI came from: "whole slice", a mask file, "drawn rectangle", ...
    heatmaps: Mapping[int, Heatmap] = field(default_factory=dict)  # by slice index, when asked

    def positive_slices(self) -> list[int]:
        """Slices at or above the bundle's threshold."""
        threshold = self.provenance.threshold if self.provenance.threshold is not None else 0.5
        return [i for i, p in zip(self.slice_indices, self.probabilities, strict=True) if p >= threshold]


@dataclass(frozen=True, eq=False)
class PhotoResult:
    """Benign / malignant of one photo: the forest's vote share and a saliency map of the CNN part."""

    provenance: Provenance
    scores: ClassScores
    positive_class: str
    votes: Mapping[str, int]  # tree votes for each class, summed over the views
    saliency: Heatmap | None
    views: int = 1  # the photo alone, or with its mirrored or turned copies (every tree votes once per view)

    @property
    def label(self) -> str:
        """The class read with the bundle's threshold on the positive class."""
        threshold = self.provenance.threshold if self.provenance.threshold is not None else 0.5
        if self.scores.probabilities[self.positive_class] >= threshold:
            return self.positive_class
        return next(name for name in self.scores.probabilities if name != self.positive_class)

    def votes_text(self) -> str:
        """The forest's votes in words, e.g. "12 of 50 trees vote malignant, 38 of 50 trees vote benign"."""
        total = sum(self.votes.values())
        if self.views == 1:
            return ", ".join(f"{count} of {total} trees vote {name}" for name, count in self.votes.items())
        trees = total // self.views
        counted = ", ".join(f"{count} of {total} votes for {name}" for name, count in self.votes.items())
        copies = f"{self.views - 1} mirrored or turned copies of it"
        return f"{counted} ({trees} trees, each voting on the photo and {copies})"


@dataclass(frozen=True)
class GroupScore:
    """One 50-slice group of the COVID pipeline: which slices it holds and its class probabilities."""

    description: str  # e.g. "slices 43-92", "slices 93-119 + 23 black"
    kind: str  # "full", "padded" or "resampled"
    sources: tuple[int | float | None, ...]  # source slice of each slot (float: interpolated, None: black)
    scores: ClassScores


@dataclass(frozen=True, eq=False)
class CovidResult:
    """Paper 002's patient verdict with everything that led to it, for the viewer to show."""

    provenance: Provenance
    class_names: tuple[str, ...]
    lung_mask: np.ndarray  # bool [z, y, x]
    lung_mask_source: str  # the lung U-Net bundle, or the classical method
    slice_reasons: tuple[str, ...]  # one per slice: "kept: ..." or why it was left out
    kept_slices: tuple[int, ...]
    groups: tuple[GroupScore, ...]
    verdict: str
    votes: Mapping[str, int]
    switched: bool  # a group above the 0.9 rule overruled a healthy majority
    reason: str  # the vote spelled out
    heatmaps: Mapping[int, Heatmap] = field(default_factory=dict)  # Grad-CAM by slice index, when asked


class InferenceService(Protocol):
    """What the UI may ask of the engine; implemented on the torch side (``Engine``), wired by ``medview.app``.

    The ``classify_*`` calls are long: the UI makes them from its workers, never on the GUI thread.
    """

    def cards(self, task: ClinicalTask | None = None) -> Sequence[ModelCard]: ...

    def refresh(self) -> object: ...

    def device_name(self) -> str: ...

    def prepare(self, card: ModelCard) -> None: ...

    def classify_skin(
        self,
        card: ModelCard,
        rgb: np.ndarray,
        *,
        explain: bool = True,
        progress: ProgressCallback | None = None,
        cancelled: CancelCheck | None = None,
    ) -> PhotoResult: ...

    def explain_skin(
        self,
        card: ModelCard,
        rgb: np.ndarray,
        *,
        progress: ProgressCallback | None = None,
        cancelled: CancelCheck | None = None,
    ) -> Heatmap: ...

    def classify_lung_sound(
        self,
        card: ModelCard,
        recording: Recording,
        cycles: Sequence[tuple[float, float]],
        *,
        progress: ProgressCallback | None = None,
        cancelled: CancelCheck | None = None,
    ) -> LungSoundResult: ...

    def segment_liver(
        self,
        card: ModelCard,
        volume: Volume,
        *,
        on_slices: SlicePaintCallback | None = None,
        mask_out: np.ndarray | None = None,
        progress: ProgressCallback | None = None,
        cancelled: CancelCheck | None = None,
    ) -> SegmentationResult: ...

    def classify_kidney_slices(
        self,
        card: ModelCard,
        volume: Volume,
        slice_indices: Sequence[int],
        *,
        roi: np.ndarray | None = None,
        roi_source: str = "whole slice",
        explain_slices: Sequence[int] = (),
        progress: ProgressCallback | None = None,
        cancelled: CancelCheck | None = None,
    ) -> SliceClassificationResult: ...

    def classify_covid(
        self,
        card: ModelCard,
        volume: Volume,
        *,
        lung_card: ModelCard | None = None,
        explain: bool = False,
        progress: ProgressCallback | None = None,
        cancelled: CancelCheck | None = None,
    ) -> CovidResult: ...
