"""An unexpected error in a panel: a readable message with the details folded away, and what was open stays open."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from medview.ui.ct import workspace as ct_workspace_module
from medview.ui.dialogs import install_excepthook
from medview.ui.qt import QtWidgets

from .conftest import SAMPLE_SERIES, open_and_wait


def message_boxes(window: Any) -> list[QtWidgets.QMessageBox]:
    return [box for box in window.findChildren(QtWidgets.QMessageBox) if box.isVisible()]


@pytest.mark.qt_no_exception_capture  # MedView's own hook must see it, as in the running app
def test_a_bug_in_the_tag_browser_shows_a_message_and_keeps_the_open_series(
    qtbot: Any, window: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # restored after the test
    install_excepthook(lambda: window)
    volume = open_and_wait(qtbot, window, SAMPLE_SERIES)
    listed = len(window.ct.browser.series_items)
    real_tag_rows = ct_workspace_module.tag_rows

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise KeyError("a bug in the tag browser")

    monkeypatch.setattr(ct_workspace_module, "tag_rows", broken)
    window.tags_dock.show()
    qtbot.waitUntil(lambda: len(message_boxes(window)) == 1, timeout=5000)

    [box] = message_boxes(window)
    assert box.windowTitle() == "Unexpected error"
    assert "a bug in the tag browser" in box.text()
    assert "Your open work is unchanged." in box.text()
    assert "Traceback" in box.detailedText()
    assert "_update_tags" in box.detailedText()
    assert window.ct.volume is volume
    assert len(window.ct.browser.series_items) == listed

    # the window goes on working: the next slice's tags are shown once the bug is gone
    box.close()
    monkeypatch.setattr(ct_workspace_module, "tag_rows", real_tag_rows)
    window.ct.mpr.axial.set_index((window.ct.mpr.axial.index + 1) % volume.shape[0])
    qtbot.waitUntil(lambda: window.ct.tags.tree.topLevelItemCount() > 10, timeout=5000)
    assert message_boxes(window) == []
