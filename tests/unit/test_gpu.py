"""The CUDA path of the pipelines, against the CPU path on the same real inputs.

Marked ``gpu``: they run where torch sees a CUDA device (``pytest -m gpu`` on a GPU workstation) and skip
elsewhere, as on CI. A GPU run must give what the CPU gives (float32 on both; cuDNN's kernels differ in the
last bits only).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medview.engine.service import Engine
from medview.io.dicom import load_series, scan_paths
from medview.io.volume import Volume
from tests.conftest import RESOURCES

pytestmark = pytest.mark.gpu

SAMPLE_SERIES = RESOURCES / "samples" / "totalsegmentator_ct" / "dicom"


@pytest.fixture(scope="module")
def sample_volume() -> Volume:
    (series,) = scan_paths([SAMPLE_SERIES]).series
    return load_series(series)


def engines() -> tuple[Engine, Engine]:
    folder = [Path(RESOURCES / "models")]
    return Engine(folder, device_preference="cuda"), Engine(folder, device_preference="cpu")


def test_cuda_is_chosen_when_asked() -> None:
    from medview.engine.device import choose_device

    assert choose_device("cuda").type == "cuda"
    assert choose_device("auto").type == "cuda"


def test_liver_on_cuda_matches_the_cpu(sample_volume: Volume) -> None:
    cuda, cpu = engines()
    (card,) = cuda.cards("liver_segmentation")
    on_gpu, on_cpu = cuda.segment_liver(card, sample_volume), cpu.segment_liver(card, sample_volume)
    assert "CUDA" in on_gpu.provenance.device
    overlap = np.logical_and(on_gpu.mask, on_cpu.mask).sum() * 2 / (on_gpu.mask.sum() + on_cpu.mask.sum())
    assert overlap > 0.99


def test_kidney_and_its_grad_cam_on_cuda_match_the_cpu(sample_volume: Volume) -> None:
    cuda, cpu = engines()
    (card,) = cuda.cards("kidney_stone")
    slices = list(range(sample_volume.shape[0]))
    on_gpu = cuda.classify_kidney_slices(card, sample_volume, slices, explain_slices=[10])
    on_cpu = cpu.classify_kidney_slices(card, sample_volume, slices, explain_slices=[10])
    np.testing.assert_allclose(on_gpu.probabilities, on_cpu.probabilities, atol=1e-3)
    np.testing.assert_allclose(on_gpu.heatmaps[10].relative(), on_cpu.heatmaps[10].relative(), atol=2e-2)


def test_covid_on_cuda_matches_the_cpu(sample_volume: Volume) -> None:
    cuda, cpu = engines()
    card = next(card for card in cuda.cards("covid_ct"))
    on_gpu, on_cpu = cuda.classify_covid(card, sample_volume), cpu.classify_covid(card, sample_volume)
    assert on_gpu.verdict == on_cpu.verdict
