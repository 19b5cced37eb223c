"""CT: what stays on screen when a second series opens after a first one was read.

A clinician opens one study after another. Everything of the first (its slices in any of the
three views, the hover read-out, the crosshair, measurements, overlays, findings) must be gone
once the second shows, whatever their sizes: a long series after a short one and the other way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medview.ui.ct.planes import extract_plane
from tests.gui.conftest import (
    COVID_P001,
    SAMPLE_SERIES,
    Qt,
    image_pixel,
    mouse_click,
    mouse_drag,
    mouse_move,
    open_and_wait,
)


def hover(view: Any, fraction_x: float, fraction_y: float) -> None:
    """Move the mouse over ``view`` to a point at the given fractions of its image (a real move event)."""
    mouse_move(view, image_pixel(view, fraction_x, fraction_y))


def read_the_series(qtbot: Any, window: Any) -> None:
    """What a reader leaves behind: the mouse over the axial view, a crosshair, a distance, a mask overlay."""
    axial = window.ct.mpr.axial
    hover(axial, 0.5, 0.75)
    assert axial.corner_labels["bottom_right"].text(), "hovering shows the voxel read-out"
    mouse_click(axial.graphics.viewport(), image_pixel(axial, 0.4, 0.6))
    window.ct.mpr.set_tool("distance")
    mouse_drag(axial.graphics.viewport(), image_pixel(axial, 0.3, 0.3), image_pixel(axial, 0.6, 0.5))
    window.ct.mpr.set_tool("navigate")
    assert axial.measurements, "the distance was drawn"
    labels = np.zeros(window.ct.volume.shape, dtype=np.uint8)
    labels[:, 10:40, 10:40] = 1
    from medview.ui.ct.layers import LabelLayer

    window.ct.layers.add(LabelLayer(name=f"mask of {window.ct.volume.description}", labels=labels, names={1: "box"}))
    hover(axial, 0.5, 0.75)


def assert_only(window: Any, volume: Any) -> None:
    """Every view, read-out, overlay and list shows ``volume`` and nothing of an earlier series."""
    assert window.ct.volume is volume
    for plane, view in window.ct.mpr.views.items():
        assert view.volume is volume, f"{plane} view shows another series"
        shown = view.image_item.image
        assert shown is not None
        assert shown.shape == extract_plane(volume.voxels, plane, view.index).shape, f"{plane}: another image size"
        np.testing.assert_array_equal(shown, extract_plane(volume.voxels, plane, view.index), err_msg=plane)
        assert 0 <= view.index < view.slice_count
        count = view.corner_labels["bottom_left"].text().splitlines()[-1]
        assert f"/{view.slice_count}" in count, f"{plane}: {count!r}"
        assert volume.description in view.corner_labels["top_left"].text()
        assert view.measurements == [], f"{plane}: a measurement of the earlier series remains"
        readout = view.corner_labels["bottom_right"].text()
        if view.cursor_voxel is not None:
            z, y, x = view.cursor_voxel
            assert readout.startswith(f"{volume.voxels[z, y, x]:.0f}")
    assert window.ct.layers.layers == [], "an overlay of the earlier series remains"
    assert window.ct.findings.list.count() == 0, "a finding of the earlier series is listed"
    assert volume.description in window.windowTitle()


@pytest.fixture
def p001(shared_data: Path) -> Path:
    folder = shared_data / COVID_P001
    assert folder.is_dir(), f"COVID-CT-MD P001 missing: {folder}"
    return folder


def test_long_then_short_then_long_leaves_nothing_of_the_first(
    qtbot: Any, window: Any, p001: Path, shipped_engine: Any
) -> None:
    window.resize(1280, 720)
    window.set_engine(shipped_engine)
    long_volume = open_and_wait(qtbot, window, p001)
    window.ct.mpr.axial.set_index(74)
    read_the_series(qtbot, window)

    short_volume = open_and_wait(qtbot, window, SAMPLE_SERIES)
    assert short_volume.shape[0] < long_volume.shape[0]
    assert_only(window, short_volume)
    # the mouse moves again, clicks: the read-outs now read the short series
    hover(window.ct.mpr.axial, 0.5, 0.5)
    assert window.ct.mpr.axial.corner_labels["bottom_right"].text()
    coronal = window.ct.mpr.views["coronal"]
    mouse_click(coronal.graphics.viewport(), image_pixel(coronal, 0.5, 0.5))
    read_the_series(qtbot, window)
    liver = window.ct.findings.liver

    def can_run() -> None:
        assert liver.segment_button.isEnabled(), liver.blocked_note.text()

    qtbot.waitUntil(can_run, timeout=120_000)
    with qtbot.waitSignal(window.ct.findings.finding_added, timeout=120_000):
        window.ct.findings.liver.run()
    qtbot.waitUntil(lambda: window.ct.findings.list.count() == 1)

    again = open_and_wait(qtbot, window, p001)
    assert_only(window, again)
    qtbot.keyClick(window.ct.mpr.axial, Qt.Key.Key_End)
    assert window.ct.mpr.axial.index == again.shape[0] - 1

    # the short series' finding is kept with it: it comes back, and only with it
    short_again = open_and_wait(qtbot, window, SAMPLE_SERIES)
    assert window.ct.volume is short_again
    qtbot.waitUntil(lambda: window.ct.findings.list.count() == 1)
    assert all(view.volume is short_again for view in window.ct.mpr.views.values())
