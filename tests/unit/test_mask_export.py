"""Mask export (DICOM SEG, NIfTI) on real CT series: what is written lands back on the same voxels.

Every SEG is read back three ways: the app's own reader (``read_label_map``),
highdicom's reader, and raw pydicom frames matched to their source images by the
referenced SOP Instance UID (so a mistake shared by writer and reader cannot
hide).  Masks are asymmetric in every direction, so a flipped or transposed
frame, or a frame on the wrong slice, cannot match by accident.  ``dciodvfy``
(dicom3tools) and ``dcmdump`` (dcmtk) check the files when installed (CI installs
them: installer/bootstrap.sh test).
"""

from __future__ import annotations

import gzip
import shutil
import stat
import subprocess
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import generate_uid

from medview.errors import ExportError, InputError
from medview.io.dicom import load_dicom
from medview.io.mask_export import write_dicom_seg, write_nifti_mask
from medview.io.volume import Volume
from medview.io.volume_files import read_label_map, read_volume

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_MASK = REPO_ROOT / "resources" / "samples" / "totalsegmentator_ct" / "liver_mask.nii.gz"
SEG_OPTIONS = {"algorithm_name": "liver-eas-unet", "algorithm_version": "1.0.0"}

Plane = Callable[[np.ndarray], np.ndarray]  # a volume slice [y, x] -> the source image's [row, column]


def _same(plane: np.ndarray) -> np.ndarray:
    return plane


def _asymmetric_mask(shape: tuple[int, int, int]) -> np.ndarray:
    """Different on every slice and lopsided in y and x: no flip, transpose or slice shift maps it onto itself."""
    depth, rows, columns = shape
    mask = np.zeros(shape, dtype=bool)
    for z in range(depth):
        mask[z, rows // 8 + 3 * z : rows // 2, columns // 10 : columns // 3 + 5 * z] = True
    mask[0, : rows // 20, : columns // 7] = True  # a corner block on the first slice only
    return mask


# --------------------------------------------------------------------------- reading SEGs back independently


def _frames_by_source(path: Path) -> dict[tuple[str, int | None], np.ndarray]:
    """The SEG's frames with pydicom alone, keyed by (referenced SOP Instance UID, referenced frame number)."""
    dataset = pydicom.dcmread(path)
    assert dataset.SegmentationType == "BINARY"
    pixels = dataset.pixel_array
    if pixels.ndim == 2:
        pixels = pixels[np.newaxis]
    frames = {}
    for index, group in enumerate(dataset.PerFrameFunctionalGroupsSequence):
        (source,) = group.DerivationImageSequence[0].SourceImageSequence
        assert source.SpatialLocationsPreserved == "YES"
        frame_number = int(source.ReferencedFrameNumber) if "ReferencedFrameNumber" in source else None
        frames[(str(source.ReferencedSOPInstanceUID), frame_number)] = pixels[index].astype(bool)
    return frames


def _check_seg(
    path: Path, mask: np.ndarray, volume: Volume, expected: dict[tuple[str, int | None], np.ndarray]
) -> None:
    """``path`` holds exactly ``expected`` (frames keyed like ``_frames_by_source``), and reads back as ``mask``."""
    # the app's reader: the same voxels on the same volume
    label_map = read_label_map(path, volume)
    np.testing.assert_array_equal(label_map.labels, mask.astype(np.uint8))
    assert label_map.names == {1: "Liver"}
    # raw frames: each non-empty source plane has its frame, matched pixel for pixel; no other frame exists
    frames = _frames_by_source(path)
    wanted = {key: plane for key, plane in expected.items() if plane.any()}
    assert set(frames) == set(wanted)
    for key, plane in wanted.items():
        np.testing.assert_array_equal(frames[key], plane, err_msg=f"frame of {key}")
    # highdicom's reader, by source instance
    seg = hd.seg.segread(path)
    single_frame = {uid for uid, frame in expected if frame is None}
    if single_frame:
        uids = sorted(single_frame)
        stack = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=uids, combine_segments=True, assert_missing_frames_are_empty=True
        )
        for uid, plane in zip(uids, stack, strict=True):
            np.testing.assert_array_equal(plane.astype(bool), expected[(uid, None)])


def _expected_frames(volume: Volume, mask: np.ndarray, plane: Plane = _same) -> dict:
    return {(uid, None): plane(mask[z]) for z, uid in enumerate(volume.slice_uids) if z not in volume.missing_slices}


def _run_tool(tool: str, path: Path) -> subprocess.CompletedProcess:
    executable = shutil.which(tool)
    if executable is None:
        pytest.skip(f"{tool} is not installed (Debian: installer/bootstrap.sh test installs it)")
    return subprocess.run([executable, str(path)], capture_output=True, text=True, timeout=120, check=False)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sample_ct(sample_series_dir: Path) -> Volume:
    return load_dicom([sample_series_dir])


@pytest.fixture(scope="module")
def dcmqi_ct(shared_data: Path) -> Volume:
    return load_dicom([shared_data / "dicom_ct" / "dcmqi_ct-3slice"])


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory, sample_ct: Volume) -> dict[str, Path]:
    """SEGs of the bundled sample series: its real liver mask, an asymmetric mask, an empty mask."""
    folder = tmp_path_factory.mktemp("seg")
    liver = read_label_map(SAMPLE_MASK, sample_ct).labels == 1
    return {
        "liver": write_dicom_seg(
            folder / "liver.dcm",
            liver,
            sample_ct,
            **SEG_OPTIONS,
            algorithm_parameters={"threshold": "0.5"},
            display_rgb=(230, 120, 40),
            content_description="liver-eas-unet 1.0.0; demo model: not for diagnosis",
        ),
        "asymmetric": write_dicom_seg(
            folder / "asymmetric.dcm", _asymmetric_mask(sample_ct.shape), sample_ct, **SEG_OPTIONS
        ),
        "empty": write_dicom_seg(folder / "empty.dcm", np.zeros(sample_ct.shape, bool), sample_ct, **SEG_OPTIONS),
    }


# --------------------------------------------------------------------------- DICOM SEG of the bundled sample


def test_seg_of_the_sample_liver_round_trips(written: dict[str, Path], sample_ct: Volume) -> None:
    """The sample's real liver mask (TotalSegmentator) written as SEG comes back voxel for voxel."""
    liver = read_label_map(SAMPLE_MASK, sample_ct).labels == 1
    assert liver.sum() > 300_000
    _check_seg(written["liver"], liver, sample_ct, _expected_frames(sample_ct, liver))


def test_seg_frames_land_on_their_source_slices(written: dict[str, Path], sample_ct: Volume) -> None:
    mask = _asymmetric_mask(sample_ct.shape)
    _check_seg(written["asymmetric"], mask, sample_ct, _expected_frames(sample_ct, mask))
    # each frame sits where its source image is (positions are independent of the UIDs)
    dataset = pydicom.dcmread(written["asymmetric"])
    for group in dataset.PerFrameFunctionalGroupsSequence:
        uid = group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        z = sample_ct.slice_uids.index(uid)
        source = pydicom.dcmread(sample_ct.slice_files[z], stop_before_pixels=True)
        position = [float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient]
        assert position == pytest.approx([float(v) for v in source.ImagePositionPatient])
        np.testing.assert_allclose(position, sample_ct.index_to_lps(z, 0, 0), atol=1e-3)


def test_seg_header_describes_the_liver_model_and_its_source(written: dict[str, Path], sample_ct: Volume) -> None:
    dataset = pydicom.dcmread(written["liver"], stop_before_pixels=True)
    assert dataset.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
    assert dataset.Modality == "SEG"
    (segment,) = dataset.SegmentSequence
    assert segment.SegmentLabel == "Liver"
    assert segment.SegmentAlgorithmType == "AUTOMATIC"
    category = segment.SegmentedPropertyCategoryCodeSequence[0]
    kind = segment.SegmentedPropertyTypeCodeSequence[0]
    assert (category.CodeValue, category.CodingSchemeDesignator) == ("91723000", "SCT")  # Anatomical Structure
    assert (kind.CodeValue, kind.CodingSchemeDesignator, kind.CodeMeaning) == ("10200004", "SCT", "Liver")
    (algorithm,) = segment.SegmentationAlgorithmIdentificationSequence
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("liver-eas-unet", "1.0.0")
    assert algorithm.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"  # Artificial Intelligence
    assert algorithm.AlgorithmParameters == "threshold=0.5"
    assert hd.color.CIELabColor.from_dicom_value(segment.RecommendedDisplayCIELabValue).to_rgb() == (230, 120, 40)
    assert dataset.ContentDescription == "liver-eas-unet 1.0.0; demo model: not for diagnosis"
    assert dataset.SeriesDescription == "Liver (AI: liver-eas-unet)"
    assert dataset.SeriesInstanceUID != dataset.ReferencedSeriesSequence[0].SeriesInstanceUID
    # the sample is anonymised (study, series UIDs blank): stand-ins, the same on every export
    source = pydicom.dcmread(sample_ct.slice_files[0], stop_before_pixels=True)
    assert source.StudyInstanceUID == ""
    assert dataset.StudyInstanceUID
    again = pydicom.dcmread(written["asymmetric"], stop_before_pixels=True)
    assert again.StudyInstanceUID == dataset.StudyInstanceUID
    assert again.ReferencedSeriesSequence[0].SeriesInstanceUID == dataset.ReferencedSeriesSequence[0].SeriesInstanceUID
    assert dataset.FrameOfReferenceUID == source.FrameOfReferenceUID
    # every slice is referenced, even those without liver
    referenced = {
        item.ReferencedSOPInstanceUID for item in dataset.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert referenced == set(sample_ct.slice_uids)


def test_empty_mask_is_a_valid_seg_that_the_viewer_refuses_to_overlay(
    written: dict[str, Path], sample_ct: Volume
) -> None:
    """highdicom allows an empty SEG ("no liver found"): every slice as an empty frame."""
    dataset = pydicom.dcmread(written["empty"])
    assert int(dataset.NumberOfFrames) == sample_ct.shape[0]
    assert not dataset.pixel_array.any()
    with pytest.raises(InputError, match=r"empty\.dcm: the segmentation covers nothing"):
        read_label_map(written["empty"], sample_ct)


@pytest.mark.parametrize("name", ["liver", "asymmetric", "empty"])
def test_dciodvfy_finds_no_error(written: dict[str, Path], name: str) -> None:
    result = _run_tool("dciodvfy", written[name])
    lines = (result.stdout + result.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    assert not errors, "\n".join(lines)
    assert "Segmentation" in lines  # dciodvfy names the IOD it checked against


def test_dcmdump_reads_the_seg(written: dict[str, Path]) -> None:
    result = _run_tool("dcmdump", written["liver"])
    assert result.returncode == 0, result.stderr
    assert "SegmentationStorage" in result.stdout
    assert "(0062,0005) LO [Liver]" in result.stdout
    assert "E:" not in result.stderr, result.stderr
    assert "W:" not in result.stderr, result.stderr


# --------------------------------------------------------------------------- DICOM SEG of other real series


def test_seg_of_the_dcmqi_liver_equals_dcmqi_own_seg(tmp_path: Path, shared_data: Path, dcmqi_ct: Volume) -> None:
    """The dcmqi liver (a SEG written by dcmqi) rewritten by MedView: the same frames on the same instances."""
    original_path = shared_data / "liver_ct" / "dcmqi" / "liver.dcm"
    liver = read_label_map(original_path, dcmqi_ct).labels == 1
    path = write_dicom_seg(tmp_path / "liver.dcm", liver, dcmqi_ct, **SEG_OPTIONS)
    _check_seg(path, liver, dcmqi_ct, _expected_frames(dcmqi_ct, liver))
    uids = list(dcmqi_ct.slice_uids)
    ours = hd.seg.segread(path).get_pixels_by_source_instance(uids, combine_segments=True)
    # dcmqi does not say whether spatial locations are preserved; MedView says YES (checked in _check_seg)
    theirs = hd.seg.segread(original_path).get_pixels_by_source_instance(
        uids, combine_segments=True, ignore_spatial_locations=True
    )
    np.testing.assert_array_equal(ours.astype(bool), theirs.astype(bool))
    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    source = pydicom.dcmread(dcmqi_ct.slice_files[0], stop_before_pixels=True)
    assert dataset.StudyInstanceUID == source.StudyInstanceUID  # a real study UID is kept
    assert dataset.PatientID == source.PatientID
    assert dataset.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    result = _run_tool("dciodvfy", path) if shutil.which("dciodvfy") else None
    if result is not None:
        assert not [line for line in result.stderr.splitlines() if line.startswith(("Error", "Warning"))]


def _rewritten_series(folder: Path, source_folder: Path, how: str) -> Path:
    """The dcmqi slices stored another way (same patient, same anatomy): rows flipped, or rows and columns swapped.

    ``flip-rows``: rows run anterior (ImageOrientationPatient column direction -y);
    ``transpose``: rows run along x (patient left) and columns along y, so the
    slice normal points inferior and the loader also reverses the slice order.
    """
    folder.mkdir()
    series_uid = generate_uid()
    for path in sorted(source_folder.iterdir()):
        dataset = pydicom.dcmread(path)
        pixels = dataset.pixel_array
        position = np.asarray([float(v) for v in dataset.ImagePositionPatient])
        row_spacing = float(dataset.PixelSpacing[0])
        if how == "flip-rows":
            pixels = pixels[::-1, :]
            position = position + np.array([0.0, 1.0, 0.0]) * row_spacing * (dataset.Rows - 1)
            dataset.ImageOrientationPatient = [1, 0, 0, 0, -1, 0]
        else:
            pixels = pixels.T
            dataset.ImageOrientationPatient = [0, 1, 0, 1, 0, 0]
            dataset.Rows, dataset.Columns = dataset.Columns, dataset.Rows
        dataset.PixelData = np.ascontiguousarray(pixels).tobytes()
        dataset.ImagePositionPatient = [f"{v:.6f}" for v in position]
        dataset.SeriesInstanceUID = series_uid
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.save_as(folder / path.name)
    return folder


@pytest.mark.parametrize(
    ("how", "plane"),
    [("flip-rows", lambda p: p[::-1, :]), ("transpose", lambda p: p.T)],
    ids=["flip-rows", "transpose"],
)
def test_seg_frames_follow_how_the_source_stores_its_pixels(
    tmp_path: Path, shared_data: Path, dcmqi_ct: Volume, how: str, plane: Plane
) -> None:
    """The loader shows these series exactly like the original; each SEG frame must still match its own file."""
    folder = _rewritten_series(tmp_path / how, shared_data / "dicom_ct" / "dcmqi_ct-3slice", how)
    volume = load_dicom([folder])
    np.testing.assert_array_equal(volume.voxels, dcmqi_ct.voxels)  # the rewrite is the same anatomy, shown the same
    np.testing.assert_allclose(volume.origin, dcmqi_ct.origin, atol=1e-4)
    mask = _asymmetric_mask(volume.shape)
    path = write_dicom_seg(tmp_path / f"{how}.dcm", mask, volume, **SEG_OPTIONS)
    _check_seg(path, mask, volume, _expected_frames(volume, mask, plane))
    # the SEG also lands on the original series (same frame of reference), placed by geometry
    np.testing.assert_array_equal(read_label_map(path, replace(dcmqi_ct, slice_uids=())).labels, mask)


def test_seg_of_an_enhanced_multiframe_ct_stored_right_to_left(tmp_path: Path, shared_data: Path) -> None:
    """eCT_Supplemental.dcm: one multi-frame file whose columns run to patient right, shown flipped (LPS)."""
    volume = load_dicom([shared_data / "dicom_ct" / "pydicom-data" / "eCT_Supplemental.dcm"])
    source = pydicom.dcmread(volume.slice_files[0], stop_before_pixels=True)
    orientation = source.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    assert [float(v) for v in orientation][:3] == [-1.0, 0.0, 0.0]  # what this test is about
    mask = _asymmetric_mask(volume.shape)
    path = write_dicom_seg(tmp_path / "ect.dcm", mask, volume, **SEG_OPTIONS)
    frame_z = [
        round((float(g.PlanePositionSequence[0].ImagePositionPatient[2]) - volume.origin[2]) / volume.spacing[0])
        for g in source.PerFrameFunctionalGroupsSequence
    ]
    expected = {(str(source.SOPInstanceUID), number): mask[z][:, ::-1] for number, z in enumerate(frame_z, start=1)}
    _check_seg(path, mask, volume, expected)
    result = _run_tool("dciodvfy", path) if shutil.which("dciodvfy") else None
    if result is not None:
        assert not [line for line in result.stderr.splitlines() if line.startswith("Error")]


def test_missing_slices_are_left_out_and_masks_on_them_refused(
    tmp_path: Path, sample_series_dir: Path, sample_ct: Volume, written: dict[str, Path]
) -> None:
    """A slice file removed from the sample series: the loader fills it with air; a SEG holds only the others."""
    folder = tmp_path / "gap"
    folder.mkdir()
    removed = sample_ct.slice_files[7]
    for path in sample_series_dir.iterdir():
        if str(path) != removed:
            shutil.copy(path, folder / path.name)
    volume = load_dicom([folder])
    assert volume.shape == sample_ct.shape
    assert volume.missing_slices == frozenset({7})
    mask = _asymmetric_mask(volume.shape)
    mask[7] = False
    path = write_dicom_seg(tmp_path / "gap.dcm", mask, volume, **SEG_OPTIONS)
    _check_seg(path, mask, volume, _expected_frames(volume, mask))
    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    assert int(dataset.NumberOfFrames) == 19
    assert len(dataset.ReferencedSeriesSequence[0].ReferencedInstanceSequence) == 19
    # the anonymised series' stand-in UIDs come from its headers, not from the folder it was opened from
    original = pydicom.dcmread(written["liver"], stop_before_pixels=True)
    assert dataset.StudyInstanceUID == original.StudyInstanceUID
    series = dataset.ReferencedSeriesSequence[0].SeriesInstanceUID
    assert series == original.ReferencedSeriesSequence[0].SeriesInstanceUID

    mask[7, 100:110, 100:110] = True
    with pytest.raises(InputError, match=r"covers slice\(s\) 8 \(counting from 1\), which are missing"):
        write_dicom_seg(tmp_path / "refused.dcm", mask, volume, **SEG_OPTIONS)
    assert not (tmp_path / "refused.dcm").exists()


def test_seg_of_a_series_opened_from_a_zip(tmp_path: Path, shared_data: Path, dcmqi_ct: Volume) -> None:
    """Source headers are read from the archive members the loader names ``archive.zip!member``."""
    with zipfile.ZipFile(tmp_path / "ct.zip", "w") as archive:
        for path in sorted((shared_data / "dicom_ct" / "dcmqi_ct-3slice").iterdir()):
            archive.write(path, f"series/{path.name}")
    volume = load_dicom([tmp_path / "ct.zip"])
    assert volume.slice_files[0] == f"{tmp_path / 'ct.zip'}!series/03.dcm"
    mask = _asymmetric_mask(volume.shape)
    path = write_dicom_seg(tmp_path / "seg.dcm", mask, volume, **SEG_OPTIONS)
    _check_seg(path, mask, volume, _expected_frames(volume, mask))
    assert volume.slice_uids == dcmqi_ct.slice_uids


def test_a_volume_without_dicom_source_needs_nifti(tmp_path: Path, shared_data: Path) -> None:
    volume = read_volume(shared_data / "liver_ct" / "totalsegmentator" / "example_ct_sm.nii.gz")
    with pytest.raises(InputError, match=r"a DICOM SEG needs the DICOM series .* export it as NIfTI instead"):
        write_dicom_seg(tmp_path / "x.dcm", np.ones(volume.shape, bool), volume, **SEG_OPTIONS)


def test_seg_input_checks(tmp_path: Path, sample_ct: Volume) -> None:
    with pytest.raises(ValueError, match=r"expected the volume's shape \(20, 512, 512\), got \(20, 512, 511\)"):
        write_dicom_seg(tmp_path / "x.dcm", np.zeros((20, 512, 511), bool), sample_ct, **SEG_OPTIONS)
    with pytest.raises(ValueError, match="expected a bool"):
        write_dicom_seg(tmp_path / "x.dcm", np.full(sample_ct.shape, 2, np.uint8), sample_ct, **SEG_OPTIONS)
    moved = replace(sample_ct, slice_uids=("1.2.3", *sample_ct.slice_uids[1:]))
    with pytest.raises(InputError, match=r"not slice 0's 1\.2\.3: was the series changed on disk"):
        write_dicom_seg(tmp_path / "x.dcm", np.zeros(sample_ct.shape, bool), moved, **SEG_OPTIONS)
    with pytest.raises(ExportError, match=r"nowhere[/\\]x\.dcm: cannot write here"):
        write_dicom_seg(tmp_path / "nowhere" / "x.dcm", np.zeros(sample_ct.shape, bool), sample_ct, **SEG_OPTIONS)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


# --------------------------------------------------------------------------- NIfTI


@pytest.mark.parametrize("name", ["mask.nii.gz", "mask.nii"])
def test_nifti_round_trip_keeps_the_volume_geometry(tmp_path: Path, sample_ct: Volume, name: str) -> None:
    mask = _asymmetric_mask(sample_ct.shape)
    path = write_nifti_mask(tmp_path / name, mask, sample_ct, label_names={1: "Liver"})
    assert path == tmp_path / name
    plain = tmp_path / "plain"
    plain.touch()  # the export is created like any new file (not owner-only, as a temporary file would be)
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    raw = path.read_bytes()
    if name.endswith(".gz"):
        assert raw[:2] == b"\x1f\x8b"  # gzip
        raw = gzip.decompress(raw)
        assert path.stat().st_size < mask.size // 100
    assert raw[344:348] == b"n+1\x00"  # NIfTI-1, header and data in one file
    image = sitk.ReadImage(str(path))
    assert image.GetPixelID() == sitk.sitkUInt8
    assert image.GetSize() == (512, 512, 20)
    assert image.GetSpacing() == pytest.approx(tuple(reversed(sample_ct.spacing)))
    assert image.GetOrigin() == pytest.approx(sample_ct.origin)
    assert image.GetDirection() == pytest.approx(sample_ct.direction)
    assert image.GetMetaData("descrip") == "1=Liver"
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), mask.astype(np.uint8))
    np.testing.assert_array_equal(read_label_map(path, sample_ct).labels, mask)


def test_nifti_of_the_sample_liver_equals_the_shipped_mask(tmp_path: Path, sample_ct: Volume) -> None:
    """The shipped liver mask is stored rows-flipped (RAS-style); ours is LPS: different files, the same voxels."""
    liver = read_label_map(SAMPLE_MASK, sample_ct).labels
    path = write_nifti_mask(tmp_path / "liver.nii.gz", liver, sample_ct)
    np.testing.assert_array_equal(read_label_map(path, sample_ct).labels, liver)
    # physical agreement with the shipped file, not just with our own reader
    shipped, ours = sitk.ReadImage(str(SAMPLE_MASK)), sitk.ReadImage(str(path))
    resampled = sitk.Resample(shipped, ours, sitk.Transform(), sitk.sitkNearestNeighbor)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(resampled), sitk.GetArrayFromImage(ours))


def test_nifti_of_a_nifti_volume_round_trips(tmp_path: Path, shared_data: Path) -> None:
    """example_ct_sm is stored RAS on disk and shown LPS: the export follows the shown volume's geometry."""
    totalseg = shared_data / "liver_ct" / "totalsegmentator"
    volume = read_volume(totalseg / "example_ct_sm.nii.gz")
    liver = read_label_map(totalseg / "example_seg.nii.gz", volume).labels == 5
    path = write_nifti_mask(tmp_path / "liver.nii.gz", liver, volume)
    assert liver.sum() > 0
    np.testing.assert_array_equal(read_label_map(path, volume).labels, liver)


def test_nifti_input_checks(tmp_path: Path, sample_ct: Volume) -> None:
    with pytest.raises(ExportError, match=r"mask\.nrrd: expected a \.nii or \.nii\.gz file name"):
        write_nifti_mask(tmp_path / "mask.nrrd", np.zeros(sample_ct.shape, bool), sample_ct)
    with pytest.raises(ValueError, match="expected the volume's shape"):
        write_nifti_mask(tmp_path / "mask.nii", np.zeros((1, 2, 3), bool), sample_ct)
    with pytest.raises(ValueError, match=r"labels 0\.\.255"):
        write_nifti_mask(tmp_path / "mask.nii", np.full(sample_ct.shape, 300, np.int32), sample_ct)
    assert list(tmp_path.iterdir()) == []
