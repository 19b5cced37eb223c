"""Automatic respiratory-cycle detection against the real ICBHI annotations, per recording and overall.

Run: ``.venv/bin/python -m bench.cycle_detection [FOLDER]`` (default: ../shared/data/lung_sound/icbhi_sample,
every WAV with its same-name ICBHI .txt).  Prints markdown tables (``bench.results``).

Boundaries are every cycle start plus the last cycle's end, for the annotation
and for ``detect_cycles`` alike.  A detected boundary matches an annotated one
within +-0.5 s, one to one (greedy in time order, which finds the largest
number of matches for a fixed tolerance on a line); precision = matched /
detected, recall = matched / annotated, F1 their harmonic mean; the overall row
pools the counts (micro average).  "interior" leaves out the boundaries within
0.5 s of either end of a recording, which a detector that starts its first
cycle at 0 and ends its last at the recording's end matches for free.
"error" is the median absolute time difference of the matched boundaries.
"time" is ``detect_cycles`` alone (after one warm-up call), the recording
already in memory; the last lines time 10 minutes of noise and of silence at 44.1 kHz.

The parameters of ``medview.preprocess.cycles`` were chosen on these same
recordings (9 recordings, 3 patients), so the figures are optimistic.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.results import Row, report
from medview.io.audio import annotation_path, read_icbhi_annotations, read_recording
from medview.preprocess.cycles import breath_envelope, breathing_period, detect_cycles

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FOLDER = REPO.parent / "shared" / "data" / "lung_sound" / "icbhi_sample"
TOLERANCE_S = 0.5
EDGE_S = 0.5


def boundaries(cycles: list[tuple[float, float]]) -> np.ndarray:
    """Every cycle start and the last end, sorted."""
    return np.array(sorted({start for start, _ in cycles} | ({cycles[-1][1]} if cycles else set())))


def match(annotated: np.ndarray, detected: np.ndarray, tolerance: float = TOLERANCE_S) -> np.ndarray:
    """Absolute errors of the one-to-one matches within ``tolerance`` (greedy in time order; both sorted)."""
    errors, i, j = [], 0, 0
    while i < annotated.size and j < detected.size:
        difference = detected[j] - annotated[i]
        if abs(difference) <= tolerance:
            errors.append(abs(difference))
            i, j = i + 1, j + 1
        elif difference < 0:
            j += 1
        else:
            i += 1
    return np.array(errors)


@dataclass
class Detection:
    """One recording: its annotated and detected cycles, its length, the detection time, the breathing period."""

    name: str
    annotated: list[tuple[float, float]]
    detected: list[tuple[float, float]]
    duration_s: float
    seconds: float
    period_s: float

    def counts(self, interior: bool = False) -> tuple[int, int, np.ndarray]:
        """Annotated and detected boundary counts and the matched errors (interior ones only if asked)."""
        a, d = boundaries(self.annotated), boundaries(self.detected)
        if interior:
            a = a[(a > EDGE_S) & (a < self.duration_s - EDGE_S)]
            d = d[(d > EDGE_S) & (d < self.duration_s - EDGE_S)]
        return a.size, d.size, match(a, d)


def scores(annotated: int, detected: int, matched: int) -> tuple[float, float, float]:
    """Precision, recall, F1."""
    precision = matched / detected if detected else 0.0
    recall = matched / annotated if annotated else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def durations(cycles: list[tuple[float, float]]) -> float:
    return statistics.median(end - start for start, end in cycles) if cycles else float("nan")


def main(argv: list[str]) -> int:
    folder = Path(argv[0]) if argv else DEFAULT_FOLDER
    wavs = sorted(folder.glob("*.wav"))
    if not wavs:
        print(f"no recordings found in {folder}", file=sys.stderr)
        return 2
    detections = []
    for index, wav in enumerate(wavs):
        recording = read_recording(wav)
        annotated = read_icbhi_annotations(annotation_path(wav), duration_s=recording.duration_s)
        if index == 0:
            detect_cycles(recording.samples, recording.sample_rate)  # warm-up
        start = time.perf_counter()
        detected = detect_cycles(recording.samples, recording.sample_rate)
        seconds = time.perf_counter() - start
        period = breathing_period(breath_envelope(recording.samples, recording.sample_rate))
        spans = [(c.start_s, c.end_s) for c in annotated]
        detections.append(Detection(wav.stem, spans, detected, recording.duration_s, seconds, period))

    title = (
        f"Cycle detection on {len(detections)} ICBHI recordings ({folder}), boundaries matched within ±{TOLERANCE_S} s"
    )
    print(f"{title}; per recording (boundaries annotated/detected/matched):")
    per_recording: list[Row] = []
    totals = [0, 0, 0, 0, 0, 0]
    errors: list[float] = []
    for each in detections:
        a, d, e = each.counts()
        ai, di, ei = each.counts(interior=True)
        totals = [t + v for t, v in zip(totals, (a, d, e.size, ai, di, ei.size), strict=True)]
        errors += list(e)
        p, r, f = scores(a, d, e.size)
        fi = scores(ai, di, ei.size)[2]
        error = f"{np.median(e):.2f} s" if e.size else "–"
        print(
            f"- {each.name}: {each.duration_s:.1f} s, cycles {len(each.annotated)} annotated / {len(each.detected)} "
            f"detected, period {each.period_s:.2f} s, boundaries {a}/{d}/{e.size}, precision {p:.2f}, "
            f"recall {r:.2f}, error {error}, median cycle {durations(each.annotated):.2f} s annotated / "
            f"{durations(each.detected):.2f} s detected, time {each.seconds:.3f} s"
        )
        per_recording += [Row(f"{each.name}: F1", f, "F1"), Row(f"{each.name}: F1 interior", fi, "F1")]
    report("cycle_detection", f"{title}: per recording", per_recording, digits=2)

    a, d, m, ai, di, mi = totals
    p, r, f = scores(a, d, m)
    pi, ri, fi = scores(ai, di, mi)
    all_annotated = [span for each in detections for span in each.annotated]
    all_detected = [span for each in detections for span in each.detected]
    total_s = sum(each.duration_s for each in detections)
    rate = 44_100
    noise = (0.01 * np.random.default_rng(0).standard_normal(600 * rate)).astype(np.float32)
    start = time.perf_counter()
    found = detect_cycles(noise, rate)
    noise_s = time.perf_counter() - start
    start = time.perf_counter()
    silent = detect_cycles(np.zeros(600 * rate, dtype=np.float32), rate)
    silence_s = time.perf_counter() - start
    overall = [
        Row(f"overall: precision ({m} of {d} detected boundaries matched)", p, "precision"),
        Row(f"overall: recall ({m} of {a} annotated boundaries matched)", r, "recall"),
        Row("overall: F1", f, "F1"),
        Row(f"interior: precision ({mi} of {di} matched)", pi, "precision"),
        Row(f"interior: recall ({mi} of {ai} matched)", ri, "recall"),
        Row("interior: F1", fi, "F1"),
        Row("overall: boundary error, median of the matched", float(np.median(errors)) if errors else float("nan")),
        Row(f"median cycle, annotated ({len(all_annotated)} cycles)", durations(all_annotated)),
        Row(f"median cycle, detected ({len(all_detected)} cycles)", durations(all_detected)),
        Row(f"detect_cycles, all {total_s:.0f} s of recordings", sum(each.seconds for each in detections)),
        Row(f"detect_cycles, 10 min of white noise at 44.1 kHz ({len(found)} cycles found)", noise_s),
        Row(f"detect_cycles, 10 min of silence at 44.1 kHz ({len(silent)} cycles found)", silence_s),
    ]
    report("cycle_detection", f"{title}: overall (counts pooled)", overall)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
