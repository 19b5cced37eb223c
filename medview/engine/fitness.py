"""Input fitness: whether an input is what a model was validated on, said beside the model's result.

Torch-free (the UI imports it). A model's output on an input unlike its validation data
(a sparse series, a blank one, a group made mostly of padding) says little, however
confident it looks: these checks name the difference, so the result is shown with it
instead of as a plain verdict. The validated ranges come from the bundle's input spec
(``input.extra``: ``slice_spacing_mm`` as [min, max], ``min_slices``; for lung sounds
``min_sample_rate_hz``, ``cycle_seconds`` as [min, max] and ``segment_s``); where a bundle
states none, the range of the data its task's paper and our demo training used applies
(``VALIDATED_SLICE_SPACING_MM``, ``VALIDATED_MIN_SAMPLE_RATE_HZ``, ``VALIDATED_CYCLE_SECONDS``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from medview.engine.api import GroupScore
from medview.engine.manifest import ModelCard
from medview.io.audio import Recording
from medview.io.volume import Volume
from medview.preprocess.audio import SEGMENT_SECONDS
from medview.tasks import ClinicalTask

#: the slice spacing (mm) of the series a volume task's training and validation data have, where a bundle names
#: none. Only for models that read several slices together: COVID-19's CNN + biLSTM reads groups of 50
#: consecutive slices, and COVID-CT-MD's full series are 2 mm apart (a group spans ~10 cm of lung). The liver and
#: lung U-Nets read one axial slice at a time, which the spacing does not change.
VALIDATED_SLICE_SPACING_MM: dict[str, tuple[float, float]] = {ClinicalTask.COVID_CT: (0.5, 3.0)}
#: a voxel range below this (HU) over the whole input: nothing for a model to read
UNIFORM_RANGE_HU = 1.0
#: a COVID-19 group with more of its slots black than this decides little, whatever its probabilities
MOSTLY_PADDING = 0.5
#: the lowest sample rate (Hz) of the recordings a lung sound model was validated on, where a bundle names none:
#: ICBHI 2017's lowest (its recordings are at 4 kHz, 10 kHz or 44.1 kHz; the sample has 4 kHz and 44.1 kHz)
VALIDATED_MIN_SAMPLE_RATE_HZ = 4000
#: the respiratory cycle lengths (s) a lung sound model was validated on, where a bundle names none: the shortest
#: and longest of the 86 annotated cycles of the ICBHI sample the demo bundle was trained on, measured in
#: icbhi_sample/cycles.csv (end_s - start_s: 0.371 s and 6.194 s, median 2.0 s), widened to the next 0.01 s
VALIDATED_CYCLE_SECONDS = (0.37, 6.20)
#: a peak-to-peak range below this (full scale = 1) holds nothing to read: a few steps of 16-bit audio (-80 dBFS)
SILENT_RANGE = 1e-4
#: a sample at or beyond this magnitude is at full scale (16-bit's largest positive value is 0.99997)
FULL_SCALE = 0.999
#: the share of samples at full scale in the recordings a lung sound model was validated on: the ICBHI sample's
#: loudest (Littmann 3200, 4 kHz) have at most 0.0033% there, a few isolated peaks; the others none
VALIDATED_CLIPPED_SHARE = 0.0001
#: more of a recording's samples at full scale than this (100 times the validated share): it was clipped
CLIPPED_SHARE = 0.01
#: at most this many cycle numbers are listed in a warning, the rest counted
LISTED_CYCLES = 6


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


def audio_fitness(card: ModelCard, recording: Recording, cycles: Sequence[tuple[float, float]]) -> list[str]:
    """What about ``recording`` and its ``cycles`` (``(start_s, end_s)``, as classified) lies outside what ``card``
    was validated on: a silent recording or silent cycles, clipping, a sample rate below its data's, cycles shorter
    or longer than its data's. Empty when nothing does."""
    warnings = []
    samples = recording.samples
    silent = _is_silent(samples)
    if silent:
        spread = _range(samples)
        varies = (
            f"its samples vary by only {spread:.3%} of full scale, under the {SILENT_RANGE:.2%} taken as silence"
            if spread
            else "its samples never vary"
        )
        warnings.append(
            f"The recording is silent ({varies}): there is no breath sound in it for {card.label} to read, "
            "and its output on it means nothing."
        )
    clipped = _clipped_share(samples)
    if clipped > CLIPPED_SHARE:
        warnings.append(
            f"The recording is clipped: {clipped:.1%} of its samples are at full scale (too loud for the recorder), "
            f"which distorts crackles and wheezes; the recordings {card.label} was validated on have under "
            f"{VALIDATED_CLIPPED_SHARE:.2%} there, so its result on this one is untested."
        )
    minimum_rate = min_sample_rate(card)
    if recording.sample_rate < minimum_rate:
        warnings.append(
            f"The recording is sampled at {recording.sample_rate} Hz; {card.label} was validated on recordings "
            f"sampled at {minimum_rate} Hz or more: this one holds no sound above {recording.sample_rate / 2:.0f} Hz "
            "(where wheezes and crackles can lie), so its result on it is untested."
        )
    warnings.extend(_cycle_length_warnings(card, [end - start for start, end in cycles]))
    if not silent:  # else said once, of the whole recording
        quiet = [i for i, span in enumerate(cycles) if _is_silent(_cycle_samples(recording, span))]
        if quiet:
            its = "its" if len(quiet) == 1 else "their"
            warnings.append(
                f"{_cycles_named(quiet)} {_are(quiet)} silent ({its} samples vary by under {SILENT_RANGE:.2%} of "
                f"full scale): there is no breath sound in {_them(quiet)} for {card.label} to read, and "
                f"{_results_for(quiet)} {'means' if len(quiet) == 1 else 'mean'} nothing."
            )
    return warnings


def _cycle_length_warnings(card: ModelCard, durations: Sequence[float]) -> list[str]:
    """Cycles shorter or longer than ``card``'s validated cycles, those longer than its segment said apart: the
    pipeline reads such a cycle as several segments (``preprocess.audio.sample_padded_segments``)."""
    low, high = cycle_seconds_range(card)
    segment = _positive_number(card.input.extra.get("segment_s")) or SEGMENT_SECONDS
    validated = f"{card.label} was validated on cycles of {low:g}-{high:g} s"
    warnings = []
    short = [i for i, duration in enumerate(durations) if duration < low]
    if short:
        shortest = min(durations[i] for i in short)
        warnings.append(
            f"{_cycles_named(short)} {_are(short)} shorter than {low:g} s ({_length(short, shortest, 'shortest')}); "
            f"{validated}: {_each(short)} repeated over and over to fill the model's {segment:g} s segment, and "
            f"{_results_for(short)} {_are(short)} untested."
        )
    long = [i for i, duration in enumerate(durations) if high < duration <= segment]
    if long:
        longest = max(durations[i] for i in long)
        warnings.append(
            f"{_cycles_named(long)} {_are(long)} longer than {high:g} s ({_length(long, longest, 'longest')}); "
            f"{validated}: {_results_for(long)} {_are(long)} untested."
        )
    # a cycle over the segment but within the validated range was read the same way in validation: no warning
    over = [i for i, duration in enumerate(durations) if duration > max(high, segment)]
    if over:
        longest = max(durations[i] for i in over)
        segments = f"{math.ceil(longest / segment)} segments" if len(over) == 1 else "several segments"
        warnings.append(
            f"{_cycles_named(over)} {_are(over)} longer than the model's {segment:g} s segment "
            f"({_length(over, longest, 'longest')}): {_each(over)} read as {segments} of {segment:g} s whose "
            f"results are averaged, the last filled out by repeating the cycle's start; {validated}, so "
            f"{_results_for(over)} {_are(over)} untested."
        )
    return warnings


def min_sample_rate(card: ModelCard) -> int:
    """The lowest sample rate (Hz) ``card`` was validated on: its manifest's, else ICBHI 2017's."""
    stated = _positive_number(card.input.extra.get("min_sample_rate_hz"))
    return round(stated) if stated is not None else VALIDATED_MIN_SAMPLE_RATE_HZ


def cycle_seconds_range(card: ModelCard) -> tuple[float, float]:
    """The respiratory cycle lengths (s) ``card`` was validated on: its manifest's, else the ICBHI sample's."""
    stated = card.input.extra.get("cycle_seconds")
    if isinstance(stated, Sequence) and not isinstance(stated, str) and len(stated) == 2:
        low, high = (_positive_number(value) for value in stated)
        if low is not None and high is not None and low < high:
            return low, high
    return VALIDATED_CYCLE_SECONDS


def _positive_number(value: object) -> float | None:
    """``value`` when a manifest states a positive number there, else None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def _range(samples: np.ndarray) -> float:
    """The peak-to-peak amplitude of ``samples`` (0 when there are none)."""
    return float(samples.max() - samples.min()) if samples.size else 0.0


def _is_silent(samples: np.ndarray) -> bool:
    """Whether ``samples`` stay within ``SILENT_RANGE`` of one value (silence, or a constant offset)."""
    return _range(samples) < SILENT_RANGE


def _clipped_share(samples: np.ndarray) -> float:
    """The share of ``samples`` at full scale, either way."""
    if not samples.size:
        return 0.0
    return (np.count_nonzero(samples >= FULL_SCALE) + np.count_nonzero(samples <= -FULL_SCALE)) / samples.size


def _cycle_samples(recording: Recording, span: tuple[float, float]) -> np.ndarray:
    """The samples of the cycle ``span`` (seconds), a view."""
    start, end = span
    return recording.samples[max(0, round(start * recording.sample_rate)) : round(end * recording.sample_rate)]


def _cycles_named(indices: Sequence[int]) -> str:
    """The cycles at ``indices`` by the numbers the cycle table shows (1-based): "Cycle 3", "3 cycles (4, 7 and
    9)", or the first ``LISTED_CYCLES`` numbers and how many more."""
    numbers = [str(index + 1) for index in indices]
    if len(numbers) == 1:
        return f"Cycle {numbers[0]}"
    if len(numbers) > LISTED_CYCLES:
        listed = ", ".join(numbers[:LISTED_CYCLES]) + f" and {len(numbers) - LISTED_CYCLES} more"
    else:
        listed = ", ".join(numbers[:-1]) + f" and {numbers[-1]}"
    return f"{len(numbers)} cycles ({listed})"


def _are(indices: Sequence[int]) -> str:
    return "is" if len(indices) == 1 else "are"


def _each(indices: Sequence[int]) -> str:
    return "it is" if len(indices) == 1 else "each is"


def _them(indices: Sequence[int]) -> str:
    return "it" if len(indices) == 1 else "them"


def _results_for(indices: Sequence[int]) -> str:
    return "the result for it" if len(indices) == 1 else "the results for them"


def _length(indices: Sequence[int], seconds: float, extreme: str) -> str:
    """A cycle's length, or the shortest or longest of several: "0.20 s long", "the shortest 0.20 s"."""
    return f"{seconds:.2f} s long" if len(indices) == 1 else f"the {extreme} {seconds:.2f} s"
