"""Paper 001's protocol: the EAS U-Net on axial slices, cross-entropy + Dice on every output.

- Slices: HU clipped to [-200, 250] and scaled to [0, 1], resized to 256x256
  (``segmentation_inputs``, the app's own code; 3 adjacent slices as channels
  with ``channels`` = 3); slices with less than 1.5% liver are left out of
  training (all slices are segmented when evaluating).  Masks are resized by
  area and thresholded at 0.5.
- Augmentation, drawn per slice and epoch from the seed: a random crop (80-100%
  of the side, anywhere in the slice) zoomed back to 256, horizontal and
  vertical flips, a rotation within +-15 degrees, one affine warp for image
  (bilinear) and mask (nearest).
- Loss: cross-entropy + soft Dice of the liver class, on the fused output and
  on each of the 4 side outputs (deep supervision), summed with equal weights.
- SGD, lr 0.01, momentum 0.9, weight decay 1e-4, batch 32, 50 epochs; split by
  patient (20% test, 10% of the rest for validation when there are enough
  patients); the weights with the best validation Dice are kept.
- Evaluation per volume on the CT's own grid and spacing: DSC, VOE, ASD,
  precision, recall, Hausdorff (and HD95), averaged over the test volumes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from medview.engine.manifest import DataProvenance, InputSpec
from medview.engine.pipelines.segmentation import slice_probabilities
from medview.io.volume import Volume
from medview.models import create_model
from medview.preprocess.image import resize_stack, segmentation_inputs
from training.common.datasets import EpochAugmented
from training.common.loop import fit
from training.common.losses import dice_ce_loss, segmentation_step
from training.common.metrics import dice_score, segmentation_metrics
from training.common.report import PaperRow, plot_history
from training.common.run import RunOptions, TaskOutcome, finish_report, manifest_metrics, start_run
from training.common.seeding import seed_everything
from training.common.splits import official_split, patient_split
from training.export import as_shipped, export_bundle
from training.liver.data import LiverCase, read_liver_dataset

log = logging.getLogger("training.liver")

HU_WINDOW = (-200.0, 250.0)
INPUT_SIZE = 256
#: Body Part Examined terms the liver is imaged under: abdominal CT, and chest CT reaching the upper abdomen
BODY_PARTS = ("ABDOMEN", "LIVER", "CHEST", "CHESTABDOMEN", "ABDOMENPELVIS", "CHESTABDPELVIS", "WHOLEBODY")
MIN_LIVER_FRACTION = 0.015
EPOCHS, BATCH, LEARNING_RATE, MOMENTUM, WEIGHT_DECAY = 50, 32, 0.01, 0.9, 1e-4
CLASS_NAMES = ("background", "liver")

PAPER_ROWS = (
    PaperRow("dice", "DSC", 0.9220),
    PaperRow("voe", "VOE", None),
    PaperRow("jaccard", "1 - VOE (the paper's 'VOE' column)", 0.9305),
    PaperRow("asd_mm", "ASD", 7.65, unit="mm"),
    PaperRow("precision", "Precision", None),
    PaperRow("recall", "Recall", None),
    PaperRow("hausdorff_mm", "Hausdorff", None, unit="mm"),
    PaperRow("hd95_mm", "HD95", None, unit="mm"),
)


@dataclass(frozen=True)
class LiverSettings:
    """Task options beyond :class:`RunOptions` (``medview-train liver --help``)."""

    cases: str | None = None  # a cases.csv listing image/mask pairs relative to the data folder
    channels: int = 1  # 3: the slice with its neighbours (2.5-D)
    base_channels: int = 32


class LiverSlices(EpochAugmented):
    """Training slices (enough liver) of the given cases with their masks, augmented per epoch."""

    def __init__(self, cases: Sequence[LiverCase], channels: int, seed: int, *, augment: bool = True) -> None:
        inputs, masks = [], []
        size = (INPUT_SIZE, INPUT_SIZE)
        for case in cases:
            fractions = case.liver.reshape(case.liver.shape[0], -1).mean(axis=1)
            kept = np.flatnonzero(fractions >= MIN_LIVER_FRACTION)
            if kept.size == 0:
                continue
            inputs.append(segmentation_inputs(case.volume.voxels, kept, HU_WINDOW, size, channels))
            masks.append(resize_stack(case.liver[kept].astype(np.float32), size) >= 0.5)
        if not inputs:
            raise ValueError(f"no training slice has {MIN_LIVER_FRACTION:.1%} liver or more")
        self.inputs = np.concatenate(inputs)
        self.masks = np.concatenate(masks).astype(np.int64)
        self.seed, self.augment = seed, augment

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.inputs[index], self.masks[index]
        if self.augment:
            image, mask = _augment(image, mask, self.rng(index))
        return torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(np.ascontiguousarray(mask))


def _augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random crop zoomed back, flips and a small rotation, as one affine warp of image and mask."""
    size = image.shape[-1]
    scale = float(rng.uniform(0.8, 1.0))
    half = size * scale / 2
    centre = rng.uniform(half, size - half, 2)  # the crop stays inside the slice
    angle = float(rng.uniform(-15, 15))
    matrix = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, 1 / scale)
    matrix[:, 2] += size / 2 - centre  # the crop's centre lands on the output's centre
    flip_x, flip_y = rng.random() < 0.5, rng.random() < 0.5

    def warp(plane: np.ndarray, interpolation: int) -> np.ndarray:
        out = cv2.warpAffine(plane, matrix, (size, size), flags=interpolation, borderValue=0)
        return out[:: -1 if flip_y else 1, :: -1 if flip_x else 1]

    image = np.stack([warp(channel, cv2.INTER_LINEAR) for channel in image])
    mask = warp(mask.astype(np.uint8), cv2.INTER_NEAREST).astype(np.int64)
    return image, mask


def liver_probability(model: nn.Module, volume: Volume, channels: int, device: torch.device) -> np.ndarray:
    """P(liver) of every voxel of ``volume``, computed by the app's own segmentation code."""
    probability = np.zeros(volume.shape, dtype=np.float32)
    size = (INPUT_SIZE, INPUT_SIZE)
    for start, painted in slice_probabilities(model, volume.voxels, 1, HU_WINDOW, size, channels, device):
        probability[start : start + len(painted)] = painted
    return probability


def evaluate_cases(
    model: nn.Module, cases: Sequence[LiverCase], channels: int, device: torch.device
) -> dict[str, float]:
    """Paper 001's metrics per volume, averaged; ``jaccard`` is 1 - VOE."""
    per_case = []
    for case in cases:
        predicted = liver_probability(model, case.volume, channels, device) >= 0.5
        metrics = segmentation_metrics(predicted, case.liver, case.volume.spacing)
        metrics["jaccard"] = 1 - metrics["voe"]
        log.info("%s: %s", case.name, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        per_case.append(metrics)
    return {key: float(np.mean([m[key] for m in per_case])) for key in per_case[0]}


def train_liver(options: RunOptions, settings: LiverSettings | None = None) -> TaskOutcome:
    """Train the EAS U-Net, evaluate per volume, export with ``bundle_dir``."""
    settings = settings or LiverSettings()
    start_run(options, "liver")
    cases = read_liver_dataset(options.data, options.data / settings.cases if settings.cases else None)
    patients = [case.patient for case in cases]
    log.info("%s: %d volumes of %d patients", options.data, len(cases), len(set(patients)))
    sides = [case.official_side for case in cases]
    split = official_split(sides, patients, "fixed by the side column of the cases table") or patient_split(
        [0] * len(cases), patients, test_fraction=0.2, validation_fraction=0.1, seed=options.seed
    )
    names = [case.name for case in cases]
    split.save(options.run_dir / "split.json", names, patients, ["liver"] * len(cases))
    train_cases = [cases[i] for i in split.train]
    validation_cases = [cases[i] for i in split.validation]
    test_cases = [cases[i] for i in split.test]

    generator = seed_everything(options.seed)
    device = options.torch_device()
    data = LiverSlices(train_cases, settings.channels, options.seed)
    model = create_model("liver_eas_unet", in_channels=settings.channels, base_channels=settings.base_channels)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    epochs = options.epochs or EPOCHS

    def validate(network: nn.Module, device: torch.device) -> dict[str, float]:  # Dice only: no surface distances
        dice = [
            dice_score(liver_probability(network, case.volume, settings.channels, device) >= 0.5, case.liver)
            for case in validation_cases
        ]
        return {"dice": float(np.mean(dice))}

    result = fit(
        model,
        optimizer,
        data,
        segmentation_step(dice_ce_loss),
        options.fit_config(
            "liver",
            {"split": split.digest(names), "channels": settings.channels, "base": settings.base_channels},
            epochs=epochs,
            batch_size=options.batch_size or BATCH,
            monitor="val_dice",
        ),
        device=device,
        validate=validate if validation_cases else None,
        generator=generator,
        on_epoch_start=data.set_epoch,
    )
    model.load_state_dict(result.best_state)
    plot_history(options.run_dir / "history.png", result.history, "liver EAS U-Net")
    metrics = evaluate_cases(as_shipped(model, options.half).to(device), test_cases, settings.channels, device)
    title = f"Liver segmentation, EAS U-Net, per volume, mean of {len(test_cases)} test volume(s)"
    table = finish_report(options.run_dir, title, PAPER_ROWS, metrics, "paper 001 (LiTS)")

    card = None
    if options.bundle_dir is not None:
        card = export_bundle(
            [model],
            options.bundle_dir,
            model_id="liver-eas-unet",
            version=options.version,
            task="liver_segmentation",
            arch="liver_eas_unet",
            arch_args={"in_channels": settings.channels, "base_channels": settings.base_channels},
            input_spec=InputSpec(
                modality="CT",
                size=(INPUT_SIZE, INPUT_SIZE),
                channels=settings.channels,
                hu_window=HU_WINDOW,
                body_parts=BODY_PARTS,
            ),
            class_names=CLASS_NAMES,
            trained_on=DataProvenance(
                dataset=f"{options.data.name} ({Path(settings.cases).name if settings.cases else 'LiTS layout'})",
                split=split.provenance(names),
                counts={
                    "volumes": len(cases),
                    "patients": len(set(patients)),
                    "training_slices": len(data),
                    "test_volumes": len(test_cases),
                },
                demo=options.demo,
                notes=_notes(options, epochs, train_cases),
            ),
            metrics=manifest_metrics(metrics),
            thresholds={"liver": 0.5},
            half=options.half,
        )
        log.info("bundle written: %s", options.bundle_dir)
    return TaskOutcome(metrics, table, card)


def _notes(options: RunOptions, epochs: int, cases: Sequence[LiverCase]) -> str:
    parts = [f"{epochs} epochs" + ("" if epochs == EPOCHS else f" (paper: {EPOCHS})")]
    if options.demo:
        parts.append(
            f"demo model trained on {len(cases)} public CT volumes whose masks are TotalSegmentator output or "
            "dcmqi examples, not LiTS: not for diagnosis"
        )
    return "; ".join(parts)
