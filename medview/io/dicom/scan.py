"""Scanning: find the DICOM instances under folders, zips and DICOMDIRs, read their headers only, and group
them into series, with a readable problem for every file skipped."""

from __future__ import annotations

import io
import math
import os
import warnings
import zipfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from medview.errors import Cancelled, DicomError
from medview.io.dicom.model import (
    _ORIENTATION_DECIMALS,
    IMAGE_STORAGE_MARKERS,
    SYNTHETIC_SERIES_PREFIX,
    DicomSource,
    FileProblem,
    ScanResult,
    SeriesInfo,
    SliceHeader,
)
from medview.progress import CancelCheck, ProgressCallback

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
