"""Paper 002's protocol: lung U-Net, then the slice CNN, then the frozen CNN + biLSTM, then the patient vote.

- Stage 0, lung U-Net (``lung_unet``), trained from scratch on lung-window
  slices (HU [-1000, 400], 256x256, ``segmentation_inputs``) against lung
  masks from the classical method of ``medview.preprocess.chest`` (HU
  threshold, body mask, connected components, hole filling): the public
  samples have no lung masks (MODELS.md), so these are pseudo-labels, and the
  manifest says so.  Cross-entropy + Dice, Adam 1e-3, batch 8 (the paper gives
  no optimiser or batch for it).
- Stages 1-2 take the same classical masks, the ones the U-Net learns to
  reproduce, so the classifier's data do not depend on one U-Net run: slice
  elimination (0.4 at the apex end, 0.9 at the base end), masking, 256x256 in
  the lung window (``select_slices`` + ``prepare_slices``, the app's code).
  Every kept slice carries its patient's label.
- Stage 1, slice CNN (``covid_slice_cnn``): categorical cross-entropy, Adam
  1e-4, 100 epochs, early stopping after 25 epochs without improvement;
  augmentation per slice and epoch: rotation within +-10 degrees, horizontal
  flip, Gaussian blur (sigma up to 1 pixel), brightness x U(0.9, 1.1).
- Stage 2 (``covid_cnn_bilstm``): the stage-1 CNN frozen inside, 50-slice groups
  (``group_slices``: padding and resampling as the paper), cross-entropy,
  Adam 1e-4, 200 epochs, early stopping 25, batch 8 groups (the paper gives
  none).  ``--epochs`` replaces the epochs of stages 1 and 2, not the U-Net's
  (``--unet-epochs``).
- Early stopping watches the validation loss when enough patients leave room
  for a validation set (``MIN_PATIENTS_FOR_VALIDATION``), else the training loss.
- Evaluation per patient, on held-out patients: the groups' probabilities,
  the majority vote with the > 0.9 switch (``patient_vote``), per-class
  accuracy, specificity, sensitivity, F1, and the macro AUC of the patients'
  mean group probabilities; the U-Net's Dice against the classical masks.
- Two bundles: the COVID model (``bundle_dir``) and the lung U-Net
  (``bundle_dir`` + ``-lung-unet``), which the app uses together.

Slice-level labels (the default; ``--paper`` gives every slice its patient's
label, as the paper does).  Where the data carry the radiologists' slice
infection labels (COVID-CT-MD's), stage 1 learns an infected slice as its
patient's class and an uninfected one as healthy: a COVID-19 patient's clear
slices look healthy, and teaching them as COVID-19 teaches the CNN the patient,
not the disease.  Stage 1 then weighs the classes by inverse frequency and
learns at 1e-3 (the paper's 1e-4 left a 30-epoch demo run calling every slice
healthy).  Its probability of "not healthy" is a slice-level
infection score, and its AUC is measured on patients left out of its training
(leave-one-patient-out over the patients with infected and clear slices).

Too few patients for a held-out verdict (a class would have no training
patient left): all patients train every stage, and the report says so; the
verdict is then shown on each training series, on the same series with every
8th slice, on a blank series and on a series whose lung pixels are shuffled,
so a reader sees whether the output moves with the input.  Training time goes
into the manifest.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional
from torch.utils.data import TensorDataset

from medview.engine.manifest import DataProvenance, InputSpec, ModelCard
from medview.engine.pipelines.segmentation import slice_probabilities
from medview.io.volume import Volume
from medview.models import create_model
from medview.models.covid import CLASS_NAMES, GROUP_SLICES, LUNG_CLASSES, SLICE_SIZE
from medview.preprocess.chest import (
    LUNG_WINDOW,
    SWITCH_THRESHOLD,
    classical_lung_mask,
    group_slices,
    patient_vote,
    prepare_slices,
    select_slices,
    superior_at_high_z,
)
from medview.preprocess.image import resize_stack, segmentation_inputs
from training.common.datasets import EpochAugmented
from training.common.loop import FitConfig, Validate, fit
from training.common.losses import (
    classification_step,
    cross_entropy,
    dice_ce_loss,
    inverse_frequency_weights,
    segmentation_step,
    weighted_cross_entropy,
)
from training.common.metrics import dice_score, multiclass_metrics, normalised_confusion, roc_points
from training.common.report import PaperRow, plot_confusion, plot_history, plot_roc
from training.common.run import (
    RunOptions,
    TaskOutcome,
    elapsed_training_seconds,
    finish_report,
    machine_description,
    manifest_metrics,
    start_run,
)
from training.common.seeding import seed_everything
from training.common.splits import Split, patient_split
from training.covid.data import CovidPatient, read_covid_dataset
from training.export import ResponseEvidence, as_shipped, export_bundle

log = logging.getLogger("training.covid")

SIZE = (SLICE_SIZE, SLICE_SIZE)
#: Body Part Examined terms of the chest CT series the paper classifies
BODY_PARTS = ("CHEST", "LUNG", "CHESTABDOMEN", "CHESTABDPELVIS", "WHOLEBODY")
CNN_LR, UNET_LR = 1e-4, 1e-3
#: stage 1's rate with slice labels: 30 demo epochs are ~200 steps, too few for 1e-4 to leave the majority class
SLICE_LABELLED_LR = 1e-3
MIN_PATIENTS_FOR_VALIDATION = 10
_SHORT = {"covid_pneumonia": "CP", "non_covid_pneumonia": "NCP", "healthy": "healthy"}
HEALTHY = CLASS_NAMES.index("healthy")
SPARSE_EVERY = 8  # the sparse copy of a series the verdict table shows: every 8th slice (16 mm for 2 mm slices)

#: paper 002, Tables 1-2 (per patient)
PAPER_ROWS = (
    *(
        PaperRow(f"{metric}/{name}", f"{label} {_SHORT[name]}", value)
        for metric, label, values in (
            ("specificity", "Specificity", (0.983, 0.962, 0.893)),
            ("sensitivity", "Sensitivity", (0.840, 0.939, 0.949)),
            ("accuracy", "Accuracy", (None, None, None)),
            ("f1", "F1", (None, None, None)),
        )
        for name, value in zip(CLASS_NAMES, values, strict=True)
    ),
    PaperRow("macro_auc", "macro AUC", 0.92, unit=""),
    PaperRow("lung_dice", "lung U-Net Dice (vs classical masks)", 0.968),
    PaperRow("accuracy_classical_masks", "accuracy with classical lung masks", None),
    PaperRow("patients_without_lung_found", "test patients without lung found by the U-Net", None, unit=""),
)


@dataclass(frozen=True)
class CovidSettings:
    """Task options beyond :class:`RunOptions` (``medview-train covid --help``)."""

    unet_epochs: int = 30
    cnn_epochs: int = 100
    lstm_epochs: int = 200
    patience: int = 25
    unet_every: int = 1  # train the U-Net on every Nth slice (neighbouring slices are nearly alike)
    paper: bool = False  # every slice carries its patient's label, as in the paper (no slice-level labels)


@dataclass(frozen=True, eq=False)
class PreparedPatient:
    """One patient's series with its classical lung mask and the slices stages 1-2 use."""

    patient: CovidPatient
    volume: Volume
    lung: np.ndarray
    kept: tuple[int, ...]
    slices: np.ndarray  # (len(kept), 256, 256) masked lung-window slices in [0, 1]

    def infected(self) -> np.ndarray | None:
        """The radiologists' infection label of each kept slice, or None where a kept slice has none."""
        files = self.volume.slice_files
        if not self.patient.infection or len(files) != self.volume.shape[0]:
            return None
        names = [Path(files[z]).name for z in self.kept]
        if any(name not in self.patient.infection for name in names):
            return None
        return np.array([self.patient.infection[name] for name in names])

    def has_infected_and_clear_slices(self) -> bool:
        """Whether the kept slices carry both infection labels: what an infection AUC needs."""
        infected = self.infected()
        return infected is not None and bool(infected.any()) and not bool(infected.all())

    def slice_targets(self, paper: bool) -> np.ndarray:
        """Stage 1's class of each kept slice: the patient's, or healthy for a clear slice (module docstring)."""
        infected = None if paper else self.infected()
        targets = np.full(len(self.kept), self.patient.label, dtype=np.int64)
        if infected is not None:
            targets[~infected] = HEALTHY
        return targets


def prepare_patient(
    patient: CovidPatient, volume: Volume | None = None, lung: np.ndarray | None = None
) -> PreparedPatient:
    """Load, mask (classical method unless ``lung`` is given), eliminate and prepare the slices as the app does."""
    volume = volume if volume is not None else patient.load()
    lung = lung if lung is not None else classical_lung_mask(volume.voxels, spacing=volume.spacing)
    selection = select_slices(lung, superior_at_high_z=superior_at_high_z(volume.direction))
    slices = prepare_slices(volume.voxels, lung, selection.kept, size=SLICE_SIZE, window=LUNG_WINDOW)
    return PreparedPatient(patient, volume, lung, tuple(selection.kept), slices)


class AugmentedSlices(EpochAugmented):
    """Stage 1's slices with their patients' labels, augmented per slice and epoch."""

    def __init__(self, slices: np.ndarray, labels: np.ndarray, seed: int) -> None:
        self.slices, self.labels, self.seed = slices, labels, seed

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        rng = self.rng(index)
        image = self.slices[index]
        matrix = cv2.getRotationMatrix2D((SLICE_SIZE / 2, SLICE_SIZE / 2), float(rng.uniform(-10, 10)), 1.0)
        image = cv2.warpAffine(image, matrix, SIZE, flags=cv2.INTER_LINEAR, borderValue=0)
        if rng.random() < 0.5:
            image = image[:, ::-1]
        sigma = float(rng.uniform(0, 1))
        if sigma > 0.1:
            image = cv2.GaussianBlur(np.ascontiguousarray(image), (0, 0), sigma)
        image = np.clip(image * rng.uniform(0.9, 1.1), 0, 1).astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(image[None])), int(self.labels[index])


def _loss_validator(inputs: torch.Tensor, labels: torch.Tensor) -> Validate:
    def validate(network: nn.Module, device: torch.device) -> dict[str, float]:
        losses, correct = [], 0
        for start in range(0, len(labels), 8):
            logits = network(inputs[start : start + 8].to(device)).float()
            target = labels[start : start + 8].to(device)
            losses.append(float(functional.cross_entropy(logits, target, reduction="sum")))
            correct += int((logits.argmax(1) == target).sum())
        return {"loss": sum(losses) / len(labels), "accuracy": correct / len(labels)}

    return validate


def _stage_config(
    options: RunOptions,
    stage: str,
    identity: dict[str, Any],
    epochs: int,
    batch: int,
    patience: int | None,
    validated: bool,
) -> FitConfig:
    return options.fit_config(
        f"covid-{stage}",
        identity,
        epochs=epochs,
        batch_size=options.batch_size or batch,
        monitor="val_loss" if validated else "train_loss",
        minimise=True,
        patience=patience,
    )


def train_lung_unet(
    options: RunOptions, settings: CovidSettings, patients: Sequence[PreparedPatient]
) -> tuple[nn.Module, list[dict[str, float]]]:
    """Stage 0 on every ``unet_every``-th slice of the patients, against their classical masks."""
    names = [prepared.patient.name for prepared in patients]
    inputs, masks = [], []
    for prepared in patients:
        indices = np.arange(0, prepared.volume.shape[0], settings.unet_every)
        inputs.append(segmentation_inputs(prepared.volume.voxels, indices, LUNG_WINDOW, SIZE, 1))
        masks.append(resize_stack(prepared.lung[indices].astype(np.float32), SIZE) >= 0.5)
    data = TensorDataset(torch.from_numpy(np.concatenate(inputs)), torch.from_numpy(np.concatenate(masks)).long())
    generator = seed_everything(options.seed)
    model = create_model("lung_unet")
    result = fit(
        model,
        torch.optim.Adam(model.parameters(), lr=UNET_LR),
        data,
        segmentation_step(dice_ce_loss),
        _stage_config(options, "lung-unet", {"patients": names}, settings.unet_epochs, 8, None, False),
        device=options.torch_device(),
        generator=generator,
    )
    model.load_state_dict(result.best_state)
    return model, result.history


def unet_lung_mask(model: nn.Module, volume: Volume, device: torch.device) -> np.ndarray:
    """The U-Net's lung mask of ``volume`` on its own grid, computed by the app's segmentation code."""
    mask = np.zeros(volume.shape, dtype=bool)
    for start, painted in slice_probabilities(model, volume.voxels, 1, LUNG_WINDOW, SIZE, 1, device):
        mask[start : start + len(painted)] = painted >= 0.5
    return mask


def patient_groups(patients: Sequence[PreparedPatient]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every patient's 50-slice groups (n, 50, 1, 256, 256) and their labels (the patients')."""
    images, labels = [], []
    for prepared in patients:
        for group in group_slices(prepared.slices, prepared.kept, group_size=GROUP_SLICES):
            images.append(group.images[:, None])
            labels.append(prepared.patient.label)
    return torch.from_numpy(np.stack(images)), torch.tensor(labels)


@torch.no_grad()
def patient_verdicts(
    model: nn.Module, patients: Sequence[PreparedPatient], device: torch.device
) -> tuple[list[int], np.ndarray]:
    """Each patient's voted class and the mean of its groups' probabilities."""
    model.eval()
    verdicts, means = [], []
    for prepared in patients:
        groups, _ = patient_groups([prepared])
        probabilities = np.stack(
            [torch.softmax(model(group[None].to(device)).float(), 1)[0].cpu().numpy() for group in groups]
        )
        vote = patient_vote(probabilities, CLASS_NAMES, healthy="healthy", switch_threshold=SWITCH_THRESHOLD)
        verdicts.append(CLASS_NAMES.index(vote.label))
        means.append(probabilities.mean(axis=0))
    return verdicts, np.stack(means)


def train_slice_cnn(
    options: RunOptions,
    settings: CovidSettings,
    train: Sequence[PreparedPatient],
    validation: Sequence[PreparedPatient],
    identity: dict[str, Any],
    stage: str,
) -> tuple[nn.Module, list[dict[str, float]]]:
    """Stage 1 on ``train``'s kept slices with their slice targets (:meth:`PreparedPatient.slice_targets`)."""
    slices = np.concatenate([p.slices for p in train])
    slice_labels = np.concatenate([p.slice_targets(settings.paper) for p in train])
    stage1 = AugmentedSlices(slices, slice_labels, options.seed)
    loss = cross_entropy
    if not settings.paper:  # inverse class frequencies: 116 clear slices against 30 CAP ones taught "healthy"
        loss = partial(weighted_cross_entropy, weights=inverse_frequency_weights(slice_labels, len(CLASS_NAMES)))
    validate = None
    if validation:
        inputs = torch.from_numpy(np.concatenate([p.slices for p in validation])[:, None])
        labels = torch.from_numpy(np.concatenate([p.slice_targets(settings.paper) for p in validation]))
        validate = _loss_validator(inputs, labels)
    generator = seed_everything(options.seed)
    cnn = create_model("covid_slice_cnn")
    result = fit(
        cnn,
        torch.optim.Adam(cnn.parameters(), lr=CNN_LR if settings.paper else SLICE_LABELLED_LR),
        stage1,
        classification_step(loss),
        _stage_config(
            options,
            stage,
            {**identity, "patients": [p.patient.name for p in train], "paper": settings.paper},
            options.epochs or settings.cnn_epochs,
            32,
            settings.patience,
            bool(validation),
        ),
        device=options.torch_device(),
        validate=validate,
        generator=generator,
        on_epoch_start=stage1.set_epoch,
    )
    cnn.load_state_dict(result.best_state)
    return cnn, result.history


@torch.no_grad()
def infection_auc(cnn: nn.Module, prepared: PreparedPatient, device: torch.device) -> float:
    """The AUC of stage 1's P(not healthy) against the radiologists' infection labels of a patient's kept slices.

    NaN when the patient has no labels or only one kind of slice.
    """
    if not prepared.has_infected_and_clear_slices():
        return math.nan
    infected = prepared.infected()
    cnn.eval()
    healthy = []
    for start in range(0, len(prepared.slices), 32):
        inputs = torch.from_numpy(prepared.slices[start : start + 32, None]).to(device)
        healthy.append(torch.softmax(cnn(inputs).float(), 1)[:, HEALTHY].cpu().numpy())
    return roc_points(infected, 1 - np.concatenate(healthy))[2]


def _held_out_split(patients: Sequence[CovidPatient], seed: int) -> tuple[Split, bool]:
    """The patient split, and whether it holds out test patients while every class keeps a training patient."""
    names = [p.name for p in patients]
    labels = [p.label for p in patients]
    split = patient_split(
        labels,
        names,
        test_fraction=0.2,
        validation_fraction=0.1,
        seed=seed,
        min_validation_patients=MIN_PATIENTS_FOR_VALIDATION,
    )
    if len(split.test) and {labels[i] for i in split.train} == set(labels):
        return split, True
    everyone = np.arange(len(patients))
    nothing = np.zeros(0, dtype=int)
    described = (
        "all patients train every stage: with one patient of a class, holding it out leaves the class untrained, "
        "so no patient is held out for the verdict"
    )
    return Split(everyone, nothing, nothing, described), False


def train_covid(options: RunOptions, settings: CovidSettings | None = None) -> TaskOutcome:
    """The three stages, the evaluation and (with ``bundle_dir``) the two bundles."""
    settings = settings or CovidSettings()
    started = time.perf_counter()
    start_run(options, "covid")
    patients = read_covid_dataset(options.data)
    names = [p.name for p in patients]
    split, held_out = _held_out_split(patients, options.seed)
    split.save(options.run_dir / "split.json", names, names, [CLASS_NAMES[p.label] for p in patients])
    prepared = [prepare_patient(patient) for patient in patients]
    for item in prepared:
        infected = item.infected()
        log.info(
            "%s (%s): %d slices, %d kept%s",
            item.patient.name,
            CLASS_NAMES[item.patient.label],
            item.volume.shape[0],
            len(item.kept),
            "" if infected is None else f", {int(infected.sum())} of them infected",
        )
    train = [prepared[i] for i in split.train]
    validation = [prepared[i] for i in split.validation]
    test = [prepared[i] for i in split.test]
    device = options.torch_device()

    unet, unet_history = train_lung_unet(options, settings, train)
    plot_history(options.run_dir / "history-lung-unet.png", unet_history, "stage 0: lung U-Net")
    shipped_unet = as_shipped(unet, options.half).to(device)
    dice_on = test if held_out else train
    unet_masks = [unet_lung_mask(shipped_unet, p.volume, device) for p in dice_on]
    lung_dice = float(np.mean([dice_score(mask, p.lung) for mask, p in zip(unet_masks, dice_on, strict=True)]))

    identity: dict[str, Any] = {"split": split.digest(names)}
    metrics: dict[str, float] = {}
    if not settings.paper and not held_out:  # the slice CNN's infection score on patients it has not seen
        for patient in train:
            if patient.has_infected_and_clear_slices():
                others = [p for p in train if p is not patient]
                without, _ = train_slice_cnn(
                    options, settings, others, [], identity, f"slice-cnn-without-{patient.patient.name}"
                )
                metrics[f"infection_auc/{patient.patient.name}"] = infection_auc(without, patient, device)
    cnn, history = train_slice_cnn(options, settings, train, validation, identity, "slice-cnn")
    plot_history(options.run_dir / "history-slice-cnn.png", history, "stage 1: slice CNN")
    for patient in test:
        auc = infection_auc(cnn, patient, device)
        if not math.isnan(auc):
            metrics[f"infection_auc/{patient.patient.name}"] = auc
    aucs = [value for key, value in metrics.items() if key.startswith("infection_auc/")]
    if aucs:
        metrics["infection_auc"] = float(np.mean(aucs))

    groups, group_labels = patient_groups(train)
    validate2 = None
    if validation:
        validation_groups, validation_labels = patient_groups(validation)
        validate2 = _loss_validator(validation_groups, validation_labels)
    generator = seed_everything(options.seed)
    model = create_model("covid_cnn_bilstm")
    model.load_slice_cnn(cnn.state_dict())
    result = fit(
        model,
        torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=CNN_LR),
        TensorDataset(groups, group_labels),
        classification_step(cross_entropy),
        _stage_config(
            options,
            "cnn-bilstm",
            identity,
            options.epochs or settings.lstm_epochs,
            8,
            settings.patience,
            bool(validation),
        ),
        device=device,
        validate=validate2,
        generator=generator,
    )
    model.load_state_dict(result.best_state)
    plot_history(options.run_dir / "history-cnn-bilstm.png", result.history, "stage 2: CNN + biLSTM")
    shipped = as_shipped(model, options.half).to(device)
    metrics["lung_dice"] = lung_dice

    if held_out:
        table = _held_out_report(options, shipped, test, unet_masks, metrics, device)
    else:
        checks = verdict_checks(shipped, train, device)
        (options.run_dir / "verdicts.txt").write_text(checks + "\n", encoding="utf-8")
        rows = [
            PaperRow(key, f"slice infection AUC, {key.split('/', 1)[1]} held out of stage 1", None, unit="")
            for key in metrics
            if key.startswith("infection_auc/")
        ]
        rows += [
            PaperRow("infection_auc", "slice infection AUC, mean over held-out patients", None, unit=""),
            PaperRow("lung_dice", "lung U-Net Dice on its training series (vs classical masks)", None),
        ]
        title = f"COVID-19 CT, {len(train)} patients, none held out for the verdict ({split.description})"
        table = finish_report(options.run_dir, title, rows, metrics, "paper 002") + "\n\n" + checks
        log.info("\n%s", checks)
    metrics["training_seconds"] = elapsed_training_seconds(started)

    card = lung_card = None
    if options.bundle_dir is not None:
        blank = torch.zeros((1, GROUP_SLICES, 1, *SIZE), device=device)
        with torch.no_grad():
            blank_probabilities = torch.softmax(shipped(blank).float(), 1)[0].cpu().numpy()
            group_probabilities = np.concatenate(
                [torch.softmax(shipped(g[None].to(device)).float(), 1).cpu().numpy() for g in groups]
            )
        evidence = ResponseEvidence(
            probabilities=group_probabilities, labels=group_labels.numpy(), blank=blank_probabilities
        )
        spacings = [float(p.volume.spacing[0]) for p in prepared]
        card, lung_card = _export(
            options, settings, split, patients, model, unet, metrics, held_out, evidence, spacings
        )
    log.info("training took %.0f s", metrics["training_seconds"])
    return TaskOutcome(metrics, table, card, (lung_card,) if lung_card is not None else ())


def _held_out_report(
    options: RunOptions,
    shipped: nn.Module,
    test: Sequence[PreparedPatient],
    unet_masks: Sequence[np.ndarray],
    metrics: dict[str, float],
    device: torch.device,
) -> str:
    """Paper 002's per-patient table on the test patients, through the trained U-Net's masks as the app runs."""
    # a patient in whom the U-Net finds no lung gets no verdict, as in the app, and is counted
    as_run = [prepare_patient(p.patient, p.volume, mask) for p, mask in zip(test, unet_masks, strict=True)]
    found = [p for p in as_run if p.kept]
    truth = [p.patient.label for p in found]
    if not found:
        raise ValueError("the lung U-Net found no lung in any test patient: train it longer (--unet-epochs)")
    verdicts, mean_probabilities = patient_verdicts(shipped, found, device)
    metrics.update(multiclass_metrics(truth, verdicts, mean_probabilities, CLASS_NAMES))
    metrics["patients_without_lung_found"] = float(len(as_run) - len(found))
    classical_verdicts, _ = patient_verdicts(shipped, test, device)
    correct = np.asarray(classical_verdicts) == np.asarray([p.patient.label for p in test])
    metrics["accuracy_classical_masks"] = float(np.mean(correct))
    title = f"COVID-19 CT, per patient, {len(test)} held-out patient(s), lung masks by the trained U-Net"
    rows = (*PAPER_ROWS, PaperRow("infection_auc", "slice infection AUC (held-out patients)", None, unit=""))
    table = finish_report(options.run_dir, title, rows, metrics, "paper 002")
    plot_confusion(
        options.run_dir / "confusion.png",
        normalised_confusion(truth, verdicts, len(CLASS_NAMES)),
        CLASS_NAMES,
        "patients",
    )
    curves = {}
    for index, name in enumerate(CLASS_NAMES):
        positives = np.asarray(truth) == index
        if 0 < positives.sum() < len(truth):
            curves[name] = roc_points(positives, mean_probabilities[:, index])
    if curves:
        plot_roc(options.run_dir / "roc.png", curves, "COVID-19 CT, per patient")
    return table


def _variants(prepared: PreparedPatient, seed: int) -> list[tuple[str, PreparedPatient | None]]:
    """The series as trained, every 8th slice of it, and its kept slices with their lung pixels shuffled."""
    volume = prepared.volume
    sparse_volume = replace(
        volume,
        voxels=volume.voxels[::SPARSE_EVERY],
        spacing=(volume.spacing[0] * SPARSE_EVERY, *volume.spacing[1:]),
        slice_files=volume.slice_files[::SPARSE_EVERY],
        slice_uids=volume.slice_uids[::SPARSE_EVERY],
        missing_slices=frozenset(),
    )
    sparse = prepare_patient(prepared.patient, sparse_volume, prepared.lung[::SPARSE_EVERY])
    rng = np.random.default_rng(seed)
    shuffled_slices = prepared.slices.copy()
    for image in shuffled_slices:
        inside = image > 0
        image[inside] = rng.permutation(image[inside])
    shuffled = replace(prepared, slices=shuffled_slices)
    name = prepared.patient.name
    return [
        (f"{name} (training series)", prepared),
        (f"{name}, every {SPARSE_EVERY}th slice", sparse if sparse.kept else None),
        (f"{name}, lung pixels shuffled", shuffled),
    ]


def verdict_checks(model: nn.Module, patients: Sequence[PreparedPatient], device: torch.device, seed: int = 0) -> str:
    """Whether the output moves with the input: the verdict on each series, a sparse copy, a shuffled copy,
    and a blank series, with the mean group probabilities and how much of the groups is padding."""
    header = ("series", "truth", "verdict", *(_SHORT[name] for name in CLASS_NAMES), "groups (padding)")
    lines = [header]
    blank_volume = replace(patients[0].volume, voxels=np.full_like(patients[0].volume.voxels, -1000))
    blank_lung = classical_lung_mask(blank_volume.voxels, spacing=blank_volume.spacing)
    candidates: list[tuple[str, int | None, PreparedPatient | None]] = []
    for prepared in patients:
        for name, variant in _variants(prepared, seed):
            candidates.append((name, None if "shuffled" in name else prepared.patient.label, variant))
    blank = prepare_patient(patients[0].patient, blank_volume, blank_lung)
    candidates.append(("blank series (air)", None, blank if blank.kept else None))
    for name, truth, variant in candidates:
        truth_text = _SHORT[CLASS_NAMES[truth]] if truth is not None else "-"
        if variant is None:
            lines.append((name, truth_text, "no verdict: no lung found", "-", "-", "-", "-"))
            continue
        [verdict], [mean] = patient_verdicts(model, [variant], device)
        padding = [
            sum(source is None for source in group.sources) / len(group.sources)
            for group in group_slices(variant.slices, variant.kept, group_size=GROUP_SLICES)
        ]
        lines.append(
            (
                name,
                truth_text,
                _SHORT[CLASS_NAMES[verdict]],
                *(f"{value:.2f}" for value in mean),
                f"{len(padding)} ({max(padding):.0%} max)",
            )
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    rule = "  ".join("-" * w for w in widths)
    text = ["  ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(["Verdicts: does the output move with the input?", rule, text[0], rule, *text[1:], rule])


def lung_bundle_dir(bundle_dir: Path) -> Path:
    """Where the lung U-Net bundle goes beside the COVID bundle."""
    return bundle_dir.parent / f"{bundle_dir.name}-lung-unet"


def _export(
    options: RunOptions,
    settings: CovidSettings,
    split: Split,
    patients: Sequence[CovidPatient],
    model: nn.Module,
    unet: nn.Module,
    metrics: dict[str, float],
    held_out: bool,
    evidence: ResponseEvidence,
    spacings: Sequence[float],
) -> tuple[ModelCard, ModelCard]:
    assert options.bundle_dir is not None
    names = [p.name for p in patients]
    counts = {name: sum(p.label == i for p in patients) for i, name in enumerate(CLASS_NAMES)}
    labelled = sum(bool(p.infection) for p in patients)
    provenance = {
        "dataset": f"{options.data.name} (COVID-CT-MD layout)",
        "split": split.provenance(names),
        "counts": {
            "patients": len(patients),
            **counts,
            "train": len(split.train),
            "test": len(split.test),
            "slice_labelled_patients": labelled,
        },
        "demo": options.demo,
    }
    demo = f"demo model trained on {len(split.train)} public patients: not for diagnosis" if options.demo else ""
    minutes = f"training took {metrics['training_seconds'] / 60:.0f} min on {machine_description()}"
    dice_note = "" if held_out else "Dice measured on its training series (no patient held out)"
    lung_card = export_bundle(
        [unet],
        lung_bundle_dir(options.bundle_dir),
        model_id="covid-lung-unet",
        version=options.version,
        task="lung_segmentation",
        arch="lung_unet",
        arch_args={},
        input_spec=InputSpec(modality="CT", size=SIZE, channels=1, hu_window=LUNG_WINDOW, body_parts=BODY_PARTS),
        class_names=LUNG_CLASSES,
        trained_on=DataProvenance(
            **provenance,
            notes="; ".join(
                filter(
                    None,
                    [
                        f"{settings.unet_epochs} epochs on classical lung masks (pseudo-labels, no manual masks)",
                        dice_note,
                        demo,
                    ],
                )
            ),
        ),
        metrics={"dice_vs_classical_masks": round(metrics["lung_dice"], 4)},
        thresholds={"lung": 0.5},
        half=options.half,
    )
    labels_note = (
        "every slice carries its patient's label (the paper's setting, --paper)"
        if settings.paper or not labelled
        else "stage 1 learns infected slices as the patient's class and clear slices as healthy "
        "(radiologists' slice labels; the paper gives every slice its patient's label)"
    )
    verdict_note = (
        ""
        if held_out
        else f"no patient held out for the verdict ({len(split.train)} patients, one or fewer per class): the "
        "verdict is untested on unseen patients; slice infection AUC measured leaving each patient out of stage 1"
    )
    card = export_bundle(
        [model],
        options.bundle_dir,
        model_id="covid-cnn-bilstm",
        version=options.version,
        task="covid_ct",
        arch="covid_cnn_bilstm",
        arch_args={"group_slices": GROUP_SLICES},
        input_spec=InputSpec(
            modality="CT",
            size=SIZE,
            channels=1,
            hu_window=LUNG_WINDOW,
            extra={
                "healthy_class": "healthy",
                "slice_spacing_mm": list(_validated_spacing(spacings)),
                "min_slices": GROUP_SLICES,
            },
            body_parts=BODY_PARTS,
        ),
        class_names=CLASS_NAMES,
        trained_on=DataProvenance(
            **provenance,
            notes="; ".join(
                filter(
                    None,
                    [
                        "slices selected and masked with the classical lung mask",
                        labels_note,
                        f"early stopping patience {settings.patience}",
                        verdict_note,
                        minutes,
                        demo,
                    ],
                )
            ),
        ),
        metrics=manifest_metrics(metrics),
        thresholds={"switch": SWITCH_THRESHOLD},
        half=options.half,
        evidence=evidence,
    )
    return card, lung_card


def _validated_spacing(spacings: Sequence[float]) -> tuple[float, float]:
    """The slice spacing range (mm) of the training series, widened to the 0.5-3 mm of thin-slice chest CT."""
    return min(0.5, min(spacings)), max(3.0, max(spacings))
