"""What the window benchmarks share: an offscreen main window, waiting in the event loop, the GUI stall."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from medview.ui.main_window import MainWindow
from medview.ui.qt import QtCore, QtWidgets


@contextmanager
def offscreen_window(engine: Any) -> Iterator[MainWindow]:
    """A shown 1400x900 main window with ``engine``, settings in a temporary folder; closed afterwards."""
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    with tempfile.TemporaryDirectory() as config:
        os.environ["MEDVIEW_CONFIG_DIR"] = config
        window = MainWindow()
        window.resize(1400, 900)
        window.show()
        app.processEvents()
        window.set_engine(engine)
        try:
            yield window
        finally:
            window.close()
            window.tasks.pool.waitForDone(10_000)


def spin_until(done: Callable[[], bool], timeout_s: float = 600) -> None:
    """Run the event loop (sleeping between events, as ``app.exec`` does) until ``done()``."""
    loop = QtCore.QEventLoop()
    poll = QtCore.QTimer(interval=2)
    poll.timeout.connect(lambda: done() and loop.quit())
    QtCore.QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    poll.start()
    if not done():
        loop.exec()
    poll.stop()
    if not done():
        raise TimeoutError("no result in time")


class StallMeter:
    """The longest gap between ticks of a 5 ms timer on the GUI thread, minus the 5 ms."""

    def __init__(self) -> None:
        self.timer = QtCore.QTimer(interval=5)
        self.timer.timeout.connect(self._tick)
        self.longest_ms = 0.0
        self._last = 0.0

    def start(self) -> None:
        self._last = time.perf_counter()
        self.timer.start()

    def _tick(self) -> None:
        now = time.perf_counter()
        self.longest_ms = max(self.longest_ms, (now - self._last) * 1000 - 5)
        self._last = now
