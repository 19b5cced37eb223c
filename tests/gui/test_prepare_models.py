"""A workspace's models are loaded off the GUI thread before their first run (MainWindow.prepare_models)."""

from __future__ import annotations

from typing import Any

import pytest

from medview.ui.qt import QtWidgets

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
    panel = window.ct.findings
    assert panel.task_tabs.currentWidget() is panel.liver  # only the task on show: its model, not all three
    assert prepared == [panel.liver.model_box.selected_card().label]
    assert str(panel.liver.model_box.selected_card().bundle_dir) in {key[0] for key in engine._networks}

    panel.task_tabs.setCurrentWidget(panel.covid)
    wait_until_settled(qtbot, window, preparing()[-1])
    # the COVID model's lung mask comes from the classical method while only a demo lung U-Net is installed
    assert panel.covid.chosen_cards() == [panel.covid.model_box.selected_card()]
    assert prepared[1:] == [panel.covid.model_box.selected_card().label]

    window.workspaces.setCurrentWidget(window.skin)
    wait_until_settled(qtbot, window, preparing()[-1])
    assert prepared[2:] == [window.skin.selected_card().label]
    assert engine._forests  # the skin model's forest too

    window.workspaces.setCurrentWidget(window.lung)  # its model loads with the recording's classification
    window.workspaces.setCurrentWidget(window.ct.mpr)
    open_and_wait(qtbot, window, SAMPLE_SERIES)
    window.workspaces.setCurrentWidget(window.skin)
    panel.task_tabs.setCurrentWidget(panel.liver)
    assert len(preparing()) == 3  # each model once, none for lung sounds


def test_the_ai_menu_shows_the_tasks_tab_before_running_it(window: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    panel = window.ct.findings
    ran: list[str] = []
    for runner in panel.runners:
        monkeypatch.setattr(runner, "run", lambda runner=runner: ran.append(runner.title))
    actions = {
        action.text().replace("&", ""): action
        for menu in window.menuBar().findChildren(QtWidgets.QMenu)
        for action in menu.actions()
    }
    for text, runner in (("Classify COVID-19", panel.covid), ("Find kidney stones", panel.kidney)):
        actions[text].trigger()
        assert panel.task_tabs.currentWidget() is runner
        assert ran[-1] == runner.title


def test_a_model_that_cannot_load_is_left_for_its_run_to_report(
    qtbot: Any, window: Any, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import shutil

    from medview.engine.service import Engine
    from tests.conftest import RESOURCES

    folder = tmp_path / "models"
    shutil.copytree(RESOURCES / "models" / "skin-demo", folder / "skin-demo")
    weights = next((folder / "skin-demo").glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # the checksum no longer matches
    weights.write_bytes(bytes(data))
    window.set_engine(Engine([folder]))

    window.workspaces.setCurrentWidget(window.skin)
    wait_until_settled(qtbot, window, window.preparation)

    assert weights.name in caplog.text  # logged, naming the file
    assert "preparing models" in caplog.text
    assert not [w for w in QtWidgets.QApplication.topLevelWidgets() if isinstance(w, QtWidgets.QMessageBox)]
