"""Lesion photos: any image Pillow reads, as an upright 8-bit RGB array.

What the skin pipeline and its training both need from a photo file:
- EXIF orientation applied (a phone photo shows as it was taken);
- one pixel format: 8-bit RGB, whatever the file holds (palette, grey,
  grey + alpha, RGBA, CMYK, 16-bit grey);
- bounded memory: a very large photo is reduced while it is decoded (JPEG
  draft mode: 1/2 to 1/8 scale) and then, still in the file's own pixel
  format, resized so that its longer side is at most ``max_side`` (the
  networks take 224-256 pixels; the viewer needs no more than a screen's
  worth); only the small image is converted to RGB.  Pillow's
  decompression-bomb guard stays on with MedView's own ceiling
  (``MAX_PIXELS``, a 20,000 x 20,000 photo), so a file claiming more is
  refused instead of exhausting memory;
- HEIC/HEIF (phone photos) through pillow-heif's Pillow plugin.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from medview.errors import InputError

#: longest side kept after loading, in pixels
MAX_SIDE = 2048
#: the largest photo opened (20,000 x 20,000); Pillow's default guard (89 M pixels) would refuse such a photo
MAX_PIXELS = 20_000 * 20_000
#: file suffixes offered in file dialogs and picked from folders
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".heic", ".heif")
#: files that may sit beside photos in a photo folder (ISIC metadata, attribution) without making it something else
SIDECAR_SUFFIXES = (".json", ".csv", ".txt", ".md", ".xml")

pillow_heif.register_heif_opener()
# Pillow warns above this many pixels and refuses above twice as many; read_photo turns the warning into a refusal
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


@dataclass(frozen=True, eq=False)
class Photo:
    """An upright RGB photo (h, w, 3) uint8 and the size of the file's own pixel grid."""

    rgb: np.ndarray
    path: Path
    original_size: tuple[int, int]  # (width, height) as stored in the file, before orientation and downscaling


def read_photo(path: Path | str, *, max_side: int = MAX_SIDE) -> Photo:
    """Read ``path`` as an upright 8-bit RGB photo; ``InputError`` naming the file when it is not one."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                original_size = opened.size
                if opened.format == "JPEG":
                    opened.draft("RGB", (max_side, max_side))  # decode at 1/2, 1/4 or 1/8 scale when that is enough
                image: Image.Image = opened
                if image.mode.startswith("I;16"):
                    image = image.convert("I")  # Pillow cannot resize 16-bit grey as such
                image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)  # in place, EXIF kept
                image = _to_rgb(ImageOps.exif_transpose(image))
                rgb = np.asarray(image, dtype=np.uint8).copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise InputError(f"the image is too large to open safely ({error})", path=path) from error
    except MemoryError as error:  # a damaged chunk length or size asked for more memory than there is
        raise InputError("the image needs more memory than is available to open", path=path) from error
    except UnidentifiedImageError as error:
        raise InputError("not an image file MedView can read (JPEG, PNG, TIFF, BMP, WebP, HEIC)", path=path) from error
    # truncated or corrupt data surfaces as these; IndexError: Pillow's PNG chunk readers index past the end of a
    # damaged chunk after the image data (iCCP, found by bench.fuzz_loaders)
    except (OSError, ValueError, SyntaxError, IndexError) as error:
        raise InputError(f"the image data is damaged or unreadable ({error})", path=path) from error
    if min(rgb.shape[:2]) < 2:
        raise InputError(
            f"the image is {rgb.shape[1]}x{rgb.shape[0]} pixels, too small to be a lesion photo", path=path
        )
    return Photo(rgb=rgb, path=path, original_size=original_size)


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any Pillow mode; 16/32-bit grey is scaled by its own range, not clipped at 255."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float32)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) * 255 if high > low else np.zeros_like(values)
        return Image.fromarray(scaled.round().astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        background = Image.new("RGB", image.size, (255, 255, 255))  # transparent areas on white, not black
        rgba = image.convert("RGBA")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _photo_folder(folder: Path) -> list[Path]:
    """The photos of ``folder`` in name order, or [] when it holds anything else but sidecar files.

    Stops at the first file that is neither: this runs on the GUI thread when a folder is dropped, and a
    1,000-slice DICOM folder listed whole stalled the window ~140 ms.
    """
    found = []
    for file in folder.rglob("*"):
        if file.name.startswith(".") or not file.is_file():
            continue
        suffix = file.suffix.lower()
        if suffix in PHOTO_SUFFIXES:
            found.append(file)
        elif suffix not in SIDECAR_SUFFIXES:
            return []
    return sorted(found)


def split_photo_paths(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """Split dropped or chosen paths into photos and the rest (DICOM, volumes, audio).

    A photo file is one with a photo suffix; a folder counts as a photo folder
    when it holds photos and nothing else but sidecar files (metadata, notes),
    and its photos are listed in name order.  Anything else is left for the
    other readers, so a DICOM folder holding a JPEG key image still opens as DICOM.
    """
    photos: list[Path] = []
    rest: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = _photo_folder(path)
            if found:
                photos.extend(found)
            else:
                rest.append(path)
        elif path.suffix.lower() in PHOTO_SUFFIXES:
            photos.append(path)
        else:
            rest.append(path)
    return photos, rest


def thumbnail(rgb: np.ndarray, side: int) -> np.ndarray:
    """A copy of ``rgb`` whose longer side is at most ``side`` pixels (area-averaged), for galleries."""
    image = Image.fromarray(rgb)
    image.thumbnail((side, side), Image.Resampling.BOX)
    return np.asarray(image, dtype=np.uint8).copy()
