"""The slice viewer on synthetic volumes: what reaches the screen, and measurements.

The orientation tests look at rendered pixels (``QWidget.grab``), not at arrays:
a flipped axis, a transposed slice or a wrong pixel aspect anywhere between the
volume and the screen (plane extraction, ImageItem axis order, view inversion)
moves the bright marker to the wrong part of the picture.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from medview.ui.ct.layers import LayerStack
from medview.ui.ct.mpr_view import MprView
from medview.ui.ct.planes import extract_plane
from medview.ui.ct.slice_view import SliceView
from medview.ui.qt import QtCore, QtGui

from .conftest import HANG_TIMEOUT_MS, Qt, make_volume, mouse_drag, view_point_at, viewport_point

AIR, BONE, MARKER = -1000, 1000, 400
# window so that air is black, BONE white and MARKER a mid grey
DISPLAY_WINDOW = (0.0, 2000.0)

# Volume [z, y, x] of 40 x 64 x 48 voxels, LPS: x -> patient Left, y -> Posterior, z -> Superior.
SHAPE = (40, 64, 48)
#: the big block towards patient Left-Anterior-Superior (x high, y low, z high)
BLOCK = (slice(22, 30), slice(4, 24), slice(36, 44))
#: a small grey marker towards patient Right-Anterior-Inferior (x low, y low, z low), in the same
#: coronal slices as the block.  Neither sits on a diagonal of any plane, so a transpose (with or
#: without flips) moves at least one of them.
SPOT = (slice(4, 8), slice(16, 24), slice(14, 20))


def _centre(block: tuple[slice, slice, slice]) -> tuple[float, float, float]:
    return tuple((s.start + s.stop) / 2 for s in block)  # type: ignore[return-value]


def stamp_volume() -> Any:
    voxels = np.full(SHAPE, AIR, np.int16)
    voxels[BLOCK] = BONE
    voxels[SPOT] = MARKER
    return make_volume(voxels, spacing=(1.0, 1.0, 1.0))


def new_view(qtbot: Any, plane: str) -> SliceView:
    """A shown SliceView of a fixed size (420 x 420 widget pixels)."""
    view = SliceView(plane, LayerStack())  # type: ignore[arg-type]
    qtbot.addWidget(view)
    view.resize(420, 420)
    view.show()
    qtbot.waitExposed(view)
    return view


def show_plane(qtbot: Any, plane: str, volume: Any, index: int) -> SliceView:
    view = new_view(qtbot, plane)
    view.set_volume(volume, DISPLAY_WINDOW)
    view.set_index(index)
    assert view.index == index
    qtbot.wait(20)
    return view


def image_rect_on_widget(view: SliceView) -> QtCore.QRectF:
    """Where the slice's pixels land in ``view.graphics.grab()`` (widget pixels)."""
    item = view.image_item
    scene_rect = item.mapRectToScene(item.boundingRect())
    polygon = view.graphics.mapFromScene(scene_rect)
    rect = QtCore.QRectF(polygon.boundingRect())
    offset = view.graphics.viewport().mapTo(view.graphics, QtCore.QPoint(0, 0))
    return rect.translated(QtCore.QPointF(offset))


def screen_pixels(view: SliceView) -> np.ndarray:
    """The rendered view as an RGB array (rows = screen y)."""
    image = view.graphics.grab().toImage().convertToFormat(QtGui.QImage.Format.Format_RGB888)
    assert image.devicePixelRatio() == 1.0
    width, height = image.width(), image.height()
    data = np.frombuffer(image.constBits(), np.uint8, count=image.bytesPerLine() * height)
    return data.reshape(height, image.bytesPerLine())[:, : width * 3].reshape(height, width, 3).copy()


def find_on_screen(view: SliceView, kind: str) -> tuple[float, float, int, int]:
    """Centre of the white (``bone``) or grey (``marker``) pixels, as fractions of the image rectangle.

    Returns (fx, fy, pixel width, pixel height) where fx=0 is the image's left edge
    on screen and fy=0 its top edge.
    """
    rgb = screen_pixels(view).astype(int)
    rect = image_rect_on_widget(view)
    grey = np.ptp(rgb, axis=2) < 12  # text labels and the crosshair are coloured
    level = rgb.mean(axis=2)
    mask = grey & ((level > 235) if kind == "bone" else ((level > 120) & (level < 220)))
    # only inside the image rectangle (letters and corner text are drawn around it)
    ys, xs = np.nonzero(mask)
    inside = (xs >= rect.left()) & (xs < rect.right()) & (ys >= rect.top()) & (ys < rect.bottom())
    ys, xs = ys[inside], xs[inside]
    assert xs.size > 20, f"no {kind} pixels on screen inside {rect}"
    fx = ((xs.mean() + 0.5) - rect.left()) / rect.width()
    fy = ((ys.mean() + 0.5) - rect.top()) / rect.height()
    return fx, fy, int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1


def expected_fraction(plane: str, block: tuple[slice, slice, slice]) -> tuple[float, float]:
    """Where a block's centre should be drawn in radiological convention, as (fx, fy)."""
    z, y, x = _centre(block)
    depth, rows, cols = SHAPE
    if plane == "axial":  # anterior up, patient left on screen right
        return x / cols, y / rows
    if plane == "coronal":  # superior up, patient left on screen right
        return x / cols, 1 - z / depth
    return y / rows, 1 - z / depth  # sagittal: anterior left, superior up


def quadrant(fx: float, fy: float) -> str:
    return ("top" if fy < 0.5 else "bottom") + "-" + ("left" if fx < 0.5 else "right")


@pytest.mark.parametrize(
    ("plane", "index", "block_quadrant", "spot_quadrant"),
    [
        # axial through the block: anterior up, patient left on screen right
        ("axial", 26, "top-right", None),
        # axial through the spot: patient right on screen left
        ("axial", 6, None, "top-left"),
        # coronal through both: block superior-left -> top-right, spot inferior-right -> bottom-left
        ("coronal", 20, "top-right", "bottom-left"),
        # sagittal through the block: anterior on the left, superior up
        ("sagittal", 40, "top-left", None),
        # sagittal through the spot: anterior-inferior -> bottom-left
        ("sagittal", 17, None, "bottom-left"),
    ],
)
def test_orientation_reaches_the_screen(
    qtbot: Any, plane: str, index: int, block_quadrant: str | None, spot_quadrant: str | None
) -> None:
    view = show_plane(qtbot, plane, stamp_volume(), index)
    for kind, block, wanted in (("bone", BLOCK, block_quadrant), ("marker", SPOT, spot_quadrant)):
        if wanted is None:
            continue
        fx, fy, _, _ = find_on_screen(view, kind)
        assert quadrant(fx, fy) == wanted, f"{plane} {kind} drawn at ({fx:.2f}, {fy:.2f})"
        ex, ey = expected_fraction(plane, block)
        assert (fx, fy) == pytest.approx((ex, ey), abs=0.015), (
            f"{plane} {kind} at ({fx:.3f}, {fy:.3f}), expected ({ex:.3f}, {ey:.3f})"
        )


def test_orientation_letters_match_the_drawn_image(qtbot: Any) -> None:
    """The edge letters the three views print agree with where anatomy is drawn."""
    view = MprView(LayerStack())
    qtbot.addWidget(view)
    view.resize(900, 600)
    view.show()
    qtbot.waitExposed(view)
    view.set_volume(stamp_volume(), DISPLAY_WINDOW)
    letters = {plane: {side: label.text() for side, label in v.edge_labels.items()} for plane, v in view.views.items()}
    assert letters == {
        "axial": {"left": "R", "right": "L", "top": "A", "bottom": "P"},
        "coronal": {"left": "R", "right": "L", "top": "S", "bottom": "I"},
        "sagittal": {"left": "A", "right": "P", "top": "S", "bottom": "I"},
    }


def test_anisotropic_voxels_keep_their_physical_aspect(qtbot: Any) -> None:
    """5 mm slices of 1 mm pixels: on the coronal view one voxel is 5x taller than wide."""
    voxels = np.full((20, 64, 64), AIR, np.int16)
    voxels[8:12, 30:34, 20:28] = BONE  # 4 slices x 8 columns: 20 mm tall, 8 mm wide
    volume = make_volume(voxels, spacing=(5.0, 1.0, 1.0))
    coronal = show_plane(qtbot, "coronal", volume, 32)

    rect = image_rect_on_widget(coronal)
    per_row, per_col = rect.height() / 20, rect.width() / 64
    assert per_row / per_col == pytest.approx(5.0, rel=0.03)

    _, _, width_px, height_px = find_on_screen(coronal, "bone")
    assert height_px / width_px == pytest.approx(20 / 8, rel=0.12)
    # the axial plane of the same volume is square per pixel
    axial = show_plane(qtbot, "axial", volume, 10)
    rect = image_rect_on_widget(axial)
    assert (rect.height() / 64) / (rect.width() / 64) == pytest.approx(1.0, rel=0.03)


# --------------------------------------------------------------------------- measurements


def measurement_volume() -> Any:
    """Anisotropic pixels (0.5 mm rows, 0.8 mm columns) with a checkerboard region of known statistics."""
    voxels = np.full((6, 60, 50), -1000, np.int16)
    region = np.where((np.add.outer(np.arange(10), np.arange(16)) % 2) == 0, 100, 300).astype(np.int16)
    voxels[3, 20:30, 10:26] = region  # rows 20..29, columns 10..25 of axial slice 3
    return make_volume(voxels, spacing=(2.0, 0.5, 0.8))


@pytest.fixture
def measured_view(qtbot: Any) -> SliceView:
    slice_view = new_view(qtbot, "axial")
    slice_view.set_volume(measurement_volume())
    slice_view.set_index(3)
    qtbot.wait(20)
    return slice_view


def test_distance_drawn_with_a_real_drag_reads_mm(qtbot: Any, measured_view: SliceView) -> None:
    view = measured_view
    view.set_tool("distance")
    range_before = view.view_box.viewRange()
    start = viewport_point(view, QtCore.QPointF(5.0, 4.0))
    end = viewport_point(view, QtCore.QPointF(33.0, 25.0))
    mouse_drag(view.graphics.viewport(), start, end, Qt.MouseButton.LeftButton)

    assert len(view.measurements) == 1
    measurement = view.measurements[0]
    assert measurement.kind == "distance"
    assert measurement.index == 3
    # where the press and the release fell on the slice, in (fractional) pixels of the image itself
    p0, p1 = (view.image_item.mapFromScene(view.graphics.mapToScene(p)) for p in (start, end))
    row_mm, col_mm = 0.5, 0.8
    expected = math.hypot((p1.y() - p0.y()) * row_mm, (p1.x() - p0.x()) * col_mm)
    assert expected > 20
    # the view's own coordinates are millimetres
    v0, v1 = view_point_at(view, start), view_point_at(view, end)
    assert math.hypot(v1.x() - v0.x(), v1.y() - v0.y()) == pytest.approx(expected)
    assert measurement.label.toPlainText() == f"{expected:.1f} mm"
    # a drawing drag must not pan the image
    assert view.view_box.viewRange() == range_before


def test_rectangle_statistics(qtbot: Any, measured_view: SliceView) -> None:
    view = measured_view
    row_mm, col_mm = 0.5, 0.8
    measurement = view.add_measurement(
        "rectangle", QtCore.QPointF(10 * col_mm, 20 * row_mm), QtCore.QPointF(26 * col_mm, 30 * row_mm)
    )
    image = extract_plane(view.volume.voxels, "axial", 3)[20:30, 10:26].astype(float)
    assert (image.mean(), image.std()) == (200.0, 100.0)
    assert measurement.label.toPlainText() == "mean 200.0 HU  SD 100.0 HU\narea 64.0 mm²"
    # one pixel further right takes in a column of air: the numbers must move
    shifted = view.add_measurement(
        "rectangle", QtCore.QPointF(11 * col_mm, 20 * row_mm), QtCore.QPointF(27 * col_mm, 30 * row_mm)
    )
    assert not shifted.label.toPlainText().startswith("mean 200.0")


def test_measurement_belongs_to_its_slice_and_delete_removes_it(qtbot: Any, measured_view: SliceView) -> None:
    view = measured_view
    measurement = view.add_measurement("distance", QtCore.QPointF(2.0, 2.0), QtCore.QPointF(20.0, 10.0))
    assert measurement.roi.isVisible()
    assert measurement.label.isVisible()
    qtbot.keyClick(view, Qt.Key.Key_Up)
    assert view.index == 4
    assert not measurement.roi.isVisible()
    assert not measurement.label.isVisible()
    qtbot.keyClick(view, Qt.Key.Key_Delete)  # nothing on this slice: nothing deleted
    assert view.measurements == [measurement]
    qtbot.keyClick(view, Qt.Key.Key_Down)
    assert view.index == 3
    assert measurement.roi.isVisible()
    assert measurement.label.isVisible()
    with qtbot.waitSignal(view.measurements_changed, timeout=HANG_TIMEOUT_MS):
        qtbot.keyClick(view, Qt.Key.Key_Delete)
    assert view.measurements == []
    assert measurement.roi.scene() is None
    assert measurement.label.scene() is None


def test_a_findings_layers_are_added_in_one_step_and_drawn_on_every_plane(qtbot: Any) -> None:
    from medview.ui.ct.layers import HeatmapLayer, LabelLayer

    volume = stamp_volume()
    view = MprView(LayerStack())
    qtbot.addWidget(view)
    view.set_volume(volume)
    labels = np.zeros(volume.shape, np.uint8)
    labels[tuple(slice(size // 2 - 3, size // 2 + 3) for size in volume.shape)] = 1  # around the centre
    mask = LabelLayer(name="mask", labels=labels)
    heatmap = HeatmapLayer(name="map", values=labels.astype(np.float32))
    redraws: list[int] = []
    view.layers.changed.connect(lambda: redraws.append(1))

    view.layers.add(mask, heatmap)

    assert view.layers.layers == [mask, heatmap]
    assert redraws == [1]  # each redraw renders every visible layer in all three views: once, not per layer
    for slice_view in view.views.values():
        shown = [item for item in slice_view.overlay_items if item.isVisible()]
        assert len(shown) == 2
        assert shown[0].image.max() == 1  # the mask crosses the centre slice of every plane


def test_a_mask_filled_in_place_is_drawn_again_when_touched_and_others_are_not_redrawn(qtbot: Any) -> None:
    from medview.ui.ct.layers import LabelLayer

    volume = stamp_volume()
    view = MprView(LayerStack())
    qtbot.addWidget(view)
    view.set_volume(volume)
    axial = view.views["axial"]
    still = LabelLayer(name="earlier finding", labels=np.ones(volume.shape, np.uint8))
    filling = LabelLayer(name="running", labels=np.zeros(volume.shape, np.uint8))
    view.layers.add(still, filling)
    still_item, filling_item = axial.overlay_items[:2]
    still_image = still_item.image
    assert filling_item.image.max() == 0

    filling.labels[axial.index] = 1  # a model writes the slice on screen
    view.layers.touch(filling)

    assert filling_item.image.max() == 1  # drawn again from the new data
    assert still_item.image is still_image  # the unchanged layer kept its drawn plane
    axial.set_index(axial.index + 1)
    assert still_item.image is not still_image  # another slice draws every layer
    assert filling_item.image.max() == 0
