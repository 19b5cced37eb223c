"""DICOM scanning and loading on the real sample series, and on broken copies of them."""

from __future__ import annotations

import random
import shutil
import warnings
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import (
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from medview.errors import Cancelled, DicomError
from medview.io import dicom
from medview.io.dicom import (
    DicomSource,
    ScanResult,
    SeriesInfo,
    decode_slice,
    load_dicom,
    load_series,
    scan_paths,
    tag_rows,
)
from medview.io.dicom import decode as dicom_decode
from medview.io.volume import Volume, canonical_axes, reorient_array, reorient_geometry

CHUNK = 10  # slices of P001 used for the broken-series tests


# --------------------------------------------------------------------------- helpers and fixtures


@pytest.fixture(autouse=True)
def _quiet_pydicom() -> Iterator[None]:
    """COVID-CT-MD has invalid UIDs: pydicom warns on every read; the tests do not care."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="pydicom")
        yield


@pytest.fixture(scope="module")
def p001_dir(shared_data: Path) -> Path:
    return shared_data / "covid_ct" / "COVID-CT-MD" / "COVID-19" / "P001"


@pytest.fixture(scope="module")
def p001(p001_dir: Path) -> Volume:
    return load_dicom([p001_dir])


@pytest.fixture(scope="module")
def pydicom_data(shared_data: Path) -> Path:
    return shared_data / "dicom_ct" / "pydicom-data"


@pytest.fixture(scope="module")
def chunk_files(p001_dir: Path) -> list[Path]:
    """CHUNK contiguous P001 files, inferior to superior (by position, not by name)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        by_z = sorted(
            p001_dir.glob("*.dcm"),
            key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]),
        )
    return by_z[60 : 60 + CHUNK]


@pytest.fixture(scope="module")
def chunk(chunk_files: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Volume:
    """The reference volume of the chunk, loaded from an untouched copy."""
    folder = tmp_path_factory.mktemp("chunk")
    for path in chunk_files:
        shutil.copy(path, folder / path.name)
    volume = load_dicom([folder])
    assert volume.shape == (CHUNK, 512, 512)
    assert volume.warnings == ()
    return volume


def _copy(files: list[Path], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    for path in files:
        copies.append(folder / path.name)
        shutil.copy(path, copies[-1])
    return copies


def _only_series(scan: ScanResult) -> SeriesInfo:
    assert len(scan.series) == 1, [s.display_name for s in scan.series]
    return scan.series[0]


def _problems(scan: ScanResult) -> dict[str, str]:
    return {Path(p.label).name: p.message for p in scan.problems}


def _sitk_lps(image: sitk.Image) -> tuple[np.ndarray, tuple, tuple, np.ndarray]:
    """A SimpleITK image in the Volume conventions: voxels [z,y,x] re-oriented to LPS."""
    array = sitk.GetArrayFromImage(image)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    order, flips = canonical_axes(direction)
    spacing, origin, new_direction = reorient_geometry(
        array.shape, tuple(reversed(image.GetSpacing())), np.asarray(image.GetOrigin()), direction, order, flips
    )
    return reorient_array(array, order, flips), spacing, origin, new_direction


# --------------------------------------------------------------------------- P001 and SimpleITK


def test_p001_equals_simpleitk_series_reader(p001: Volume, p001_dir: Path) -> None:
    first = next(p001_dir.glob("*.dcm"))
    assert pydicom.dcmread(first, stop_before_pixels=True).file_meta.TransferSyntaxUID == JPEGLosslessSV1

    assert p001.shape == (148, 512, 512)
    assert p001.voxels.dtype == np.int16
    assert p001.missing_slices == frozenset()
    assert p001.warnings == ()
    assert p001.modality == "CT"
    assert p001.info["PatientID"] == "98C14734-ASSH"
    assert len(set(p001.slice_files)) == 148

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(p001_dir)))
    reader.SetOutputPixelType(sitk.sitkInt16)
    voxels, spacing, origin, direction = _sitk_lps(reader.Execute())
    np.testing.assert_array_equal(p001.voxels, voxels)
    assert p001.spacing == pytest.approx(spacing)
    assert p001.spacing == pytest.approx((2.0, 0.748046875, 0.748046875))
    assert p001.origin == pytest.approx(origin)
    np.testing.assert_allclose(p001.direction_matrix, direction, atol=1e-6)
    # the lowest slice is voxel z = 0 (LPS: slices run superior)
    assert p001.origin[2] == pytest.approx(-346.1)
    assert p001.index_to_lps(147, 0, 0)[2] == pytest.approx(-52.1)
    assert -1100 < float(p001.voxels.mean()) < 0  # a chest: air, lung, tissue


def test_geometric_sort_ignores_file_names_and_instance_numbers(sample_series_dir: Path, tmp_path: Path) -> None:
    original = load_dicom([sample_series_dir])
    by_z = [Path(label) for label in original.slice_files]
    rng = random.Random(7)
    names = [f"img_{i:03d}.dcm" for i in range(len(by_z))]
    rng.shuffle(names)
    numbers = rng.sample(range(1, 1000), len(by_z))
    scrambled = tmp_path / "scrambled"
    scrambled.mkdir()
    for path, name, number in zip(by_z, names, numbers, strict=True):
        dataset = pydicom.dcmread(path)
        dataset.InstanceNumber = number
        dataset.save_as(scrambled / name)
    assert sorted(names) != names  # alphabetical order is not the z order
    assert sorted(numbers) != numbers  # nor is InstanceNumber

    loaded = load_dicom([scrambled])
    np.testing.assert_array_equal(loaded.voxels, original.voxels)
    assert loaded.spacing == pytest.approx(original.spacing)
    assert loaded.origin == pytest.approx(original.origin)
    assert [Path(label).name for label in loaded.slice_files] == names
    assert loaded.warnings == original.warnings


# --------------------------------------------------------------------------- compressed transfer syntaxes


def test_jpeg2000_lossless_equals_uncompressed(pydicom_data: Path) -> None:
    j2k, plain = pydicom_data / "693_J2KR.dcm", pydicom_data / "693_UNCR.dcm"
    assert pydicom.dcmread(j2k, stop_before_pixels=True).file_meta.TransferSyntaxUID == JPEG2000Lossless
    compressed, uncompressed = load_dicom([j2k]), load_dicom([plain])
    assert compressed.shape == (1, 512, 512)
    np.testing.assert_array_equal(compressed.voxels, uncompressed.voxels)
    expected = pydicom.dcmread(plain).pixel_array.astype(np.int32) - 1024  # slope 1, intercept -1024
    np.testing.assert_array_equal(uncompressed.voxels[0], expected)
    assert float(uncompressed.voxels.std()) > 100  # a real image, not a constant


def _compressed_copy(source: Path, syntax: str, target: Path) -> Path:
    dataset = pydicom.dcmread(source)
    dataset.compress(syntax)
    dataset.save_as(target)
    assert pydicom.dcmread(target, stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
    return target


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless], ids=["rle", "jpeg-ls"])
def test_pydicom_encoded_copies_decode_equal(pydicom_data: Path, tmp_path: Path, syntax: str) -> None:
    from pydicom.pixels import get_encoder

    if not get_encoder(syntax).is_available:
        pytest.skip(f"no {syntax.name} encoder installed (pyjpegls or pylibjpeg-rle)")
    plain = pydicom_data / "693_UNCR.dcm"
    copy = _compressed_copy(plain, syntax, tmp_path / "copy.dcm")
    assert copy.stat().st_size < plain.stat().st_size * 0.8  # really compressed
    np.testing.assert_array_equal(load_dicom([copy]).voxels, load_dicom([plain]).voxels)


def test_pydicom_fallback_decodes_like_simpleitk(
    p001_dir: Path,
    pydicom_data: Path,
    sample_series_dir: Path,
    shared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every syntax decodes to the same HU plane through GDCM and through pydicom + pylibjpeg."""
    from pydicom.pixels import get_encoder

    files = [
        next(p001_dir.glob("*.dcm")),  # JPEG lossless process 14
        pydicom_data / "693_J2KR.dcm",  # JPEG 2000 lossless
        pydicom_data / "693_UNCR.dcm",  # explicit VR little endian
        shared_data / "dicom_ct" / "dcmqi_ct-3slice" / "02.dcm",  # implicit VR little endian
        next(sample_series_dir.iterdir()),  # JPEG 2000 lossless, anonymised
        _compressed_copy(pydicom_data / "693_UNCR.dcm", RLELossless, tmp_path / "rle.dcm"),
    ]
    if get_encoder(JPEGLSLossless).is_available:
        files.append(_compressed_copy(pydicom_data / "693_UNCR.dcm", JPEGLSLossless, tmp_path / "jls.dcm"))
    headers = [_only_series(scan_paths([path])).slices[0] for path in files]
    through_sitk = []
    for header in headers:
        assert dicom_decode._decode_with_sitk(header) is not None, header.source.label  # the GDCM path is exercised
        through_sitk.append(decode_slice(header))
    monkeypatch.setattr(dicom_decode, "_decode_with_sitk", lambda header: None)
    for header, expected in zip(headers, through_sitk, strict=True):
        plane = decode_slice(header)
        assert plane.shape == (512, 512)
        np.testing.assert_array_equal(plane, expected, err_msg=header.source.label)
    assert float(through_sitk[0].min()) < -900  # HU, rescale applied on both paths
    assert float(through_sitk[0].max()) > 300


def test_whole_series_through_fallback(chunk: Volume, chunk_files: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dicom_decode, "_decode_with_sitk", lambda header: None)
    np.testing.assert_array_equal(load_dicom(chunk_files).voxels, chunk.voxels)


# --------------------------------------------------------------------------- enhanced CT


def test_enhanced_ct_geometry_from_functional_groups(pydicom_data: Path) -> None:
    path = pydicom_data / "eCT_Supplemental.dcm"
    raw = pydicom.dcmread(path)
    series = _only_series(scan_paths([path]))
    assert series.slice_count == 2
    assert [h.frame for h in series.slices] == [0, 1]
    voi = raw.SharedFunctionalGroupsSequence[0].FrameVOILUTSequence[0]
    assert series.window == (float(voi.WindowCenter), float(voi.WindowWidth))  # from the functional groups
    volume = load_series(series)
    assert volume.shape == (2, 512, 512)
    assert volume.voxels.dtype == np.int16

    shared = raw.SharedFunctionalGroupsSequence[0]
    spacing = [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing]
    orientation = [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient]
    positions = [
        [float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient]
        for group in raw.PerFrameFunctionalGroupsSequence
    ]
    assert orientation == [-1, 0, 0, 0, 1, 0]  # columns run towards patient right: flipped to LPS
    assert positions[0][2] < positions[1][2]
    assert volume.spacing == pytest.approx((positions[1][2] - positions[0][2], spacing[0], spacing[1]))
    assert volume.spacing == pytest.approx((10.0, 0.388672, 0.388672))
    expected_origin = (positions[0][0] - 511 * spacing[1], positions[0][1], positions[0][2])
    assert volume.origin == pytest.approx(expected_origin)
    np.testing.assert_allclose(volume.direction_matrix, np.eye(3), atol=1e-9)
    intercept = float(shared.PixelValueTransformationSequence[0].RescaleIntercept)
    for z in range(2):  # frame 0 is the lower one; x flipped back to LPS
        np.testing.assert_array_equal(volume.voxels[z], raw.pixel_array[z][:, ::-1].astype(np.int32) + intercept)


# --------------------------------------------------------------------------- containers


def test_zip_loads_like_the_folder(chunk: Volume, chunk_files: list[Path], tmp_path: Path) -> None:
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in reversed(chunk_files):
            handle.write(path, f"export/P001/{path.name}")
        handle.writestr("export/README.txt", "exported for a test")
    scan = scan_paths([archive])
    assert [str(p) for p in scan.problems] == [f"{archive}!export/README.txt: not a DICOM file (no DICOM header found)"]
    volume = load_series(_only_series(scan))
    np.testing.assert_array_equal(volume.voxels, chunk.voxels)
    assert volume.origin == pytest.approx(chunk.origin)
    assert volume.slice_files[0] == f"{archive}!export/P001/{chunk_files[0].name}"


def test_dicomdir_loads_like_the_folder(chunk: Volume, chunk_files: list[Path], tmp_path: Path) -> None:
    from pydicom.fileset import FileSet

    file_set = FileSet()
    for path in chunk_files[:-1]:  # the DICOMDIR lists all but the top slice
        file_set.add(pydicom.dcmread(path))
    file_set.write(tmp_path / "disc")
    dicomdir = tmp_path / "disc" / "DICOMDIR"
    assert dicomdir.is_file()
    shutil.copy(chunk_files[-1], tmp_path / "disc" / "not_in_dicomdir.dcm")

    through_dicomdir = load_dicom([dicomdir])
    assert through_dicomdir.shape == (CHUNK - 1, 512, 512)  # only what the DICOMDIR lists
    np.testing.assert_array_equal(through_dicomdir.voxels, chunk.voxels[:-1])
    through_folder = load_dicom([tmp_path / "disc"])  # the folder walk finds every file
    np.testing.assert_array_equal(through_folder.voxels, chunk.voxels)
    assert through_folder.origin == pytest.approx(chunk.origin)


# --------------------------------------------------------------------------- bad input


def test_junk_in_a_folder_is_listed_and_the_series_still_opens(
    chunk: Volume, chunk_files: list[Path], shared_data: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "mixed"
    _copy(chunk_files, folder)
    shutil.copy(shared_data / "covid_ct" / "COVIDNet-CT_ex-covid-ct.png", folder / "image.dcm")
    shutil.copy(shared_data / "liver_ct" / "dcmqi" / "liver.dcm", folder / "seg.dcm")
    shutil.copy(shared_data / "liver_ct" / "dcmqi" / "liver_seg.nrrd", folder / "mask.nrrd")
    shutil.copy(shared_data / "liver_ct" / "totalsegmentator" / "example_ct_sm.nii.gz", folder / "ct.nii.gz")
    (folder / "notes.txt").write_text("patient notes, not an image")
    (folder / "empty.dcm").write_bytes(b"")

    scan = scan_paths([folder])
    problems = _problems(scan)
    assert problems == {
        "image.dcm": "not a DICOM file: it is a PNG image",
        "seg.dcm": "not an image series but a Segmentation Storage object",
        "mask.nrrd": "not a DICOM file: it is an NRRD volume (open it with File > Open volume)",
        "ct.nii.gz": "not a DICOM file: it is a gzip file (NIfTI .nii.gz? open it with File > Open volume)",
        "notes.txt": "not a DICOM file (no DICOM header found)",
        "empty.dcm": "not a DICOM file (no DICOM header found)",
    }
    # each problem names its file (full path) when shown to the user
    assert f"{folder / 'image.dcm'}: not a DICOM file: it is a PNG image" in [str(p) for p in scan.problems]
    volume = load_series(_only_series(scan))
    np.testing.assert_array_equal(volume.voxels, chunk.voxels)


def test_truncated_file_alone_names_the_file(pydicom_data: Path, tmp_path: Path) -> None:
    data = (pydicom_data / "693_UNCR.dcm").read_bytes()
    truncated = tmp_path / "half.dcm"
    truncated.write_bytes(data[: len(data) // 2])
    series = _only_series(scan_paths([truncated]))  # the header is intact
    with pytest.raises(DicomError, match=r"half\.dcm: pixel data cannot be decoded .*less than expected"):
        load_series(series)


def _replace_middle(chunk_files: list[Path], folder: Path, change: str) -> tuple[Path, int]:
    copies = _copy(chunk_files, folder)
    index = CHUNK // 2
    target = copies[index]
    dataset = pydicom.dcmread(target)
    if change == "truncate":
        dataset.decompress()
        dataset.save_as(target)
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    else:
        del dataset.PixelData
        dataset.save_as(target)
    return target, index


@pytest.mark.parametrize(
    ("change", "reason"),
    [("truncate", "pixel data cannot be decoded"), ("no-pixels", "the file has no pixel data")],
)
def test_undecodable_slice_is_left_missing_with_a_warning(
    chunk: Volume, chunk_files: list[Path], tmp_path: Path, change: str, reason: str
) -> None:
    target, index = _replace_middle(chunk_files, tmp_path / change, change)
    scan = scan_paths([tmp_path / change])
    assert scan.problems == []  # headers are fine; the damage shows when decoding
    volume = load_series(_only_series(scan))
    assert volume.shape == chunk.shape
    assert volume.missing_slices == frozenset({index})
    assert any(str(target) in w and reason in w for w in volume.warnings), volume.warnings
    assert np.all(volume.voxels[index] == dicom.MISSING_SLICE_VALUE)
    keep = [z for z in range(CHUNK) if z != index]
    np.testing.assert_array_equal(volume.voxels[keep], chunk.voxels[keep])


def test_missing_middle_slice(chunk: Volume, chunk_files: list[Path], tmp_path: Path) -> None:
    gap = 4
    _copy(chunk_files[:gap] + chunk_files[gap + 1 :], tmp_path / "gap")
    volume = load_dicom([tmp_path / "gap"])
    assert volume.shape == chunk.shape  # the gap keeps its place
    assert volume.spacing == pytest.approx(chunk.spacing)
    assert volume.missing_slices == frozenset({gap})
    assert np.all(volume.voxels[gap] == dicom.MISSING_SLICE_VALUE)
    np.testing.assert_array_equal(volume.voxels[gap + 1 :], chunk.voxels[gap + 1 :])
    np.testing.assert_array_equal(volume.voxels[:gap], chunk.voxels[:gap])
    (warning,) = volume.warnings
    assert "1 slice(s) missing" in warning
    assert chunk_files[gap - 1].name in warning
    assert chunk_files[gap + 1].name in warning
    assert volume.slice_files[gap] == ""


def test_mixed_orientations_split_the_series(chunk: Volume, chunk_files: list[Path], tmp_path: Path) -> None:
    copies = _copy(chunk_files, tmp_path / "mixed")
    tilt = np.radians(15)
    for path in copies[-3:]:  # the top three: a tilted reconstruction in the same series
        dataset = pydicom.dcmread(path)
        dataset.ImageOrientationPatient = [1, 0, 0, 0, float(np.cos(tilt)), float(np.sin(tilt))]
        dataset.save_as(path)
    scan = scan_paths([tmp_path / "mixed"])
    assert [s.slice_count for s in scan.series] == [7, 3]
    assert [s.part for s in scan.series] == [0, 1]
    assert scan.series[0].series_uid == scan.series[1].series_uid
    assert all("mixes 2 orientations" in " ".join(s.notes) for s in scan.series)
    assert scan.series[1].display_name.endswith("(part 2)")
    main = load_series(scan.series[0])
    np.testing.assert_array_equal(main.voxels, chunk.voxels[:7])
    tilted = load_series(scan.series[1])
    assert tilted.shape == (3, 512, 512)
    assert tilted.spacing[0] == pytest.approx(chunk.spacing[0] * np.cos(tilt))  # steps along the tilted normal
    np.testing.assert_allclose(tilted.direction_matrix[:, 2], [0, -np.sin(tilt), np.cos(tilt)], atol=1e-6)
    np.testing.assert_array_equal(tilted.voxels, chunk.voxels[7:])


def test_duplicate_position_keeps_the_first(chunk: Volume, chunk_files: list[Path], tmp_path: Path) -> None:
    copies = _copy(chunk_files, tmp_path / "dup")
    original = copies[3]
    dataset = pydicom.dcmread(original)
    dataset.decompress()
    dataset.PixelData = (dataset.pixel_array + 100).astype(dataset.pixel_array.dtype).tobytes()
    dataset.SOPInstanceUID = generate_uid()
    duplicate = tmp_path / "dup" / "zz_duplicate.dcm"  # after the original in scan order
    dataset.save_as(duplicate)
    volume = load_dicom([tmp_path / "dup"])
    assert volume.shape == chunk.shape
    np.testing.assert_array_equal(volume.voxels, chunk.voxels)
    (warning,) = volume.warnings
    assert str(duplicate) in warning
    assert str(original) in warning
    assert "same position" in warning


def _patched(source: Path, target: Path, marker: bytes, offset: int, replacement: bytes) -> Path:
    """A byte-level copy of ``source`` with ``replacement`` written ``offset`` bytes after ``marker``."""
    data = source.read_bytes()
    at = data.index(marker) + offset
    target.write_bytes(data[:at] + replacement + data[at + len(replacement) :])
    return target


@pytest.mark.parametrize(
    ("marker", "offset", "replacement"),
    [
        (b"\x18\x00\x50\x00DS\x08\x00", 8, b"5.0 mm  "),  # SliceThickness '5.000000' -> '5.0 mm'
        (b"\x08\x00\x20\x00DA", 4, b"D\xd6"),  # StudyDate with a corrupted VR
        (b"\x02\x00\x00\x00UL\x04\x00", 6, b"\x05\x00"),  # file meta group length of 5 bytes
    ],
    ids=["bad-decimal-string", "bad-vr", "bad-length"],
)
def test_one_damaged_header_does_not_stop_the_scan(
    chunk_files: list[Path], pydicom_data: Path, tmp_path: Path, marker: bytes, offset: int, replacement: bytes
) -> None:
    folder = tmp_path / "damaged"
    _copy(chunk_files, folder)
    bad = _patched(pydicom_data / "693_UNCR.dcm", folder / "damaged.dcm", marker, offset, replacement)
    scan = scan_paths([folder])
    assert [s.slice_count for s in scan.series] == [CHUNK]
    assert [p.label for p in scan.problems] == [str(bad)]


def _raw_dataset_copy(source: Path, target: Path) -> Path:
    """``source`` written as a bare dataset: no 128-byte preamble, no "DICM", no file meta (old archives)."""
    from pydicom.dataset import FileMetaDataset

    dataset = pydicom.dcmread(source)
    dataset.preamble = None
    dataset.file_meta = FileMetaDataset()
    dataset.save_as(target, enforce_file_format=False, implicit_vr=True, little_endian=True)
    assert target.read_bytes()[128:132] != b"DICM"
    return target


def test_file_without_preamble_loads(pydicom_data: Path, tmp_path: Path) -> None:
    """read_header accepts bare datasets that carry a SOP Class; the GDCM path decodes them."""
    plain = pydicom_data / "693_UNCR.dcm"
    raw = _raw_dataset_copy(plain, tmp_path / "raw.dcm")
    np.testing.assert_array_equal(load_dicom([raw]).voxels, load_dicom([plain]).voxels)


def test_file_without_preamble_in_a_zip_loads(pydicom_data: Path, tmp_path: Path) -> None:
    plain = pydicom_data / "693_UNCR.dcm"
    raw = _raw_dataset_copy(plain, tmp_path / "raw.dcm")
    archive = tmp_path / "old.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.write(raw, "IMG0001")
    np.testing.assert_array_equal(load_dicom([archive]).voxels, load_dicom([plain]).voxels)


def test_missing_slice_in_a_stack_stored_top_down(chunk: Volume, chunk_files: list[Path], tmp_path: Path) -> None:
    """Rows running towards patient right flip x and the slice normal: the gap index follows the flip."""
    gap = 6
    files = _copy(chunk_files[:gap] + chunk_files[gap + 1 :], tmp_path / "flipped")
    for path in files:
        dataset = pydicom.dcmread(path)
        dataset.ImageOrientationPatient = [-1, 0, 0, 0, 1, 0]
        dataset.save_as(path)
    volume = load_dicom([tmp_path / "flipped"])
    assert volume.shape == chunk.shape
    assert volume.missing_slices == frozenset({gap})
    keep = [z for z in range(CHUNK) if z != gap]
    np.testing.assert_array_equal(volume.voxels[keep], chunk.voxels[keep][:, :, ::-1])
    assert volume.origin == pytest.approx(chunk.index_to_lps(0, 0, 0) - np.array([511 * chunk.spacing[2], 0, 0]))
    assert [Path(f).name for f in volume.slice_files if f] == [chunk_files[z].name for z in keep]
    assert volume.slice_files[gap] == ""


def test_nonexistent_path(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_folder"
    scan = scan_paths([missing])
    assert scan.series == []
    assert [str(p) for p in scan.problems] == [f"{missing}: file not found"]
    with pytest.raises(DicomError, match=r"no DICOM image series found in .*no_such_folder.*file not found"):
        load_dicom([missing])


def test_sagittal_series_is_reoriented_to_lps(chunk: Volume, chunk_files: list[Path], tmp_path: Path) -> None:
    """Sagittal slices (rows running inferior, slices stacked towards the right) load as the axial cube."""
    template = pydicom.dcmread(chunk_files[0])
    template.decompress()
    intercept = float(template.RescaleIntercept)
    columns = range(200, 216)
    folder = tmp_path / "sagittal"
    folder.mkdir()
    for number, x in enumerate(columns):
        plane = chunk.voxels[::-1, :, x]  # rows: superior to inferior; columns: anterior to posterior
        dataset = template.copy()
        dataset.Rows, dataset.Columns = plane.shape
        dataset.PixelSpacing = [chunk.spacing[0], chunk.spacing[1]]
        dataset.SliceThickness = chunk.spacing[2]
        dataset.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        dataset.ImagePositionPatient = [float(v) for v in chunk.index_to_lps(CHUNK - 1, 0, x)]
        dataset.PixelData = (plane.astype(np.int32) - int(intercept)).astype(np.uint16).tobytes()
        dataset.SOPInstanceUID = generate_uid()
        dataset.InstanceNumber = number + 1
        dataset.save_as(folder / f"sag_{number:02d}.dcm")
    volume = load_dicom([folder])
    assert volume.shape == (CHUNK, 512, len(columns))
    np.testing.assert_array_equal(volume.voxels, chunk.voxels[:, :, columns.start : columns.stop])
    np.testing.assert_allclose(volume.direction_matrix, np.eye(3), atol=1e-9)
    assert volume.origin == pytest.approx(tuple(chunk.index_to_lps(0, 0, columns.start)))
    assert volume.spacing == pytest.approx(chunk.spacing)


# --------------------------------------------------------------------------- tags, cancellation


def test_tag_rows_flatten_sequences(pydicom_data: Path) -> None:
    rows = tag_rows(DicomSource(pydicom_data / "eCT_Supplemental.dcm"))
    by_tag = {(r.depth, r.tag): r for r in rows}
    assert by_tag[(0, "(0010,0020)")].value == "0010"
    assert by_tag[(0, "(0010,0020)")].name == "Patient ID"
    assert by_tag[(0, "(0008,0060)")].value == "CT"
    assert by_tag[(0, "(0002,0010)")].value == "1.2.840.10008.1.2.1"  # file meta first
    per_frame = by_tag[(0, "(5200,9230)")]
    assert (per_frame.vr, per_frame.value) == ("SQ", "2 item(s)")
    positions = [r.value for r in rows if r.tag == "(0020,0032)"]
    assert [r.depth for r in rows if r.tag == "(0020,0032)"] == [2, 2]  # item -> PlanePositionSequence -> IPP
    assert "-159" in positions[0]
    assert "-149" in positions[1]
    assert max(r.depth for r in rows) >= 3
    assert not any(r.tag == "(7FE0,0010)" for r in rows)  # no pixel data in the tag browser


def test_cancellation(chunk_files: list[Path]) -> None:
    with pytest.raises(Cancelled):
        scan_paths(chunk_files, cancelled=lambda: True)
    series = _only_series(scan_paths(chunk_files))
    with pytest.raises(Cancelled):
        load_series(series, cancelled=lambda: True)
    calls: list[tuple[int, int]] = []
    shown: list[int] = []
    said: set[str] = set()
    load_series(
        series,
        progress=lambda done, total, what: (calls.append((done, total)), said.add(what)),
        on_slice=lambda volume, z: shown.append(z),
        workers=2,
    )
    assert calls[-1] == (CHUNK, CHUNK)
    assert said == {"decoding slices"}
    assert [done for done, _ in calls] == sorted({done for done, _ in calls})  # rising, once per decoded run
    assert sorted(shown) == list(range(CHUNK))
    assert shown[0] == CHUNK // 2  # the middle slice is decoded and shown first


def test_decode_pool_is_threads_per_core_unless_the_caller_sizes_it(
    chunk_files: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """More decode threads than cores (GDCM drops the GIL; a busy machine shares its cores by thread)."""
    pools: list[int] = []
    real_pool = dicom_decode.ThreadPoolExecutor

    def recording(max_workers: int) -> ThreadPoolExecutor:
        pools.append(max_workers)
        return real_pool(max_workers=max_workers)

    monkeypatch.setattr(dicom_decode, "ThreadPoolExecutor", recording)
    monkeypatch.setattr(dicom_decode, "usable_cores", lambda: 2)
    series = _only_series(scan_paths(chunk_files))
    by_default = load_series(series)
    sized = load_series(series, workers=1)
    assert pools == [2 * dicom_decode.DECODE_THREADS_PER_CORE, 1]
    np.testing.assert_array_equal(by_default.voxels, sized.voxels)
    monkeypatch.setattr(dicom_decode, "usable_cores", lambda: 64)
    assert dicom_decode.default_decode_threads() == dicom_decode.MAX_DECODE_THREADS


@pytest.mark.parametrize("workers", [1, 2])
def test_runs_decode_the_same_voxels_as_single_files(
    chunk: Volume, chunk_files: list[Path], workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs through one GDCM series reader and the per-file decoder give identical HU, slice for slice."""
    series = _only_series(scan_paths(chunk_files))
    ordered = dicom.sort_slices(series.slices).slices
    single_files = np.stack([decode_slice(header) for header in ordered])
    decoded_runs: list[int] = []
    original = dicom_decode._decode_run_with_sitk

    def spy(headers: list, *args: object) -> bool:
        taken = original(headers, *args)  # type: ignore[arg-type]
        if taken:
            decoded_runs.append(len(headers))
        return taken

    monkeypatch.setattr(dicom_decode, "_decode_run_with_sitk", spy)
    volume = load_series(series, workers=workers)
    assert sum(decoded_runs) >= CHUNK - 2  # runs took the slices, but the middle one went alone
    assert sum(decoded_runs) < CHUNK
    np.testing.assert_array_equal(volume.voxels, single_files)
    np.testing.assert_array_equal(volume.voxels, chunk.voxels)


def test_run_that_gdcm_refuses_falls_back_to_single_files(
    chunk: Volume, chunk_files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run the series reader cannot take is decoded file by file, with the same result."""
    calls: list[int] = []

    def refuse(headers: list, *_args: object) -> bool:
        calls.append(len(headers))
        return False

    monkeypatch.setattr(dicom_decode, "_decode_run_with_sitk", refuse)
    volume = load_series(_only_series(scan_paths(chunk_files)))
    assert sum(calls) == CHUNK
    np.testing.assert_array_equal(volume.voxels, chunk.voxels)


def test_coronal_acquisition_is_resliced_axial(chunk: Volume, chunk_files: list[Path], tmp_path: Path) -> None:
    """Slices acquired coronally (the stack runs anterior to posterior) come out in LPS [z, y, x] order."""
    files = _copy(chunk_files, tmp_path / "coronal")
    for path in files:
        dataset = pydicom.dcmread(path)
        x, _, z = (float(v) for v in dataset.ImagePositionPatient)
        dataset.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # rows run right->left, columns head->feet
        dataset.ImagePositionPatient = [x, z, 100.0]  # the stack position moves along y (posterior)
        dataset.save_as(path)
    volume = load_dicom([tmp_path / "coronal"])
    assert volume.shape == (512, CHUNK, 512)  # z (512 rows, feet up), y (the 10 slices), x
    assert volume.slice_files == ()  # no axial slice is one file
    # the coronal plane at y of the first (most anterior) file is the first file's pixels, flipped head-up
    first = np.asarray(chunk.voxels[0])
    np.testing.assert_array_equal(volume.voxels[:, 0, :], first[::-1, :])
    assert volume.spacing[1] == pytest.approx(chunk.spacing[0])


def test_a_label_names_a_file_or_an_archive_member_and_reads_back_as_its_source(tmp_path: Path) -> None:
    from medview.io.sources import is_volume_name, split_archive_label

    archive = tmp_path / "study.zip"
    member = DicomSource(archive, "series/IM0001")
    assert member.label == f"{archive}!series/IM0001"
    assert DicomSource.from_label(member.label) == member
    plain = tmp_path / "IM0001.dcm"
    assert DicomSource.from_label(str(plain)) == DicomSource(plain)
    odd = tmp_path / "scan!1.dcm"  # a file whose own name holds the separator stays a file
    odd.write_bytes(b"not read here")
    assert split_archive_label(str(odd)) == (odd, None)
    assert is_volume_name(Path("CT.NII.GZ"))
    assert is_volume_name(Path("mask.nrrd"))
    assert not is_volume_name(Path("IM0001.dcm"))
