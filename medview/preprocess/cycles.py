"""Respiratory cycles found automatically in an auscultation recording that has no ICBHI annotation file.

ICBHI 2017 cuts a recording into respiratory cycles (one inspiration and the
expiration after it, typically 1.5-6 s) with each boundary at the start of an
inspiration, i.e. in the quiet pause between two breaths.  The detector looks
for those pauses in the loudness of the breath sounds and keeps the ones that
follow the breathing rhythm:

1. Breath-sound envelope: the recording resampled to 4 kHz, a 64 ms / 20 ms
   STFT, each frequency bin's level in dB above its own median over the whole
   recording (so stationary noise, hum and the stethoscope's colouring drop
   out and the result does not depend on gain), negative values cut to 0, then
   averaged over 100-1000 Hz (where inspiratory and expiratory sounds and
   wheezes carry their energy; below 100 Hz heart sounds and handling noise
   dominate) and smoothed with a Gaussian of 0.25 s so that the short bursts
   inside one breath merge into one hump.
2. Breathing period: the highest peak of the envelope's autocorrelation at lags
   of 1.5-8 s.
3. Pauses: every local minimum of the envelope (prominence >= 0.3 dB) is a
   candidate, scored by its prominence relative to the envelope's range.  A
   dynamic programme (the beat tracker of Ellis 2007, run on pauses instead of
   onsets) picks the chain of candidates that maximises the summed scores minus
   ``2 * log(gap / period) ** 2`` for each gap between consecutive boundaries
   (gaps of 0.4-2.5 periods allowed), so one shallow dip inside a breath does
   not cut it in two and a missing dip does not merge two breaths as long as
   the rhythm carries over it.
4. Boundary inside the pause: the pause around a chosen minimum is where the
   envelope stays below 15 % of the way from the minimum to the highest point
   within half a period; the boundary is placed 75 % of the way through it,
   since inspiration starts at the end of the pause.  The stretches before the
   first and after the last boundary become (partial) cycles too, as ICBHI
   annotates them, when they are at least 0.3 s long.

Silence, a constant signal or noise without a rhythm gives an envelope range
below 1.5 dB (white noise: about 0.2 dB; the ICBHI sample recordings: 3.5-12
dB) and no cycles; so does a recording shorter than 1.5 s.  Ten minutes at
44.1 kHz take about 0.3 s and 25 MB beside the samples (the resampling
dominates; the STFT runs in 60 s pieces; everything after it works on the 50
frames/s envelope).

Measured agreement (``python -m bench.cycle_detection``: the 9 recordings of
``shared/data/lung_sound/icbhi_sample``, 3 patients, 86 annotated cycles, 95
annotated boundaries = every cycle start and the last end, matched one to one
within +-0.5 s): precision 0.70, recall 0.77, F1 0.73; F1 0.70 without the
boundaries within 0.5 s of either end of a recording (which come almost for
free); median absolute error of matched boundaries 0.28 s; median cycle 1.91 s
detected against 2.02 s annotated.  Per recording F1 ranges from 0.42 to 0.93.
These figures are optimistic: every parameter above (band, smoothing, pause
level and position, rhythm weight) was chosen on these same 9 recordings, and
changing any one of them a little moves F1 between 0.63 and 0.74 (the pause
position the most: 0.63 at 50 %).  Part of the disagreement is in the
annotations: three recordings end with one 3.5-6 s "cycle" over several
breaths that the annotators left unsplit.  And where in the pause a cycle
starts differs between patients: at its middle for patient 104 (quiet
inspirations, loud expiratory wheezes), at its end for patients 102 and 106
(louder inspirations); 75 % is the compromise.

Written with numpy alone (plus soxr, through ``medview.preprocess.audio``):
scipy.signal's ``find_peaks`` would save 30 lines but takes about 1.5 s to
import, which the app's front end should not pay.
"""

from __future__ import annotations

import itertools

import numpy as np

from medview.preprocess.audio import power_spectrogram, resample

ANALYSIS_RATE = 4_000  # Hz; the lowest rate among ICBHI recordings, ample for 100-1000 Hz
N_FFT = 256  # 64 ms windows
HOP = 80  # 20 ms hops
FRAME_RATE = ANALYSIS_RATE / HOP  # envelope frames per second
BAND_HZ = (100.0, 1000.0)
SMOOTH_S = 0.25  # Gaussian sigma of the envelope
MIN_PERIOD_S, MAX_PERIOD_S = 1.5, 8.0
MIN_DURATION_S = 1.5  # shorter recordings give no cycles
MIN_RANGE_DB = 1.5  # envelope range (90th - 10th percentile) below which there is no breathing to cut
MIN_PROMINENCE_DB = 0.3  # a dip shallower than this is not a candidate pause
GAP_PERIODS = (0.4, 2.5)  # allowed distance between consecutive boundaries, in periods
RHYTHM_WEIGHT = 2.0  # penalty per (log(gap / period)) ** 2
PAUSE_LEVEL = 0.15  # the pause: below this fraction of the way from its minimum to the nearby maximum
PAUSE_POSITION = 0.75  # where in the pause the boundary goes (0 = its start, 1 = its end)
MIN_CYCLE_S = 0.3


def detect_cycles(samples: np.ndarray, sample_rate: int) -> list[tuple[float, float]]:
    """Respiratory cycles of a mono recording as ``(start_s, end_s)`` spans, sorted, contiguous, within it.

    Empty for silence, noise without a breathing rhythm, or a recording shorter
    than ``MIN_DURATION_S``.  See the module docstring for the method and its
    measured agreement with ICBHI annotations.
    """
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise ValueError(f"samples: expected a 1-D (mono) signal, got shape {samples.shape}")
    if sample_rate <= 0:
        raise ValueError(f"sample rate: expected a positive number of Hz, got {sample_rate}")
    duration = samples.size / sample_rate
    if duration < MIN_DURATION_S:
        return []
    if not np.isfinite(samples).all():
        raise ValueError("samples: expected finite values, got NaN or infinity")
    envelope = breath_envelope(samples, sample_rate)
    if envelope.size < 3 or np.percentile(envelope, 90) - np.percentile(envelope, 10) < MIN_RANGE_DB:
        return []
    period = breathing_period(envelope)
    minima, prominences = _minima(envelope)
    keep = prominences >= MIN_PROMINENCE_DB
    minima, prominences = minima[keep], prominences[keep]
    if minima.size == 0:
        return []
    span = np.percentile(envelope, 90) - np.percentile(envelope, 10)
    chosen = _rhythmic_chain(minima / FRAME_RATE, np.minimum(prominences / span, 1.0), period)
    frame_offset_s = N_FFT / 2 / ANALYSIS_RATE  # a frame's time is its window's centre
    times = sorted(_pause_point(envelope, int(m), period) / FRAME_RATE + frame_offset_s for m in minima[chosen])
    edges = [0.0]
    for boundary in times:
        if boundary - edges[-1] >= MIN_CYCLE_S and duration - boundary >= MIN_CYCLE_S:
            edges.append(float(boundary))
    edges.append(duration)
    return list(itertools.pairwise(edges))


def breath_envelope(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Loudness of breath sounds over time: dB above each bin's median, 100-1000 Hz, ``FRAME_RATE`` frames/s.

    Smoothed over ``SMOOTH_S``; frame ``i`` is centred at ``(i * HOP + N_FFT / 2) / ANALYSIS_RATE`` s.
    Level-independent: the signal times a gain gives the same envelope (down to a 1e-12 power floor).
    """
    signal = resample(samples, sample_rate, ANALYSIS_RATE)
    if signal.size < N_FFT:
        return np.zeros(0, dtype=np.float32)
    frequencies = np.fft.rfftfreq(N_FFT, 1 / ANALYSIS_RATE)
    band = (frequencies >= BAND_HZ[0]) & (frequencies <= BAND_HZ[1])
    frames = 1 + (signal.size - N_FFT) // HOP
    chunk = 3_000  # frames (60 s) per STFT call, so a long recording never holds its whole spectrogram
    level = np.concatenate(
        [
            10 * np.log10(power_spectrogram(signal[i * HOP : (i + chunk - 1) * HOP + N_FFT], N_FFT, HOP)[band] + 1e-12)
            for i in range(0, frames, chunk)
        ],
        axis=1,
    )
    level -= np.median(level, axis=1, keepdims=True)
    return _smooth(np.maximum(level, 0.0).mean(axis=0), SMOOTH_S * FRAME_RATE)


def breathing_period(envelope: np.ndarray) -> float:
    """The breathing period in seconds: the envelope's strongest autocorrelation at 1.5-8 s lags.

    The autocorrelation is the biased one (not divided by the overlap), which
    favours the shorter of two candidate lags with equal similarity, so a
    multiple of the period is not taken for the period.
    """
    centred = np.asarray(envelope, dtype=np.float64) - np.mean(envelope)
    size = centred.size
    spectrum = np.fft.rfft(centred, 2 * size)
    autocorrelation = np.fft.irfft(spectrum.real**2 + spectrum.imag**2, 2 * size)[:size]
    low = round(MIN_PERIOD_S * FRAME_RATE)
    high = min(round(MAX_PERIOD_S * FRAME_RATE), size - 1)
    if high <= low:
        return MIN_PERIOD_S
    return float((low + np.argmax(autocorrelation[low : high + 1])) / FRAME_RATE)


def _smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing with ``sigma`` in samples, edges reflected (as scipy.ndimage's default)."""
    radius = int(4 * sigma + 0.5)
    if radius < 1 or values.size == 0:
        return values.astype(np.float32)
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(values.astype(np.float64), radius, mode="symmetric" if values.size <= radius else "reflect")
    return np.convolve(padded, kernel, mode="valid").astype(np.float32)


def _minima(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the local minima of ``values`` (the middle of a flat bottom) and their prominences.

    The same minima and prominences as ``scipy.signal.find_peaks`` and
    ``peak_prominences`` give for the peaks of ``-values``: the prominence is
    the lower of the two highest points between the minimum and the nearest
    lower value (or the edge) on either side, minus the minimum.  The first and
    last frames are never minima.
    """
    values = np.asarray(values, dtype=np.float64)
    starts = np.flatnonzero(np.concatenate(([True], values[1:] != values[:-1])))  # runs of equal values
    runs = values[starts]
    inner = np.flatnonzero((runs[1:-1] < runs[:-2]) & (runs[1:-1] < runs[2:])) + 1
    if inner.size == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0)
    left = _reference_heights(runs, inner)
    right = _reference_heights(runs[::-1], (runs.size - 1 - inner)[::-1])[::-1]
    middles = (starts[inner] + starts[inner + 1] - 1) // 2
    return middles, np.minimum(left, right) - runs[inner]


def _reference_heights(values: np.ndarray, minima: np.ndarray) -> np.ndarray:
    """For each minimum (ascending indices), the highest value between it and the nearest lower value to its left.

    A monotonic stack over the minima, with the highest value between
    consecutive minima precomputed, so the cost is linear.
    """
    bounds = np.concatenate(([0], minima[:-1] + 1))
    between = np.maximum.reduceat(values[: minima[-1] + 1], bounds)  # values[previous minimum + 1 .. minimum]
    heights = np.empty(minima.size)
    stack: list[tuple[float, float]] = []  # (minimum, highest value since the stack entry below it)
    for i, index in enumerate(minima):
        value, height = values[index], between[i]
        while stack and stack[-1][0] >= value:
            height = max(height, stack.pop()[1])
        heights[i] = height
        stack.append((value, height))
    return heights


def _rhythmic_chain(times: np.ndarray, scores: np.ndarray, period: float) -> np.ndarray:
    """Indices of the candidate pauses on the best-scoring chain spaced about one ``period`` apart.

    Dynamic programming over the candidates in time order: a chain's value is the
    sum of its scores minus ``RHYTHM_WEIGHT * log(gap / period) ** 2`` per gap; a
    chain may start anywhere and ends at the best candidate within the last
    1.5 periods.
    """
    total = scores.astype(np.float64)
    previous = np.full(times.size, -1, dtype=np.intp)
    for i in range(times.size):
        first = np.searchsorted(times, times[i] - GAP_PERIODS[1] * period, side="left")
        last = np.searchsorted(times, times[i] - GAP_PERIODS[0] * period, side="right")
        if last <= first:
            continue
        gaps = times[i] - times[first:last]
        values = total[first:last] - RHYTHM_WEIGHT * np.log(gaps / period) ** 2
        best = int(np.argmax(values))
        if values[best] > 0:
            total[i] += values[best]
            previous[i] = first + best
    tail = np.flatnonzero(times >= times[-1] - 1.5 * period)
    node = int(tail[np.argmax(total[tail])])
    chain = []
    while node >= 0:
        chain.append(node)
        node = int(previous[node])
    return np.array(chain[::-1], dtype=np.intp)


def _pause_point(envelope: np.ndarray, minimum: int, period: float) -> float:
    """The boundary (in frames) inside the pause around ``minimum``, ``PAUSE_POSITION`` of the way through it."""
    reach = max(1, int(0.5 * period * FRAME_RATE))
    low, high = max(0, minimum - 2 * reach), min(envelope.size, minimum + 2 * reach + 1)
    nearby = envelope[max(0, minimum - reach) : minimum + reach + 1]
    level = envelope[minimum] + PAUSE_LEVEL * (nearby.max() - envelope[minimum])
    loud = envelope >= level
    after = np.flatnonzero(loud[minimum:high])
    before = np.flatnonzero(loud[low : minimum + 1])
    end = minimum + after[0] if after.size else high - 1
    start = low + before[-1] if before.size else low
    return start + PAUSE_POSITION * (end - start)
