"""Run long work off the GUI thread, with progress, partial results and cancel.

A ``Task`` wraps a plain function ``fn(progress, cancelled, partial) -> result``
from the Qt-free layers; its signals arrive on the GUI thread (queued
connections), so slots may touch widgets.  Exceptions become ``errored`` with a
readable message (``MedviewError``) or the traceback (anything else: a bug).
"""

from __future__ import annotations

import threading
import traceback
import weakref
from collections.abc import Callable
from typing import Any

from medview.errors import Cancelled, MedviewError
from medview.ui.qt import QtCore

TaskFunction = Callable[[Callable[[int, int], None], Callable[[], bool], Callable[[Any], None]], Any]


class TaskSignals(QtCore.QObject):
    """Signals of a ``Task``, which is a plain object (the pool runs its bound ``run``)."""

    progress = QtCore.Signal(int, int)
    partial = QtCore.Signal(object)
    succeeded = QtCore.Signal(object)
    errored = QtCore.Signal(str, str)  # message, details
    cancelled = QtCore.Signal()
    finished = QtCore.Signal()


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
        return self._cancel.is_set()

    def run(self) -> None:  # runs on a pool thread
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


class TaskRunner(QtCore.QObject):
    """Starts tasks on a private thread pool and remembers the running ones."""

    def __init__(self, parent: QtCore.QObject | None = None, max_threads: int = 2) -> None:
        super().__init__(parent)
        self.pool = QtCore.QThreadPool(self)
        self.pool.setMaxThreadCount(max_threads)
        self.running: list[Task] = []

    def start(self, task: Task) -> Task:
        """Queue ``task``; it is forgotten when it finishes."""
        self.running.append(task)
        # a weak reference: a lambda holding the task, kept by a connection of the task's own signals, is a cycle
        # through Qt that Python's collector cannot see, and would keep every finished task (and what its closures
        # hold: a whole series) alive for good
        finished = weakref.ref(task)
        task.signals.finished.connect(lambda: self._forget(finished()))
        # the bound method, not a QRunnable: PySide6 keeps every QRunnable that is not auto-deleted referenced from
        # the pool for good (a leak of every task and what its closures hold); a callable is let go once it has run
        self.pool.start(task.run)
        return task

    def _forget(self, task: Task | None) -> None:
        if task is None:
            return
        if task in self.running:
            self.running.remove(task)
        # Once this emission is over, the signals object goes with all its connections: slots that hold the task
        # (its description, "is this still the load?") are cycles through Qt the collector cannot see.
        task.signals.deleteLater()

    def cancel_all(self, wait_ms: int = 3000) -> bool:
        """Cancel every running task and wait for the pool; True if all stopped in time."""
        for task in list(self.running):
            task.cancel()
        return self.pool.waitForDone(wait_ms)
