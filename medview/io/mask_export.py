"""Masks written out for other systems: DICOM SEG beside the source series, NIfTI for research tools.

``write_dicom_seg`` derives a binary DICOM Segmentation from the CT series a
``Volume`` was loaded from (highdicom): one coded segment (liver by default,
SNOMED CT), marked AUTOMATIC with the model's name and version, every frame
referencing the CT image it was drawn on.  The loader re-orients volumes to
LPS; the writer undoes that per source image, so each SEG frame matches its CT
image pixel for pixel, as the standard's "spatial locations preserved" says.

``write_nifti_mask`` writes the mask as a uint8 NIfTI with the volume's
spacing, origin and direction, for tools that do not read DICOM SEG.

Both files read back through ``medview.io.volume_files.read_label_map`` onto the
volume they came from voxel for voxel (the tests hold them to that).  Writing
goes to a temporary file beside the target first, so a failed export never
leaves half a file under the name the user chose.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from medview import __version__
from medview.errors import ExportError, InputError
from medview.io.volume import Volume

log = logging.getLogger(__name__)

#: segment category and type when none is given: SNOMED CT "Anatomical Structure" (CID 7150) / "Liver"
LIVER_CATEGORY = ("91723000", "SCT", "Anatomical Structure")
LIVER_TYPE = ("10200004", "SCT", "Liver")
#: the algorithm family of an AI model (DICOM CID 7162)
AI_FAMILY = ("123110", "DCM", "Artificial Intelligence")
#: series number of exported segmentations when the caller gives none
SEG_SERIES_NUMBER = 900
#: an image axis counts as "along" a volume axis when their cosine is above this
_PARALLEL = 0.99
#: how far (in slice steps) a multi-frame image's frame may sit from the volume slice it is matched to
_FRAME_TOLERANCE = 0.25
#: Type 2 attributes highdicom copies from the source image by attribute access
_TYPE2_COPIED = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)

CodeTriple = tuple[str, str, str]  # (value, scheme designator, meaning)


# --------------------------------------------------------------------------- shared helpers


def _check_mask(mask: np.ndarray, volume: Volume) -> np.ndarray:
    """The mask as a bool array on the volume's grid, or ValueError (a caller's bug, not a user's file)."""
    array = np.asarray(mask)
    if array.shape != volume.shape:
        raise ValueError(f"mask: expected the volume's shape {volume.shape}, got {array.shape}")
    if array.dtype != bool:
        if array.dtype.kind not in "iu" or (array.size and (array.min() < 0 or array.max() > 1)):
            raise ValueError(f"mask: expected a bool (or 0/1) array, got {array.dtype} values")
        array = array.astype(bool)
    return array


def write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(temporary)`` and move the result to ``path``; ExportError naming ``path`` on failure."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ExportError(f"cannot write here: the folder {folder} does not exist", path=path)
    suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix  # writers go by the ending
    temporary = folder / f".{path.name.removesuffix(suffix)}-{secrets.token_hex(4)}.part{suffix}"
    try:
        # created like any new file (mode 0o666 less the umask), unlike mkstemp's owner-only 0o600
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        write(temporary)
        os.replace(temporary, path)
    except OSError as error:
        raise ExportError(f"cannot write the file ({error.strerror or error})", path=path) from error
    except RuntimeError as error:  # SimpleITK reports write failures as RuntimeError
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise ExportError(f"cannot write the file ({reason})", path=path) from error
    finally:
        temporary.unlink(missing_ok=True)
    return path


# --------------------------------------------------------------------------- NIfTI


def write_nifti_mask(
    path: Path | str,
    mask: np.ndarray,
    volume: Volume,
    label_names: Mapping[int, str] | None = None,
) -> Path:
    """Write ``mask`` (bool or small integer labels, ``[z, y, x]`` on ``volume``) as a uint8 NIfTI file.

    The image gets the volume's geometry: spacing (stored x, y, z, i.e. reversed
    from the volume's ``(z, y, x)``), origin and direction (LPS in memory; the
    NIfTI writer stores them as RAS like every NIfTI).  ``.nii.gz`` is written
    compressed.  ``label_names`` (e.g. ``{1: "Liver"}``) go into the header's
    80-character description, the one free-text field NIfTI has.

    Raises:
        ValueError: ``mask`` does not have the volume's shape, or holds labels outside 0..255.
        ExportError: the path is not a ``.nii``/``.nii.gz`` name, or the file cannot be written.
    """
    path = Path(path)
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        raise ExportError(f"expected a .nii or .nii.gz file name, got {path.name!r}", path=path)
    array = np.asarray(mask)
    if array.shape != volume.shape:
        raise ValueError(f"mask: expected the volume's shape {volume.shape}, got {array.shape}")
    if array.dtype != bool and (
        array.dtype.kind not in "iu" or (array.size and (array.min() < 0 or array.max() > np.iinfo(np.uint8).max))
    ):
        raise ValueError(f"mask: expected bool or labels 0..255, got {array.dtype} values")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.uint8))  # ITK (x, y, z) = [z, y, x]
    image.SetSpacing([float(volume.spacing[2]), float(volume.spacing[1]), float(volume.spacing[0])])
    image.SetOrigin([float(v) for v in volume.origin])
    image.SetDirection([float(v) for v in volume.direction])
    if label_names:
        text = "; ".join(f"{value}={name}" for value, name in sorted(label_names.items()))
        image.SetMetaData("ITK_FileNotes", text[:79])  # ITK's NIfTI writer puts this in "descrip"
    compress = path.name.lower().endswith(".gz")
    return write_atomically(path, lambda target: sitk.WriteImage(image, str(target), useCompression=compress))


# --------------------------------------------------------------------------- DICOM SEG


@dataclass(frozen=True)
class SourcePlane:
    """One source image plane: which volume slice it shows and how its pixels sit in that slice."""

    z: int
    transpose: bool  # image rows run along the volume's x axis (columns along y)
    flip_rows: bool
    flip_columns: bool

    def pixels(self, mask: np.ndarray) -> np.ndarray:
        """The plane's ``[row, column]`` pixels taken from the volume mask's slice ``z``."""
        plane = mask[self.z]
        if self.transpose:
            plane = plane.T
        if self.flip_rows:
            plane = plane[::-1, :]
        if self.flip_columns:
            plane = plane[:, ::-1]
        return plane

    def to_volume(self, pixels: np.ndarray) -> np.ndarray:
        """The inverse of ``pixels``: an image plane's ``[row, column]`` array as the volume's ``[y, x]`` slice."""
        plane = pixels
        if self.flip_columns:
            plane = plane[:, ::-1]
        if self.flip_rows:
            plane = plane[::-1, :]
        return plane.T if self.transpose else plane


def _plane_layout(orientation: Sequence[float] | None, volume: Volume, label: str) -> tuple[bool, bool, bool]:
    """(transpose, flip rows, flip columns) that put a volume slice onto an image with this orientation."""
    if orientation is None or len(orientation) != 6:
        raise InputError("the image has no ImageOrientationPatient: its pixels cannot be matched", path=label)
    row_dir = np.asarray(orientation[:3], dtype=float)  # the direction of increasing column index
    col_dir = np.asarray(orientation[3:], dtype=float)  # the direction of increasing row index
    direction = volume.direction_matrix
    x_axis, y_axis = direction[:, 0], direction[:, 1]
    if abs(row_dir @ x_axis) >= _PARALLEL and abs(col_dir @ y_axis) >= _PARALLEL:
        return False, bool(col_dir @ y_axis < 0), bool(row_dir @ x_axis < 0)
    if abs(row_dir @ y_axis) >= _PARALLEL and abs(col_dir @ x_axis) >= _PARALLEL:
        return True, bool(col_dir @ x_axis < 0), bool(row_dir @ y_axis < 0)
    raise InputError(
        "the image is not in the volume's axial plane (orientation "
        f"{', '.join(f'{v:g}' for v in orientation)}): it does not match the loaded volume",
        path=label,
    )


def _source_of(label: str) -> Any:
    """The ``DicomSource`` of a ``Volume.slice_files`` entry."""
    from medview.io.dicom import DicomSource  # pydicom loads with the first export

    return DicomSource.from_label(label)


def _stand_in_uid(kind: str, dataset: Any) -> str:
    """A UID derived from what the header still says about the series (not from where the files are),
    so every export of the same series gets the same stand-in."""
    from pydicom.uid import generate_uid

    keys = ("FrameOfReferenceUID", "StudyDate", "StudyTime", "SeriesDate", "SeriesTime", "SeriesDescription")
    return str(generate_uid(entropy_srcs=["medview", kind, *(str(dataset.get(key, "")) for key in keys)]))


class _SourcePreparer:
    """Fills what highdicom needs from the source headers, in place; anonymisers blank some of it.

    SOP class and instance UIDs come from the file meta when the dataset's are
    empty (as the loader does for ``Volume.slice_uids``). Empty study, series
    and frame-of-reference UIDs get stand-ins derived from the first header that
    lacks them, the same for every image of the series, so the SEG is valid
    DICOM; ``notes`` says which were made up.
    """

    def __init__(self) -> None:
        self.stand_ins: dict[str, str] = {}
        self.notes: list[str] = []

    def __call__(self, dataset: Any, label: str) -> None:
        meta = getattr(dataset, "file_meta", None)
        for keyword, meta_keyword in (
            ("SOPClassUID", "MediaStorageSOPClassUID"),
            ("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
        ):
            if not str(dataset.get(keyword, "") or "").strip():
                value = str(meta.get(meta_keyword, "") or "").strip() if meta is not None else ""
                if not value:
                    raise InputError(f"the image has no {keyword}: a DICOM SEG cannot reference it", path=label)
                setattr(dataset, keyword, value)
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
            if not str(dataset.get(keyword, "") or "").strip():
                if keyword not in self.stand_ins:
                    self.stand_ins[keyword] = _stand_in_uid(keyword, dataset)
                    self.notes.append(f"the source images have no {keyword} (anonymised?): the SEG uses a stand-in")
                setattr(dataset, keyword, self.stand_ins[keyword])
        for keyword in _TYPE2_COPIED:
            if keyword not in dataset or dataset.get(keyword) is None:
                setattr(dataset, keyword, "")
        name = str(dataset.PatientName)
        if name and "^" not in name:
            # "DOE" and "DOE^" are the same name in DICOM; highdicom warns about the first form
            dataset.PatientName = f"{name}^"
        if not dataset.get("SpecificCharacterSet"):
            dataset.SpecificCharacterSet = "ISO_IR 100"


def source_planes(volume: Volume) -> tuple[list[Any], list[SourcePlane], set[int]]:
    """The source datasets (headers), one ``SourcePlane`` per source image plane, and the slices with a source.

    Single-frame images: one file per volume slice, in the volume's slice order.
    One enhanced (multi-frame) image: one plane per frame, in frame order, matched
    to volume slices by the frame's position along the volume's z axis.
    """
    from medview.io.dicom import read_header, slice_headers

    if not volume.slice_files:
        raise InputError(
            "a DICOM SEG needs the DICOM series the volume was loaded from, and this volume has none "
            "(opened from a NIfTI/NRRD file, or a series acquired in another plane): export it as NIfTI instead"
        )
    if len(volume.slice_files) != volume.shape[0]:
        raise InputError(
            f"the volume lists {len(volume.slice_files)} source files for {volume.shape[0]} slices: "
            "it cannot be matched to its DICOM series"
        )
    absent = set(volume.missing_slices)
    present = [z for z, label in enumerate(volume.slice_files) if label and z not in absent]
    if not present:
        raise InputError("none of the volume's slices comes from a DICOM file: export it as NIfTI instead")
    labels = [volume.slice_files[z] for z in present]
    prepare = _SourcePreparer()
    if len(set(labels)) == len(labels):
        datasets, planes = [], []
        for z, label in zip(present, labels, strict=True):
            dataset = read_header(_source_of(label))
            headers = slice_headers(dataset, _source_of(label))
            if len(headers) != 1:
                raise InputError(
                    f"the series mixes single-frame and multi-frame images ({len(headers)} frames here): "
                    "a DICOM SEG can reference only one multi-frame image",
                    path=label,
                )
            header = headers[0]
            expected = volume.slice_uids[z] if z < len(volume.slice_uids) else ""
            if expected and header.sop_instance_uid != expected:
                raise InputError(
                    f"the file now holds instance {header.sop_instance_uid}, not slice {z}'s {expected}: "
                    "was the series changed on disk since it was opened?",
                    path=label,
                )
            prepare(dataset, label)
            datasets.append(dataset)
            planes.append(_plane(header, z, volume, label))
    elif len(set(labels)) == 1:
        label = labels[0]
        dataset = read_header(_source_of(label))
        planes = []
        origin, z_axis = np.asarray(volume.origin, dtype=float), volume.direction_matrix[:, 2]
        for header in slice_headers(dataset, _source_of(label)):
            if header.position is None:
                raise InputError(f"frame {(header.frame or 0) + 1} has no position: it cannot be matched", path=label)
            step = float((np.asarray(header.position) - origin) @ z_axis) / volume.spacing[0]
            z = round(step)
            if abs(step - z) > _FRAME_TOLERANCE or z not in present:
                raise InputError(
                    f"frame {(header.frame or 0) + 1} lies at slice {step:.2f} of the volume, not on one of its "
                    "slices: the file does not match the loaded volume",
                    path=label,
                )
            planes.append(_plane(header, z, volume, label))
        prepare(dataset, label)
        datasets = [dataset]
    else:
        raise InputError(
            f"the volume's slices come from {len(set(labels))} multi-frame files: "
            "a DICOM SEG can reference only one multi-frame image; export it as NIfTI instead"
        )
    for note in prepare.notes:
        log.warning("DICOM SEG of %s: %s", volume.description or volume.series_uid, note)
    return datasets, planes, set(present)


def _plane(header: Any, z: int, volume: Volume, label: str) -> SourcePlane:
    """How the image plane of ``header`` (a ``SliceHeader``) maps onto slice ``z`` of ``volume``, size checked."""
    transpose, flip_rows, flip_columns = _plane_layout(header.orientation, volume, label)
    plane = SourcePlane(z, transpose, flip_rows, flip_columns)
    _check_plane_size(plane, header.rows, header.columns, volume, label)
    return plane


def _check_plane_size(plane: SourcePlane, rows: int, columns: int, volume: Volume, label: str) -> None:
    expected = (volume.shape[2], volume.shape[1]) if plane.transpose else (volume.shape[1], volume.shape[2])
    if (rows, columns) != expected:
        raise InputError(
            f"the image is {rows}x{columns} pixels, the volume's slice {expected[0]}x{expected[1]}: "
            "the file does not match the loaded volume",
            path=label,
        )


def coded(triple: CodeTriple) -> Any:
    from pydicom.sr.coding import Code

    value, scheme, meaning = triple
    return Code(value, scheme, meaning)


def write_dicom_seg(
    path: Path | str,
    mask: np.ndarray,
    volume: Volume,
    *,
    algorithm_name: str,
    algorithm_version: str,
    segment_label: str = "Liver",
    property_category: CodeTriple = LIVER_CATEGORY,
    property_type: CodeTriple = LIVER_TYPE,
    algorithm_family: CodeTriple = AI_FAMILY,
    algorithm_parameters: Mapping[str, str] | None = None,
    display_rgb: tuple[int, int, int] | None = None,
    series_description: str | None = None,
    content_description: str | None = None,
    series_number: int = SEG_SERIES_NUMBER,
    manufacturer: str = "MedView",
    manufacturer_model_name: str = "MedView",
    software_versions: str = __version__,
    device_serial_number: str = "1",
) -> Path:
    """Write ``mask`` (bool ``[z, y, x]`` on ``volume``) as a binary DICOM Segmentation of the source series.

    The SEG has one segment: ``segment_label`` coded as ``property_category`` /
    ``property_type`` (SNOMED CT Anatomical Structure / Liver by default), algorithm
    type AUTOMATIC with an algorithm identification (``algorithm_name``, e.g. the
    model id, its ``algorithm_version`` and ``algorithm_parameters`` such as the
    threshold).  It belongs to the CT's study and frame of reference; each frame
    references the CT image it was drawn on and matches it pixel for pixel (the
    loader's LPS flips and transposes are undone).  Only slices holding mask voxels
    become frames; an empty mask is still written, with every slice as an empty
    frame (a valid SEG recording that nothing was found).

    Source headers are read again from ``volume.slice_files`` (no pixel data).
    Anonymised series with empty study/series/frame-of-reference UIDs get
    deterministic stand-ins (logged): the SOP Instance UIDs, which the SEG's
    references rely on, must be present (in the dataset or its file meta).

    Raises:
        ValueError: ``mask`` does not have the volume's shape or is not binary.
        InputError: the volume has no DICOM source (a NIfTI: export NIfTI instead);
            mask voxels lie on slices missing from the series; a source file no
            longer matches the volume (the message names it).
        ExportError: the file cannot be written.
    """
    import highdicom as hd
    from pydicom.uid import ExplicitVRLittleEndian

    path = Path(path)
    array = _check_mask(mask, volume)
    datasets, planes, present = source_planes(volume)
    outside = sorted(set(np.flatnonzero(array.any(axis=(1, 2))).tolist()) - present)
    if outside:
        shown = ", ".join(str(z + 1) for z in outside[:10]) + (", ..." if len(outside) > 10 else "")
        raise InputError(
            f"the mask covers slice(s) {shown} (counting from 1), which are missing from the DICOM series "
            "(shown as air): a DICOM SEG can only hold slices that exist; export it as NIfTI instead"
        )
    pixel_array = np.stack([plane.pixels(array) for plane in planes]).astype(np.uint8)
    identification = hd.AlgorithmIdentificationSequence(
        name=algorithm_name,
        family=coded(algorithm_family),
        version=algorithm_version,
        source=manufacturer,
        parameters=dict(algorithm_parameters) if algorithm_parameters else None,
    )
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=segment_label,
        segmented_property_category=coded(property_category),
        segmented_property_type=coded(property_type),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=identification,
        display_color=hd.color.CIELabColor.from_rgb(*display_rgb) if display_rgb is not None else None,
    )
    content = content_description or f"{segment_label} by {algorithm_name} {algorithm_version}"
    series = series_description or f"{segment_label} (AI: {algorithm_name})"
    try:
        seg = hd.seg.Segmentation(
            source_images=datasets,
            pixel_array=pixel_array,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[description],
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer=manufacturer,
            manufacturer_model_name=manufacturer_model_name,
            software_versions=software_versions,
            device_serial_number=device_serial_number,
            content_description=content[:64],  # LO: 64 characters
            content_label=_content_label(segment_label),
            series_description=series[:64],
            transfer_syntax_uid=ExplicitVRLittleEndian,
            # all frames of an empty mask are kept (highdicom would log that it keeps them)
            omit_empty_frames=bool(array.any()),
        )
    except (ValueError, TypeError, AttributeError) as error:  # highdicom's checks of the source headers
        raise InputError(
            f"the source series cannot carry a DICOM SEG ({type(error).__name__}: {error})",
            path=volume.slice_files[min(present)],
        ) from error
    return write_atomically(path, lambda target: seg.save_as(target, enforce_file_format=True))


def _content_label(segment_label: str) -> str:
    """A valid Code String (A-Z, 0-9, space, underscore; 16 characters) from the segment label."""
    text = "".join(c if c.isascii() and (c.isalnum() or c in " _") else "_" for c in segment_label.upper())
    return (text.strip() or "SEGMENTATION")[:16]
