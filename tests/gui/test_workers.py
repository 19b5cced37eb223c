"""TaskRunner: a finished task is let go, with everything its work and its slots held."""

from __future__ import annotations

import gc
import weakref
from typing import Any

from medview.ui.workers import Task, TaskRunner


class Payload:
    """Stands for a series' voxels: something big a task's closures hold."""


def test_a_finished_task_and_what_its_closures_hold_are_released(qtbot: Any) -> None:
    runner = TaskRunner()
    payload = Payload()
    held = weakref.ref(payload)
    results: list[object] = []
    task = Task(lambda _progress, _cancelled, _partial, p=payload: p, "holds the payload")
    # a slot that refers to the task itself, as the window's do: a cycle through a Qt connection
    task.signals.succeeded.connect(lambda result, t=task: results.append((result, t.description)))
    finished = weakref.ref(task)

    with qtbot.waitSignal(task.signals.finished, timeout=10_000):
        runner.start(task)
    assert results == [(payload, "holds the payload")]
    # the runner forgets the task in its own slot of the same emission, queued after the one waitSignal added
    qtbot.waitUntil(lambda: runner.running == [], timeout=5_000)
    results.clear()
    del task, payload
    qtbot.wait(50)  # the event loop drops the ended task's slots
    gc.collect()

    assert finished() is None
    assert held() is None
