"""Paper 000's protocol: the hybrid CNN (or the transfer-learning baseline) on patient-level folds.

- Folds: 6 stratified patient-level folds; the first with both classes is the
  hold-out set, the other 5 are the CV5 folds (``cv``).  A dataset's own
  train/test folders are not used: the paper's scheme needs its 6 folds.  10% of each training
  set's patients are held for validation; the weights with the best validation
  accuracy are kept.
- Hybrid: Adam, lr 1e-4, 50 epochs, batch 32, cross-entropy; only the custom
  branch and the head are trained (the ImageNet branch is frozen).
- Baseline (``baseline``): the whole ImageNet network fine-tuned at 1e-4, its
  new 2-class layer at 10x that.
- Search (``search`` trials): the paper's Bayesian optimisation of the custom
  branch with Optuna's TPE sampler, 30 trials in the paper, over the number of
  core blocks, the filters of each (32..256, step 32) and the first dense layer
  (30..150 units); each trial trains ``search_epochs`` epochs and is scored by
  validation accuracy, and the best architecture is then trained in full.
  5 to 7 blocks: fewer than 5 pools cannot bring 224 down to the 7x7 the
  fusion needs.  The search sees the patients of the CV5 folds (not the
  hold-out's), as an architecture chosen once before cross-validation does.
- Slices are prepared by the app's own code (``grey_batch``); an 8-bit export
  is taken as already windowed (pixel / 255).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from medview.engine.manifest import DataProvenance, InputSpec
from medview.models import create_model
from medview.models.backbones import backbone_spec
from medview.models.kidney import DEFAULT_BACKBONE, DENSE_UNITS, FILTERS, INPUT_SIZE
from medview.preprocess.image import grey_batch
from training.common.loop import fit
from training.common.losses import classification_step, cross_entropy
from training.common.metrics import binary_metrics, normalised_confusion, roc_points
from training.common.report import PaperRow, plot_confusion, plot_history, plot_roc
from training.common.run import (
    RunOptions,
    TaskOutcome,
    finish_report,
    imagenet_weights,
    manifest_metrics,
    start_run,
)
from training.common.seeding import seed_everything
from training.common.splits import Split, cross_validation_folds, first_fold_with_every_class, holdout
from training.export import as_shipped, export_bundle
from training.kidney.data import CLASS_NAMES, HU_WINDOW, KidneySet, load_kidney_data

#: Body Part Examined terms of the CT series kidney stones are read on
BODY_PARTS = ("ABDOMEN", "KIDNEY", "ABDOMENPELVIS", "CHESTABDPELVIS", "WHOLEBODY")

log = logging.getLogger("training.kidney")

POSITIVE = CLASS_NAMES.index("stone")
EPOCHS, BATCH, LEARNING_RATE, HEAD_LR_FACTOR = 50, 32, 1e-4, 10
FOLDS, VALIDATION_FRACTION = 6, 0.1

#: paper 000, Table II, "Proposed (ResNet18-based)": hold-out and CV5 columns
PAPER_HOLDOUT = {
    "accuracy": 0.979,
    "recall": 0.982,
    "kappa": 0.955,
    "specificity": 0.973,
    "precision": 0.982,
    "f1": 0.978,
}
PAPER_CV5 = {"accuracy": 0.958, "recall": 0.969, "kappa": 0.915, "specificity": 0.947, "precision": 0.949, "f1": 0.958}
_LABELS = {"accuracy": "Accuracy", "recall": "Recall", "kappa": "Kappa", "specificity": "Specificity"}
_LABELS |= {"precision": "Precision", "f1": "F1"}


@dataclass(frozen=True)
class KidneySettings:
    """Task options beyond :class:`RunOptions` (``medview-train kidney --help``)."""

    baseline: bool = False
    search: int = 0
    search_epochs: int = 5
    cv: bool = False
    every: int = 1  # keep every Nth slice of each patient (neighbours are near-duplicates)
    cases: str | None = None  # a cases.csv of CT volumes + kidney masks, relative to the data folder


class KidneySlices(Dataset):
    """The prepared slices served as normalised 3-channel 224x224 tensors by the app's own code."""

    def __init__(self, dataset: KidneySet, mean: Sequence[float], std: Sequence[float]) -> None:
        self.unit, self.labels = dataset.unit, dataset.labels
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return len(self.labels)

    def inputs(self, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
        return torch.from_numpy(
            grey_batch(self.unit[np.asarray(indices)], (INPUT_SIZE, INPUT_SIZE), self.mean, self.std)
        )

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.inputs([index])[0], int(self.labels[index])


@torch.no_grad()
def stone_probability(model: nn.Module, slices: KidneySlices, indices: np.ndarray, device: torch.device) -> np.ndarray:
    """P(stone) of each listed slice, in eval mode."""
    model.eval()
    out = []
    for start in range(0, len(indices), BATCH):
        logits = model(slices.inputs(indices[start : start + BATCH]).to(device))
        out.append(torch.softmax(logits.float(), 1)[:, POSITIVE].cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def _build(options: RunOptions, settings: KidneySettings, arch_args: Mapping[str, Any]) -> tuple[nn.Module, str | None]:
    arch = "kidney_transfer" if settings.baseline else "kidney_hybrid"
    model = create_model(arch, **arch_args)
    checkpoint, imagenet = imagenet_weights(options, str(arch_args["backbone"]))
    if checkpoint is not None:
        model.load_backbone_weights(checkpoint)
    return model, imagenet


def _optimizer(model: nn.Module, baseline: bool) -> torch.optim.Optimizer:
    if baseline:
        return torch.optim.Adam(
            [
                {"params": list(model.base_parameters()), "lr": LEARNING_RATE},
                {"params": list(model.head_parameters()), "lr": LEARNING_RATE * HEAD_LR_FACTOR},
            ]
        )
    return torch.optim.Adam(list(model.trainable_parameters()), lr=LEARNING_RATE)


def _train_one(
    options: RunOptions,
    settings: KidneySettings,
    arch_args: Mapping[str, Any],
    slices: KidneySlices,
    train: np.ndarray,
    validation: np.ndarray,
    *,
    epochs: int,
    name: str,
) -> tuple[nn.Module, str | None, list[dict[str, float]]]:
    model, imagenet = _build(options, settings, arch_args)
    device = options.torch_device()
    generator = seed_everything(options.seed)

    def validate(network: nn.Module, device: torch.device) -> dict[str, float]:
        probabilities = stone_probability(network, slices, validation, device)
        labels = slices.labels[validation]
        eps = 1e-7
        loss = -np.mean(np.where(labels == POSITIVE, np.log(probabilities + eps), np.log(1 - probabilities + eps)))
        return {"loss": float(loss), "accuracy": float(np.mean((probabilities >= 0.5) == (labels == POSITIVE)))}

    result = fit(
        model,
        _optimizer(model, settings.baseline),
        Subset(slices, train.tolist()),
        classification_step(cross_entropy),
        options.fit_config(
            f"kidney-{name}",
            {
                "train": train.tolist(),
                "validation": validation.tolist(),
                "arch": arch_args,
                "baseline": settings.baseline,
            },
            epochs=epochs,
            batch_size=options.batch_size or BATCH,
            monitor="val_accuracy",
        ),
        device=device,
        validate=validate if len(validation) else None,
        generator=generator,
    )
    model.load_state_dict(result.best_state)
    return model, imagenet, result.history


def _validation_part(dataset: KidneySet, indices: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    labels, patients = dataset.labels[indices], np.asarray(dataset.patients)[indices]
    if len(set(patients.tolist())) < 2:
        return indices, np.zeros(0, dtype=int)
    kept, held = holdout(labels, patients, VALIDATION_FRACTION, seed)
    return indices[kept], indices[held]


def _every_nth(dataset: KidneySet, every: int) -> KidneySet:
    """1 in ``every`` slices of each patient, in slice order (neighbouring slices are near-duplicates)."""
    if every <= 1:
        return dataset
    order = sorted(
        range(len(dataset.labels)), key=lambda i: (dataset.patients[i], dataset.positions[i], dataset.ids[i])
    )
    seen: dict[str, int] = {}
    kept = []
    for index in order:
        position = seen.get(dataset.patients[index], 0)
        seen[dataset.patients[index]] = position + 1
        if position % every == 0:
            kept.append(index)
    return dataset.subset(kept, f"{dataset.layout}, 1 in {every} slices of each patient")


def _holdout_and_cv(dataset: KidneySet, seed: int) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """The hold-out fold (the first of 6 with both classes) and the other 5 folds as CV5 (train, test) pairs."""
    pairs = cross_validation_folds(dataset.labels.tolist(), list(dataset.patients), FOLDS, seed)
    index = first_fold_with_every_class(pairs, dataset.labels)
    if len(set(dataset.labels[pairs[index][1]].tolist())) < len(CLASS_NAMES):
        raise ValueError("no patient-level fold holds both classes: the data has too few patients")
    folds = [test for _, test in pairs]
    held = folds.pop(index)
    cv = [(np.sort(np.concatenate([f for j, f in enumerate(folds) if j != i])), test) for i, test in enumerate(folds)]
    return held, cv


def _save_trials(study: Any, path: Path) -> None:
    """One CSV row per trial: number, validation accuracy, parameters (optuna's own export needs pandas)."""
    names = sorted({name for trial in study.trials for name in trial.params})
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["number", "value", *(f"params_{name}" for name in names)])
        for trial in study.trials:
            writer.writerow([trial.number, trial.value, *(trial.params.get(name, "") for name in names)])


def _search(
    options: RunOptions, settings: KidneySettings, slices: KidneySlices, train: np.ndarray, validation: np.ndarray
) -> dict[str, Any]:
    """Paper 000's Bayesian optimisation of the custom branch (Optuna TPE); returns the best arch_args."""
    import optuna

    backbone = options.backbone or DEFAULT_BACKBONE

    def objective(trial: optuna.Trial) -> float:
        blocks = trial.suggest_int("blocks", 5, 7)  # 5 pools bring 224 to 7x7; fewer blocks cannot
        filters = [trial.suggest_int(f"filters_{i + 1}", 32, 256, step=32) for i in range(blocks)]
        dense = trial.suggest_int("dense_units", 30, 150)
        args = {"backbone": backbone, "filters": filters, "dense_units": dense}
        _, _, history = _train_one(
            options,
            settings,
            args,
            slices,
            train,
            validation,
            epochs=settings.search_epochs,
            name=f"trial-{trial.number}",
        )
        return max(epoch.get("val_accuracy", 0.0) for epoch in history)

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=options.seed))
    study.optimize(objective, n_trials=settings.search)
    best = study.best_params
    filters = [best[f"filters_{i + 1}"] for i in range(best["blocks"])]
    log.info(
        "search: best validation accuracy %.4f with filters %s, dense %d",
        study.best_value,
        filters,
        best["dense_units"],
    )
    _save_trials(study, options.run_dir / "search.csv")
    return {"backbone": backbone, "filters": filters, "dense_units": best["dense_units"]}


def train_kidney(options: RunOptions, settings: KidneySettings | None = None) -> TaskOutcome:
    """Train on the hold-out scheme (and CV5 with ``settings.cv``), evaluate, and export with ``bundle_dir``."""
    settings = settings or KidneySettings()
    start_run(options, "kidney")
    seed_everything(options.seed)
    cases = options.data / settings.cases if settings.cases else None
    dataset = _every_nth(load_kidney_data(options.data, cases), settings.every)
    log.info("%s: %s (%s)", options.data, dataset.counts(), dataset.layout)
    backbone = options.backbone or DEFAULT_BACKBONE
    spec = backbone_spec(backbone)  # the channel statistics its ImageNet weights expect
    slices = KidneySlices(dataset, spec.mean, spec.std)
    labels = slices.labels

    test, cv_folds = _holdout_and_cv(dataset, options.seed)
    rest = np.setdiff1d(np.arange(len(labels)), test)
    train, validation = _validation_part(dataset, rest, options.seed)
    split = Split(
        train, validation, test, f"6 patient-level folds (seed {options.seed}): hold-out fold, 10% validation"
    )
    split.check(dataset.patients)
    split.save(options.run_dir / "split.json", dataset.ids, dataset.patients, [CLASS_NAMES[i] for i in labels])

    arch_args: dict[str, Any] = {"backbone": backbone}
    if not settings.baseline:
        arch_args |= {"filters": list(FILTERS), "dense_units": DENSE_UNITS}
        if settings.search:
            arch_args = _search(options, settings, slices, train, validation)
    epochs = options.epochs or EPOCHS
    model, imagenet, history = _train_one(
        options, settings, arch_args, slices, train, validation, epochs=epochs, name="holdout"
    )
    plot_history(options.run_dir / "history.png", history, "kidney: hold-out training")

    device = options.torch_device()
    shipped = as_shipped(model, options.half).to(device)
    probabilities = stone_probability(shipped, slices, test, device)
    predicted = (probabilities >= 0.5).astype(int)
    metrics = binary_metrics(labels[test], predicted, positive=POSITIVE)
    metrics["auc"] = roc_points(labels[test] == POSITIVE, probabilities)[2]
    name = "hybrid" if not settings.baseline else "transfer-learning baseline"
    plot_confusion(
        options.run_dir / "confusion.png",
        normalised_confusion(labels[test], predicted, 2),
        CLASS_NAMES,
        "kidney hold-out",
    )
    fpr, tpr, auc = roc_points(labels[test] == POSITIVE, probabilities)
    plot_roc(options.run_dir / "roc.png", {"stone": (fpr, tpr, auc)}, "kidney stone: hold-out")

    if settings.cv:
        fold_metrics = []
        for number, (fold_train, fold_test) in enumerate(cv_folds, start=1):
            fold_train, fold_validation = _validation_part(dataset, fold_train, options.seed)
            fold_model, _, _ = _train_one(
                options, settings, arch_args, slices, fold_train, fold_validation, epochs=epochs, name=f"cv{number}"
            )
            fold_probability = stone_probability(
                as_shipped(fold_model, options.half).to(device), slices, fold_test, device
            )
            fold_metrics.append(
                binary_metrics(labels[fold_test], (fold_probability >= 0.5).astype(int), positive=POSITIVE)
            )
        cv_mean = {key: float(np.mean([m[key] for m in fold_metrics])) for key in _LABELS}
        metrics |= {f"cv5_{key}": value for key, value in cv_mean.items()}
    rows = [PaperRow(key, label, PAPER_HOLDOUT[key]) for key, label in _LABELS.items()]
    if settings.cv:
        rows += [PaperRow(f"cv5_{key}", f"{label} (CV5 mean)", PAPER_CV5[key]) for key, label in _LABELS.items()]
    title = f"Kidney stone, {name} ({backbone}), hold-out: {len(test)} slices"
    table = finish_report(options.run_dir, title, rows, metrics, "paper 000 (ResNet18 hybrid)")

    card = None
    if options.bundle_dir is not None:
        card = export_bundle(
            [model],
            options.bundle_dir,
            model_id=f"kidney-{'transfer' if settings.baseline else 'hybrid'}-{backbone.replace('_', '-')}",
            version=options.version,
            task="kidney_stone",
            arch="kidney_transfer" if settings.baseline else "kidney_hybrid",
            arch_args=arch_args,
            input_spec=InputSpec(
                modality="CT",
                size=(INPUT_SIZE, INPUT_SIZE),
                channels=3,
                hu_window=HU_WINDOW,
                body_parts=BODY_PARTS,
                normalisation="imagenet",
                extra={
                    "mean": list(model.mean),
                    "std": list(model.std),
                    "positive_class": "stone",
                    "roi": "whole slice",
                },
            ),
            class_names=CLASS_NAMES,
            trained_on=DataProvenance(
                dataset=f"{options.data.name} ({dataset.layout})",
                split=split.provenance(dataset.ids),
                counts={**dataset.counts(), "train": len(train), "validation": len(validation), "test": len(test)},
                demo=options.demo,
                imagenet_backbone=imagenet,
                notes=_notes(options, imagenet, epochs, settings),
            ),
            metrics=manifest_metrics(metrics),
            thresholds={"stone": 0.5},
            half=options.half,
        )
        log.info("bundle written: %s", options.bundle_dir)
    return TaskOutcome(metrics, table, card)


def _notes(options: RunOptions, imagenet: str | None, epochs: int, settings: KidneySettings) -> str:
    parts = [
        "kidney ROI from the cases' masks"
        if settings.cases
        else "trained on whole slices (no kidney masks in the data); 8-bit exports taken as windowed, "
        f"the app applies the HU window {HU_WINDOW[0]:g}..{HU_WINDOW[1]:g}",
        f"{epochs} epochs" + ("" if epochs == EPOCHS else f" (paper: {EPOCHS})"),
    ]
    if settings.every > 1:
        parts.append(f"1 in {settings.every} slices of each patient")
    if imagenet is None:
        parts.append("frozen branch NOT ImageNet-initialised (random weights)")
    elif "efficientnet_lite0" in imagenet:
        parts.append("EfficientNet-Lite0 stands in for the paper's backbones (the only ImageNet weights offline)")
    if options.demo:
        parts.append("demo model trained on public sample slices: not for diagnosis")
    return "; ".join(parts)
