"""NIfTI/NRRD/MetaImage volumes and masks (incl. DICOM SEG) on the real sample data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from medview.errors import InputError
from medview.io import volume_files
from medview.io.dicom import load_dicom
from medview.io.volume import Volume
from medview.io.volume_files import LabelMap, read_label_map, read_volume

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE = REPO_ROOT / "resources" / "samples" / "totalsegmentator_ct"
LIVER_VOXELS_SAMPLE = 366_708  # non-zero voxels of liver_mask.nii.gz
LIVER_VOXELS_DCMQI = 107_098  # liver voxels of liver_ct/dcmqi (README)
SPINE_VOXELS_DCMQI = 12_439


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sample_ct(sample_series_dir: Path) -> Volume:
    return load_dicom([sample_series_dir])


@pytest.fixture(scope="module")
def dcmqi_dir(shared_data: Path) -> Path:
    return shared_data / "liver_ct" / "dcmqi"


@pytest.fixture(scope="module")
def dcmqi_ct(shared_data: Path) -> Volume:
    return load_dicom([shared_data / "dicom_ct" / "dcmqi_ct-3slice"])


@pytest.fixture(scope="module")
def totalseg_dir(shared_data: Path) -> Path:
    return shared_data / "liver_ct" / "totalsegmentator"


def _flip_y(volume: Volume) -> Volume:
    """The same image stored with its rows running anterior (not LPS): a non-canonical reference."""
    return _restored(volume, "flip-y")[0]


def _restored(volume: Volume, how: str) -> tuple[Volume, Callable[[np.ndarray], np.ndarray]]:
    """``volume`` stored another way (same patient space), and how to map an array on ``volume`` onto it.

    ``flip-y``: rows run anterior; ``flip-x``: columns run right; ``transpose``: rows and columns swapped.
    """
    matrix = volume.direction_matrix.copy()
    if how == "flip-y":
        origin = volume.index_to_lps(0, volume.shape[1] - 1, 0)
        matrix[:, 1] *= -1

        def convert(array: np.ndarray) -> np.ndarray:
            return array[:, ::-1, :]

        spacing = volume.spacing
    elif how == "flip-x":
        origin = volume.index_to_lps(0, 0, volume.shape[2] - 1)
        matrix[:, 0] *= -1

        def convert(array: np.ndarray) -> np.ndarray:
            return array[:, :, ::-1]

        spacing = volume.spacing
    else:
        origin = np.asarray(volume.origin)
        matrix = matrix[:, [1, 0, 2]]

        def convert(array: np.ndarray) -> np.ndarray:
            return array.transpose(0, 2, 1)

        spacing = (volume.spacing[0], volume.spacing[2], volume.spacing[1])
    stored = replace(
        volume,
        voxels=np.ascontiguousarray(convert(volume.voxels)),
        spacing=spacing,
        origin=tuple(float(v) for v in origin),
        direction=tuple(float(v) for v in matrix.ravel()),
    )
    return stored, convert


# --------------------------------------------------------------------------- NIfTI mask on DICOM


def test_bundled_liver_mask_lands_on_the_liver(sample_ct: Volume) -> None:
    """liver_mask.nii.gz is stored RAS-style (y flipped); on the LPS DICOM volume it must hit the liver."""
    mask_file = SAMPLE / "liver_mask.nii.gz"
    stored = sitk.ReadImage(str(mask_file))
    assert stored.GetDirection()[4] == pytest.approx(-1.0)  # the flip this test is about
    label_map = read_label_map(mask_file, sample_ct)

    assert isinstance(label_map, LabelMap)
    assert label_map.labels.shape == sample_ct.shape == (20, 512, 512)
    assert label_map.labels.dtype == np.uint8
    assert int(np.count_nonzero(label_map.labels)) == LIVER_VOXELS_SAMPLE
    assert label_map.names == {1: "label 1"}
    assert label_map.source == str(mask_file)

    inside = label_map.labels == 1
    mean_hu = float(sample_ct.voxels[inside].mean())
    assert 0.0 < mean_hu < 200.0, mean_hu  # soft tissue, not air/fat/bone
    assert float(sample_ct.voxels[~inside].mean()) < mean_hu - 100  # the rest is mostly air and fat
    _z, y, x = np.argwhere(inside).mean(axis=0)
    assert x < 256, "liver centroid must be on the image's left half (patient right in LPS)"
    assert y < 400  # not in the posterior band behind the body

    # Same grid, rows stored anterior-first: the placement is exactly the file's row flip ...
    stored_array = sitk.GetArrayFromImage(stored)
    np.testing.assert_array_equal(label_map.labels, stored_array[:, ::-1, :])
    # ... and the mask taken in file order (ignoring its geometry) would miss the liver.
    assert float(sample_ct.voxels[stored_array == 1].mean()) < mean_hu - 50


def test_nifti_mask_follows_a_non_lps_reference(sample_ct: Volume) -> None:
    """Resampling uses the full geometry of the reference, not its array order."""
    flipped = _flip_y(sample_ct)
    direct = read_label_map(SAMPLE / "liver_mask.nii.gz", sample_ct)
    on_flipped = read_label_map(SAMPLE / "liver_mask.nii.gz", flipped)
    np.testing.assert_array_equal(on_flipped.labels, direct.labels[:, ::-1, :])


# --------------------------------------------------------------------------- DICOM SEG


def test_dicom_seg_equals_nrrd_mask(dcmqi_ct: Volume, dcmqi_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """liver.dcm (SEG, placed by source SOP Instance UID) equals liver_seg.nrrd (placed by geometry)."""

    def no_geometry(*args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("the SEG references these slices: it must be placed by UID")

    monkeypatch.setattr(volume_files, "_seg_by_geometry", no_geometry)
    seg = read_label_map(dcmqi_dir / "liver.dcm", dcmqi_ct)
    monkeypatch.undo()
    nrrd = read_label_map(dcmqi_dir / "liver_seg.nrrd", dcmqi_ct)

    assert seg.names == {1: "Liver"}
    assert seg.labels.shape == nrrd.labels.shape == dcmqi_ct.shape == (3, 512, 512)
    assert int(np.count_nonzero(seg.labels)) == LIVER_VOXELS_DCMQI
    assert set(np.unique(seg.labels)) == {0, 1}
    np.testing.assert_array_equal(seg.labels, nrrd.labels)
    assert 0 < float(dcmqi_ct.voxels[seg.labels == 1].mean()) < 200


def test_dicom_seg_by_geometry_equals_by_uid(dcmqi_ct: Volume, dcmqi_dir: Path) -> None:
    """Without slice UIDs (e.g. a NIfTI reference) the frames are placed through their positions."""
    by_uid = read_label_map(dcmqi_dir / "liver.dcm", dcmqi_ct)
    by_geometry = read_label_map(dcmqi_dir / "liver.dcm", replace(dcmqi_ct, slice_uids=()))
    np.testing.assert_array_equal(by_geometry.labels, by_uid.labels)


@pytest.mark.parametrize("how", ["flip-y", "flip-x", "transpose"])
@pytest.mark.parametrize("drop_uids", [False, True], ids=["by-uid", "by-geometry"])
def test_dicom_seg_on_a_reference_stored_otherwise(
    dcmqi_ct: Volume, dcmqi_dir: Path, drop_uids: bool, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both placement paths undo a reference whose in-plane axes are flipped or swapped."""
    expected_on_lps = read_label_map(dcmqi_dir / "liver.dcm", dcmqi_ct).labels
    reference, convert = _restored(dcmqi_ct, how)
    if drop_uids:
        reference = replace(reference, slice_uids=())
    else:
        monkeypatch.setattr(volume_files, "_seg_by_geometry", None)  # the UID path must handle it
    np.testing.assert_array_equal(read_label_map(dcmqi_dir / "liver.dcm", reference).labels, convert(expected_on_lps))


@pytest.fixture(scope="module")
def dcmqi_sources(shared_data: Path) -> list:
    """The dcmqi CT slices as pydicom datasets, ready to derive SEGs from with highdicom."""
    sources = []
    for path in sorted((shared_data / "dicom_ct" / "dcmqi_ct-3slice").iterdir()):
        dataset = pydicom.dcmread(path)
        dataset.SpecificCharacterSet = dataset.get("SpecificCharacterSet") or "ISO_IR 100"
        dataset.PatientName = f"{dataset.PatientName}^"  # highdicom wants a structured name
        sources.append(dataset)
    return sorted(sources, key=lambda d: float(d.ImagePositionPatient[2]))  # = the volume's z order


def _write_seg(path: Path, sources: list, planes: np.ndarray, kind: str, labels: list[str]) -> Path:
    from pydicom.sr.codedict import codes

    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label,
            segmented_property_category=codes.SCT.Organ,
            segmented_property_type=codes.SCT.Liver,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for number, label in enumerate(labels, start=1)
    ]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=planes,
        segmentation_type=kind,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=99,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="MedView tests",
        manufacturer_model_name="tests",
        software_versions="1",
        device_serial_number="1",
    )
    seg.save_as(path)
    return path


@pytest.mark.parametrize("kind", ["BINARY", "FRACTIONAL", "LABELMAP"])
@pytest.mark.parametrize("drop_uids", [False, True], ids=["by-uid", "by-geometry"])
def test_overlapping_segments_higher_number_wins(
    tmp_path: Path,
    dcmqi_ct: Volume,
    dcmqi_dir: Path,
    dcmqi_sources: list,
    kind: str,
    drop_uids: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Segment 2 (a box) overlaps segment 1 (the real liver): the box wins where they meet."""
    liver = read_label_map(dcmqi_dir / "liver_seg.nrrd", dcmqi_ct).labels == 1
    box = np.zeros_like(liver)
    box[:, 150:300, 100:250] = True
    assert (box & liver).any()
    assert (liver & ~box).any()
    expected = np.where(box, 2, np.where(liver, 1, 0))
    if kind == "FRACTIONAL":
        faint = np.zeros_like(liver)
        faint[:, 400:420, 50:70] = True  # 0.4: below the 0.5 threshold, must not count
        planes = np.stack([liver * 0.8 + faint * 0.4, box * 1.0], axis=-1).astype(np.float32)
    elif kind == "LABELMAP":
        planes = expected.astype(np.uint8)  # one plane per slice holding segment numbers
    else:
        planes = np.stack([liver, box], axis=-1).astype(np.uint8)
    path = _write_seg(tmp_path / f"{kind}.dcm", dcmqi_sources, planes, kind, ["Liver", "Box"])
    reference = replace(dcmqi_ct, slice_uids=()) if drop_uids else dcmqi_ct
    if not drop_uids:
        monkeypatch.setattr(volume_files, "_seg_by_geometry", None)  # must not be needed
    label_map = read_label_map(path, reference)
    assert label_map.names == {1: "Liver", 2: "Box"}
    np.testing.assert_array_equal(label_map.labels, expected)


@pytest.mark.parametrize("drop_uids", [False, True], ids=["by-uid", "by-geometry"])
def test_single_frame_seg(
    tmp_path: Path, dcmqi_ct: Volume, dcmqi_dir: Path, dcmqi_sources: list, drop_uids: bool
) -> None:
    """A SEG drawn on the middle slice only lands on that slice."""
    liver = read_label_map(dcmqi_dir / "liver_seg.nrrd", dcmqi_ct).labels == 1
    path = _write_seg(tmp_path / "one.dcm", dcmqi_sources[1:2], liver[1:2].astype(np.uint8), "BINARY", ["Liver"])
    reference = replace(dcmqi_ct, slice_uids=()) if drop_uids else dcmqi_ct
    labels = read_label_map(path, reference).labels
    assert not labels[0].any()
    assert not labels[2].any()
    np.testing.assert_array_equal(labels[1], liver[1])


def test_seg_without_plane_orientation_uses_the_source_images(
    tmp_path: Path, dcmqi_ct: Volume, dcmqi_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SEG lacking PlaneOrientationSequence: its in-plane axes come from the referenced CT file."""
    from medview.io import dicom

    dataset = pydicom.dcmread(dcmqi_dir / "liver.dcm")
    del dataset.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence
    path = tmp_path / "no_orientation.dcm"
    dataset.save_as(path)
    expected = read_label_map(dcmqi_dir / "liver.dcm", dcmqi_ct).labels

    read: list[str] = []
    original = dicom.read_header
    monkeypatch.setattr(dicom, "read_header", lambda source: read.append(source.label) or original(source))
    monkeypatch.setattr(volume_files, "_seg_by_geometry", None)
    np.testing.assert_array_equal(read_label_map(path, dcmqi_ct).labels, expected)
    assert read == [dcmqi_ct.slice_files[0]]
    monkeypatch.undo()
    # without slice UIDs to go by, frames without an orientation cannot be placed
    with pytest.raises(InputError, match=r"no_orientation\.dcm: the segmentation's frames .* cannot be placed"):
        read_label_map(path, replace(dcmqi_ct, slice_uids=()))


def test_multi_label_nrrd(dcmqi_ct: Volume, dcmqi_dir: Path) -> None:
    label_map = read_label_map(dcmqi_dir / "liver_spine_seg.nrrd", dcmqi_ct)
    assert label_map.names == {1: "label 1", 2: "label 2"}
    assert int(np.count_nonzero(label_map.labels == 1)) == LIVER_VOXELS_DCMQI
    assert int(np.count_nonzero(label_map.labels == 2)) == SPINE_VOXELS_DCMQI
    spine_hu = float(dcmqi_ct.voxels[label_map.labels == 2].mean())
    liver_hu = float(dcmqi_ct.voxels[label_map.labels == 1].mean())
    assert spine_hu > liver_hu + 50  # bone is denser than liver


def test_dicom_seg_of_another_series_is_refused(shared_data: Path, dcmqi_dir: Path) -> None:
    other = load_dicom([shared_data / "dicom_ct" / "pydicom-data" / "693_UNCR.dcm"])
    with pytest.raises(InputError, match=r"liver\.dcm: the segmentation was drawn on series .*not on the open series"):
        read_label_map(dcmqi_dir / "liver.dcm", other)


def test_ct_image_is_not_a_segmentation(shared_data: Path, dcmqi_ct: Volume) -> None:
    path = shared_data / "dicom_ct" / "dcmqi_ct-3slice" / "01.dcm"
    with pytest.raises(InputError, match=r"01\.dcm: not a DICOM Segmentation but a CT Image Storage"):
        read_label_map(path, dcmqi_ct)


# --------------------------------------------------------------------------- NIfTI volumes


def test_read_volume_nifti_is_reoriented_to_lps(totalseg_dir: Path) -> None:
    path = totalseg_dir / "example_ct_sm.nii.gz"
    volume = read_volume(path)
    stored = sitk.ReadImage(str(path))
    # stored with x and y running towards R and A (RAS on disk as LPS -1, -1, +1)
    assert stored.GetDirection() == pytest.approx((-1, 0, 0, 0, -1, 0, 0, 0, 1))

    assert volume.shape == (30, 101, 122)
    assert volume.voxels.dtype == np.int16
    assert volume.spacing == pytest.approx((3.0, 3.0, 3.0))
    np.testing.assert_allclose(volume.direction_matrix, np.eye(3), atol=1e-6)
    # origin moved to the L-P-I corner: x and y flipped
    assert volume.origin == pytest.approx((177.95632934570312 - 121 * 3, -11.319000244140625 - 100 * 3, 94.3017578125))
    np.testing.assert_array_equal(volume.voxels, sitk.GetArrayFromImage(stored)[:, ::-1, ::-1])
    # the same LPS point reads the same value through both geometries
    index = (12, 40, 70)
    lps = volume.index_to_lps(*index)
    stored_index = stored.TransformPhysicalPointToIndex(tuple(lps))
    assert volume.voxels[index] == sitk.GetArrayViewFromImage(stored)[stored_index[::-1]]
    assert volume.description == "example_ct_sm.nii.gz"


def test_multilabel_liver_lands_on_nifti_ct(totalseg_dir: Path) -> None:
    volume = read_volume(totalseg_dir / "example_ct_sm.nii.gz")
    label_map = read_label_map(totalseg_dir / "example_seg.nii.gz", volume)
    stored = sitk.GetArrayFromImage(sitk.ReadImage(str(totalseg_dir / "example_seg.nii.gz")))
    liver = label_map.labels == 5
    assert int(np.count_nonzero(liver)) == int(np.count_nonzero(stored == 5)) == 38_634
    assert set(np.unique(label_map.labels)) == set(np.unique(stored))
    assert 0 < float(volume.voxels[liver].mean()) < 200
    assert np.argwhere(liver).mean(axis=0)[2] < volume.shape[2] / 2  # patient right = low column
    # agrees with the binary liver of the "fast" model (not voxel-identical: another model)
    fast = read_label_map(totalseg_dir / "example_seg_fast" / "liver.nii.gz", volume).labels == 1
    dice = 2 * np.count_nonzero(fast & liver) / (np.count_nonzero(fast) + np.count_nonzero(liver))
    assert dice > 0.85, dice


def test_read_volume_of_a_mask_and_4d_singleton(tmp_path: Path, totalseg_dir: Path) -> None:
    """A 4-D file with one time point is a 3-D volume; MetaImage goes through the same path."""
    stored = sitk.ReadImage(str(totalseg_dir / "example_ct_sm.nii.gz"))
    four_d = sitk.JoinSeries([stored])
    assert four_d.GetDimension() == 4
    sitk.WriteImage(four_d, str(tmp_path / "ct4d.nii.gz"))
    sitk.WriteImage(stored, str(tmp_path / "ct.mha"))
    reference = read_volume(totalseg_dir / "example_ct_sm.nii.gz")
    for name in ("ct4d.nii.gz", "ct.mha"):
        volume = read_volume(tmp_path / name)
        np.testing.assert_array_equal(volume.voxels, reference.voxels)
        assert volume.origin == pytest.approx(reference.origin)


# --------------------------------------------------------------------------- failures


def test_text_file_is_refused(tmp_path: Path, sample_ct: Volume) -> None:
    fake = tmp_path / "notes.nii.gz"
    fake.write_text("this is not an image\n")
    with pytest.raises(InputError, match=r"notes\.nii\.gz: unreadable image file"):
        read_volume(fake)
    with pytest.raises(InputError, match=r"notes\.nii\.gz: unreadable image file"):
        read_label_map(fake, sample_ct)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(InputError, match=r"notes\.txt: unsupported file type"):
        read_volume(text)
    with pytest.raises(InputError, match=r"notes\.txt: not a readable DICOM file or mask"):
        read_label_map(text, sample_ct)
    with pytest.raises(InputError, match=r"absent\.nrrd: file not found"):
        read_volume(tmp_path / "absent.nrrd")


def test_damaged_seg_is_refused(tmp_path: Path, dcmqi_ct: Volume, dcmqi_dir: Path) -> None:
    data = (dcmqi_dir / "liver.dcm").read_bytes()
    truncated = tmp_path / "half_seg.dcm"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"half_seg\.dcm: unreadable DICOM SEG"):
        read_label_map(truncated, dcmqi_ct)


def test_2d_and_vector_images_are_refused(tmp_path: Path, dcmqi_ct: Volume, dcmqi_dir: Path) -> None:
    mask = sitk.ReadImage(str(dcmqi_dir / "liver_seg.nrrd"))
    plane = mask[:, :, 1]  # one real slice, a 2-D image
    sitk.WriteImage(plane, str(tmp_path / "slice.nrrd"))
    with pytest.raises(InputError, match=r"slice\.nrrd: expected a 3-D scalar volume, got a 2-D image of size 512x512"):
        read_volume(tmp_path / "slice.nrrd")
    with pytest.raises(InputError, match=r"slice\.nrrd: expected a 3-D scalar volume"):
        read_label_map(tmp_path / "slice.nrrd", dcmqi_ct)
    vector = sitk.Compose([mask, mask, mask])
    sitk.WriteImage(vector, str(tmp_path / "rgb.nrrd"))
    with pytest.raises(InputError, match=r"rgb\.nrrd: expected a 3-D scalar volume.*3 components per voxel"):
        read_volume(tmp_path / "rgb.nrrd")


def test_mask_that_does_not_overlap(sample_ct: Volume, dcmqi_dir: Path) -> None:
    """The dcmqi mask lies ~650 mm above the bundled series."""
    with pytest.raises(InputError, match=r"liver_seg\.nrrd: the mask does not overlap the volume at all"):
        read_label_map(dcmqi_dir / "liver_seg.nrrd", sample_ct)
    # the bundled series has no SeriesInstanceUID, so the SEG is tried by geometry
    assert sample_ct.series_uid.startswith("no-series-uid:")
    for reference in (sample_ct, replace(sample_ct, slice_uids=())):
        with pytest.raises(InputError, match=r"liver\.dcm: the segmentation does not overlap the volume at all"):
            read_label_map(dcmqi_dir / "liver.dcm", reference)


def test_mask_that_overlaps_but_covers_nothing(tmp_path: Path, dcmqi_ct: Volume, dcmqi_dir: Path) -> None:
    """A mask whose box overlaps the volume but whose labels all lie one slice below it."""
    mask = sitk.ReadImage(str(dcmqi_dir / "liver_seg.nrrd"))
    array = sitk.GetArrayFromImage(mask)
    shifted = np.zeros((4, *array.shape[1:]), dtype=np.uint8)
    shifted[0] = array[0]  # the liver of the lowest slice, one slice further down
    image = sitk.GetImageFromArray(shifted)
    image.SetSpacing(mask.GetSpacing())
    image.SetDirection(mask.GetDirection())
    image.SetOrigin(mask.TransformIndexToPhysicalPoint((0, 0, -1)))
    sitk.WriteImage(image, str(tmp_path / "below.nii.gz"))
    with pytest.raises(InputError, match=r"below\.nii\.gz: the mask overlaps the volume but .* covers nothing"):
        read_label_map(tmp_path / "below.nii.gz", dcmqi_ct)
    # one slice up from there, it covers the lowest slice exactly
    image.SetOrigin(mask.GetOrigin())
    sitk.WriteImage(image, str(tmp_path / "aligned.nii.gz"))
    aligned = read_label_map(tmp_path / "aligned.nii.gz", dcmqi_ct)
    assert int(np.count_nonzero(aligned.labels)) == int(np.count_nonzero(array[0]))


def test_empty_and_probability_masks_are_refused(tmp_path: Path, dcmqi_ct: Volume, dcmqi_dir: Path) -> None:
    mask = sitk.ReadImage(str(dcmqi_dir / "liver_seg.nrrd"))
    empty = sitk.GetImageFromArray(np.zeros(sitk.GetArrayViewFromImage(mask).shape, dtype=np.uint8))
    empty.CopyInformation(mask)
    sitk.WriteImage(empty, str(tmp_path / "empty.nrrd"))
    with pytest.raises(InputError, match=r"empty\.nrrd: the mask is empty"):
        read_label_map(tmp_path / "empty.nrrd", dcmqi_ct)
    probability = sitk.Cast(mask, sitk.sitkFloat32) * 0.7
    sitk.WriteImage(probability, str(tmp_path / "prob.nii.gz"))
    with pytest.raises(InputError, match=r"prob\.nii\.gz: not a label image: it holds non-integer values"):
        read_label_map(tmp_path / "prob.nii.gz", dcmqi_ct)
    # a float file holding whole numbers is a valid label image
    sitk.WriteImage(sitk.Cast(mask, sitk.sitkFloat32), str(tmp_path / "float.nii.gz"))
    assert int(np.count_nonzero(read_label_map(tmp_path / "float.nii.gz", dcmqi_ct).labels)) == LIVER_VOXELS_DCMQI


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_a_nifti_header_announcing_more_than_the_file_or_memory_holds_is_refused_at_once(
    tmp_path: Path, suffix: str
) -> None:
    """Found by fuzzing: ITK read such a header for minutes before failing (bench.fuzz_loaders: 'hung')."""
    import gzip
    import struct

    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 8, 8), np.int16)), str(tmp_path / "plain.nii"))
    header = bytearray((tmp_path / "plain.nii").read_bytes())

    def write(name: str, dims: tuple[int, int, int]) -> Path:
        changed = bytearray(header)
        struct.pack_into("<3h", changed, 42, *dims)  # dim[1..3]
        path = tmp_path / f"{name}{suffix}"
        path.write_bytes(gzip.compress(bytes(changed)) if suffix.endswith(".gz") else bytes(changed))
        return path

    with pytest.raises(InputError, match=r"huge\.nii(\.gz)?: the NIfTI header announces 32767x32767x32767 voxels"):
        read_volume(write("huge", (32767, 32767, 32767)))
    if suffix == ".nii":  # the size of a compressed file says nothing about what it holds
        with pytest.raises(InputError, match=r"long\.nii: truncated: the header announces 8x8x32767 voxels"):
            read_volume(write("long", (8, 8, 32767)))
    assert read_volume(write("same", (8, 8, 4))).voxels.shape == (4, 8, 8)


def test_a_volume_or_mask_that_does_not_fit_in_memory_is_refused_naming_the_file(
    tmp_path: Path, sample_ct: Volume, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by fuzzing: numpy's MemoryError on a large mask reached the user as an unexpected error."""
    path = tmp_path / "mask.nii.gz"
    mask = np.zeros((4, 8, 8), np.uint8)
    mask[1:3, 2:6, 2:6] = 1
    sitk.WriteImage(sitk.GetImageFromArray(mask), str(path))
    assert read_volume(path).voxels.shape == (4, 8, 8)

    def out_of_memory(_image: sitk.Image) -> np.ndarray:
        raise MemoryError("Unable to allocate 193. MiB for an array")

    monkeypatch.setattr(sitk, "GetArrayFromImage", out_of_memory)
    for read in (read_volume, lambda file: read_label_map(file, sample_ct)):
        with pytest.raises(InputError, match=r"mask\.nii\.gz: not enough memory to read its 8x8x4 voxels"):
            read(path)
