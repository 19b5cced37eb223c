"""Research volume formats (NIfTI, NRRD, MetaImage) and label maps put onto a CT volume.

``read_volume`` opens a scalar 3-D file through SimpleITK and hands it out with
the same conventions and LPS re-orientation as the DICOM loader, so a NIfTI
stored RAS displays exactly like the series it came from.

``read_label_map`` puts a mask (NIfTI/NRRD/MetaImage label image or DICOM SEG)
onto the voxel grid of an already opened ``Volume``, so overlays, measurements
and model evaluation can index the CT and the mask with the same ``[z, y, x]``.
Everything goes through patient (LPS) coordinates; nothing assumes the mask was
stored with the same axis order, flips or extent as the CT.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import re
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from medview.errors import InputError
from medview.io.sources import VOLUME_SUFFIXES, is_volume_name
from medview.io.volume import Volume, canonical_axes, reorient_array, reorient_geometry

#: file name endings ``read_volume`` and ``read_label_map`` open through SimpleITK
#: Segmentation Storage and Label Map Segmentation Storage
_SEG_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")
#: direction components below this are "not along this axis" when matching planes
_PARALLEL = 0.99
#: MetaIO handles 1..10 dimensions; outside that it crashes the process (NDims -1: SIGSEGV, 100: SIGABRT)
_METAIMAGE_DIMENSIONS = range(1, 11)
_METAIMAGE_NDIMS = re.compile(rb"^\s*NDims\s*=\s*(\S*)", re.MULTILINE)
#: the largest volume file opened, in voxels (as for a DICOM series): a damaged header claiming more is refused
MAX_VOLUME_VOXELS = 1 << 31
_NRRD_TEXT_ENCODINGS = frozenset({"ascii", "text", "txt"})
_TEXT_BYTES = frozenset(b"0123456789+-.eEnNaAiIfF \t\r\n,")
_ASCII_LINE_BYTES = frozenset(range(0x20, 0x7F)) | {0x09}


@dataclass(frozen=True, eq=False)
class LabelMap:
    """Integer labels on a reference volume's voxel grid (0 = background).

    ``labels`` has the reference's ``[z, y, x]`` shape; ``names`` maps each label
    value the file defines to its name; ``source`` is the file it was read from.
    """

    labels: np.ndarray
    names: dict[int, str]
    source: str


# --------------------------------------------------------------------------- helpers


def _is_itk_file(path: Path) -> bool:
    return is_volume_name(path)


def _itk_reason(error: Exception) -> str:
    """The useful line of a SimpleITK/ITK exception (they run over many lines)."""
    text = str(error)
    match = re.search(r"ITK ERROR: [^:]*:\s*(.+)", text)
    reason = match.group(1) if match else text.strip().splitlines()[-1] if text.strip() else type(error).__name__
    return reason.strip()


def _read_itk_image(path: Path) -> sitk.Image:
    """A 3-D scalar SimpleITK image, or ``InputError`` saying why not."""
    if not path.exists():
        raise InputError("file not found", path=path)
    if not _is_itk_file(path):
        raise InputError(
            f"unsupported file type; expected one of {', '.join(VOLUME_SUFFIXES)} "
            "(DICOM series open with File > Open DICOM)",
            path=path,
        )
    name = path.name.lower()
    if name.endswith((".mha", ".mhd")):
        _check_metaimage_header(path)
    elif name.endswith((".nii", ".nii.gz")):
        _check_nifti_geometry(path)
    elif name.endswith((".nrrd", ".nhdr")):
        _check_nrrd_header(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputError(f"unreadable image file ({_itk_reason(error)})", path=path) from error
    # A 4-D NIfTI with a single time point is a 3-D volume in a 4-D header.
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = sitk.Extract(image, [*image.GetSize()[:3], 0], [0, 0, 0, 0])
    components = image.GetNumberOfComponentsPerPixel()
    if image.GetDimension() != 3 or components != 1:
        size = "x".join(str(s) for s in image.GetSize())
        kind = f"{components} components per voxel" if components != 1 else "scalar"
        raise InputError(
            f"expected a 3-D scalar volume, got a {image.GetDimension()}-D image of size {size} ({kind})",
            path=path,
        )
    return image


@contextlib.contextmanager
def _enough_memory(path: Path, image: sitk.Image) -> Iterator[None]:
    """A ``MemoryError`` while ``image``'s voxels are copied, checked or resampled becomes an ``InputError``
    naming the file (found by bench.fuzz_loaders: a header claiming 4,096 slices, on a busy machine)."""
    try:
        yield
    except MemoryError as error:
        size = "x".join(str(s) for s in image.GetSize())
        raise InputError(f"not enough memory to read its {size} voxels", path=path) from error


def _check_metaimage_header(path: Path) -> None:
    """Refuse a MetaImage header whose NDims would crash ITK's reader instead of raising."""
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    for match in _METAIMAGE_NDIMS.finditer(head):  # MetaIO takes the last one: check them all
        text = match.group(1).decode("latin-1")
        if not (text.isdigit() and int(text) in _METAIMAGE_DIMENSIONS):
            raise InputError(f"expected NDims of 1 to 10 in the MetaImage header, got {text!r}", path=path)


def _check_nifti_geometry(path: Path) -> None:
    """Refuse a NIfTI-1 header with infinite or NaN spacing or orientation: ITK's reader never returns on some."""
    try:
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rb") as handle:
            header = handle.read(348)
    except (OSError, EOFError, zlib.error):  # a damaged gzip stream: ITK reports it
        return
    if len(header) < 348:
        return
    for endian in "<>":
        size = struct.unpack_from(f"{endian}i", header, 0)[0]
        if size == 348:
            break
        if size == 540:
            return  # NIfTI-2: left to ITK
    else:  # ITK's reader can spin forever on such a header
        raise InputError("not a NIfTI file: its header size is neither 348 (NIfTI-1) nor 540 (NIfTI-2)", path=path)
    qform_code, sform_code = struct.unpack_from(f"{endian}2h", header, 252)
    used = list(struct.unpack_from(f"{endian}3f", header, 80))  # pixdim[1..3]: the voxel size
    if qform_code > 0:
        used += struct.unpack_from(f"{endian}6f", header, 256)  # quatern_b..d, qoffset_x..z
    if sform_code > 0:
        used += struct.unpack_from(f"{endian}12f", header, 280)  # srow_x, srow_y, srow_z
    if not all(math.isfinite(v) for v in used):
        raise InputError("the NIfTI header holds infinite or NaN spacing or orientation values", path=path)
    dims = struct.unpack_from(f"{endian}8h", header, 40)
    shape = [max(int(d), 1) for d in dims[1 : 1 + min(max(dims[0], 1), 7)]]
    voxels = math.prod(shape)
    if voxels > MAX_VOLUME_VOXELS:  # ITK would try to allocate and read it, for minutes, before failing
        raise InputError(
            f"the NIfTI header announces {'x'.join(map(str, shape))} voxels, more than MedView opens "
            f"({MAX_VOLUME_VOXELS:,})",
            path=path,
        )
    if not path.name.lower().endswith(".gz"):
        bits = struct.unpack_from(f"{endian}h", header, 72)[0]
        offset = struct.unpack_from(f"{endian}f", header, 108)[0]
        needed = int(offset) + voxels * max(int(bits), 1) // 8 if math.isfinite(offset) else 0
        if needed > path.stat().st_size:
            raise InputError(
                f"truncated: the header announces {'x'.join(map(str, shape))} voxels ({needed:,} bytes with the "
                f"header), the file holds {path.stat().st_size:,}",
                path=path,
            )


def _check_nrrd_header(path: Path) -> None:
    """Refuse NRRD headers that crash ITK's reader (teem) instead of raising: garbage in a field line, a
    dimension that is not a whole number, text encoding over binary data."""
    with open(path, "rb") as handle:
        data = handle.read(1 << 20)
    header, separator, body = data.partition(b"\n\n")
    lines = [line.rstrip(b"\r") for line in header.split(b"\n")[1:] if not line.startswith(b"#")]
    for line in lines:  # comments and key:=value pairs may hold UTF-8 (segment names); field lines are ASCII
        if not (set(line) <= _ASCII_LINE_BYTES or (b":=" in line and all(byte >= 0x20 for byte in line))):
            raise InputError(f"the NRRD header holds a damaged line ({line[:40]!r})", path=path)
    fields = dict(line.split(b":", 1) for line in lines if b":" in line and b":=" not in line)
    dimension = fields.get(b"dimension", b"3").strip()
    if not (dimension.isdigit() and 1 <= int(dimension) <= 16):
        raise InputError(f"expected an NRRD dimension of 1 to 16, got {dimension.decode('latin-1')!r}", path=path)
    encoding = fields.get(b"encoding", b"").strip().decode("latin-1").lower()
    if encoding not in _NRRD_TEXT_ENCODINGS:
        return
    detached = fields.get(b"data file")
    if detached is not None:  # a .nhdr naming its data file
        data_path = path.parent / detached.strip().decode("latin-1")
        if not data_path.is_file():
            return  # missing, or a list of files: ITK reports it
        with open(data_path, "rb") as handle:
            body = handle.read(1 << 20)
    elif not separator:
        return
    if not set(body) <= _TEXT_BYTES:
        raise InputError(f"the NRRD header says encoding {encoding}, but its data is not text", path=path)


def _reference_image(reference: Volume) -> sitk.Image:
    """An empty SimpleITK image with the reference volume's exact voxel grid."""
    depth, rows, columns = reference.shape
    image = sitk.Image([columns, rows, depth], sitk.sitkUInt8)
    image.SetSpacing([float(reference.spacing[2]), float(reference.spacing[1]), float(reference.spacing[0])])
    image.SetOrigin([float(v) for v in reference.origin])
    image.SetDirection([float(v) for v in reference.direction])
    return image


def _physical_extent(image: sitk.Image) -> np.ndarray:
    """LPS corners (8x3) of the region an image's voxels cover (voxel edges, not centres)."""
    size = image.GetSize()
    corners = []
    for i in (-0.5, size[0] - 0.5):
        for j in (-0.5, size[1] - 0.5):
            for k in (-0.5, size[2] - 0.5):
                corners.append(image.TransformContinuousIndexToPhysicalPoint((i, j, k)))
    return np.asarray(corners)


def _overlaps(moving: sitk.Image, reference: sitk.Image) -> bool:
    """Whether the box ``moving`` covers intersects the reference's voxel box at all."""
    corners = [reference.TransformPhysicalPointToContinuousIndex(tuple(p)) for p in _physical_extent(moving)]
    low, high = np.min(corners, axis=0), np.max(corners, axis=0)
    size = np.asarray(reference.GetSize())
    return bool(np.all(high > -0.5) and np.all(low < size - 0.5))


def _describe_extent(image: sitk.Image) -> str:
    corners = _physical_extent(image)
    low, high = corners.min(axis=0), corners.max(axis=0)
    return ", ".join(f"{axis} {a:.0f}..{b:.0f}" for axis, a, b in zip("LPS", low, high, strict=True)) + " mm"


def _label_dtype(max_label: int) -> type:
    return np.uint8 if max_label <= np.iinfo(np.uint8).max else np.uint16


def _resample_labels(labels: sitk.Image, reference: Volume, path: Path, what: str = "the mask") -> np.ndarray:
    """Nearest-neighbour resampling of a label image onto the reference grid (identity transform)."""
    target = _reference_image(reference)
    if not _overlaps(labels, target):
        raise InputError(
            f"{what} does not overlap the volume at all ({what} covers {_describe_extent(labels)}, "
            f"the volume {_describe_extent(target)}); is it from another scan?",
            path=path,
        )
    resampled = sitk.Resample(labels, target, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0, labels.GetPixelID())
    array = sitk.GetArrayFromImage(resampled)
    if not array.any():
        raise InputError(
            f"{what} overlaps the volume but none of its labelled voxels falls inside it: it covers nothing",
            path=path,
        )
    return array


# --------------------------------------------------------------------------- volumes


def read_volume(path: Path | str) -> Volume:
    """Read a NIfTI, NRRD or MetaImage volume, re-oriented to the closest LPS axes.

    SimpleITK hands out LPS geometry whatever the file stores (NIfTI is RAS on
    disk), so after ``canonical_axes`` the volume displays like the DICOM series.
    """
    path = Path(path)
    image = _read_itk_image(path)
    with _enough_memory(path, image):
        return _volume_of(image, path)


def _volume_of(image: sitk.Image, path: Path) -> Volume:
    array = sitk.GetArrayFromImage(image)  # [z, y, x]
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    spacing_zyx = tuple(float(s) for s in reversed(image.GetSpacing()))
    order, flips = canonical_axes(direction)
    spacing, origin, new_direction = reorient_geometry(
        array.shape,  # type: ignore[arg-type]
        spacing_zyx,  # type: ignore[arg-type]
        np.asarray(image.GetOrigin(), dtype=float),
        direction,
        order,
        flips,
    )
    notes = []
    if np.min(np.max(np.abs(direction), axis=0)) < _PARALLEL:
        notes.append(f"{path.name} is oblique: shown on its closest patient axes, not resampled")
    return Volume(
        voxels=np.ascontiguousarray(reorient_array(array, order, flips)),
        spacing=tuple(float(s) for s in spacing),  # type: ignore[arg-type]
        origin=tuple(float(v) for v in origin),  # type: ignore[arg-type]
        direction=tuple(float(v) for v in new_direction.ravel()),
        description=path.name,
        warnings=tuple(notes),
        info={"SeriesDescription": path.name},
    )


# --------------------------------------------------------------------------- label maps


def read_label_map(path: Path | str, reference: Volume) -> LabelMap:
    """Put a mask file onto ``reference``'s voxel grid.

    NIfTI/NRRD/MetaImage label images are resampled with nearest neighbour
    through their full LPS geometry (any axis order, flips or extent).  A DICOM
    SEG is read with highdicom; its frames are placed by the SOP Instance UIDs of
    the slices they were drawn on when those are the reference's slices (exact,
    no rounding), otherwise by the patient position of each frame.  Where
    segments overlap, the higher segment number wins (one label per voxel).

    Raises ``InputError`` naming the file when it is unreadable, not a 3-D label
    image, does not overlap the volume, covers nothing, or is a SEG drawn on
    another series.
    """
    path = Path(path)
    if _is_itk_file(path):
        return _read_itk_label_map(path, reference)
    if not path.exists():
        raise InputError("file not found", path=path)
    return _read_dicom_seg(path, reference)


def _segment_names(image: sitk.Image, values: Sequence[int]) -> dict[int, str]:
    """Names from a 3D Slicer ``.seg.nrrd`` header (SegmentN_Name), else "label N"."""
    names = {int(v): f"label {int(v)}" for v in values}
    keys = set(image.GetMetaDataKeys())
    index = 0
    while f"Segment{index}_Name" in keys:
        value_key = f"Segment{index}_LabelValue"
        if value_key in keys:
            with contextlib.suppress(ValueError):
                names[int(image.GetMetaData(value_key))] = image.GetMetaData(f"Segment{index}_Name")
        index += 1
    return names


def _read_itk_label_map(path: Path, reference: Volume) -> LabelMap:
    image = _read_itk_image(path)
    with _enough_memory(path, image):
        return _label_map_of(image, path, reference)


def _label_map_of(image: sitk.Image, path: Path, reference: Volume) -> LabelMap:
    array = sitk.GetArrayFromImage(image)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise InputError("not a label image: it holds non-integer values (a probability map or a CT?)", path=path)
    elif array.dtype.kind not in "iub":
        raise InputError(f"not a label image: voxel type {array.dtype}", path=path)
    values = np.unique(array)
    if values.size and (values[0] < 0 or values[-1] > np.iinfo(np.uint16).max):
        raise InputError(
            f"not a label image: values range {values[0]:g}..{values[-1]:g}, expected 0..65535 (a CT?)", path=path
        )
    labels = [int(v) for v in values if v != 0]
    if not labels:
        raise InputError("the mask is empty: it has no labelled voxel", path=path)
    dtype = _label_dtype(labels[-1])
    mask = sitk.GetImageFromArray(array.astype(dtype, copy=False))
    mask.CopyInformation(image)
    resampled = _resample_labels(mask, reference, path)
    return LabelMap(labels=resampled.astype(dtype, copy=False), names=_segment_names(image, labels), source=str(path))


# --------------------------------------------------------------------------- DICOM SEG


def _read_dicom_seg(path: Path, reference: Volume) -> LabelMap:
    import highdicom as hd
    import pydicom

    from medview.io.dicom import dicom_series_uid

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        sop_class = str(header.get("SOPClassUID", ""))
    except Exception as error:  # pydicom raises many types for damaged files; all mean "unreadable"
        raise InputError(f"not a readable DICOM file or mask ({type(error).__name__}: {error})", path=path) from error
    if sop_class not in _SEG_SOP_CLASSES:
        name = getattr(header.get("SOPClassUID"), "name", sop_class or "no SOP class")
        raise InputError(f"not a DICOM Segmentation but a {name} object", path=path)
    try:
        seg = hd.seg.segread(path)
        # the last frame sits at the end of the pixel data: it fails to decode when the file is cut short
        seg.get_stored_frame(int(seg.get("NumberOfFrames", 1) or 1))
        _is_fractional(seg)  # SegmentationType is required: a SEG without one fails here, not while placed
    except Exception as error:  # highdicom raises many types for malformed objects
        raise InputError(f"unreadable DICOM SEG ({type(error).__name__}: {error})", path=path) from error
    segment_numbers = [int(n) for n in seg.segment_numbers]
    if not segment_numbers:
        raise InputError("the segmentation defines no segment", path=path)
    names = {n: str(seg.get_segment_description(n).segment_label) for n in segment_numbers}
    dtype = _label_dtype(max(segment_numbers))

    ref_uids = [u for u in reference.slice_uids if u]
    source_refs = seg.get_source_image_uids()
    source_uids = {str(sop) for _, _, sop in source_refs}
    if ref_uids and source_uids and not source_uids & set(ref_uids):
        seg_series = {str(series) for _, series, _ in source_refs}
        if dicom_series_uid(reference.series_uid) is not None and reference.series_uid not in seg_series:
            raise InputError(
                f"the segmentation was drawn on series {', '.join(sorted(seg_series))}, "
                f"not on the open series {reference.series_uid}",
                path=path,
            )

    labels = _seg_by_source_instances(seg, reference, source_uids, segment_numbers, dtype, path)
    if labels is None:
        labels = _seg_by_geometry(seg, reference, segment_numbers, dtype, path)
    if not labels.any():
        raise InputError("the segmentation covers nothing on this volume (all its frames are empty)", path=path)
    return LabelMap(labels=labels, names=names, source=str(path))


def _seg_pixels(
    fetch: Callable[..., tuple[np.ndarray, Any]], fractional: bool, segment_numbers: list[int], dtype: type
) -> tuple[np.ndarray, Any]:
    """One label per pixel from a highdicom getter, higher segment number winning.

    ``fetch(**options)`` calls the getter and returns ``(array, extra)``. BINARY
    and LABELMAP segmentations combine in one call (highdicom puts the highest
    segment number on top when overlap checks are skipped); FRACTIONAL ones are
    thresholded at 0.5 one segment at a time, in increasing segment number.
    """
    if not fractional:
        return fetch(combine_segments=True, skip_overlap_checks=True, dtype=dtype)
    combined: np.ndarray | None = None
    extra: Any = None
    for number in sorted(segment_numbers):
        array, extra = fetch(segment_numbers=[number], combine_segments=False, rescale_fractional=True)
        plane = np.asarray(array)[..., 0] >= 0.5
        if combined is None:
            combined = np.zeros(plane.shape, dtype=dtype)
        elif combined.shape != plane.shape:
            raise ValueError(f"segment {number} has shape {plane.shape}, others {combined.shape}")
        combined[plane] = number
    return combined, extra  # type: ignore[return-value]


def _is_fractional(seg: Any) -> bool:
    import highdicom as hd

    return bool(seg.segmentation_type == hd.seg.SegmentationTypeValues.FRACTIONAL)


def _frame_axes(seg: Any, reference: Volume) -> tuple[np.ndarray, np.ndarray] | None:
    """LPS row and column directions of the SEG frames, from the SEG or its source image."""
    from medview.io.dicom import DicomSource, read_header

    orientation = None
    for sequence in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        groups = getattr(seg, sequence, None)
        if groups and "PlaneOrientationSequence" in groups[0]:
            orientation = groups[0].PlaneOrientationSequence[0].get("ImageOrientationPatient")
            break
    if orientation is None:
        # no geometry in the SEG: its frames are on the source image grid
        label = next((f for f in reference.slice_files if f), "")
        if not label:
            return None
        try:
            orientation = read_header(DicomSource.from_label(label)).get("ImageOrientationPatient")
        except Exception:  # noqa: BLE001 - any failure means "cannot tell", and the geometry path decides
            return None
    try:
        values = np.asarray([float(v) for v in orientation], dtype=float)
    except (TypeError, ValueError):
        return None
    if values.shape != (6,):
        return None
    return values[:3], values[3:]


def _seg_by_source_instances(
    seg: Any,
    reference: Volume,
    source_uids: set[str],
    segment_numbers: list[int],
    dtype: type,
    path: Path,
) -> np.ndarray | None:
    """Labels placed slice by slice through the source SOP Instance UIDs, or None if not applicable.

    Applies when every image the SEG references is a slice of the reference, the
    reference's slice UIDs are unique and run along its z axis, and the SEG frame
    plane is the reference's axial plane (possibly flipped or transposed by the
    loader's LPS re-orientation, which is undone here).
    """
    uids = list(reference.slice_uids)
    present = [u for u in uids if u]
    if (
        not source_uids
        or len(uids) != reference.shape[0]
        or len(set(present)) != len(present)
        or not source_uids <= set(present)
    ):
        return None
    axes = _frame_axes(seg, reference)
    if axes is None:
        return None
    row_dir, col_dir = axes
    direction = reference.direction_matrix
    x_axis, y_axis, z_axis = direction[:, 0], direction[:, 1], direction[:, 2]
    if abs(float(np.dot(np.cross(row_dir, col_dir), z_axis))) < _PARALLEL:
        return None  # frames are not the reference's slices (e.g. a sagittal series shown axially)
    transpose = abs(float(np.dot(row_dir, x_axis))) < _PARALLEL
    frame_x, frame_y = (col_dir, row_dir) if transpose else (row_dir, col_dir)
    if abs(float(np.dot(frame_x, x_axis))) < _PARALLEL or abs(float(np.dot(frame_y, y_axis))) < _PARALLEL:
        return None
    rows, columns = int(seg.Rows), int(seg.Columns)  # type: ignore[attr-defined]
    expected = (reference.shape[2], reference.shape[1]) if transpose else (reference.shape[1], reference.shape[2])
    if (rows, columns) != expected:
        return None
    spatial_preserved = {
        str(item.get("SpatialLocationsPreserved", "")).upper()
        for group in getattr(seg, "PerFrameFunctionalGroupsSequence", [])
        for derivation in group.get("DerivationImageSequence", [])
        for item in derivation.get("SourceImageSequence", [])
    }
    if "NO" in spatial_preserved or "REORIENTED_ONLY" in spatial_preserved:
        return None
    z_of = {uid: z for z, uid in enumerate(uids) if uid}
    wanted = sorted(source_uids, key=z_of.__getitem__)

    def fetch(**options: Any) -> tuple[np.ndarray, None]:
        pixels = seg.get_pixels_by_source_instance(  # type: ignore[attr-defined]
            source_sop_instance_uids=wanted,
            ignore_spatial_locations=True,
            assert_missing_frames_are_empty=True,
            **options,
        )
        return pixels, None

    try:
        frames, _ = _seg_pixels(fetch, _is_fractional(seg), segment_numbers, dtype)
    except (RuntimeError, KeyError, ValueError):
        return None  # highdicom cannot index this SEG by source instance: place it by geometry
    frames = np.asarray(frames)
    if transpose:
        frames = frames.transpose(0, 2, 1)
    if float(np.dot(frame_x, x_axis)) < 0:
        frames = frames[:, :, ::-1]
    if float(np.dot(frame_y, y_axis)) < 0:
        frames = frames[:, ::-1, :]
    labels: np.ndarray = np.zeros(reference.shape, dtype=dtype)
    labels[[z_of[u] for u in wanted]] = frames
    return labels


def _seg_by_geometry(seg: Any, reference: Volume, segment_numbers: list[int], dtype: type, path: Path) -> np.ndarray:
    """Labels placed through each frame's patient position (highdicom volume, then resampling)."""

    def fetch(**options: Any) -> tuple[np.ndarray, Any]:
        volume = seg.get_volume(**options)  # type: ignore[attr-defined]
        return volume.array, volume

    try:
        array, volume = _seg_pixels(fetch, _is_fractional(seg), segment_numbers, dtype)
    except Exception as error:  # highdicom reports irregular or incomplete geometry with several types
        raise InputError(
            "the segmentation's frames neither reference this volume's slices nor form a regular stack "
            f"in patient space, so they cannot be placed ({type(error).__name__}: {error})",
            path=path,
        ) from error
    if str(getattr(volume.coordinate_system, "value", volume.coordinate_system)).upper() != "PATIENT":
        raise InputError("the segmentation is not in patient coordinates (a slide image?)", path=path)
    array = np.asarray(array).astype(dtype, copy=False)  # [slice, row, column]
    affine = np.asarray(volume.affine, dtype=float)
    steps = affine[:3, :3]  # columns: LPS step of one slice, row, column index
    spacing = np.linalg.norm(steps, axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))  # ITK (x, y, z) = (column, row, slice)
    image.SetSpacing([float(spacing[2]), float(spacing[1]), float(spacing[0])])
    image.SetOrigin([float(v) for v in affine[:3, 3]])
    unit = steps / spacing
    image.SetDirection([float(v) for v in np.column_stack([unit[:, 2], unit[:, 1], unit[:, 0]]).ravel()])
    return _resample_labels(image, reference, path, what="the segmentation").astype(dtype, copy=False)
