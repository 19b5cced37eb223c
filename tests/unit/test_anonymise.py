"""Anonymised export (medview.io.anonymise) on real series: what is removed, what is kept, what is refused.

Each series is exported once per module: the bundled TotalSegmentator sample (JPEG 2000, blank
UIDs), a COVID-CT-MD series (JPEG lossless, named identifiers) and the dcmqi slices (implicit VR).
``dcmdump`` (dcmtk) and ``dciodvfy`` (dicom3tools) check the files when installed.
"""

from __future__ import annotations

import errno
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset

from medview.errors import Cancelled, ExportError
from medview.io.anonymise import BASIC_PROFILE_CODE, AnonymisationResult, anonymise_series
from medview.io.dicom import iter_sources, load_series, scan_paths
from medview.io.volume import Volume

#: attributes whose source values must not survive (Table E.1-1 removes, empties or replaces them all)
IDENTIFYING = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientAge",
    "InstitutionName",
    "InstitutionAddress",
    "AccessionNumber",
    "ReferringPhysicianName",
    "RequestingPhysician",
    "OperatorsName",
    "StationName",
    "DeviceSerialNumber",
    "PerformedProcedureStepID",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
    "StudyDescription",
    "SeriesDescription",
    "ProtocolName",
)
INSTANCE_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
GEOMETRY = (
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
)
SERIES = {
    "sample_jpeg2000": None,  # the bundled sample, from the sample_series_dir fixture
    "covid_jpeg_lossless": ("covid_ct", "COVID-CT-MD", "CAP", "cap001"),
    "dcmqi_implicit_vr": ("dicom_ct", "dcmqi_ct-3slice"),
}


# --------------------------------------------------------------------------- helpers


def _read(path: Path, **kwargs) -> Dataset:
    return pydicom.dcmread(path, force=True, **kwargs)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _tool(name: str) -> str:
    executable = shutil.which(name)
    if executable is None:
        pytest.skip(f"{name} is not installed (Debian: installer/bootstrap.sh test installs it)")
    return executable


def _run(executable: str, *args: str | Path) -> str:
    result = subprocess.run([executable, *map(str, args)], capture_output=True, text=True, timeout=60, check=False)
    return result.stdout + result.stderr


def _all_values(dataset: Dataset, *keywords: str) -> set[str]:
    """Every non-empty value of the attributes ``keywords`` in ``dataset``, nested sequence items included."""
    found: set[str] = set()

    def visit(ds: Dataset, element) -> None:
        if element.keyword in keywords and element.value not in (None, ""):
            values = element.value if isinstance(element.value, pydicom.multival.MultiValue) else [element.value]
            found.update(str(v) for v in values if str(v).strip())

    dataset.walk(visit)
    return found


def _original_uids(dataset: Dataset) -> set[str]:
    uids = _all_values(dataset, *INSTANCE_UIDS, "ReferencedSOPInstanceUID")
    return uids | {str(dataset.file_meta.get("MediaStorageSOPInstanceUID", ""))} - {""}


def _identifying_values(dataset: Dataset) -> set[str]:
    values = _all_values(dataset, *IDENTIFYING) | _original_uids(dataset)
    # single letters or digits (sex "M", a physician "1") occur anywhere in a dump; they identify no one
    return {v for v in values if len(v.strip()) >= 4}


def _error_lines(report: str) -> set[str]:
    return {line.strip() for line in report.splitlines() if line.startswith("Error")}


def _private_tags(dump: str) -> list[str]:
    return [line for line in dump.splitlines() if (m := re.match(r"\s*\(([0-9a-f]{4}),", line)) and int(m[1], 16) % 2]


def _by_instance(paths: list[Path]) -> dict[tuple, Path]:
    """Files keyed by instance number and position, the keys anonymisation keeps."""
    keyed = {}
    for path in paths:
        ds = _read(path, stop_before_pixels=True)
        keyed[(ds.get("InstanceNumber"), tuple(ds.get("ImagePositionPatient") or ()))] = path
    assert len(keyed) == len(paths), "test data: instance number + position should tell the files apart"
    return keyed


def _load(folder_or_files) -> Volume:
    scan = scan_paths(folder_or_files if isinstance(folder_or_files, list) else [folder_or_files])
    assert len(scan.series) == 1, [s.display_name for s in scan.series]
    return load_series(scan.series[0], workers=2)


def _copy_dcmqi(shared_data: Path, folder: Path) -> list[Path]:
    folder.mkdir()
    return [Path(shutil.copy(p, folder)) for p in sorted((shared_data / "dicom_ct" / "dcmqi_ct-3slice").iterdir())]


# --------------------------------------------------------------------------- the three exports


@pytest.fixture(scope="module", params=list(SERIES))
def exported(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sample_series_dir: Path
) -> tuple[list[Path], AnonymisationResult]:
    """(source files, result) of one real series exported with the default settings."""
    parts = SERIES[request.param]
    source_folder = sample_series_dir if parts is None else request.getfixturevalue("shared_data").joinpath(*parts)
    sources = _files(source_folder)
    result = anonymise_series(sources, tmp_path_factory.mktemp(request.param) / "export")
    return sources, result


def test_writes_one_file_per_source_into_one_series_folder(exported: tuple[list[Path], AnonymisationResult]) -> None:
    sources, result = exported
    (folder,) = result.folders
    assert _files(folder) == sorted(result.files)
    assert [p.name for p in sorted(result.files)] == [f"IM{n:06d}.dcm" for n in range(1, len(sources) + 1)]
    assert result.uids_remapped >= 3 + len(sources)  # study, series, frame of reference, one per instance
    assert result.warnings == ()  # CT, no burned-in annotation


def test_dcmdump_shows_no_identifying_value_and_no_private_tag(
    exported: tuple[list[Path], AnonymisationResult],
) -> None:
    dcmdump = _tool("dcmdump")
    sources, result = exported
    identifying = set().union(*(_identifying_values(_read(p, stop_before_pixels=True)) for p in sources))
    assert any(len(v) > 20 for v in identifying), "the originals should at least have UIDs to look for"
    # -M: pixel data not loaded; +L: long values printed whole; +F: each file's dump headed by its name
    dumps = re.split(r"^# dcmdump \(\d+/\d+\): ", _run(dcmdump, "-M", "+L", "+F", *result.files), flags=re.M)[1:]
    assert len(dumps) == len(result.files)
    for dump in dumps:
        path = Path(dump.splitlines()[0])
        assert "PatientIdentityRemoved" in dump, dump[-2000:]
        # whole values as dcmdump prints them ([a\b]): a short one (a time, an ID) could sit by chance inside a
        # new random UID, which a substring search would take for a leak
        shown = {value for values in re.findall(r"\[([^\]]*)\]", dump) for value in values.split("\\")}
        leaked = sorted(v for v in identifying if v in shown)
        assert not leaked, f"{path.name} still holds {leaked}"
        assert not _private_tags(dump), _private_tags(dump)[:5]


def test_profile_attributes_and_untouched_pixels(exported: tuple[list[Path], AnonymisationResult]) -> None:
    sources, result = exported
    outputs = _by_instance(list(result.files))
    for key, source_path in _by_instance(sources).items():
        source, output = _read(source_path), _read(outputs[key])
        assert output.PatientIdentityRemoved == "YES"
        assert "DeidentificationMethod" in output
        (code,) = output.DeidentificationMethodCodeSequence
        assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == BASIC_PROFILE_CODE
        assert output.PatientName == "ANONYMOUS"
        assert str(output.PatientID).startswith("ANON-")
        for keyword in ("PatientBirthDate", "PatientSex", "AccessionNumber", "ReferringPhysicianName", "StudyDate"):
            assert not output.get(keyword), keyword  # Z: emptied (or absent when the source had none)
        for keyword in ("PatientAge", "InstitutionAddress", "StudyDescription", "SeriesDescription"):
            assert keyword not in output, keyword  # X
        private: list[int] = []
        output.walk(lambda ds, element, found=private: found.append(element.tag) if element.tag.is_private else None)
        assert not private
        # pixels and geometry bit for bit; the transfer syntax (compression) as it was
        assert output.PixelData == source.PixelData
        assert output.file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID
        for keyword in GEOMETRY:
            assert output.get(keyword) == source.get(keyword), keyword


def test_dciodvfy_finds_no_new_error(
    exported: tuple[list[Path], AnonymisationResult], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    dciodvfy = _tool("dciodvfy")
    sources, result = exported
    outputs = _by_instance(list(result.files))
    for key, source_path in _by_instance(sources).items():
        # The bundled sample has blank SOP Class/Instance UIDs (only its file meta has them), so dciodvfy
        # cannot tell its IOD and checks nothing: compare with a copy repaired from the file meta alone.
        baseline = _read(source_path)
        baseline.SOPClassUID = baseline.get("SOPClassUID") or baseline.file_meta.MediaStorageSOPClassUID
        baseline.SOPInstanceUID = baseline.get("SOPInstanceUID") or baseline.file_meta.MediaStorageSOPInstanceUID
        baseline_path = tmp_path / "baseline.dcm"
        baseline.save_as(baseline_path)
        source_errors = _error_lines(_run(dciodvfy, baseline_path))
        report = _run(dciodvfy, outputs[key])
        assert "CTImage" in report or "EnhancedCTImage" in report, report  # the IOD was recognised and checked
        assert _error_lines(report) <= source_errors, f"{outputs[key].name}: {_error_lines(report) - source_errors}"


def test_loads_through_medview_as_one_series_with_identical_voxels(
    exported: tuple[list[Path], AnonymisationResult],
) -> None:
    sources, result = exported
    original, copy = _load(sources), _load(result.folders[0])
    np.testing.assert_array_equal(copy.voxels, original.voxels)
    assert copy.voxels.dtype == original.voxels.dtype
    assert copy.spacing == original.spacing
    assert copy.origin == original.origin
    assert copy.direction == original.direction
    assert copy.series_uid != original.series_uid
    assert copy.info["PatientName"] == "ANONYMOUS"


def test_uids_are_new_and_consistent(exported: tuple[list[Path], AnonymisationResult]) -> None:
    sources, result = exported
    originals = set().union(*(_original_uids(_read(p, stop_before_pixels=True)) for p in sources))
    headers = [_read(p, stop_before_pixels=True) for p in result.files]
    assert len({ds.StudyInstanceUID for ds in headers}) == 1
    assert len({ds.SeriesInstanceUID for ds in headers}) == 1
    assert len({ds.FrameOfReferenceUID for ds in headers}) == 1
    assert len({ds.SOPInstanceUID for ds in headers}) == len(headers)
    for ds in headers:
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
        new = {str(ds[k].value) for k in INSTANCE_UIDS} | _all_values(ds, "ReferencedSOPInstanceUID")
        assert all(uid.startswith("2.25.") for uid in new), new
        assert not new & originals
    # one original, one new UID, in every file: references to the same image stay the same
    mapping: dict[str, set[str]] = {}
    outputs = _by_instance(list(result.files))
    for key, source_path in _by_instance(sources).items():
        old_refs = [str(i.ReferencedSOPInstanceUID) for i in _read(source_path).get("ReferencedImageSequence", [])]
        new_refs = [str(i.ReferencedSOPInstanceUID) for i in _read(outputs[key]).get("ReferencedImageSequence", [])]
        for old, new in zip(old_refs, new_refs, strict=True):
            mapping.setdefault(old, set()).add(new)
    assert all(len(news) == 1 for news in mapping.values()), mapping
    assert len(set().union(*mapping.values())) == len(mapping)  # and different originals stay different


# --------------------------------------------------------------------------- single cases


def test_internal_references_point_at_the_new_uids(shared_data: Path, tmp_path: Path) -> None:
    sources = _copy_dcmqi(shared_data, tmp_path / "src")
    first = _read(sources[0])
    for path in sources[1:]:
        ds = _read(path)
        item = Dataset()
        item.ReferencedSOPClassUID = first.SOPClassUID
        item.ReferencedSOPInstanceUID = first.SOPInstanceUID
        ds.ReferencedImageSequence = [item]
        ds.SOPInstanceUIDOfConcatenationSource = first.SOPInstanceUID  # a UID attribute Table E.1-1 does not list
        ds.save_as(path)
    result = anonymise_series(sources, tmp_path / "out")
    outputs = {int(_read(p).InstanceNumber): _read(p) for p in result.files}
    new_first = outputs[int(first.InstanceNumber)].SOPInstanceUID
    referring = [ds for number, ds in outputs.items() if number != int(first.InstanceNumber)]
    assert len(referring) == 2
    for ds in referring:
        assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID == new_first
        assert ds.SOPInstanceUIDOfConcatenationSource == new_first


def test_zip_members_are_exported(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "dicom_ct" / "dcmqi_ct-3slice"
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(folder.iterdir()):
            zipped.write(path, f"study/{path.name}")
    members = list(iter_sources([archive]))
    assert all(m.member for m in members)
    result = anonymise_series(members, tmp_path / "out")
    assert len(result.files) == 3
    np.testing.assert_array_equal(_load(result.folders[0]).voxels, _load(folder).voxels)


def test_each_export_gets_its_own_uids(shared_data: Path, tmp_path: Path) -> None:
    sources = _files(shared_data / "dicom_ct" / "dcmqi_ct-3slice")
    first = anonymise_series(sources, tmp_path / "one", patient_name="Study^Subject 7", patient_id="S-007")
    second = anonymise_series(sources, tmp_path / "two")
    uid_one = {_read(p).SeriesInstanceUID for p in first.files}
    uid_two = {_read(p).SeriesInstanceUID for p in second.files}
    assert len(uid_one) == len(uid_two) == 1
    assert uid_one != uid_two  # a per-export secret: two exports cannot be linked through their UIDs
    ds = _read(first.files[0])
    assert (str(ds.PatientName), ds.PatientID) == ("Study^Subject 7", "S-007")


def test_refuses_a_patient_id_dicom_cannot_hold(shared_data: Path, tmp_path: Path) -> None:
    sources = _files(shared_data / "dicom_ct" / "dcmqi_ct-3slice")
    with pytest.raises(ExportError, match="patient ID"):
        anonymise_series(sources, tmp_path / "out", patient_id="X" * 65)  # LO: 64 characters at most
    assert not (tmp_path / "out").exists()


def test_refuses_a_non_empty_destination(shared_data: Path, tmp_path: Path) -> None:
    destination = tmp_path / "out"
    destination.mkdir()
    (destination / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty") as raised:
        anonymise_series(_files(shared_data / "dicom_ct" / "dcmqi_ct-3slice"), destination)
    assert str(destination) in str(raised.value)
    assert _files(destination) == [destination / "notes.txt"]


def test_refuses_a_png_among_the_sources(shared_data: Path, tmp_path: Path) -> None:
    sources = _copy_dcmqi(shared_data, tmp_path / "src")
    impostor = tmp_path / "src" / "02b.dcm"
    Image.new("L", (8, 8)).save(impostor, format="PNG")
    destination = tmp_path / "out"
    destination.mkdir()
    with pytest.raises(ExportError, match="PNG") as raised:
        anonymise_series([*sources[:2], impostor, sources[2]], destination)
    assert str(impostor) in str(raised.value)
    assert _files(destination) == []


@pytest.mark.parametrize("destination_exists", [True, False])
def test_cancel_midway_leaves_the_destination_as_it_was(
    shared_data: Path, tmp_path: Path, destination_exists: bool
) -> None:
    destination = tmp_path / "out"
    if destination_exists:
        destination.mkdir()
    progress: list[tuple[int, int]] = []
    with pytest.raises(Cancelled):
        anonymise_series(
            _files(shared_data / "covid_ct" / "COVID-CT-MD" / "CAP" / "cap001"),
            destination,
            progress=lambda done, total, _what: progress.append((done, total)),
            cancelled=lambda: len(progress) >= 5,
        )
    assert progress[-1] == (5, 21)  # it had written files before it stopped
    if destination_exists:
        assert list(destination.iterdir()) == []
    else:
        assert not destination.exists()


@pytest.fixture
def disk_full_on_third_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dataset.save_as writes half a file and fails with ENOSPC from the third file on."""
    original = Dataset.save_as
    calls = [0]

    def save_as(self: Dataset, filename, *args, **kwargs) -> None:
        calls[0] += 1
        if calls[0] < 3:
            return original(self, filename, *args, **kwargs)
        Path(filename).write_bytes(b"\0" * 200)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Dataset, "save_as", save_as)


def test_a_failed_write_leaves_no_file_behind(shared_data: Path, tmp_path: Path, disk_full_on_third_file: None) -> None:
    destination = tmp_path / "out"
    destination.mkdir()
    with pytest.raises(ExportError, match="No space left on device") as raised:
        anonymise_series(_files(shared_data / "dicom_ct" / "dcmqi_ct-3slice"), destination)
    assert "IM000003.dcm" in str(raised.value)
    assert list(destination.iterdir()) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"BurnedInAnnotation": "YES"}, "Burned In Annotation is YES"),
        ({"SOPClassUID": pydicom.uid.SecondaryCaptureImageStorage}, "secondary captures"),
        ({"SOPClassUID": pydicom.uid.SecondaryCaptureImageStorage, "BurnedInAnnotation": "NO"}, None),
        ({"RecognizableVisualFeatures": "YES"}, "recognisable"),
    ],
)
def test_pixel_identity_risks_are_warned_about(
    shared_data: Path, tmp_path: Path, change: dict[str, str], expected: str | None
) -> None:
    sources = _copy_dcmqi(shared_data, tmp_path / "src")
    for path in sources[:2]:
        ds = _read(path)
        for keyword, value in change.items():
            setattr(ds, keyword, value)
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.save_as(path)
    result = anonymise_series(sources, tmp_path / "out")
    if expected is None:
        assert result.warnings == ()
    else:
        (warning,) = result.warnings
        assert expected in warning
        assert warning.startswith("2 of 3 images")
