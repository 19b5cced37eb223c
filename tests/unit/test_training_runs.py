"""Tiny end-to-end training runs: each task trains a few steps, exports a bundle, and the app's Engine runs it.

The runs are far too short to learn anything; what they prove is the chain:
real data in its public layout -> the paper's training protocol -> a verified
bundle -> the app's own pipeline computing what training computed.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from medview.engine.api import validated_summary
from medview.engine.forest import load_forest
from medview.engine.pipelines.skin import vote_views
from medview.engine.service import Engine
from medview.engine.weights import load_networks
from medview.io.audio import read_icbhi_annotations, read_recording
from medview.io.photo import read_photo
from medview.io.volume import Volume
from medview.models import create_model
from training import export
from training.cli import main as train_cli
from training.common.loop import FitConfig, RestoredTime, fit
from training.common.run import RunOptions
from training.covid.data import read_covid_dataset
from training.covid.train import (
    CovidSettings,
    lung_bundle_dir,
    patient_groups,
    prepare_patient,
    train_covid,
    unet_lung_mask,
)
from training.kidney.data import HU_WINDOW, kidney_set_from_cases, load_kidney_data, read_kidney_cases
from training.kidney.train import KidneySettings, KidneySlices, stone_probability, train_kidney
from training.liver.data import read_liver_dataset
from training.liver.train import LiverSettings, _augment, liver_probability, train_liver
from training.lung.data import read_icbhi_dataset
from training.lung.train import LungSettings, ensemble_probabilities, train_lung
from training.skin.train import SkinSettings, photo_features, train_skin


@pytest.fixture
def one_epoch_models_export(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lower export's responsiveness floors for these tests only.

    They train for an epoch or two on a handful of items to check that the app
    runs an exported bundle as training did; such a model is near-constant and
    export rightly refuses it (``test_export_refusals``, and the kidney search
    test below, show the floors at work).
    """
    monkeypatch.setattr(export, "MIN_OUTPUT_SPREAD", 0.0)
    monkeypatch.setattr(export, "MAX_CLASS_SHARE", 1.0)


def _options(data: Path, tmp_path: Path, **extra: object) -> RunOptions:
    return RunOptions(
        data=data, run_dir=tmp_path / "run", bundle_dir=tmp_path / "bundle", demo=True, progress=False, **extra
    )


def _kidney_sample(shared_data: Path, tmp_path: Path) -> Path:
    """7 slices of each class, numbered far apart: every slice is its own run, so 14 patients."""
    data = tmp_path / "kidney"
    for label in ("Normal", "Stone"):
        (data / label).mkdir(parents=True)
        for number in range(1, 400, 60):
            shutil.copy(shared_data / "kidney_ct" / label / f"{label}- ({number}).jpg", data / label)
    return data


def test_fit_resumes_to_the_same_weights(tmp_path: Path) -> None:
    histories: list[list[dict[str, float]]] = []

    def run(epochs: int, checkpoint: Path, *, resume: bool = False, fingerprint: str = "a") -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        data = torch.utils.data.TensorDataset(
            torch.randn(40, 4, generator=torch.Generator().manual_seed(1)), torch.arange(40) % 2
        )

        def step(network: nn.Module, batch: object, device: torch.device) -> tuple[torch.Tensor, int, int]:
            inputs, labels = batch
            logits = network(inputs)
            return nn.functional.cross_entropy(logits, labels), int((logits.argmax(1) == labels).sum()), len(labels)

        result = fit(
            model,
            optimizer,
            data,
            step,
            FitConfig(
                epochs=epochs,
                batch_size=8,
                checkpoint=checkpoint,
                resume=resume,
                fingerprint=fingerprint,
                progress=False,
                snapshot_every=2,
            ),
            device=torch.device("cpu"),
            generator=torch.Generator().manual_seed(2),
        )
        assert len(result.history) == epochs
        assert len(result.snapshots) == epochs // 2
        histories.append(result.history)
        return {key: value.clone() for key, value in model.state_dict().items()}

    straight = run(4, tmp_path / "straight.pt")
    run(2, tmp_path / "resumed.pt")
    RestoredTime.reset()
    resumed = run(4, tmp_path / "resumed.pt", resume=True)  # picks up at epoch 3 from the 2-epoch run's checkpoint
    assert all(torch.equal(straight[key], resumed[key]) for key in straight)
    # the training time counts the 2 restored epochs as they took in the run that trained them
    earlier = sum(record["seconds"] for record in histories[1])
    assert earlier > 0
    assert RestoredTime.seconds == pytest.approx(earlier)
    assert histories[2][:2] == histories[1]
    with pytest.raises(ValueError, match="belongs to another run"):
        run(4, tmp_path / "resumed.pt", resume=True, fingerprint="b")


def _skin_sample(shared_data: Path, tmp_path: Path) -> tuple[Path, list[dict[str, str]]]:
    """15 benign and 15 malignant ISIC photos with their labels.csv, and their rows."""
    source = shared_data / "skin" / "isic_uda1_250px"
    data = tmp_path / "skin"
    data.mkdir()
    with (source / "labels.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    chosen = [r for r in rows if r["benign_malignant"] == "benign"][:15] + [
        r for r in rows if r["benign_malignant"] == "malignant"
    ][:15]
    with (data / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "benign_malignant"])
        writer.writeheader()
        for row in chosen:
            writer.writerow({"file": row["file"], "benign_malignant": row["benign_malignant"]})
            shutil.copy(source / row["file"], data)
    return data, chosen


def test_skin_run_exports_a_bundle_the_engine_runs_like_training(shared_data: Path, tmp_path: Path) -> None:
    data, chosen = _skin_sample(shared_data, tmp_path)
    outcome = train_skin(_options(data, tmp_path))
    card = outcome.card
    assert card is not None
    assert card.is_demo
    assert card.trained_on.counts["images"] == 30
    assert 0 <= outcome.metrics["accuracy"] <= 1
    # the threshold from the folds' out-of-fold scores, the forest fitted on every photo they scored, none of the test
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    fitted = len(split["train"]) + len(split["validation"])
    assert card.trained_on.counts["train"] == card.trained_on.counts["validation"] == fitted == 30 - len(split["test"])
    assert card.trained_on.counts["validation_folds"] == 5
    assert f"out-of-fold scores of the {fitted} training + validation photos" in card.trained_on.notes
    assert (tmp_path / "run" / "evaluation.txt").read_text().count("paper 003") == 1
    assert (tmp_path / "run" / "roc.png").stat().st_size > 0

    engine = Engine([tmp_path], "cpu")
    [found] = engine.cards("skin_lesion")
    photo = read_photo(data / chosen[0]["file"])
    result = engine.classify_skin(found, photo.rgb, explain=True)
    network = load_networks(found)[0]
    forest = load_forest(found, 1000)
    # the variant chosen on 30 photos may let mirrored and turned views vote: training's route to each view's features
    views = vote_views(found)
    expected = np.mean(
        [
            forest.predict_proba(photo_features(network, [photo.path], torch.device("cpu"), variant=view))[0]
            for view in views
        ],
        axis=0,
    )
    assert result.scores.probabilities["malignant"] == pytest.approx(expected[1], abs=1e-6)
    assert result.views == len(views)
    assert sum(result.votes.values()) == forest.n_estimators * len(views)
    assert result.provenance.demo
    assert result.saliency is not None


def test_skin_validation_set_fits_the_forest_on_training_photos_and_the_threshold_on_validation(
    shared_data: Path, tmp_path: Path
) -> None:
    data, _ = _skin_sample(shared_data, tmp_path)
    card = train_skin(_options(data, tmp_path), SkinSettings(validation_set=True)).card
    assert card is not None
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert card.trained_on.counts["train"] == len(split["train"])
    assert card.trained_on.counts["validation"] == len(split["validation"]) > 0
    assert "validation_folds" not in card.trained_on.counts
    assert f"on {len(split['validation'])} validation photos" in card.trained_on.notes


@pytest.mark.usefixtures("one_epoch_models_export")
def test_kidney_run_exports_a_bundle_the_engine_runs_like_training(shared_data: Path, tmp_path: Path) -> None:
    data = _kidney_sample(shared_data, tmp_path)
    outcome = train_kidney(_options(data, tmp_path, epochs=1, batch_size=4), KidneySettings())
    card = outcome.card
    assert card is not None
    assert card.arch == "kidney_hybrid"
    assert card.input.hu_window == HU_WINDOW
    assert "Recall" in outcome.table
    # the operating point from out-of-fold scores: each non-test scan in one fold, the shipped network on all of them
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    folds = json.loads((tmp_path / "run" / "folds.json").read_text())
    test_patients = {row["patient"] for row in split["test"]}
    fold_patients = [patient for fold in folds for patient in fold]
    assert len(folds) == card.trained_on.counts["validation_folds"] == 3
    assert len(fold_patients) == len(set(fold_patients))
    assert not test_patients & set(fold_patients)
    assert set(fold_patients) <= {row["patient"] for row in split["train"]}
    assert split["validation"] == []
    assert card.trained_on.counts["validation"] == len(fold_patients)  # one slice per patient in this sample
    assert "out-of-fold scores" in card.trained_on.notes
    assert "out-of-fold scores" in card.trained_on.split
    assert {"validation_sensitivity", "validation_specificity"} <= set(card.metrics)
    # the test intervals are over the test scans of each class, not over their slices
    test_classes = {(row["patient"], row["label"]) for row in split["test"]}
    assert card.metrics["interval_positive_patients"] == sum(label == "stone" for _, label in test_classes)
    assert card.metrics["interval_negative_patients"] == sum(label == "normal" for _, label in test_classes)
    assert "95% intervals over the test scans" in card.trained_on.notes

    dataset = load_kidney_data(data)
    network = load_networks(card)[0]
    slices = KidneySlices(dataset, network.mean, network.std)
    picks = np.array([0, len(dataset.labels) - 1])
    expected = stone_probability(network, slices, picks, torch.device("cpu"))
    # the same slices as CT in HU whose window gives back the unit image: the app must compute the same
    low, high = HU_WINDOW
    hu = dataset.unit[picks] * (high - low) + low
    volume = Volume(voxels=hu, spacing=(1.0, 0.7, 0.7), modality="CT")
    result = Engine([tmp_path], "cpu").classify_kidney_slices(card, volume, [0, 1], explain_slices=[1])
    np.testing.assert_allclose(result.probabilities, expected, rtol=1e-4, atol=1e-5)
    assert result.heatmaps[1].values.shape == hu.shape[1:]


@pytest.mark.usefixtures("one_epoch_models_export")
def test_kidney_threshold_folds_0_chooses_the_operating_point_on_one_validation_set(
    shared_data: Path, tmp_path: Path
) -> None:
    data = _kidney_sample(shared_data, tmp_path)
    outcome = train_kidney(_options(data, tmp_path, epochs=1, batch_size=4), KidneySettings(threshold_folds=0))
    card = outcome.card
    assert card is not None
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    validation_patients = {row["patient"] for row in split["validation"]}
    assert len(validation_patients) >= 2  # at least one scan of each class, none of them trained on
    assert not validation_patients & {row["patient"] for row in split["train"]}
    assert not (tmp_path / "run" / "folds.json").exists()
    assert "validation_folds" not in card.trained_on.counts
    assert "validation scans" in card.trained_on.notes
    assert "out-of-fold" not in card.trained_on.notes


@pytest.mark.usefixtures("one_epoch_models_export")
def test_lung_run_exports_an_ensemble_the_engine_runs_like_training(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "lung_sound" / "icbhi_sample"
    data = tmp_path / "icbhi"
    data.mkdir()
    for stem in ("102_1b1_Ar_sc_Meditron", "106_2b1_Pl_mc_LittC2SE"):
        for suffix in (".wav", ".txt"):
            shutil.copy(source / f"{stem}{suffix}", data)
    settings = LungSettings(cycles=2, epochs_per_cycle=1, lopo=True)
    outcome = train_lung(_options(data, tmp_path, batch_size=16), settings)
    card = outcome.card
    assert card is not None
    assert len(card.weights) == 2  # one file per snapshot
    assert set(outcome.metrics) >= {"score", "score_2class", "predicted_classes", "recall/normal"}
    # every cycle scored by an ensemble that never heard its patient, the bundle trained on both
    assert "leave-one-patient-out over 2 patients" in outcome.table
    assert card.trained_on.counts["test"] == card.trained_on.counts["cycles"]
    assert len(list((tmp_path / "run").glob("split-*.json"))) == 2
    assert card.input.extra["min_sample_rate_hz"] == 44100  # both copied recordings are 44.1 kHz (their headers)
    assert "validation_output_spread" in card.metrics

    recording_path = data / "106_2b1_Pl_mc_LittC2SE.wav"
    recording = read_recording(recording_path)
    cycles = read_icbhi_annotations(recording_path.with_suffix(".txt"), duration_s=recording.duration_s)[:3]
    result = Engine([tmp_path], "cpu").classify_lung_sound(card, recording, [(c.start_s, c.end_s) for c in cycles])
    labelled = [c for c in read_icbhi_dataset(data) if c.recording == recording_path.name][:3]
    expected = ensemble_probabilities(load_networks(card), labelled, torch.device("cpu"))
    measured = np.array([[s.probabilities[name] for name in card.class_names] for s in result.scores])
    np.testing.assert_allclose(measured, expected, rtol=1e-4, atol=1e-5)
    assert result.snapshots == 2


def test_cli_asks_for_data_and_verifies_bundles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train_cli(["skin"]) == 2
    assert "--data" in capsys.readouterr().out
    assert train_cli(["verify", str(tmp_path)]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_liver_run_exports_a_bundle_the_engine_runs_like_training(shared_data: Path, tmp_path: Path) -> None:
    cases = tmp_path / "cases.csv"
    cases.write_text(
        "image,mask,liver_labels,patient\n"
        "liver_ct/totalsegmentator/example_ct_sm.nii.gz,liver_ct/totalsegmentator/example_seg.nii.gz,5,ts\n"
        "dicom_ct/dcmqi_ct-3slice,liver_ct/dcmqi/liver.dcm,1,dcmqi\n"
    )
    outcome = train_liver(_options(shared_data, tmp_path, epochs=1, batch_size=4), LiverSettings(cases=str(cases)))
    card = outcome.card
    assert card is not None
    assert card.input.hu_window == (-200.0, 250.0)
    assert {"dice", "voe", "asd_mm", "hausdorff_mm"} <= set(outcome.metrics)
    assert "1 - VOE" in outcome.table

    [case] = [c for c in read_liver_dataset(shared_data, cases) if c.patient == "dcmqi"]
    expected = liver_probability(load_networks(card)[0], case.volume, 1, torch.device("cpu"))
    result = Engine([tmp_path], "cpu").segment_liver(card, case.volume)
    np.testing.assert_allclose(result.probability.astype(np.float32), expected, atol=2e-3)  # the app keeps fp16


def test_liver_augmentation_moves_image_and_mask_together() -> None:
    image = np.zeros((1, 64, 64), dtype=np.float32)
    image[0, 10:30, 20:40] = 1.0
    mask = (image[0] > 0.5).astype(np.int64)
    for seed in range(5):
        warped, warped_mask = _augment(image, mask, np.random.default_rng(seed))
        inside = warped[0][warped_mask == 1]
        assert warped_mask.sum() > 0
        assert inside.mean() > 0.9  # the mask still covers the bright square
        assert warped[0][warped_mask == 0].mean() < 0.1


@pytest.mark.usefixtures("one_epoch_models_export")
def test_covid_run_exports_two_bundles_the_engine_runs_like_training(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "covid_ct" / "COVID-CT-MD"
    data = tmp_path / "covid"
    for folder, patient in (("CAP", "cap001"), ("Normal", "normal001")):  # the two short series
        (data / folder).mkdir(parents=True)
        shutil.copytree(source / folder / patient, data / folder / patient)
    settings = CovidSettings(unet_epochs=1, cnn_epochs=1, lstm_epochs=1)
    outcome = train_covid(_options(data, tmp_path, batch_size=8), settings)
    card, [lung_card] = outcome.card, outcome.extra_cards
    assert card is not None
    assert lung_card is not None
    assert lung_card.bundle_dir == lung_bundle_dir(tmp_path / "bundle")
    assert lung_card.task == "lung_segmentation"
    assert "pseudo-labels" in lung_card.trained_on.notes
    # two patients, one per class: none can be held out, and the report says so and shows the verdict checks
    assert "none held out for the verdict" in outcome.table
    assert "lung pixels shuffled" in outcome.table
    assert "blank series (air)" in outcome.table
    assert card.trained_on.counts["test"] == 0
    assert "untested on unseen patients" in validated_summary(card)
    assert "validation_output_spread" in card.metrics  # the responsiveness measures went into the manifest

    [patient] = [p for p in read_covid_dataset(data) if p.name == "normal001"]
    prepared = prepare_patient(patient)
    engine = Engine([tmp_path], "cpu")
    result = engine.classify_covid(card, prepared.volume)  # classical lung mask: what training used
    network = load_networks(card)[0]
    groups, _ = patient_groups([prepared])
    with torch.no_grad():
        expected = torch.softmax(network(groups).float(), 1).numpy()
    measured = np.array([[g.scores.probabilities[name] for name in card.class_names] for g in result.groups])
    np.testing.assert_allclose(measured, expected, rtol=1e-4, atol=1e-5)
    assert result.kept_slices == prepared.kept

    with_unet = engine.classify_covid(card, prepared.volume, lung_card=lung_card)
    unet_mask = unet_lung_mask(load_networks(lung_card)[0], prepared.volume, torch.device("cpu"))
    assert np.mean(with_unet.lung_mask == unet_mask) > 0.999  # the app keeps fp16 probabilities
    assert with_unet.provenance.demo


_DDP_SCRIPT = """
import sys, torch
from torch import nn
from training.common.loop import FitConfig, fit

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
inputs = torch.randn(64, 4, generator=torch.Generator().manual_seed(1))
data = torch.utils.data.TensorDataset(inputs, torch.arange(64) % 2)

import os
torch.manual_seed(100 + int(os.environ["RANK"]))  # a different dropout/shuffle state per process: only DDP aligns them

def step(network, batch, device):
    logits = network(batch[0])
    return nn.functional.cross_entropy(logits, batch[1]), int((logits.argmax(1) == batch[1]).sum()), len(batch[1])

fit(model, torch.optim.SGD(model.parameters(), lr=0.1), data, step,
    FitConfig(epochs=2, batch_size=8, progress=False), device=torch.device("cpu"))
rank = torch.distributed.get_rank()
torch.save(model.state_dict(), sys.argv[1] + f"/rank{rank}.pt")
"""


def test_fit_under_torchrun_keeps_the_processes_in_step(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", str(script), str(tmp_path)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr[-2000:]
    first, second = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    torch.manual_seed(0)
    initial = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))  # what both processes started from
    assert all(torch.equal(first[key], second[key]) for key in first)  # gradients were averaged across processes
    assert not torch.equal(first["0.weight"], initial.state_dict()["0.weight"])


def test_kidney_search_builds_the_best_trial_and_the_baseline_trains(shared_data: Path, tmp_path: Path) -> None:
    data = _kidney_sample(shared_data, tmp_path)
    # no bundle: a model of one epoch on 14 slices is near-constant, and export would refuse it (as it should)
    options = replace(_options(data, tmp_path, epochs=1, batch_size=4), bundle_dir=None)
    train_kidney(options, KidneySettings(search=2, search_epochs=1))
    with (tmp_path / "run" / "search.csv").open() as handle:
        trials = list(csv.DictReader(handle))
    assert len(trials) == 2
    best = max(trials, key=lambda row: float(row["value"]))
    blocks = int(best["params_blocks"])
    chosen = json.loads((tmp_path / "run" / "architecture.json").read_text())
    assert chosen["filters"] == [int(best[f"params_filters_{i + 1}"]) for i in range(blocks)]
    assert chosen["dense_units"] == int(best["params_dense_units"])

    baseline = train_kidney(
        RunOptions(
            data=data,
            run_dir=tmp_path / "baseline",
            bundle_dir=tmp_path / "baseline-bundle",
            epochs=1,
            batch_size=4,
            progress=False,
        ),
        KidneySettings(baseline=True),
    )
    assert baseline.card is not None
    assert baseline.card.arch == "kidney_transfer"
    assert "transfer-learning baseline" in baseline.table


def test_kidney_cases_become_roi_slices_the_engine_prepares_the_same_way(shared_data: Path, tmp_path: Path) -> None:
    from medview.engine.manifest import DataProvenance, InputSpec
    from medview.models import create_model
    from training.export import export_bundle

    table = tmp_path / "cases.csv"
    table.write_text(
        "image,kidney_mask,label,stone_slices,kidney_labels,patient\n"
        "liver_ct/totalsegmentator/example_ct_sm.nii.gz,"
        "liver_ct/totalsegmentator/example_seg.nii.gz,stone,10-12,2 3,a\n"
    )
    [case] = read_kidney_cases(shared_data, table)
    dataset = kidney_set_from_cases([case], "cases")
    with_kidney = np.flatnonzero(case.kidney.any(axis=(1, 2)))
    assert [int(i.rsplit("#z", 1)[1]) for i in dataset.ids] == with_kidney.tolist()
    assert {int(z) for z, label in zip(with_kidney, dataset.labels, strict=True) if label == 1} == {10, 11, 12}
    assert dataset.unit.shape[1:] == (224, 224)

    network = create_model("kidney_hybrid")  # random weights: the check is that both sides compute the same
    card = export_bundle(
        [network],
        tmp_path / "bundle",
        model_id="kidney-roi-test",
        version="1",
        task="kidney_stone",
        arch="kidney_hybrid",
        arch_args={},
        input_spec=InputSpec(
            modality="CT",
            size=(224, 224),
            channels=3,
            hu_window=HU_WINDOW,
            extra={"mean": list(network.mean), "std": list(network.std)},
        ),
        class_names=("normal", "stone"),
        trained_on=DataProvenance(dataset="test", split="none", counts={}, demo=True),
        metrics={},
        half=False,
    )
    picks = np.array([0, len(dataset.labels) - 1])
    expected = stone_probability(network, KidneySlices(dataset, network.mean, network.std), picks, torch.device("cpu"))
    result = Engine([tmp_path], "cpu").classify_kidney_slices(
        card, case.volume, with_kidney[picks].tolist(), roi=case.kidney, roi_source="kidney mask"
    )
    np.testing.assert_allclose(result.probabilities, expected, rtol=1e-4, atol=1e-5)
    assert result.roi == "kidney mask"


def test_kidney_calibration_folds_platt_scaling_into_the_last_layer_and_keeps_the_ranking(
    shared_data: Path, tmp_path: Path
) -> None:
    from training.kidney.train import calibrate_stone_probability

    dataset = load_kidney_data(_kidney_sample(shared_data, tmp_path))
    torch.manual_seed(0)
    model = create_model("kidney_hybrid", filters=[8, 8, 8, 8, 8], dense_units=6).eval()
    slices = KidneySlices(dataset, model.mean, model.std)
    everything = np.arange(len(dataset.labels))
    with torch.no_grad():
        logits = model(slices.inputs(everything)).numpy()
    margin = logits[:, 1] - logits[:, 0]
    # labels that follow the margin, with noise: the fit must find a positive slope
    noise = np.random.default_rng(0).normal(0, margin.std(), margin.size)
    slices.labels = (margin + noise > np.median(margin)).astype(np.int64)
    slope, intercept = calibrate_stone_probability(model, slices, everything, torch.device("cpu"))
    after = stone_probability(model, slices, everything, torch.device("cpu"))
    assert slope > 0
    np.testing.assert_allclose(after, 1 / (1 + np.exp(-(slope * margin + intercept))), rtol=1e-4, atol=1e-6)
    assert np.all(np.diff(after[np.argsort(margin)]) >= -1e-6)  # the ranking, so every operating point, is kept


def test_relative_data_folders_train_beside_absolute_ones(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README's kidney command gives ``--data ../shared/data/kidney_ct`` while the demo adds the Kaggle folder as an
    absolute path: the slice ids (paths relative to one root) failed with "is not in the subpath"."""
    from training.cli import TASKS, Task
    from training.kidney.data import read_kidney_dataset

    seen: dict[str, Any] = {}

    def record(_task: Task, options: Any, values: dict[str, Any]) -> SimpleNamespace:  # no training: what it got
        seen.update(options=options, values=values)
        return SimpleNamespace(card=None)

    monkeypatch.setattr(Task, "run", record)
    monkeypatch.chdir(shared_data.parent)
    assert TASKS["kidney"].demo_more_data == ("kidney_ct_kaggle",)
    code = train_cli(["kidney", "--demo", "--data", "data/kidney_ct", "--run-dir", str(tmp_path / "run")])
    assert code == 0
    options, values = seen["options"], seen["values"]
    assert options.data == shared_data.resolve() / "kidney_ct"
    dataset = read_kidney_dataset(options.data, *values["more_data"])
    assert {item.split("/")[0] for item in dataset.ids} == {"kidney_ct", "kidney_ct_kaggle"}
