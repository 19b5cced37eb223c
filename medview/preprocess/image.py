"""Image preparation shared by the CT and photo pipelines and by training (numpy + OpenCV).

A model's input spec in its manifest says which of these apply (HU window,
size, channel normalisation); the pipeline and the training dataset call the
same functions, so inference sees what training saw.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def window_to_unit(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Clip CT values to the HU window ``(low, high)`` and scale them to [0, 1], float32."""
    low, high = window
    if not high > low:
        raise ValueError(f"HU window: expected low < high, got {window}")
    return ((np.clip(hu.astype(np.float32), low, high) - low) / (high - low)).astype(np.float32)


def resize_stack(images: np.ndarray, size: tuple[int, int], *, downsampling_area: bool = True) -> np.ndarray:
    """Resize each 2-D image of ``images`` (n, y, x[, c]) to ``size`` = (height, width).

    Area interpolation when shrinking (no aliasing of fine structure), linear when
    enlarging; float32 out.
    """
    height, width = size
    if images.shape[1:3] == (height, width):
        return images.astype(np.float32, copy=False)
    shrinking = images.shape[1] > height or images.shape[2] > width
    interpolation = cv2.INTER_AREA if shrinking and downsampling_area else cv2.INTER_LINEAR
    resized = [cv2.resize(image.astype(np.float32), (width, height), interpolation=interpolation) for image in images]
    return np.stack(resized).astype(np.float32, copy=False)


def resize_back(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of model-grid maps (n, h, w) back to the input grid ``shape`` = (y, x), float32."""
    return resize_stack(maps, shape, downsampling_area=False)


def minmax(image: np.ndarray) -> np.ndarray:
    """Scale an image to [0, 1] by its own minimum and maximum (paper 003); a flat image becomes zeros."""
    image = image.astype(np.float32)
    low, high = float(image.min()), float(image.max())
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


def normalise_channels(batch: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(n, c, h, w) in [0, 1] -> (x - mean) / std per channel, as the backbone's weights expect."""
    mean_array = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std_array = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return ((batch - mean_array) / std_array).astype(np.float32)


def grey_batch(unit: np.ndarray, size: tuple[int, int], mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Grey images (n, y, x) in [0, 1] -> (n, 3, *size) network inputs: resize, grey on 3 channels, mean/std.

    The kidney pipeline (windowed CT slices) and kidney training (windowed
    slices, or already-windowed 8-bit exports scaled by 1/255) both end here.
    """
    resized = resize_stack(unit, size)
    return normalise_channels(np.repeat(resized[:, None], 3, axis=1), mean, std)


def adjacent_slices(volume: np.ndarray, indices: Sequence[int], channels: int) -> np.ndarray:
    """(n, channels, y, x): each slice with its neighbours as channels (edges repeat), for 2.5-D inputs.

    ``channels`` = 1 is the slice alone; 3 is (z - 1, z, z + 1).
    """
    if channels % 2 != 1:
        raise ValueError(f"channels: expected an odd number (slice +- neighbours), got {channels}")
    half, last = channels // 2, volume.shape[0] - 1
    picks = [[min(max(i + offset, 0), last) for offset in range(-half, half + 1)] for i in indices]
    return volume[np.asarray(picks)]


#: The eight orientations of a photo that has no up or left (a dermoscopy photo): the square's symmetries.
#: Their names key the feature cache in training and a skin bundle's ``vote_views`` in its input spec.
PHOTO_VIEWS = ("photo", "hflip", "vflip", "hvflip", "rot90", "rot270", "transpose", "antitranspose")
MIRROR_VIEWS = PHOTO_VIEWS[:4]  # the photo and its three mirror images


def photo_view(rgb: np.ndarray, view: str) -> np.ndarray:
    """The photo (h, w, ...) in one of ``PHOTO_VIEWS``: mirrored, turned (``rot90``/``rot270`` counter-clockwise, as
    ``np.rot90``) or transposed across a diagonal.  A view of the array, not a copy."""
    turned = {
        "photo": lambda a: a,
        "hflip": lambda a: a[:, ::-1],
        "vflip": lambda a: a[::-1],
        "hvflip": lambda a: a[::-1, ::-1],
        "rot90": lambda a: np.rot90(a, 1),
        "rot270": lambda a: np.rot90(a, 3),
        "transpose": lambda a: a.swapaxes(0, 1),
        "antitranspose": lambda a: a[::-1, ::-1].swapaxes(0, 1),
    }
    if view not in turned:
        raise ValueError(f"unknown photo view {view!r}: one of {', '.join(PHOTO_VIEWS)}")
    return turned[view](rgb)


def photo_batch(rgb: np.ndarray, size: tuple[int, int], mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A photo (h, w, 3) of any dtype -> a (1, 3, *size) network input: resize, min-max, channel normalisation.

    Paper 003 min-max normalises the resized photo; the backbone's own mean/std
    follow, as its ImageNet weights expect.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"photo: expected an (height, width, 3) RGB array, got shape {rgb.shape}")
    resized = resize_stack(rgb[None].astype(np.float32), size)[0]
    return normalise_channels(minmax(resized).transpose(2, 0, 1)[None], mean, std)


def segmentation_inputs(
    voxels: np.ndarray,
    indices: Sequence[int],
    window: tuple[float, float],
    size: tuple[int, int],
    channels: int,
) -> np.ndarray:
    """(n, channels, *size) U-Net inputs of the listed axial slices: HU window to [0, 1], resized.

    The liver and lung segmentation pipelines and their training build every
    input here, so a bundle sees at inference exactly what it was trained on.
    """
    stack = adjacent_slices(voxels, indices, channels)
    count, _, height, width = stack.shape
    unit = window_to_unit(stack.reshape(count * channels, height, width), window)
    return resize_stack(unit, size).reshape(count, channels, *size)
