"""A workspace's models are loaded off the GUI thread before their first run (MainWindow.prepare_models)."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import SAMPLE_SERIES, open_and_wait, wait_until_settled, watch_tasks

PREPARING = "Preparing AI models"


@pytest.fixture
def engine(shipped_engine: Any) -> Any:
    return shipped_engine


def test_each_workspace_loads_its_chosen_models_once_when_it_can_run_them(
    qtbot: Any, window: Any, engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepared: list[str] = []
    prepare = engine.prepare
    monkeypatch.setattr(engine, "prepare", lambda card: (prepared.append(card.label), prepare(card))[1])
    tasks = watch_tasks(monkeypatch, window)

    def preparing() -> list[Any]:
        return [task for task in tasks if task.description == PREPARING]

    window.set_engine(engine)
    assert preparing() == []  # the CT workspace has no series: nothing its models could run on

    open_and_wait(qtbot, window, SAMPLE_SERIES)
    [task] = preparing()
    wait_until_settled(qtbot, window, task)
    ct_cards = window.findings.chosen_cards()
    # the COVID model's lung mask comes from the classical method while only a demo lung U-Net is installed
    assert {card.task for card in ct_cards} == {"liver_segmentation", "kidney_stone", "covid_ct"}
    assert sorted(prepared) == sorted(card.label for card in ct_cards)
    loaded = {key[0] for key in engine._networks}
    assert {str(card.bundle_dir) for card in ct_cards} <= loaded  # really loaded, not only asked for

    window.workspaces.setCurrentWidget(window.skin)
    wait_until_settled(qtbot, window, preparing()[-1])
    assert prepared[len(ct_cards) :] == [window.skin.selected_card().label]
    assert engine._forests  # the skin model's forest too

    window.workspaces.setCurrentWidget(window.lung)  # its model loads with the recording's classification
    window.workspaces.setCurrentWidget(window.mpr)
    open_and_wait(qtbot, window, SAMPLE_SERIES)
    window.workspaces.setCurrentWidget(window.skin)
    assert len(preparing()) == 2  # each model once, none for lung sounds
