"""The demo bundles that ship in resources/models: one per task, verified as the app loads them, marked demo."""

from __future__ import annotations

from pathlib import Path

import pytest

from medview.config import resources_dir
from medview.engine.manifest import TASKS, load_manifest
from training.export import check_bundle

SHIPPED = resources_dir() / "models"
BUNDLES = sorted(path.parent for path in SHIPPED.glob("*/manifest.json"))


def test_every_task_has_a_shipped_demo_bundle_and_they_fit_the_size_budget() -> None:
    cards = [check_bundle(folder) for folder in BUNDLES]
    assert {card.task for card in cards} == set(TASKS)
    size = sum(path.stat().st_size for path in SHIPPED.rglob("*") if path.is_file())
    assert size < 100 * 2**20, f"shipped bundles take {size / 2**20:.1f} MiB"


@pytest.mark.parametrize("folder", BUNDLES, ids=[path.name for path in BUNDLES])
def test_shipped_bundle_is_a_labelled_demo_with_its_validation_metrics(folder: Path) -> None:
    card = check_bundle(folder)  # checksums, allow-listed architecture, weights fit, a forward pass
    assert card.is_demo
    assert "not for diagnosis" in card.trained_on.notes
    assert card.metrics
    assert card.trained_on.counts
    assert "digest" in card.trained_on.split


@pytest.mark.parametrize("task", ["skin_lesion", "kidney_stone", "lung_sound", "covid_ct"])
def test_every_shipped_classifier_was_checked_to_respond_to_its_input_and_timed(task: str) -> None:
    """Issue 20: export measured that the model's outputs move with its input, and recorded the training time."""
    [card] = [check_bundle(folder) for folder in BUNDLES if load_manifest(folder).task == task]
    for measure in ("validation_output_spread", "validation_largest_class_share", "validation_blank_like_share"):
        assert measure in card.metrics, f"{card.label}: export was given no validation evidence ({measure})"
    assert card.metrics["training_seconds"] > 0
    assert "training took" in card.trained_on.notes


@pytest.mark.parametrize(("task", "positive"), [("skin_lesion", "malignant"), ("kidney_stone", "stone")])
def test_binary_bundles_ship_a_validated_operating_point_with_intervals(task: str, positive: str) -> None:
    [card] = [load_manifest(folder) for folder in BUNDLES if load_manifest(folder).task == task]
    assert card.metrics["operating_point_sensitivity_target"] == 0.9
    assert 0 < card.thresholds[positive] < 1
    for rate in ("sensitivity", "specificity"):
        assert card.metrics[f"{rate}_ci_low"] <= card.metrics[rate] <= card.metrics[f"{rate}_ci_high"]
    assert "validation_sensitivity" in card.metrics


def test_shipped_skin_bundle_gives_a_saliency_map_on_every_sample_photo() -> None:
    """With the signed importance-weighted score, Grad-CAM's ReLU left most ISIC maps empty; never again."""
    from medview.engine.service import Engine
    from medview.io.photo import read_photo

    engine = Engine([SHIPPED], device_preference="cpu")
    (card,) = engine.cards("skin_lesion")
    photos = sorted((resources_dir() / "samples" / "isic_dermoscopy").glob("*.jpg"))
    assert len(photos) == 6
    for photo in photos:
        saliency = engine.classify_skin(card, read_photo(photo).rgb).saliency
        assert saliency is not None
        relative = saliency.relative()
        assert relative.max() == pytest.approx(1.0), photo.name
        assert 0.005 < (relative > 0.5).mean() < 0.9, f"{photo.name}: the map marks no region or everything"
