"""The skin retraining of issue 20: both ISIC sources read together, the split per source, the operating point
chosen on validation photos with Wilson intervals, and the feature cache that spares re-fits the CNN."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medview.config import resources_dir
from medview.engine.api import validated_summary
from medview.engine.manifest import load_manifest
from training.common.feature_cache import FeatureCache, cached_network_features, network_digest
from training.common.operating_point import (
    floor_significant,
    rates_with_intervals,
    threshold_for_sensitivity,
    wilson_interval,
)
from training.common.splits import Split
from training.skin.data import read_skin_dataset, read_skin_sources
from training.skin.train import skin_split

#: the split digest of the 1.0.0 demo bundle (ISIC UDA-1 alone, seed 0, test 20%), from its manifest
DEMO_1_0_0_SPLIT_DIGEST = "11a18eb504e93119"


# ------------------------------------------------------------------ operating point


def test_wilson_interval_matches_the_published_values() -> None:
    # Newcombe (1998), Table I: 81/263 -> 0.2553-0.3662; 15/148 -> 0.0624-0.1605
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson_interval(15, 148) == pytest.approx((0.0624, 0.1605), abs=1e-4)
    low, high = wilson_interval(10, 10)
    assert high == 1.0
    assert low == pytest.approx(0.7225, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="successes <= total"):
        wilson_interval(5, 4)


def test_intervals_over_patients_count_each_patient_once_at_the_rate_measured_on_the_items() -> None:
    """320 slices of 7 scans (5 stone, 2 normal): the rates are over slices, the intervals over scans."""
    truth = np.array([True] * 167 + [False] * 153)
    called = truth.copy()
    called[:7] = False  # 7 stone slices missed
    scans = [f"stone{i % 5}" for i in range(167)] + [f"normal{i % 2}" for i in range(153)]
    over_slices = rates_with_intervals(truth, called)
    over_scans = rates_with_intervals(truth, called, scans)
    assert over_scans["sensitivity"] == over_slices["sensitivity"] == pytest.approx(160 / 167)
    assert over_scans["specificity"] == over_slices["specificity"] == 1.0
    assert (over_scans["positive_patients"], over_scans["negative_patients"]) == (5, 2)
    assert (over_scans["sensitivity_ci_low"], over_scans["sensitivity_ci_high"]) == pytest.approx(
        wilson_interval(5 * 160 / 167, 5)
    )
    assert over_scans["specificity_ci_low"] == pytest.approx(wilson_interval(2, 2)[0])
    assert over_scans["specificity_ci_low"] == pytest.approx(0.3424, abs=1e-4)  # 2 normal scans
    assert over_slices["specificity_ci_low"] == pytest.approx(0.9755, abs=1e-4)  # what 153 slices claimed
    assert over_scans["specificity_ci_high"] == 1.0
    with pytest.raises(ValueError, match="patients"):
        rates_with_intervals(truth, called, scans[:10])


def test_threshold_for_sensitivity_keeps_the_most_specificity_at_or_above_the_target() -> None:
    truth = np.array([1] * 10 + [0] * 10, dtype=bool)
    scores = np.r_[np.linspace(0.95, 0.5, 10), np.linspace(0.6, 0.0, 10)]
    threshold = threshold_for_sensitivity(truth, scores, 0.9)
    # 9 of 10 positives reach 0.55, no higher threshold does; the next negative below is 0.533: the middle of the gap
    assert scores[10 + 1] < threshold < scores[8]
    rates = rates_with_intervals(truth, scores >= threshold)
    assert rates["sensitivity"] == pytest.approx(0.9)
    assert rates["specificity"] == pytest.approx(0.9)  # only the negative at 0.6 is called positive
    assert rates["sensitivity_ci_low"] < 0.9 < rates["sensitivity_ci_high"]
    # tied scores: the sensitivity reached can exceed the target
    tied = np.array([0.8, 0.8, 0.8, 0.8, 0.2, 0.1])
    assert threshold_for_sensitivity(np.array([1, 1, 1, 1, 0, 0], dtype=bool), tied, 0.6) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no positives"):
        threshold_for_sensitivity(np.zeros(3, dtype=bool), np.ones(3), 0.9)


def test_threshold_of_separated_validation_scores_sits_mid_gap_in_log_odds() -> None:
    """Stones at 0.99-1.0 and normal slices at 0.001-0.01: not 0.99 (the stones' edge), but half-way in log-odds."""
    truth = np.array([1, 1, 1, 0, 0], dtype=bool)
    scores = np.array([1.0, 0.999, 0.99, 0.01, 0.001])
    threshold = threshold_for_sensitivity(truth, scores, 0.9)
    assert threshold == pytest.approx(0.5)
    odds = np.sqrt((0.01 / 0.99) * (0.999 / 0.001))  # the geometric mean of the odds at 0.01 and 0.999
    assert threshold_for_sensitivity(truth, scores, 0.6) == pytest.approx(odds / (1 + odds))
    # every negative at or above the target's threshold: nothing to place it between, it stays
    assert threshold_for_sensitivity(np.array([1, 0], dtype=bool), np.array([0.3, 0.9]), 1.0) == pytest.approx(0.3)


# ------------------------------------------------------------------ data and split


def test_both_isic_sources_are_read_together(shared_data: Path) -> None:
    sources = read_skin_sources(shared_data / "skin")
    assert sources.names() == ["isic2017_256px", "isic_uda1_250px"]
    assert sources.dataset.counts() == {"images": 1900, "patients": 1900, "benign": 1537, "malignant": 363}
    ids = sources.dataset.ids
    assert len(set(ids)) == 1900
    assert "isic2017_256px/images/ISIC_0000550.jpg" in ids  # a table whose photos are in images/
    # one source alone reads as before
    assert read_skin_sources(shared_data / "skin" / "isic_uda1_250px").names() == ["isic_uda1_250px"]


def test_the_split_is_stratified_per_source_and_keeps_the_previous_test_photos_held_out(shared_data: Path) -> None:
    sources = read_skin_sources(shared_data / "skin")
    split = skin_split(sources, seed=0)
    split.check(sources.dataset.patients)
    assert (len(split.train), len(split.validation), len(split.test)) == (1216, 304, 380)
    labels, origin = np.asarray(sources.dataset.labels), np.asarray(sources.sources)
    for side in (split.train, split.validation, split.test):
        for name in sources.names():
            mine = origin[side] == name
            share = labels[side][mine].mean()
            assert share == pytest.approx(labels[origin == name].mean(), abs=0.02), (name, share)
    # the UDA-1 test photos are exactly those the 1.0.0 bundle held out, so it can be compared on photos it never saw
    alone = read_skin_dataset(shared_data / "skin" / "isic_uda1_250px")
    held = {sources.dataset.items[i].path.name for i in split.test if origin[i] == "isic_uda1_250px"}
    test = np.array([i for i, item in enumerate(alone.items) if item.path.name in held])
    train = np.setdiff1d(np.arange(len(alone.items)), test)
    assert Split(train, np.zeros(0, dtype=int), test, "").digest(alone.ids) == DEMO_1_0_0_SPLIT_DIGEST


# ------------------------------------------------------------------ feature cache


class _Counting(nn.Module):
    """A tiny 'network' whose features are the photo file's size and first byte; counts its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.calls = 0

    def compute(self, paths: list[Path]) -> np.ndarray:
        self.calls += 1
        scale = float(self.weight.detach())
        return np.array([[path.stat().st_size, path.read_bytes()[0]] for path in paths], dtype=np.float32) * scale


def test_the_feature_cache_computes_each_photo_once_per_network_and_variant(shared_data: Path, tmp_path: Path) -> None:
    photos = sorted((shared_data / "skin" / "isic_uda1_250px").glob("*.jpg"))[:3]
    network = _Counting()
    first = cached_network_features(network, "tiny", tmp_path, photos, "photo", network.compute)
    again = cached_network_features(network, "tiny", tmp_path, photos, "photo", network.compute)
    assert network.calls == 1
    np.testing.assert_array_equal(first, again)
    # a renamed copy is the same file: cached; another variant or other weights are not
    copy = Path(shutil.copy(photos[0], tmp_path / "renamed.jpg"))
    cached_network_features(network, "tiny", tmp_path, [copy], "photo", network.compute)
    assert network.calls == 1
    cached_network_features(network, "tiny", tmp_path, photos[:1], "hflip", network.compute)
    assert network.calls == 2
    key = network_digest(network, "tiny")
    with torch.no_grad():
        network.weight.fill_(2.0)
    assert network_digest(network, "tiny") != key
    doubled = cached_network_features(network, "tiny", tmp_path, photos, "photo", network.compute)
    assert network.calls == 3
    np.testing.assert_array_equal(doubled, 2 * first)
    assert len(list(FeatureCache(tmp_path, key).folder.glob("*.npy"))) == 4  # 3 photos + 1 flip, no temporaries


# ------------------------------------------------------------------ what the app shows


def test_the_validated_line_carries_the_95_percent_intervals_when_the_bundle_records_them() -> None:

    shipped = load_manifest(resources_dir() / "models" / "skin-demo")
    metrics = {
        **shipped.metrics,
        "sensitivity": 0.9589,
        "specificity": 0.2866,
        "sensitivity_ci_low": 0.886,
        "sensitivity_ci_high": 0.9859,
        "specificity_ci_low": 0.2389,
        "specificity_ci_high": 0.3396,
    }
    counts = {**shipped.trained_on.counts, "test": 380}
    card = replace(shipped, metrics=metrics, trained_on=replace(shipped.trained_on, counts=counts))
    assert validated_summary(card, 0.1) == (
        "Validated: sensitivity 0.96, specificity 0.29 at threshold 0.1 "
        "(95% CI: sensitivity 0.89–0.99, specificity 0.24–0.34); on 380 held-out images"
    )
    # without intervals the line stays as it was
    plain = {key: value for key, value in metrics.items() if "_ci_" not in key}
    assert validated_summary(replace(card, metrics=plain), 0.1) == (
        "Validated: sensitivity 0.96, specificity 0.29 at threshold 0.1; on 380 held-out images"
    )


def test_validated_line_names_the_held_out_patients_and_says_when_none_was_held_out() -> None:
    shipped = load_manifest(resources_dir() / "models" / "skin-demo")
    metrics = {"sensitivity": 0.9, "specificity": 0.8}
    counts = {"images": 1851, "test": 583, "test_patients": 10}
    card = replace(shipped, metrics=metrics, trained_on=replace(shipped.trained_on, counts=counts))
    assert validated_summary(card, 0.25).endswith("; on 583 held-out images of 10 patients")
    # intervals over images of few patients say they are too narrow (the images of a patient are alike);
    # intervals training computed over patients say over how many of each class
    intervals = {"sensitivity_ci_low": 0.8, "sensitivity_ci_high": 0.95, "specificity_ci_low": 0.7}
    clustered = replace(card, metrics={**metrics, **intervals, "specificity_ci_high": 0.9})
    assert validated_summary(clustered, 0.25) == (
        "Validated: sensitivity 0.90, specificity 0.80 at threshold 0.25 (95% CI counting images as independent, "
        "too narrow for 10 patients: sensitivity 0.80–0.95, specificity 0.70–0.90); "
        "on 583 held-out images of 10 patients"
    )
    over_patients = replace(
        clustered, metrics={**clustered.metrics, "interval_positive_patients": 6, "interval_negative_patients": 4}
    )
    assert "(95% CI over 6 malignant and 4 benign patients: sensitivity 0.80–0.95" in validated_summary(
        over_patients, 0.25
    )
    # COVID-19 from one patient per class: the slice score held out, the verdict on nobody unseen
    covid = replace(
        card,
        metrics={"infection_auc": 0.81},
        trained_on=replace(shipped.trained_on, counts={"patients": 3, "test": 0}),
    )
    assert validated_summary(covid) == (
        "Validated: slice infection AUC 0.81 on patients left out of training; "
        "no patient held out for the verdict: untested on unseen patients"
    )
    nothing = replace(covid, metrics={})
    assert validated_summary(nothing) == ("Validated: no patient held out for the verdict: untested on unseen patients")


def test_a_shown_threshold_is_cut_to_significant_digits_never_rounded_up_or_to_zero() -> None:
    assert floor_significant(0.123456) == 0.1234
    assert floor_significant(3.14159e-6) == 3.141e-6  # 4 decimals made this 0.0: every slice a stone
    assert floor_significant(0.99999) == 0.9999
    assert floor_significant(0.0) == 0.0
    scores = np.array([2.5e-6, 3.14159e-6, 0.2, 0.9])
    assert (scores >= floor_significant(3.14159e-6)).sum() == 3  # every item the exact threshold calls stays called
