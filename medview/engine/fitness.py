"""Input fitness: whether an input is what a model was validated on, said beside the model's result.

Torch-free (the UI imports it). A model's output on an input unlike its validation data
(a sparse series, a blank one, a group made mostly of padding) says little, however
confident it looks: these checks name the difference, so the result is shown with it
instead of as a plain verdict. The validated ranges come from the bundle's input spec
(``input.extra``: ``slice_spacing_mm`` as [min, max], ``min_slices``); where a bundle
states none, the range of the data its task's paper and our demo training used applies
(``VALIDATED_SLICE_SPACING_MM``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medview.engine.api import GroupScore
from medview.engine.manifest import ModelCard
from medview.io.volume import Volume

#: the slice spacing (mm) of the series a volume task's training and validation data have, where a bundle names
#: none. Only for models that read several slices together: COVID-19's CNN + biLSTM reads groups of 50
#: consecutive slices, and COVID-CT-MD's full series are 2 mm apart (a group spans ~10 cm of lung). The liver and
#: lung U-Nets read one axial slice at a time, which the spacing does not change.
VALIDATED_SLICE_SPACING_MM: dict[str, tuple[float, float]] = {"covid_ct": (0.5, 3.0)}
#: a voxel range below this (HU) over the whole input: nothing for a model to read
UNIFORM_RANGE_HU = 1.0
#: a COVID-19 group with more of its slots black than this decides little, whatever its probabilities
MOSTLY_PADDING = 0.5


def volume_fitness(card: ModelCard, volume: Volume) -> list[str]:
    """What about ``volume`` lies outside what ``card`` was validated on: a blank series, slices farther apart
    or closer than its data's, fewer slices than it needs. Empty when nothing does."""
    warnings = []
    if is_uniform(volume.voxels):
        value = float(volume.voxels.flat[0]) if volume.voxels.size else 0.0
        warnings.append(
            f"The series is uniform (every voxel {value:.0f}): there is nothing in it for {card.label} to read, "
            "and its output on it means nothing."
        )
    spacing = float(volume.spacing[0])
    low, high = slice_spacing_range(card)
    if volume.shape[0] > 1 and not low <= spacing <= high and card.task in VALIDATED_SLICE_SPACING_MM:
        warnings.append(
            f"Slices are {spacing:.1f} mm apart; {card.label} was validated on series with {low:g}-{high:g} mm "
            "between slices: its result on this series is untested"
            + (" (a sparse series: reload the full series if there is one)." if spacing > high else ".")
        )
    minimum = int(card.input.extra.get("min_slices", 0) or 0)
    if volume.shape[0] < minimum:
        warnings.append(
            f"The series has {volume.shape[0]} slices; {card.label} needs at least {minimum}: "
            "its result on fewer is untested."
        )
    return warnings


def slice_spacing_range(card: ModelCard) -> tuple[float, float]:
    """The slice spacing (mm) ``card`` was validated on: its manifest's, else its task's data's."""
    stated = card.input.extra.get("slice_spacing_mm")
    if isinstance(stated, Sequence) and len(stated) == 2:
        return float(stated[0]), float(stated[1])
    return VALIDATED_SLICE_SPACING_MM.get(card.task, (0.0, float("inf")))


def is_uniform(values: np.ndarray) -> bool:
    """Whether ``values`` hold one value throughout (a blank series, slice or photo), read on a subsample."""
    if values.size == 0:
        return True
    step = max(1, values.size // 1_000_000)
    sample = values.reshape(-1)[::step]
    return float(np.ptp(sample)) < UNIFORM_RANGE_HU and float(np.ptp(values)) < UNIFORM_RANGE_HU


def photo_fitness(card: ModelCard, rgb: np.ndarray) -> list[str]:
    """What about a photo lies outside what ``card`` was validated on: a blank (uniform) photo, or one with
    fewer pixels on a side than the network's input, which is then enlarged and shows no more detail."""
    warnings = []
    if all(is_uniform(rgb[..., channel]) for channel in range(rgb.shape[-1])):  # one colour, any colour
        warnings.append(
            f"The photo is uniform (one colour throughout): there is no lesion in it for {card.label} to read, "
            "and its output on it means nothing."
        )
    side = min(rgb.shape[:2])
    needed = min(card.input.size) if card.input.size else 0
    if side < needed:
        warnings.append(
            f"The photo is {rgb.shape[1]}x{rgb.shape[0]} pixels, smaller than the {needed} pixels a side "
            f"{card.label} reads: it was enlarged, and the result on so little detail is untested."
        )
    return warnings


def padding_warnings(groups: Sequence[GroupScore]) -> list[str]:
    """COVID-19 groups made mostly of black padding slots: their probabilities were read off padding."""
    warnings = []
    for group in groups:
        black = sum(source is None for source in group.sources)
        if group.sources and black / len(group.sources) > MOSTLY_PADDING:
            warnings.append(
                f"Group {group.description} is {black / len(group.sources):.0%} padding ({black} of "
                f"{len(group.sources)} slots black): its probabilities say little about this patient."
            )
    return warnings
