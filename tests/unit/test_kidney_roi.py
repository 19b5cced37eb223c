"""The kidney-stone Grad-CAM is kept inside the ROI and the body (issue 19, item 6), on the bundled abdominal CT.

Before, the demo bundle's map of the sample abdomen was brightest in the image
corners, in the air, on the arms and outside a drawn ROI.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from medview.engine.pipelines.kidney import body_mask, grad_cam_region
from medview.engine.service import Engine
from medview.io.dicom import load_dicom
from medview.io.volume import Volume
from tests.conftest import RESOURCES
from tests.kidney_slices import KAGGLE_KIDNEY, STONE_SLICES, kaggle_slice_hu

#: the slice of the sample explained below (the arms lie apart from the trunk on every slice)
SLICE = 11


@pytest.fixture(scope="module")
def sample_volume(sample_series_dir: Path) -> Volume:
    return load_dicom([sample_series_dir])


@pytest.fixture(scope="module")
def engine() -> Engine:
    engine = Engine([RESOURCES / "models"], device_preference="cpu")
    if not engine.cards("kidney_stone"):
        pytest.skip("no kidney_stone bundle in resources/models")
    return engine


def test_the_body_mask_is_the_trunk_without_air_table_or_arms(sample_volume: Volume) -> None:
    hu = sample_volume.voxels[SLICE]
    body = body_mask(hu)
    assert body.shape == hu.shape
    assert body.dtype == bool
    _, parts = ndimage.label(body)
    assert parts == 1
    # the trunk: a quarter to a third of the 50 x 50 cm field of view; the corners are air
    assert 0.2 < body.mean() < 0.4
    assert not body[[0, 0, -1, -1], [0, -1, 0, -1]].any()
    assert body[hu.shape[0] // 2, hu.shape[1] // 2]
    # what is denser than air but apart from the trunk (the arms, the table) is out: the components other
    # than the largest, each of at least 1,000 pixels
    labels, count = ndimage.label(hu > -400)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    apart = [label for label in range(1, count + 1) if sizes[label] >= 1000 and label != sizes.argmax()]
    assert len(apart) >= 2  # two arms at least
    for label in apart:
        assert not (body & (labels == label)).any()
    # gas inside the body (bowel, lung bases) is in: the mask has no holes
    np.testing.assert_array_equal(ndimage.binary_fill_holes(body), body)
    assert (body & (hu < -400)).sum() > 0


def test_the_grad_cam_region_is_the_roi_inside_the_body(sample_volume: Volume) -> None:
    hu = sample_volume.voxels[SLICE]
    body = body_mask(hu)
    np.testing.assert_array_equal(grad_cam_region(hu, None), body)
    roi = np.zeros(hu.shape, bool)
    roi[:300, :300] = True  # reaches the air at the top left corner
    region = grad_cam_region(hu, roi)
    np.testing.assert_array_equal(region, roi & body)
    assert region.sum() < roi.sum()
    # a slice of air alone: nothing to restrict to, the ROI (or the whole slice) is kept
    air = np.full(hu.shape, -1000, np.int16)
    assert not body_mask(air).any()
    assert grad_cam_region(air, None).all()
    np.testing.assert_array_equal(grad_cam_region(air, roi), roi)


@pytest.fixture(scope="module")
def stone_volume(shared_data: Path, engine: Engine) -> Volume:
    """Two real stone slices of the Kaggle set as CT in HU: the model finds their stones, so their maps show."""
    (card,) = engine.cards("kidney_stone")
    voxels = [kaggle_slice_hu(shared_data / KAGGLE_KIDNEY / name, 512, card.input.hu_window) for name in STONES]
    return Volume(voxels=np.stack(voxels), spacing=(2.0, 0.7, 0.7), modality="CT")


STONES = [STONE_SLICES[4], STONE_SLICES[9]]


def test_the_whole_slice_map_lies_in_the_body_only(stone_volume: Volume, engine: Engine) -> None:
    (card,) = engine.cards("kidney_stone")
    result = engine.classify_kidney_slices(card, stone_volume, [0], explain_slices=[0])
    assert result.probabilities[0] >= card.thresholds["stone"]
    values = result.heatmaps[0].values
    body = body_mask(stone_volume.voxels[0])
    assert values.shape == body.shape
    assert not values[~body].any()  # before: the map was brightest in the corners, in the air
    assert values[body].max() > 0
    assert np.count_nonzero(values[body] >= 0.1 * values.max()) > 1000


def test_a_roi_map_lies_in_the_roi_only(stone_volume: Volume, engine: Engine) -> None:
    (card,) = engine.cards("kidney_stone")
    roi = np.zeros(stone_volume.shape[1:], bool)
    roi[150:400, 60:400] = True  # a rectangle over the kidneys, inside the body
    result = engine.classify_kidney_slices(
        card, stone_volume, [1], roi=roi, roi_source="drawn rectangle", explain_slices=[1]
    )
    values = result.heatmaps[1].values
    assert not values[~roi].any()  # before: the map went on over the whole slice
    assert values[roi].max() > 0
