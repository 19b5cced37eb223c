"""DICOM: find series in folders, zips and DICOMDIRs, and load one as a ``Volume``.

Two steps, so that the study browser can list a folder before anything is decoded:

1. ``scan_paths`` reads headers only and groups instances by SeriesInstanceUID
   (splitting a series whose slices disagree on orientation or matrix size), and
   collects a readable problem for every file it skips.
2. ``load_series`` sorts the slices geometrically (ImagePositionPatient projected
   on the normal of ImageOrientationPatient), decodes them on a thread pool,
   converts to Hounsfield units and returns a ``Volume`` re-oriented to LPS.

Decoding goes through SimpleITK's GDCM reader per file where it can: it releases
the GIL, so two cores decode two slices at once, and its JPEG-lossless decoder is
about twice as fast as pylibjpeg's (measured on COVID-CT-MD P001).  pydicom with
the pylibjpeg plugins is the fallback (zip members, enhanced multi-frame objects,
anything GDCM refuses) and the reference the tests compare against.
"""

from __future__ import annotations

import io
import logging
import math
import os
import queue
import threading
import warnings
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from medview.errors import Cancelled, DicomError
from medview.io.sources import split_archive_label
from medview.io.volume import (
    Volume,
    canonical_axes,
    reorient_array,
    reorient_geometry,
    source_path_label,
)
from medview.progress import CancelCheck, ProgressCallback

log = logging.getLogger(__name__)


def _drop_gdcm_decoding_plugin() -> None:
    """Keep pydicom off python-gdcm, for every transfer syntax another plugin (pylibjpeg) decodes.

    GDCM aborts the whole process (``std::terminate``, which Python cannot catch)
    on a file whose header contradicts its pixel data, e.g. a JPEG 2000 plane
    with one component under an RGB PhotometricInterpretation; pylibjpeg raises.
    """
    from pydicom.pixels import get_decoder

    for uid in pydicom.uid.AllTransferSyntaxes:
        try:
            decoder = get_decoder(uid)
        except NotImplementedError:
            continue
        if "gdcm" in decoder.available_plugins and len(decoder.available_plugins) > 1:
            decoder.remove_plugin("gdcm")


_drop_gdcm_decoding_plugin()


IMAGE_STORAGE_MARKERS = ("Image Storage",)
#: air, for slices missing from a series
MISSING_SLICE_VALUE = -1024
#: the largest series opened, in voxels (4 GiB as int16): a damaged header claiming more is refused, not allocated
MAX_VOXELS = 1 << 31
#: starts the stand-in MedView makes for files that carry no SeriesInstanceUID (see ``_series_uid_or_stand_in``)
SYNTHETIC_SERIES_PREFIX = "no-series-uid:"
_ORIENTATION_DECIMALS = 3


@dataclass(frozen=True)
class DicomSource:
    """Where an instance's bytes live: a file, or a member of a zip archive."""

    path: Path
    member: str | None = None

    @property
    def label(self) -> str:
        return source_path_label(self.path, self.member)

    @classmethod
    def from_label(cls, label: str) -> DicomSource:
        """The source a ``label`` names (``Volume.slice_files``): a file, or ``archive.zip!member``.

        A file whose own name holds a "!" stays a file.
        """
        return cls(*split_archive_label(label))

    def open(self) -> str | io.BytesIO:
        """A path or an in-memory file pydicom can read."""
        if self.member is None:
            return str(self.path)
        with zipfile.ZipFile(self.path) as archive:
            return io.BytesIO(archive.read(self.member))

    def size(self) -> int:
        """The file's size in bytes (a zip member's uncompressed size)."""
        if self.member is None:
            return self.path.stat().st_size
        with zipfile.ZipFile(self.path) as archive:
            return archive.getinfo(self.member).file_size


@dataclass(frozen=True)
class SliceHeader:
    """What the loader needs to know about one image plane (one frame)."""

    source: DicomSource
    frame: int | None  # frame index inside an enhanced multi-frame object, else None
    sop_instance_uid: str
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    rows: int
    columns: int
    pixel_spacing: tuple[float, float]
    slice_thickness: float | None
    instance_number: int | None
    rescale: tuple[float, float]  # slope, intercept
    #: one sample per pixel, MONOCHROME1/2, as the header says: the only files handed to GDCM, whose
    #: decoders abort the whole process (std::terminate) when the header and the pixel data disagree
    monochrome: bool = False

    def __post_init__(self) -> None:
        if not all(math.isfinite(value) for value in self.rescale):
            raise DicomError(
                f"expected finite RescaleSlope and RescaleIntercept, got {self.rescale[0]} and {self.rescale[1]}",
                path=self.source.label,
            )


@dataclass
class SeriesInfo:
    """One series as listed in the study browser, before it is decoded."""

    series_uid: str
    study_uid: str
    patient_id: str
    patient_name: str
    study_date: str
    study_description: str
    series_description: str
    series_number: int | None
    modality: str
    slices: list[SliceHeader]
    body_part: str = ""  # Body Part Examined as the scanner wrote it; often absent
    patient_birth_date: str = ""
    accession_number: str = ""
    window: tuple[float, float] | None = None
    notes: list[str] = field(default_factory=list)
    part: int = 0  # >0 when a series was split by orientation or size

    @property
    def slice_count(self) -> int:
        return len(self.slices)

    @property
    def display_name(self) -> str:
        number = f"#{self.series_number} " if self.series_number is not None else ""
        text = f"{number}{self.series_description or self.modality or 'series'}"
        return f"{text} (part {self.part + 1})" if self.part else text


@dataclass(frozen=True)
class FileProblem:
    """A file that was skipped, and why, in words for the user."""

    label: str
    message: str

    def __str__(self) -> str:
        return f"{self.label}: {self.message}"


@dataclass
class ScanResult:
    """Every series found under the paths the user opened, and every skipped file."""

    series: list[SeriesInfo] = field(default_factory=list)
    problems: list[FileProblem] = field(default_factory=list)


# --------------------------------------------------------------------------- scanning


def iter_sources(paths: Iterable[Path | str]) -> Iterable[DicomSource]:
    """Every candidate file under ``paths``: folders recursively, zips, DICOMDIRs."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    yield from iter_sources([Path(root) / name])
        elif zipfile.is_zipfile(path) and path.suffix.lower() == ".zip":
            try:  # is_zipfile only finds the end record: the central directory may still be damaged
                with zipfile.ZipFile(path) as archive:
                    members = [info.filename for info in archive.infolist() if not info.is_dir()]
            except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
                raise DicomError(f"not a readable zip archive ({error})", path=path) from error
            for member in members:
                yield DicomSource(path, member)
        elif path.name.upper() == "DICOMDIR":
            yield from _dicomdir_sources(path)
        elif path.exists():
            yield DicomSource(path)
        else:
            # a vanished path is reported by the header reader
            yield DicomSource(path)


def _dicomdir_sources(path: Path) -> Iterable[DicomSource]:
    from pydicom.fileset import FileSet

    try:
        file_set = FileSet(pydicom.dcmread(path))
    except Exception as error:
        raise DicomError(f"not a readable DICOMDIR ({error})", path=path) from error
    for instance in file_set:
        if instance.for_addition:  # a damaged record pydicom staged in its own temporary folder: not on the media
            continue
        yield DicomSource(Path(instance.path))


def _sniff_non_dicom(data: bytes) -> str | None:
    """Name the format of a file that is clearly not DICOM, for the message."""
    signatures = {
        b"\x89PNG": "a PNG image",
        b"\xff\xd8\xff": "a JPEG image",
        b"GIF8": "a GIF image",
        b"%PDF": "a PDF document",
        b"PK\x03\x04": "a zip archive",
        b"RIFF": "a RIFF (WAV/AVI) file",
        b"\x1f\x8b": "a gzip file (NIfTI .nii.gz? open it with File > Open volume)",
        b"NRRD": "an NRRD volume (open it with File > Open volume)",
    }
    for signature, name in signatures.items():
        if data.startswith(signature):
            return name
    return None


def read_header(source: DicomSource) -> Dataset:
    """Read a DICOM header (no pixel data), raising ``DicomError`` with a clear reason."""
    label = source.label
    try:
        handle = source.open()
        with warnings.catch_warnings():
            # real scanners write invalid UIDs etc.: pydicom warns and reads on
            warnings.simplefilter("ignore")
            try:
                return pydicom.dcmread(handle, stop_before_pixels=True)
            except InvalidDicomError:
                pass
            # No "DICM" preamble: old files are legal without it; take them only if
            # they parse into something with a SOP Class, never guess beyond that.
            if isinstance(handle, io.BytesIO):
                handle.seek(0)
                head = handle.read(16)
                handle.seek(0)
            else:
                with open(handle, "rb") as raw:
                    head = raw.read(16)
            kind = _sniff_non_dicom(head)
            if kind:
                raise DicomError(f"not a DICOM file: it is {kind}", path=label)
            dataset = pydicom.dcmread(handle, stop_before_pixels=True, force=True)
            if "SOPClassUID" not in dataset:
                raise DicomError("not a DICOM file (no DICOM header found)", path=label)
            return dataset
    except DicomError:
        raise
    except FileNotFoundError as error:
        raise DicomError("file not found", path=label) from error
    except Exception as error:  # pydicom raises many types for damaged headers
        raise DicomError(f"unreadable DICOM header ({type(error).__name__}: {error})", path=label) from error


def _float_tuple(value: object, count: int) -> tuple[float, ...] | None:
    try:
        numbers = tuple(float(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count and all(np.isfinite(numbers)) else None


def _text(dataset: Dataset, keyword: str) -> str:
    value = dataset.get(keyword, "")
    return str(value).strip() if value is not None else ""


def _int_or_none(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def _first_window(dataset: Dataset) -> tuple[float, float] | None:
    center, width = dataset.get("WindowCenter"), dataset.get("WindowWidth")
    if center is None or width is None:
        return None
    try:
        center_value = float(center[0] if isinstance(center, pydicom.multival.MultiValue) else center)
        width_value = float(width[0] if isinstance(width, pydicom.multival.MultiValue) else width)
    except (TypeError, ValueError, IndexError):
        return None
    return (center_value, width_value) if width_value > 0 else None


def slice_headers(dataset: Dataset, source: DicomSource) -> list[SliceHeader]:
    """One ``SliceHeader`` per image plane: one for classic CT, N for enhanced CT."""
    rows, columns = _int_or_none(dataset.get("Rows")), _int_or_none(dataset.get("Columns"))
    if not rows or not columns:
        raise DicomError("no image matrix (Rows/Columns missing)", path=source.label)
    frames = _int_or_none(dataset.get("NumberOfFrames")) or 1
    shared = dataset.get("SharedFunctionalGroupsSequence")
    if frames > 1:
        _check_frame_count(dataset, source, rows, columns, frames)
    if frames > 1 or "PerFrameFunctionalGroupsSequence" in dataset:
        return _enhanced_frames(dataset, source, rows, columns, frames, shared)
    spacing = _float_tuple(dataset.get("PixelSpacing"), 2) or (1.0, 1.0)
    slope = float(dataset.get("RescaleSlope", 1) or 1)
    intercept = float(dataset.get("RescaleIntercept", 0) or 0)
    thickness = dataset.get("SliceThickness")
    return [
        SliceHeader(
            source=source,
            frame=None,
            sop_instance_uid=_text(dataset, "SOPInstanceUID") or _text(dataset.file_meta, "MediaStorageSOPInstanceUID"),
            position=_float_tuple(dataset.get("ImagePositionPatient"), 3),  # type: ignore[arg-type]
            orientation=_float_tuple(dataset.get("ImageOrientationPatient"), 6),
            rows=rows,
            columns=columns,
            pixel_spacing=spacing,  # type: ignore[arg-type]
            slice_thickness=float(thickness) if thickness not in (None, "") else None,
            instance_number=_int_or_none(dataset.get("InstanceNumber")),
            rescale=(slope, intercept),
            monochrome=_int_or_none(dataset.get("SamplesPerPixel")) == 1
            and _text(dataset, "PhotometricInterpretation") in ("MONOCHROME1", "MONOCHROME2"),
        )
    ]


def _check_frame_count(dataset: Dataset, source: DicomSource, rows: int, columns: int, frames: int) -> None:
    """Refuse a NumberOfFrames the file is too small to hold, before a header per frame is built and decoded."""
    transfer_syntax = getattr(dataset, "file_meta", Dataset()).get("TransferSyntaxUID")
    try:
        encapsulated = bool(transfer_syntax) and (transfer_syntax.is_compressed or transfer_syntax.is_deflated)
    except ValueError:  # not a transfer syntax pydicom knows: assume the most compact case
        encapsulated = True
    if encapsulated:
        least = 8 * frames  # at the very least one fragment item header per frame
    else:
        samples = _int_or_none(dataset.get("SamplesPerPixel")) or 1
        bits = _int_or_none(dataset.get("BitsAllocated")) or 1
        least = math.ceil(rows * columns * frames * samples * max(bits, 1) / 8)
    size = source.size()
    if least > size:
        raise DicomError(
            f"NumberOfFrames {frames} of {rows}x{columns} needs at least {least} bytes of pixel data, "
            f"the file holds {size}",
            path=source.label,
        )


def _functional_item(group: Dataset | None, sequence: str) -> Dataset | None:
    if group is None or sequence not in group or not group[sequence].value:
        return None
    return group[sequence].value[0]


def _enhanced_frames(
    dataset: Dataset, source: DicomSource, rows: int, columns: int, frames: int, shared_seq: object
) -> list[SliceHeader]:
    shared = shared_seq[0] if shared_seq else None  # type: ignore[index]
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence") or [None] * frames
    headers = []
    for index in range(frames):
        frame_group = per_frame[index] if index < len(per_frame) else None

        def item(sequence: str, _group: Dataset | None = frame_group) -> Dataset | None:
            return _functional_item(_group, sequence) or _functional_item(shared, sequence)

        position = item("PlanePositionSequence")
        orientation = item("PlaneOrientationSequence")
        measures = item("PixelMeasuresSequence")
        transform = item("PixelValueTransformationSequence")
        thickness = measures.get("SliceThickness") if measures is not None else None
        headers.append(
            SliceHeader(
                source=source,
                frame=index,
                sop_instance_uid=_text(dataset, "SOPInstanceUID"),
                position=_float_tuple(position.get("ImagePositionPatient"), 3) if position else None,  # type: ignore[arg-type]
                orientation=_float_tuple(orientation.get("ImageOrientationPatient"), 6) if orientation else None,
                rows=rows,
                columns=columns,
                pixel_spacing=(_float_tuple(measures.get("PixelSpacing"), 2) if measures else None) or (1.0, 1.0),  # type: ignore[arg-type]
                slice_thickness=float(thickness) if thickness not in (None, "") else None,
                instance_number=index + 1,
                rescale=(
                    float(transform.get("RescaleSlope", 1))
                    if transform
                    else float(dataset.get("RescaleSlope", 1) or 1),
                    float(transform.get("RescaleIntercept", 0))
                    if transform
                    else float(dataset.get("RescaleIntercept", 0) or 0),
                ),
            )
        )
    return headers


def scan_paths(
    paths: Sequence[Path | str],
    progress: ProgressCallback | None = None,
    cancelled: CancelCheck | None = None,
) -> ScanResult:
    """Find every DICOM image series under ``paths`` (headers only, nothing decoded).

    Non-image objects (SEG, SR, ...) and unreadable files are listed in
    ``ScanResult.problems`` with the reason; the rest of the folder still opens.
    """
    sources = list(iter_sources(paths))
    result = ScanResult()
    grouped: dict[str, list[SliceHeader]] = defaultdict(list)
    fields_by_series: dict[str, dict] = {}
    for done, source in enumerate(sources, start=1):
        if cancelled is not None and cancelled():
            raise Cancelled()
        if progress is not None:
            progress(done, len(sources), "reading DICOM headers")
        if source.member is None and source.path.name.upper() == "DICOMDIR":
            continue  # its files are found by the folder walk itself
        try:
            dataset = read_header(source)
            try:
                series_uid, headers = _scan_one(dataset, source)
                if series_uid not in fields_by_series:
                    fields_by_series[series_uid] = _series_fields(dataset)
            except DicomError:
                raise
            except Exception as error:  # pydicom converts values lazily: a damaged one fails here
                raise DicomError(
                    f"unreadable value in the header ({type(error).__name__}: {error})", path=source.label
                ) from error
            grouped[series_uid].extend(headers)
        except DicomError as error:
            result.problems.append(FileProblem(source.label, _strip_label(error, source.label)))
    for series_uid, headers in grouped.items():
        result.series.extend(_split_series(series_uid, fields_by_series[series_uid], headers))
    result.series.sort(key=lambda s: (s.patient_name, s.study_date, s.study_uid, s.series_number or 0, s.part))
    return result


def _scan_one(dataset: Dataset, source: DicomSource) -> tuple[str, list[SliceHeader]]:
    """The series key and image planes of one file, or ``DicomError`` when it holds no usable image."""
    sop_class_uid = dataset.get("SOPClassUID") or dataset.file_meta.get("MediaStorageSOPClassUID")
    sop_class = getattr(sop_class_uid, "name", str(sop_class_uid or ""))
    if "PixelData" not in dataset and "Rows" not in dataset:
        raise DicomError(f"no image in this object ({sop_class or 'unknown SOP class'})", path=source.label)
    if sop_class and not any(marker in sop_class for marker in IMAGE_STORAGE_MARKERS):
        raise DicomError(f"not an image series but a {sop_class} object", path=source.label)
    return _series_uid_or_stand_in(dataset, source), slice_headers(dataset, source)


def _series_fields(dataset: Dataset) -> dict:
    """The series-level fields the study browser lists, read from the series' first file."""
    return {
        "study_uid": _text(dataset, "StudyInstanceUID"),
        "patient_id": _text(dataset, "PatientID"),
        "patient_name": _text(dataset, "PatientName"),
        "patient_birth_date": _text(dataset, "PatientBirthDate"),
        "accession_number": _text(dataset, "AccessionNumber"),
        "study_date": _text(dataset, "StudyDate"),
        "study_description": _text(dataset, "StudyDescription"),
        "series_description": _text(dataset, "SeriesDescription"),
        "series_number": _int_or_none(dataset.get("SeriesNumber")),
        "modality": _text(dataset, "Modality"),
        "body_part": _text(dataset, "BodyPartExamined"),
        "window": _first_window(dataset) or _enhanced_window(dataset),
    }


def _enhanced_window(dataset: Dataset) -> tuple[float, float] | None:
    """The first frame's window of an enhanced (multi-frame) object, from its functional groups."""
    for groups in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        frame_voi = _functional_item(_functional_item(dataset, groups), "FrameVOILUTSequence")
        if frame_voi is not None:
            return _first_window(frame_voi)
    return None


def _series_uid_or_stand_in(dataset: Dataset, source: DicomSource) -> str:
    """SeriesInstanceUID, or for anonymised files that blanked it, a stand-in key.

    Some anonymisers empty the UIDs (the TotalSegmentator example series does);
    their slices still belong together when they share a frame of reference,
    a series description and a folder.
    """
    series_uid = _text(dataset, "SeriesInstanceUID")
    if series_uid:
        return series_uid
    folder = source.path.parent if source.member is None else Path(source.member).parent
    parts = (
        _text(dataset, "FrameOfReferenceUID"),
        _text(dataset, "SeriesDescription"),
        _text(dataset, "SeriesTime"),
        str(folder),
    )
    if not any(parts[:3]):
        raise DicomError("no SeriesInstanceUID and nothing else to group the file by", path=source.label)
    return SYNTHETIC_SERIES_PREFIX + "|".join(parts)


def dicom_series_uid(series_uid: str | None) -> str | None:
    """The real SeriesInstanceUID of a scanned series (``SeriesInfo.series_uid``); None for the stand-in MedView
    made up for files without one, or none at all, so that audit records and references never carry a UID no
    DICOM system knows."""
    if not series_uid or series_uid.startswith(SYNTHETIC_SERIES_PREFIX):
        return None
    return series_uid


def _strip_label(error: DicomError, label: str) -> str:
    text = str(error)
    prefix = f"{label}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def _split_series(series_uid: str, fields: dict, headers: list[SliceHeader]) -> list[SeriesInfo]:
    """Split a series into parts that can each form one volume (same plane, same matrix)."""

    def key(header: SliceHeader) -> tuple:
        orientation = tuple(np.round(header.orientation, _ORIENTATION_DECIMALS)) if header.orientation else None
        return (orientation, header.rows, header.columns)

    parts: dict[tuple, list[SliceHeader]] = defaultdict(list)
    for header in headers:
        parts[key(header)].append(header)
    ordered = sorted(parts.values(), key=len, reverse=True)
    infos = []
    for index, part in enumerate(ordered):
        info = SeriesInfo(series_uid=series_uid, slices=part, part=index, **fields)
        if dicom_series_uid(series_uid) is None:
            info.notes.append(
                "the files carry no SeriesInstanceUID (anonymised?): grouped by frame of reference, "
                "series description and folder"
            )
        if len(ordered) > 1:
            info.notes.append(
                f"series {series_uid} mixes {len(ordered)} orientations or matrix sizes; "
                f"part {index + 1} holds {len(part)} of its {len(headers)} images "
                f"(e.g. {part[0].source.label})"
            )
        infos.append(info)
    return infos


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class SeriesGeometry:
    """The sorted slice order of a series and where each slice goes in the volume."""

    slices: tuple[SliceHeader, ...]  # sorted along the normal, duplicates removed
    z_index: tuple[int, ...]  # volume slice index of each entry in ``slices``
    depth: int  # number of volume slices, missing ones included
    spacing: tuple[float, float, float]  # z, y, x
    origin: tuple[float, float, float]
    direction: np.ndarray
    missing: frozenset[int]
    warnings: tuple[str, ...]


def sort_slices(headers: Sequence[SliceHeader]) -> SeriesGeometry:
    """Sort slices along the plane normal and detect gaps, duplicates and irregular steps.

    The order comes from ImagePositionPatient projected on the normal of
    ImageOrientationPatient (never from file names or InstanceNumber, which
    scanners do not keep monotonic).  A gap that is a whole number of steps is
    kept in the geometry as missing slices, so distances across it stay true.
    """
    if not headers:
        raise DicomError("the series has no image slices")
    notes: list[str] = []
    first = headers[0]
    distances = None
    if first.orientation is not None and all(h.position is not None for h in headers):
        normal = np.cross(np.asarray(first.orientation[:3]), np.asarray(first.orientation[3:]))
        with np.errstate(over="ignore", invalid="ignore"):  # checked below
            distances = np.array([float(np.dot(normal, h.position)) for h in headers])  # type: ignore[arg-type]
        if not np.all(np.isfinite(distances)):  # positions so far out that their projections overflow
            distances = None
    if distances is None or first.orientation is None:
        # Without geometry, fall back to InstanceNumber and say so.
        ordered = sorted(headers, key=lambda h: (h.instance_number is None, h.instance_number or 0))
        notes.append(
            "no ImagePositionPatient/ImageOrientationPatient: slices ordered by InstanceNumber, "
            "distances along z are not reliable"
        )
        spacing_z = first.slice_thickness or 1.0
        direction = np.eye(3)
        return SeriesGeometry(
            slices=tuple(ordered),
            z_index=tuple(range(len(ordered))),
            depth=len(ordered),
            spacing=(spacing_z, first.pixel_spacing[0], first.pixel_spacing[1]),
            origin=(0.0, 0.0, 0.0),
            direction=direction,
            missing=frozenset(),
            warnings=tuple(notes),
        )
    row_dir = np.asarray(first.orientation[:3])
    col_dir = np.asarray(first.orientation[3:])
    normal = np.cross(row_dir, col_dir)
    order = np.argsort(distances, kind="stable")
    ordered = []
    positions: list[float] = []
    for index in order:
        if positions and abs(distances[index] - positions[-1]) < 1e-3:
            notes.append(
                f"{headers[index].source.label} lies at the same position as "
                f"{ordered[-1].source.label} ({distances[index]:.2f} mm): kept the first"
            )
            continue
        ordered.append(headers[index])
        positions.append(distances[index])
    steps = np.diff(positions)
    step = float(np.median(steps)) if len(steps) else first.slice_thickness or 1.0
    z_index = [0]
    missing: set[int] = set()
    for i, gap in enumerate(steps):
        ratio = gap / step
        if ratio > 1.5:
            whole = round(float(ratio)) if math.isfinite(ratio) else 0
            # empty slices for a gap, but never more than there are real ones (a damaged position is not a gap)
            if abs(ratio - whole) < 0.1 and len(missing) + whole - 1 <= len(ordered):
                missing.update(range(z_index[-1] + 1, z_index[-1] + whole))
                notes.append(
                    f"{whole - 1} slice(s) missing between {ordered[i].source.label} and "
                    f"{ordered[i + 1].source.label} (gap {gap:.2f} mm, step {step:.2f} mm): shown as empty"
                )
                z_index.append(z_index[-1] + whole)
                continue
            notes.append(
                f"irregular gap of {gap:.2f} mm (step {step:.2f} mm) between "
                f"{ordered[i].source.label} and {ordered[i + 1].source.label}"
            )
        elif abs(ratio - 1) > 0.1:
            notes.append(f"irregular slice step {gap:.2f} mm (median {step:.2f} mm) at {ordered[i + 1].source.label}")
        z_index.append(z_index[-1] + 1)
    direction = np.column_stack([row_dir, col_dir, normal])
    return SeriesGeometry(
        slices=tuple(ordered),
        z_index=tuple(z_index),
        depth=z_index[-1] + 1,
        spacing=(step, first.pixel_spacing[0], first.pixel_spacing[1]),
        origin=tuple(float(v) for v in ordered[0].position or ()),  # type: ignore[arg-type]
        direction=direction,
        missing=frozenset(missing),
        warnings=tuple(notes),
    )


# --------------------------------------------------------------------------- decoding


def _decode_with_sitk(header: SliceHeader) -> np.ndarray | None:
    """HU plane through SimpleITK/GDCM, or None when this reader cannot take the file."""
    if header.source.member is not None or header.frame is not None or not header.monochrome:
        return None
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(header.source.path))
    reader.SetNumberOfThreads(1)  # the pool already uses every core
    try:
        image = reader.Execute()
    except RuntimeError:
        return None
    plane = sitk.GetArrayViewFromImage(image)
    if plane.ndim == 3:
        plane = plane[0]
    if plane.shape != (header.rows, header.columns) or image.GetNumberOfComponentsPerPixel() != 1:
        return None
    return np.array(plane)


def _decode_with_pydicom(header: SliceHeader) -> np.ndarray:
    label = header.source.label
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(header.source.open(), force=True)
            if "TransferSyntaxUID" not in dataset.file_meta:
                implicit, little = dataset.original_encoding
                dataset.file_meta.TransferSyntaxUID = (
                    pydicom.uid.ImplicitVRLittleEndian
                    if implicit
                    else pydicom.uid.ExplicitVRLittleEndian
                    if little
                    else pydicom.uid.ExplicitVRBigEndian
                )
            if "PixelData" not in dataset and "FloatPixelData" not in dataset:
                raise DicomError("the file has no pixel data", path=label)
            if header.frame is not None:
                dataset.pixel_array_options(index=header.frame)
            stored = dataset.pixel_array
    except DicomError:
        raise
    except Exception as error:
        raise DicomError(f"pixel data cannot be decoded ({type(error).__name__}: {error})", path=label) from error
    if stored.ndim != 2 or stored.shape != (header.rows, header.columns):
        raise DicomError(
            f"expected a {header.rows}x{header.columns} grayscale plane, got shape {stored.shape}", path=label
        )
    slope, intercept = header.rescale
    return stored.astype(np.float32) * slope + intercept if (slope, intercept) != (1.0, 0.0) else stored


def decode_slice(header: SliceHeader) -> np.ndarray:
    """Decode one plane to Hounsfield units (or raw values for non-CT)."""
    plane = _decode_with_sitk(header)
    return plane if plane is not None else _decode_with_pydicom(header)


# Neighbouring slices are decoded in runs, one SimpleITK ImageSeriesReader per
# run: a fresh ImageFileReader per file re-parses each header and builds a new
# reader and image each time (P001, 148 JPEG-lossless slices on two threads:
# 0.59 s per file against 0.43 s in runs of 12).  The reader's progress events
# let a cancel abort a run after the slice in hand.
_RUN_MIN, _RUN_MAX = 4, 12  # slices per run: longer runs cost less, shorter ones balance and cancel sooner
_RUNS_PER_WORKER = 3
_CANCEL_POLL_S = 0.05


def _run_length(count: int, workers: int) -> int:
    return min(_RUN_MAX, max(_RUN_MIN, math.ceil(count / (workers * _RUNS_PER_WORKER))))


def _decode_run_with_sitk(
    headers: Sequence[SliceHeader], out: np.ndarray, zs: Sequence[int], stop: threading.Event
) -> bool:
    """Decode neighbouring single-frame files in one GDCM pass into ``out[zs]``.

    False, with nothing written, when the run must take the per-file path: a zip
    member or a frame, a file GDCM refuses, or a file that is not one grayscale
    plane (ITK would quietly turn RGB or palette colour into luminance here).
    """
    if len(headers) < 2 or any(h.source.member is not None or h.frame is not None or not h.monochrome for h in headers):
        return False
    rows, columns = headers[0].rows, headers[0].columns
    if any((h.rows, h.columns) != (rows, columns) for h in headers):
        return False
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileNames([str(h.source.path) for h in headers])
    # ITK casts each plane from GDCM's rescaled type with a C cast, as numpy's
    # assignment into the volume does on the per-file path: the same voxels
    reader.SetOutputPixelType(sitk.sitkInt16 if out.dtype == np.int16 else sitk.sitkFloat32)
    reader.SetNumberOfThreads(1)  # the pool already uses every core
    reader.SetSpacingWarningRelThreshold(1e9)  # gaps are ours to report, not ITK's on stderr
    reader.MetaDataDictionaryArrayUpdateOn()  # per-file tags, to check every file is grayscale
    reader.AddCommand(sitk.sitkProgressEvent, lambda: reader.Abort() if stop.is_set() else None)
    try:
        image = reader.Execute()
    except RuntimeError:
        return False
    finally:
        reader.RemoveAllCommands()  # the command holds the reader: break the cycle
    if image.GetNumberOfComponentsPerPixel() != 1 or image.GetSize() != (columns, rows, len(headers)):
        return False
    for index in range(len(headers)):
        for key, accept in (("0028|0002", ("1",)), ("0028|0004", ("MONOCHROME1", "MONOCHROME2"))):
            if not reader.HasMetaDataKey(index, key) or reader.GetMetaData(index, key).strip() not in accept:
                return False
    planes = sitk.GetArrayViewFromImage(image)  # valid while ``image`` lives
    if not stop.is_set():
        for index, z in enumerate(zs):
            out[z] = planes[index]
    return True


def _output_dtype(headers: Sequence[SliceHeader], modality: str) -> type:
    """int16 for CT with integral rescale (HU fits), float32 for everything else."""
    if modality not in ("CT", ""):
        return np.float32
    for header in headers:
        slope, intercept = header.rescale
        if slope != int(slope) or intercept != int(intercept):
            return np.float32
    return np.int16


def load_series(
    series: SeriesInfo,
    progress: ProgressCallback | None = None,
    cancelled: CancelCheck | None = None,
    on_slice: Callable[[Volume, int], None] | None = None,
    workers: int | None = None,
) -> Volume:
    """Decode a scanned series into a ``Volume`` in LPS orientation.

    ``on_slice(volume, z)`` is called (from this thread) each time a slice is in
    place, middle slice first, so a viewer can show the image before the rest is
    decoded.  Unreadable slices are reported in ``Volume.warnings`` and left as
    missing; if no slice decodes, ``DicomError`` names the first failing file.
    """
    geometry = sort_slices(series.slices)
    first = geometry.slices[0]
    dtype = _output_dtype(geometry.slices, series.modality)
    voxels_needed = geometry.depth * first.rows * first.columns
    if voxels_needed > MAX_VOXELS:
        raise DicomError(
            f"the series would be {geometry.depth}x{first.rows}x{first.columns} voxels, "
            f"more than MedView opens ({MAX_VOXELS:,})",
            path=first.source.label,
        )
    try:
        acquired: np.ndarray = np.full((geometry.depth, first.rows, first.columns), MISSING_SLICE_VALUE, dtype=dtype)
    except MemoryError as error:
        raise DicomError(
            f"not enough memory for a {geometry.depth}x{first.rows}x{first.columns} volume", path=first.source.label
        ) from error
    order, flips = canonical_axes(geometry.direction)
    spacing, origin, direction = reorient_geometry(
        acquired.shape, geometry.spacing, np.asarray(geometry.origin), geometry.direction, order, flips
    )
    voxels = reorient_array(acquired, order, flips)  # a view: slices written below appear in it

    def to_output_index(z_acquired: int) -> int:
        if order[0] != 0:
            return -1  # not an axial stack: no single output slice corresponds
        return geometry.depth - 1 - z_acquired if flips[0] else z_acquired

    slice_files = [""] * geometry.depth
    slice_uids = [""] * geometry.depth
    for header, z in zip(geometry.slices, geometry.z_index, strict=True):
        slice_files[z] = header.source.label
        slice_uids[z] = header.sop_instance_uid
    if order[0] != 0:  # acquired coronal or sagittal: no output (axial) slice is one file
        slice_files, slice_uids = [], []
    elif flips[0]:
        slice_files.reverse()
        slice_uids.reverse()
    volume = Volume(
        voxels=voxels,
        spacing=spacing,
        origin=origin,
        direction=tuple(direction.ravel()),
        series_uid=series.series_uid,
        description=series.display_name,
        modality=series.modality,
        slice_files=tuple(slice_files),
        slice_uids=tuple(slice_uids),
        missing_slices=frozenset(to_output_index(z) for z in geometry.missing) - {-1},
        default_window=series.window,
        warnings=tuple(series.notes) + geometry.warnings,
        info={
            "PatientName": series.patient_name,
            "PatientID": series.patient_id,
            "PatientBirthDate": series.patient_birth_date,
            "AccessionNumber": series.accession_number,
            "StudyInstanceUID": series.study_uid,
            "StudyDate": series.study_date,
            "StudyDescription": series.study_description,
            "SeriesDescription": series.series_description,
            "Modality": series.modality,
            "BodyPartExamined": series.body_part,
        },
    )
    count = len(geometry.slices)
    middle = count // 2
    pool_size = workers or os.cpu_count() or 2
    run_length = _run_length(count - 1, pool_size)
    # the middle slice alone first, so a viewer has its picture after one decode
    runs = [[middle]] + [
        list(half[start : start + run_length])
        for half in (range(middle), range(middle + 1, count))
        for start in range(0, len(half), run_length)
    ]
    stop = threading.Event()
    finished: queue.SimpleQueue[tuple[list[int], list[DicomError | None] | Exception]] = queue.SimpleQueue()

    def decode_run(run: list[int]) -> None:
        """Decode the slices ``run`` into ``acquired`` (on a worker thread) and report one error or None each."""
        try:
            headers = [geometry.slices[i] for i in run]
            zs = [geometry.z_index[i] for i in run]
            results: list[DicomError | None] = [None] * len(run)
            if not stop.is_set() and not _decode_run_with_sitk(headers, acquired, zs, stop):
                for position, (header, z) in enumerate(zip(headers, zs, strict=True)):
                    if stop.is_set():
                        break
                    try:
                        acquired[z] = decode_slice(header)
                    except DicomError as error:
                        results[position] = error
            finished.put((run, results))
        except Exception as error:  # noqa: BLE001 - a bug, not a bad file: the loading thread re-raises it
            finished.put((run, error))

    failures: list[str] = []
    failed_z: set[int] = set()
    done = 0
    held_back: list[int] = []  # slices that landed before the middle one, announced after it
    middle_landed = False
    poll = _CANCEL_POLL_S if cancelled is not None else None
    with ThreadPoolExecutor(max_workers=pool_size) as pool:
        for run in runs:
            pool.submit(decode_run, run)
        try:
            for _ in runs:
                while True:
                    if cancelled is not None and cancelled():
                        raise Cancelled()
                    try:
                        run, outcome = finished.get(timeout=poll)
                        break
                    except queue.Empty:
                        continue
                if isinstance(outcome, Exception):
                    raise outcome
                landed = []
                for index, failure in zip(run, outcome, strict=True):
                    z = geometry.z_index[index]
                    if failure is None:
                        landed.append(z)
                    else:
                        failures.append(str(failure))
                        failed_z.add(z)
                done += len(run)
                if progress is not None:
                    progress(done, count, "decoding slices")
                middle_landed = middle_landed or middle in run
                if middle_landed:
                    announce, held_back = landed + held_back, []
                else:
                    announce, held_back = [], held_back + landed
                if on_slice is not None:
                    for z in announce:
                        output_z = to_output_index(z)
                        if output_z >= 0:
                            on_slice(volume, output_z)
        finally:
            stop.set()  # running runs stop after their current slice and write nothing more
            pool.shutdown(wait=True, cancel_futures=True)
    if len(failures) == count:
        raise DicomError(f"no slice of the series could be decoded; first error: {failures[0]}")
    if failures:
        missing = volume.missing_slices | {z for z in map(to_output_index, failed_z) if z >= 0}
        volume = _replace_problems(volume, failures, missing)
    if not voxels.flags.c_contiguous:
        volume = _replace_voxels(volume, np.ascontiguousarray(voxels))
    return volume


def _replace_problems(volume: Volume, failures: list[str], missing: Iterable[int]) -> Volume:
    from dataclasses import replace

    return replace(volume, warnings=volume.warnings + tuple(failures), missing_slices=frozenset(missing))


def _replace_voxels(volume: Volume, voxels: np.ndarray) -> Volume:
    from dataclasses import replace

    return replace(volume, voxels=voxels)


def load_dicom(paths: Sequence[Path | str]) -> Volume:
    """Load the largest image series found under ``paths``: the one-call path for scripts."""
    scan = scan_paths(paths)
    if not scan.series:
        reasons = "; ".join(str(p) for p in scan.problems[:3]) or "no files found"
        raise DicomError(f"no DICOM image series found in {', '.join(map(str, paths))} ({reasons})")
    return load_series(max(scan.series, key=lambda s: s.slice_count))


# --------------------------------------------------------------------------- tags


@dataclass(frozen=True)
class TagRow:
    """One line of the tag browser."""

    depth: int
    tag: str
    name: str
    vr: str
    value: str
    keyword: str = ""  # "PatientID": what DICOM-literate users type into the search


def tag_rows(source: DicomSource, max_value_length: int = 200) -> list[TagRow]:
    """Every element of a file's header as rows, sequences flattened with a depth."""
    dataset = read_header(source)
    rows: list[TagRow] = []

    def visit(data: Dataset, depth: int) -> None:
        for key in list(data.keys()):
            tag = f"({key.group:04X},{key.element:04X})"
            try:
                element = data[key]  # pydicom converts the raw value here: a damaged one raises
            except Exception as error:  # noqa: BLE001 - a malformed element must not hide the rest
                rows.append(TagRow(depth, tag, "(unreadable element)", "", f"<unreadable: {error}>"[:max_value_length]))
                continue
            if element.VR == "SQ":
                rows.append(TagRow(depth, tag, element.name, "SQ", f"{len(element.value)} item(s)", element.keyword))
                for item in element.value:
                    visit(item, depth + 1)
                continue
            try:
                value = element.repval if element.VR in ("OB", "OW", "UN", "OF", "OD") else str(element.value)
            except Exception as error:  # noqa: BLE001 - a malformed value must not hide the rest
                value = f"<unreadable: {error}>"
            if len(value) > max_value_length:
                value = value[:max_value_length] + "…"
            rows.append(TagRow(depth, tag, element.name, str(element.VR), value, element.keyword))

    meta = getattr(dataset, "file_meta", None)
    if meta is not None:
        visit(meta, 0)
    visit(dataset, 0)
    return rows
