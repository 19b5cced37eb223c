"""Export refuses a model that ignores its input (issue 20, item 4), with small synthetic models and forests.

Each refusal has its own case: validation outputs near-constant, one class
decided on almost all of a class-balanced validation set, real inputs answered
as the blank input is.  A forest that does look at its input passes, and a
refused model leaves no bundle behind.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

from medview.engine.manifest import DataProvenance, InputSpec
from medview.errors import ModelError
from medview.models import create_model
from training.export import MAX_CLASS_SHARE, MIN_OUTPUT_SPREAD, ResponseEvidence, check_responsive, export_bundle

CLASSES = ("benign", "malignant")


def _features(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """5 features of which the first carries the label (shifted by 2 for class 1), the rest noise."""
    features = rng.normal(size=(labels.size, 5))
    features[:, 0] += 2.0 * labels
    return features


def _labels(count: int) -> np.ndarray:
    return np.arange(count) % 2


def _forest(features: np.ndarray, labels: np.ndarray) -> RandomForestClassifier:
    return RandomForestClassifier(n_estimators=20, min_samples_leaf=3, random_state=0).fit(features, labels)


def test_a_forest_that_reads_its_features_passes_and_reports_its_measures() -> None:
    rng = np.random.default_rng(0)
    train, validation = _labels(200), _labels(100)
    forest = _forest(_features(rng, train), train)
    probabilities = forest.predict_proba(_features(rng, validation))
    blank = forest.predict_proba(np.zeros((1, 5)))[0]
    measures = check_responsive(ResponseEvidence(probabilities, validation, blank), CLASSES)
    assert measures["output_spread"] > MIN_OUTPUT_SPREAD
    assert measures["largest_class_share"] < MAX_CLASS_SHARE
    assert measures["blank_like_share"] < MAX_CLASS_SHARE


def test_near_constant_validation_outputs_are_refused() -> None:
    """A forest fitted on features that do not vary (a dead backbone) answers every photo alike."""
    labels = _labels(100)
    forest = _forest(np.ones((100, 5)), labels)
    probabilities = forest.predict_proba(np.ones((40, 5)) + 1e-3 * np.random.default_rng(1).normal(size=(40, 5)))
    blank = forest.predict_proba(np.zeros((1, 5)))[0]
    with pytest.raises(ModelError, match="near-constant"):
        check_responsive(ResponseEvidence(probabilities, _labels(40), blank), CLASSES)


def test_a_threshold_that_calls_almost_every_photo_malignant_is_refused() -> None:
    """The 1.0.0 skin bundle's failure: its threshold called 141 of 150 ISIC 2017 photos malignant."""
    rng = np.random.default_rng(2)
    train, validation = _labels(200), _labels(100)
    forest = _forest(_features(rng, train), train)
    probabilities = forest.predict_proba(_features(rng, validation))
    blank = forest.predict_proba(np.zeros((1, 5)))[0]
    threshold = np.quantile(probabilities[:, 1], 0.02)  # 98% of the photos at or above it
    predicted = (probabilities[:, 1] >= threshold).astype(int)
    with pytest.raises(ModelError, match=r"decides malignant on 9\d\.\d% of a class-balanced validation set"):
        check_responsive(ResponseEvidence(probabilities, validation, blank, predicted), CLASSES)
    # the same forest at its majority vote decides both ways, so it passes
    check_responsive(ResponseEvidence(probabilities, validation, blank), CLASSES)


def test_a_model_that_answers_real_inputs_as_it_answers_a_blank_is_refused() -> None:
    """A logistic model barely moved by its input: its answers bunch on its blank answer, a few outliers aside.

    The outliers give the outputs a spread well above the floor and the
    decisions split both ways, so only the blank comparison catches it.
    """
    rng = np.random.default_rng(3)
    labels = _labels(200)
    inputs = rng.normal(size=200)
    inputs[:6] = [60, -60, 60, -60, 60, -60]  # three photos of each class the model reacts to
    malignant = 1 / (1 + np.exp(-0.1 * inputs))
    probabilities = np.column_stack([1 - malignant, malignant])
    blank = np.array([0.5, 0.5])  # the model's answer to input 0
    assert probabilities[:, 1].std() > MIN_OUTPUT_SPREAD
    with pytest.raises(ModelError, match="answers real inputs as it answers an empty one"):
        check_responsive(ResponseEvidence(probabilities, labels, blank), CLASSES)


def test_a_validation_set_without_one_class_cannot_show_anything() -> None:
    probabilities = np.tile([0.7, 0.3], (10, 1)) + np.linspace(-0.2, 0.2, 10)[:, None] * [1, -1]
    with pytest.raises(ModelError, match="has no malignant item"):
        check_responsive(ResponseEvidence(probabilities, np.zeros(10, dtype=int), np.array([0.5, 0.5])), CLASSES)


def test_a_class_the_data_lack_is_left_out_of_the_shares_when_two_or_more_remain() -> None:
    """ICBHI cycles of 3 patients have no "both" cycle: the 4-class check weighs the 3 classes there are."""
    names = ("normal", "crackle", "wheeze", "both")
    labels = np.repeat([0, 1, 2], 10)
    probabilities = np.full((30, 4), 0.02)
    probabilities[np.arange(30), labels] = 0.94  # right every time
    measures = check_responsive(ResponseEvidence(probabilities, labels, np.array([0.7, 0.1, 0.1, 0.1])), names)
    assert measures["largest_class_share"] == pytest.approx(1 / 3)
    always_normal = np.tile([0.94, 0.02, 0.02, 0.02], (30, 1)) + np.linspace(0, 0.3, 30)[:, None] * [-1, 1, 0, 0]
    with pytest.raises(ModelError, match=r"decides normal on 100\.0%"):
        check_responsive(ResponseEvidence(always_normal, labels, np.array([0.25] * 4)), names)


def test_export_refuses_before_writing_a_file(tmp_path: Path) -> None:
    network = create_model("skin_cnn_features", backbone="efficientnet_lite0")
    labels = _labels(100)
    forest = _forest(np.ones((100, 1000)), labels)  # a forest on a constant feature vector
    probabilities = forest.predict_proba(np.ones((40, 1000)))
    out = tmp_path / "bundle"
    with pytest.raises(ModelError, match="near-constant"):
        export_bundle(
            [network],
            out,
            model_id="skin-constant",
            version="0.0.1",
            task="skin_lesion",
            arch="skin_cnn_features",
            arch_args={"backbone": "efficientnet_lite0"},
            input_spec=InputSpec(modality="photo", size=(224, 224), channels=3, normalisation="minmax"),
            class_names=CLASSES,
            trained_on=DataProvenance(
                dataset="synthetic", split="none", counts={"images": 100}, demo=True, synthetic=True
            ),
            metrics={"accuracy": 0.5},
            thresholds={"malignant": 0.5},
            forest=forest,
            evidence=ResponseEvidence(probabilities, _labels(40), forest.predict_proba(np.zeros((1, 1000)))[0]),
        )
    assert not out.exists()
