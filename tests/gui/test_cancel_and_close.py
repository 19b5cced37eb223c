"""Cancel and close mid-run: the lung classification's Cancel, and closing the window while the liver
segmentation or the lung classification runs, on real inputs through the real window.

The cancels of the liver, kidney, COVID-19 and skin runs are tested beside their
panels (test_findings_panel.py, test_kidney_findings.py, test_covid_findings.py,
test_skin_panel.py).  Each run here is stopped at its first progress report, so
the stop lands inside the work, not before it.  ``bench/responsiveness.py``
measures how fast each stop takes effect.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from medview.ui.qt import QtCore

from .conftest import SAMPLE_SERIES, cell_text, open_and_wait, wait_until_settled, watch_tasks

RECORDING = Path("lung_sound") / "icbhi_sample" / "104_1b1_Ar_sc_Litt3200.wav"
TIMEOUT_MS = 120_000
POOL_WAIT_MS = 10_000


@pytest.fixture
def engine(shipped_engine: Any) -> Any:
    for task in ("liver_segmentation", "lung_sound"):
        if not shipped_engine.cards(task):
            pytest.skip(f"no {task} bundle in resources/models")
    return shipped_engine


@pytest.fixture
def recording(shared_data: Path) -> Path:
    return shared_data / RECORDING


def stop_at_first_progress(monkeypatch: pytest.MonkeyPatch, window: Any, prefix: str, stop: Any) -> list[Any]:
    """The tasks whose description starts with ``prefix``; ``stop(task)`` runs at the first progress each reports."""
    started: list[Any] = []

    def hook(task: Any) -> None:
        if not task.description.startswith(prefix):
            return
        started.append(task)
        stopped: list[bool] = []

        def on_progress(done: int, _total: int, _what: str) -> None:
            if done > 0 and not stopped:
                stopped.append(True)
                stop(task)

        task.signals.progress.connect(on_progress)

    watch_tasks(monkeypatch, window, hook)
    return started


def assert_nothing_left_running(window: Any, threads_before: set[threading.Thread]) -> None:
    """The window's pool has no thread working, no task is listed as running, no new Python thread is alive."""
    assert window.tasks.pool.waitForDone(POOL_WAIT_MS)
    assert window.tasks.pool.activeThreadCount() == 0
    assert QtCore.QThreadPool.globalInstance().activeThreadCount() == 0
    left = [t.name for t in threading.enumerate() if t not in threads_before and t.is_alive() and not t.daemon]
    assert left == []


def test_cancel_stops_the_lung_classification_without_a_result_and_classify_runs_again(
    qtbot: Any, window: Any, engine: Any, recording: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    window.set_engine(engine)
    lung = window.lung
    started = stop_at_first_progress(monkeypatch, window, "Classifying", lambda _task: window.cancel_running())
    classified: list[Any] = []
    lung.classified.connect(classified.append)

    window.open_paths([recording])
    qtbot.waitUntil(lambda: bool(started), timeout=TIMEOUT_MS)
    task = started[0]
    wait_until_settled(qtbot, window, task, TIMEOUT_MS)
    qtbot.waitUntil(lambda: not window.tasks.running, timeout=TIMEOUT_MS)

    assert task.is_cancelled
    assert classified == []
    assert lung.result is None
    assert lung.table.model().rowCount() == len(lung.cycles) > 0
    assert all(cell_text(lung.table, row, 4) == "" for row in range(lung.table.model().rowCount()))
    assert "cancelled" in window.statusBar().currentMessage()
    assert not window.cancel_button.isVisible()

    monkeypatch.undo()  # the next run goes to the end
    with qtbot.waitSignal(lung.classified, timeout=TIMEOUT_MS) as blocker:
        qtbot.mouseClick(lung.classify_button, QtCore.Qt.MouseButton.LeftButton)
    assert len(blocker.args[0].scores) == len(lung.cycles)


def test_closing_the_window_during_the_liver_segmentation_stops_it_and_adds_nothing(
    qtbot: Any, window: Any, engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    window.set_engine(engine)
    open_and_wait(qtbot, window, SAMPLE_SERIES)
    threads_before = set(threading.enumerate())
    started = stop_at_first_progress(monkeypatch, window, "Segmenting the liver", lambda _task: window.close())
    added: list[Any] = []
    window.ct.findings.finding_added.connect(added.append)

    window.ct.findings.liver.run()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=TIMEOUT_MS)

    task = started[0]
    assert task.is_cancelled
    assert_nothing_left_running(window, threads_before)
    assert task.done.is_set()
    qtbot.waitUntil(lambda: not window.tasks.running, timeout=TIMEOUT_MS)  # the finished signal was delivered
    assert added == []
    assert window.ct.findings.list.count() == 0
    assert not any(layer.name.startswith("Liver") for layer in window.ct.layers.layers)


def test_closing_the_window_during_the_lung_classification_stops_it_and_releases_the_audio(
    qtbot: Any, window: Any, engine: Any, recording: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    window.set_engine(engine)
    lung = window.lung
    with qtbot.waitSignal(lung.classified, timeout=TIMEOUT_MS):
        window.open_paths([recording])
    threads_before = set(threading.enumerate())
    started = stop_at_first_progress(monkeypatch, window, "Classifying", lambda _task: window.close())
    classified: list[Any] = []
    lung.classified.connect(classified.append)

    qtbot.mouseClick(lung.classify_button, QtCore.Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=TIMEOUT_MS)

    task = started[0]
    assert task.is_cancelled
    assert_nothing_left_running(window, threads_before)
    assert task.done.is_set()
    qtbot.waitUntil(lambda: not window.tasks.running, timeout=TIMEOUT_MS)
    assert classified == []
    assert lung.player is None
