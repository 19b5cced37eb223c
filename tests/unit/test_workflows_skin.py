"""The skin workflow without Qt: photos read, classified and audited in order, the maps only when asked for."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medview.audit import audit_log
from medview.engine.service import Engine
from medview.workflows.skin import (
    PhotoClassified,
    PhotoExplained,
    PhotoJob,
    PhotoRead,
    PhotoUnreadable,
    classify_photos,
    explain_photos,
)
from tests.conftest import RESOURCES

ISIC = Path("skin") / "isic_uda1_250px"


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine([RESOURCES / "models"])


def _never() -> bool:
    return False


def test_photos_are_read_classified_and_audited_in_order_and_a_bad_one_is_named(
    engine: Engine, shared_data: Path, tmp_path: Path
) -> None:
    card = engine.cards("skin_lesion")[0]
    good = tmp_path / "ISIC_0000150.jpg"
    shutil.copy(shared_data / ISIC / good.name, good)
    bad = tmp_path / "lesion.jpg"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)  # a truncated PNG named .jpg
    steps: list[tuple[int, int, str]] = []

    updates = list(
        classify_photos(
            [PhotoJob(bad), PhotoJob(good)], engine, card, lambda *step: steps.append(step), _never, thumbnail_side=48
        )
    )

    assert [type(update) for update in updates] == [PhotoUnreadable, PhotoRead, PhotoClassified]
    assert [update.index for update in updates] == [0, 1, 1]
    unreadable, read, classified = updates
    assert "lesion.jpg" in unreadable.problem
    assert max(read.thumbnail.shape[:2]) == 48
    assert classified.result.saliency is None  # the verdict does not wait for the map
    direct = engine.classify_skin(card, read.photo.rgb, explain=False)
    assert classified.result.scores.probabilities == pytest.approx(direct.scores.probabilities)
    assert steps[0][:2] == (0, 2)
    assert steps[-1][:2] == (2, 2)
    events = [(event.event_type, event.outcome) for event in audit_log().read_events()]
    assert events == [("photo", 8), ("photo", 0), (card.id, 0)]


def test_a_photo_read_before_is_not_read_again_and_without_a_model_nothing_is_classified(
    engine: Engine, shared_data: Path
) -> None:
    card = engine.cards("skin_lesion")[0]
    path = shared_data / ISIC / "ISIC_0000151.jpg"
    first = list(classify_photos([PhotoJob(path)], None, None, lambda *_: None, _never, thumbnail_side=32))
    assert [type(update) for update in first] == [PhotoRead]
    again = list(
        classify_photos([PhotoJob(path, first[0].photo)], engine, card, lambda *_: None, _never, thumbnail_side=32)
    )
    assert [type(update) for update in again] == [PhotoClassified]


def test_a_cancel_stops_between_photos(engine: Engine, shared_data: Path) -> None:
    card = engine.cards("skin_lesion")[0]
    paths = [shared_data / ISIC / f"ISIC_{number:07d}.jpg" for number in (150, 151, 152)]
    seen: list[Any] = []
    for update in classify_photos(
        [PhotoJob(path) for path in paths], engine, card, lambda *_: None, lambda: len(seen) >= 2, thumbnail_side=32
    ):
        seen.append(update)
    assert [type(update) for update in seen] == [PhotoRead, PhotoClassified]


def test_the_map_joins_the_verdict_unchanged(engine: Engine, shared_data: Path) -> None:
    card = engine.cards("skin_lesion")[0]
    job = PhotoJob(shared_data / ISIC / "ISIC_0000153.jpg")
    read, verdict = classify_photos([job], engine, card, lambda *_: None, _never, thumbnail_side=32)
    assert isinstance(read, PhotoRead)
    assert isinstance(verdict, PhotoClassified)
    (explained,) = explain_photos([(read.photo, verdict.result)], engine, card, lambda *_: None, _never)
    assert isinstance(explained, PhotoExplained)
    assert explained.result.scores is verdict.result.scores
    assert explained.result.provenance is verdict.result.provenance
    saliency = explained.result.saliency
    assert saliency is not None
    assert saliency.values.shape == read.photo.rgb.shape[:2]
    together = engine.classify_skin(card, read.photo.rgb, explain=True).saliency
    assert np.allclose(saliency.values, together.values, atol=1e-5)  # the same map as computed with the verdict
