"""Paper 003's protocol: ImageNet CNN -> 1000-d features of every photo -> random forest of 50 trees.

The CNN is frozen (no fine-tuning in the paper), so each photo's features are
computed once, with the app's own photo loader and preprocessing
(``read_photo`` + ``photo_batch``: resize to the backbone's input, min-max,
the backbone's channel statistics), and kept in a feature cache
(``training.common.feature_cache``) so that a re-fit does not run the CNN again.

Split: the dataset's own train/test folders when it has them (paper 003 used
Kaggle's 2,637 / 660); otherwise, per source dataset, 20% of the patients (or
of the photos, when the data names no patients) for test, stratified by class,
then 20% of the rest for validation.  Splitting each source on its own keeps
every source in every side in proportion; for ISIC UDA-1 alone (seed 0) it
draws exactly the test photos of the 1.0.0 demo bundle, so that bundle can be
compared on photos it never saw.

Forest: the paper's (50 trees, majority vote) stays the default baseline and
``--paper-forest`` keeps it alone.  Otherwise a few variants of the paper's
own family (a random forest on the same 1000 features: class weights, more
trees with a minimum leaf size, the training photos' mirror images as extra
rows) are compared by their mean AUC over 5 stratified folds of the training +
validation photos (a patient's photos in one fold), the paper's winning ties;
the winner ships, and the manifest's notes say which ran and every
candidate's AUC.  Some variants also let the photo's three mirror images
vote, or all eight of its mirrored and turned views (test-time augmentation of
the features: the vote share is the mean over them; the bundle's input spec
lists them as ``vote_views`` and the app's pipeline does the same).

The threshold is the malignant vote share that reaches the target sensitivity
(0.9, MODELS.md) on photos the scoring forest never saw, never on the test
photos: by default the winner's out-of-fold scores over those 5 folds of the
training + validation photos, and the shipped forest is then fitted on all of
them (scikit-learn's ``CalibratedClassifierCV(ensemble=False)`` scheme, as the
kidney trainer does; a quarter more photos than the training photos alone).
``validation_set`` keeps 1.3.0's way: the forest fitted on the training photos,
the threshold chosen on the validation photos alone.  The test photos give the
shipped sensitivity and specificity with 95% Wilson intervals, and the AUC.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import precision_recall_fscore_support
from sklearn.model_selection import StratifiedGroupKFold
from torch import nn
from tqdm import tqdm

from medview.engine.forest import load_forest
from medview.engine.manifest import DataProvenance, InputSpec, load_manifest
from medview.engine.pipelines.skin import VOTE_VIEWS, vote_views
from medview.engine.weights import load_networks
from medview.io.photo import read_photo
from medview.models import create_model
from medview.models.skin import DEFAULT_BACKBONE, FOREST_TREES
from medview.preprocess.image import MIRROR_VIEWS, PHOTO_VIEWS, photo_batch, photo_view
from training.common.feature_cache import cached_network_features, default_cache_dir
from training.common.metrics import binary_metrics, normalised_confusion, roc_points
from training.common.operating_point import floor_significant, rates_with_intervals, threshold_for_sensitivity
from training.common.report import PaperRow, comparison_table, plot_confusion, plot_roc
from training.common.run import (
    RunOptions,
    TaskOutcome,
    finish_report,
    imagenet_weights,
    manifest_metrics,
    start_run,
)
from training.common.seeding import seed_everything
from training.common.splits import Split, holdout, official_split
from training.export import ResponseEvidence, as_shipped, export_bundle
from training.skin.data import CLASS_NAMES, SkinSources, read_skin_sources

log = logging.getLogger("training.skin")

POSITIVE = CLASS_NAMES.index("malignant")
TEST_FRACTION = 0.2  # paper 003: 2,637 training / 660 test photos
VALIDATION_FRACTION = 0.2  # of the photos left after the test photos: where the threshold and the variant are chosen
TARGET_SENSITIVITY = 0.9  # MODELS.md: the melanoma operating point
FEATURE_BATCH = 32
BLANK_GREY = 128  # the blank photo of the export check: uniform mid-grey

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
    PaperRow("auc", "AUC (malignant)", None, unit=""),
)


@dataclass(frozen=True)
class ForestSetting:
    """One random forest on the 1000 CNN features: the paper's, or a variant of its family."""

    name: str
    trees: int = FOREST_TREES
    class_weight: str | None = None  # "balanced_subsample": each tree weighs the classes equally
    min_samples_leaf: int = 1  # 1: fully grown trees, whose leaves are pure (the paper's vote share)
    max_features: str | float = "sqrt"
    flips: bool = False  # the training photos' mirror images (and with turns, their turned views) join the rows
    mirror_votes: bool = False  # a photo's vote share is the mean over it and its 3 mirror images
    turns: bool = False  # the flips and the votes take in the 4 turned views too (all 8 PHOTO_VIEWS)

    @property
    def row_views(self) -> tuple[str, ...]:
        """The views of each training photo the forest is fitted on."""
        if not self.flips:
            return ("photo",)
        return PHOTO_VIEWS if self.turns else MIRROR_VIEWS

    @property
    def vote_views(self) -> tuple[str, ...]:
        """The views of a photo whose vote shares are averaged (the bundle's ``vote_views``)."""
        if not self.mirror_votes:
            return ("photo",)
        return PHOTO_VIEWS if self.turns else MIRROR_VIEWS

    def forest(self, seed: int) -> RandomForestClassifier:
        return RandomForestClassifier(
            n_estimators=self.trees,
            class_weight=self.class_weight,
            min_samples_leaf=self.min_samples_leaf,
            max_features=self.max_features,
            random_state=seed,
            n_jobs=2,  # the training machines are shared; two cores fit a forest of this size in seconds
        )

    def describe(self) -> str:
        parts = [f"{self.trees} trees"]
        if self.class_weight:
            parts.append(f"class_weight={self.class_weight}")
        if self.min_samples_leaf != 1:
            parts.append(f"min_samples_leaf={self.min_samples_leaf}")
        if self.max_features != "sqrt":
            parts.append(f"max_features={self.max_features}")
        if self.flips:
            parts.append(f"training photos + their {_copies(self.row_views)}")
        if self.mirror_votes:
            parts.append(f"vote share averaged over the photo and its {_copies(self.vote_views)}")
        return f"{self.name} ({', '.join(parts)})"


PAPER_FOREST = ForestSetting("paper")
#: the variants tried against the paper's forest on the validation photos (see the module docstring)
FOREST_VARIANTS = (
    PAPER_FOREST,
    ForestSetting("balanced", class_weight="balanced_subsample"),
    ForestSetting("flips", flips=True),
    ForestSetting("balanced-flips", class_weight="balanced_subsample", flips=True),
    ForestSetting("balanced-300-leaf5", trees=300, class_weight="balanced_subsample", min_samples_leaf=5),
    ForestSetting("balanced-flips-mirrors", class_weight="balanced_subsample", flips=True, mirror_votes=True),
    ForestSetting(
        "balanced-300-leaf3-flips-mirrors",
        trees=300,
        class_weight="balanced_subsample",
        min_samples_leaf=3,
        flips=True,
        mirror_votes=True,
    ),
    ForestSetting(
        "balanced-300-leaf3-dihedral",
        trees=300,
        class_weight="balanced_subsample",
        min_samples_leaf=3,
        flips=True,
        mirror_votes=True,
        turns=True,
    ),
)
SELECTION_FOLDS = 5  # the variant is chosen by its mean AUC over these folds of the training + validation photos


@dataclass(frozen=True)
class SkinSettings:
    """Paper 003's options beyond the shared ones."""

    paper_forest: bool = False  # only the paper's forest (50 trees, majority vote), no variants tried
    target_sensitivity: float = TARGET_SENSITIVITY
    cache: Path | None = None  # the feature cache folder (default ~/.cache/medview-train)
    no_cache: bool = False  # compute every feature afresh, store nothing
    compare_bundle: Path | None = None  # a previous skin bundle to evaluate on the same test photos
    validation_set: bool = False  # 1.3.0's way: forest on the training photos, threshold on the validation photos


def _copies(views: tuple[str, ...]) -> str:
    """The views beyond the photo itself, in words."""
    return "3 mirror images" if views == MIRROR_VIEWS else f"{len(views) - 1} mirrored and turned copies"


@torch.no_grad()
def photo_features(
    network: nn.Module,
    paths: Sequence[Path],
    device: torch.device,
    *,
    progress: bool = True,
    variant: str = "photo",
) -> np.ndarray:
    """The network's 1000-d features of each photo, prepared exactly as the app prepares a dropped photo.

    ``variant`` "hflip", "vflip" or "hvflip" mirrors the photo first.
    """
    size = (network.input_size, network.input_size)
    features = []
    for start in tqdm(range(0, len(paths), FEATURE_BATCH), desc=f"CNN features ({variant})", disable=not progress):
        batch = np.concatenate(
            [
                photo_batch(photo_view(read_photo(path).rgb, variant), size, network.mean, network.std)
                for path in paths[start : start + FEATURE_BATCH]
            ]
        )
        features.append(network(torch.from_numpy(batch).to(device)).float().cpu().numpy())
    return np.concatenate(features) if features else np.zeros((0, 1000), dtype=np.float32)


@torch.no_grad()
def blank_features(network: nn.Module, device: torch.device) -> np.ndarray:
    """The features of a uniform grey photo, prepared as the app prepares a dropped photo."""
    grey = np.full((256, 256, 3), BLANK_GREY, dtype=np.uint8)
    batch = photo_batch(grey, (network.input_size, network.input_size), network.mean, network.std)
    return network(torch.from_numpy(batch).to(device)).float().cpu().numpy()


def skin_split(sources: SkinSources, seed: int) -> Split:
    """Train / validation / test: the dataset's own test folders when it has them, else stratified per source.

    Test first (``TEST_FRACTION`` of each source's patients), then validation
    (``VALIDATION_FRACTION`` of what is left of each source); patients never
    straddle two sides.
    """
    dataset = sources.dataset
    labels, groups = np.asarray(dataset.labels), np.asarray(dataset.patients)
    named = len(set(dataset.patients)) < len(dataset.items)
    unit = "patient" if named else "photo (the data names no patients)"
    official = official_split(dataset.sides, dataset.patients, "the dataset's own train/test folders")
    if official is not None:
        rest_parts, test_parts = [official.train], [official.test]
        how = "the dataset's own test folders"
    else:
        rest_parts, test_parts = [], []
        for name in sources.names():
            members = np.flatnonzero(np.asarray(sources.sources) == name)
            kept, held = holdout(labels[members], groups[members], TEST_FRACTION, seed)
            rest_parts.append(members[kept])
            test_parts.append(members[held])
        how = f"test {TEST_FRACTION:.0%} of each source"
    train_parts, validation_parts = [], []
    for rest in rest_parts:
        for name in dict.fromkeys(np.asarray(sources.sources)[rest].tolist()):
            members = rest[np.asarray(sources.sources)[rest] == name]
            kept, held = holdout(labels[members], groups[members], VALIDATION_FRACTION, seed + 1)
            train_parts.append(members[kept])
            validation_parts.append(members[held])
    split = Split(
        np.sort(np.concatenate(train_parts)),
        np.sort(np.concatenate(validation_parts)),
        np.sort(np.concatenate(test_parts)),
        f"by {unit}, stratified by class, seed {seed}: {how}, validation {VALIDATION_FRACTION:.0%} of the rest "
        f"of each source ({', '.join(sources.names())})",
    )
    split.check(dataset.patients)
    return split


def evaluate(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict[str, float]:
    """Paper 003's metrics on held-out photos, malignant as the positive class, the macro averages, the AUC
    and the sensitivity and specificity with their 95% Wilson intervals."""
    predicted = (probabilities[:, POSITIVE] >= threshold).astype(int)
    metrics = binary_metrics(labels, predicted, positive=POSITIVE)
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, labels=[0, 1], average="macro", zero_division=0
    )
    metrics.update(macro_precision=float(precision), macro_recall=float(recall), macro_f1=float(f1))
    metrics["auc"] = roc_points(labels == POSITIVE, probabilities[:, POSITIVE])[2]
    rates = rates_with_intervals(labels == POSITIVE, predicted == POSITIVE)
    metrics.update({key: float(value) for key, value in rates.items() if key not in ("positives", "negatives")})
    return metrics


def forest_scores(
    forest: RandomForestClassifier, views: Sequence[str], features: dict[str, np.ndarray], rows: np.ndarray
) -> np.ndarray:
    """Class probabilities of the photos ``rows``: the forest's vote share, averaged over the photo's ``views``
    (test-time augmentation of the features, as the app's pipeline does it)."""
    return np.mean([forest.predict_proba(features[view][rows]) for view in views], axis=0)


def _fit(
    setting: ForestSetting, features: dict[str, np.ndarray], train: np.ndarray, labels: np.ndarray, seed: int
) -> RandomForestClassifier:
    """``setting``'s forest fitted on the rows ``train`` in each of its ``row_views``.

    ``features`` maps a view (``PHOTO_VIEWS``) to one row per photo of the dataset.
    """
    rows = [features[view][train] for view in setting.row_views]
    if not all(np.isfinite(part).all() for part in rows):
        raise ValueError(f"forest {setting.name}: features missing for some training photos")
    forest = setting.forest(seed)
    forest.fit(np.concatenate(rows), np.tile(labels[train], len(rows)))
    return forest


def choose_forest(
    settings: Sequence[ForestSetting],
    features: dict[str, np.ndarray],
    split: Split,
    labels: np.ndarray,
    patients: Sequence[str],
    seed: int,
) -> tuple[ForestSetting, dict[str, float], np.ndarray]:
    """The setting with the best mean AUC over stratified folds of the training + validation photos, every
    setting's AUC, and the winner's out-of-fold class probabilities of those photos (training photos first).

    The first listed (the paper's) wins ties.  Folds rather than the one validation set, whose ~60
    melanomas give an AUC a standard error of about 0.035, as large as the differences between the
    settings.  The test photos take no part, and a patient's photos stay in one fold (the out-of-fold
    scores set the threshold).
    """
    pool = np.concatenate([split.train, split.validation])
    folds = StratifiedGroupKFold(n_splits=SELECTION_FOLDS, shuffle=True, random_state=seed)
    groups = np.asarray(patients)[pool]
    aucs: dict[str, float] = {}
    out_of_fold: dict[str, np.ndarray] = {}
    for setting in settings:
        fold_aucs = []
        scored = np.zeros((len(pool), len(CLASS_NAMES)))
        for kept, held in folds.split(pool, labels[pool], groups):
            forest = _fit(setting, features, pool[kept], labels, seed)
            scored[held] = forest_scores(forest, setting.vote_views, features, pool[held])
            fold_aucs.append(roc_points(labels[pool[held]] == POSITIVE, scored[held, POSITIVE])[2])
        aucs[setting.name] = float(np.mean(fold_aucs))
        out_of_fold[setting.name] = scored
        log.info(
            "%d-fold AUC %.4f (sd %.4f): %s", SELECTION_FOLDS, aucs[setting.name], np.std(fold_aucs), setting.describe()
        )
    best = max(settings, key=lambda setting: (round(aucs[setting.name], 6), -settings.index(setting)))
    return best, aucs, out_of_fold[best.name]


def evaluate_bundle(
    bundle: Path, paths: Sequence[Path], labels: np.ndarray, cache: Path | None, progress: bool
) -> tuple[dict[str, float], float, str]:
    """A skin bundle's metrics on these photos at its own threshold, through the app's loaders.

    Returns the metrics, the threshold and the bundle's label.
    """
    card = load_manifest(bundle)
    network = load_networks(card)[0].eval()
    views = vote_views(card)
    features = {
        variant: cached_network_features(
            network,
            card.arch_args.get("backbone", DEFAULT_BACKBONE),
            cache,
            paths,
            variant,
            lambda missing, variant=variant: photo_features(
                network, missing, torch.device("cpu"), progress=progress, variant=variant
            ),
        )
        for variant in views
    }
    forest = load_forest(card, features["photo"].shape[1])
    positive = str(card.input.extra.get("positive_class", card.class_names[-1]))
    threshold = float(card.thresholds.get(positive, 0.5))
    metrics = evaluate(labels, forest_scores(forest, views, features, np.arange(len(paths))), threshold)
    return metrics, threshold, card.label


def train_skin(options: RunOptions, settings: SkinSettings | None = None) -> TaskOutcome:
    """Train, evaluate and (with ``options.bundle_dir``) export a skin-lesion bundle."""
    settings = settings or SkinSettings()
    started = time.perf_counter()
    start_run(options, "skin")
    seed_everything(options.seed)
    sources = read_skin_sources(options.data)
    dataset = sources.dataset
    log.info("%s: %s (%s)", options.data, dataset.counts(), dataset.layout)
    split = skin_split(sources, options.seed)
    split.save(options.run_dir / "split.json", dataset.ids, dataset.patients, [CLASS_NAMES[i] for i in dataset.labels])
    log.info("split: %d train, %d validation, %d test photos", len(split.train), len(split.validation), len(split.test))
    if not len(split.validation):
        raise ValueError("too few photos for a validation set: the threshold must come from validation photos")

    backbone = options.backbone or DEFAULT_BACKBONE
    network = create_model("skin_cnn_features", backbone=backbone)
    checkpoint, imagenet = imagenet_weights(options, backbone)
    if checkpoint is not None:
        log.info("loaded %d ImageNet tensors into %s", network.load_backbone_weights(checkpoint), backbone)
    device = options.torch_device()
    shipped = as_shipped(network, options.half).to(device).eval()  # features as the bundle's weights compute them
    paths = [item.path for item in dataset.items]
    labels = np.asarray(dataset.labels)
    candidates = (PAPER_FOREST,) if settings.paper_forest else FOREST_VARIANTS
    cache = None if settings.no_cache else (settings.cache or default_cache_dir())

    def features_of(chosen: Sequence[Path], variant: str) -> np.ndarray:
        return cached_network_features(
            shipped,
            backbone,
            cache,
            chosen,
            variant,
            lambda missing: photo_features(shipped, missing, device, progress=options.progress, variant=variant),
        )

    features = {"photo": features_of(paths, "photo")}
    voting = {view for setting in candidates for view in setting.vote_views}
    fitted = {view for setting in candidates for view in setting.row_views}
    for view in PHOTO_VIEWS[1:]:
        if view in voting:  # every photo's view may vote
            rows = np.arange(len(paths))
        elif view in fitted:  # the views of the photos a forest may be fitted on
            rows = np.concatenate([split.train, split.validation])
        else:
            continue
        features[view] = np.full_like(features["photo"], np.nan)
        features[view][rows] = features_of([paths[index] for index in rows], view)

    feature_seconds = time.perf_counter() - started
    fitting = time.perf_counter()
    setting, selection_aucs, out_of_fold = choose_forest(
        candidates, features, split, labels, dataset.patients, options.seed
    )
    if settings.validation_set:
        fitted_on, scored = split.train, split.validation
    else:  # the threshold from the folds' scores, the forest fitted on every photo they scored (module docstring)
        fitted_on = scored = np.concatenate([split.train, split.validation])
    forest = _fit(setting, features, fitted_on, labels, options.seed)
    fit_seconds = time.perf_counter() - fitting
    validation_scores = (
        forest_scores(forest, setting.vote_views, features, scored) if settings.validation_set else out_of_fold
    )
    threshold = threshold_for_sensitivity(
        labels[scored] == POSITIVE, validation_scores[:, POSITIVE], settings.target_sensitivity
    )
    threshold = floor_significant(threshold)  # 4 significant digits for the manifest and the screen; never fewer calls
    validation = evaluate(labels[scored], validation_scores, threshold)
    log.info(
        "forest %s; threshold %.3f for sensitivity %.2f on %d %s photos (reached %.3f, specificity %.3f)",
        setting.describe(),
        threshold,
        settings.target_sensitivity,
        len(scored),
        "validation" if settings.validation_set else "out-of-fold",
        validation["sensitivity"],
        validation["specificity"],
    )

    probabilities = forest_scores(forest, setting.vote_views, features, split.test)
    test_labels = labels[split.test]
    metrics = evaluate(test_labels, probabilities, threshold)
    training_seconds = time.perf_counter() - started
    title = f"Skin lesions, {backbone} features + RF ({setting.describe()}) on {len(split.test)} held-out photos"
    table = finish_report(options.run_dir, title, PAPER_ROWS, metrics, "paper 003 (ResNet18 + RF)")
    positives = int((test_labels == POSITIVE).sum())
    columns = {"this run": {**metrics, "threshold": threshold, "n": len(split.test), "positives": positives}}
    if settings.compare_bundle is not None:
        previous, previous_threshold, name = evaluate_bundle(
            settings.compare_bundle, [paths[i] for i in split.test], test_labels, cache, options.progress
        )
        columns = {
            f"previous: {name}": {
                **previous,
                "threshold": previous_threshold,
                "n": len(split.test),
                "positives": positives,
            },
            **columns,
        }
    comparison = comparison_table(
        f"Skin lesions on the same {len(split.test)} held-out photos ({positives} malignant)",
        columns,
        ("paper 003 (ResNet18 + RF)", {"accuracy": 0.8285, "threshold": 0.5}),
        positive="malignant",
        unit="photos",
    )
    log.info("\n%s", comparison)
    (options.run_dir / "comparison.txt").write_text(comparison + "\n", encoding="utf-8")
    predicted = (probabilities[:, POSITIVE] >= threshold).astype(int)
    plot_confusion(
        options.run_dir / "confusion.png",
        normalised_confusion(test_labels, predicted, 2),
        CLASS_NAMES,
        "Skin lesions",
    )
    fpr, tpr, auc = roc_points(test_labels == POSITIVE, probabilities[:, POSITIVE])
    plot_roc(options.run_dir / "roc.png", {"malignant": (fpr, tpr, auc)}, "Skin lesions: malignant vs benign")

    card = None
    if options.bundle_dir is not None:
        blank = forest.predict_proba(blank_features(shipped, device))[0]
        evidence = ResponseEvidence(
            probabilities=validation_scores,
            labels=labels[scored],
            blank=blank,
            predicted=(validation_scores[:, POSITIVE] >= threshold).astype(int),
        )
        counts = dataset.counts()
        test_counts = {f"test_{name}": int((test_labels == index).sum()) for index, name in enumerate(CLASS_NAMES)}
        manifest = {
            **metrics,
            "operating_point_sensitivity_target": settings.target_sensitivity,
            "validation_sensitivity": validation["sensitivity"],
            "validation_specificity": validation["specificity"],
            "validation_auc": validation["auc"],
            **({"selection_auc": selection_aucs[setting.name]} if selection_aucs else {}),
            "training_seconds": training_seconds,
            "feature_seconds": feature_seconds,
            "forest_fit_seconds": fit_seconds,
        }
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
                extra={
                    "mean": list(network.mean),
                    "std": list(network.std),
                    "positive_class": "malignant",
                    **({VOTE_VIEWS: list(setting.vote_views)} if len(setting.vote_views) > 1 else {}),
                },
            ),
            class_names=CLASS_NAMES,
            trained_on=DataProvenance(
                dataset=f"{options.data.name} ({dataset.layout})",
                split=split.provenance(dataset.ids)
                + ("" if settings.validation_set else "; the forest refitted on the training + validation photos"),
                counts={
                    **counts,
                    "train": len(fitted_on),
                    "validation": len(scored),
                    "test": len(split.test),
                    **test_counts,
                    **({} if settings.validation_set else {"validation_folds": SELECTION_FOLDS}),
                },
                demo=options.demo,
                imagenet_backbone=imagenet,
                notes=_notes(options, settings, imagenet, setting, selection_aucs, split, training_seconds),
            ),
            metrics=manifest_metrics(manifest),
            thresholds={"malignant": threshold},
            forest=forest,
            half=options.half,
            evidence=evidence,
        )
        log.info("bundle written: %s", options.bundle_dir)
    log.info(
        "training took %.0f s (reading photos + CNN features %.0f s, forest fits %.0f s)",
        training_seconds,
        feature_seconds,
        fit_seconds,
    )
    return TaskOutcome(metrics, table + "\n\n" + comparison, card)


def _notes(
    options: RunOptions,
    settings: SkinSettings,
    imagenet: str | None,
    setting: ForestSetting,
    selection_aucs: dict[str, float],
    split: Split,
    seconds: float,
) -> str:
    tried = ", ".join(f"{name} {auc:.3f}" for name, auc in selection_aucs.items())
    chosen = (
        " (the paper's exact setting, --paper-forest)"
        if settings.paper_forest
        else f", chosen by {SELECTION_FOLDS}-fold AUC on the training + validation photos ({tried})"
    )
    pool = len(split.train) + len(split.validation)
    fitted = (
        f"fitted on the {len(split.train)} training photos"
        if settings.validation_set
        else f"fitted on the {pool} training + validation photos"
    )
    scored = (
        f"{len(split.validation)} validation photos"
        if settings.validation_set
        else f"the out-of-fold scores of the {pool} training + validation photos ({SELECTION_FOLDS} folds, each "
        "scored by a forest fitted without it; CalibratedClassifierCV(ensemble=False)'s scheme; --validation-set "
        "fits the forest on the training photos and chooses the threshold on the validation photos)"
    )
    parts = [
        f"metrics on {len(split.test)} held-out photos (sensitivity/specificity with 95% Wilson intervals)",
        f"forest: {setting.describe()}{chosen}; {fitted}",
        f"threshold: malignant vote share for sensitivity {settings.target_sensitivity:g} on "
        f"{scored}, mid-way in log-odds to the next benign photo's below it (the paper's majority vote is 0.5)",
        f"training took {seconds:.0f} s",
    ]
    if imagenet is None:
        parts.append("backbone NOT ImageNet-initialised (random weights)")
    elif "efficientnet_lite0" in imagenet:
        parts.append("EfficientNet-Lite0 stands in for the paper's ResNet18/MobileNetV2/Darknet19 (no offline weights)")
    if options.demo:
        parts.append(
            f"demo model: forest fitted on {len(split.train) if settings.validation_set else pool} public ISIC "
            "dermoscopy photos, not for diagnosis"
        )
    return "; ".join(parts)
