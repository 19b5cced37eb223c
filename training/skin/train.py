"""Paper 003's protocol: ImageNet CNN -> 1000-d features of every photo -> random forest of 50 trees.

The CNN is frozen (no fine-tuning in the paper), so each photo's features are
computed once, with the app's own photo loader and preprocessing
(``read_photo`` + ``photo_batch``: resize to the backbone's input, min-max,
the backbone's channel statistics).  The forest is fitted on the training
photos and evaluated on the held-out ones: the dataset's own train/test folders
when it has them (paper 003 used Kaggle's 2,637 / 660), otherwise 20% of the
patients (or of the photos, when the data names no patients), stratified.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.base import clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import precision_recall_fscore_support, roc_curve
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from torch import nn
from tqdm import tqdm

from medview.engine.manifest import DataProvenance, InputSpec
from medview.io.photo import read_photo
from medview.models import create_model
from medview.models.skin import DEFAULT_BACKBONE, FOREST_TREES
from medview.preprocess.image import photo_batch
from training.common.metrics import binary_metrics, normalised_confusion, roc_points
from training.common.report import PaperRow, plot_confusion, plot_roc
from training.common.run import (
    RunOptions,
    TaskOutcome,
    finish_report,
    imagenet_weights,
    manifest_metrics,
    start_run,
)
from training.common.seeding import seed_everything
from training.common.splits import official_split, patient_split
from training.export import as_shipped, export_bundle
from training.skin.data import CLASS_NAMES, read_skin_dataset

log = logging.getLogger("training.skin")

POSITIVE = CLASS_NAMES.index("malignant")
TEST_FRACTION = 0.2  # paper 003: 2,637 training / 660 test photos
FEATURE_BATCH = 32

#: paper 003, Table 1, ResNet18 + RF.  Its Se equals its Sp, which a binary
#: table only shows when both are averages over the two classes, so the paper's
#: values stand beside the macro rows; the malignant-class rows have none.
PAPER_ROWS = (
    PaperRow("accuracy", "Acc", 0.8285),
    PaperRow("macro_precision", "Pr (macro)", 0.8269),
    PaperRow("macro_recall", "Se (macro)", 0.8286),
    PaperRow("macro_recall", "Sp (macro)", 0.8286),
    PaperRow("macro_f1", "F1 (macro)", 0.8275),
    PaperRow("precision", "Pr (malignant)", None),
    PaperRow("sensitivity", "Se (malignant)", None),
    PaperRow("specificity", "Sp (malignant)", None),
    PaperRow("f1", "F1 (malignant)", None),
)


@torch.no_grad()
def photo_features(
    network: nn.Module, paths: Sequence[Path], device: torch.device, *, progress: bool = True
) -> np.ndarray:
    """The network's 1000-d features of each photo, prepared exactly as the app prepares a dropped photo."""
    size = (network.input_size, network.input_size)
    features = []
    for start in tqdm(range(0, len(paths), FEATURE_BATCH), desc="CNN features", disable=not progress, leave=False):
        batch = np.concatenate(
            [
                photo_batch(read_photo(path).rgb, size, network.mean, network.std)
                for path in paths[start : start + FEATURE_BATCH]
            ]
        )
        features.append(network(torch.from_numpy(batch).to(device)).float().cpu().numpy())
    return np.concatenate(features)


def cross_validated_threshold(
    forest: RandomForestClassifier, features: np.ndarray, labels: np.ndarray, seed: int
) -> float:
    """The malignant vote share that maximises sensitivity + specificity (Youden's J) in 5-fold CV on training data.

    Paper 003 takes the majority vote (0.5) on a nearly balanced dataset; with
    fewer malignant photos the majority vote misses most of them.  The
    threshold comes from the training photos only, each scored by a forest that
    did not see it (the forest's own out-of-bag votes come from ~18 of 50 trees
    per photo and proved too noisy), never from the test photos.
    """
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    votes = cross_val_predict(clone(forest), features, labels, cv=folds, method="predict_proba")[:, POSITIVE]
    fpr, tpr, thresholds = roc_curve(labels == POSITIVE, votes)
    best = int(np.argmax(tpr - fpr))
    return float(min(thresholds[best], 1.0))


def evaluate(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict[str, float]:
    """Paper 003's metrics on held-out photos, malignant as the positive class, plus the macro averages."""
    predicted = (probabilities[:, POSITIVE] >= threshold).astype(int)
    metrics = binary_metrics(labels, predicted, positive=POSITIVE)
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, labels=[0, 1], average="macro", zero_division=0
    )
    metrics.update(macro_precision=float(precision), macro_recall=float(recall), macro_f1=float(f1))
    metrics["auc"] = roc_points(labels == POSITIVE, probabilities[:, POSITIVE])[2]
    return metrics


def train_skin(options: RunOptions) -> TaskOutcome:
    """Train, evaluate and (with ``options.bundle_dir``) export a skin-lesion bundle."""
    start_run(options, "skin")
    seed_everything(options.seed)
    dataset = read_skin_dataset(options.data)
    log.info("%s: %s (%s)", options.data, dataset.counts(), dataset.layout)
    split = official_split(dataset.sides, dataset.patients, "the dataset's own train/test folders")
    if split is None:
        named = len(set(dataset.patients)) < len(dataset.items)
        split = patient_split(
            dataset.labels,
            dataset.patients,
            test_fraction=TEST_FRACTION,
            validation_fraction=0,
            seed=options.seed,
            description="" if named else f"by photo (the data names no patients), seed {options.seed}: test 20%",
        )
    split.save(options.run_dir / "split.json", dataset.ids, dataset.patients, [CLASS_NAMES[i] for i in dataset.labels])

    backbone = options.backbone or DEFAULT_BACKBONE
    network = create_model("skin_cnn_features", backbone=backbone)
    checkpoint, imagenet = imagenet_weights(options, backbone)
    if checkpoint is not None:
        log.info("loaded %d ImageNet tensors into %s", network.load_backbone_weights(checkpoint), backbone)
    device = options.torch_device()
    shipped = as_shipped(network, options.half).to(device).eval()  # features as the bundle's weights compute them
    paths = [item.path for item in dataset.items]
    features = photo_features(shipped, paths, device, progress=options.progress)
    labels = np.asarray(dataset.labels)

    forest = RandomForestClassifier(n_estimators=FOREST_TREES, random_state=options.seed, n_jobs=-1)
    threshold = cross_validated_threshold(forest, features[split.train], labels[split.train], options.seed)
    log.info("decision threshold %.3f (Youden's J in 5-fold CV on the training photos)", threshold)
    forest.fit(features[split.train], labels[split.train])
    probabilities = forest.predict_proba(features[split.test])
    metrics = evaluate(labels[split.test], probabilities, threshold)
    title = f"Skin lesions, {backbone} features + RF({FOREST_TREES}) on {len(split.test)} held-out photos"
    table = finish_report(options.run_dir, title, PAPER_ROWS, metrics, "paper 003 (ResNet18 + RF)")
    predicted = (probabilities[:, POSITIVE] >= threshold).astype(int)
    plot_confusion(
        options.run_dir / "confusion.png",
        normalised_confusion(labels[split.test], predicted, 2),
        CLASS_NAMES,
        "Skin lesions",
    )
    fpr, tpr, auc = roc_points(labels[split.test] == POSITIVE, probabilities[:, POSITIVE])
    plot_roc(options.run_dir / "roc.png", {"malignant": (fpr, tpr, auc)}, "Skin lesions: malignant vs benign")

    card = None
    if options.bundle_dir is not None:
        counts = dataset.counts()
        card = export_bundle(
            [network],
            options.bundle_dir,
            model_id=f"skin-{backbone.replace('_', '-')}-rf",
            version=options.version,
            task="skin_lesion",
            arch="skin_cnn_features",
            arch_args={"backbone": backbone},
            input_spec=InputSpec(
                modality="photo",
                size=(network.input_size, network.input_size),
                channels=3,
                normalisation="minmax",
                extra={"mean": list(network.mean), "std": list(network.std), "positive_class": "malignant"},
            ),
            class_names=CLASS_NAMES,
            trained_on=DataProvenance(
                dataset=f"{options.data.name} ({dataset.layout})",
                split=split.provenance(dataset.ids),
                counts={**counts, "train": len(split.train), "test": len(split.test)},
                demo=options.demo,
                imagenet_backbone=imagenet,
                notes=_notes(options, imagenet, len(split.train), len(split.test)),
            ),
            metrics=manifest_metrics(metrics),
            thresholds={"malignant": threshold},
            forest=forest,
            half=options.half,
        )
        log.info("bundle written: %s", options.bundle_dir)
    return TaskOutcome(metrics, table, card)


def _notes(options: RunOptions, imagenet: str | None, trained: int, tested: int) -> str:
    parts = [
        f"metrics on {tested} held-out photos",
        "threshold by Youden's J in 5-fold CV on the training photos (the paper's majority vote is 0.5)",
    ]
    if imagenet is None:
        parts.append("backbone NOT ImageNet-initialised (random weights)")
    elif "efficientnet_lite0" in imagenet:
        parts.append("EfficientNet-Lite0 stands in for the paper's ResNet18/MobileNetV2/Darknet19 (no offline weights)")
    if options.demo:
        parts.append(f"demo model: forest fitted on {trained} public dermoscopy photos, not for diagnosis")
    return "; ".join(parts)
