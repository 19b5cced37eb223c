"""Evaluation metrics for the training reports: the numbers each paper reports, computed one way.

Pure numpy / scikit-learn / scipy (no torch), so reports and tests can use them without a GPU
stack. Every function returns plain Python floats as fractions in [0, 1] (never percent), except
surface distances, which are in millimetres. Undefined ratios (a zero denominator) are 0.0 rather
than NaN, and no function emits a warning for them, so a report never shows "nan" and strict
warning filters stay quiet.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage
from sklearn.metrics import cohen_kappa_score, confusion_matrix, roc_auc_score, roc_curve

from medview.io.audio import ICBHI_CLASSES  # the class indices icbhi_scores counts with

__all__ = [
    "ICBHI_CLASSES",
    "binary_metrics",
    "dice_score",
    "icbhi_scores",
    "mask_volume_ml",
    "multiclass_metrics",
    "normalised_confusion",
    "roc_points",
    "segmentation_metrics",
]


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, or 0.0 when the denominator is 0 (an undefined rate reads as 0)."""
    return float(numerator) / float(denominator) if denominator else 0.0


def _labels(values: ArrayLike, name: str) -> np.ndarray:
    """A non-empty 1-D label array (a clear error beats sklearn's message deep inside a report)."""
    array = np.asarray(values).ravel()
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    return array


def _check_pair(y_true: np.ndarray, y_pred: np.ndarray) -> None:
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} labels but y_pred has {y_pred.size}")


# --------------------------------------------------------------------------- classification


def binary_metrics(y_true: ArrayLike, y_pred: ArrayLike, positive: object = 1) -> dict[str, float]:
    """Accuracy, recall (= sensitivity), specificity, precision, F1 and Cohen's kappa of a binary task.

    Labels equal to ``positive`` are the positive class, everything else is negative, so the
    caller's label coding (0/1, "stone"/"normal", ...) does not matter. Papers 000 (kidney stone)
    and 003 (skin) report these; "sensitivity" is the same number as "recall", under the name the
    skin paper uses.
    """
    truth = _labels(y_true, "y_true") == positive
    pred = _labels(y_pred, "y_pred") == positive
    _check_pair(truth, pred)
    # labels= fixes the 2x2 shape even when one class is missing; ravel order is tn, fp, fn, tp.
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(truth, pred, labels=[False, True]).ravel())
    n = tn + fp + fn + tp
    recall = _ratio(tp, tp + fn)
    # Kappa is undefined when chance agreement is 1 (both raters use one and the same class);
    # sklearn then warns even with replace_undefined_by, so that case is caught here first.
    chance = ((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp)) / (n * n)
    kappa = 0.0 if chance >= 1.0 else float(cohen_kappa_score(truth, pred, labels=[False, True]))
    return {
        "accuracy": _ratio(tp + tn, n),
        "recall": recall,
        "sensitivity": recall,
        "specificity": _ratio(tn, tn + fp),
        "precision": _ratio(tp, tp + fp),
        # F1 from counts (2TP / (2TP + FP + FN)) rather than from precision and recall: same value,
        # and it stays defined (0.0) without a special case when nothing is predicted positive.
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "kappa": kappa,
    }


def multiclass_metrics(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    probabilities: ArrayLike,
    class_names: Sequence[str],
) -> dict[str, float]:
    """One-vs-rest accuracy, specificity, sensitivity, F1 and AUC per class, macro AUC and overall accuracy.

    ``y_true`` and ``y_pred`` hold class indices 0..n_classes-1 and ``probabilities`` is
    (n_samples, n_classes); class k's AUC ranks samples by ``probabilities[:, k]``. Paper 002
    (COVID-19 / pneumonia / normal) reports exactly these. Keys are ``"<metric>/<class name>"``.
    A class's AUC needs both positives and negatives in ``y_true``: when the class is absent (or
    is the only class present) its "auc/<name>" key is left out, and "macro_auc" is the mean of
    the AUCs that exist (left out when none does), so no NaN reaches a report.
    """
    truth = _labels(y_true, "y_true").astype(int)
    pred = _labels(y_pred, "y_pred").astype(int)
    _check_pair(truth, pred)
    n_classes = len(class_names)
    scores = np.asarray(probabilities, dtype=float)
    if scores.shape != (truth.size, n_classes):
        raise ValueError(f"probabilities has shape {scores.shape}, expected {(truth.size, n_classes)}")
    cm = confusion_matrix(truth, pred, labels=list(range(n_classes)))
    n = int(cm.sum())
    result: dict[str, float] = {}
    aucs: list[float] = []
    for k, name in enumerate(class_names):
        # One-vs-rest counts for class k read off the confusion matrix (rows true, columns predicted).
        tp = int(cm[k, k])
        fn = int(cm[k, :].sum()) - tp
        fp = int(cm[:, k].sum()) - tp
        tn = n - tp - fn - fp
        result[f"accuracy/{name}"] = _ratio(tp + tn, n)
        result[f"specificity/{name}"] = _ratio(tn, tn + fp)
        result[f"sensitivity/{name}"] = _ratio(tp, tp + fn)
        result[f"f1/{name}"] = _ratio(2 * tp, 2 * tp + fp + fn)
        is_k = truth == k
        if 0 < int(is_k.sum()) < truth.size:
            auc = float(roc_auc_score(is_k, scores[:, k]))
            result[f"auc/{name}"] = auc
            aucs.append(auc)
    if aucs:
        result["macro_auc"] = float(np.mean(aucs))
    result["accuracy"] = _ratio(np.trace(cm), n)
    return result


def normalised_confusion(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int) -> np.ndarray:
    """Confusion matrix (rows true class, columns predicted) with each row summing to 1.

    A row whose class never occurs in ``y_true`` stays all zeros (sklearn's ``normalize="true"``
    turns those 0/0 rows into zeros, without a warning), so a plot never shows NaN cells.
    """
    truth = _labels(y_true, "y_true").astype(int)
    pred = _labels(y_pred, "y_pred").astype(int)
    _check_pair(truth, pred)
    return confusion_matrix(truth, pred, labels=list(range(n_classes)), normalize="true").astype(float)


def icbhi_scores(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, float]:
    """The ICBHI 2017 challenge scores for respiratory cycles (0 normal, 1 crackle, 2 wheeze, 3 both).

    4-class (the official definition): specificity = correct normal / all normal; sensitivity =
    (correct crackle + correct wheeze + correct both) / all abnormal, where an abnormal cycle
    counts only if its exact class is predicted; score = the mean of the two. 2-class (normal vs
    abnormal): an abnormal cycle predicted as any abnormal class counts as detected, giving
    "specificity_2class", "sensitivity_2class" and "score_2class". Empty denominators give 0.0.
    """
    truth = _labels(y_true, "y_true").astype(int)
    pred = _labels(y_pred, "y_pred").astype(int)
    _check_pair(truth, pred)
    cm = confusion_matrix(truth, pred, labels=[0, 1, 2, 3])
    # The challenge scores are sums of confusion-matrix cells, not one-vs-rest rates, so no
    # sklearn scorer gives them directly.
    specificity = _ratio(cm[0, 0], cm[0, :].sum())
    sensitivity = _ratio(cm[1, 1] + cm[2, 2] + cm[3, 3], cm[1:, :].sum())
    # Normal specificity is the same in both tasks (a normal cycle is right only if predicted normal).
    sensitivity_2class = _ratio(cm[1:, 1:].sum(), cm[1:, :].sum())
    return {
        "specificity": specificity,
        "sensitivity": sensitivity,
        "score": (specificity + sensitivity) / 2,
        "specificity_2class": specificity,
        "sensitivity_2class": sensitivity_2class,
        "score_2class": (specificity + sensitivity_2class) / 2,
    }


def roc_points(y_true_binary: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray, float]:
    """ROC curve points (false-positive rate, true-positive rate) and the area under it, for plotting.

    Needs both classes in ``y_true_binary`` (the curve is undefined otherwise; sklearn would warn
    and return NaN, so this raises ValueError instead).
    """
    truth = _labels(y_true_binary, "y_true_binary").astype(bool)
    values = _labels(scores, "scores").astype(float)
    _check_pair(truth, values)
    if truth.all() or not truth.any():
        raise ValueError("ROC needs both positive and negative samples in y_true_binary")
    fpr, tpr, _thresholds = roc_curve(truth, values)
    return fpr, tpr, float(roc_auc_score(truth, values))


# --------------------------------------------------------------------------- segmentation


def _surface(mask: np.ndarray) -> np.ndarray:
    """The boundary voxels of a binary mask: the mask minus its erosion.

    Erosion uses face connectivity (6-neighbourhood in 3-D, 4 in 2-D), as MedPy does: a voxel is
    on the surface when one of its face neighbours is background. border_value=0 treats outside
    the array as background, so a mask touching the array edge has its edge voxels on the surface.
    """
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def dice_score(prediction: ArrayLike, truth: ArrayLike) -> float:
    """Dice of two binary masks (1 when both are empty): the cheap number a validation loop needs."""
    a, b = np.asarray(prediction).astype(bool), np.asarray(truth).astype(bool)
    total = int(a.sum()) + int(b.sum())
    return _ratio(2 * int(np.logical_and(a, b).sum()), total) if total else 1.0


def mask_volume_ml(mask: ArrayLike, spacing: Sequence[float]) -> float:
    """Volume of a binary mask in millilitres: voxel count times the voxel volume (``spacing`` in mm per axis).

    The same count the viewer shows (``SegmentationResult.volume_ml``); 1 mL = 1000 mm^3.
    """
    array = np.asarray(mask).astype(bool)
    sizes = tuple(float(s) for s in spacing)
    if len(sizes) != array.ndim or any(s <= 0 for s in sizes):
        raise ValueError(f"spacing {tuple(spacing)} must give one positive size per axis ({array.ndim})")
    return float(np.count_nonzero(array)) * float(np.prod(sizes)) / 1000.0


def segmentation_metrics(
    prediction: ArrayLike,
    truth: ArrayLike,
    spacing: Sequence[float],
) -> dict[str, float]:
    """Overlap and surface-distance metrics of a predicted binary mask against the reference mask.

    ``prediction`` and ``truth`` are boolean arrays (2-D or 3-D) of the same shape; ``spacing``
    is millimetres per voxel along each array axis, in array-axis order. Keys: "dice", "voe"
    (volumetric overlap error, 1 - |A∩B|/|A∪B|), "precision" (|A∩B|/|A|), "recall" (|A∩B|/|B|),
    and in mm "asd_mm" (average symmetric surface distance: the mean over every surface voxel of
    either mask of its distance to the other mask's surface, both directions pooled),
    "hausdorff_mm" (the maximum of those distances) and "hd95_mm" (their 95th percentile).

    Both masks empty counts as perfect agreement: dice, precision and recall 1, voe 0, distances
    0. Exactly one empty: dice 0, voe 1, precision and recall 0, and the distances are ``inf``
    (there is no surface to measure to); callers averaging over cases must handle that.
    """
    a = np.asarray(prediction).astype(bool)
    b = np.asarray(truth).astype(bool)
    if a.shape != b.shape:
        raise ValueError(f"prediction has shape {a.shape} but truth has {b.shape}")
    if a.ndim not in (2, 3):
        raise ValueError(f"masks must be 2-D or 3-D, got {a.ndim}-D")
    sampling = tuple(float(s) for s in spacing)
    if len(sampling) != a.ndim or any(s <= 0 for s in sampling):
        raise ValueError(f"spacing {tuple(spacing)} must give one positive size per axis ({a.ndim})")

    size_a, size_b = int(a.sum()), int(b.sum())
    if size_a == 0 and size_b == 0:
        return {
            "dice": 1.0,
            "voe": 0.0,
            "precision": 1.0,
            "recall": 1.0,
            "asd_mm": 0.0,
            "hausdorff_mm": 0.0,
            "hd95_mm": 0.0,
        }
    intersection = int(np.logical_and(a, b).sum())
    union = int(np.logical_or(a, b).sum())
    result = {
        "dice": _ratio(2 * intersection, size_a + size_b),
        "voe": 1.0 - _ratio(intersection, union),
        "precision": _ratio(intersection, size_a),
        "recall": _ratio(intersection, size_b),
    }
    if size_a == 0 or size_b == 0:
        result.update(asd_mm=float("inf"), hausdorff_mm=float("inf"), hd95_mm=float("inf"))
        return result

    surface_a, surface_b = _surface(a), _surface(b)
    # Distance from every voxel to the nearest surface voxel of the other mask, in mm.
    to_b = ndimage.distance_transform_edt(~surface_b, sampling=sampling)
    to_a = ndimage.distance_transform_edt(~surface_a, sampling=sampling)
    distances = np.concatenate([to_b[surface_a], to_a[surface_b]])
    result.update(
        asd_mm=float(distances.mean()),
        hausdorff_mm=float(distances.max()),
        hd95_mm=float(np.percentile(distances, 95)),
    )
    return result
