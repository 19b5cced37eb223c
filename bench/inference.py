"""CPU inference latency of every pipeline on real inputs, beside the paper's figure where one exists.

Run: ``.venv/bin/python -m bench.inference`` (``--repeats N``, ``--threads N``).
Each pipeline runs through ``Engine`` exactly as the viewer calls it, from a
bundle written by ``training.export`` with the architecture's default size and
random weights (latency does not depend on the weight values).  Timings are the
median of ``--repeats`` runs after one warm-up run; "load" is the first
``Engine.networks`` call (checksums verified, weights read, network built).

Inputs: the bundled abdominal CT (20 slices), COVID-CT-MD P001 (148 slices),
ICBHI recording 104_1b1_Ar (25.6 s, 4 kHz), one ISIC photo.

Beside the times: each network's floating-point operations per input
(``torch.utils.flop_counter``, a multiply-add counted as 2) and this CPU's
float32 matrix-product rate with the same threads, the most a dense network
can reach here: a pipeline close to it is limited by its arithmetic, not by
how it runs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.ensemble import RandomForestClassifier

from bench.results import Row, report
from medview.engine.manifest import DataProvenance, InputSpec, ModelCard
from medview.engine.service import Engine
from medview.io.audio import read_icbhi_annotations, read_recording
from medview.io.dicom import load_dicom
from medview.models import create_model
from medview.models.registry import model_entry
from medview.preprocess.chest import classical_lung_mask
from training.export import export_bundle

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
DEMO = DataProvenance(dataset="random weights (benchmark)", split="none", counts={}, demo=True)
LITE0 = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
#: the COVID paper's CPU time per 50-slice group (i7-9750H, 6 cores): a figure to compare with, not a target
PAPER_COVID_GROUP_S = 0.409


def _export(folder: Path, model_id: str, task: str, arch: str, args: dict, spec: InputSpec, classes, **extra) -> None:
    networks = [create_model(arch, **args).eval() for _ in range(extra.pop("snapshots", 1))]
    export_bundle(
        networks, folder / model_id, model_id=model_id, version="bench", task=task, arch=arch, arch_args=args,
        input_spec=spec, class_names=classes, trained_on=DEMO, metrics={}, **extra,
    )  # fmt: skip


def build_bundles(folder: Path) -> None:
    """One bundle per pipeline, default architecture sizes, random weights."""
    torch.manual_seed(0)
    ct = {"modality": "CT", "size": (256, 256)}
    _export(folder, "liver", "liver_segmentation", "liver_eas_unet", {},
            InputSpec(**ct, hu_window=(-200.0, 250.0)), ("background", "liver"))  # fmt: skip
    _export(folder, "kidney", "kidney_stone", "kidney_hybrid", {"backbone": "efficientnet_lite0"},
            InputSpec("CT", (224, 224), 3, (-200.0, 600.0), "imagenet", extra={**LITE0, "positive_class": "stone"}),
            ("no stone", "stone"))  # fmt: skip
    covid_classes = ("covid_pneumonia", "non_covid_pneumonia", "healthy")
    _export(folder, "covid", "covid_ct", "covid_cnn_bilstm", {},
            InputSpec(**ct, hu_window=(-1000.0, 400.0)), covid_classes)  # fmt: skip
    _export(folder, "lung-unet", "lung_segmentation", "lung_unet", {},
            InputSpec(**ct, hu_window=(-1000.0, 400.0)), ("background", "lung"))  # fmt: skip
    _export(folder, "lung-sound", "lung_sound", "lung_sound_cnn", {"num_classes": 4},
            InputSpec("audio", sample_rate=22050, normalisation="zscore"), ("normal", "crackle", "wheeze", "both"),
            snapshots=8)  # fmt: skip
    rng = np.random.default_rng(0)
    forest = RandomForestClassifier(n_estimators=50, random_state=0).fit(rng.random((200, 1000)), np.arange(200) % 2)
    _export(folder, "skin", "skin_lesion", "skin_cnn_features", {"backbone": "efficientnet_lite0"},
            InputSpec("photo", (224, 224), 3, None, "minmax", extra={**LITE0, "positive_class": "malignant"}),
            ("benign", "malignant"), forest=forest)  # fmt: skip


def network_gflop(network: torch.nn.Module, arch: str) -> float:
    """GFLOP of one forward pass of ``network`` on one input of its architecture's example shape."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        network(torch.zeros(1, *model_entry(arch).example_input))
    return counter.get_total_flops() / 1e9


def matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    """float32 GFLOP/s of a size x size matrix product with torch's current threads."""
    left, right = torch.rand(size, size), torch.rand(size, size)
    seconds = median_seconds(lambda: torch.mm(left, right), repeats)
    return 2 * size**3 / seconds / 1e9


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up: allocator, thread pool, lazy inits
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def load_seconds(engine: Engine, card: ModelCard) -> float:
    start = time.perf_counter()
    engine.networks(card)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    abdomen = load_dicom([REPO / "resources" / "samples" / "totalsegmentator_ct" / "dicom"])
    chest = load_dicom([SHARED / "covid_ct" / "COVID-CT-MD" / "COVID-19" / "P001"])
    wav = SHARED / "lung_sound" / "icbhi_sample" / "104_1b1_Ar_sc_Litt3200.wav"
    recording = read_recording(wav)
    cycles = [(c.start_s, c.end_s) for c in read_icbhi_annotations(wav.with_suffix(".txt"))]
    photo_path = sorted((SHARED / "skin").rglob("*.jp*g"))[0]
    photo = np.asarray(Image.open(photo_path).convert("RGB"))

    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as folder:
        build_bundles(Path(folder))
        engine = Engine([Path(folder)], device_preference="cpu")
        card = {c.id: c for c in engine.cards()}
        loads = {name: load_seconds(engine, c) for name, c in card.items()}

        slices = abdomen.shape[0]
        t = median_seconds(lambda: engine.segment_liver(card["liver"], abdomen), args.repeats)
        rows.append(Row("liver EAS U-Net, per slice (256x256)", t / slices))

        every = list(range(slices))
        t = median_seconds(lambda: engine.classify_kidney_slices(card["kidney"], abdomen, every), args.repeats)
        rows.append(Row("kidney hybrid (Lite0), per slice (224x224)", t / slices))
        t = median_seconds(
            lambda: engine.classify_kidney_slices(card["kidney"], abdomen, [10], explain_slices=[10]), args.repeats
        )
        rows.append(Row("kidney hybrid Grad-CAM, per slice (incl. its forward)", t))

        mask_t = median_seconds(lambda: classical_lung_mask(chest.voxels, spacing=chest.spacing), args.repeats)
        rows.append(Row(f"lung mask, classical, per series ({chest.shape[0]} slices)", mask_t))
        t = median_seconds(
            lambda: engine.classify_covid(card["covid"], chest, lung_card=card["lung-unet"]), args.repeats
        )
        rows.append(Row(f"lung U-Net + COVID, per series ({chest.shape[0]} slices)", t))
        result = engine.classify_covid(card["covid"], chest)
        groups = len(result.groups)
        t = median_seconds(lambda: engine.classify_covid(card["covid"], chest), args.repeats)
        covid_group_t = (t - mask_t) / groups
        rows.append(Row("COVID CNN + biLSTM, per 50-slice group", covid_group_t, reference=PAPER_COVID_GROUP_S))
        t = median_seconds(lambda: engine.classify_covid(card["covid"], chest, explain=True), args.repeats)
        rows.append(Row("COVID Grad-CAM, per 50-slice group", (t - mask_t) / groups - covid_group_t))

        t = median_seconds(lambda: engine.classify_lung_sound(card["lung-sound"], recording, cycles), args.repeats)
        per_recording = f"per recording ({recording.duration_s:.1f} s, {len(cycles)} cycles)"
        rows.append(Row(f"lung sound, 8 snapshots, {per_recording}", t))

        skin_t = median_seconds(lambda: engine.classify_skin(card["skin"], photo, explain=False), args.repeats)
        rows.append(Row(f"skin Lite0 + forest, per photo ({photo.shape[1]}x{photo.shape[0]})", skin_t))
        t = median_seconds(lambda: engine.classify_skin(card["skin"], photo, explain=True), args.repeats)
        rows.append(Row("skin saliency, per photo", t - skin_t))
        architectures = {name: c.arch for name, c in card.items()}
        networks = {name: engine.networks(c)[0] for name, c in card.items()}

    pipelines = {
        "liver": "liver EAS U-Net",
        "kidney": "kidney hybrid (Lite0)",
        "lung-unet": "lung U-Net",
        "covid": "COVID CNN + biLSTM",
        "lung-sound": "lung sound, 8 snapshots",
        "skin": "skin Lite0 + forest",
    }
    rows += [Row(f"{label}: load (checksums, weights, network)", loads[name]) for name, label in pipelines.items()]
    units = {"liver": "slice", "kidney": "slice", "lung-unet": "slice", "covid": "50-slice group",
             "lung-sound": "chunk, per snapshot", "skin": "photo (one view)"}  # fmt: skip
    rows += [
        Row(f"{pipelines[name]}: network, per {unit}", network_gflop(networks[name], architectures[name]), "GFLOP")
        for name, unit in units.items()
    ]
    rows.append(Row("float32 matrix product (2048x2048), this CPU", matmul_gflops(), "GFLOP/s"))
    report(
        "inference",
        f"CPU inference, torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats}",
        rows,
    )
    print(f"\nratio: against the paper's {PAPER_COVID_GROUP_S} s per group (i7-9750H, 6 cores)")


if __name__ == "__main__":
    main()
