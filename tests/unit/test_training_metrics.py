"""training.common.metrics: every expected value is worked out by hand (or by brute force) here."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

from training.common.metrics import (
    binary_metrics,
    icbhi_scores,
    mask_volume_ml,
    multiclass_metrics,
    normalised_confusion,
    roc_points,
    segmentation_metrics,
)

# --------------------------------------------------------------------------- binary


def test_binary_metrics_by_hand() -> None:
    # Confusion matrix (positive = 1):
    #                 pred 1   pred 0
    #   true 1 (10)   TP=8     FN=2
    #   true 0 (10)   FP=1     TN=9
    y_true = [1] * 10 + [0] * 10
    y_pred = [1] * 8 + [0] * 2 + [1] * 1 + [0] * 9
    m = binary_metrics(y_true, y_pred)
    # Cohen's kappa: po = (8 + 9) / 20 = 0.85; predicted positive 9/20, true positive 10/20,
    # pe = 9/20 * 10/20 + 11/20 * 10/20 = (90 + 110) / 400 = 0.5; kappa = (0.85 - 0.5) / (1 - 0.5) = 0.7.
    po = 17 / 20
    pe = 9 / 20 * 10 / 20 + 11 / 20 * 10 / 20
    assert pe == pytest.approx(0.5)
    expected = {
        "accuracy": 17 / 20,
        "recall": 8 / 10,
        "sensitivity": 8 / 10,
        "specificity": 9 / 10,
        "precision": 8 / 9,
        "f1": 2 * 8 / (2 * 8 + 1 + 2),  # = 16/19
        "kappa": (po - pe) / (1 - pe),  # = 0.7
    }
    assert set(m) == set(expected)
    for key, value in expected.items():
        assert m[key] == pytest.approx(value, abs=1e-12), key
    assert m["kappa"] == pytest.approx(0.7)
    assert all(isinstance(v, float) for v in m.values())


def test_binary_metrics_positive_label_and_strings() -> None:
    # Same data with string labels: "stone" is positive, so the numbers match the 0/1 case.
    y_true = ["stone"] * 10 + ["normal"] * 10
    y_pred = ["stone"] * 8 + ["normal"] * 2 + ["stone"] + ["normal"] * 9
    m = binary_metrics(y_true, y_pred, positive="stone")
    assert m["recall"] == pytest.approx(0.8)
    assert m["specificity"] == pytest.approx(0.9)
    # Swapping the positive class swaps sensitivity and specificity; precision becomes TN/(TN+FN) = 9/11.
    swapped = binary_metrics(y_true, y_pred, positive="normal")
    assert swapped["recall"] == pytest.approx(0.9)
    assert swapped["specificity"] == pytest.approx(0.8)
    assert swapped["precision"] == pytest.approx(9 / 11)
    assert swapped["kappa"] == pytest.approx(m["kappa"])  # kappa is symmetric in the labels


def test_binary_metrics_zero_division_gives_zero_without_warning() -> None:
    # Nothing predicted positive: TP=0 FP=0 FN=3 TN=2 -> precision 0/0 -> 0.0, f1 0/3 = 0.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = binary_metrics([1, 1, 1, 0, 0], [0, 0, 0, 0, 0])
        # Both raters say "positive" for everything: specificity 0/0 and kappa (pe = 1) undefined.
        all_positive = binary_metrics([1, 1, 1], [1, 1, 1])
    assert m["precision"] == 0.0
    assert m["recall"] == 0.0
    assert m["f1"] == 0.0
    assert m["specificity"] == 1.0
    assert m["accuracy"] == pytest.approx(2 / 5)
    # po = 0.4; pe = 0 * 3/5 + 1 * 2/5 = 0.4 -> kappa 0.
    assert m["kappa"] == pytest.approx(0.0)
    assert not any(np.isnan(v) for v in m.values())
    assert all_positive["specificity"] == 0.0
    assert all_positive["kappa"] == 0.0
    assert all_positive["accuracy"] == 1.0


# --------------------------------------------------------------------------- multiclass

CLASSES = ("covid", "pneumonia", "normal")
# Ten samples; hard predictions and probabilities are independent inputs (AUC ranks the scores).
Y_TRUE = [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
Y_PRED = [0, 0, 1, 1, 1, 2, 2, 2, 2, 0]
PROBABILITIES = [
    [0.8, 0.1, 0.1],
    [0.7, 0.2, 0.1],
    [0.6, 0.3, 0.1],
    [0.1, 0.8, 0.1],
    [0.1, 0.7, 0.2],
    [0.1, 0.25, 0.65],
    [0.1, 0.1, 0.8],
    [0.2, 0.1, 0.7],
    [0.3, 0.1, 0.6],
    [0.5, 0.1, 0.4],
]


def test_multiclass_metrics_by_hand() -> None:
    # Confusion matrix (rows true, columns predicted):
    #               covid  pneumonia  normal
    #   covid         2        1        0
    #   pneumonia     0        2        1
    #   normal        1        0        3
    # One-vs-rest (n = 10):
    #   covid:     TP=2 FN=1 FP=1 TN=6 -> acc 8/10, spec 6/7, sens 2/3, f1 4/6
    #   pneumonia: TP=2 FN=1 FP=1 TN=6 -> acc 8/10, spec 6/7, sens 2/3, f1 4/6
    #   normal:    TP=3 FN=1 FP=1 TN=5 -> acc 8/10, spec 5/6, sens 3/4, f1 6/8
    # AUC (pairs positive > negative / all pairs):
    #   covid: positives 0.8 0.7 0.6, negatives all <= 0.5 -> 21/21 = 1
    #   pneumonia: positives 0.8 0.7 0.25; negative 0.3 beats 0.25 -> (21 - 1)/21 = 20/21
    #   normal: positives 0.8 0.7 0.6 0.4; negative 0.65 beats 0.6 and 0.4 -> (24 - 2)/24 = 11/12
    m = multiclass_metrics(Y_TRUE, Y_PRED, np.array(PROBABILITIES), CLASSES)
    expected = {
        "accuracy/covid": 8 / 10,
        "specificity/covid": 6 / 7,
        "sensitivity/covid": 2 / 3,
        "f1/covid": 4 / 6,
        "auc/covid": 1.0,
        "accuracy/pneumonia": 8 / 10,
        "specificity/pneumonia": 6 / 7,
        "sensitivity/pneumonia": 2 / 3,
        "f1/pneumonia": 4 / 6,
        "auc/pneumonia": 20 / 21,
        "accuracy/normal": 8 / 10,
        "specificity/normal": 5 / 6,
        "sensitivity/normal": 3 / 4,
        "f1/normal": 6 / 8,
        "auc/normal": 11 / 12,
        "macro_auc": (1.0 + 20 / 21 + 11 / 12) / 3,
        "accuracy": 7 / 10,
    }
    assert set(m) == set(expected)
    for key, value in expected.items():
        assert m[key] == pytest.approx(value, abs=1e-12), key


def test_multiclass_absent_class_has_no_auc() -> None:
    # Only the first six samples: "normal" never occurs in y_true, so no auc/normal and the macro
    # AUC averages covid and pneumonia only. Covid positives 0.8 0.7 0.6 vs negatives 0.1 0.1 0.1 -> 1;
    # pneumonia positives 0.8 0.7 0.25 vs negatives 0.1 0.2 0.3 -> (9 - 1)/9 = 8/9.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = multiclass_metrics(Y_TRUE[:6], Y_PRED[:6], np.array(PROBABILITIES[:6]), CLASSES)
    assert "auc/normal" not in m
    assert m["auc/covid"] == pytest.approx(1.0)
    assert m["auc/pneumonia"] == pytest.approx(8 / 9)
    assert m["macro_auc"] == pytest.approx((1.0 + 8 / 9) / 2)
    # normal: TP=0 FN=0 FP=1 (pneumonia predicted normal) TN=5 -> sensitivity 0/0 -> 0.0.
    assert m["sensitivity/normal"] == 0.0
    assert m["specificity/normal"] == pytest.approx(5 / 6)
    assert not any(np.isnan(v) for v in m.values())


def test_multiclass_rejects_wrong_probability_shape() -> None:
    with pytest.raises(ValueError, match="probabilities"):
        multiclass_metrics(Y_TRUE, Y_PRED, np.array(PROBABILITIES)[:, :2], CLASSES)


def test_normalised_confusion_rows_sum_to_one() -> None:
    # Rows true: class 0 -> [1, 1, 0] of 2, class 1 -> [0, 1, 0] of 1, class 2 absent -> zeros.
    cm = normalised_confusion([0, 0, 1], [0, 1, 1], n_classes=3)
    np.testing.assert_allclose(cm, [[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])


# --------------------------------------------------------------------------- ICBHI


def test_icbhi_scores_by_hand() -> None:
    # 0 normal, 1 crackle, 2 wheeze, 3 both. Confusion matrix (rows true, columns predicted):
    #               normal crackle wheeze both
    #   normal (4)     3      1       0     0
    #   crackle (3)    0      2       0     1    <- a crackle predicted as "both"
    #   wheeze (2)     1      0       1     0
    #   both (1)       0      0       0     1
    y_true = [0, 0, 0, 0, 1, 1, 1, 2, 2, 3]
    y_pred = [0, 0, 0, 1, 1, 1, 3, 2, 0, 3]
    s = icbhi_scores(y_true, y_pred)
    # 4-class: Sp = 3/4; Se = (2 + 1 + 1) / 6 = 2/3 (crackle-as-both is wrong); score = (3/4 + 2/3)/2 = 17/24.
    # 2-class: abnormal predicted abnormal = 3 crackle + 1 wheeze + 1 both = 5 of 6; score = (3/4 + 5/6)/2 = 19/24.
    expected = {
        "specificity": 3 / 4,
        "sensitivity": 4 / 6,
        "score": 17 / 24,
        "specificity_2class": 3 / 4,
        "sensitivity_2class": 5 / 6,
        "score_2class": 19 / 24,
    }
    assert set(s) == set(expected)
    for key, value in expected.items():
        assert s[key] == pytest.approx(value, abs=1e-12), key


def test_icbhi_scores_empty_denominators() -> None:
    # Only normal cycles: sensitivity has no abnormal cycles to count -> 0.0, Sp = 1/2.
    s = icbhi_scores([0, 0], [0, 2])
    assert s["sensitivity"] == 0.0
    assert s["sensitivity_2class"] == 0.0
    assert s["specificity"] == pytest.approx(0.5)
    assert s["score"] == pytest.approx(0.25)


# --------------------------------------------------------------------------- ROC


def test_roc_points() -> None:
    # Positives 0.35, 0.8; negatives 0.1, 0.4: 3 of 4 pairs ordered correctly -> AUC 0.75.
    # Lowering the threshold past 0.8 (pos), 0.4 (neg), 0.35 (pos), 0.1 (neg) walks the corners
    # (0, 0) -> (0, 0.5) -> (0.5, 0.5) -> (0.5, 1) -> (1, 1).
    fpr, tpr, auc = roc_points([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert auc == pytest.approx(0.75)
    np.testing.assert_allclose(fpr, [0.0, 0.0, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(tpr, [0.0, 0.5, 0.5, 1.0, 1.0])
    assert np.trapezoid(tpr, fpr) == pytest.approx(auc)
    with pytest.raises(ValueError, match="both"):
        roc_points([1, 1], [0.2, 0.3])


# --------------------------------------------------------------------------- segmentation


def _brute_surface_points(mask: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Physical coordinates (mm) of mask voxels with a face neighbour outside the mask or the array."""
    padded = np.pad(mask, 1, constant_values=False)
    core = tuple(slice(1, -1) for _ in range(mask.ndim))
    on_surface = np.zeros(mask.shape, dtype=bool)
    for axis, step in itertools.product(range(mask.ndim), (-1, 1)):
        on_surface |= mask & ~np.roll(padded, step, axis=axis)[core]
    return np.argwhere(on_surface) * np.asarray(spacing, dtype=float)


def _brute_distances(a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Pooled surface distances A->B and B->A from all pairwise point distances (the reference)."""
    pa, pb = _brute_surface_points(a, spacing), _brute_surface_points(b, spacing)
    pairwise = np.linalg.norm(pa[:, None, :] - pb[None, :, :], axis=-1)
    return np.concatenate([pairwise.min(axis=1), pairwise.min(axis=0)])


def _assert_matches_brute_force(a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...]) -> dict[str, float]:
    m = segmentation_metrics(a, b, spacing)
    reference = _brute_distances(a, b, spacing)
    assert m["asd_mm"] == pytest.approx(reference.mean(), abs=1e-9)
    assert m["hausdorff_mm"] == pytest.approx(reference.max(), abs=1e-9)
    assert m["hd95_mm"] == pytest.approx(np.percentile(reference, 95), abs=1e-9)
    inter, union = np.logical_and(a, b).sum(), np.logical_or(a, b).sum()
    assert m["dice"] == pytest.approx(2 * inter / (a.sum() + b.sum()))
    assert m["voe"] == pytest.approx(1 - inter / union)
    return m


def test_segmentation_squares_offset_by_one_pixel() -> None:
    # A: 4x4 square at rows 2-5, cols 2-5; B: the same square one column to the right (cols 3-6).
    a = np.zeros((10, 10), dtype=bool)
    b = np.zeros((10, 10), dtype=bool)
    a[2:6, 2:6] = True
    b[2:6, 3:7] = True
    spacing = (2.0, 0.5)  # mm per row, mm per column
    m = _assert_matches_brute_force(a, b, spacing)
    # |A| = |B| = 16, |A∩B| = 4 x 3 = 12, |A∪B| = 20.
    assert m["dice"] == pytest.approx(2 * 12 / (16 + 16))  # 0.75
    assert m["voe"] == pytest.approx(1 - 12 / 20)  # 0.4
    assert m["precision"] == pytest.approx(12 / 16)
    assert m["recall"] == pytest.approx(12 / 16)
    # Each surface is the 12-pixel ring. A's ring to B's ring: the top and bottom row pixels in
    # cols 3-5 (6 of them) lie on B's ring (0 mm); A's left column (4) and the two middle pixels of
    # its right column are one column (0.5 mm) from B's ring. By symmetry the same for B -> A, so
    # the 24 pooled distances are twelve 0s and twelve 0.5s: ASD 0.25, Hausdorff 0.5, HD95 0.5.
    assert m["asd_mm"] == pytest.approx(0.25)
    assert m["hausdorff_mm"] == pytest.approx(0.5)
    assert m["hd95_mm"] == pytest.approx(0.5)


def test_segmentation_offset_along_the_coarse_axis_and_at_the_border() -> None:
    # Shift along the 2 mm axis instead, with B touching the array edge (edge pixels are surface).
    a = np.zeros((8, 9), dtype=bool)
    b = np.zeros((8, 9), dtype=bool)
    a[3:7, 1:6] = True
    b[4:8, 0:4] = True
    m = _assert_matches_brute_force(a, b, (2.0, 0.5))
    assert m["hausdorff_mm"] > 0.5


def test_segmentation_3d_anisotropic_against_brute_force() -> None:
    spacing = (2.5, 0.7, 0.7)
    z, y, x = np.meshgrid(np.arange(10), np.arange(20), np.arange(20), indexing="ij")
    # A: an ellipsoid about 20 mm across in every direction; B: a box, overlapping it partly.
    a = ((z - 4.5) * 2.5 / 10) ** 2 + ((y - 9.5) * 0.7 / 6) ** 2 + ((x - 9.0) * 0.7 / 6) ** 2 <= 1.0
    b = np.zeros_like(a)
    b[2:9, 6:18, 4:13] = True
    assert 0 < np.logical_and(a, b).sum() < min(a.sum(), b.sum())
    m = _assert_matches_brute_force(a, b, spacing)
    assert 0 < m["dice"] < 1
    assert m["hd95_mm"] <= m["hausdorff_mm"]


def test_segmentation_identical_masks() -> None:
    a = np.zeros((6, 7, 8), dtype=bool)
    a[1:4, 2:6, 3:7] = True
    m = segmentation_metrics(a, a, (1.0, 1.0, 1.0))
    assert m == {
        "dice": 1.0,
        "voe": 0.0,
        "precision": 1.0,
        "recall": 1.0,
        "asd_mm": 0.0,
        "hausdorff_mm": 0.0,
        "hd95_mm": 0.0,
    }


def test_segmentation_both_empty() -> None:
    empty = np.zeros((5, 5), dtype=bool)
    m = segmentation_metrics(empty, empty, (1.0, 1.0))
    assert m["dice"] == 1.0
    assert m["voe"] == 0.0
    assert m["asd_mm"] == 0.0
    assert m["hausdorff_mm"] == 0.0
    assert m["hd95_mm"] == 0.0


@pytest.mark.parametrize("prediction_empty", [True, False])
def test_segmentation_one_empty(prediction_empty: bool) -> None:
    empty = np.zeros((4, 5, 6), dtype=bool)
    full = empty.copy()
    full[1:3, 1:4, 2:5] = True
    prediction, truth = (empty, full) if prediction_empty else (full, empty)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = segmentation_metrics(prediction, truth, (2.5, 0.7, 0.7))
    assert m["dice"] == 0.0
    assert m["voe"] == 1.0
    assert m["precision"] == 0.0
    assert m["recall"] == 0.0
    assert m["asd_mm"] == np.inf
    assert m["hausdorff_mm"] == np.inf
    assert m["hd95_mm"] == np.inf


def test_segmentation_rejects_bad_spacing_or_shapes() -> None:
    a = np.ones((3, 3), dtype=bool)
    with pytest.raises(ValueError, match="spacing"):
        segmentation_metrics(a, a, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="shape"):
        segmentation_metrics(a, np.ones((3, 4), dtype=bool), (1.0, 1.0))


def test_mask_volume_ml_by_hand() -> None:
    """A 10 x 20 x 30 voxel box at 2.5 x 0.8 x 0.8 mm: 6000 voxels of 1.6 mm^3 = 9.6 mL."""
    mask = np.zeros((12, 25, 40), dtype=np.uint8)
    mask[1:11, 2:22, 5:35] = 1
    assert mask_volume_ml(mask, (2.5, 0.8, 0.8)) == pytest.approx(9.6)
    assert mask_volume_ml(np.zeros((2, 2), dtype=bool), (1.0, 1.0)) == 0.0
    with pytest.raises(ValueError, match="spacing"):
        mask_volume_ml(mask, (1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        mask_volume_ml(mask, (1.0, 0.0, 1.0))


def test_inverse_frequency_weights_make_each_present_class_weigh_the_same_and_skip_absent_ones() -> None:
    from training.common.losses import inverse_frequency_weights

    labels = [0] * 60 + [1] * 9 + [2] * 17  # ICBHI sample: no "both" cycle
    weights = inverse_frequency_weights(labels, 4).numpy()
    per_class = [weights[k] * labels.count(k) for k in range(3)]
    np.testing.assert_allclose(per_class, [len(labels) / 3] * 3, rtol=1e-6)
    assert weights[3] == 0.0
    np.testing.assert_allclose(weights[np.asarray(labels)].mean(), 1.0, rtol=1e-6)
