"""The kidney run's policy without Qt: which slices a run classifies and explains, and what it says of them."""

from __future__ import annotations

import numpy as np
import pytest

from medview.engine.api import Heatmap
from medview.errors import InputError
from medview.io.volume import Volume
from medview.workflows.kidney import grad_cam_values, plan_kidney_run


def _volume(slices: int = 6) -> Volume:
    rng = np.random.default_rng(0)
    voxels = rng.integers(-100, 400, size=(slices, 32, 32)).astype(np.int16)
    voxels[2] = -1000  # one blank slice
    return Volume(voxels=voxels, spacing=(2.0, 0.7, 0.7), modality="CT")


def test_the_whole_series_in_a_mask_runs_only_the_slices_the_mask_covers() -> None:
    volume = _volume()
    roi = np.zeros(volume.shape, bool)
    roi[1:5, 8:20, 8:20] = True
    run = plan_kidney_run(volume, roi, "mask kidneys", current=3, whole_series=True)
    assert run.slices == (1, 2, 3, 4)
    assert run.explain == (3,)
    assert run.scope == "whole series, 2 slice(s) without ROI voxels left out"
    assert run.warnings == ("1 slice(s) run are uniform (blank: 3): their probabilities mean nothing.",)


def test_the_slice_on_screen_outside_the_mask_is_refused_with_its_number() -> None:
    volume = _volume()
    roi = np.zeros(volume.shape, bool)
    roi[1, 8:20, 8:20] = True
    with pytest.raises(InputError, match="no voxel on axial slice 5"):
        plan_kidney_run(volume, roi, "mask kidneys", current=4, whole_series=False)
    with pytest.raises(InputError, match=r"The kidney ROI \(drawn\) holds no pixel"):
        plan_kidney_run(volume, np.zeros((32, 32), bool), "drawn", current=4, whole_series=False)


def test_a_drawn_roi_and_the_whole_slice_run_what_was_asked_and_explain_the_slice_on_screen() -> None:
    volume = _volume()
    drawn = np.zeros((32, 32), bool)
    drawn[4:9, 4:9] = True
    one = plan_kidney_run(volume, drawn, "rectangle", current=4, whole_series=False)
    assert (one.slices, one.explain, one.scope, one.warnings) == ((4,), (4,), "axial slice 5 only", ())
    every = plan_kidney_run(volume, None, "whole slice", current=0, whole_series=True)
    assert every.slices == tuple(range(6))
    assert every.explain == (0,)


def test_grad_cam_values_scale_each_slice_or_all_by_one_scale() -> None:
    weak, strong = np.full((4, 4), 0.5, np.float32), np.full((4, 4), 2.0, np.float32)
    heatmaps = {1: Heatmap(weak, "stone", "layer"), 3: Heatmap(strong, "stone", "layer")}
    relative = grad_cam_values((5, 4, 4), heatmaps, absolute=False)
    absolute = grad_cam_values((5, 4, 4), heatmaps, absolute=True)
    assert relative[1].max() == relative[3].max() == 1.0
    assert absolute[1].max() == pytest.approx(0.25)
    assert absolute[3].max() == 1.0
    assert not relative[[0, 2, 4]].any()
