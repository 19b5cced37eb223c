"""Paper-002 chest CT preparation: lung mask, slice elimination, 50-slice groups, patient vote."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from medview.preprocess import chest
from medview.preprocess.chest import (
    classical_lung_mask,
    group_slices,
    patient_vote,
    prepare_slices,
    select_slices,
    superior_at_high_z,
)

CLASSES = ("covid_pneumonia", "non_covid_pneumonia", "healthy")


def _ramp(count: int, size: int = 4) -> np.ndarray:
    """Slices whose every pixel holds the slice's index, so interpolation is easy to check."""
    return np.broadcast_to(np.arange(count, dtype=np.float32)[:, None, None], (count, size, size)).copy()


# --------------------------------------------------------------------------- grouping


def test_exact_multiple_gives_full_groups() -> None:
    groups = group_slices(_ramp(100))
    assert [g.kind for g in groups] == ["full", "full"]
    assert groups[1].sources == tuple(range(50, 100))
    np.testing.assert_array_equal(groups[1].images[:, 0, 0], np.arange(50, 100))


def test_remainder_below_25_merges_with_the_previous_group_and_resamples_it() -> None:
    groups = group_slices(_ramp(120))  # 2 full groups + 20: the last 70 slices become one group of 50
    assert [g.kind for g in groups] == ["full", "resampled"]
    assert groups[0].sources == tuple(range(50))
    last = groups[1]
    assert last.images.shape == (50, 4, 4)
    assert last.sources[0] == 50
    assert last.sources[-1] == 119
    assert isinstance(last.sources[0], int)
    assert isinstance(last.sources[1], float)
    positions = np.linspace(50, 119, 50)
    np.testing.assert_allclose(last.sources, positions)
    # linear interpolation along z of slices holding their own index gives back the positions
    np.testing.assert_allclose(last.images[:, 2, 2], positions, rtol=1e-6)
    assert last.describe() == "slices 50-119 resampled to 50"


def test_remainder_above_25_is_padded_with_black_slices() -> None:
    groups = group_slices(_ramp(140) + 1)  # +1: no real slice is black
    assert [g.kind for g in groups] == ["full", "full", "padded"]
    last = groups[2]
    assert last.sources == (*range(100, 140), *([None] * 10))
    np.testing.assert_array_equal(last.images[:40, 0, 0], np.arange(101, 141))
    assert not last.images[40:].any()
    assert last.describe() == "slices 100-139 + 10 black"


def test_remainder_of_exactly_25_is_padded() -> None:
    groups = group_slices(_ramp(125))
    assert [g.kind for g in groups] == ["full", "full", "padded"]
    assert groups[2].sources[24] == 124
    assert groups[2].sources[25:] == (None,) * 25


@pytest.mark.parametrize("count", [10, 24, 25, 26, 49])
def test_fewer_than_50_slices_make_one_padded_group(count: int) -> None:
    (group,) = group_slices(_ramp(count) + 1)
    assert group.kind == "padded"
    assert group.images.shape == (50, 4, 4)
    assert group.sources == (*range(count), *([None] * (50 - count)))
    assert not group.images[count:].any()
    assert group.images[:count].all()


def test_group_sources_map_to_the_volume_slices() -> None:
    kept = list(range(43, 120))  # 77 kept slices of a volume: 50 + 27 -> padded
    groups = group_slices(_ramp(77), kept)
    assert groups[0].sources[0] == 43
    assert groups[1].sources[26] == 119
    assert groups[1].sources[27] is None
    # a resampled slot between non-contiguous kept slices lies between their indices
    kept = [*range(0, 60), *range(70, 80)]  # 70 slices, a gap after 59
    groups = group_slices(_ramp(70), kept)
    assert groups[-1].kind == "resampled"
    assert groups[-1].sources == tuple(sorted(groups[-1].sources))
    assert groups[-1].sources[-1] == 79
    assert any(59 < s < 70 for s in groups[-1].sources)


def test_single_full_group_and_integer_input() -> None:
    (group,) = group_slices(np.ones((50, 2, 2), dtype=np.int16))
    assert group.kind == "full"
    assert group.images.dtype == np.float32


def test_grouping_bad_input() -> None:
    with pytest.raises(ValueError, match="expected at least one slice"):
        group_slices(np.zeros((0, 4, 4)))
    with pytest.raises(ValueError, match="source_indices: expected 5 indices, got 4"):
        group_slices(_ramp(5), [0, 1, 2, 3])
    with pytest.raises(ValueError, match="group_size: expected an integer >= 2"):
        group_slices(_ramp(5), group_size=1)


# --------------------------------------------------------------------------- slice elimination


def _profile() -> np.ndarray:
    """Lung area per slice, largest at index 5, ratio 0.5 and 0.95 on both sides, no lung at the ends."""
    ratios = [0.0, 0.3, 0.5, 0.899, 0.95, 1.0, 0.95, 0.9, 0.5, 0.4, 0.39, 0.0]
    return np.asarray(ratios) * 1000.0


def test_elimination_uses_0_4_towards_the_head_and_0_9_towards_the_feet() -> None:
    selection = select_slices(_profile(), superior_at_high_z=True)  # index 11 is the top
    assert selection.largest == 5
    # below the largest slice (feet): kept only from 0.9; above it (head): kept from 0.4 (equality keeps)
    assert selection.kept == (4, 5, 6, 7, 8, 9)
    assert selection.reasons[0] == "no lung"
    assert selection.reasons[11] == "no lung"
    assert selection.reasons[2] == "lung area 0.50 of max < 0.9 (lower end)"
    assert selection.reasons[3] == "lung area 0.89 of max < 0.9 (lower end)"
    assert selection.reasons[8] == "kept: lung area 0.50 of max >= 0.4 (upper end)"
    assert selection.reasons[10] == "lung area 0.39 of max < 0.4 (upper end)"
    assert selection.reasons[5] == "kept: largest lung area"
    np.testing.assert_allclose(selection.area_ratio, _profile() / 1000.0)


def test_elimination_follows_the_slice_direction() -> None:
    selection = select_slices(_profile(), superior_at_high_z=False)  # index 0 is the top now
    assert selection.kept == (2, 3, 4, 5, 6, 7)
    assert selection.reasons[2] == "kept: lung area 0.50 of max >= 0.4 (upper end)"
    assert selection.reasons[8] == "lung area 0.50 of max < 0.9 (lower end)"


def test_elimination_from_a_mask_and_without_lung() -> None:
    mask = np.zeros((4, 10, 10), dtype=bool)
    mask[1, :5, :5] = True  # 25
    mask[2, :10, :5] = True  # 50: the largest
    mask[3, :3, :5] = True  # 15 = 0.3: below 0.4 at the upper end
    selection = select_slices(mask)
    assert selection.kept == (2,)
    assert selection.reasons == (
        "no lung",
        "lung area 0.50 of max < 0.9 (lower end)",
        "kept: largest lung area",
        "lung area 0.30 of max < 0.4 (upper end)",
    )
    empty = select_slices(np.zeros((3, 4, 4), dtype=bool))
    assert empty.kept == ()
    assert empty.largest is None
    assert empty.reasons == ("no lung",) * 3
    with pytest.raises(ValueError, match="expected a ratio in"):
        select_slices(mask, upper_threshold=1.5)
    with pytest.raises(ValueError, match=r"expected a \(z, y, x\) mask or \(z,\) areas"):
        select_slices(np.zeros((2, 2)))


def test_superior_direction_from_the_volume_geometry() -> None:
    assert superior_at_high_z((1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert not superior_at_high_z((1, 0, 0, 0, 1, 0, 0, 0, -1))
    with pytest.raises(ValueError, match="expected axial slices"):
        superior_at_high_z((1, 0, 0, 0, 0, 1, 0, -1, 0))  # z runs anterior-posterior: coronal slices


# --------------------------------------------------------------------------- slice preparation


def test_prepare_slices_scales_windows_and_masks() -> None:
    volume = np.full((3, 128, 128), -1000, dtype=np.int16)
    volume[:, :, 64:] = 400
    volume[1] = -300  # (-300 + 1000) / 1400 = 0.5
    mask = np.zeros(volume.shape, dtype=bool)
    mask[:, 32:96, 32:96] = True
    prepared = prepare_slices(volume, mask, [0, 1])
    assert prepared.shape == (2, 256, 256)
    assert prepared.dtype == np.float32
    assert prepared.min() == 0.0
    assert prepared.max() == pytest.approx(1.0)
    assert not prepared[:, :60].any()
    assert not prepared[:, :, 196:].any()
    assert prepared[0, 128, 160] == pytest.approx(1.0)  # 400 HU, inside the mask
    assert prepared[1, 128, 128] == pytest.approx(0.5)
    assert prepare_slices(volume, mask, []).shape == (0, 256, 256)


# --------------------------------------------------------------------------- patient vote


def test_majority_vote() -> None:
    vote = patient_vote([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]], CLASSES)
    assert vote.label == "covid_pneumonia"
    assert not vote.switched
    assert dict(vote.votes) == {"covid_pneumonia": 2, "non_covid_pneumonia": 0, "healthy": 1}
    assert vote.group_labels == ("covid_pneumonia", "covid_pneumonia", "healthy")
    assert vote.reason == "majority vote: covid_pneumonia in 2 of 3 groups"


def test_healthy_vote_switches_to_a_confident_pneumonia_group() -> None:
    probabilities = [[0.1, 0.1, 0.8], [0.02, 0.95, 0.03], [0.05, 0.05, 0.9], [0.92, 0.03, 0.05]]
    vote = patient_vote(probabilities, CLASSES)
    assert vote.majority == "healthy"
    assert vote.switched
    assert vote.label == "non_covid_pneumonia"  # 0.95 beats the covid group's 0.92
    assert "group 2 predicts non_covid_pneumonia with probability 0.950 > 0.9" in vote.reason


@pytest.mark.parametrize("probability", [0.89, 0.9])
def test_no_switch_at_or_below_the_threshold(probability: float) -> None:
    rest = (1 - probability) / 2
    vote = patient_vote([[0.1, 0.1, 0.8], [0.1, 0.1, 0.8], [probability, rest, rest]], CLASSES)
    assert vote.label == "healthy"
    assert not vote.switched
    assert vote.reason.endswith("no group predicts a pneumonia class with probability > 0.9")


def test_pneumonia_majority_is_never_switched() -> None:
    vote = patient_vote([[0.6, 0.3, 0.1], [0.6, 0.3, 0.1], [0.0, 0.99, 0.01]], CLASSES)
    assert vote.label == "covid_pneumonia"
    assert not vote.switched


def test_tie_goes_to_the_highest_mean_probability() -> None:
    vote = patient_vote([[0.5, 0.1, 0.4], [0.1, 0.2, 0.7]], CLASSES)  # 1 covid, 1 healthy
    assert vote.label == "healthy"  # mean 0.55 against 0.30
    assert vote.reason.startswith("tie: 1 of 2 groups each for covid_pneumonia (mean probability 0.30)")
    vote = patient_vote([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1]], CLASSES)
    assert vote.votes["covid_pneumonia"] == vote.votes["non_covid_pneumonia"] == 2
    assert vote.label == "non_covid_pneumonia"  # mean 0.46 against 0.34
    # a healthy tie winner still switches on a confident pneumonia group
    vote = patient_vote([[0.95, 0.03, 0.02], [0.01, 0.01, 0.98]], CLASSES)
    assert vote.majority == "healthy"
    assert vote.label == "covid_pneumonia"
    assert vote.switched


def test_exact_tie_goes_to_the_first_class() -> None:
    vote = patient_vote([[0.6, 0.4, 0.0], [0.4, 0.6, 0.0]], CLASSES)
    assert vote.label == "covid_pneumonia"


def test_vote_bad_input() -> None:
    with pytest.raises(ValueError, match=r"expected \(groups >= 1, 3 classes\), got shape \(0,\)"):
        patient_vote([], CLASSES)
    with pytest.raises(ValueError, match="expected probabilities"):
        patient_vote([[2.0, -1.0, 3.0]], CLASSES)  # logits, not softmax
    with pytest.raises(ValueError, match="healthy: expected one of"):
        patient_vote([[0.2, 0.3, 0.5]], CLASSES, healthy="normal")


# --------------------------------------------------------------------------- classical lung mask


def test_lung_mask_on_a_synthetic_chest() -> None:
    """Two air-filled lungs in a soft-tissue body, air outside, an enclosed vessel and stomach gas."""
    z, y, x = np.mgrid[0:20, 0:128, 0:128]
    volume = np.full((20, 128, 128), -1000, dtype=np.int16)
    volume[((y - 64) / 55) ** 2 + ((x - 64) / 60) ** 2 <= 1] = 40  # body
    right = ((y - 64) / 30) ** 2 + ((x - 38) / 18) ** 2 <= 1
    left = ((y - 64) / 30) ** 2 + ((x - 90) / 18) ** 2 <= 1
    volume[(right | left) & (z >= 3) & (z < 18)] = -850
    volume[(((y - 64) ** 2 + (x - 38) ** 2) <= 9) & (z >= 3) & (z < 18)] = 30  # a vessel inside the right lung
    volume[(((y - 100) ** 2 + (x - 64) ** 2) <= 16) & (z < 3)] = -1000  # gas in the bowel
    mask = classical_lung_mask(volume)
    expected = (right | left) & (z >= 3) & (z < 18)
    assert mask.shape == volume.shape
    assert mask.dtype == bool
    assert (mask == expected).mean() > 0.995
    assert mask[10, 64, 38]  # the vessel is filled in
    assert not mask[:3].any()  # the bowel gas is a small third component
    assert not mask[:, :5].any()
    assert not mask[:, :, :5].any()
    assert not classical_lung_mask(np.full((3, 64, 64), 40, dtype=np.int16)).any()


def test_lung_mask_minimum_volume_with_spacing() -> None:
    volume = np.full((4, 64, 64), 40, dtype=np.int16)
    volume[1:3, 20:30, 20:30] = -900  # 200 voxels of 1 mm^3 = 0.2 mL: no lung
    assert classical_lung_mask(volume).any()
    assert not classical_lung_mask(volume, spacing=(1.0, 1.0, 1.0)).any()


@pytest.fixture(scope="module")
def covid_series(shared_data: Path):
    from medview.io.dicom import load_dicom

    folder = shared_data / "covid_ct" / "COVID-CT-MD" / "COVID-19" / "P001"
    if not folder.is_dir():
        pytest.skip(f"COVID-CT-MD sample missing: {folder}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="pydicom")  # its invalid UIDs
        return load_dicom([folder])


def test_lung_mask_on_a_real_series(covid_series) -> None:
    volume = covid_series
    assert volume.shape == (148, 512, 512)
    mask = classical_lung_mask(volume.voxels, spacing=volume.spacing)
    assert mask.flags.c_contiguous  # read slice by slice (the COVID-19 pipeline, the views' outline)

    litres = mask.sum() * float(np.prod(volume.spacing)) / 1e6
    assert 2.0 < litres < 8.0, f"lung volume {litres:.2f} L"

    # both lungs in the middle of the lung's z extent: two large components, either side of the midline
    lung_slices = np.flatnonzero(mask.any(axis=(1, 2)))
    middle = mask[(lung_slices[0] + lung_slices[-1]) // 2]
    labels, count = ndimage.label(middle)
    sizes = np.bincount(labels.ravel())[1:]
    largest = np.argsort(sizes)[::-1][:2] + 1
    assert count >= 2
    assert sizes[largest[1] - 1] > 0.5 * sizes[largest[0] - 1]
    centres = sorted(np.nonzero(labels == label)[1].mean() for label in largest)
    assert centres[0] < 256 < centres[1]
    assert (labels > 0).sum() - sizes[largest - 1].sum() < 0.02 * middle.sum()

    # nothing outside the body: the body is each slice's largest non-air region with its holes filled
    tissue = volume.voxels > -400
    for index in range(0, volume.shape[0], 7):
        parts, _ = ndimage.label(tissue[index])
        body = ndimage.binary_fill_holes(parts == np.argmax(np.bincount(parts.ravel())[1:]) + 1)
        assert not (mask[index] & ~body).any(), f"lung mask outside the body in slice {index}"

    # the paper's elimination keeps one contiguous run around the largest slice, then the groups cover it
    selection = select_slices(mask, superior_at_high_z=superior_at_high_z(volume.direction))
    kept = np.asarray(selection.kept)
    assert kept.size
    assert np.all(np.diff(kept) == 1)
    assert kept[0] <= selection.largest <= kept[-1]
    assert 40 <= kept.size <= 110
    prepared = prepare_slices(volume.voxels, mask, selection.kept)
    assert prepared.shape == (kept.size, 256, 256)
    assert prepared.min() >= 0.0
    assert prepared.max() <= 1.0
    groups = group_slices(prepared, selection.kept)
    assert all(g.images.shape == (chest.GROUP_SLICES, 256, 256) for g in groups)
    assert groups[0].sources[0] == kept[0]
    assert max(s for g in groups for s in g.sources if s is not None) == kept[-1]


def test_the_lung_mask_can_be_stopped_between_its_steps() -> None:
    volume = np.full((6, 64, 64), -1000, dtype=np.int16)
    volume[:, 8:56, 8:56] = 40  # a body
    volume[1:5, 20:44, 14:30] = -850  # a lung in it
    calls: list[int] = []
    mask = classical_lung_mask(volume, between_steps=lambda: calls.append(1))
    assert mask.any()
    assert len(calls) >= 4  # labelling, 3-D components, closing, hole filling

    class Stop(Exception):
        pass

    def stop_at_the_second() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise Stop

    calls.clear()
    with pytest.raises(Stop):
        classical_lung_mask(volume, between_steps=stop_at_the_second)
    assert len(calls) == 2  # nothing ran after the stop
