"""Forward passes of the segmentation U-Nets on ONNX Runtime: same probabilities as torch, a cache that holds up.

The equivalence runs the shipped liver bundle on slices of the bundled CT
sample; the cache and fallback cases use a small random-weight liver U-Net so
their exports take a fraction of a second.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from medview.engine import onnx_runtime
from medview.engine.api import SegmentationResult
from medview.engine.manifest import ARCHITECTURES, DataProvenance, InputSpec, ModelCard
from medview.engine.onnx_runtime import OnnxSessions, default_sample_shape, graph_path
from medview.engine.pipelines.context import RunContext
from medview.engine.pipelines.segmentation import slice_probabilities
from medview.engine.service import Engine
from medview.engine.weights import load_networks
from medview.io.dicom import load_dicom
from medview.io.volume import Volume
from medview.models import create_model
from training.export import export_bundle

pytest.importorskip("onnxruntime")

LIVER_BUNDLE = Path(__file__).resolve().parents[2] / "resources" / "models" / "liver-demo"
SLICES = slice(8, 12)  # four slices of the sample series, all with liver in them
ONNX_NOTE = "forward passes on ONNX Runtime"
TORCH_NOTE = "forward passes on torch"


@pytest.fixture(scope="module")
def sample_volume(sample_series_dir: Path) -> Volume:
    return load_dicom([sample_series_dir])


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A liver U-Net of base width 8 on 64x64 inputs, random weights."""
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    arch_args = {"in_channels": 1, "num_classes": 2, "base_channels": 8, "depth": 4}
    export_bundle(
        [create_model("liver_eas_unet", **arch_args).eval()],
        folder / "liver-small",
        model_id="liver-small",
        version="0.0.1",
        task=ARCHITECTURES["liver_eas_unet"],
        arch="liver_eas_unet",
        arch_args=arch_args,
        input_spec=InputSpec(modality="CT", size=(64, 64), channels=1, hu_window=(-200.0, 250.0)),
        class_names=("background", "liver"),
        trained_on=DataProvenance(dataset="random weights", split="none", counts={}, demo=True),
        metrics={},
        thresholds={"liver": 0.5},
    )
    return folder


@pytest.fixture
def exports(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the ONNX exports (one entry per call of ``export_onnx``)."""
    calls: list[int] = []
    original = onnx_runtime.export_onnx

    def counting(*args: object, **kwargs: object) -> bytes:
        calls.append(1)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(onnx_runtime, "export_onnx", counting)
    return calls


def _probabilities(card: ModelCard, network: torch.nn.Module, voxels: np.ndarray, forward: object) -> np.ndarray:
    assert card.input.hu_window is not None
    size = (card.input.size[0], card.input.size[1])
    parts = slice_probabilities(
        network, voxels, 1, card.input.hu_window, size, card.input.channels, torch.device("cpu"), forward=forward
    )  # type: ignore[arg-type]
    return np.concatenate([painted for _, painted in parts])


def _segment(folder: Path, cache: Path, volume: Volume, **engine_options: bool) -> SegmentationResult:
    engine = Engine([folder], device_preference="cpu", onnx_cache=cache, **engine_options)
    return engine.segment_liver(engine.cards("liver_segmentation")[0], volume)


def test_onnx_runtime_gives_torchs_liver_probabilities(tmp_path: Path, sample_volume: Volume) -> None:
    engine = Engine([LIVER_BUNDLE.parent], device_preference="cpu", onnx_runtime=False)
    card = next(card for card in engine.cards("liver_segmentation") if card.bundle_dir == LIVER_BUNDLE)
    network = load_networks(card)[0]
    context = RunContext(card, [network], torch.device("cpu"), "CPU", onnx=OnnxSessions(tmp_path))
    voxels = sample_volume.voxels[SLICES]

    on_onnx_runtime = _probabilities(card, network, voxels, context.forward_passes(0))
    on_torch = _probabilities(card, network, voxels, None)

    assert context.notes == [f"{ONNX_NOTE} {onnx_runtime._import_runtime().__version__} ({card.label})"]
    assert graph_path(card, 0, tmp_path, (card.input.channels, *card.input.size)).is_file()
    assert on_onnx_runtime.shape == on_torch.shape == voxels.shape
    np.testing.assert_allclose(on_onnx_runtime, on_torch, rtol=0, atol=1e-4)
    threshold = context.threshold("liver")
    agreement = np.mean((on_onnx_runtime >= threshold) == (on_torch >= threshold))
    assert agreement >= 0.9999
    assert (on_torch >= threshold).sum() > 10_000  # the slices do hold liver


def test_the_cached_graph_is_reused(
    tmp_path: Path, small_bundle: Path, sample_volume: Volume, exports: list[int]
) -> None:
    few = Volume(voxels=sample_volume.voxels[8:10], spacing=sample_volume.spacing, modality="CT")
    first = _segment(small_bundle, tmp_path, few)
    second = _segment(small_bundle, tmp_path, few)  # another engine: a new process would do the same

    assert len(exports) == 1
    assert len(list(tmp_path.glob("*.onnx"))) == 1
    for result in (first, second):
        assert any(note.startswith(ONNX_NOTE) for note in result.provenance.notes)
    np.testing.assert_array_equal(first.probability, second.probability)
    torch_only = _segment(small_bundle, tmp_path, few, onnx_runtime=False)
    assert torch_only.provenance.notes == ()
    np.testing.assert_allclose(first.probability, torch_only.probability, rtol=0, atol=1e-3)  # float16 storage


def test_graphs_unused_for_60_days_are_deleted_when_an_engine_starts(
    tmp_path: Path, small_bundle: Path, sample_volume: Volume, exports: list[int]
) -> None:
    few = Volume(voxels=sample_volume.voxels[8:10], spacing=sample_volume.spacing, modality="CT")
    _segment(small_bundle, tmp_path, few)
    [graph] = tmp_path.glob("*.onnx")
    stale = tmp_path / "unet-0123.onnx"  # a replaced bundle's graph, last used 61 days ago
    stale.write_bytes(b"graph")
    Path(f"{stale}.json").write_text("{}")
    for path, days in ((stale, 61), (Path(f"{stale}.json"), 61), (graph, 59)):
        old = time.time() - days * 86400
        os.utime(path, (old, old))

    _segment(small_bundle, tmp_path, few)  # a new engine: prunes, then reads its graph

    assert sorted(tmp_path.iterdir()) == sorted([graph, Path(f"{graph}.json")])
    assert len(exports) == 1  # the graph in use was kept, not exported again
    assert graph.stat().st_mtime > time.time() - 60  # and marked used
    assert onnx_runtime.prune_unused(tmp_path) == []


@pytest.mark.parametrize("checksum", ["stale", "matching"])
def test_a_damaged_cached_graph_is_replaced(
    tmp_path: Path, small_bundle: Path, sample_volume: Volume, exports: list[int], checksum: str
) -> None:
    few = Volume(voxels=sample_volume.voxels[8:10], spacing=sample_volume.spacing, modality="CT")
    reference = _segment(small_bundle, tmp_path, few)
    (graph,) = tmp_path.glob("*.onnx")
    sidecar = graph.with_name(graph.name + ".json")
    graph.write_bytes(b"not a graph" * 100)
    if checksum == "matching":  # passes the checksum, so it is ONNX Runtime that refuses it
        about = json.loads(sidecar.read_text())
        sidecar.write_text(json.dumps({**about, "sha256": hashlib.sha256(graph.read_bytes()).hexdigest()}))

    again = _segment(small_bundle, tmp_path, few)

    assert len(exports) == 2
    assert any(note.startswith(ONNX_NOTE) for note in again.provenance.notes)
    np.testing.assert_array_equal(again.probability, reference.probability)
    data = graph.read_bytes()
    assert data.startswith(b"\x08")  # a ModelProto again (field 1, ir_version), with a checksum that fits
    assert json.loads(sidecar.read_text())["sha256"] == hashlib.sha256(data).hexdigest()


def test_without_onnxruntime_the_pipeline_runs_on_torch_and_says_so(
    tmp_path: Path, small_bundle: Path, sample_volume: Volume, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    few = Volume(voxels=sample_volume.voxels[8:10], spacing=sample_volume.spacing, modality="CT")

    result = _segment(small_bundle, tmp_path, few)

    (note,) = result.provenance.notes
    assert note.startswith(TORCH_NOTE)
    assert "onnxruntime cannot be imported" in note
    assert not list(tmp_path.iterdir())
    torch_only = _segment(small_bundle, tmp_path, few, onnx_runtime=False)
    np.testing.assert_array_equal(result.probability, torch_only.probability)


def test_a_failing_export_falls_back_to_torch_and_is_not_retried(
    tmp_path: Path, small_bundle: Path, sample_volume: Volume, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def broken(*args: object) -> bytes:
        calls.append(1)
        raise onnx_runtime.OnnxUnavailable("export to ONNX failed: for the test")

    monkeypatch.setattr(onnx_runtime, "export_onnx", broken)
    few = Volume(voxels=sample_volume.voxels[:2], spacing=sample_volume.spacing, modality="CT")
    engine = Engine([small_bundle], device_preference="cpu", onnx_cache=tmp_path)
    card = engine.cards("liver_segmentation")[0]

    results = [engine.segment_liver(card, few) for _ in range(2)]

    assert len(calls) == 1  # the failure is remembered while the bundle is installed
    for result in results:
        (note,) = result.provenance.notes
        assert note.startswith(TORCH_NOTE)
        assert note.endswith("export to ONNX failed: for the test")
    engine.model_folders = [tmp_path / "empty"]
    engine.refresh()  # the bundle was removed: what was known of its network goes with it
    engine.model_folders = [small_bundle]
    engine.refresh()
    engine.segment_liver(engine.cards("liver_segmentation")[0], few)
    assert len(calls) == 2


def test_cuda_devices_keep_torch(small_bundle: Path, tmp_path: Path) -> None:
    engine = Engine([small_bundle], device_preference="cpu", onnx_cache=tmp_path)
    card = engine.cards("liver_segmentation")[0]
    context = RunContext(card, engine.networks(card), torch.device("cuda"), "CUDA", onnx=engine.onnx)

    context.forward_passes(0)  # never called: no CUDA needed

    assert context.notes == []
    assert not list(tmp_path.iterdir())


def test_sessions_plan_no_memory_pattern_per_batch_size(small_bundle: Path, tmp_path: Path) -> None:
    """The batch size varies (a series' last batch, the export check's 2): a memory pattern per size kept one more
    arena block resident per size, ~600 MB after a 148-slice liver run of the shipped bundle (bench/scale.py)."""
    engine = Engine([small_bundle], device_preference="cpu", onnx_cache=tmp_path)
    card = engine.cards("liver_segmentation")[0]
    assert engine.onnx is not None

    network = engine.onnx.network(card, 0, engine.networks(card)[0])

    assert network.session.get_session_options().enable_mem_pattern is False
    outputs = [network(np.zeros((batch, 1, 64, 64), np.float32)) for batch in (8, 3, 8)]
    assert [output.shape[0] for output in outputs] == [8, 3, 8]


def test_prepare_sets_up_the_graph_the_first_run_then_uses(
    tmp_path: Path, small_bundle: Path, sample_volume: Volume, exports: list[int]
) -> None:
    engine = Engine([small_bundle], device_preference="cpu", onnx_cache=tmp_path)
    card = engine.cards("liver_segmentation")[0]
    engine.prepare(card)
    assert len(exports) == 1
    assert [path.name for path in tmp_path.glob("*.onnx")] == [graph_path(card, 0, tmp_path, (1, 64, 64)).name]
    networks = engine.networks(card)
    engine.prepare(card)  # a second call finds everything loaded

    few = Volume(voxels=sample_volume.voxels[8:10], spacing=sample_volume.spacing, modality="CT")
    result = engine.segment_liver(card, few)
    assert len(exports) == 1  # the run exported nothing and built no networks
    assert engine.networks(card) is networks
    assert any(note.startswith(ONNX_NOTE) for note in result.provenance.notes)


def test_prepare_sets_up_each_shipped_models_first_run(tmp_path: Path, exports: list[int]) -> None:
    from medview.engine.pipelines import covid

    engine = Engine([LIVER_BUNDLE.parent], device_preference="cpu", onnx_cache=tmp_path)
    for card in engine.cards():
        engine.prepare(card)
    assert len(engine._networks) == len(engine.cards())  # every network loaded
    assert len(engine._forests) == len(engine.cards("skin_lesion")) == 1
    # the graphs the runs will ask for: the segmentation U-Nets' and the kidney network's slices, the COVID
    # model's slice groups
    covid_card = engine.cards("covid_ct")[0]
    graphs = [(covid_card, covid.network_input_shape(covid_card))] + [
        (card, default_sample_shape(card))
        for task in ("liver_segmentation", "lung_segmentation", "kidney_stone")
        for card in engine.cards(task)
    ]
    made = sorted(path.name for path in tmp_path.glob("*.onnx"))
    assert made == sorted(graph_path(card, 0, tmp_path, shape).name for card, shape in graphs)
    assert len(exports) == len(made) == 4
