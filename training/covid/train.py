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
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
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
from training.common.losses import classification_step, cross_entropy, dice_ce_loss, segmentation_step
from training.common.metrics import dice_score, multiclass_metrics, normalised_confusion, roc_points
from training.common.report import PaperRow, plot_confusion, plot_history, plot_roc
from training.common.run import RunOptions, TaskOutcome, finish_report, manifest_metrics, start_run
from training.common.seeding import seed_everything
from training.common.splits import Split, patient_split
from training.covid.data import CovidPatient, read_covid_dataset
from training.export import as_shipped, export_bundle

log = logging.getLogger("training.covid")

SIZE = (SLICE_SIZE, SLICE_SIZE)
#: Body Part Examined terms of the chest CT series the paper classifies
BODY_PARTS = ("CHEST", "LUNG", "CHESTABDOMEN", "CHESTABDPELVIS", "WHOLEBODY")
CNN_LR, UNET_LR = 1e-4, 1e-3
MIN_PATIENTS_FOR_VALIDATION = 10
_SHORT = {"covid_pneumonia": "CP", "non_covid_pneumonia": "NCP", "healthy": "healthy"}

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


@dataclass(frozen=True, eq=False)
class PreparedPatient:
    """One patient's series with its classical lung mask and the slices stages 1-2 use."""

    patient: CovidPatient
    volume: Volume
    lung: np.ndarray
    kept: tuple[int, ...]
    slices: np.ndarray  # (len(kept), 256, 256) masked lung-window slices in [0, 1]


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


def train_covid(options: RunOptions, settings: CovidSettings | None = None) -> TaskOutcome:
    """The three stages, the per-patient evaluation and (with ``bundle_dir``) the two bundles."""
    settings = settings or CovidSettings()
    start_run(options, "covid")
    patients = read_covid_dataset(options.data)
    names = [p.name for p in patients]
    split = patient_split(
        [p.label for p in patients],
        names,
        test_fraction=0.2,
        validation_fraction=0.1,
        seed=options.seed,
        min_validation_patients=MIN_PATIENTS_FOR_VALIDATION,
    )
    split.save(options.run_dir / "split.json", names, names, [CLASS_NAMES[p.label] for p in patients])
    prepared = [prepare_patient(patient) for patient in patients]
    for item in prepared:
        log.info(
            "%s (%s): %d slices, %d kept",
            item.patient.name,
            CLASS_NAMES[item.patient.label],
            item.volume.shape[0],
            len(item.kept),
        )
    train = [prepared[i] for i in split.train]
    validation = [prepared[i] for i in split.validation]
    test = [prepared[i] for i in split.test]
    device = options.torch_device()

    unet, unet_history = train_lung_unet(options, settings, train)
    plot_history(options.run_dir / "history-lung-unet.png", unet_history, "stage 0: lung U-Net")
    shipped_unet = as_shipped(unet, options.half).to(device)
    unet_masks = [unet_lung_mask(shipped_unet, p.volume, device) for p in test]
    lung_dice = float(np.mean([dice_score(mask, p.lung) for mask, p in zip(unet_masks, test, strict=True)]))

    identity: dict[str, Any] = {"split": split.digest(names)}
    slices = np.concatenate([p.slices for p in train])
    slice_labels = np.concatenate([[p.patient.label] * len(p.slices) for p in train])
    stage1 = AugmentedSlices(slices, slice_labels, options.seed)
    validate1 = None
    if validation:
        inputs = torch.from_numpy(np.concatenate([p.slices for p in validation])[:, None])
        labels = torch.from_numpy(np.concatenate([[p.patient.label] * len(p.slices) for p in validation]))
        validate1 = _loss_validator(inputs, labels)
    generator = seed_everything(options.seed)
    cnn = create_model("covid_slice_cnn")
    result = fit(
        cnn,
        torch.optim.Adam(cnn.parameters(), lr=CNN_LR),
        stage1,
        classification_step(cross_entropy),
        _stage_config(
            options,
            "slice-cnn",
            identity,
            options.epochs or settings.cnn_epochs,
            32,
            settings.patience,
            bool(validation),
        ),
        device=device,
        validate=validate1,
        generator=generator,
        on_epoch_start=stage1.set_epoch,
    )
    cnn.load_state_dict(result.best_state)
    plot_history(options.run_dir / "history-slice-cnn.png", result.history, "stage 1: slice CNN")

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

    # the chain the app runs with both bundles installed: the trained U-Net's masks, not the classical ones
    # (a patient in whom the U-Net finds no lung gets no verdict, as in the app, and is counted)
    shipped = as_shipped(model, options.half).to(device)
    as_run = [prepare_patient(p.patient, p.volume, mask) for p, mask in zip(test, unet_masks, strict=True)]
    found = [p for p in as_run if p.kept]
    truth = [p.patient.label for p in found]
    if not found:
        raise ValueError("the lung U-Net found no lung in any test patient: train it longer (--unet-epochs)")
    verdicts, mean_probabilities = patient_verdicts(shipped, found, device)
    metrics = multiclass_metrics(truth, verdicts, mean_probabilities, CLASS_NAMES)
    metrics["lung_dice"] = lung_dice
    metrics["patients_without_lung_found"] = float(len(as_run) - len(found))
    classical_verdicts, _ = patient_verdicts(shipped, test, device)
    correct = np.asarray(classical_verdicts) == np.asarray([p.patient.label for p in test])
    metrics["accuracy_classical_masks"] = float(np.mean(correct))
    title = f"COVID-19 CT, per patient, {len(test)} held-out patient(s), lung masks by the trained U-Net"
    table = finish_report(options.run_dir, title, PAPER_ROWS, metrics, "paper 002")
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

    card = lung_card = None
    if options.bundle_dir is not None:
        card, lung_card = _export(options, settings, split, patients, model, unet, metrics)
    return TaskOutcome(metrics, table, card, (lung_card,) if lung_card is not None else ())


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
) -> tuple[ModelCard, ModelCard]:
    assert options.bundle_dir is not None
    names = [p.name for p in patients]
    counts = {name: sum(p.label == i for p in patients) for i, name in enumerate(CLASS_NAMES)}
    provenance = {
        "dataset": f"{options.data.name} (COVID-CT-MD layout)",
        "split": split.provenance(names),
        "counts": {"patients": len(patients), **counts, "train": len(split.train), "test": len(split.test)},
        "demo": options.demo,
    }
    demo = f"demo model trained on {len(split.train)} public patients: not for diagnosis" if options.demo else ""
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
                    [f"{settings.unet_epochs} epochs on classical lung masks (pseudo-labels, no manual masks)", demo],
                )
            ),
        ),
        metrics={"dice_vs_classical_masks": round(metrics["lung_dice"], 4)},
        thresholds={"lung": 0.5},
        half=options.half,
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
            extra={"healthy_class": "healthy"},
            body_parts=BODY_PARTS,
        ),
        class_names=CLASS_NAMES,
        trained_on=DataProvenance(
            **provenance,
            notes="; ".join(
                filter(
                    None,
                    [
                        "slices selected and masked with the classical lung mask; slice labels = patient labels",
                        f"early stopping patience {settings.patience}",
                        demo,
                    ],
                )
            ),
        ),
        metrics=manifest_metrics(metrics),
        thresholds={"switch": SWITCH_THRESHOLD},
        half=options.half,
    )
    return card, lung_card
