"""The main window on real DICOM data, driven with real Qt input events.

Uses the sample series bundled in ``resources/samples`` (20 axial CT slices)
and, where available, COVID-CT-MD P001 from the shared data (148 slices).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from medview.io import dicom
from medview.io.dicom import decode as dicom_decode
from medview.io.volume_files import read_label_map
from medview.ui.ct.layers import outline
from medview.ui.ct.planes import extract_plane
from medview.ui.ct.slice_view import WINDOW_DRAG_PIXELS_PER_WIDTH
from medview.ui.dialogs import AboutDialog, ShortcutsDialog
from medview.ui.qt import QtCore, QtGui, QtWidgets

from .conftest import (
    COVID_P001,
    HANG_TIMEOUT_MS,
    LOAD_TIMEOUT_MS,
    SAMPLE_MASK,
    SAMPLE_SERIES,
    Qt,
    mouse_click,
    mouse_drag,
    open_and_wait,
    view_point_at,
    viewport_point,
    watch_tasks,
    wheel,
)


@pytest.fixture
def sample_window(qtbot: Any, window: Any) -> Any:
    """The main window showing the bundled sample series, fully loaded."""
    open_and_wait(qtbot, window, SAMPLE_SERIES)
    return window


def labels(view: Any) -> dict[str, str]:
    return {side: label.text() for side, label in view.edge_labels.items()}


def image_fraction_point(view: Any, fx: float, fy: float) -> QtCore.QPointF:
    """View (mm) coordinates of a point given as fractions of the displayed slice."""
    rect = view.image_item.mapRectToParent(view.image_item.boundingRect())
    return QtCore.QPointF(rect.left() + fx * rect.width(), rect.top() + fy * rect.height())


# --------------------------------------------------------------------------- opening


def test_decode_threads_setting_reaches_the_series_load(
    qtbot: Any, window: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The settings' decode pool size is what the workspace's background load decodes with."""
    from medview.ui.ct import workspace

    pools: list[int | None] = []
    real_load = workspace.load_dicom_series

    def recording(*args: Any, workers: int | None = None, **kwargs: Any) -> Any:
        pools.append(workers)
        return real_load(*args, workers=workers, **kwargs)

    monkeypatch.setattr(workspace, "load_dicom_series", recording)
    window.settings.decode_threads = 3
    volume = open_and_wait(qtbot, window, SAMPLE_SERIES)
    assert pools == [3]
    assert volume.shape == (20, 512, 512)


def test_sample_series_opens_with_labels_and_orientation(qtbot: Any, window: Any, config_dir: Path) -> None:
    volume = open_and_wait(qtbot, window, SAMPLE_SERIES)
    assert volume.shape == (20, 512, 512)
    # remembered as a recent path, in the test's own settings folder
    settings = json.loads((config_dir / "settings.json").read_text(encoding="utf-8"))
    assert settings["recent_paths"] == [str(SAMPLE_SERIES)]
    assert window.ct.mpr.axial.volume is volume

    browser = window.ct.browser
    series_items = []
    iterator = QtWidgets.QTreeWidgetItemIterator(browser)
    while iterator.value():
        item = iterator.value()
        if item.data(0, Qt.ItemDataRole.UserRole) is not None:
            series_items.append(item)
        iterator += 1
    assert len(series_items) == 1
    assert series_items[0].text(1) == "CT"
    assert series_items[0].text(2) == "20"

    axial = window.ct.mpr.axial
    assert axial.index == 10
    assert axial.corner_labels["bottom_left"].text().startswith("Axial 11/20 ")
    assert np.array_equal(axial.image_item.image, volume.voxels[10])
    assert labels(axial) == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    assert labels(window.ct.mpr.views["coronal"]) == {"left": "R", "right": "L", "top": "S", "bottom": "I"}
    assert labels(window.ct.mpr.views["sagittal"]) == {"left": "A", "right": "P", "top": "S", "bottom": "I"}
    for view in window.ct.mpr.views.values():
        assert view.corner_labels["top_right"].text() == "W 300  L 40"  # the series' own window


@pytest.mark.parametrize("size", [(1280, 720), (1920, 1080)])
def test_read_outs_of_a_view_never_cover_each_other(qtbot: Any, sample_window: Any, size: tuple[int, int]) -> None:
    # at 1280x720 the coronal and sagittal views are about 230 pixels wide: the series' date and name ran under
    # the window read-out, and the orientation letter under both
    window = sample_window
    window.resize(*size)
    window.show()
    qtbot.waitExposed(window)
    for view in window.ct.mpr.views.values():
        qtbot.waitUntil(lambda view=view: view.graphics.width() < size[0] // 2)  # laid out in the resized window
        shown = [
            label
            for label in (*view.corner_labels.values(), *view.edge_labels.values())
            if label.text() and label.isVisible()
        ]
        assert len(shown) == 7  # three corners (no cursor read-out without a mouse), four orientation letters
        for index, label in enumerate(shown):
            for other in shown[index + 1 :]:
                assert not label.geometry().intersects(other.geometry()), (view.plane, label.text(), other.text())


def test_mask_overlay_follows_the_layers_panel(qtbot: Any, sample_window: Any) -> None:
    window = sample_window
    volume = window.ct.volume
    window.ct.load_mask(SAMPLE_MASK)
    qtbot.waitUntil(lambda: len(window.ct.layers.layers) == 1, timeout=LOAD_TIMEOUT_MS)
    expected = read_label_map(SAMPLE_MASK, volume).labels
    assert expected.shape == volume.shape
    # the liver: enhanced soft tissue, on the patient's right (low x)
    assert 40 < volume.voxels[expected > 0].mean() < 200
    assert np.nonzero(expected)[2].mean() < volume.shape[2] / 2

    panel = window.ct.layers_panel
    assert panel.list.count() == 1
    item = panel.list.item(0)
    assert "liver_mask.nii.gz" in item.text()
    assert "(mask)" in item.text()
    assert item.checkState() == Qt.CheckState.Checked

    axial = window.ct.mpr.axial
    overlay = axial.overlay_items[0]
    reference = expected[axial.index]
    assert np.count_nonzero(reference) > 1000
    assert overlay.isVisible()
    assert np.array_equal(overlay.image, reference)
    # drawn exactly over the CT pixels
    assert overlay.mapRectToScene(overlay.boundingRect()) == axial.image_item.mapRectToScene(
        axial.image_item.boundingRect()
    )

    # untick the layer in the list: every plane hides it; tick again: back
    panel.list.item(0).setCheckState(Qt.CheckState.Unchecked)
    assert window.ct.layers.layers[0].visible is False
    assert not any(item.isVisible() for view in window.ct.mpr.views.values() for item in view.overlay_items)
    panel.list.item(0).setCheckState(Qt.CheckState.Checked)
    assert overlay.isVisible()

    # "Outline only": fewer pixels, all on the mask
    full = np.count_nonzero(overlay.image)
    qtbot.mouseClick(panel.outline, Qt.MouseButton.LeftButton, pos=QtCore.QPoint(8, panel.outline.height() // 2))
    assert panel.outline.isChecked()
    outlined = overlay.image
    assert 0 < np.count_nonzero(outlined) < full / 4
    assert np.all(reference[outlined > 0] > 0)
    assert np.array_equal(outlined, outline(reference))
    qtbot.mouseClick(panel.outline, Qt.MouseButton.LeftButton, pos=QtCore.QPoint(8, panel.outline.height() // 2))
    assert not panel.outline.isChecked()
    assert np.count_nonzero(overlay.image) == full

    panel.opacity.setValue(30)
    assert window.ct.layers.layers[0].opacity == pytest.approx(0.3)
    for view in window.ct.mpr.views.values():
        assert view.overlay_items[0].opacity() == pytest.approx(0.3)

    for plane in ("coronal", "sagittal"):
        view = window.ct.mpr.views[plane]
        plane_mask = extract_plane(expected, plane, view.index)
        assert np.count_nonzero(plane_mask) > 0
        assert np.array_equal(view.overlay_items[0].image, plane_mask), plane


# --------------------------------------------------------------------------- navigation


def test_keys_and_wheel_scroll_the_axial_view(qtbot: Any, sample_window: Any) -> None:
    window = sample_window
    volume = window.ct.volume
    axial = window.ct.mpr.axial
    label = axial.corner_labels["bottom_left"]

    for key, index in (
        (Qt.Key.Key_Up, 11),
        (Qt.Key.Key_Down, 10),
        (Qt.Key.Key_PageUp, 19),  # ten slices, clamped at the last one
        (Qt.Key.Key_Home, 0),
        (Qt.Key.Key_PageUp, 10),
        (Qt.Key.Key_End, 19),
    ):
        qtbot.keyClick(axial, key)
        assert axial.index == index, key
        z_mm = volume.index_to_lps(index, 0, 0)[2]
        assert label.text() == f"Axial {index + 1}/20  z {z_mm:.1f} mm"
        assert np.array_equal(axial.image_item.image, volume.voxels[index])
        assert window.ct.mpr.position[0] == index  # the other planes' crosshair follows

    viewport = axial.graphics.viewport()
    centre = viewport.rect().center()
    qtbot.keyClick(axial, Qt.Key.Key_Home)
    wheel(viewport, centre, +120)
    assert axial.index == 1
    assert label.text().startswith("Axial 2/20")
    wheel(viewport, centre, +120)
    assert axial.index == 2
    wheel(viewport, centre, -120)
    assert axial.index == 1

    (x0, x1), (y0, y1) = axial.view_box.viewRange()
    wheel(viewport, centre, +120, Qt.KeyboardModifier.ControlModifier)
    assert axial.index == 1  # Ctrl+wheel zooms, it does not scroll
    (u0, u1), (v0, v1) = axial.view_box.viewRange()
    assert (u1 - u0) < 0.9 * (x1 - x0)
    assert (v1 - v0) < 0.9 * (y1 - y0)


def test_right_drag_sets_the_window_and_presets_apply_everywhere(qtbot: Any, sample_window: Any) -> None:
    window = sample_window
    axial = window.ct.mpr.axial
    assert axial.display_window == (40.0, 300.0)
    viewport = axial.graphics.viewport()
    start = viewport.rect().center()
    moves = [QtCore.QPoint(start.x() + 12 * i, start.y() + 6 * i) for i in range(1, 6)]

    with qtbot.waitSignal(window.ct.mpr.window_changed, timeout=HANG_TIMEOUT_MS):
        mouse_drag(viewport, start, moves[-1], Qt.MouseButton.RightButton, steps=5)

    # the whole drag (60 px right, 30 px down) changes the window by shares of the width it started from
    step = 300.0 / WINDOW_DRAG_PIXELS_PER_WIDTH
    center, width = 40.0 + 30 * step, 300.0 + 60 * step
    assert axial.display_window == pytest.approx((center, width))
    text = f"W {width:.0f}  L {center:.0f}"
    for view in window.ct.mpr.views.values():
        assert view.corner_labels["top_right"].text() == text
        assert view.image_item.levels is not None
        assert tuple(view.image_item.levels) == pytest.approx((center - width / 2, center + width / 2))

    window.ct.apply_preset("Lung")
    for view in window.ct.mpr.views.values():
        assert view.corner_labels["top_right"].text() == "W 1500  L -600"
        assert tuple(view.image_item.levels) == pytest.approx((-1350.0, 150.0))


def test_left_click_on_axial_moves_the_other_planes(qtbot: Any, sample_window: Any) -> None:
    window = sample_window
    axial, coronal, sagittal = (window.ct.mpr.views[p] for p in ("axial", "coronal", "sagittal"))
    viewport = axial.graphics.viewport()
    pixel = viewport_point(axial, image_fraction_point(axial, 0.25, 0.7))
    expected = axial.voxel_at(view_point_at(axial, pixel))
    assert expected is not None
    z, y, x = expected
    assert z == 10
    assert abs(y - 358) <= 2
    assert abs(x - 128) <= 2
    range_before = axial.view_box.viewRange()

    mouse_click(viewport, pixel)

    assert window.ct.mpr.position == (z, y, x)
    assert coronal.index == y
    assert sagittal.index == x
    assert axial.index == z
    assert coronal.corner_labels["bottom_left"].text() == f"Coronal {y + 1}/512"
    assert sagittal.corner_labels["bottom_left"].text() == f"Sagittal {x + 1}/512"
    assert np.array_equal(coronal.image_item.image, extract_plane(window.ct.volume.voxels, "coronal", y))
    assert np.array_equal(sagittal.image_item.image, extract_plane(window.ct.volume.voxels, "sagittal", x))
    row_mm, col_mm = window.ct.volume.spacing[1], window.ct.volume.spacing[2]
    assert axial.crosshair[0].value() == pytest.approx((x + 0.5) * col_mm)
    assert axial.crosshair[1].value() == pytest.approx((y + 0.5) * row_mm)
    assert axial.view_box.viewRange() == range_before  # a click does not pan


# --------------------------------------------------------------------------- tag browser


def test_tag_browser_follows_the_slice_and_filters(qtbot: Any, sample_window: Any) -> None:
    window = sample_window
    tags, axial, volume = window.ct.tags, window.ct.mpr.axial, window.ct.volume
    window.tags_dock.show()
    qtbot.waitUntil(lambda: tags.tree.topLevelItemCount() > 50, timeout=5000)
    assert tags.source_label.text() == volume.slice_files[axial.index]

    def shown_value(tag: str) -> str:
        items = tags.tree.findItems(tag, Qt.MatchFlag.MatchExactly | Qt.MatchFlag.MatchRecursive, 0)
        assert len(items) == 1, tag
        return items[0].text(3)

    def header_position(index: int) -> str:
        dataset = pydicom.dcmread(volume.slice_files[index], stop_before_pixels=True)
        return str(dataset["ImagePositionPatient"].value)

    # the header shown is the displayed slice's: its z is the one the view prints
    assert shown_value("(0020,0032)") == header_position(axial.index)

    total = len(tags.visible_tags())
    qtbot.keyClicks(tags.search, "0010,0020")
    assert tags.visible_tags() == ["(0010,0020)"]
    tags.search.clear()
    assert len(tags.visible_tags()) == total
    qtbot.keyClicks(tags.search, "image position")
    assert tags.visible_tags() == ["(0020,0032)"]

    before = tags.source_label.text()
    qtbot.keyClick(axial, Qt.Key.Key_Up)
    qtbot.waitUntil(lambda: tags.source_label.text() == volume.slice_files[axial.index], timeout=3000)
    assert tags.source_label.text() != before
    assert shown_value("(0020,0032)") == header_position(axial.index)
    assert tags.visible_tags() == ["(0020,0032)"]  # the filter survives the slice change


def test_tag_browser_finds_dicom_keywords(qtbot: Any, sample_window: Any) -> None:
    window = sample_window
    window.tags_dock.show()
    qtbot.waitUntil(lambda: window.ct.tags.tree.topLevelItemCount() > 50, timeout=5000)
    qtbot.keyClicks(window.ct.tags.search, "PatientID")
    assert "(0010,0020)" in window.ct.tags.visible_tags()


# --------------------------------------------------------------------------- bad input


def _folder_with_bad_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    folder = tmp_path / "study"
    shutil.copytree(SAMPLE_SERIES, folder)
    png = folder / "scout.dcm"
    image = QtGui.QImage(16, 16, QtGui.QImage.Format.Format_RGB32)
    image.fill(QtGui.QColor("red"))
    assert image.save(str(png), "PNG")
    assert png.read_bytes().startswith(b"\x89PNG")
    original = sorted(SAMPLE_SERIES.iterdir())[7].read_bytes()
    truncated = folder / "zz_truncated_copy.dcm"
    truncated.write_bytes(original[: len(original) // 2])
    return folder, png, truncated


def test_bad_files_in_a_folder_are_skipped_and_named(qtbot: Any, window: Any, tmp_path: Path, monkeypatch: Any) -> None:
    folder, png, truncated = _folder_with_bad_files(tmp_path)
    after_scan: list[list[str]] = []

    def hook(task: Any) -> None:
        if task.description.startswith("Scanning"):
            # runs after the window's own slot: the problems the scan reported
            task.signals.succeeded.connect(lambda _result: after_scan.append(list(window.ct.problems)))

    watch_tasks(monkeypatch, window, hook)
    volume = open_and_wait(qtbot, window, folder)

    assert len(after_scan) == 1
    assert any(png.name in p and "PNG" in p for p in after_scan[0])
    assert volume.shape[0] >= 20
    assert volume.shape[1:] == (512, 512)
    assert window.ct.mpr.axial.volume is volume
    assert any(truncated.name in p for p in window.ct.problems)


def test_problems_of_the_last_open_keep_the_skipped_files(qtbot: Any, window: Any, tmp_path: Path) -> None:
    folder, png, truncated = _folder_with_bad_files(tmp_path)
    open_and_wait(qtbot, window, folder)
    assert any(truncated.name in p for p in window.ct.problems)
    assert any(png.name in p and "PNG" in p for p in window.ct.problems)


def test_folder_without_dicom_lists_problems_and_stays_usable(qtbot: Any, window: Any, tmp_path: Path) -> None:
    folder = tmp_path / "not_dicom"
    folder.mkdir()
    image = QtGui.QImage(8, 8, QtGui.QImage.Format.Format_RGB32)
    image.fill(QtGui.QColor("blue"))
    assert image.save(str(folder / "photo.dcm"), "PNG")
    (folder / "notes.txt").write_text("not an image\n", encoding="utf-8")
    (folder / "empty.dcm").write_bytes(b"")

    window.open_paths([folder])
    qtbot.waitUntil(lambda: len(window.ct.problems) == 3, timeout=LOAD_TIMEOUT_MS)
    qtbot.waitUntil(lambda: not window.tasks.running, timeout=5000)
    assert window.ct.volume is None
    assert window.ct.mpr.axial.volume is None
    assert any("photo.dcm" in p and "PNG" in p for p in window.ct.problems)
    assert any("notes.txt" in p for p in window.ct.problems)
    assert any("empty.dcm" in p for p in window.ct.problems)
    boxes = window.findChildren(QtWidgets.QMessageBox)
    shown = [box for box in boxes if box.isVisible() and box.windowTitle() == "No DICOM images"]
    assert shown
    assert f"No DICOM images found in {folder}" in shown[-1].text()
    assert "photo.dcm" in shown[-1].text()
    assert str(folder) not in window.settings.recent_paths
    assert not shown[-1].isModal()

    # still responsive: the next open works
    volume = open_and_wait(qtbot, window, SAMPLE_SERIES)
    assert volume.shape == (20, 512, 512)


# --------------------------------------------------------------------------- background loading


def _p001(shared_data: Path) -> Path:
    folder = shared_data / COVID_P001
    if not folder.is_dir():
        pytest.skip(f"{folder} not available")
    return folder


def test_cancel_right_after_the_first_slice(
    qtbot: Any, sample_window: Any, shared_data: Path, monkeypatch: Any
) -> None:
    window = sample_window
    p001 = _p001(shared_data)
    events: list[tuple[str, float]] = []

    def hook(task: Any) -> None:
        if not task.description.startswith("Loading"):
            return

        def on_partial(_item: object) -> None:
            if not any(name == "cancel" for name, _ in events):
                window.ct.cancel_loading()
                events.append(("cancel", time.monotonic()))

        task.signals.partial.connect(on_partial)
        task.signals.cancelled.connect(lambda: events.append(("cancelled", time.monotonic())))
        task.signals.succeeded.connect(lambda _v: events.append(("succeeded", time.monotonic())))

    watch_tasks(monkeypatch, window, hook)
    window.open_paths([p001])
    qtbot.waitUntil(lambda: any(name == "cancel" for name, _ in events), timeout=LOAD_TIMEOUT_MS)
    # generous: these catch a hang, not a slow machine (bench.responsiveness times cancel latency)
    qtbot.waitUntil(lambda: any(name == "cancelled" for name, _ in events), timeout=HANG_TIMEOUT_MS)
    assert "succeeded" not in dict(events)
    qtbot.waitUntil(lambda: not window.progress.isVisible(), timeout=HANG_TIMEOUT_MS)
    assert "cancelled" in window.statusBar().currentMessage()
    assert window.ct.volume is not None
    assert window.ct.mpr.axial.volume is window.ct.volume
    assert window.ct.mpr.axial.image_item.image is not None

    volume = open_and_wait(qtbot, window, p001)
    assert volume.shape == (148, 512, 512)
    assert window.ct.mpr.axial.corner_labels["bottom_left"].text().startswith("Axial 75/148")


def test_cancel_keeps_the_previous_volume(qtbot: Any, sample_window: Any, shared_data: Path, monkeypatch: Any) -> None:
    """Cancelling after the first slice appeared brings back the volume and overlays that were open."""
    window = sample_window
    window.ct.load_mask(SAMPLE_MASK)
    qtbot.waitUntil(lambda: len(window.ct.layers.layers) == 1, timeout=LOAD_TIMEOUT_MS)
    previous = window.ct.volume
    previous_layers = list(window.ct.layers.layers)
    p001 = _p001(shared_data)
    events: list[str] = []

    def hook(task: Any) -> None:
        if task.description.startswith("Loading"):
            task.signals.partial.connect(lambda _item: events or (events.append("partial"), window.ct.cancel_loading()))
            task.signals.cancelled.connect(lambda: events.append("cancelled"))

    watch_tasks(monkeypatch, window, hook)
    window.open_paths([p001])
    qtbot.waitUntil(lambda: "cancelled" in events, timeout=LOAD_TIMEOUT_MS)
    assert events[0] == "partial", "the new series was on screen before the cancel"
    assert window.ct.volume is previous
    assert window.ct.mpr.axial.volume is previous
    assert window.ct.layers.layers == previous_layers


def test_opened_series_gets_its_thumbnail_without_a_second_decode(
    qtbot: Any, window: Any, shared_data: Path, monkeypatch: Any
) -> None:
    """The series that opens takes its thumbnail from its own volume; the thumbnail task skips it."""
    from medview.ui.ct import workspace

    thumbnail_decodes: list[str] = []
    original = workspace.decode_slice

    def counting(header: Any) -> np.ndarray:
        thumbnail_decodes.append(header.source.label)
        return original(header)

    monkeypatch.setattr(workspace, "decode_slice", counting)
    open_and_wait(qtbot, window, _p001(shared_data))
    qtbot.waitUntil(lambda: not window.tasks.running, timeout=5000)
    assert thumbnail_decodes == []
    (item,) = window.ct.browser.series_items.values()
    icon = item.icon(0)
    assert not icon.isNull()
    image = icon.pixmap(64, 64).toImage()
    assert image.width() > 0
    assert len({image.pixelColor(x, 32).lightness() for x in range(image.width())}) > 10  # anatomy, not a flat tile


def test_first_slice_is_shown_before_the_series_finishes(
    qtbot: Any, window: Any, shared_data: Path, monkeypatch: Any
) -> None:
    p001 = _p001(shared_data)
    events: list[tuple[str, bool, bool]] = []
    own_slice_shown: list[bool] = []

    def on_partial(task: Any, item: tuple[Any, int]) -> None:
        events.append(("partial", window.ct.volume is not None, task.done.is_set()))
        axial = window.ct.mpr.axial
        if item[1] == axial.index:  # the displayed slice just arrived: it must be on screen now
            own_slice_shown.append(np.array_equal(axial.image_item.image, item[0].voxels[item[1]]))

    def hook(task: Any) -> None:
        if not task.description.startswith("Loading"):
            return
        # connected after the window's own slots: these see the window as it was just updated
        task.signals.partial.connect(lambda item: on_partial(task, item))
        task.signals.succeeded.connect(lambda _v: events.append(("succeeded", window.ct.volume is not None, True)))

    watch_tasks(monkeypatch, window, hook)
    assert window.ct.volume is None
    with qtbot.waitSignal(window.ct.volume_loaded, timeout=LOAD_TIMEOUT_MS):
        window.open_paths([p001])
        qtbot.waitUntil(lambda: window.ct.volume is not None, timeout=LOAD_TIMEOUT_MS)
        shown_early = window.ct.volume
        early_load = window.ct.load_task
        assert not early_load.done.is_set()  # the series is still being decoded
        assert shown_early.shape == (148, 512, 512)
        assert window.ct.mpr.axial.volume is shown_early

    # volume_loaded fires inside the window's slot; this test's own slot is the next queued call
    qtbot.waitUntil(lambda: any(name == "succeeded" for name, _, _ in events), timeout=HANG_TIMEOUT_MS)
    names = [name for name, _, _ in events]
    assert names[0] == "partial"
    assert names[-1] == "succeeded"
    assert names.count("succeeded") == 1
    assert names.count("partial") == 148
    assert events[0][1] is True  # the first partial put a volume on screen
    assert own_slice_shown == [True]
    assert window.ct.volume.shape == (148, 512, 512)


def test_first_picture_is_a_decoded_slice(qtbot: Any, window: Any, shared_data: Path, monkeypatch: Any) -> None:
    """When the middle slice decodes slower than its neighbours, the first picture must still show anatomy."""
    p001 = _p001(shared_data)
    scan = dicom.scan_paths([p001])
    ordered = dicom.sort_slices(scan.series[0].slices).slices
    slow_uid = ordered[len(ordered) // 2].sop_instance_uid
    original = dicom.decode_slice

    def slow_middle(header: Any) -> np.ndarray:
        if header.sop_instance_uid == slow_uid:
            time.sleep(0.5)  # a larger compressed slice, a slow disk
        return original(header)

    monkeypatch.setattr(dicom_decode, "decode_slice", slow_middle)
    first_picture: list[np.ndarray] = []

    def hook(task: Any) -> None:
        if task.description.startswith("Loading"):
            task.signals.partial.connect(
                lambda _item: first_picture or first_picture.append(window.ct.mpr.axial.image_item.image.copy())
            )

    watch_tasks(monkeypatch, window, hook)
    open_and_wait(qtbot, window, p001)
    assert np.any(first_picture[0] != dicom.MISSING_SLICE_VALUE), "the first picture is an empty (air) slice"


# --------------------------------------------------------------------------- dialogs


def test_about_and_shortcuts_dialogs(qtbot: Any, window: Any) -> None:
    window.show_about()
    about = window.findChildren(AboutDialog)
    assert len(about) == 1
    assert about[0].isVisible()
    shown_text = " ".join(label.text() for label in about[0].findChildren(QtWidgets.QLabel))
    assert "MedView" in shown_text
    assert "pydicom" in shown_text
    assert "MedView" in about[0].text
    assert "pydicom" in about[0].text

    shortcuts_action = next(a for a in window.all_actions if "Keyboard shortcuts" in a.text().replace("&", ""))
    shortcuts_action.trigger()
    dialogs = window.findChildren(ShortcutsDialog)
    assert len(dialogs) == 1
    assert dialogs[0].isVisible()
    table = dialogs[0].table
    rows = {(table.item(r, 0).text(), table.item(r, 1).text()) for r in range(table.rowCount())}
    assert ("Ctrl+O", "Open folder…") in rows
    assert any(key == "Right drag" and "Window" in text for key, text in rows)
    assert any(key == "Ctrl + wheel" for key, _ in rows)
