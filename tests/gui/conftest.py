"""Fixtures and helpers for the GUI tests.

Everything runs on Qt's ``offscreen`` platform (no display needed) and with the
settings folder redirected to a temporary directory, so a test run never reads
or writes the user's real MedView settings.  Helpers send *real* Qt events
(mouse, wheel, keys) to the graphics viewport, so the tests go through the same
code path as a radiologist's hand on the mouse.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# before any QApplication exists (pytest-qt creates it lazily, at the first qtbot use)
os.environ["QT_QPA_PLATFORM"] = "offscreen"

import numpy as np
import pytest

from medview.io.volume import Volume
from medview.ui.qt import QtCore, QtGui, QtWidgets

LOAD_TIMEOUT_MS = 30_000
#: how long a wait for something quick may take before it counts as a hang (a busy 2-core CI machine is slow,
#: never this slow); timings themselves are measured in bench/
HANG_TIMEOUT_MS = 30_000
#: between synthetic mouse moves; pyqtgraph ignores moves closer than 10 ms apart
MOVE_INTERVAL_S = 0.015
SAMPLE_DIR = Path(__file__).resolve().parents[2] / "resources" / "samples" / "totalsegmentator_ct"
SAMPLE_SERIES = SAMPLE_DIR / "dicom"
SAMPLE_MASK = SAMPLE_DIR / "liver_mask.nii.gz"
COVID_P001 = Path("covid_ct") / "COVID-CT-MD" / "COVID-19" / "P001"

Qt = QtCore.Qt


@pytest.fixture(scope="session", autouse=True)
def app_theme(qapp: QtWidgets.QApplication) -> QtWidgets.QApplication:
    """The app's own dark theme, as ``medview.app`` applies it: what is drawn (and printed) is tested in the
    colours a clinician sees; a report printed in the screen's light text colour passed a test without it."""
    from medview.ui.theme import apply_dark_theme

    apply_dark_theme(qapp)
    return qapp


@pytest.fixture(autouse=True)
def config_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings (recent files, presets) go to a fresh folder per test, never the real home."""
    folder = tmp_path_factory.mktemp("medview_config")
    monkeypatch.setenv("MEDVIEW_CONFIG_DIR", str(folder))
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    return folder


@pytest.fixture(scope="module")
def shipped_engine() -> Any:
    """The inference engine over the shipped bundles (resources/models), once per test module so
    each bundle's networks load once."""
    from medview.engine.service import Engine
    from tests.conftest import RESOURCES

    return Engine([RESOURCES / "models"])


@pytest.fixture
def window(qtbot: Any) -> Iterator[Any]:
    """A shown MainWindow, closed (background tasks cancelled) at teardown."""
    from medview.ui.main_window import MainWindow

    main = MainWindow()
    qtbot.addWidget(main)
    # the offscreen screen is 800x600, where the window opens maximised: the tests were drawn at this size
    main.setWindowState(QtCore.Qt.WindowState.WindowNoState)
    main.resize(1400, 900)
    main.show()
    qtbot.waitExposed(main)
    yield main
    main.close()
    main.tasks.pool.waitForDone(5000)


def open_and_wait(qtbot: Any, window: Any, path: Path, timeout: int = LOAD_TIMEOUT_MS) -> Volume:
    """Open ``path`` like File > Open and wait for the fully decoded volume."""
    with qtbot.waitSignal(window.ct.volume_loaded, timeout=timeout) as blocker:
        window.open_paths([path])
    volume = blocker.args[0]
    assert window.ct.volume is volume
    return volume


def wait_until_settled(qtbot: Any, window: Any, task: Any, timeout: int = 300_000) -> None:
    """Until ``task`` has ended and its slots have run on the GUI thread (the window then forgets it).

    Not ``waitSignal(task.signals.finished)`` after the start: a quick task emits it before the wait
    connects, and the wait never ends.
    """
    assert task is not None
    qtbot.waitUntil(lambda: task.done.is_set() and task not in window.tasks.running, timeout=timeout)


class TaskLog(list):
    """The tasks a window started, with hooks run on each before it starts."""

    def __init__(self) -> None:
        super().__init__()
        self.hooks: list[Callable[[Any], None]] = []


def watch_tasks(monkeypatch: pytest.MonkeyPatch, window: Any, hook: Callable[[Any], None] | None = None) -> TaskLog:
    """Record every task ``window`` starts; ``hook(task)`` runs before the task can emit anything."""
    log = TaskLog()
    if hook is not None:
        log.hooks.append(hook)
    original = window.tasks.start

    def start(task: Any) -> Any:
        log.append(task)
        for each in log.hooks:
            each(task)
        return original(task)

    monkeypatch.setattr(window.tasks, "start", start)
    return log


# --------------------------------------------------------------------------- synthetic data


def cell_text(view: QtWidgets.QTableView, row: int, column: int) -> str:
    """What a table view shows in one cell, read through its model as the view reads it."""
    return view.model().index(row, column).data()


def make_volume(voxels: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0), **fields: Any) -> Volume:
    """A CT volume in LPS orientation (identity direction) with the given voxels."""
    fields.setdefault("modality", "CT")
    fields.setdefault("description", "synthetic")
    return Volume(voxels=voxels, spacing=spacing, **fields)


# --------------------------------------------------------------------------- real input events


def viewport_point(view: Any, view_point: QtCore.QPointF) -> QtCore.QPoint:
    """Viewport pixel of a point in a SliceView's view (mm) coordinates."""
    scene = view.view_box.mapViewToScene(view_point)
    return view.graphics.mapFromScene(scene)


def view_point_at(view: Any, pixel: QtCore.QPoint) -> QtCore.QPointF:
    """The view (mm) coordinates a viewport pixel maps to (what a click there hits)."""
    return view.view_box.mapSceneToView(view.graphics.mapToScene(pixel))


def _mouse_event(
    kind: QtCore.QEvent.Type,
    widget: QtWidgets.QWidget,
    pos: QtCore.QPoint,
    button: Qt.MouseButton,
    buttons: Qt.MouseButton,
    modifiers: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier,
) -> QtGui.QMouseEvent:
    local = QtCore.QPointF(pos)
    return QtGui.QMouseEvent(kind, local, local, QtCore.QPointF(widget.mapToGlobal(pos)), button, buttons, modifiers)


def mouse_drag(
    widget: QtWidgets.QWidget,
    start: QtCore.QPoint,
    end: QtCore.QPoint,
    button: Qt.MouseButton = Qt.MouseButton.LeftButton,
    steps: int = 5,
    modifiers: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier,
) -> None:
    """Press at ``start``, move in ``steps`` with the button held, release at ``end`` (keys ``modifiers`` held).

    ``QTest.mouseMove`` carries no buttons, so a drag is built from raw events.
    The moves are spaced like a real mouse's: pyqtgraph drops move events that
    come faster than its ``mouseRateLimit`` (100 per second).
    """
    app = QtWidgets.QApplication.instance()
    QtWidgets.QApplication.sendEvent(
        widget, _mouse_event(QtCore.QEvent.Type.MouseButtonPress, widget, start, button, button, modifiers)
    )
    for step in range(1, steps + 1):
        time.sleep(MOVE_INTERVAL_S)
        point = QtCore.QPoint(
            round(start.x() + (end.x() - start.x()) * step / steps),
            round(start.y() + (end.y() - start.y()) * step / steps),
        )
        QtWidgets.QApplication.sendEvent(
            widget,
            _mouse_event(QtCore.QEvent.Type.MouseMove, widget, point, Qt.MouseButton.NoButton, button, modifiers),
        )
        app.processEvents()
    time.sleep(MOVE_INTERVAL_S)
    QtWidgets.QApplication.sendEvent(
        widget,
        _mouse_event(QtCore.QEvent.Type.MouseButtonRelease, widget, end, button, Qt.MouseButton.NoButton, modifiers),
    )
    app.processEvents()


def image_pixel(view: Any, fraction_x: float, fraction_y: float) -> QtCore.QPoint:
    """The viewport pixel of a SliceView at the given fractions of its image's width and height."""
    rect = view.image_item.mapRectToParent(view.image_item.boundingRect())
    return viewport_point(view, QtCore.QPointF(rect.width() * fraction_x, rect.height() * fraction_y))


def mouse_move(view: Any, pixel: QtCore.QPoint) -> None:
    """The mouse moves (no button held) to ``pixel`` of a SliceView's viewport: what hovering sends."""
    time.sleep(MOVE_INTERVAL_S)  # pyqtgraph drops moves closer than 10 ms apart
    viewport = view.graphics.viewport()
    no_button = Qt.MouseButton.NoButton
    QtWidgets.QApplication.sendEvent(
        viewport, _mouse_event(QtCore.QEvent.Type.MouseMove, viewport, pixel, no_button, no_button)
    )
    QtWidgets.QApplication.instance().processEvents()


def mouse_click(
    widget: QtWidgets.QWidget, pos: QtCore.QPoint, button: Qt.MouseButton = Qt.MouseButton.LeftButton
) -> None:
    """Press and release at one point (no movement): a click for pyqtgraph's scene."""
    QtWidgets.QApplication.sendEvent(
        widget, _mouse_event(QtCore.QEvent.Type.MouseButtonPress, widget, pos, button, button)
    )
    QtWidgets.QApplication.sendEvent(
        widget, _mouse_event(QtCore.QEvent.Type.MouseButtonRelease, widget, pos, button, Qt.MouseButton.NoButton)
    )
    QtWidgets.QApplication.instance().processEvents()


def wheel(
    widget: QtWidgets.QWidget,
    pos: QtCore.QPoint,
    delta: int,
    modifiers: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier,
) -> None:
    """One wheel notch (``delta`` = +-120) at ``pos``."""
    event = QtGui.QWheelEvent(
        QtCore.QPointF(pos),
        QtCore.QPointF(widget.mapToGlobal(pos)),
        QtCore.QPoint(0, 0),
        QtCore.QPoint(0, delta),
        Qt.MouseButton.NoButton,
        modifiers,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QtWidgets.QApplication.sendEvent(widget, event)
    QtWidgets.QApplication.instance().processEvents()
