"""Fuzz inputs for every loader a user can reach, and how each loader is called, as the app calls it.

Shared by the long run (``python -m bench.fuzz_loaders``) and its fast subset in
``tests/unit/test_fuzz_loaders.py``.  An input is a ``Spec``: the loader's name, a
seed and, for the text formats, a document drawn by a Hypothesis strategy.
``build_case`` turns a spec into files (deterministically: a saved failure can be
rebuilt from its spec), starting from the real files in ../shared/data and
resources/ and mutating them:

- generic byte mutations (bit flips, interesting integers, truncation,
  insertions, deletions, duplicated chunks, splicing two seeds);
- structure-aware ones where they are cheap: DICOM element lengths and values
  (Rows, Columns, NumberOfFrames, transfer syntax...), NIfTI header fields,
  NRRD/MetaImage header lines, WAV chunk sizes and format fields, PNG chunk
  lengths and IHDR fields (CRC fixed, so the decoder gets past it), JPEG frame
  sizes and EXIF orientation, zip header fields (sizes, methods, flags) and
  member names, manifest JSON values, types, keys and nesting;
- Hypothesis strategies for the text formats (ICBHI annotation rows, manifest
  documents shaped like the schema with any JSON in any field).

``run_target`` calls the loader on the written files and returns the verdict:
accepted, rejected cleanly (a ``MedviewError`` naming the file) or crashed.  Hangs
and memory caps are the runner's business (``bench.fuzz_loaders``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import struct
import traceback
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from medview.io.sources import VOLUME_SUFFIXES

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MEDVIEW_SHARED_DATA", REPO.parent / "shared" / "data"))
RESOURCES = REPO / "resources"


# --------------------------------------------------------------------------- specs and cases


@dataclass(frozen=True)
class Spec:
    """One fuzz input before it is built: which loader, a seed, and a Hypothesis-drawn document if any."""

    loader: str
    seed: int
    payload: Any = None


@dataclass
class Case:
    """The files of one input (paths relative to the case folder), the path handed to the loader, and options."""

    files: dict[str, bytes]
    target: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """What one input did: ``accepted``, ``rejected``, ``crashed``, ``hung`` or ``generator`` (a bug here)."""

    status: str
    message: str = ""
    details: str = ""


@dataclass
class Corpus:
    """Seed files: the real ones (read, never written) and those derived from them in ``root``."""

    root: Path
    dicom_files: list[Path]
    dicom_series: list[list[Path]]
    dicomdir_sets: list[Path]
    volumes: list[Path]
    label_maps: list[tuple[Path, str]]  # mask file, reference volume key
    audio: list[Path]
    annotations: list[Path]
    photos: list[Path]
    manifests: list[Path]
    foreign: list[Path]  # files of other formats, to hand a loader something else under its suffix


@lru_cache(maxsize=256)
def _read(path: Path) -> bytes:
    return path.read_bytes()


def _token(rng: random.Random) -> str:
    return f"{rng.getrandbits(32):08x}"


# --------------------------------------------------------------------------- corpus


def _first(folder: Path, pattern: str, count: int) -> list[Path]:
    return sorted(folder.glob(pattern))[:count]


def prepare_corpus(root: Path) -> Corpus:
    """Collect the real seed files and derive the formats the sample data lacks (FLAC, OGG, MetaImage,
    PNG/TIFF/BMP/WebP variants, a DICOMDIR) into ``root``.  Needs ../shared/data."""
    if not SHARED_DATA.is_dir():
        raise FileNotFoundError(f"real sample data not found at {SHARED_DATA} (set MEDVIEW_SHARED_DATA)")
    root.mkdir(parents=True, exist_ok=True)
    dicom = SHARED_DATA / "dicom_ct"
    liver = SHARED_DATA / "liver_ct"
    totalseg_series = _first(dicom / "totalsegmentator_example_ct_dicom", "CT.*", 20)
    covid_series = _first(SHARED_DATA / "covid_ct" / "COVID-CT-MD" / "COVID-19" / "P001", "*.dcm", 3)
    dcmqi_series = _first(dicom / "dcmqi_ct-3slice", "*.dcm", 3)
    dicom_files = [
        dicom / "pydicom-3.0.2-testfiles" / "CT_small.dcm",
        dicom / "pydicom-3.0.2-testfiles" / "693_J2KI.dcm",
        dicom / "pydicom-data" / "693_J2KR.dcm",
        dicom / "pydicom-data" / "693_UNCR.dcm",
        dicom / "pydicom-data" / "eCT_Supplemental.dcm",
        dcmqi_series[0],
        totalseg_series[0],
        covid_series[0],
        liver / "dcmqi" / "liver.dcm",  # a SEG: not an image series
    ]
    dicom_series = [
        dcmqi_series,
        totalseg_series[:4],
        covid_series,
        [dicom / "pydicom-3.0.2-testfiles" / "CT_small.dcm", dicom / "pydicom-data" / "eCT_Supplemental.dcm"],
    ]
    audio_dir = SHARED_DATA / "lung_sound" / "icbhi_sample"
    photos = [
        *_first(SHARED_DATA / "skin" / "isic_uda1_250px", "ISIC_*.jpg", 3),
        *_first(SHARED_DATA / "kidney_ct" / "Stone", "*.jpg", 1),
        SHARED_DATA / "covid_ct" / "COVIDNet-CT_ex-covid-ct.png",
    ]
    derived_photos = _derive_photos(photos[0], root / "photos")
    volumes = [
        liver / "totalsegmentator" / "example_ct_sm.nii.gz",
        liver / "totalsegmentator" / "example_seg_roi_subset.nii.gz",
        liver / "dcmqi" / "liver_seg.nrrd",
        liver / "dcmqi" / "liver_spine_seg.nrrd",
        *_derive_volumes(liver / "totalsegmentator" / "example_seg_fast" / "liver.nii.gz", root / "volumes"),
    ]
    return Corpus(
        root=root,
        dicom_files=dicom_files,
        dicom_series=dicom_series,
        dicomdir_sets=[_derive_dicomdir(dcmqi_series, root / "dicomdir")],
        volumes=volumes,
        label_maps=[
            (liver / "dcmqi" / "liver_seg.nrrd", "dcmqi"),
            (liver / "dcmqi" / "liver_spine_seg.nrrd", "dcmqi"),
            (liver / "dcmqi" / "liver.dcm", "dcmqi"),
            (liver / "totalsegmentator" / "example_seg.nii.gz", "ts_sm"),
            (liver / "totalsegmentator" / "example_seg_fast" / "liver.nii.gz", "ts_sm"),
        ],
        audio=[
            audio_dir / "104_1b1_Al_sc_Litt3200.wav",
            audio_dir / "104_1b1_Lr_sc_Litt3200.wav",
            audio_dir / "102_1b1_Ar_sc_Meditron.wav",
            *_derive_audio(audio_dir / "104_1b1_Lr_sc_Litt3200.wav", root / "audio"),
        ],
        annotations=[
            *_first(audio_dir, "*.txt", 4),
            *_first(SHARED_DATA / "lung_sound" / "icbhi_annotations", "*.txt", 4),
        ],
        photos=photos + derived_photos,
        manifests=sorted(RESOURCES.glob("models/*/manifest.json")),
        foreign=[
            photos[0],
            photos[-1],
            audio_dir / "104_1b1_Lr_sc_Litt3200.txt",
            liver / "totalsegmentator" / "example_seg_roi_subset.nii.gz",
            liver / "dcmqi" / "liver_seg.nrrd",
            RESOURCES / "models" / "covid-demo" / "manifest.json",
            dicom / "pydicom-3.0.2-testfiles" / "CT_small.dcm",
        ],
    )


def _derive_photos(source: Path, folder: Path) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    image = Image.open(source).convert("RGB").resize((64, 48))
    made = []

    def save(name: str, picture: Image.Image, **options: Any) -> None:
        path = folder / name
        picture.save(path, **options)
        made.append(path)

    save("rgba.png", image.convert("RGBA"))
    save("grey16.png", image.convert("L").point(lambda v: v * 200).convert("I;16"))
    palette = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    save("palette_transparent.png", palette, transparency=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotated 90 degrees
    save("exif_rotated.jpg", image, exif=exif.tobytes(), quality=80)
    save("cmyk.jpg", image.convert("CMYK"), quality=80)
    save("progressive.jpg", image, progressive=True, quality=70)
    save("photo.tif", image, compression="tiff_deflate")
    save("photo.bmp", image)
    save("photo.webp", image, quality=70)
    save("grey.gif", image.convert("L"))
    return made


def _derive_volumes(source: Path, folder: Path) -> list[Path]:
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.ReadImage(str(source))
    for key in image.GetMetaDataKeys():  # NIfTI fields MetaImage cannot store: ITK warns about each on stderr
        image.EraseMetaData(key)
    made = []
    for name, compress in (("mask.mha", False), ("mask_z.mha", True), ("mask.nii", False), ("mask.nrrd", False)):
        path = folder / name
        sitk.WriteImage(image, str(path), compress)
        made.append(path)
    detached = folder / "mask.nhdr"  # NRRD header + separate raw data file
    sitk.WriteImage(image, str(detached), False)
    made.append(detached)
    return made


def _derive_audio(source: Path, folder: Path) -> list[Path]:
    import numpy as np
    import soundfile

    folder.mkdir(parents=True, exist_ok=True)
    samples, rate = soundfile.read(source, dtype="float32")
    samples = samples[: rate * 2]
    made = []
    for name, data, subtype in (
        ("short.flac", samples, "PCM_16"),
        ("short.ogg", samples, "VORBIS"),
        ("stereo_float.wav", np.stack([samples, -samples], axis=1), "FLOAT"),
        ("pcm24.wav", samples, "PCM_24"),
    ):
        path = folder / name
        soundfile.write(path, data, rate, subtype=subtype)
        made.append(path)
    return made


def _derive_dicomdir(series: list[Path], folder: Path) -> Path:
    """A DICOMDIR file set (pydicom writes it) holding the dcmqi 3-slice series."""
    import pydicom
    from pydicom.fileset import FileSet

    if folder.exists():
        shutil.rmtree(folder)
    file_set = FileSet()
    for path in series:
        file_set.add(pydicom.dcmread(path))
    file_set.write(folder)
    return folder


# --------------------------------------------------------------------------- generic byte mutations

INTERESTING_8 = (0x00, 0x01, 0x7F, 0x80, 0xFF)
INTERESTING_16 = (0, 1, 2, 3, 255, 256, 511, 512, 1024, 4096, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF)
INTERESTING_32 = (0, 1, 2, 0xFF, 0x100, 0xFFFF, 0x10000, 1 << 24, 0x7FFFFFFE, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE,
                  0xFFFFFFFF)  # fmt: skip


def _position(rng: random.Random, size: int) -> int:
    """A byte offset, half the time inside the first 2 KiB where most headers are."""
    if size <= 0:
        return 0
    return rng.randrange(min(size, 2048)) if rng.random() < 0.5 else rng.randrange(size)


def _interesting(rng: random.Random, width: int) -> int:
    table = {1: INTERESTING_8, 2: INTERESTING_16, 4: INTERESTING_32}[width]
    value = rng.choice(table)
    return value if rng.random() < 0.8 else rng.getrandbits(8 * width)


def _flip_bits(rng: random.Random, data: bytearray, _other: bytes | None) -> bytearray:
    for _ in range(rng.randint(1, 8)):
        if data:
            data[_position(rng, len(data))] ^= 1 << rng.randrange(8)
    return data


def _set_interesting(rng: random.Random, data: bytearray, _other: bytes | None) -> bytearray:
    width = rng.choice((1, 2, 4))
    if len(data) < width:
        return data
    at = min(_position(rng, len(data)), len(data) - width)
    data[at : at + width] = _interesting(rng, width).to_bytes(width, rng.choice(("little", "big")))
    return data


def _truncate(rng: random.Random, data: bytearray, _other: bytes | None) -> bytearray:
    return data[: _position(rng, len(data))]


def _insert(rng: random.Random, data: bytearray, _other: bytes | None) -> bytearray:
    at = _position(rng, len(data) + 1)
    chunk = (
        rng.randbytes(rng.randint(1, 64))
        if rng.random() < 0.5
        else bytes([rng.choice(INTERESTING_8)]) * (rng.choice((1, 2, 4, 16, 255, 4096)))
    )
    return data[:at] + chunk + data[at:]


def _delete(rng: random.Random, data: bytearray, _other: bytes | None) -> bytearray:
    if not data:
        return data
    at = _position(rng, len(data))
    return data[:at] + data[at + rng.randint(1, min(4096, len(data) - at)) :]


def _duplicate(rng: random.Random, data: bytearray, _other: bytes | None) -> bytearray:
    if not data:
        return data
    start = _position(rng, len(data))
    chunk = data[start : start + rng.randint(1, 65536)]
    at = _position(rng, len(data) + 1)
    return data[:at] + chunk + data[at:]


def _overwrite_random(rng: random.Random, data: bytearray, _other: bytes | None) -> bytearray:
    if not data:
        return data
    at = _position(rng, len(data))
    span = min(rng.randint(1, 256), len(data) - at)
    data[at : at + span] = rng.randbytes(span)
    return data


def _splice(rng: random.Random, data: bytearray, other: bytes | None) -> bytearray:
    if not other:
        return data
    return data[: _position(rng, len(data))] + other[_position(rng, len(other)) :]


BYTE_OPERATIONS: tuple[Callable[[random.Random, bytearray, bytes | None], bytearray], ...] = (
    _flip_bits,
    _flip_bits,
    _set_interesting,
    _set_interesting,
    _truncate,
    _insert,
    _delete,
    _duplicate,
    _overwrite_random,
    _splice,
)


def mutate_bytes(rng: random.Random, data: bytes, other: bytes | None = None, max_operations: int = 4) -> bytes:
    """1..``max_operations`` generic mutations of ``data`` (``other`` is spliced in by the splice operation)."""
    buffer = bytearray(data)
    for _ in range(rng.randint(1, max_operations)):
        buffer = rng.choice(BYTE_OPERATIONS)(rng, buffer, other)
    return bytes(buffer)


# --------------------------------------------------------------------------- DICOM

_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}
_VRS = _LONG_VRS | {
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN", b"SH",
    b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
}  # fmt: skip
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010


@dataclass(frozen=True)
class RawElement:
    """Where one element sits in the raw bytes of a DICOM file."""

    tag: int
    offset: int  # of the tag
    length_offset: int
    length_size: int  # 2 or 4
    value_offset: int
    length: int
    explicit: bool
    depth: int


def dicom_elements(data: bytes, limit: int = 4000) -> list[RawElement]:
    """A best-effort flat walk over the elements of a little-endian DICOM file, into sequences and items.

    Good enough to find length fields and values to corrupt; it stops where the
    bytes stop making sense (which, in a mutated file, is part of the point).
    """
    position = 132 if data[128:132] == b"DICM" else 0
    elements: list[RawElement] = []
    ends: list[int | None] = []  # end offset of each open container, None for undefined length
    in_fragments = False
    while position + 8 <= len(data) and len(elements) < limit:
        while ends and ends[-1] is not None and position >= ends[-1]:  # type: ignore[operator]
            ends.pop()
        group, number = struct.unpack_from("<HH", data, position)
        tag = group << 16 | number
        vr = data[position + 4 : position + 6]
        if tag in (_ITEM, _ITEM_END, _SEQUENCE_END):
            length = struct.unpack_from("<I", data, position + 4)[0]
            element = RawElement(tag, position, position + 4, 4, position + 8, length, False, len(ends))
            elements.append(element)
            if tag == _SEQUENCE_END:
                if ends:
                    ends.pop()
                in_fragments = False
                position += 8
            elif tag == _ITEM_END:
                if ends and ends[-1] is None:
                    ends.pop()
                position += 8
            elif in_fragments and length != 0xFFFFFFFF:
                position += 8 + length
            else:
                ends.append(None if length == 0xFFFFFFFF else position + 8 + length)
                position += 8
            continue
        explicit = vr in _VRS
        if explicit and vr in _LONG_VRS:
            length_offset, length_size, value_offset = position + 8, 4, position + 12
        elif explicit:
            length_offset, length_size, value_offset = position + 6, 2, position + 8
        else:
            length_offset, length_size, value_offset = position + 4, 4, position + 8
        if value_offset > len(data):
            break
        length = int.from_bytes(data[length_offset:value_offset], "little")
        elements.append(
            RawElement(tag, position, length_offset, length_size, value_offset, length, explicit, len(ends))
        )
        if length == 0xFFFFFFFF or (explicit and vr == b"SQ"):
            ends.append(None if length == 0xFFFFFFFF else value_offset + length)
            in_fragments = tag == _PIXEL_DATA
            position = value_offset
            continue
        if value_offset + length > len(data):
            break
        position = value_offset + length
    return elements


def _ds(rng: random.Random) -> str:
    return rng.choice(
        ("0", "1", "-1", "0.5", "2.5", "1e308", "-1e308", "1e-320", "nan", "NaN", "inf", "-inf", "", " ", "abc",
         "1\\2", "99999999999999999999", "+3", "0x10")
    )  # fmt: skip


def _dicom_value(rng: random.Random, kind: str, old: bytes) -> bytes:
    """A replacement value (raw bytes) for an element of the given kind."""
    if kind == "US":
        return struct.pack("<H", _interesting(rng, 2))
    if kind == "UL":
        return struct.pack("<I", _interesting(rng, 4))
    if kind == "IS":
        text = rng.choice(("0", "1", "-1", "2", "3", "100", "65535", "1000000", "2147483647", "99999999999", "",
                           " ", "abc", "1\\2", "+5", "1e3"))  # fmt: skip
    elif kind.startswith("DS") and kind[2:].isdigit():
        count = int(kind[2:]) + rng.choice((0, 0, 0, -1, 1))
        text = "\\".join(_ds(rng) if rng.random() < 0.4 else str(rng.uniform(-500, 500)) for _ in range(max(count, 0)))
    elif kind == "DS":
        text = _ds(rng)
    elif kind == "UI":
        text = rng.choice(("", "1.2.3", "1.2.840.10008.1.2", "9" * 64, "1..2", "\x00", "2.25.1"))
    elif kind == "SOP_CLASS":
        text = rng.choice(
            ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.66.4",
             "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.1.3.10", "", "1.2.3")
        )  # fmt: skip
    elif kind == "TRANSFER_SYNTAX":
        text = rng.choice(
            ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
             "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80",
             "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.5",
             "", "1.2.3.4")
        )  # fmt: skip
    elif kind == "PHOTOMETRIC":
        text = rng.choice(("MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR", "YBR_FULL", "YBR_FULL_422",
                           "YBR_RCT", "", "XYZ"))  # fmt: skip
    elif kind == "FILE_ID":
        text = rng.choice(("..\\..\\etc\\hostname", "/etc/hostname", "", "A" * 16, "PT000000\\..\\..\\x", "IM0\\"))
    elif kind == "PIXELS":
        choice = rng.randrange(4)
        if choice == 0:
            return old[: len(old) // 2]
        if choice == 1:
            return b""
        if choice == 2:
            return rng.randbytes(rng.choice((1, 2, 100, len(old) or 1)))
        return old + old
    else:
        text = rng.choice(("", "X", "CT", "MR", "ÄÖÜ", "A" * 300))
    raw = text.encode("latin-1", errors="replace")
    if len(raw) % 2 and rng.random() < 0.8:
        raw += b"\x00" if kind in ("UI", "SOP_CLASS", "TRANSFER_SYNTAX") else b" "
    return raw


# tag -> kind of value _dicom_value makes for it
DICOM_VALUE_KINDS: dict[int, str] = {
    0x00280010: "US",  # Rows
    0x00280011: "US",  # Columns
    0x00280100: "US",  # BitsAllocated
    0x00280101: "US",  # BitsStored
    0x00280102: "US",  # HighBit
    0x00280103: "US",  # PixelRepresentation
    0x00280002: "US",  # SamplesPerPixel
    0x00280006: "US",  # PlanarConfiguration
    0x00280008: "IS",  # NumberOfFrames
    0x00280004: "PHOTOMETRIC",
    0x00280030: "DS2",  # PixelSpacing
    0x00200032: "DS3",  # ImagePositionPatient
    0x00200037: "DS6",  # ImageOrientationPatient
    0x00180050: "DS",  # SliceThickness
    0x00281050: "DS",  # WindowCenter
    0x00281051: "DS",  # WindowWidth
    0x00281052: "DS",  # RescaleIntercept
    0x00281053: "DS",  # RescaleSlope
    0x00200013: "IS",  # InstanceNumber
    0x00200011: "IS",  # SeriesNumber
    0x0020000E: "UI",  # SeriesInstanceUID
    0x0020000D: "UI",  # StudyInstanceUID
    0x00080018: "UI",  # SOPInstanceUID
    0x00200052: "UI",  # FrameOfReferenceUID
    0x00080016: "SOP_CLASS",
    0x00020002: "SOP_CLASS",
    0x00020010: "TRANSFER_SYNTAX",
    0x00080060: "CS",  # Modality
    0x00100010: "PN",  # PatientName
    0x00041400: "UL",  # DICOMDIR: offset of the next directory record
    0x00041410: "US",  # record in-use flag
    0x00041420: "UL",  # offset of the referenced lower-level record
    0x00041200: "UL",  # offset of the first root record
    0x00041202: "UL",  # offset of the last root record
    0x00041500: "FILE_ID",  # ReferencedFileID
    _PIXEL_DATA: "PIXELS",
}


def _replace_value(data: bytes, element: RawElement, value: bytes) -> bytes:
    length = (
        len(value).to_bytes(element.length_size, "little")
        if element.length_size == 4
        else (min(len(value), 0xFFFF).to_bytes(2, "little"))
    )
    return data[: element.length_offset] + length + value + data[element.value_offset + element.length :]


def _encode_element(tag: int, vr: bytes, value: bytes, explicit: bool) -> bytes:
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if not explicit:
        return head + struct.pack("<I", len(value)) + value
    if vr in _LONG_VRS:
        return head + vr + b"\x00\x00" + struct.pack("<I", len(value)) + value
    return head + vr + struct.pack("<H", len(value)) + value


def mutate_dicom_structure(rng: random.Random, data: bytes) -> bytes:
    """One structure-aware mutation: an element's length, value, removal, or an inserted element."""
    elements = dicom_elements(data)
    if not elements:
        return mutate_bytes(rng, data)
    operation = rng.random()
    defined = [e for e in elements if e.length != 0xFFFFFFFF and e.value_offset + e.length <= len(data)]
    if operation < 0.3:  # corrupt a length field
        element = rng.choice(elements)
        if element.length_size == 2:
            value = rng.choice((0, 1, element.length + 1, element.length - 1, 0xFFFF, _interesting(rng, 2))) & 0xFFFF
        else:
            value = (
                rng.choice(
                    (0, 1, element.length + 1, element.length - 1, element.length * 2, 0xFFFFFFFF, _interesting(rng, 4))
                )
                & 0xFFFFFFFF
            )
        at = element.length_offset
        return data[:at] + value.to_bytes(element.length_size, "little") + data[at + element.length_size :]
    known = [e for e in defined if e.tag in DICOM_VALUE_KINDS]
    if operation < 0.8 and known:  # a new value for an element the loaders read
        element = rng.choice(known)
        old = data[element.value_offset : element.value_offset + element.length]
        return _replace_value(data, element, _dicom_value(rng, DICOM_VALUE_KINDS[element.tag], old))
    top = [e for e in defined if e.depth == 0 and e.tag not in (_ITEM, _ITEM_END, _SEQUENCE_END)]
    if operation < 0.9 and top:  # remove an element
        element = rng.choice(top)
        return data[: element.offset] + data[element.value_offset + element.length :]
    rows = next((e for e in elements if e.tag == 0x00280010 and e.depth == 0), None)
    if rows is not None:  # insert NumberOfFrames, which turns a classic image into a "multi-frame" one
        frames = rng.choice((b"0 ", b"2 ", b"1000000 ", b"-1", b"65536 ", b"abc ", b"3 "))
        return data[: rows.offset] + _encode_element(0x00280008, b"IS", frames, rows.explicit) + data[rows.offset :]
    return mutate_bytes(rng, data)


def mutate_dicom(rng: random.Random, data: bytes, other: bytes | None = None) -> bytes:
    """1-3 mutations of a DICOM file, mostly structure-aware, some plain byte mutations."""
    for _ in range(rng.randint(1, 3)):
        data = mutate_dicom_structure(rng, data) if rng.random() < 0.65 else mutate_bytes(rng, data, other, 2)
    return data


# --------------------------------------------------------------------------- volumes (NIfTI, NRRD, MetaImage)

# NIfTI-1 header fields: (offset, struct format, interesting values)
_NAN, _INF = float("nan"), float("inf")
_NIFTI_FIELDS: tuple[tuple[int, str, tuple[Any, ...]], ...] = (
    (0, "<i", (348, 540, 0, -1, 1 << 30, 0x5C010000)),  # sizeof_hdr (the last: 348 byte-swapped)
    *((40 + 2 * i, "<h", (0, 1, -1, 2, 3, 4, 5, 7, 8, 255, 4096, 32767, -32768)) for i in range(8)),  # dim
    (70, "<h", (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2304, 7, 32767)),
    (72, "<h", (0, 1, 7, 8, 16, 24, 32, 64, 128, -1)),  # bitpix
    *((76 + 4 * i, "<f", (0.0, -1.0, _NAN, _INF, 1e30, 1e-30, 2.5, 1e-45)) for i in range(8)),  # pixdim
    (108, "<f", (0.0, 348.0, 351.0, 352.0, 1e9, -1.0, _NAN, 3.4e38)),  # vox_offset
    (112, "<f", (0.0, _NAN, _INF, -1.0, 1e30, 1e-30)),  # scl_slope
    (116, "<f", (_NAN, _INF, 1e30, -1e30)),  # scl_inter
    (252, "<h", (0, 1, 2, 3, 4, 5, -1, 32767)),  # qform_code
    (254, "<h", (0, 1, 2, 3, 4, 5, -1, 32767)),  # sform_code
    *((256 + 4 * i, "<f", (0.0, 1.0, 2.0, -2.0, _NAN, _INF, 1e30)) for i in range(6)),  # quatern_b..qoffset_z
    *((280 + 4 * i, "<f", (0.0, 1.0, -1.0, _NAN, _INF, 1e30, 1e-30)) for i in range(12)),  # srow_x/y/z
)
_NIFTI_MAGICS = (b"n+1\x00", b"ni1\x00", b"n+2\x00", b"\x00\x00\x00\x00")


def mutate_nifti_header(rng: random.Random, raw: bytes) -> bytes:
    """1-3 NIfTI-1 header fields set to interesting values (raw: the uncompressed file)."""
    data = bytearray(raw)
    if len(data) < 348:
        return bytes(data)
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.08:
            data[344:348] = rng.choice(_NIFTI_MAGICS)
            continue
        offset, form, values = rng.choice(_NIFTI_FIELDS)
        value = rng.choice(values)
        if rng.random() < 0.15:  # anything at all
            value = struct.unpack(form, rng.randbytes(struct.calcsize(form)))[0]
        struct.pack_into(form, data, offset, value)
    return bytes(data)


_TEXT_HEADER_VALUES: dict[str, tuple[str, ...]] = {
    # NRRD
    "type": ("uchar", "char", "short", "ushort", "int", "uint", "longlong", "ulonglong", "float", "double", "block",
             "int8", "unsigned long long", "garbage", ""),
    "dimension": ("0", "1", "2", "3", "4", "5", "16", "-1", "3.5", ""),
    "sizes": ("0 0 0", "1 1 1", "100000 100000 100000", "65535 65535 65535", "-1 10 10", "512 512", "512 512 3 2",
              "nan 1 1", "4294967296 1 1", "1e3 1 1", "2 2 2", "3000 3000 3000"),
    "encoding": ("raw", "gzip", "gz", "bzip2", "ascii", "text", "hex", "zstd", ""),
    "endian": ("little", "big", "middle", ""),
    "space": ("left-posterior-superior", "right-anterior-superior", "scanner-xyz", "3D-right-handed", "bogus", ""),
    "space directions": ("(1,0,0) (0,1,0) (0,0,1)", "(0,0,0) (0,0,0) (0,0,0)", "(nan,0,0) (0,1,0) (0,0,1)",
                         "none (1,0,0) (0,1,0)", "(1,0) (0,1)", "(1e308,0,0) (0,1e308,0) (0,0,1e308)",
                         "(1,0,0) (1,0,0) (1,0,0)", "garbage"),
    "space origin": ("(0,0,0)", "(nan,nan,nan)", "(1e308,0,0)", "(1,2)", ""),
    "kinds": ("domain domain domain", "RGB-color domain domain domain", "list domain domain", ""),
    "data file": ("missing.raw", "/dev/zero", "../outside.raw", "LIST", "%03d.raw 0 10 1", ""),
    "byte skip": ("0", "-1", "1000000000", "abc"),
    "line skip": ("0", "1000000", "-5"),
    # MetaImage
    "NDims": ("0", "1", "2", "3", "4", "10", "-1", ""),
    "DimSize": ("0 0 0", "1 1 1", "100000 100000 100000", "65535 65535 65535", "-1 10 10", "512 512",
                "3000 3000 3000", "2 2 2 2", "nan 1 1"),
    "ElementType": ("MET_UCHAR", "MET_CHAR", "MET_SHORT", "MET_USHORT", "MET_INT", "MET_UINT", "MET_FLOAT",
                    "MET_DOUBLE", "MET_LONG_LONG", "MET_OTHER", "MET_STRING", "garbage"),
    "ElementSpacing": ("1 1 1", "0 0 0", "-1 -1 -1", "nan nan nan", "1e308 1 1", "1 1"),
    "Offset": ("0 0 0", "nan 0 0", "1e308 0 0", "1 2"),
    "TransformMatrix": ("1 0 0 0 1 0 0 0 1", "0 0 0 0 0 0 0 0 0", "nan 0 0 0 1 0 0 0 1", "1 0 0"),
    "CompressedData": ("True", "False", "maybe"),
    "CompressedDataSize": ("0", "1", "100000000000", "-1"),
    "HeaderSize": ("0", "-1", "1000000000", "abc"),
    "ElementNumberOfChannels": ("0", "1", "3", "65535"),
    "ElementDataFile": ("LOCAL", "missing.raw", "/dev/zero", "LIST", "../outside.raw", ""),
    "BinaryDataByteOrderMSB": ("True", "False"),
    "ObjectType": ("Image", "Transform", "Mesh", ""),
}  # fmt: skip


def _split_text_header(data: bytes) -> tuple[list[str], bytes] | None:
    """The header lines and the data of an NRRD (blank line) or MetaImage (after ElementDataFile) file."""
    if data.startswith(b"NRRD"):
        head, separator, body = data.partition(b"\n\n")
        if not separator:
            return data.decode("latin-1").split("\n"), b""
        return head.decode("latin-1").split("\n"), body
    marker = data.find(b"ElementDataFile")
    if marker < 0:
        return None
    end = data.find(b"\n", marker)
    end = len(data) if end < 0 else end + 1
    return data[:end].decode("latin-1").rstrip("\n").split("\n"), data[end:]


def mutate_text_header(rng: random.Random, data: bytes) -> bytes:
    """1-3 edits of an NRRD/MetaImage header: a field's value, a removed, duplicated or added line."""
    split = _split_text_header(data)
    if split is None:
        return mutate_bytes(rng, data)
    lines, body = split
    nrrd = data.startswith(b"NRRD")
    separator = ": " if nrrd else " = "
    for _ in range(rng.randint(1, 3)):
        operation = rng.random()
        index = rng.randrange(len(lines)) if lines else 0
        if operation < 0.6 and lines:
            key = lines[index].split(":" if nrrd else "=", 1)[0].strip()
            options = _TEXT_HEADER_VALUES.get(key)
            if options and (nrrd or key != "ElementDataFile" or index == len(lines) - 1):
                lines[index] = f"{key}{separator}{rng.choice(options)}"
        elif operation < 0.7 and lines and index > 0:
            del lines[index]
        elif operation < 0.8 and lines:
            lines.insert(index, lines[index])
        elif operation < 0.9:
            keys = [k for k in _TEXT_HEADER_VALUES if (k[0].islower() if nrrd else k[0].isupper())]
            key = rng.choice(keys)
            lines.insert(max(1 if nrrd else 0, min(index, len(lines) - 1)), f"{key}{separator}{_pick(rng, key)}")
        elif nrrd and lines:
            lines[0] = rng.choice(("NRRD0001", "NRRD0004", "NRRD0009", "NRRD", "NRRD0005"))
    head = "\n".join(lines).encode("latin-1", errors="replace")
    return head + (b"\n\n" if nrrd else b"\n") + body


def _pick(rng: random.Random, key: str) -> str:
    return rng.choice(_TEXT_HEADER_VALUES[key])


def mutate_volume(rng: random.Random, path: Path, data: bytes, other: bytes | None) -> tuple[bytes, str]:
    """A mutated volume file and the suffix it naturally has."""
    name = path.name.lower()
    if name.endswith((".nii.gz", ".nii")):
        raw = gzip.decompress(data) if name.endswith(".gz") else data
        if rng.random() < 0.75:
            raw = mutate_nifti_header(rng, raw)
        if rng.random() < 0.4:
            raw = mutate_bytes(rng, raw, None, 2)
        if rng.random() < 0.5:
            compressed = gzip.compress(raw, compresslevel=1, mtime=0)
            return (mutate_bytes(rng, compressed, other, 2) if rng.random() < 0.15 else compressed), ".nii.gz"
        return raw, ".nii"
    suffix = next(s for s in (".nrrd", ".nhdr", ".mha", ".mhd") if name.endswith(s))
    if rng.random() < 0.75:
        data = mutate_text_header(rng, data)
    if rng.random() < 0.4:
        data = mutate_bytes(rng, data, other, 2)
    return data, suffix


# --------------------------------------------------------------------------- audio


def _riff_chunks(data: bytes) -> list[tuple[int, bytes, int]]:
    """(offset, id, size) of each chunk of a RIFF/WAVE file."""
    chunks = []
    position = 12
    while position + 8 <= len(data) and len(chunks) < 64:
        chunk_id, size = data[position : position + 4], struct.unpack_from("<I", data, position + 4)[0]
        chunks.append((position, chunk_id, size))
        position += 8 + size + (size & 1)
    return chunks


_FMT_FIELDS = (
    (8, "<H", (0, 1, 2, 3, 6, 7, 0x55, 0xFFFE, 0xFFFF)),  # format tag
    (10, "<H", (0, 1, 2, 3, 8, 255, 0xFFFF)),  # channels
    (12, "<I", (0, 1, 8, 4000, 44100, 0x7FFFFFFF, 0xFFFFFFFF)),  # sample rate
    (16, "<I", (0, 1, 0xFFFFFFFF)),  # byte rate
    (20, "<H", (0, 1, 2, 3, 4, 0xFFFF)),  # block align
    (22, "<H", (0, 1, 8, 12, 16, 20, 24, 32, 64, 0xFFFF)),  # bits per sample
)


def mutate_wav(rng: random.Random, data: bytes) -> bytes:
    """1-3 RIFF-aware mutations: chunk sizes, fmt fields, inserted or removed chunks."""
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        chunks = _riff_chunks(bytes(buffer))
        operation = rng.random()
        if operation < 0.15 and len(buffer) >= 8:
            struct.pack_into("<I", buffer, 4, _interesting(rng, 4))
        elif operation < 0.45 and chunks:
            offset, _, size = rng.choice(chunks)
            value = rng.choice((0, 1, size + 1, size - 1, size * 2, 0x7FFFFFFF, 0xFFFFFFFF, _interesting(rng, 4)))
            struct.pack_into("<I", buffer, offset + 4, value & 0xFFFFFFFF)
        elif operation < 0.8 and (fmt := next((c for c in chunks if c[1] == b"fmt "), None)):
            field_offset, form, values = rng.choice(_FMT_FIELDS)
            if fmt[0] + field_offset + struct.calcsize(form) <= len(buffer):
                struct.pack_into(form, buffer, fmt[0] + field_offset, rng.choice(values))
        elif operation < 0.9 and chunks:
            offset = rng.choice(chunks)[0]
            size = rng.choice((0, 4, 0x7FFFFFF0, 0xFFFFFFFF))
            payload = rng.randbytes(min(size, 16))
            buffer[offset:offset] = rng.choice((b"LIST", b"junk", b"fmt ", b"data", b"\x00\x00\x00\x00")) + (
                struct.pack("<I", size) + payload
            )
        elif chunks:
            offset, _, size = rng.choice(chunks)
            del buffer[offset : offset + 8 + size]
    return bytes(buffer)


# --------------------------------------------------------------------------- photos


def _png_chunks(data: bytes) -> list[tuple[int, int, bytes]]:
    """(offset, length, type) of each chunk of a PNG file."""
    chunks, position = [], 8
    while position + 12 <= len(data) and len(chunks) < 256:
        length = struct.unpack_from(">I", data, position)[0]
        chunks.append((position, length, data[position + 4 : position + 8]))
        position += 12 + length
    return chunks


def _fix_crc(buffer: bytearray, offset: int, length: int) -> None:
    end = offset + 8 + length
    if end + 4 <= len(buffer):
        struct.pack_into(">I", buffer, end, zlib.crc32(buffer[offset + 4 : end]) & 0xFFFFFFFF)


_IHDR_FIELDS = (
    (8, ">I", (0, 1, 2, 20_001, 65_535, 1 << 20, 0x7FFFFFFF, 0xFFFFFFFF)),  # width
    (12, ">I", (0, 1, 2, 20_001, 65_535, 1 << 20, 0x7FFFFFFF, 0xFFFFFFFF)),  # height
    (16, ">B", (0, 1, 2, 4, 8, 16, 3, 255)),  # bit depth
    (17, ">B", (0, 1, 2, 3, 4, 5, 6, 7)),  # colour type
    (18, ">B", (0, 1, 255)),  # compression
    (19, ">B", (0, 1, 255)),  # filter
    (20, ">B", (0, 1, 2, 255)),  # interlace
)


def mutate_png(rng: random.Random, data: bytes) -> bytes:
    """1-3 chunk-aware mutations: lengths, IHDR fields (CRC fixed), removed, duplicated or added chunks."""
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        chunks = _png_chunks(bytes(buffer))
        if not chunks:
            return mutate_bytes(rng, bytes(buffer))
        operation = rng.random()
        offset, length, kind = rng.choice(chunks)
        if operation < 0.2:
            struct.pack_into(">I", buffer, offset, _interesting(rng, 4))
        elif operation < 0.55 and chunks[0][2] == b"IHDR" and chunks[0][1] >= 13:
            field_offset, form, values = rng.choice(_IHDR_FIELDS)
            struct.pack_into(form, buffer, chunks[0][0] + field_offset, rng.choice(values))
            if rng.random() < 0.85:
                _fix_crc(buffer, chunks[0][0], chunks[0][1])
        elif operation < 0.7 and kind != b"IHDR":
            del buffer[offset : offset + 12 + length]
        elif operation < 0.8:
            buffer[offset:offset] = buffer[offset : offset + 12 + length]
        else:
            payload = rng.choice(
                (b"Comment\x00" + b"x" * rng.randint(0, 5000), rng.randbytes(rng.randint(0, 64)),
                 b"MM\x00*\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01" + bytes([0, rng.randrange(10)]))
            )  # fmt: skip
            kind = rng.choice((b"tEXt", b"zTXt", b"iCCP", b"eXIf", b"pHYs", b"sPLT", b"tRNS", b"PLTE", b"IDAT"))
            chunk = struct.pack(">I", len(payload)) + kind + payload
            chunk += struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
            at = offset if kind != b"IHDR" else offset + 12 + length
            buffer[at:at] = chunk
    return bytes(buffer)


def mutate_jpeg(rng: random.Random, data: bytes) -> bytes:
    """1-3 marker-aware mutations: frame size and components, segment lengths, EXIF orientation."""
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        frames = [i for i in range(len(buffer) - 9) if buffer[i] == 0xFF and buffer[i + 1] in _SOF_MARKERS][:4]
        operation = rng.random()
        if operation < 0.45 and frames:
            at = rng.choice(frames)
            field_offset, form, values = rng.choice(
                ((5, ">H", (0, 1, 2, 0x7FFF, 0xFFFF)), (7, ">H", (0, 1, 2, 0x7FFF, 0xFFFF)),
                 (9, ">B", (0, 1, 2, 3, 4, 255)), (4, ">B", (0, 1, 8, 12, 16, 255)))
            )  # fmt: skip
            if at + field_offset + struct.calcsize(form) <= len(buffer):
                struct.pack_into(form, buffer, at + field_offset, rng.choice(values))
        elif operation < 0.7:
            head = range(min(len(buffer) - 4, 4096))
            markers = [i for i in head if buffer[i] == 0xFF and 0xC0 <= buffer[i + 1] <= 0xFE]
            if markers:
                struct.pack_into(">H", buffer, rng.choice(markers) + 2, _interesting(rng, 2))
        elif operation < 0.85:
            for pattern, form in ((b"\x01\x12\x00\x03", ">H"), (b"\x12\x01\x03\x00", "<H")):
                at = bytes(buffer).find(pattern)
                if at >= 0 and at + 10 <= len(buffer):
                    struct.pack_into(form, buffer, at + 8, rng.choice((0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0xFFFF)))
                    break
            else:
                buffer = bytearray(mutate_bytes(rng, bytes(buffer)))
        else:
            buffer = bytearray(mutate_bytes(rng, bytes(buffer)))
    return bytes(buffer)


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def mutate_photo(rng: random.Random, data: bytes, other: bytes | None) -> bytes:
    """Format-aware mutations for PNG and JPEG, generic ones for everything (TIFF, BMP, WebP, GIF)."""
    if data.startswith(b"\x89PNG") and rng.random() < 0.6:
        return mutate_png(rng, data)
    if data.startswith(b"\xff\xd8") and rng.random() < 0.6:
        return mutate_jpeg(rng, data)
    return mutate_bytes(rng, data, other)


# --------------------------------------------------------------------------- zip archives


def build_zip(rng: random.Random, members: list[tuple[str, bytes]]) -> bytes:
    """A zip of ``members``, each stored or deflated."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members:
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = rng.choice((zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED))
            archive.writestr(info, content)
    return buffer.getvalue()


def mutate_zip_headers(rng: random.Random, data: bytes) -> bytes:
    """1-3 edits of local/central header fields: sizes, compression method, flags, offsets, counts."""
    buffer = bytearray(data)
    local = [i for i in _find_all(data, b"PK\x03\x04")]
    central = [i for i in _find_all(data, b"PK\x01\x02")]
    end = data.rfind(b"PK\x05\x06")
    for _ in range(rng.randint(1, 3)):
        operation = rng.random()
        method = rng.choice((0, 8, 12, 14, 99, 1, 0xFFFF))
        flags = rng.choice((0, 1, 8, 0x41, 0x800, 0xFFFF))
        size = _interesting(rng, 4)
        if operation < 0.5 and central:
            at = rng.choice(central)
            field_offset, value, form = rng.choice(
                ((10, method, "<H"), (8, flags, "<H"), (20, size, "<I"), (24, size, "<I"), (42, size, "<I"),
                 (28, _interesting(rng, 2), "<H"))
            )  # fmt: skip
            if at + field_offset + 4 <= len(buffer):
                struct.pack_into(form, buffer, at + field_offset, value)
        elif operation < 0.85 and local:
            at = rng.choice(local)
            field_offset, value, form = rng.choice(((8, method, "<H"), (6, flags, "<H"), (18, size, "<I"),
                                                    (22, size, "<I"), (26, _interesting(rng, 2), "<H")))  # fmt: skip
            if at + field_offset + 4 <= len(buffer):
                struct.pack_into(form, buffer, at + field_offset, value)
        elif end >= 0 and end + 22 <= len(buffer):
            field_offset, form = rng.choice(((8, "<H"), (10, "<H"), (12, "<I"), (16, "<I")))
            struct.pack_into(form, buffer, end + field_offset, _interesting(rng, struct.calcsize(form)))
    return bytes(buffer)


def _find_all(data: bytes, pattern: bytes) -> list[int]:
    found, at = [], data.find(pattern)
    while at >= 0 and len(found) < 256:
        found.append(at)
        at = data.find(pattern, at + 1)
    return found


def mutate_zip(rng: random.Random, data: bytes, other: bytes | None = None) -> bytes:
    """Header-field edits or plain byte mutations of a zip archive."""
    return mutate_zip_headers(rng, data) if rng.random() < 0.6 else mutate_bytes(rng, data, other, 3)


def _member_name(rng: random.Random, name: str) -> str:
    """A zip member name: usually ``name``, sometimes one a careful extractor must refuse or survive."""
    return rng.choice(
        (name, name, name, name, f"../{name}", f"/{name}", f"a\\..\\{name}", f"deep/{'x/' * 40}{name}",
         f"ü/{name}", f"{name}/", f"__MACOSX/{name}", f"./{name}", f"C:/{name}")
    )  # fmt: skip


# --------------------------------------------------------------------------- JSON (manifests)

_INTERESTING_STRINGS = ("", " ", "../../etc/passwd", "/abs/path", "a\\b", "C:x", "x" * 5000, "ü€𝄞", "\x00", "NaN",
                        "1", "true", "null", "liver_segmentation", "safetensors", "skops", "CT", "0" * 64,
                        "a" * 101)  # fmt: skip
_INTERESTING_NUMBERS = (0, 1, -1, 2, 0.5, 1e308, -1e308, float("nan"), float("inf"), -float("inf"), 2**64, -(2**63),
                        10**400, True, False)  # fmt: skip


def random_json(rng: random.Random, depth: int = 0) -> Any:
    """Any JSON value, with the numbers and strings loaders trip over."""
    choice = rng.randrange(7 if depth < 3 else 4)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice(_INTERESTING_NUMBERS)
    if choice == 2:
        return rng.choice(_INTERESTING_STRINGS)
    if choice == 3:
        return rng.uniform(-1e6, 1e6) if rng.random() < 0.5 else rng.randint(-1000, 1000)
    if choice == 4:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if choice == 5:
        return {rng.choice((*_INTERESTING_STRINGS[:8], "id", "path", "sha256")): random_json(rng, depth + 1)
                for _ in range(rng.randint(0, 4))}  # fmt: skip
    return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randint(0, 12)))


def _json_slots(value: Any, slots: list[tuple[Any, Any]]) -> None:
    if isinstance(value, dict):
        for key, child in value.items():
            slots.append((value, key))
            _json_slots(child, slots)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            slots.append((value, index))
            _json_slots(child, slots)


def mutate_json(rng: random.Random, document: Any) -> Any:
    """1-4 structure-aware edits: values replaced (other types too), keys removed, renamed or added, nesting."""
    document = json.loads(json.dumps(document))  # a private deep copy
    for _ in range(rng.randint(1, 4)):
        slots: list[tuple[Any, Any]] = []
        _json_slots(document, slots)
        if not slots:
            return random_json(rng)
        parent, key = rng.choice(slots)
        operation = rng.random()
        if operation < 0.45:
            parent[key] = random_json(rng)
        elif operation < 0.6:
            del parent[key]
        elif operation < 0.7 and isinstance(parent, dict):
            parent[rng.choice(("", key.upper(), key + "_", "id", "weights", "__proto__"))] = parent.pop(key)
        elif operation < 0.8:
            parent[key] = rng.choice(([parent[key]], {"value": parent[key]}, [parent[key]] * 3))
        elif operation < 0.9 and isinstance(parent, dict):
            parent[rng.choice(("extra", "schema_version", "input", "weights", "x" * 300))] = random_json(rng)
        elif isinstance(parent, list):
            parent.append(parent[key])
        else:
            nested: Any = parent[key]
            for _ in range(rng.choice((10, 100, 400))):  # deeper nesting is made as text by render_json
                nested = [nested]
            parent[key] = nested
    return document


def render_json(rng: random.Random, document: Any) -> bytes:
    """``document`` as manifest text: JSON (NaN allowed, as Python writes it) in one of several layouts."""
    try:
        text = json.dumps(document, indent=rng.choice((None, 2)), ensure_ascii=rng.random() < 0.5, allow_nan=True)
    except (ValueError, RecursionError):
        text = '{"schema_version": 1}'
    data = text.encode("utf-8", errors="surrogatepass")
    choice = rng.random()
    if choice < 0.05:
        return b"\xef\xbb\xbf" + data  # a BOM
    if choice < 0.1:
        return text.encode("utf-16")
    if choice < 0.14:
        depth = rng.choice((1000, 100_000, 400_000))
        return b"[" * depth + b"]" * depth
    if choice < 0.3:
        return mutate_bytes(rng, data, None, 2)
    return data


def _weights_entries(manifest: dict, rng: random.Random) -> dict[str, bytes]:
    """Tiny stand-in weight files for a manifest's entries, with the manifest's checksums made to match."""
    files: dict[str, bytes] = {}
    entries = manifest.get("weights") if isinstance(manifest, dict) else None
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        if isinstance(entry, dict) and isinstance(entry.get("path"), str):
            content = f"fuzz weights {index} {rng.random()}".encode()
            entry["sha256"] = hashlib.sha256(content).hexdigest()
            files[entry["path"]] = content
    return files


# --------------------------------------------------------------------------- Hypothesis strategies (text formats)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)


def _or_anything(valid: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly a valid value, sometimes any JSON value at all."""
    return st.one_of(valid, valid, json_values)


@st.composite
def manifest_documents(draw: st.DrawFn) -> dict:
    """Manifest-shaped JSON documents whose fields are valid or anything at all, keys sometimes missing."""
    from medview.engine.manifest import ARCHITECTURES, TASKS

    names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)
    weight = st.fixed_dictionaries(
        {
            "path": _or_anything(names.map(lambda n: n + ".safetensors")),
            "format": _or_anything(st.sampled_from(["safetensors", "skops"])),
        },
        optional={"sha256": _or_anything(st.text("0123456789abcdef", min_size=64, max_size=64)), "role": json_values},
    )
    input_spec = st.fixed_dictionaries(
        {"modality": _or_anything(st.sampled_from(["CT", "audio", "photo"]))},
        optional={
            "size": _or_anything(st.lists(st.integers(-2, 1024), max_size=3)),
            "channels": _or_anything(st.integers(-1, 4)),
            "hu_window": _or_anything(st.lists(st.floats(), min_size=2, max_size=2)),
            "normalisation": json_values,
            "sample_rate": _or_anything(st.integers(-1, 96_000)),
            "extra": json_values,
            "body_parts": _or_anything(st.lists(st.text(max_size=12), max_size=3)),
        },
    )
    trained_on = st.fixed_dictionaries(
        {"dataset": _or_anything(st.text(max_size=20)), "split": _or_anything(st.text(max_size=20)),
         "demo": _or_anything(st.booleans())},
        optional={"counts": _or_anything(st.dictionaries(st.text(max_size=8), st.integers() | st.floats())),
                  "synthetic": json_values, "imagenet_backbone": json_values, "notes": json_values},
    )  # fmt: skip
    document = draw(
        st.fixed_dictionaries(
            {
                "schema_version": _or_anything(st.just(1)),
                "task": _or_anything(st.sampled_from(sorted(TASKS))),
                "arch": _or_anything(st.sampled_from(sorted(ARCHITECTURES))),
                "weights": _or_anything(st.lists(weight, max_size=3)),
                "input": _or_anything(input_spec),
                "class_names": _or_anything(st.lists(st.text(max_size=10), max_size=4)),
                "trained_on": _or_anything(trained_on),
                "id": _or_anything(names),
                "version": _or_anything(names),
            },
            optional={
                "thresholds": _or_anything(st.dictionaries(st.text(max_size=8), st.floats())),
                "metrics": _or_anything(st.dictionaries(st.text(max_size=8), st.floats())),
                "library_versions": _or_anything(st.dictionaries(st.text(max_size=8), st.text(max_size=8))),
                "target_layer": json_values,
                "arch_args": json_values,
                "created": json_values,
            },
        )
    )
    return document


_NUMBER_TOKENS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=0, max_value=30).map(lambda v: f"{v:.3f}"),
    st.integers(-5, 5).map(str),
    st.sampled_from(["0", "1", "nan", "inf", "-0", "1e400", "0x10", "١", "1_0", "--1", "+1", "0.", ".5", "1e-400"]),
    st.text(max_size=6),
)
_ROW = st.lists(_NUMBER_TOKENS, max_size=6)
_SEPARATORS = st.sampled_from([" ", "\t", "  ", "\t\t", "\u00a0", "\u3000"])
_NEWLINES = st.sampled_from(["\n", "\n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\u2028"])


@st.composite
def annotation_documents(draw: st.DrawFn) -> bytes:
    """ICBHI annotation files: rows of number-ish tokens, odd separators, line endings and encodings."""
    rows = draw(st.lists(st.tuples(_ROW, _SEPARATORS, _NEWLINES), max_size=30))
    text = "".join(separator.join(row) + newline for row, separator, newline in rows)
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "latin-1", "utf-16"]))
    return text.encode(encoding, errors="replace" if encoding == "latin-1" else "surrogatepass")


# --------------------------------------------------------------------------- case builders


def _suffix_swap(rng: random.Random, natural: str, choices: tuple[str, ...], keep: float = 0.85) -> str:
    return natural if rng.random() < keep else rng.choice(choices)


def _foreign_or(rng: random.Random, corpus: Corpus, data: bytes, chance: float = 0.05) -> bytes:
    """Usually ``data``; sometimes a file of another format entirely (a PNG named .dcm)."""
    return _read(rng.choice(corpus.foreign)) if rng.random() < chance else data


def _build_dicom_file(rng: random.Random, corpus: Corpus, _payload: Any) -> Case:
    token = _token(rng)
    data = _read(rng.choice(corpus.dicom_files))
    if rng.random() < 0.97:
        data = mutate_dicom(rng, data, _read(rng.choice(corpus.dicom_files)))
    data = _foreign_or(rng, corpus, data)
    suffix = rng.choice((".dcm", ".dcm", ".dcm", "", ".DCM", ".ima", ".png", ".txt"))
    name = f"image-{token}{suffix}"
    return Case({name: data}, name)


def _series_members(rng: random.Random, corpus: Corpus) -> list[tuple[str, bytes]]:
    """The files of a series with some of them mutated, dropped, duplicated, or joined by strangers."""
    series = rng.choice(corpus.dicom_series)
    members = [(path.name if path.suffix else path.name[-12:] + ".dcm", _read(path)) for path in series]
    mutated = rng.sample(range(len(members)), rng.randint(1, len(members)))
    for index in mutated:
        name, data = members[index]
        members[index] = (name, mutate_dicom(rng, data, members[(index + 1) % len(members)][1]))
    extra = rng.random()
    if extra < 0.1 and len(members) > 1:
        members.pop(rng.randrange(len(members)))
    elif extra < 0.2:
        name, data = rng.choice(members)
        members.append(("copy-" + name, data))
    elif extra < 0.3:
        members.append(("stranger.dcm", _read(rng.choice(corpus.foreign))))
    elif extra < 0.35:
        members.append(("empty.dcm", b""))
    elif extra < 0.4:
        members.append(("DICOMDIR", mutate_bytes(rng, _read(corpus.dicomdir_sets[0] / "DICOMDIR"))))
    return members


def _build_dicom_folder(rng: random.Random, corpus: Corpus, _payload: Any) -> Case:
    folder = f"series-{_token(rng)}"
    members = _series_members(rng, corpus)
    files = {f"{folder}/{'sub/' if rng.random() < 0.2 else ''}{name}": data for name, data in members}
    return Case(files, folder)


def _build_dicom_zip(rng: random.Random, corpus: Corpus, _payload: Any) -> Case:
    members = [(_member_name(rng, name), data) for name, data in _series_members(rng, corpus)]
    archive = build_zip(rng, members)
    if rng.random() < 0.4:
        archive = mutate_zip(rng, archive, _read(rng.choice(corpus.foreign)))
    name = f"study-{_token(rng)}{_suffix_swap(rng, '.zip', ('.ZIP', '.dcm', ''))}"
    return Case({name: archive}, name)


def _build_dicomdir(rng: random.Random, corpus: Corpus, _payload: Any) -> Case:
    folder = f"media-{_token(rng)}"
    source = rng.choice(corpus.dicomdir_sets)
    files = {f"{folder}/{p.relative_to(source).as_posix()}": _read(p) for p in sorted(source.rglob("*")) if p.is_file()}
    index = f"{folder}/DICOMDIR"
    files[index] = mutate_dicom(rng, files[index]) if rng.random() < 0.8 else mutate_bytes(rng, files[index])
    if rng.random() < 0.3:
        others = [k for k in files if k != index]
        victim = rng.choice(others)
        if rng.random() < 0.5:
            files[victim] = mutate_dicom(rng, files[victim])
        else:
            del files[victim]
    return Case(files, index)


def _volume_files(rng: random.Random, path: Path, stem: str, corpus: Corpus) -> tuple[dict[str, bytes], str]:
    """A mutated volume (with its detached data file for .nhdr/.mhd) under a name ending as ITK expects."""
    data, suffix = mutate_volume(rng, path, _read(path), _read(rng.choice(corpus.volumes)))
    suffix = _suffix_swap(rng, suffix, VOLUME_SUFFIXES)
    name = f"{stem}{suffix}"
    files = {name: data}
    if path.suffix in (".nhdr", ".mhd"):  # the detached data file the header names
        for sibling in path.parent.glob(path.stem + ".*"):
            if sibling != path:
                content = _read(sibling)
                files[sibling.name] = mutate_bytes(rng, content) if rng.random() < 0.3 else content
    return files, name


def _build_volume(rng: random.Random, corpus: Corpus, _payload: Any) -> Case:
    files, name = _volume_files(rng, rng.choice(corpus.volumes), f"volume-{_token(rng)}", corpus)
    return Case(files, name)


def _build_label_map(rng: random.Random, corpus: Corpus, _payload: Any) -> Case:
    path, reference = rng.choice(corpus.label_maps)
    stem = f"mask-{_token(rng)}"
    if path.suffix == ".dcm":
        name = stem + _suffix_swap(rng, ".dcm", (".seg", "", ".nii"))
        return Case({name: mutate_dicom(rng, _read(path))}, name, {"reference": reference})
    files, name = _volume_files(rng, path, stem, corpus)
    return Case(files, name, {"reference": reference})


def _build_audio(rng: random.Random, corpus: Corpus, _payload: Any) -> Case:
    path = rng.choice(corpus.audio)
    data = _read(path)
    if data.startswith(b"RIFF") and rng.random() < 0.6:
        data = mutate_wav(rng, data)
        if rng.random() < 0.3:
            data = mutate_bytes(rng, data, None, 2)
    else:
        data = mutate_bytes(rng, data, _read(rng.choice(corpus.audio)))
    data = _foreign_or(rng, corpus, data)
    name = f"recording-{_token(rng)}{_suffix_swap(rng, path.suffix, ('.wav', '.flac', '.ogg', '.WAV'))}"
    return Case({name: data}, name)


def _mutate_annotation_lines(rng: random.Random, data: bytes) -> bytes:
    lines = data.decode("utf-8", errors="replace").splitlines()
    for _ in range(rng.randint(1, 3)):
        if not lines:
            break
        index = rng.randrange(len(lines))
        fields = lines[index].split()
        operation = rng.random()
        if operation < 0.5 and fields:
            fields[rng.randrange(len(fields))] = rng.choice(
                ("nan", "inf", "-1", "2", "1e400", "", "x", "0", "99999", "-0.0", "1,5", "0.5")
            )
            lines[index] = "\t".join(fields)
        elif operation < 0.7:
            lines.insert(index, lines[index])
        elif operation < 0.85:
            lines[index] = "\t".join(reversed(fields))
        else:
            del lines[index]
    return "\n".join(lines).encode("utf-8")


def _build_annotations(rng: random.Random, corpus: Corpus, payload: Any) -> Case:
    if isinstance(payload, bytes):
        data = payload
    else:
        data = _read(rng.choice(corpus.annotations))
        data = _mutate_annotation_lines(rng, data) if rng.random() < 0.6 else mutate_bytes(rng, data)
    duration = rng.choice((None, None, 20.0, 0.001, rng.uniform(0.01, 30.0)))
    name = f"annotations-{_token(rng)}.txt"
    return Case({name: data}, name, {"duration_s": duration})


def _build_photo(rng: random.Random, corpus: Corpus, _payload: Any) -> Case:
    path = rng.choice(corpus.photos)
    data = mutate_photo(rng, _read(path), _read(rng.choice(corpus.photos)))
    data = _foreign_or(rng, corpus, data)
    from_suffixes = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".heic", ".heif")
    folder = f"photos-{_token(rng)}"
    name = f"{folder}/lesion-{_token(rng)}{_suffix_swap(rng, path.suffix.lower(), from_suffixes, 0.8)}"
    return Case({name: data}, name)


def _seed_manifest(rng: random.Random, corpus: Corpus) -> dict:
    return json.loads(_read(rng.choice(corpus.manifests)))


def _manifest_and_weights(rng: random.Random, corpus: Corpus, payload: Any) -> tuple[bytes, dict[str, bytes]]:
    """Manifest text (mutated seed or Hypothesis document) and stand-in weight files matching its checksums."""
    document = payload if isinstance(payload, dict) else _seed_manifest(rng, corpus)
    weights = _weights_entries(document, rng) if isinstance(document, dict) else {}
    if not isinstance(payload, dict) and rng.random() < 0.9:
        document = mutate_json(rng, document)
    return render_json(rng, document), weights


def _build_manifest(rng: random.Random, corpus: Corpus, payload: Any) -> Case:
    folder = f"bundle-{_token(rng)}"
    text, weights = _manifest_and_weights(rng, corpus, payload)
    files = {f"{folder}/manifest.json": text}
    for name, content in weights.items():
        if rng.random() < 0.9 and _safe_relative(name):
            files[f"{folder}/{name}"] = content if rng.random() < 0.9 else mutate_bytes(rng, content)
    return Case(files, folder)


def _safe_relative(name: str) -> bool:
    parts = Path(name).parts
    return bool(parts) and not Path(name).is_absolute() and ".." not in parts and not any(c in name for c in "\\:\x00")


def _build_bundle_zip(rng: random.Random, corpus: Corpus, payload: Any) -> Case:
    if isinstance(payload, dict) or rng.random() < 0.6:
        text, weights = _manifest_and_weights(rng, corpus, payload)
    else:  # a valid manifest: the zip layer is what is fuzzed
        document = _seed_manifest(rng, corpus)
        weights = _weights_entries(document, rng)
        text = json.dumps(document).encode()
    prefix = rng.choice(("", "", "bundle/", "a/b/"))
    members = [(_member_name(rng, prefix + "manifest.json"), text)]
    members += [
        (_member_name(rng, prefix + name), content) for name, content in weights.items() if _safe_relative(name)
    ]
    if rng.random() < 0.1:
        members.append(("__MACOSX/._manifest.json", b"\x00\x05\x16\x07"))
    archive = build_zip(rng, members)
    if rng.random() < 0.4:
        archive = mutate_zip(rng, archive)
    name = f"bundle-{_token(rng)}{_suffix_swap(rng, '.zip', ('.ZIP', '', '.json'), 0.9)}"
    return Case({name: archive}, name)


BUILDERS: dict[str, Callable[[random.Random, Corpus, Any], Case]] = {
    "dicom_file": _build_dicom_file,
    "dicom_folder": _build_dicom_folder,
    "dicom_zip": _build_dicom_zip,
    "dicomdir": _build_dicomdir,
    "volume": _build_volume,
    "label_map": _build_label_map,
    "audio": _build_audio,
    "annotations": _build_annotations,
    "photo": _build_photo,
    "manifest": _build_manifest,
    "bundle_zip": _build_bundle_zip,
}

_SEEDS = st.integers(min_value=0, max_value=2**63 - 1)
_PAYLOADS: dict[str, st.SearchStrategy] = {"annotations": annotation_documents(), "manifest": manifest_documents()}


def spec_strategy(loader: str) -> st.SearchStrategy[Spec]:
    """Fuzz inputs for ``loader``: a seed for the mutators, and for text formats half of the time a drawn document."""
    if loader not in BUILDERS:
        raise KeyError(f"unknown loader {loader!r}; expected one of {', '.join(BUILDERS)}")
    seeded = st.builds(Spec, st.just(loader), _SEEDS)
    if loader in _PAYLOADS:
        return st.one_of(seeded, st.builds(Spec, st.just(loader), _SEEDS, _PAYLOADS[loader]))
    return seeded


def build_case(spec: Spec, corpus: Corpus) -> Case:
    """The files of ``spec`` (the same every time for the same spec)."""
    return BUILDERS[spec.loader](random.Random(spec.seed), corpus, spec.payload)


def write_case(case: Case, folder: Path) -> Path:
    """Write the case's files under ``folder``; returns the path to hand to the loader."""
    for relative, content in case.files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return folder / case.target


# --------------------------------------------------------------------------- targets: loaders called as the app does


class Context:
    """What a worker keeps between inputs: the reference volumes masks are put on."""

    def __init__(self) -> None:
        self._references: dict[str, Any] = {}

    def reference(self, key: str) -> Any:
        if key not in self._references:
            if key == "dcmqi":
                from medview.io.dicom import load_series, scan_paths

                scan = scan_paths([SHARED_DATA / "dicom_ct" / "dcmqi_ct-3slice"])
                self._references[key] = load_series(scan.series[0])
            else:
                from medview.io.volume_files import read_volume

                volume = SHARED_DATA / "liver_ct" / "totalsegmentator" / "example_ct_sm.nii.gz"
                self._references[key] = read_volume(volume)
        return self._references[key]

    @staticmethod
    def warm_up() -> None:
        """Import the loaders before any input is timed (highdicom and the references come with the first mask)."""
        import medview.engine.manifest
        import medview.io.audio
        import medview.io.dicom
        import medview.io.photo
        import medview.io.volume_files  # noqa: F401


def _source_from_label(label: str) -> Any:
    """Like the main window's ``source_from_label``: ``archive.zip!member`` or a file."""
    from medview.io.dicom import DicomSource

    if "!" in label:
        archive, member = label.split("!", 1)
        if archive.lower().endswith(".zip") and Path(archive).is_file():
            return DicomSource(Path(archive), member)
    return DicomSource(Path(label))


def _open_dicom(path: Path, _case_dir: Path, _options: dict, _context: Context) -> tuple[str, list[str]]:
    """File > Open on a DICOM file, folder, zip or DICOMDIR: scan, thumbnails, load the largest series, tags."""
    from medview.errors import MedviewError
    from medview.io.dicom import decode_slice, load_series, scan_paths, tag_rows

    scan = scan_paths([path])
    messages = [str(problem) for problem in scan.problems]
    if not scan.series:
        return ("rejected" if messages else "accepted"), messages
    opened = max(scan.series, key=lambda s: s.slice_count)
    for series in scan.series:
        if series is not opened:
            try:
                decode_slice(series.slices[len(series.slices) // 2])
            except MedviewError as error:
                messages.append(str(error))
    volume = load_series(opened)
    for label in [f for f in volume.slice_files if f][:3]:
        try:
            tag_rows(_source_from_label(label))
        except MedviewError as error:
            messages.append(str(error))
    return "accepted", messages


def _open_volume(path: Path, _case_dir: Path, _options: dict, _context: Context) -> tuple[str, list[str]]:
    from medview.io.volume_files import read_volume

    read_volume(path)
    return "accepted", []


def _open_label_map(path: Path, _case_dir: Path, options: dict, context: Context) -> tuple[str, list[str]]:
    from medview.io.volume_files import read_label_map

    read_label_map(path, context.reference(options["reference"]))
    return "accepted", []


def _open_audio(path: Path, _case_dir: Path, _options: dict, _context: Context) -> tuple[str, list[str]]:
    from medview.io.audio import read_recording

    read_recording(path)
    return "accepted", []


def _open_annotations(path: Path, _case_dir: Path, options: dict, _context: Context) -> tuple[str, list[str]]:
    from medview.io.audio import read_icbhi_annotations

    read_icbhi_annotations(path, duration_s=options.get("duration_s"))
    return "accepted", []


def _open_photo(path: Path, _case_dir: Path, _options: dict, _context: Context) -> tuple[str, list[str]]:
    """A photo dropped on the window: sorted by ``split_photo_paths``, then read as the skin panel does."""
    from medview.io.photo import read_photo, split_photo_paths

    photos, _rest = split_photo_paths([path.parent])
    for photo in photos or [path]:
        read_photo(photo)
    return "accepted", []


def _open_manifest(path: Path, _case_dir: Path, _options: dict, _context: Context) -> tuple[str, list[str]]:
    """The model folder scan (``find_bundles``), then loading the bundle (manifest + checksums)."""
    from medview.engine.bundles import find_bundles, verify_bundle
    from medview.engine.manifest import load_manifest

    messages = [str(problem) for problem in find_bundles([path.parent]).problems]
    verify_bundle(load_manifest(path))
    return "accepted", messages


def _open_bundle_zip(path: Path, case_dir: Path, _options: dict, _context: Context) -> tuple[str, list[str]]:
    """The Models dialog's import of a bundle zip into the user's model folder."""
    from medview.engine.bundles import import_bundle

    import_bundle(path, case_dir / "installed-models")
    return "accepted", []


TARGETS: dict[str, Callable[[Path, Path, dict, Context], tuple[str, list[str]]]] = {
    "dicom_file": _open_dicom,
    "dicom_folder": _open_dicom,
    "dicom_zip": _open_dicom,
    "dicomdir": _open_dicom,
    "volume": _open_volume,
    "label_map": _open_label_map,
    "audio": _open_audio,
    "annotations": _open_annotations,
    "photo": _open_photo,
    "manifest": _open_manifest,
    "bundle_zip": _open_bundle_zip,
}


def names_input(message: str, case: Case, case_dir: Path) -> bool:
    """Whether a message names the input: the file handed to the loader, a file of the case, or its folder."""
    names = {Path(case.target).name, str(case_dir)} | {Path(relative).name for relative in case.files}
    return any(name and name in message for name in names)


def run_target(loader: str, case: Case, case_dir: Path, context: Context) -> Outcome:
    """Write ``case`` under ``case_dir``, call ``loader`` on it as the app does and judge what happened."""
    from medview.errors import MedviewError

    try:
        target = write_case(case, case_dir)
    except (OSError, ValueError) as error:  # a name the file system refuses: the generator's fault, not the loader's
        return Outcome("generator", f"cannot write the input: {type(error).__name__}: {error}", traceback.format_exc())
    try:
        status, messages = TARGETS[loader](target, case_dir, case.options, context)
    except MedviewError as error:
        if names_input(str(error), case, case_dir):
            return Outcome("rejected", str(error))
        return Outcome("crashed", f"{type(error).__name__} not naming the file: {error}", traceback.format_exc())
    except BaseException as error:
        if isinstance(error, KeyboardInterrupt):
            raise
        return Outcome("crashed", f"{type(error).__name__}: {error}"[:500], traceback.format_exc())
    unnamed = [message for message in messages if not names_input(message, case, case_dir)]
    if unnamed:
        return Outcome("crashed", f"a reported problem does not name the file: {unnamed[0]}"[:500])
    return Outcome(status, messages[0] if messages else "")


def execute(spec: Spec, corpus: Corpus, work_dir: Path, context: Context) -> Outcome:
    """Build, write and run one input in a fresh folder under ``work_dir`` (removed afterwards)."""
    try:
        case = build_case(spec, corpus)
    except Exception as error:  # noqa: BLE001 - a bug in the generator, reported apart from the loaders
        return Outcome("generator", f"{type(error).__name__}: {error}", traceback.format_exc())
    case_dir = work_dir / f"case-{spec.seed:016x}"
    if case_dir.exists():
        shutil.rmtree(case_dir, ignore_errors=True)
    case_dir.mkdir(parents=True)
    try:
        return run_target(spec.loader, case, case_dir, context)
    finally:
        shutil.rmtree(case_dir, ignore_errors=True)
