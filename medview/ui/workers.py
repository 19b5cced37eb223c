"""Run long work off the GUI thread, with progress, partial results and cancel.

A ``Task`` wraps a plain function ``fn(progress, cancelled, partial) -> result``
from the Qt-free layers (``progress`` and ``cancelled`` as ``medview.progress``
defines them); its signals arrive on the GUI thread (queued connections), so
slots may touch widgets.  Exceptions become ``errored`` with a readable message
(``MedviewError``) or the traceback (anything else: a bug).
"""

from __future__ import annotations

import threading
import traceback
import weakref
from collections.abc import Callable
from typing import Any

from medview.errors import Cancelled, MedviewError
from medview.progress import CancelCheck, ProgressCallback
from medview.ui.qt import QtCore

TaskFunction = Callable[[ProgressCallback, CancelCheck, Callable[[Any], None]], Any]


class TaskSignals(QtCore.QObject):
    """Signals of a ``Task`` (a plain object, run on the pool by a ``_PoolRunnable``)."""

    progress = QtCore.Signal(int, int, str)  # done, total, what is being done
    partial = QtCore.Signal(object)
    succeeded = QtCore.Signal(object)
    errored = QtCore.Signal(str, str)  # message, details
    cancelled = QtCore.Signal()
    finished = QtCore.Signal()


def _ended_function(*_args: Any) -> None:
    raise RuntimeError("this task has ended; start a new one")


class Task:
    """One unit of background work; ``cancel()`` asks it to stop at its next check."""

    def __init__(self, function: TaskFunction, description: str, *, background: bool = False) -> None:
        self.function = function
        self.description = description
        #: runs on its own (thumbnails, loading the engine): no progress bar or Cancel in the status bar
        self.background = background
        self.signals = TaskSignals()
        self._cancel = threading.Event()
        self.done = threading.Event()

    def cancel(self) -> None:
        """Ask the work to stop; it checks between steps (slices, files)."""
        self._cancel.set()

    @property
    def is_cancelled(self) -> bool:
        """Whether Cancel was asked for."""
        return self._cancel.is_set()

    def run(self) -> None:  # runs on a pool thread
        """Run the function and emit how it ended (on a pool thread)."""
        try:
            result = self.function(self.signals.progress.emit, self._cancel.is_set, self.signals.partial.emit)
        except Cancelled:
            self._emit(self.signals.cancelled)
        except MedviewError as error:
            self._emit(self.signals.errored, str(error), "")
        except Exception as error:  # noqa: BLE001 - the worker boundary: report every bug, never die silently
            self._emit(self.signals.errored, f"{self.description} failed: {error}", traceback.format_exc())
        else:
            if self._cancel.is_set():
                self._emit(self.signals.cancelled)
            else:
                self._emit(self.signals.succeeded, result)
        finally:
            self.done.set()
            self._emit(self.signals.finished)

    def _emit(self, signal: QtCore.SignalInstance, *args: Any) -> None:
        """Emit, unless the application is already tearing the signals object down (a cancelled task
        finishing after the window closed): then there is no one left to tell."""
        try:
            signal.emit(*args)
        except RuntimeError:
            if not self._cancel.is_set():
                raise


class _PoolRunnable(QtCore.QRunnable):
    """Runs one task on the pool, holding it only weakly (the runner keeps it), and is deleted by the pool.

    Not the task itself as the runnable: PySide6 keeps a QRunnable that is not auto-deleted referenced from
    the pool for good, and with it everything the task's closures hold (a whole series).  ``ended`` is set
    once this thread holds no reference to the task any more, so that the task and its signals object are
    let go on the GUI thread, never here.
    """

    def __init__(self, task: Task, ended: threading.Event) -> None:
        super().__init__()
        self.task = weakref.ref(task)
        self.ended = ended

    def run(self) -> None:
        task = self.task()
        try:
            if task is not None:
                task.run()
        finally:
            del task
            self.ended.set()


#: how a workspace hands a task to the window's runner: ``start_task(task, what)`` -> the started task
StartTask = Callable[[Task, str], Task]


class TaskRunner(QtCore.QObject):
    """Starts tasks on a private thread pool and remembers the running ones."""

    def __init__(self, parent: QtCore.QObject | None = None, max_threads: int = 2) -> None:
        super().__init__(parent)
        self.pool = QtCore.QThreadPool(self)
        self.pool.setMaxThreadCount(max_threads)
        self.running: list[Task] = []
        #: tasks that have finished, with the event their pool thread sets once it is done with them
        self._ending: list[tuple[Task, threading.Event]] = []

    def start(self, task: Task) -> Task:
        """Queue ``task``; it is forgotten when it finishes."""
        ended = threading.Event()
        self.running.append(task)
        # weakly: a slot holding the task, kept by a connection of the task's own signals, is a cycle through Qt
        # that Python's collector cannot see
        finished = weakref.ref(task)
        task.signals.finished.connect(lambda: self._forget(finished(), ended))
        self.pool.start(_PoolRunnable(task, ended))
        return task

    def _forget(self, task: Task | None, ended: threading.Event) -> None:
        if task is None:
            return
        if task in self.running:
            self.running.remove(task)
        self._ending.append((task, ended))
        QtCore.QTimer.singleShot(0, self, self._release)  # once this emission's other slots have run

    def _release(self) -> None:
        """Let the finished tasks go: their signals object is deleted here, on the GUI thread, with every slot
        connected to it (slots that hold their task, its description or what it worked on), and the work function
        with its closures is dropped."""
        waiting = []
        for task, ended in self._ending:
            if not ended.is_set():  # its pool thread is still returning from it
                waiting.append((task, ended))
                continue
            task.function = _ended_function
            task.signals.deleteLater()
        self._ending = waiting
        if waiting:
            QtCore.QTimer.singleShot(10, self, self._release)

    def cancel_all(self, wait_ms: int = 3000) -> bool:
        """Cancel every running task and wait for the pool; True if all stopped in time."""
        for task in list(self.running):
            task.cancel()
        return self.pool.waitForDone(wait_ms)
