"""Reading lesion photos: every pixel format, orientation, size limits and damaged files."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medview.errors import InputError
from medview.io.photo import MAX_SIDE, read_photo, split_photo_paths, thumbnail

ISIC = Path("skin") / "isic_uda1_250px"


def stamp(height: int = 60, width: int = 90) -> np.ndarray:
    """An RGB image with a white block in the top-left corner only, to see rotations."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[:10, :20] = 255
    return rgb


def test_real_isic_photo(shared_data: Path) -> None:
    photo = read_photo(shared_data / ISIC / "ISIC_0000000.jpg")
    assert photo.rgb.dtype == np.uint8
    assert photo.rgb.ndim == 3
    assert photo.rgb.shape[2] == 3
    assert photo.rgb.shape[:2] == (photo.original_size[1], photo.original_size[0])
    assert photo.rgb.std() > 5  # a real picture, not a blank


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.fromarray(stamp())
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "phone.jpg"
    image.save(path, quality=95, exif=exif)
    rgb = read_photo(path).rgb
    assert rgb.shape[:2] == (90, 60)  # portrait now
    # the white block moved from the top-left to the top-right corner
    assert rgb[:20, -10:].mean() > 200
    assert rgb[:20, :10].mean() < 50


@pytest.mark.parametrize(
    ("mode", "make"),
    [
        ("L", lambda: np.tile(np.arange(0, 250, 5, dtype=np.uint8), (40, 1))),
        ("RGBA", lambda: np.dstack([stamp(40, 50), np.full((40, 50), 255, np.uint8)])),
        ("P", None),
        ("CMYK", None),
    ],
)
def test_any_pixel_format_becomes_rgb(tmp_path: Path, mode: str, make: object) -> None:
    if mode == "P":
        image = Image.fromarray(stamp(40, 50)).convert("P")
    elif mode == "CMYK":
        image = Image.new("CMYK", (50, 40), (255, 0, 0, 0))  # pure cyan ink
    else:
        image = Image.fromarray(make())  # type: ignore[operator]
    path = tmp_path / f"photo_{mode}.{'jpg' if mode == 'CMYK' else 'png'}"
    image.save(path)
    rgb = read_photo(path).rgb
    assert rgb.shape == (40, 50, 3)
    assert rgb.dtype == np.uint8
    if mode == "L":
        assert np.array_equal(rgb[..., 0], rgb[..., 2])  # grey stays grey
    if mode == "CMYK":
        assert rgb[..., 0].mean() < 40
        assert rgb[..., 1].mean() > 200
        assert rgb[..., 2].mean() > 200


def test_sixteen_bit_grey_is_scaled_by_its_own_range(tmp_path: Path) -> None:
    values = np.tile(np.linspace(1000, 4000, 64).astype(np.uint16), (32, 1))
    path = tmp_path / "grey16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    rgb = read_photo(path).rgb
    assert rgb[..., 0].min() == 0
    assert rgb[..., 0].max() == 255


def test_heic_phone_photo(tmp_path: Path) -> None:
    path = tmp_path / "lesion.heic"
    Image.fromarray(stamp(64, 96)).save(path, quality=95)
    rgb = read_photo(path).rgb
    assert rgb.shape == (64, 96, 3)
    assert rgb[:8, :16].mean() > 180
    assert rgb[20:, 40:].mean() < 40


def _bilevel_png(path: Path, width: int, height: int) -> None:
    """A 1-bit PNG written row by row, so making a 400-megapixel test file needs no 400 MB."""
    row = b"\x00" + b"\x55" * ((width + 7) // 8)  # filter byte + alternating pixels
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))


@pytest.mark.slow
def test_20000_square_photo_is_downscaled_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    _bilevel_png(path, 20_000, 20_000)
    # in a fresh process, peak resident memory from VmHWM (of this process's own memory map; getrusage's
    # ru_maxrss would carry over the forking test runner's peak across exec)
    script = (
        "import json, re; from medview.io.photo import read_photo; "
        f"p = read_photo({str(path)!r}); "
        "peak = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)); "
        "print(json.dumps([p.rgb.shape, p.original_size, peak]))"
    )
    shape, original, peak_kib = json.loads(subprocess.check_output([sys.executable, "-c", script], timeout=120))
    assert shape == [MAX_SIDE, MAX_SIDE, 3]
    assert original == [20_000, 20_000]
    assert peak_kib < 1024 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB reading a 400-megapixel photo"


def test_larger_than_the_ceiling_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    _bilevel_png(path, 30_000, 30_000)
    with pytest.raises(InputError, match=r"bomb\.png.*too large"):
        read_photo(path)


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("notes.jpg", b"this is a text file, not a photo\n", "not an image"),
        ("empty.png", b"", "not an image"),
    ],
)
def test_not_an_image(tmp_path: Path, name: str, content: bytes, expected: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=expected) as caught:
        read_photo(path)
    assert name in str(caught.value)


def test_one_pixel_image_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (200, 100, 50)).save(path)
    with pytest.raises(InputError, match=r"dot\.png.*1x1 pixels"):
        read_photo(path)


def test_truncated_jpeg_is_refused_by_name(shared_data: Path, tmp_path: Path) -> None:
    data = (shared_data / ISIC / "ISIC_0000001.jpg").read_bytes()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match=r"truncated\.jpg.*damaged"):
        read_photo(path)


def test_jpeg_with_damaged_scan_data_decodes_as_libjpeg_conceals_it(shared_data: Path, tmp_path: Path) -> None:
    """Bit errors inside the entropy-coded data are concealed by libjpeg (as every viewer shows such a file):
    the photo opens at its full size instead of being refused."""
    data = (shared_data / ISIC / "ISIC_0000001.jpg").read_bytes()
    scan = data.index(b"\xff\xda") + 200
    noise = np.random.default_rng(0).integers(0, 0xFF, 512, dtype=np.uint8).tobytes()  # no 0xFF: no markers
    path = tmp_path / "garbled.jpg"
    path.write_bytes(data[:scan] + noise + data[scan + 512 :])
    original = read_photo(shared_data / ISIC / "ISIC_0000001.jpg").rgb
    damaged = read_photo(path).rgb
    assert damaged.shape == original.shape
    assert not np.array_equal(damaged, original)


def test_split_photo_paths(shared_data: Path, sample_series_dir: Path, tmp_path: Path) -> None:
    isic = shared_data / ISIC
    photos, rest = split_photo_paths([isic, sample_series_dir, tmp_path / "scan.dcm", isic / "ISIC_0000002.jpg"])
    assert len(photos) == 351
    assert photos[0].name == "ISIC_0000000.jpg"
    assert rest == [sample_series_dir, tmp_path / "scan.dcm"]
    # a DICOM folder holding a JPEG key image is still a DICOM folder
    (tmp_path / "key.jpg").write_bytes(b"")
    (tmp_path / "IM0001").write_bytes(b"")
    assert split_photo_paths([tmp_path]) == ([], [tmp_path])


def test_thumbnail_keeps_aspect() -> None:
    small = thumbnail(stamp(300, 600), 96)
    assert small.shape == (48, 96, 3)


def test_a_png_with_an_empty_profile_chunk_after_its_image_data_is_refused_by_name(tmp_path: Path) -> None:
    """Found by fuzzing: Pillow's iCCP reader raised IndexError on an empty profile chunk after the image data."""
    import io
    import struct
    import zlib

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 100, 50)).save(buffer, format="PNG")
    data = buffer.getvalue()
    empty_profile = struct.pack(">I", 0) + b"iCCP" + struct.pack(">I", zlib.crc32(b"iCCP"))
    end = data.rindex(b"IEND") - 4
    path = tmp_path / "damaged.png"
    path.write_bytes(data[:end] + empty_profile + data[end:])

    with pytest.raises(InputError, match=r"damaged\.png"):
        read_photo(path)
