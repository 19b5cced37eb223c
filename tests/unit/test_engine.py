"""The inference engine: device choice, CUDA out-of-memory fallback, Grad-CAM, and the lung-sound pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medview.engine import device as devices
from medview.engine.api import Heatmap
from medview.engine.manifest import DataProvenance, InputSpec, ModelCard
from medview.engine.pipelines import lung_sound
from medview.engine.service import Engine
from medview.errors import Cancelled, ChecksumError, InputError, ModelError
from medview.explain import grad_cam
from medview.io.audio import read_icbhi_annotations, read_recording
from medview.models import create_model
from medview.preprocess.audio import SAMPLE_RATE, cycle_chunks, resample
from training.export import export_bundle

LUNG_CLASSES = ("normal", "crackle", "wheeze", "both")
RECORDING = "104_1b1_Ar_sc_Litt3200.wav"  # 4 kHz, with crackle and wheeze cycles


# --------------------------------------------------------------------------- devices


def test_choose_device_auto_and_override() -> None:
    assert devices.choose_device("auto").type == devices.available_devices()[0]
    assert devices.choose_device("cpu").type == "cpu"
    with pytest.raises(ModelError, match="expected one of"):
        devices.choose_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="not available here"):
            devices.choose_device("cuda")


def test_compute_threads_setting_reaches_torch_and_zero_means_the_default(tmp_path: Path) -> None:
    before = torch.get_num_threads()
    try:
        Engine([tmp_path], device_preference="cpu", compute_threads=1)
        assert torch.get_num_threads() == 1
        assert devices.set_compute_threads(0) == devices.default_compute_threads() == torch.get_num_threads()
        Engine([tmp_path], device_preference="cpu")  # None: the caller's threads stay
        assert torch.get_num_threads() == devices.default_compute_threads()
        with pytest.raises(ModelError, match="compute threads"):
            devices.set_compute_threads(-1)
    finally:
        torch.set_num_threads(before)


def test_cuda_out_of_memory_runs_again_on_the_cpu_once() -> None:
    calls: list[tuple[str, str]] = []

    def work(device: torch.device, note: str) -> str:
        calls.append((device.type, note))
        if device.type == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return "result"

    assert devices.run_on(torch.device("cuda"), work) == "result"
    assert [device for device, _ in calls] == ["cuda", "cpu"]
    assert "ran out of memory" in calls[1][1]

    def always_oom(device: torch.device, note: str) -> str:
        raise torch.cuda.OutOfMemoryError("out of memory")

    with pytest.raises(torch.cuda.OutOfMemoryError):  # a CPU run that fails is not retried
        devices.run_on(torch.device("cpu"), always_oom)


# --------------------------------------------------------------------------- Grad-CAM


class _Evidence(nn.Module):
    """Class 0 = mean brightness: Grad-CAM of class 0 must light up where the image is bright."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.ReLU())
        self.head = nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.features[0].weight.fill_(1.0)
            self.head.weight.copy_(torch.tensor([[1.0], [-1.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def _blob_image() -> torch.Tensor:
    image = torch.zeros(1, 1, 32, 32)
    image[..., 4:10, 20:28] = 1.0
    return image


def test_grad_cam_lights_up_the_evidence_and_is_empty_against_it() -> None:
    model = _Evidence().eval()
    cam = grad_cam(model, _blob_image(), "features", 0)
    assert cam.shape == (1, 32, 32)
    peak = np.unravel_index(np.argmax(cam[0]), cam[0].shape)
    assert 4 <= peak[0] < 10
    assert 20 <= peak[1] < 28
    assert cam[0, 20:, :10].max() == 0.0
    assert not grad_cam(model, _blob_image(), "features", 1).any()  # class 1 is evidence against brightness
    assert all(p.grad is None for p in model.parameters())  # explaining does not touch parameter gradients


def test_grad_cam_works_on_a_frozen_network_and_upsamples() -> None:
    model = _Evidence().eval().requires_grad_(False)
    cam = grad_cam(model, _blob_image(), "features.0", lambda output: output[:, 0] * 2, output_size=(64, 64))
    assert cam.shape == (1, 64, 64)
    assert cam.max() > 0


def test_grad_cam_refuses_unknown_or_non_spatial_layers() -> None:
    model = _Evidence().eval()
    with pytest.raises(ModelError, match="no layer"):
        grad_cam(model, _blob_image(), "features.7", 0)
    with pytest.raises(ModelError, match="spatial"):
        grad_cam(model, _blob_image(), "head", 0)


def test_heatmap_relative_and_absolute_scales() -> None:
    heatmap = Heatmap(values=np.array([[0.0, 1.0], [2.0, 4.0]], dtype=np.float32), target_class="x", layer="l")
    np.testing.assert_allclose(heatmap.relative(), [[0, 0.25], [0.5, 1.0]])
    np.testing.assert_allclose(heatmap.absolute(8.0), [[0, 0.125], [0.25, 0.5]])
    np.testing.assert_allclose(heatmap.absolute(2.0), [[0, 0.5], [1.0, 1.0]])
    with pytest.raises(ValueError, match="positive"):
        heatmap.absolute(0.0)


# --------------------------------------------------------------------------- lung-sound pipeline


@pytest.fixture(scope="module")
def lung_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[nn.Module]]:
    models = tmp_path_factory.mktemp("models")
    torch.manual_seed(3)
    networks = [create_model("lung_sound_cnn", num_classes=4).eval() for _ in range(2)]
    export_bundle(
        networks,
        models / "lung-sound-random",
        model_id="lung-sound-random",
        version="0.0.1",
        task="lung_sound",
        arch="lung_sound_cnn",
        arch_args={"num_classes": 4},
        input_spec=InputSpec(modality="audio", normalisation="zscore", sample_rate=SAMPLE_RATE),
        class_names=LUNG_CLASSES,
        trained_on=DataProvenance(dataset="random weights", split="none", counts={"cycles": 0}, demo=True),
        metrics={"icbhi_score": 0.25},
    )
    return models, networks


@pytest.fixture(scope="module")
def lung_engine(lung_bundle: tuple[Path, list[nn.Module]]) -> Engine:
    return Engine([lung_bundle[0]], device_preference="cpu")


def _lung_card(engine: Engine) -> ModelCard:
    (card,) = engine.cards("lung_sound")
    return card


def test_lung_sound_pipeline_averages_chunks_and_snapshots(
    lung_engine: Engine, lung_bundle: tuple[Path, list[nn.Module]], shared_data: Path
) -> None:
    path = shared_data / "lung_sound" / "icbhi_sample" / RECORDING
    recording = read_recording(path)
    cycles = [(c.start_s, c.end_s) for c in read_icbhi_annotations(path.with_suffix(".txt"))]
    reports: list[tuple[int, int]] = []
    result = lung_engine.classify_lung_sound(
        _lung_card(lung_engine), recording, cycles, progress=lambda done, total, _what: reports.append((done, total))
    )
    assert len(result.scores) == len(cycles)
    assert result.snapshots == 2
    assert all(n == 2 for n in result.chunks_per_cycle)  # every ICBHI cycle here is shorter than 9 s
    for scores in result.scores:
        assert set(scores.probabilities) == set(LUNG_CLASSES)
        assert sum(scores.probabilities.values()) == pytest.approx(1.0)
    assert reports[-1][0] == reports[-1][1]
    assert [done for done, _ in reports] == sorted(done for done, _ in reports)
    assert result.provenance.demo
    assert result.provenance.model_id == "lung-sound-random"
    assert "CPU" in result.provenance.device

    # the third cycle by hand: resample, chunks, mean of the softmax over chunks and snapshots
    signal = resample(recording.samples, recording.sample_rate)
    start, end = round(cycles[2][0] * SAMPLE_RATE), round(cycles[2][1] * SAMPLE_RATE)
    chunks = torch.from_numpy(cycle_chunks(signal[start:end]))
    with torch.no_grad():
        expected = torch.stack([torch.softmax(net(chunks), 1).mean(0) for net in lung_bundle[1]]).mean(0)
    got = [result.scores[2].probabilities[name] for name in LUNG_CLASSES]
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-5)


def test_lung_sound_cancel_and_bad_cycles(lung_engine: Engine, shared_data: Path) -> None:
    recording = read_recording(shared_data / "lung_sound" / "icbhi_sample" / RECORDING)
    with pytest.raises(Cancelled):
        lung_engine.classify_lung_sound(_lung_card(lung_engine), recording, [(0.0, 2.0)], cancelled=lambda: True)
    with pytest.raises(InputError, match="holds no samples"):
        lung_engine.classify_lung_sound(_lung_card(lung_engine), recording, [(40.0, 41.0)])


def test_engine_refuses_a_tampered_bundle_and_the_wrong_task(
    lung_bundle: tuple[Path, list[nn.Module]], tmp_path: Path, shared_data: Path
) -> None:
    import shutil

    copy = Path(shutil.copytree(lung_bundle[0], tmp_path / "models"))
    engine = Engine([copy], device_preference="cpu")
    card = _lung_card(engine)
    weights = card.file_path(card.weights[1])
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    recording = read_recording(shared_data / "lung_sound" / "icbhi_sample" / RECORDING)
    with pytest.raises(ChecksumError) as caught:
        engine.classify_lung_sound(card, recording, [(0.0, 2.0)])
    assert weights.name in str(caught.value)
    with pytest.raises(ModelError, match="expected a 'liver_segmentation' model"):
        engine.segment_liver(card, None)  # type: ignore[arg-type]


def test_refresh_lets_go_of_networks_of_removed_bundles(
    lung_bundle: tuple[Path, list[nn.Module]], tmp_path: Path
) -> None:
    import shutil

    copy = Path(shutil.copytree(lung_bundle[0], tmp_path / "models"))
    engine = Engine([copy], device_preference="cpu")
    engine.networks(_lung_card(engine))
    assert len(engine._networks) == 1
    shutil.rmtree(copy / "lung-sound-random")
    engine.refresh()
    assert engine.cards() == []
    assert engine._networks == {}  # a removed bundle's weights do not stay in memory


def test_lung_inference_form_is_built_once_and_follows_weight_changes() -> None:
    torch.manual_seed(1)
    network = create_model("lung_sound_cnn", num_classes=4).eval()
    cpu = torch.device("cpu")
    form = lung_sound.inference_form(network, cpu)
    assert form is not network
    assert lung_sound.inference_form(network, cpu) is form
    x = torch.randn(2, 1, 50, 193)
    with torch.no_grad():
        network.classifier.bias.add_(1.0)  # changed in place, as an optimiser step does
        changed = lung_sound.inference_form(network, cpu)
        assert changed is not form
        np.testing.assert_allclose(changed(x), network(x), rtol=1e-4, atol=1e-4)
    network.train()  # batch statistics: nothing to fold, the network itself runs
    assert lung_sound.inference_form(network, cpu) is network
