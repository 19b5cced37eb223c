"""Measurements on a displayed slice: distances and region statistics in mm.

Qt-free so the numbers can be tested without a screen; the views only pass
pixel coordinates and the pixel spacing of the plane they show.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np


def distance_mm(start_rc: tuple[float, float], end_rc: tuple[float, float], spacing_rc: tuple[float, float]) -> float:
    """Length of a segment given in (row, column) pixel coordinates."""
    d_row = (end_rc[0] - start_rc[0]) * spacing_rc[0]
    d_col = (end_rc[1] - start_rc[1]) * spacing_rc[1]
    return math.hypot(d_row, d_col)


@dataclass(frozen=True)
class RegionStats:
    """Statistics of the pixels inside a region of one slice."""

    mean: float
    std: float
    minimum: float
    maximum: float
    pixel_count: int
    area_mm2: float


def region_mask(
    shape_rc: tuple[int, int],
    top_left_rc: tuple[float, float],
    size_rc: tuple[float, float],
    shape: Literal["rectangle", "ellipse"],
) -> np.ndarray:
    """The pixels of an axis-aligned rectangle or ellipse (pixel units, corner and size as (row, column)):
    a pixel is inside when its centre is.  Empty for a region of no height or width."""
    rows = np.arange(shape_rc[0]) + 0.5
    cols = np.arange(shape_rc[1]) + 0.5
    (r0, c0), (height, width) = top_left_rc, size_rc
    if height <= 0 or width <= 0:
        return np.zeros(shape_rc, bool)
    if shape == "rectangle":
        return ((rows >= r0) & (rows < r0 + height))[:, None] & ((cols >= c0) & (cols < c0 + width))[None, :]
    row_term = ((rows[:, None] - (r0 + height / 2)) / (height / 2)) ** 2
    col_term = ((cols[None, :] - (c0 + width / 2)) / (width / 2)) ** 2
    return np.asarray(row_term + col_term <= 1.0)


def region_stats(
    image: np.ndarray,
    spacing_rc: tuple[float, float],
    top_left_rc: tuple[float, float],
    size_rc: tuple[float, float],
    shape: Literal["rectangle", "ellipse"],
) -> RegionStats | None:
    """Mean/SD/min/max and area of the pixels whose centres fall in an axis-aligned region.

    Coordinates are in pixels, the region's corner and size as (row, column).
    The area is the geometric area of the drawn shape (what a ruler would give),
    the statistics use the pixels whose centres lie inside it.  Returns ``None``
    when no pixel centre lies inside (a region smaller than a pixel).
    """
    height, width = size_rc
    if height <= 0 or width <= 0:
        return None
    inside = region_mask((image.shape[0], image.shape[1]), top_left_rc, size_rc, shape)
    area = height * width * spacing_rc[0] * spacing_rc[1]
    if shape == "ellipse":
        area *= math.pi / 4
    values = image[inside]
    if values.size == 0:
        return None
    values = values.astype(np.float64)
    return RegionStats(
        mean=float(values.mean()),
        std=float(values.std()),
        minimum=float(values.min()),
        maximum=float(values.max()),
        pixel_count=int(values.size),
        area_mm2=float(area),
    )
