"""AI results as standard DICOM objects that a PACS stores and other viewers show.

Beside the DICOM SEG (``mask_export``), a run's results are written as:

- a **Structured Report** (``write_measurement_report``): TID 1500 "Imaging
  Measurement Report" in a Comprehensive 3D SR, one measurement group per
  finding, each with its algorithm identification, its coded finding and
  site, numeric measurements and coded qualitative evaluations, and
  references to the CT images (or the SEG segment) it is about;
- a **Parametric Map** (``write_parametric_map``): maps (a probability map,
  Grad-CAM) on the source images' pixel grid, 16-bit with a real world value
  mapping that says what the values mean and their range;
- a **Secondary Capture** series (``write_secondary_capture``): the CT slice
  with the overlay and a warning burned in, for PACS viewers that show
  neither SEG nor parametric maps;
- an **Encapsulated PDF** (``write_encapsulated_pdf``): the case report.

Every object belongs to the source series' study and patient, takes the
source headers through the same preparation as the SEG (stand-in UIDs for
anonymised series, empty type 2 attributes), and is written atomically.
The writers take plain data: the workflows map the engine's results to it.

Codes are SNOMED CT and DCM where a code exists; the rest come from
MedView's private coding scheme ``99MEDVIEW`` (``PRIVATE_CODES``, documented
in README), declared in each SR's Coding Scheme Identification Sequence.

The readers go the other way: ``find_result_files`` finds the reports, SEGs and
maps made from a series beside it on disk, ``read_measurement_report`` and
``read_parametric_map`` put them back on the volume's slices.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from medview import __version__
from medview.errors import Cancelled, InputError
from medview.io.mask_export import CodeTriple, SourcePlane, coded, source_planes, write_atomically
from medview.io.volume import Volume
from medview.progress import CancelCheck

#: MedView's private coding scheme: designator, name, responsible organisation
PRIVATE_SCHEME = ("99MEDVIEW", "MedView AI result codes", "MedView")
PRIVATE = PRIVATE_SCHEME[0]
#: the character set of the objects' own text (values copied from the source are re-encoded on writing)
UTF8 = "ISO_IR 192"

# standard codes
PROBABILITY: CodeTriple = ("122157", "DCM", "Probability")
THRESHOLD: CodeTriple = ("122411", "DCM", "Threshold Value")
SENSITIVITY: CodeTriple = ("111088", "DCM", "Case Sensitivity")
SPECIFICITY: CodeTriple = ("111090", "DCM", "Case Specificity")
VOLUME: CodeTriple = ("118565006", "SCT", "Volume")
PRESENT: CodeTriple = ("52101004", "SCT", "Present")
ABSENT: CodeTriple = ("272519000", "SCT", "Absent")
YES: CodeTriple = ("373066001", "SCT", "Yes")
NO: CodeTriple = ("373067005", "SCT", "No")
NO_UNITS: CodeTriple = ("1", "UCUM", "no units")
MILLILITRE: CodeTriple = ("ml", "UCUM", "milliliter")
CT_PROCEDURE: CodeTriple = ("77477000", "SCT", "Computerized axial tomography")

# private codes: MedView's own concepts, where SNOMED CT and DCM have none
FIRST_SLICE: CodeTriple = ("MV-FIRST-SLICE", PRIVATE, "First slice holding the finding (1-based)")
LAST_SLICE: CodeTriple = ("MV-LAST-SLICE", PRIVATE, "Last slice holding the finding (1-based)")
SLICES_RUN: CodeTriple = ("MV-SLICES-RUN", PRIVATE, "Slices the model ran on")
SLICES_POSITIVE: CodeTriple = ("MV-SLICES-POS", PRIVATE, "Slices at or above the threshold")
PADDING_SLOTS: CodeTriple = ("MV-PADDING", PRIVATE, "Black padding slots in the group")
RULE_SWITCHED: CodeTriple = ("MV-RULE-0.9", PRIVATE, "Healthy majority overruled by a group above 0.9")
GRAD_CAM: CodeTriple = ("MV-GRADCAM", PRIVATE, "Grad-CAM class activation")


def class_probability(name: str) -> CodeTriple:
    """The private concept "Probability of <class>" for a model's class name (code ``MVP-<CLASS>``)."""
    return (private_code("MVP", name), PRIVATE, f"Probability of {name.replace('_', ' ')}")


def class_votes(name: str) -> CodeTriple:
    """The private concept "Groups voting <class>" for a model's class name (code ``MVV-<CLASS>``)."""
    return (private_code("MVV", name), PRIVATE, f"Groups voting {name.replace('_', ' ')}")


#: every private code this module writes, for README's table (the per-class ones are patterns)
PRIVATE_CODES: tuple[CodeTriple, ...] = (
    FIRST_SLICE,
    LAST_SLICE,
    SLICES_RUN,
    SLICES_POSITIVE,
    PADDING_SLOTS,
    RULE_SWITCHED,
    GRAD_CAM,
    ("MVP-<CLASS>", PRIVATE, "Probability of <class>"),
    ("MVV-<CLASS>", PRIVATE, "Groups voting <class>"),
    ("MVC-<NAME>", PRIVATE, "A class or structure with no SNOMED CT code"),
)


def private_code(prefix: str, name: str) -> str:
    """``PREFIX-NAME`` as a code value of the private scheme: SH, at most 16 characters (upper case letters,
    digits and hyphens)."""
    text = "".join(c if c.isascii() and c.isalnum() else "-" for c in name.upper()).strip("-")
    return f"{prefix}-{text}"[:16]


# --------------------------------------------------------------------------- plain data


@dataclass(frozen=True)
class Algorithm:
    """The model that made a result: the SR's and maps' algorithm identification."""

    name: str  # the model id
    version: str
    demo: bool
    parameters: Mapping[str, str] = field(default_factory=dict)  # e.g. threshold, ROI, operating point

    def parameter_lines(self) -> list[str]:
        lines = [f"{key}: {value}" for key, value in self.parameters.items()]
        if self.demo:
            lines.insert(0, "DEMO MODEL: not for diagnosis")
        return lines


@dataclass(frozen=True)
class Numeric:
    """One measurement: a coded concept, its value and unit."""

    concept: CodeTriple
    value: float
    unit: CodeTriple = NO_UNITS


@dataclass(frozen=True)
class Coded:
    """One qualitative evaluation: a coded concept and its coded value."""

    concept: CodeTriple
    value: CodeTriple


@dataclass(frozen=True)
class FindingGroup:
    """One measurement group of the report: what was found, where, and on which images."""

    label: str  # its tracking identifier, in words ("kidney stone, slice 12")
    finding: CodeTriple
    site: CodeTriple | None = None
    slices: tuple[int, ...] = ()  # volume slices (0-based) the group is about: referenced as source images
    measurements: tuple[Numeric, ...] = ()
    evaluations: tuple[Coded, ...] = ()
    segment_file: Path | None = None  # a DICOM SEG of the same series whose segment ``segment_number`` it measures
    segment_number: int = 1


# --------------------------------------------------------------------------- source images


@dataclass
class _Sources:
    """The source series' prepared headers and where each volume slice sits in them."""

    datasets: list[Any]
    planes: list[SourcePlane]
    present: set[int]

    @classmethod
    def of(cls, volume: Volume) -> _Sources:
        datasets, planes, present = source_planes(volume)
        return cls(datasets, planes, present)

    @property
    def multi_frame(self) -> bool:
        return len(self.datasets) == 1 and len(self.planes) > 1

    def plane_index(self, z: int) -> int:
        for index, plane in enumerate(self.planes):
            if plane.z == z:
                return index
        raise InputError(f"slice {z + 1} is missing from the DICOM series: a DICOM object cannot reference it")

    def image_of(self, z: int) -> tuple[Any, int | None]:
        """The header of slice ``z``'s image and its frame number (1-based) in a multi-frame image, else None."""
        index = self.plane_index(z)
        return (self.datasets[0], index + 1) if self.multi_frame else (self.datasets[index], None)

    def first(self) -> Any:
        return self.datasets[0]


def _common_attributes(target: Any, source: Any, *, series_description: str, series_number: int, modality: str) -> None:
    """Patient, study and series attributes of a new object made by hand (pydicom), from a source header."""
    import pydicom.uid

    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "StudyID",
        "AccessionNumber",
        "ReferringPhysicianName",
    ):
        setattr(target, keyword, source.get(keyword, ""))
    target.SpecificCharacterSet = UTF8
    now = datetime.datetime.now()
    target.SeriesInstanceUID = pydicom.uid.generate_uid()
    target.SOPInstanceUID = pydicom.uid.generate_uid()
    target.Modality = modality
    target.SeriesNumber = series_number
    target.SeriesDescription = series_description[:64]
    target.InstanceNumber = 1
    target.ContentDate = now.strftime("%Y%m%d")
    target.ContentTime = now.strftime("%H%M%S")
    target.Manufacturer = "MedView"
    target.ManufacturerModelName = "MedView"
    target.SoftwareVersions = __version__


# --------------------------------------------------------------------------- Structured Report


def _algorithm_identification(algorithm: Algorithm) -> Any:
    import highdicom as hd

    return hd.sr.AlgorithmIdentification(
        name=algorithm.name, version=algorithm.version, parameters=algorithm.parameter_lines() or None
    )


def _source_images_for_group(sources: _Sources, slices: Sequence[int]) -> list[Any]:
    """References to the images of ``slices``; a slice missing from the series (shown as air) has none."""
    import highdicom as hd

    slices = [z for z in slices if z in sources.present]
    if sources.multi_frame:
        dataset = sources.first()
        frames = sorted({sources.plane_index(z) + 1 for z in slices})
        return [hd.sr.SourceImageForMeasurementGroup(dataset.SOPClassUID, dataset.SOPInstanceUID, frames)]
    references = []
    for z in sorted(set(slices)):
        dataset, _ = sources.image_of(z)
        references.append(hd.sr.SourceImageForMeasurementGroup(dataset.SOPClassUID, dataset.SOPInstanceUID))
    return references


def _measurement_group(group: FindingGroup, sources: _Sources, algorithm: Any, segments: dict[Path, Any]) -> Any:
    import highdicom as hd

    measurements = [
        hd.sr.Measurement(name=coded(m.concept), value=m.value, unit=coded(m.unit)) for m in group.measurements
    ]
    evaluations = [hd.sr.QualitativeEvaluation(name=coded(e.concept), value=coded(e.value)) for e in group.evaluations]
    common: dict[str, Any] = {
        "tracking_identifier": hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=group.label[:64]),
        "finding_type": coded(group.finding),
        "algorithm_id": algorithm,
        "finding_sites": [hd.sr.FindingSite(coded(group.site))] if group.site else None,
        "measurements": measurements or None,
        "qualitative_evaluations": evaluations or None,
    }
    if group.segment_file is not None:
        segmentation = segments[group.segment_file]
        # not ReferencedSegment.from_segmentation: it expects the segment in every frame's functional groups,
        # and a one-segment SEG (ours, highdicom's) keeps it in the shared ones
        segment = hd.sr.ReferencedSegment(
            sop_class_uid=segmentation.SOPClassUID,
            sop_instance_uid=segmentation.SOPInstanceUID,
            segment_number=group.segment_number,
            source_series=hd.sr.SourceSeriesForSegmentation(segmentation.ReferencedSeriesSequence[0].SeriesInstanceUID),
        )
        return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(referenced_segment=segment, **common)
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        source_images=_source_images_for_group(sources, group.slices) or None, **common
    )


def _declare_private_scheme(dataset: Any) -> None:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodingSchemeDesignator, item.CodingSchemeName, item.CodingSchemeResponsibleOrganization = PRIVATE_SCHEME
    schemes = list(dataset.get("CodingSchemeIdentificationSequence", []))
    dataset.CodingSchemeIdentificationSequence = [*schemes, item]


def write_measurement_report(
    path: Path | str,
    volume: Volume,
    groups: Sequence[FindingGroup],
    algorithm: Algorithm,
    *,
    series_description: str,
    series_number: int = 901,
) -> Path:
    """Write ``groups`` as a TID 1500 measurement report (Comprehensive 3D SR) on ``volume``'s series.

    Every group carries ``algorithm``'s identification (the demo flag among its
    parameters) and references the CT images of its ``slices``, or, with a
    ``segment_file``, that SEG's segment (the SEG joins the report's evidence).

    Raises:
        InputError: the volume has no DICOM source, a group names a slice missing from
            it, or a segment file cannot be read as a SEG of this series.
        ExportError: the file cannot be written.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    path = Path(path)
    sources = _Sources.of(volume)
    segments: dict[Path, Any] = {}
    for group in groups:
        if group.segment_file is not None and group.segment_file not in segments:
            try:
                segments[group.segment_file] = hd.seg.segread(group.segment_file)
            except (OSError, ValueError, AttributeError) as error:
                raise InputError(f"cannot read it as a DICOM SEG ({error})", path=group.segment_file) from error
    identification = _algorithm_identification(algorithm)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="MedView", manufacturer_name="MedView", model_name=algorithm.name[:64]
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=coded(CT_PROCEDURE),
        imaging_measurements=[_measurement_group(group, sources, identification, segments) for group in groups],
        title=codes.DCM.ImagingMeasurementReport,
    )
    try:
        sr = hd.sr.Comprehensive3DSR(
            evidence=[*sources.datasets, *segments.values()],
            content=report,
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="MedView",
            is_complete=True,
            series_description=series_description[:64],
            software_versions=__version__,
        )
    except (ValueError, TypeError, AttributeError) as error:
        raise InputError(
            f"the source series cannot carry a structured report ({type(error).__name__}: {error})",
            path=volume.slice_files[min(sources.present)],
        ) from error
    _declare_private_scheme(sr)
    sr.SpecificCharacterSet = UTF8  # the validated line's intervals ("0.65–0.79") are not Latin-1
    return write_atomically(path, partial(_save, sr))


# --------------------------------------------------------------------------- Parametric Map


@dataclass(frozen=True)
class MapMeaning:
    """What a parametric map's values are: its real world value mapping."""

    label: str  # short, e.g. "LIVER_PROB"
    explanation: str  # e.g. "Probability of liver (liver-unet 1.0.0)"
    value_range: tuple[float, float] = (0.0, 1.0)
    unit: CodeTriple = NO_UNITS
    quantity: CodeTriple = PROBABILITY


_STORED_MAX = 65535


def write_parametric_map(
    path: Path | str,
    values: Mapping[int, np.ndarray],
    volume: Volume,
    meaning: MapMeaning,
    algorithm: Algorithm,
    *,
    series_description: str,
    series_number: int = 902,
) -> Path:
    """Write float maps, one ``[y, x]`` array per volume slice in ``values``, as a DICOM Parametric Map.

    Each frame lies on its CT image's pixel grid (the loader's LPS flips undone)
    and references it; the real world value mapping says what the values mean.
    Values are stored to 1/65535 of ``meaning.value_range`` and clipped to it.
    Only series of single-frame images are supported.

    Raises:
        InputError: no DICOM source, a slice missing from it, a map not of the slice's
            size, or a multi-frame source series.
        ExportError: the file cannot be written.
    """
    import highdicom as hd
    from pydicom.uid import RLELossless

    path = Path(path)
    if meaning.value_range[1] <= meaning.value_range[0]:
        raise ValueError(f"meaning.value_range: expected low < high, got {meaning.value_range}")
    if not values:
        raise ValueError("values: expected at least one slice's map")
    sources = _Sources.of(volume)
    if sources.multi_frame:
        raise InputError(
            "parametric maps are written only for series of single-frame images; this series is one multi-frame image",
            path=volume.slice_files[min(sources.present)],
        )
    shape = volume.shape[1:]
    datasets, frames = [], []
    for z in sorted(values):
        array = np.asarray(values[z], dtype=np.float32)
        if array.shape != shape:
            raise ValueError(f"values[{z}]: expected the slice shape {shape}, got {array.shape}")
        index = sources.plane_index(z)
        datasets.append(sources.datasets[index])
        # SourcePlane.pixels takes a volume; a one-slice stand-in at index z would copy it, so index from 0
        plane = sources.planes[index]
        frames.append(SourcePlane(0, plane.transpose, plane.flip_rows, plane.flip_columns).pixels(array[None]))
    low, high = meaning.value_range
    # Stored as 16-bit integers mapped back to the values by the slope and intercept, RLE-compressed: a tenth
    # of float32's size for Grad-CAM (mostly zeros), at a step of 1/65535 of the range.
    scale = (high - low) / _STORED_MAX
    stored = np.clip(np.round((np.stack(frames) - low) / scale), 0, _STORED_MAX).astype(np.uint16)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=meaning.label[:16],
        lut_explanation=meaning.explanation[:64],
        unit=coded(meaning.unit),
        value_range=(0, _STORED_MAX),
        slope=scale,
        intercept=float(low),
        quantity_definition=coded(meaning.quantity),
    )
    description = f"{meaning.explanation}{' DEMO not for diagnosis' if algorithm.demo else ''}"
    try:
        parametric_map = hd.pm.ParametricMap(
            source_images=datasets,
            pixel_array=stored,
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="MedView",
            manufacturer_model_name=algorithm.name[:64],
            software_versions=f"{algorithm.version} (MedView {__version__})",
            device_serial_number="1",
            contains_recognizable_visual_features=False,
            real_world_value_mappings=[mapping],
            voi_lut_transformations=[hd.VOILUTTransformation(window_center=_STORED_MAX / 2, window_width=_STORED_MAX)],
            transfer_syntax_uid=RLELossless,
            content_description=description[:64],
            content_label=_code_string(meaning.label),
            series_description=series_description[:64],
        )
    except (ValueError, TypeError, AttributeError) as error:
        raise InputError(
            f"the source series cannot carry a parametric map ({type(error).__name__}: {error})",
            path=volume.slice_files[min(sources.present)],
        ) from error
    _type_2c_laterality(parametric_map)
    return write_atomically(path, partial(_save, parametric_map))


def _save(dataset: Any, target: Path) -> None:
    dataset.save_as(target, enforce_file_format=True)


def _type_2c_laterality(dataset: Any) -> None:
    """An empty Laterality where highdicom leaves it out: dciodvfy asks for it (type 2C) on CT of the
    trunk, and the source CT does not say one side."""
    if "Laterality" not in dataset:
        dataset.Laterality = ""


def _code_string(text: str) -> str:
    """A valid Code String (A-Z, 0-9, space, underscore; 16 characters)."""
    value = "".join(c if c.isascii() and (c.isalnum() or c in " _") else "_" for c in text.upper())
    return (value.strip() or "MAP")[:16]


# --------------------------------------------------------------------------- Secondary Capture


def _orientation_letters(vector: np.ndarray) -> str:
    """DICOM patient orientation letters for an LPS direction, strongest axis first (e.g. "L", "PF")."""
    letters = []
    for axis in np.argsort(-np.abs(vector)):
        if abs(vector[axis]) > 0.1:
            letters.append(("L", "P", "H")[axis] if vector[axis] > 0 else ("R", "A", "F")[axis])
    return "".join(letters[:2]) or "L"


#: overlay values below this are not drawn on a capture (Grad-CAM's faint background would tint the whole slice)
_OVERLAY_FLOOR = 0.2


def _burned_in_slice(
    hu: np.ndarray,
    overlay: np.ndarray,
    colour: tuple[int, int, int] | None,
    window: tuple[float, float],
    lines: Sequence[str],
) -> np.ndarray:
    """An RGB image of a CT plane (``window`` = centre, width) with ``overlay`` (0-1) blended in and ``lines``
    of text written on it.  ``colour`` draws a mask in one colour; None draws a map from red (low) to yellow
    (high).  Drawn with NumPy and Pillow: the io layer does not use Qt."""
    from PIL import Image, ImageDraw, ImageFont

    centre, width = window
    grey = np.clip((hu - (centre - width / 2)) / width, 0.0, 1.0)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    values = np.clip(overlay, 0.0, 1.0)
    if colour is None:
        tint = np.stack([np.ones_like(values), values, np.zeros_like(values)], axis=-1)
    else:
        tint = np.broadcast_to(np.asarray(colour, dtype=float) / 255.0, rgb.shape)
    alpha = np.where(values >= _OVERLAY_FLOOR, 0.5 if colour is not None else 0.25 + 0.35 * values, 0.0)[..., None]
    rgb = rgb * (1 - alpha) + alpha * tint
    image = Image.fromarray((rgb * 255).round().astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    size = max(10, image.height // 36)
    font = ImageFont.load_default(size=size)
    y = 4
    for line in lines:
        box = draw.textbbox((4, y), line, font=font)
        draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
        draw.text((4, y), line, fill=(255, 255, 0), font=font)
        y = int(box[3]) + 4
    return np.asarray(image)


def write_secondary_capture(
    folder: Path | str,
    volume: Volume,
    overlays: Mapping[int, np.ndarray],
    algorithm: Algorithm,
    *,
    captions: Mapping[int, str],
    colour: tuple[int, int, int] | None,
    window: tuple[float, float],
    series_description: str,
    series_number: int = 903,
) -> list[Path]:
    """Write one Secondary Capture image per slice in ``overlays`` into ``folder``, all in one new series.

    Each image is the CT plane in ``window``, its overlay (``[y, x]`` values 0-1 on the volume's slice: a
    mask drawn in ``colour``, or a map when ``colour`` is None) and burned-in text: that it is an AI result
    (from a demo model: not for diagnosis), the slice's caption, the model.

    Raises:
        InputError: no DICOM source or a slice missing from it.
        ExportError: a file cannot be written.
    """
    import highdicom as hd
    from pydicom.uid import RLELossless

    folder = Path(folder)
    if not overlays:
        raise ValueError("overlays: expected at least one slice")
    folder.mkdir(exist_ok=True)
    sources = _Sources.of(volume)
    warning = "AI result, demo model: not for diagnosis" if algorithm.demo else "AI result: to be confirmed by a reader"
    series_uid = hd.UID()
    voxels = volume.voxels
    written = []
    for number, z in enumerate(sorted(overlays), start=1):
        dataset, _frame = sources.image_of(z)
        plane = sources.planes[sources.plane_index(z)]
        layout = SourcePlane(0, plane.transpose, plane.flip_rows, plane.flip_columns)
        hu = layout.pixels(np.asarray(voxels[z], dtype=np.float32)[None])
        overlay = layout.pixels(np.asarray(overlays[z], dtype=np.float32)[None])
        caption = captions.get(z, "")
        lines = [
            warning,
            f"{caption}, slice {z + 1}" if caption else f"Slice {z + 1}",
            f"{algorithm.name} {algorithm.version}",
        ]
        pixels = _burned_in_slice(hu, overlay, colour, window, lines)
        row_direction, column_direction = _plane_directions(plane, volume)
        capture = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=dataset,
            pixel_array=pixels,
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            series_instance_uid=series_uid,
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=number,
            manufacturer="MedView",
            patient_orientation=(_orientation_letters(row_direction), _orientation_letters(column_direction)),
            transfer_syntax_uid=RLELossless,
            series_description=series_description[:64],
        )
        _type_2c_laterality(capture)
        capture.BurnedInAnnotation = "YES"
        capture.ImageComments = f"{warning}. {caption}, slice {z + 1}"
        capture.SoftwareVersions = f"MedView {__version__}"
        target = folder / f"capture_{number:04d}.dcm"
        written.append(write_atomically(target, partial(_save, capture)))
    return written


def _plane_directions(plane: SourcePlane, volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """The LPS directions of the source image's rows and columns (its ImageOrientationPatient), from how
    its pixels sit in the volume's slice."""
    direction = volume.direction_matrix
    x_axis, y_axis = direction[:, 0], direction[:, 1]
    along_rows, along_columns = (y_axis, x_axis) if plane.transpose else (x_axis, y_axis)
    return (-along_rows if plane.flip_columns else along_rows), (-along_columns if plane.flip_rows else along_columns)


# --------------------------------------------------------------------------- Encapsulated PDF


def write_encapsulated_pdf(
    path: Path | str, pdf: bytes, volume: Volume, *, title: str, series_number: int = 904
) -> Path:
    """Wrap ``pdf`` (the case report) as an Encapsulated PDF in ``volume``'s study.

    Built with pydicom: highdicom does not write encapsulated documents.

    Raises:
        ValueError: ``pdf`` is not a PDF.
        InputError: the volume has no DICOM source.
        ExportError: the file cannot be written.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    if not pdf.startswith(b"%PDF-"):
        raise ValueError("pdf: expected the bytes of a PDF document")
    path = Path(path)
    source = _Sources.of(volume).first()
    document = Dataset()
    _common_attributes(document, source, series_description=title, series_number=series_number, modality="DOC")
    document.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"  # Encapsulated PDF Storage
    document.ConversionType = "WSD"  # workstation
    document.BurnedInAnnotation = "YES"
    document.DocumentTitle = title[:64]
    document.ConceptNameCodeSequence = []
    document.AcquisitionDateTime = document.ContentDate + document.ContentTime
    document.MIMETypeOfEncapsulatedDocument = "application/pdf"
    document.EncapsulatedDocument = pdf + (b"\0" if len(pdf) % 2 else b"")
    document.EncapsulatedDocumentLength = len(pdf)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = document.SOPClassUID
    meta.MediaStorageSOPInstanceUID = document.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    document.file_meta = meta
    return write_atomically(path, partial(_save, document))


# --------------------------------------------------------------------------- reading results back


#: SOP classes of the result objects found beside a series: SRs of TID 1500, SEG, Parametric Map
REPORT_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive 3D SR",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR",
    "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR",
}
SEGMENTATION_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
PARAMETRIC_MAP_CLASS = "1.2.840.10008.5.1.4.1.1.30"
#: at most this many files are looked at for results beside a series (headers only)
RESULT_SEARCH_LIMIT = 5000


@dataclass(frozen=True)
class FoundResult:
    """A result object that refers to a series: where it is and what it is."""

    path: Path
    sop_class: str
    sop_instance_uid: str


def _referenced_instances(dataset: Any) -> set[str]:
    """The SOP Instance UIDs a SEG, map (Referenced Series) or SR (its evidence) says it was made from."""
    found: set[str] = set()
    for keyword in ("ReferencedSeriesSequence", "CurrentRequestedProcedureEvidenceSequence"):
        for item in dataset.get(keyword, []):
            for series in [item, *item.get("ReferencedSeriesSequence", [])]:
                for key in ("ReferencedInstanceSequence", "ReferencedSOPSequence"):
                    found.update(str(ref.get("ReferencedSOPInstanceUID", "")) for ref in series.get(key, []))
    found.discard("")
    return found


def find_result_files(
    volume: Volume, *, limit: int = RESULT_SEARCH_LIMIT, cancelled: CancelCheck | None = None
) -> list[FoundResult]:
    """Reports, SEGs and parametric maps made from ``volume``'s series, found beside it on disk.

    Looked for in the folders that hold the series' files and in their sibling
    folders: the study folder of the received-studies store (one folder per
    series) and an export folder opened with the series.  An object counts when
    the images it names include one of the volume's; headers only.  Searching the
    store's index instead would miss exports opened from a folder; a folder walk
    covers both.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    from medview.io.dicom import DicomSource

    ours = set(volume.slice_uids) - {""}
    if not ours or not volume.slice_files:
        return []
    series_folders = {DicomSource.from_label(label).path.parent for label in volume.slice_files if label}
    study_uid = str(volume.info.get("StudyInstanceUID", "") or "")
    folders = set(series_folders)
    for folder in series_folders:
        if folder.parent != folder:
            siblings = (child for child in folder.parent.iterdir() if child.is_dir() and child not in folders)
            # a folder of other patients' studies is passed over by its first file, not read whole
            folders.update(sibling for sibling in siblings if _may_hold_study(sibling, study_uid))
    own_files = {DicomSource.from_label(label).path for label in volume.slice_files if label}
    candidates = sorted(
        path for folder in folders for path in folder.iterdir() if path.is_file() and path not in own_files
    )[:limit]
    found = []
    for path in candidates:
        if cancelled is not None and cancelled():
            raise Cancelled()
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
        except (OSError, InvalidDicomError, ValueError, TypeError, AttributeError):
            continue  # not DICOM, or damaged: opening the series does not report on its neighbours
        sop_class = str(dataset.get("SOPClassUID", ""))
        if sop_class not in REPORT_CLASSES and sop_class not in (SEGMENTATION_CLASS, PARAMETRIC_MAP_CLASS):
            continue
        if _referenced_instances(dataset) & ours:
            found.append(FoundResult(path, sop_class, str(dataset.get("SOPInstanceUID", ""))))
    return found


def _may_hold_study(folder: Path, study_uid: str) -> bool:
    """Whether ``folder``'s first DICOM file belongs to the study (or the study has no UID to tell by)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not study_uid:
        return True
    for path in sorted(folder.iterdir())[:20]:
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
        except (OSError, InvalidDicomError, ValueError, TypeError, AttributeError):
            continue
        return str(header.get("StudyInstanceUID", "")) == study_uid
    return False


@dataclass(frozen=True)
class ReportedGroup:
    """One measurement group of a report, read back."""

    label: str
    finding: str  # the finding type's meaning
    site: str
    measurements: tuple[tuple[str, float, str], ...]  # (concept meaning, value, unit code)
    evaluations: tuple[tuple[str, str], ...]  # (concept meaning, value meaning)
    slices: tuple[int, ...]  # the volume slices (0-based) of its source images
    segment_uid: str = ""  # the SEG whose segment it measures


@dataclass(frozen=True)
class ReadReport:
    """A TID 1500 measurement report as MedView shows it again."""

    path: Path
    algorithm: Algorithm | None
    series_description: str
    written: str  # content date and time, "YYYY-MM-DD HH:MM"
    manufacturer: str
    groups: tuple[ReportedGroup, ...]


def _texts_by_code(items: Any, code_value: str) -> list[str]:
    found = []
    for item in items:
        concept = item.get("ConceptNameCodeSequence")
        if item.get("ValueType") == "TEXT" and concept and concept[0].CodeValue == code_value:
            found.append(str(item.TextValue))
        found += _texts_by_code(item.get("ContentSequence", []), code_value)
    return found


def _algorithm_of_group(group: Any) -> Algorithm | None:
    """The algorithm identification (TID 4019: DCM 111001 name, 111003 version, 111002 parameters)."""
    names, versions = _texts_by_code(group, "111001"), _texts_by_code(group, "111003")
    if not names:
        return None
    parameters: dict[str, str] = {}
    demo = False
    for line in _texts_by_code(group, "111002"):
        if line.startswith("DEMO MODEL"):
            demo = True
        elif ": " in line:
            key, value = line.split(": ", 1)
            parameters[key] = value
    return Algorithm(names[0], versions[0] if versions else "", demo, parameters)


def read_measurement_report(path: Path | str, volume: Volume) -> ReadReport:
    """Read a TID 1500 measurement report made from ``volume``'s series (highdicom), for showing it again.

    Raises:
        InputError: the file is not a readable measurement report.
    """
    import highdicom as hd

    path = Path(path)
    slice_of = _slice_finder(volume)
    try:
        report = hd.sr.srread(path)
        content: Any = report.content  # a MeasurementReport for TID 1500 (highdicom types it as its base)
        groups = [*content.get_image_measurement_groups(), *content.get_volumetric_roi_measurement_groups()]
        read = []
        for group in groups:
            images = getattr(group, "source_images", None) or []
            segment = getattr(group, "referenced_segment", None)
            read.append(
                ReportedGroup(
                    label=str(group.tracking_identifier or ""),
                    finding=group.finding_type.meaning if group.finding_type is not None else "",
                    site=", ".join(site.value.meaning for site in group.finding_sites),
                    # a measurement without a value (another vendor's, with a qualifier instead) is left out
                    measurements=tuple(
                        (m.name.meaning, float(m.value), m.unit.value) for m in _valued(group.get_measurements())
                    ),
                    evaluations=tuple((e.name.meaning, e.value.meaning) for e in group.get_qualitative_evaluations()),
                    slices=tuple(sorted({z for image in images for z in slice_of(image)})),
                    segment_uid=segment.referenced_sop_instance_uid if segment is not None else "",
                )
            )
    except (OSError, ValueError, TypeError, AttributeError, KeyError, IndexError) as error:
        raise InputError(f"not a readable measurement report ({_first_line(error)})", path=path) from error
    date, time_ = str(report.get("ContentDate", "")), str(report.get("ContentTime", ""))
    written = f"{date[:4]}-{date[4:6]}-{date[6:8]} {time_[:2]}:{time_[2:4]}" if len(date) == 8 else ""
    return ReadReport(
        path=path,
        algorithm=next((a for a in map(_algorithm_of_group, groups) if a is not None), None),
        series_description=str(report.get("SeriesDescription", "")),
        written=written,
        manufacturer=str(report.get("Manufacturer", "")),
        groups=tuple(read),
    )


def _first_line(error: Exception) -> str:
    """An error in one line for the user: highdicom's messages can end in a dump of the dataset."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200].rstrip(':')}" if lines else type(error).__name__


def _valued(measurements: Sequence[Any]) -> list[Any]:
    """The measurements that carry a value (TID 300 allows a qualifier such as "not a number" instead)."""
    valued = []
    for measurement in measurements:
        try:
            float(measurement.value)
        except (IndexError, TypeError, ValueError, AttributeError):
            continue
        valued.append(measurement)
    return valued


def _slice_finder(volume: Volume) -> Callable[[Any], list[int]]:
    """The volume slices an SR image reference (SOP instance, frame numbers) points at.  For an enhanced
    (multi-frame) series every slice has the same instance UID, so frames are matched as the writer placed them."""
    uids = [uid for uid in volume.slice_uids if uid]
    if len(set(uids)) == len(uids):
        slice_of = {uid: z for z, uid in enumerate(volume.slice_uids) if uid}
        return lambda image: (
            [slice_of[image.referenced_sop_instance_uid]] if image.referenced_sop_instance_uid in slice_of else []
        )
    sources = _Sources.of(volume)
    instance = str(sources.first().SOPInstanceUID)

    def frames(image: Any) -> list[int]:
        if image.referenced_sop_instance_uid != instance:
            return []
        numbers = getattr(image, "referenced_frame_numbers", None) or []
        return [sources.planes[n - 1].z for n in numbers if 0 < n <= len(sources.planes)]

    return frames


@dataclass(frozen=True)
class ReadMap:
    """A parametric map put back on the volume's slices, with what its values mean."""

    path: Path
    label: str
    explanation: str
    values: dict[int, np.ndarray]  # slice -> [y, x] real-world values
    value_range: tuple[float, float]
    model: str  # Manufacturer's Model Name: the algorithm MedView wrote it with
    demo: bool


def read_parametric_map(path: Path | str, volume: Volume) -> ReadMap:
    """Read a parametric map made from ``volume``'s series onto its slices (the writer's flips undone).

    Raises:
        InputError: not a readable parametric map, or none of its frames is on one of the volume's images.
    """
    import pydicom

    path = Path(path)
    try:
        dataset = pydicom.dcmread(path)
        (mapping,) = dataset.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence
        pixels = dataset.pixel_array
        pixels = pixels[None] if pixels.ndim == 2 else pixels
        slope = float(mapping.get("RealWorldValueSlope", 1.0))
        intercept = float(mapping.get("RealWorldValueIntercept", 0.0))
        first, last = mapping.RealWorldValueFirstValueMapped, mapping.RealWorldValueLastValueMapped
        frames = [
            str(group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
            for group in dataset.PerFrameFunctionalGroupsSequence
        ]
    except (OSError, ValueError, TypeError, AttributeError, IndexError, KeyError) as error:
        raise InputError(f"not a readable parametric map ({_first_line(error)})", path=path) from error
    sources = _Sources.of(volume)
    if sources.multi_frame:
        raise InputError("maps of a multi-frame series are not read back (MedView writes none for one)", path=path)
    slice_of = {uid: z for z, uid in enumerate(volume.slice_uids) if uid}
    values = {}
    for index, uid in enumerate(frames):
        if uid not in slice_of:
            continue
        z = slice_of[uid]
        plane = sources.planes[sources.plane_index(z)]
        values[z] = plane.to_volume(pixels[index].astype(np.float32) * slope + intercept)
    if not values:
        raise InputError("none of its frames lies on an image of this series", path=path)
    description = f"{dataset.get('ContentDescription', '')} {dataset.get('SeriesDescription', '')}"
    return ReadMap(
        path=path,
        label=str(mapping.get("LUTLabel", "")),
        explanation=str(mapping.get("LUTExplanation", "")),
        values=values,
        value_range=(float(first) * slope + intercept, float(last) * slope + intercept),
        model=str(dataset.get("ManufacturerModelName", "")),
        demo="DEMO" in description,
    )
