"""Input fitness of lung sound recordings (``engine.fitness.audio_fitness``), on the real ICBHI recordings the demo
bundle was trained on and on recordings made unlike them: silent, clipped, sampled at 2 kHz, with cycles too short
or longer than the model's 9 s segment."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medview.engine import fitness
from medview.engine.fitness import audio_fitness
from medview.engine.manifest import ModelCard, load_manifest
from medview.io.audio import Recording, read_icbhi_annotations, read_recording
from medview.preprocess.audio import SAMPLE_RATE, resample, sample_padded_segments
from tests.conftest import RESOURCES

MEDITRON = "102_1b1_Ar_sc_Meditron"  # 20 s at 44.1 kHz, 12 annotated cycles
LITTMANN = "104_1b1_Ar_sc_Litt3200"  # 4 kHz, the lowest rate in ICBHI 2017; a few isolated peaks at full scale


@pytest.fixture(scope="module")
def icbhi(shared_data: Path) -> Path:
    return shared_data / "lung_sound" / "icbhi_sample"


@pytest.fixture(scope="module")
def card() -> ModelCard:
    """The shipped demo bundle's card: its manifest states no ``min_sample_rate_hz`` or ``cycle_seconds`` yet."""
    bundle = RESOURCES / "models" / "lung-sound-demo"
    if not bundle.is_dir():
        pytest.skip("no lung-sound-demo bundle in resources/models")
    return load_manifest(bundle)


@pytest.fixture(scope="module")
def meditron(icbhi: Path) -> Recording:
    return read_recording(icbhi / f"{MEDITRON}.wav")


def with_extra(card: ModelCard, **extra: Any) -> ModelCard:
    """``card`` with ``extra`` added to its manifest's ``input.extra``."""
    return replace(card, input=replace(card.input, extra={**card.input.extra, **extra}))


def annotated_spans(recording: Recording) -> list[tuple[float, float]]:
    """The (start_s, end_s) of the recording's annotated cycles, as the lung panel passes them."""
    cycles = read_icbhi_annotations(recording.path.with_suffix(".txt"), duration_s=recording.duration_s)
    return [(cycle.start_s, cycle.end_s) for cycle in cycles]


def test_every_training_recording_with_its_annotated_cycles_draws_no_warning(card: ModelCard, icbhi: Path) -> None:
    wavs = sorted(icbhi.glob("*.wav"))
    assert len(wavs) == 9
    rates = set()
    for wav in wavs:
        recording = read_recording(wav)
        rates.add(recording.sample_rate)
        assert audio_fitness(card, recording, annotated_spans(recording)) == [], wav.name
    assert rates == {4000, 44_100}  # the 4 kHz Littmann recordings are at the validated minimum, not below it


def test_the_default_ranges_are_those_of_the_training_data(icbhi: Path) -> None:
    with (icbhi / "cycles.csv").open(newline="") as handle:
        durations = [float(row["end_s"]) - float(row["start_s"]) for row in csv.DictReader(handle)]
    low, high = fitness.VALIDATED_CYCLE_SECONDS
    assert low <= min(durations) < low + 0.01
    assert high - 0.01 < max(durations) <= high
    lowest_rate = min(read_recording(wav).sample_rate for wav in icbhi.glob("*.wav"))
    assert lowest_rate == fitness.VALIDATED_MIN_SAMPLE_RATE_HZ


def test_a_silent_recording_has_nothing_to_read(card: ModelCard) -> None:
    silent = Recording(np.zeros(10 * 4000, np.float32), 4000, 1, "PCM_16", Path("silent.wav"))
    warnings = audio_fitness(card, silent, [(0.5, 2.5), (2.5, 4.0)])
    assert len(warnings) == 1  # said once of the recording, not again of each cycle
    assert warnings[0].startswith("The recording is silent (its samples never vary)")
    assert f"no breath sound in it for {card.label} to read" in warnings[0]
    # a constant offset (a DC level) is as empty as zeros
    offset = Recording(np.full(10 * 4000, 0.2, np.float32), 4000, 1, "FLOAT", Path("offset.wav"))
    assert "silent" in audio_fitness(card, offset, [(0.5, 2.5)])[0]


def test_a_silent_cycle_in_a_real_recording_is_named(card: ModelCard, meditron: Recording) -> None:
    samples = meditron.samples.copy()
    spans = annotated_spans(meditron)
    start, end = spans[2]
    samples[round(start * meditron.sample_rate) : round(end * meditron.sample_rate)] = 0.0  # the stethoscope lifted
    warnings = audio_fitness(card, replace(meditron, samples=samples), spans)
    assert warnings == [
        f"Cycle 3 is silent (its samples vary by under 0.01% of full scale): there is no breath sound in it for "
        f"{card.label} to read, and the result for it means nothing."
    ]


def test_a_2_khz_resample_of_a_real_recording_is_below_the_validated_rate(card: ModelCard, meditron: Recording) -> None:
    low_rate = replace(meditron, samples=resample(meditron.samples, meditron.sample_rate, 2000), sample_rate=2000)
    warnings = audio_fitness(card, low_rate, annotated_spans(meditron))
    assert warnings == [
        f"The recording is sampled at 2000 Hz; {card.label} was validated on recordings sampled at 4000 Hz or "
        "more: this one holds no sound above 1000 Hz (where wheezes and crackles can lie), so its result on it is "
        "untested."
    ]


def test_the_manifests_minimum_rate_replaces_the_default(card: ModelCard, icbhi: Path, meditron: Recording) -> None:
    littmann = read_recording(icbhi / f"{LITTMANN}.wav")
    stricter = with_extra(card, min_sample_rate_hz=8000)
    (warning,) = audio_fitness(stricter, littmann, annotated_spans(littmann))
    assert warning.startswith(f"The recording is sampled at 4000 Hz; {card.label} was validated on recordings sampled ")
    assert "at 8000 Hz or more: this one holds no sound above 2000 Hz" in warning
    assert audio_fitness(stricter, meditron, annotated_spans(meditron)) == []
    # not a positive number: the default holds
    assert audio_fitness(with_extra(card, min_sample_rate_hz="high"), littmann, annotated_spans(littmann)) == []


def test_a_cycle_longer_than_the_segment_says_how_it_is_read(card: ModelCard, meditron: Recording) -> None:
    spans = [*annotated_spans(meditron), (1.0, 12.5)]  # 11.5 s: longer than the 9 s segment
    warnings = audio_fitness(card, meditron, spans)
    assert warnings == [
        f"Cycle {len(spans)} is longer than the model's 9 s segment (11.50 s long): it is read as 2 segments of 9 s "
        "whose results are averaged, the last filled out by repeating the cycle's start; "
        f"{card.label} was validated on cycles of 0.37-6.2 s, so the result for it is untested."
    ]
    # what the warning says of the segments is what the pipeline's front end does with such a cycle
    cycle = resample(meditron.samples, meditron.sample_rate, SAMPLE_RATE)[1 * SAMPLE_RATE : round(12.5 * SAMPLE_RATE)]
    segments = sample_padded_segments(cycle)
    assert len(segments) == 2
    np.testing.assert_array_equal(segments[1][: cycle.size - segments.shape[1]], cycle[segments.shape[1] :])
    np.testing.assert_array_equal(segments[1][cycle.size - segments.shape[1] :][:100], cycle[:100])


def test_cycles_outside_the_validated_lengths_are_counted_and_numbered(card: ModelCard, meditron: Recording) -> None:
    spans = [(0.0, 0.2), (1.0, 1.1), (2.0, 4.0), (3.0, 10.0), (5.0, 15.0), (2.0, 18.0)]
    warnings = audio_fitness(card, meditron, spans)
    assert warnings[0].startswith("2 cycles (1 and 2) are shorter than 0.37 s (the shortest 0.10 s);")
    assert "each is repeated over and over to fill the model's 9 s segment" in warnings[0]
    assert warnings[1].startswith("Cycle 4 is longer than 6.2 s (7.00 s long);")
    assert warnings[2].startswith("2 cycles (5 and 6) are longer than the model's 9 s segment (the longest 16.00 s)")
    assert "read as several segments of 9 s" in warnings[2]
    assert len(warnings) == 3
    # many cycles: the first few numbered, the rest counted
    many = audio_fitness(card, meditron, [(0.0, 0.1)] * 9)
    assert many[0].startswith("9 cycles (1, 2, 3, 4, 5, 6 and 3 more) are shorter than 0.37 s")


def test_the_manifests_cycle_range_and_segment_replace_the_defaults(card: ModelCard, meditron: Recording) -> None:
    spans = annotated_spans(meditron)
    durations = [end - start for start, end in spans]
    narrow = with_extra(card, cycle_seconds=[1.0, 2.0])
    warnings = audio_fitness(narrow, meditron, spans)
    shorter = sum(duration < 1.0 for duration in durations)
    longer = sum(duration > 2.0 for duration in durations)
    assert shorter > 0  # the real cycles fall on both sides of this range
    assert longer > 0
    assert warnings[0].startswith(f"{shorter} cycles (" if shorter > 1 else "Cycle ")
    assert "shorter than 1 s" in warnings[0]
    assert "validated on cycles of 1-2 s" in warnings[0]
    assert "longer than 2 s" in warnings[1]
    # validated on cycles up to 16 s, which were read as several segments too: a 12 s cycle is no longer untested
    assert audio_fitness(with_extra(card, cycle_seconds=[0.2, 16.0]), meditron, [(1.0, 13.0)]) == []
    # a shorter segment: a 6 s cycle is read as two of them
    (warning,) = audio_fitness(with_extra(card, segment_s=4.0, cycle_seconds=[0.2, 3.0]), meditron, [(1.0, 7.0)])
    assert "longer than the model's 4 s segment (6.00 s long): it is read as 2 segments of 4 s" in warning
    # malformed ranges: the defaults hold
    for stated in ([2.0, 1.0], [1.0], "1-2", [None, 2.0]):
        assert audio_fitness(with_extra(card, cycle_seconds=stated), meditron, spans) == [], stated


def test_a_clipped_recording_is_said_to_be_clipped(card: ModelCard, meditron: Recording) -> None:
    loud = np.clip(meditron.samples * 20, -1.0, 1.0)  # the Meditron recording through too much gain
    share = np.mean(np.abs(loud) >= 0.999)
    assert share > 0.01
    warnings = audio_fitness(card, replace(meditron, samples=loud), annotated_spans(meditron))
    assert warnings == [
        f"The recording is clipped: {share:.1%} of its samples are at full scale (too loud for the recorder), "
        f"which distorts crackles and wheezes; the recordings {card.label} was validated on have under 0.01% "
        "there, so its result on this one is untested."
    ]
