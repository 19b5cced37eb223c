"""Real Kaggle kidney slices as CT in HU, for tests that need the kidney model to find a stone (no Qt here)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

#: real stone slices of ../shared/data/kidney_ct_kaggle that the shipped bundle calls stones, with non-empty maps;
#: both from its held-out test scans (1.4.0), so no test leans on a slice it was trained on
STONE_SLICES = {4: "Stone/Stone-1062.jpg", 9: "Stone/Stone-1085.jpg"}
KAGGLE_KIDNEY = Path("kidney_ct_kaggle")


def kaggle_slice_hu(path: Path, size: int, hu_window: tuple[float, float]) -> np.ndarray:
    """A Kaggle kidney slice (8-bit, windowed before export: pixel / 255 is the windowed image) back in HU
    through the bundle's window, its black surround as air (-1000 HU) so the body is found as on a real CT."""
    low, high = hu_window
    unit = cv2.resize(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), (size, size), interpolation=cv2.INTER_LINEAR)
    unit = unit.astype(np.float32) / 255.0
    return np.where(unit < 0.02, -1000.0, unit * (high - low) + low).astype(np.float32)
