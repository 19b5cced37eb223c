"""Operating points chosen on validation data, and the 95% intervals of the rates measured at them.

MODELS.md: a shipped bundle's threshold is chosen on validation patients for a
stated operating point (sensitivity 0.9 unless a section says otherwise), and
its manifest carries the sensitivity and specificity measured on held-out
patients with 95% intervals and the counts behind them.  Wilson score
intervals, because they stay inside [0, 1] and keep a sensible width at the
small counts (tens of positives) these samples have.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

Z_95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(successes: float, total: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``successes / total`` (95% by default); (0, 1) when total is 0.

    ``successes`` may be fractional: a rate measured over more items than the ``total`` it is counted as
    (``rates_with_intervals`` with patients)."""
    if total < 0 or not 0 <= successes <= max(total, 0):
        raise ValueError(f"wilson_interval: expected 0 <= successes <= total, got {successes} of {total}")
    if total == 0:
        return 0.0, 1.0
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact at the ends, not 1 - 1e-16
    high = 1.0 if successes == total else min(1.0, centre + half)
    return low, high


def threshold_for_sensitivity(truth: ArrayLike, scores: ArrayLike, target: float) -> float:
    """A threshold ``t`` whose rule ``score >= t`` reaches sensitivity ``target`` on these validation items, placed
    mid-way in the gap in which the validation specificity stays the most the target allows.

    The highest threshold that reaches the target keeps the most specificity.
    Every lower threshold down to the highest negative score below it keeps that
    specificity too (only positives lie in between, so the sensitivity can only
    rise).  The highest one sits on the positives' edge, the lowest on the
    negatives': a network that separates its validation scans (stones at 0.9999,
    normal slices below 0.01) put its threshold at 0.9999, where unseen stones at
    0.6-0.99 were missed.  So the threshold is the middle of that gap in log-odds
    (scores are probabilities or vote shares in [0, 1]): a maximum-margin choice
    that no held-out item influences.  With tied scores the sensitivity reached
    can exceed the target.  ``truth`` is boolean (True = positive).
    """
    if not 0 < target <= 1:
        raise ValueError(f"target sensitivity: expected 0 < target <= 1, got {target}")
    score_array, truth_array = np.asarray(scores, dtype=float), np.asarray(truth, dtype=bool)
    positive = np.sort(score_array[truth_array])[::-1]
    if positive.size == 0:
        raise ValueError("threshold_for_sensitivity: the validation data has no positives")
    needed = math.ceil(target * positive.size - 1e-9)  # positives that must score at or above t
    highest = float(positive[needed - 1])
    below = score_array[~truth_array & (score_array < highest)]
    if below.size == 0:
        return highest
    return _log_odds_midpoint(float(below.max()), highest)


def _log_odds_midpoint(low: float, high: float) -> float:
    """The point half-way between two probabilities in log-odds, strictly between them (never ``low`` itself)."""
    eps = 1e-12
    logit = [math.log(max(eps, v) / max(eps, 1 - v)) for v in (low, high)]
    middle = 1 / (1 + math.exp(-(logit[0] + logit[1]) / 2))
    return middle if low < middle <= high else high


def floor_significant(value: float, digits: int = 4) -> float:
    """``value`` cut (never rounded up) to ``digits`` significant digits, for a threshold shown on screen.

    Cutting keeps every item the exact threshold calls positive still positive.  A fixed
    number of decimals cannot: an overconfident network's stone threshold of 3e-6
    became 0.0000, which calls every slice a stone.
    """
    if value <= 0:
        return 0.0
    scale = 10.0 ** (digits - 1 - math.floor(math.log10(value)))
    return math.floor(value * scale) / scale


def rates_with_intervals(
    truth: ArrayLike, predicted: ArrayLike, patients: Sequence[str] | None = None
) -> dict[str, float]:
    """Sensitivity and specificity of boolean predictions with their 95% Wilson intervals, and the counts.

    The rates are over items.  With ``patients`` (one per item) each interval is over that class's
    patients instead: the Wilson interval of the rate measured on the items, counted as one observation
    per patient.  The slices of one scan are alike, so counting them as independent claims a certainty
    the patients do not give (kidney 1.4.0: specificity 0.98-1.00 from 153 slices of 2 normal scans);
    one per patient is the design effect at its largest (intraclass correlation 1), the cautious bound.
    ``positive_patients`` and ``negative_patients`` then give those counts.
    """
    truth_array = np.asarray(truth, dtype=bool)
    predicted_array = np.asarray(predicted, dtype=bool)
    if truth_array.shape != predicted_array.shape:
        raise ValueError(f"{truth_array.size} labels but {predicted_array.size} predictions")
    positives, negatives = int(truth_array.sum()), int((~truth_array).sum())
    true_positives = int((truth_array & predicted_array).sum())
    true_negatives = int((~truth_array & ~predicted_array).sum())
    sensitivity = true_positives / positives if positives else 0.0
    specificity = true_negatives / negatives if negatives else 0.0
    counted = {"positives": positives, "negatives": negatives}
    if patients is None:
        sensitivity_interval = wilson_interval(true_positives, positives)
        specificity_interval = wilson_interval(true_negatives, negatives)
    else:
        patient_array = np.asarray(patients)
        if patient_array.shape != truth_array.shape:
            raise ValueError(f"{truth_array.size} labels but {patient_array.size} patients")
        counted["positive_patients"] = len(set(patient_array[truth_array].tolist()))
        counted["negative_patients"] = len(set(patient_array[~truth_array].tolist()))
        sensitivity_interval = wilson_interval(sensitivity * counted["positive_patients"], counted["positive_patients"])
        specificity_interval = wilson_interval(specificity * counted["negative_patients"], counted["negative_patients"])
    return {
        "sensitivity": sensitivity,
        "sensitivity_ci_low": sensitivity_interval[0],
        "sensitivity_ci_high": sensitivity_interval[1],
        "specificity": specificity,
        "specificity_ci_low": specificity_interval[0],
        "specificity_ci_high": specificity_interval[1],
        **counted,
    }
