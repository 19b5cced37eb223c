"""WaveformSummary: what the lung sound waveform draws at each zoom."""

from __future__ import annotations

import numpy as np
import pytest

from medview.preprocess.waveform import WaveformSummary

RATE = 4000


@pytest.fixture(scope="module")
def signal() -> np.ndarray:
    return np.random.default_rng(3).standard_normal(600 * RATE).astype(np.float32)  # 10 minutes


def test_zoomed_in_it_is_every_sample_with_its_time(signal: np.ndarray) -> None:
    summary = WaveformSummary(signal, RATE)
    times, values = summary.curve(12.0, 12.1, pixels=800)  # 400 samples on 800 pixels
    first = int(np.argmin(np.abs(times - 12.0)))
    assert times[first] == pytest.approx(12.0)
    np.testing.assert_array_equal(values, signal[np.rint(times * RATE).astype(int)])
    assert times[0] < 12.0 < 12.1 < times[-1]  # the line reaches both edges


@pytest.mark.parametrize(("start", "end"), [(0.0, 600.0), (100.0, 160.0), (100.0, 101.0)])
def test_zoomed_out_each_pixel_spans_the_min_and_max_of_its_samples(
    signal: np.ndarray, start: float, end: float
) -> None:
    pixels = 500
    times, values = WaveformSummary(signal, RATE).curve(start, end, pixels)
    assert times.size == values.size == 2 * pixels
    lows, highs = values[0::2], values[1::2]
    assert (lows <= highs).all()
    span = signal[int(start * RATE) : int(end * RATE)]
    # the envelope holds the span's extremes, and nothing from further than one block outside it
    widened = signal[max(0, int(start * RATE) - 256) : int(end * RATE) + 256]
    assert widened.min() <= lows.min() <= span.min()
    assert span.max() <= highs.max() <= widened.max()
    centre = pixels // 2
    pixel = signal[
        int((start + (end - start) * centre / pixels) * RATE) : int(
            (start + (end - start) * (centre + 1) / pixels) * RATE
        )
    ]
    inner = pixel[256:-256] if pixel.size >= 4 * 256 else pixel  # from the block summary: within a block
    assert lows[centre] <= inner.min()
    assert highs[centre] >= inner.max()


def test_outside_the_recording_and_tiny_recordings_draw_nothing_or_everything() -> None:
    summary = WaveformSummary(np.array([0.5, -0.5, 0.25], np.float32), RATE)
    assert summary.curve(10.0, 11.0, 100)[0].size == 0
    np.testing.assert_array_equal(summary.curve(0.0, 1.0, 100)[1], [0.5, -0.5, 0.25])
