"""What a waveform view draws at any zoom: every sample when they fit, else a min/max per pixel.

A 30-minute recording at 44.1 kHz has 79 million samples; handing them (and
their times, 640 MB of float64) to the plot is neither needed nor affordable.
``WaveformSummary`` keeps the min and max of each block of samples once, and
``WaveformSummary.curve`` returns at most about two points per pixel for the
visible span: raw samples when zoomed in far enough to see them, otherwise the
min/max envelope read from the blocks (or from the samples, when the span is too
short for whole blocks), as audio editors draw it.
"""

from __future__ import annotations

import numpy as np

BLOCK = 256


class WaveformSummary:
    """Block-wise min/max of a mono signal, for drawing any span in time proportional to its pixel width."""

    def __init__(self, samples: np.ndarray, sample_rate: int, block: int = BLOCK) -> None:
        self.samples = np.asarray(samples, dtype=np.float32)
        self.sample_rate = int(sample_rate)
        self.block = block
        whole = self.samples.size // block * block
        blocks = self.samples[:whole].reshape(-1, block)
        self.block_min = blocks.min(axis=1) if blocks.size else np.zeros(0, np.float32)
        self.block_max = blocks.max(axis=1) if blocks.size else np.zeros(0, np.float32)

    def curve(self, start_s: float, end_s: float, pixels: int) -> tuple[np.ndarray, np.ndarray]:
        """Times (s) and values to draw for ``start_s``-``end_s`` on ``pixels`` pixels.

        Every sample of the span (plus one on each side, so the line reaches the
        edges) when there are at most two per pixel; otherwise a vertical stroke per
        pixel from the minimum to the maximum of the samples it covers.
        """
        pixels = max(1, int(pixels))
        first = max(0, int(np.floor(start_s * self.sample_rate)) - 1)
        last = min(self.samples.size, int(np.ceil(end_s * self.sample_rate)) + 2)
        count = last - first
        if count <= 0:
            return np.zeros(0), np.zeros(0, np.float32)
        if count <= 2 * pixels:
            return np.arange(first, last) / self.sample_rate, self.samples[first:last]
        edges = np.linspace(first, last, pixels + 1).astype(np.int64)
        per_pixel = count / pixels
        if per_pixel >= 4 * self.block:
            lows, highs = self._from_blocks(edges)
        else:
            lows = np.minimum.reduceat(self.samples[first:last], edges[:-1] - first)
            highs = np.maximum.reduceat(self.samples[first:last], edges[:-1] - first)
        times = np.repeat((edges[:-1] + edges[1:]) / 2 / self.sample_rate, 2)
        values = np.column_stack([lows, highs]).ravel()
        return times, values

    def _from_blocks(self, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel min/max from the block summary; a pixel's partial blocks at its edges are rounded to
        whole blocks, an error of less than a quarter of the pixel's span."""
        block_edges = np.clip(edges // self.block, 0, self.block_min.size)
        first, last = block_edges[0], max(block_edges[-1], block_edges[-2] + 1)
        starts = block_edges[:-1] - first
        lows = np.minimum.reduceat(self.block_min[first:last], starts)
        highs = np.maximum.reduceat(self.block_max[first:last], starts)
        return lows, highs
