"""Anonymised export of a DICOM series: PS3.15 Annex E Basic Application Level Confidentiality Profile.

Table E.1-1 comes from dicom-anonymizer (KitwareMedical; needs only pydicom and tqdm), whose
tables are generated from the standard's XML at each release (edition 2026c here); its own engine
is not used, as it applies single-tag actions at the top level only, empties the UIDs inside
Referenced Image Sequence and keeps one process-wide UID map.  dicognito invents plausible fakes,
shifts dates and keeps private tags, and deid pulls in matplotlib with a default recipe that is
not the basic profile, so the short walker below applies the table with pydicom, down every
nested sequence item.

What an exported instance gets:

- private attributes, curves (50xx) and overlays (60xx: the profile removes Overlay Data, so
  the rest of the plane goes too) removed; retired group lengths dropped;
- every attribute of the table handled per its basic-profile action.  Where the table lets the
  IOD choose (X/Z, X/D, Z/D, X/Z/D), a value gets the option that is conformant whatever its type
  (Z for X/Z, D otherwise), as dicom-anonymizer does, D writing a dummy of the right VR (dates
  19000101); a sequence is removed where X is allowed (an empty Type 3 sequence is invalid) and
  emptied otherwise (there is no dummy sequence);
- UIDs remapped per export: each original UID gets a random ``2.25.`` UID (``generate_uid``),
  kept in the export's map, so one original maps to one new UID in every file of the export,
  references inside sequences included, and nothing links two exports or leads back to the
  original; the file meta matches;
- Patient's Name and ID set to what the caller chose; Patient Identity Removed YES,
  De-identification Method (Code Sequence 113100 DCM "Basic Application Confidentiality
  Profile"), Longitudinal Temporal Information Modified REMOVED;
- pixel data and geometry untouched: compressed transfer syntaxes are written back as they
  were read, never decoded.

The basic profile does not clean pixels: images flagged Burned In Annotation YES, or of a kind
that usually carries burned-in text (secondary captures and ultrasound not flagged NO), and
images with recognizable visual features are listed in the result's warnings.
"""

from __future__ import annotations

import os
import secrets
import shutil
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pydicom
from pydicom import config as pydicom_config
from pydicom.dataelem import empty_value_for_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)
from pydicom.valuerep import validate_value

from medview import __version__
from medview.errors import Cancelled, DicomError, ExportError
from medview.io.dicom import DicomSource, iter_sources, read_header
from medview.progress import CancelCheck, ProgressCallback

#: the Table E.1-1 edition dicom-anonymizer ships that the export follows
PROFILE_TABLE = "dicomfields_2026c"
BASIC_PROFILE_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")
DUMMY_DATE = "19000101"

#: dicom-anonymizer's table categories -> the basic-profile action they stand for
_CATEGORY_ACTIONS = {
    "D_TAGS": "D",
    "Z_TAGS": "Z",
    "X_TAGS": "X",
    "U_TAGS": "U",
    "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D",
    "X_Z_D_TAGS": "X/Z/D",
    "X_Z_U_STAR_TAGS": "X/Z/U*",
}
#: the option taken, (for a value, for a sequence).  Where the IOD decides (X for Type 3, Z for Type 2,
#: D for Type 1), values get the option that is conformant whatever their type, as dicom-anonymizer does.
#: A sequence has no dummy, and an empty Type 3 sequence is invalid (it needs items): X wherever X is allowed.
_CHOSEN = {
    "D": ("D", "Z"),
    "Z": ("Z", "Z"),
    "X": ("X", "X"),
    "U": ("U", "U"),
    "Z/D": ("D", "Z"),
    "X/Z": ("Z", "X"),
    "X/D": ("D", "X"),
    "X/Z/D": ("D", "X"),
    "X/Z/U*": ("U", "U*"),
}
#: X/Z sequences that are Type 2 wherever they occur (the Acquisition Context module): emptied, not removed
_TYPE2_SEQUENCES = frozenset({0x00400555})
_DUMMY_TEXT = "ANONYMISED"
_DUMMY_BY_VR: dict[str, Any] = {
    **dict.fromkeys(("AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"), _DUMMY_TEXT),
    "AS": "000Y",
    "DA": DUMMY_DATE,
    "DT": DUMMY_DATE + "000000",
    "TM": "000000",
    "DS": "0",
    "IS": "0",
    "UR": "http://anonymised.invalid",
    **dict.fromkeys(("FL", "FD", "SL", "SS", "SV", "UL", "US", "UV", "AT"), 0),
    **dict.fromkeys(("OB", "OW", "OD", "OF", "OL", "OV", "UN"), b"\0" * 8),
}
#: UIDs that must never be empty: an empty one (some anonymisers blank them) gets one new UID per export
_REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")
_SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
_BURNED_IN_MODALITIES = {"US": "ultrasound"}


@dataclass(frozen=True)
class AnonymisationResult:
    """What an export wrote: one folder per series (usually one), its files, and what to tell the user."""

    folders: tuple[Path, ...]
    files: tuple[Path, ...]
    uids_remapped: int
    warnings: tuple[str, ...]


# --------------------------------------------------------------------------- the profile table


@cache
def _profile_actions() -> tuple[dict[int, str], tuple[tuple[int, int, int, int, str], ...]]:
    """Table E.1-1 as {tag: action} plus the masked (repeating group) rules."""
    from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector

    tables = dicom_anonymization_database_selector(PROFILE_TABLE)
    single: dict[int, str] = {}
    masked: list[tuple[int, int, int, int, str]] = []
    for category, tags in tables.items():
        if category == "ALL_TAGS":
            continue
        action = _CATEGORY_ACTIONS.get(category, "X")  # a category a later edition adds: removed
        for entry in tags:
            if len(entry) == 4:
                masked.append((*entry, action))
            else:
                single[(entry[0] << 16) | entry[1]] = action
    return single, tuple(masked)


def _action_for(tag: int) -> str | None:
    single, masked = _profile_actions()
    action = single.get(tag)
    if action is not None:
        return action
    group, element = tag >> 16, tag & 0xFFFF
    for rule_group, rule_element, group_mask, element_mask, rule_action in masked:
        if group & group_mask == rule_group & group_mask and element & element_mask == rule_element & element_mask:
            return rule_action
    return None


# --------------------------------------------------------------------------- one dataset


class _Anonymiser:
    """Applies the profile to datasets, remapping UIDs consistently for one export."""

    def __init__(self, patient_name: str, patient_id: str, original_uids: set[str]) -> None:
        self._patient_name = patient_name
        self._patient_id = patient_id
        self._original_uids = original_uids
        self.uid_map: dict[str, str] = {}

    def new_uid(self, original: str) -> str:
        """The export's UID for ``original``: the same in every file of this export, unrelated to the original."""
        new = self.uid_map.get(original)
        if new is None:
            new = self.uid_map[original] = generate_uid(prefix=None)  # 2.25. and a random UUID
        return new

    def anonymise(self, dataset: Dataset) -> None:
        """Apply the profile to ``dataset`` (read from a file) in place and give it new file meta."""
        meta = getattr(dataset, "file_meta", None) or FileMetaDataset()
        if not dataset.get("SOPInstanceUID"):
            dataset.SOPInstanceUID = meta.get("MediaStorageSOPInstanceUID", "")
        if not dataset.get("SOPClassUID"):
            dataset.SOPClassUID = meta.get("MediaStorageSOPClassUID", "")
        self._clean(dataset)
        for keyword in _REQUIRED_UIDS:
            if keyword in dataset and not dataset[keyword].value:
                dataset[keyword].value = self.new_uid(_empty_uid_key(keyword))
        dataset.PatientName = self._patient_name
        dataset.PatientID = self._patient_id
        dataset.PatientIdentityRemoved = "YES"
        dataset.DeidentificationMethod = [BASIC_PROFILE_CODE[2], f"MedView {__version__}"]
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = BASIC_PROFILE_CODE
        dataset.DeidentificationMethodCodeSequence = DicomSequence([code])
        dataset.LongitudinalTemporalInformationModified = "REMOVED"
        dataset.file_meta = self._file_meta(dataset, meta)

    def _clean(self, dataset: Dataset) -> None:
        overlay_groups: set[int] = set()
        for tag in list(dataset.keys()):
            element = dataset[tag]  # converts a raw element (pixel data stays encoded bytes)
            if tag.is_private or tag.element == 0:  # private attributes; retired group lengths
                del dataset[tag]
                continue
            action = _action_for(tag)
            if action is None:  # K: kept, but cleaned inside sequences
                if element.VR == "SQ":
                    for item in element.value:
                        self._clean(item)
                elif element.VR == "UI" and self._holds_original(element.value):
                    element.value = self._remapped(element.value)  # an instance UID under a name the table lacks
                continue
            if action == "X" and 0x6000 <= tag.group <= 0x601E and tag.element == 0x3000:
                overlay_groups.add(tag.group)
            self._apply(dataset, tag, action)
        for tag in list(dataset.keys()):
            if tag.group in overlay_groups:
                del dataset[tag]

    def _apply(self, dataset: Dataset, tag: int, action: str) -> None:
        element = dataset[tag]
        is_sequence = element.VR == "SQ"
        chosen = _CHOSEN.get(action, ("X", "X"))[is_sequence]
        if is_sequence and action == "X/Z" and tag in _TYPE2_SEQUENCES:
            chosen = "Z"
        if chosen == "X":
            del dataset[tag]
        elif is_sequence:
            if chosen == "U*":  # keep the references, with their UIDs remapped
                for item in element.value:
                    self._clean(item)
            else:
                element.value = DicomSequence()
        elif element.VR == "UI" and chosen in ("U", "D"):
            element.value = self._remapped(element.value)
        elif chosen == "D" and element.VR in _DUMMY_BY_VR:
            element.value = _DUMMY_BY_VR[element.VR]
        else:  # Z, or U of something that is not a UID
            element.value = empty_value_for_VR(element.VR)

    def _holds_original(self, value: Any) -> bool:
        values = value if isinstance(value, MultiValue | list) else [value]
        return any(str(v) in self._original_uids for v in values)

    def _remapped(self, value: Any) -> Any:
        if isinstance(value, MultiValue | list):
            return [self.new_uid(str(v)) if v else v for v in value]
        return self.new_uid(str(value)) if value else value

    @staticmethod
    def _file_meta(dataset: Dataset, old: FileMetaDataset) -> FileMetaDataset:
        """New file meta: the new SOP UIDs, the same transfer syntax, nothing of the sender's."""
        transfer_syntax = old.get("TransferSyntaxUID")
        if not transfer_syntax:
            implicit, little = dataset.original_encoding
            transfer_syntax = (
                ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
            )
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = dataset.SOPClassUID
        meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        meta.TransferSyntaxUID = transfer_syntax
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        return meta


# --------------------------------------------------------------------------- the export


@dataclass
class _Instance:
    source: DicomSource
    sop_uid: str
    source_series_uid: str
    modality: str
    series_number: str
    instance_number: int | None
    pixel_risks: list[str]
    #: its SOP Instance, Series, Study and Frame of Reference UIDs
    uids: set[str]


def anonymise_series(
    sources: Sequence[DicomSource | Path | str],
    destination: Path | str,
    *,
    patient_name: str = "ANONYMOUS",
    patient_id: str | None = None,
    progress: ProgressCallback | None = None,
    cancelled: CancelCheck | None = None,
) -> AnonymisationResult:
    """Write an anonymised copy of the DICOM instances ``sources`` into ``destination``.

    ``sources`` are the series' files (``DicomSource`` entries, e.g. from ``SeriesInfo.slices``,
    so zip members work; or paths: folders, zips and DICOMDIRs are expanded).  Each series goes to
    ``destination/<modality>_<series number>_<digits of its new UID>/IM000001.dcm``...  The
    destination must be a new or empty folder; every source is read before anything is written,
    each file is written under a temporary name and renamed, and on any failure or cancel what was
    written is removed again, so the destination is left as it was.

    Args:
        patient_name: the Patient's Name of the copy.
        patient_id: the Patient ID of the copy; by default ``ANON-`` and random hex digits.
        progress: ``progress(done, total, what)`` once per file written.
        cancelled: polled between files; when it returns True the export stops.

    Raises:
        ExportError: a source cannot be read or is not DICOM (the message names it); the
            destination is not an empty folder or cannot be written (full disk, no permission:
            the message names the file); the patient name or ID is not valid DICOM text.
        Cancelled: ``cancelled()`` returned True.
    """
    destination = Path(destination)
    patient_id = patient_id if patient_id is not None else f"ANON-{secrets.token_hex(4).upper()}"
    _check_text("PN", patient_name, "patient name")
    _check_text("LO", patient_id, "patient ID")
    _check_destination(destination)
    instances, duplicates = _read_headers(_unique_sources(sources), cancelled)
    anonymiser = _Anonymiser(patient_name, patient_id, _original_uids(instances))
    notes = Counter[str]()
    for instance in instances:
        for note in instance.pixel_risks:
            notes[note] += 1
    created_destination = not destination.exists()
    written: list[Path] = []
    folders: list[Path] = []
    try:
        if created_destination:
            _make_folder(destination)
        by_series: dict[str, list[_Instance]] = defaultdict(list)
        for instance in instances:
            by_series[instance.source_series_uid].append(instance)
        total = len(instances)
        for series in by_series.values():
            folder = destination / _series_folder_name(series[0], anonymiser)
            _make_folder(folder)
            folders.append(folder)
            series.sort(key=lambda i: i.instance_number if i.instance_number is not None else 1 << 62)
            for number, instance in enumerate(series, start=1):
                if cancelled is not None and cancelled():
                    raise Cancelled()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # real scanners write invalid values; pydicom warns on them
                    dataset = _read_dataset(instance.source)
                    anonymiser.anonymise(dataset)
                    written.append(_write(folder / f"IM{number:06d}.dcm", dataset))
                if progress is not None:
                    progress(len(written), total, "writing anonymised files")
    except BaseException:  # a failure or a cancel: take back everything written (temporary files included)
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
        if created_destination:
            shutil.rmtree(destination, ignore_errors=True)
        raise
    messages = [f"{count} of {len(instances)} images: {note}" for note, count in notes.items()]
    if duplicates:
        messages.append(f"{duplicates} duplicate instance(s) (same SOP Instance UID) were exported once")
    return AnonymisationResult(tuple(folders), tuple(written), len(anonymiser.uid_map), tuple(messages))


def _check_text(vr: str, value: str, name: str) -> None:
    """The caller's patient name or ID must be valid DICOM text, in the default (ASCII) repertoire."""
    try:
        if not value.isascii():
            raise ValueError("only ASCII letters, digits and punctuation are allowed")
        validate_value(vr, value, pydicom_config.RAISE)
    except ValueError as error:
        raise ExportError(f"the {name} {value!r} cannot be written to DICOM: {error}") from error


def _check_destination(destination: Path) -> None:
    if destination.exists() and not destination.is_dir():
        raise ExportError("cannot export here: it is a file, not a folder", path=destination)
    if destination.is_dir() and any(destination.iterdir()):
        raise ExportError(
            "cannot export here: the folder is not empty (choose a new or empty folder)", path=destination
        )
    if not destination.parent.is_dir():
        raise ExportError(f"cannot export here: the folder {destination.parent} does not exist", path=destination)


def _unique_sources(sources: Sequence[DicomSource | Path | str]) -> list[DicomSource]:
    """Sources in order, each once; paths expanded like the viewer expands what it opens."""
    expanded: Iterable[DicomSource] = (
        source
        for entry in sources
        for source in ([entry] if isinstance(entry, DicomSource) else iter_sources([entry]))
        if source.member is not None or source.path.name.upper() != "DICOMDIR"  # its files are listed instead
    )
    unique = list(dict.fromkeys(expanded))
    if not unique:
        raise ExportError("nothing to export: no source files were given")
    return unique


def _read_headers(sources: list[DicomSource], cancelled: CancelCheck | None) -> tuple[list[_Instance], int]:
    """Every source's header, so that a bad file stops the export before anything is written."""
    instances: dict[str, _Instance] = {}
    duplicates = 0
    for source in sources:
        if cancelled is not None and cancelled():
            raise Cancelled()
        try:
            header = read_header(source)
        except DicomError as error:
            reason = str(error).removeprefix(f"{source.label}: ")
            raise ExportError(f"cannot export it: {reason}", path=source.label) from error
        sop_uid = str(header.get("SOPInstanceUID") or header.file_meta.get("MediaStorageSOPInstanceUID") or "")
        if not sop_uid:
            raise ExportError("cannot export it: it has no SOP Instance UID", path=source.label)
        if not (header.get("SOPClassUID") or header.file_meta.get("MediaStorageSOPClassUID")):
            raise ExportError("cannot export it: it has no SOP Class UID", path=source.label)
        if sop_uid in instances:
            duplicates += 1
            continue
        instances[sop_uid] = _Instance(
            source=source,
            sop_uid=sop_uid,
            source_series_uid=str(header.get("SeriesInstanceUID") or _empty_uid_key("SeriesInstanceUID")),
            modality=str(header.get("Modality") or ""),
            series_number=str(header.get("SeriesNumber") or ""),
            instance_number=_int_or_none(header.get("InstanceNumber")),
            pixel_risks=_pixel_risks(header),
            uids={sop_uid} | {str(header.get(k) or "") for k in _REQUIRED_UIDS} - {""},
        )
    return list(instances.values()), duplicates


def _original_uids(instances: list[_Instance]) -> set[str]:
    """The export's own instance, series, study and frame of reference UIDs.

    Wherever one of them appears it is remapped, also under an attribute the table does not list
    (such as SOP Instance UID of Concatenation Source), so no file of the export leads back to them.
    """
    return set().union(*(instance.uids for instance in instances))


def _empty_uid_key(keyword: str) -> str:
    """What an empty ``keyword`` is remapped from: one new UID per export (not a valid UID, so no clash)."""
    return f"(empty {keyword})"


def _pixel_risks(header: Dataset) -> list[str]:
    """Why the pixels themselves may identify the patient: the basic profile leaves them as they are."""
    risks = []
    burned_in = str(header.get("BurnedInAnnotation", "")).upper()
    sop_class = str(header.get("SOPClassUID") or header.file_meta.get("MediaStorageSOPClassUID") or "")
    modality = str(header.get("Modality", "")).upper()
    if burned_in == "YES":
        risks.append("Burned In Annotation is YES: text on the pixels (names, dates) is not removed; check the images")
    elif burned_in != "NO" and sop_class.startswith(_SECONDARY_CAPTURE_PREFIX):
        risks.append("secondary captures often carry burned-in text, which is not removed; check the images")
    elif burned_in != "NO" and modality in _BURNED_IN_MODALITIES:
        risks.append(
            f"{_BURNED_IN_MODALITIES[modality]} images often carry burned-in text, which is not removed; "
            "check the images"
        )
    if str(header.get("RecognizableVisualFeatures", "")).upper() == "YES":
        risks.append("Recognizable Visual Features is YES: the face may be recognisable from the pixels")
    return risks


def _series_folder_name(first: _Instance, anonymiser: _Anonymiser) -> str:
    new_series_uid = anonymiser.new_uid(first.source_series_uid)
    parts = [first.modality or "OT", first.series_number, new_series_uid[-8:]]
    name = "_".join(part for part in parts if part)
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir()
    except OSError as error:
        raise ExportError(f"cannot create the folder ({error.strerror or error})", path=folder) from error


def _read_dataset(source: DicomSource) -> Dataset:
    try:
        return pydicom.dcmread(source.open(), force=True)
    except Exception as error:  # pydicom raises many types for damaged files
        raise ExportError(f"cannot read it ({type(error).__name__}: {error})", path=source.label) from error


def _write(path: Path, dataset: Dataset) -> Path:
    """Write under a temporary name and rename, so a failure never leaves half a file under ``path``."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    try:
        dataset.save_as(temporary, enforce_file_format=True)
        os.replace(temporary, path)
    except OSError as error:
        raise ExportError(f"cannot write the file ({error.strerror or error})", path=path) from error
    except (ValueError, TypeError) as error:  # pydicom refuses a value it cannot encode
        raise ExportError(f"cannot write the file ({error})", path=path) from error
    finally:
        temporary.unlink(missing_ok=True)
    return path


def _int_or_none(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
