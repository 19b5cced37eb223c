"""The window as the clinical review used it: screen sizes, opening, reading aids, keys, About.

Each test stands for an item of the review (issue 19) that a clinician ran into in a real window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from medview.ui.ct import workspace as ct_workspace_module
from medview.ui.dialogs import AboutDialog
from medview.ui.qt import QtCore, QtWidgets
from tests.gui.conftest import (
    SAMPLE_SERIES,
    Qt,
    _mouse_event,
    image_pixel,
    mouse_click,
    mouse_drag,
    mouse_move,
    open_and_wait,
)

SMALLEST_SCREEN = QtCore.QSize(1280, 720)


@pytest.fixture
def sample_window(qtbot: Any, window: Any) -> Any:
    open_and_wait(qtbot, window, SAMPLE_SERIES)
    return window


# --------------------------------------------------------------------------- 2: the window fits common screens


def test_every_workspace_fits_a_1280x720_screen(qtbot: Any, window: Any) -> None:
    for index in range(window.workspaces.count()):
        window.workspaces.setCurrentIndex(index)
        qtbot.wait(10)
        minimum = window.minimumSizeHint().expandedTo(window.minimumSize())
        name = window.workspaces.tabText(index)
        assert minimum.width() <= SMALLEST_SCREEN.width(), f"{name}: {minimum.width()} px wide at least"
        assert minimum.height() <= SMALLEST_SCREEN.height(), f"{name}: {minimum.height()} px high at least"
        window.resize(SMALLEST_SCREEN)
        qtbot.wait(10)
        assert window.width() <= SMALLEST_SCREEN.width()


def test_the_window_opens_maximised_within_the_screen(qtbot: Any) -> None:
    from medview.ui.main_window import MainWindow

    main = MainWindow()
    qtbot.addWidget(main)
    available = main.screen().availableGeometry().size()
    assert main.windowState() & Qt.WindowState.WindowMaximized
    assert main.width() <= available.width()
    assert main.height() <= available.height()
    main.close()


def test_long_names_are_elided_with_the_full_name_in_a_tooltip(qtbot: Any, sample_window: Any) -> None:
    from medview.ui.ct.layers import LabelLayer

    window = sample_window
    name = "Liver, reference mask from TotalSegmentator [liver_mask_with_a_long_file_name.nii.gz]"
    window.ct.layers.add(LabelLayer(name=name, labels=window.ct.volume.voxels > 0, names={1: "liver"}))
    for view in (window.ct.browser, window.ct.layers_panel.list):
        assert view.horizontalScrollBarPolicy() == Qt.ScrollBarPolicy.ScrollBarAlwaysOff
        assert view.textElideMode() == Qt.TextElideMode.ElideMiddle
    layer_items = [window.ct.layers_panel.list.item(row) for row in range(window.ct.layers_panel.list.count())]
    assert any(item.toolTip().startswith(name) for item in layer_items)
    series_item = next(iter(window.ct.browser.series_items.values()))
    assert series_item.toolTip(0).splitlines()[0] == series_item.text(0).splitlines()[0]


# --------------------------------------------------------------------------- 7, 8: opening


def test_opening_a_recording_or_photos_from_the_menu_shows_their_tab(
    qtbot: Any, window: Any, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recording = next((shared_data / "lung_sound").rglob("*.wav"))
    photo = next((shared_data / "skin").rglob("*.jpg"))
    monkeypatch.setattr(QtWidgets.QFileDialog, "getOpenFileName", lambda *_a, **_k: (str(recording), ""))
    monkeypatch.setattr(QtWidgets.QFileDialog, "getOpenFileNames", lambda *_a, **_k: ([str(photo)], ""))
    assert window.workspaces.currentWidget() is window.ct.mpr
    window._choose_recording()
    assert window.workspaces.currentWidget() is window.lung
    window.workspaces.setCurrentWidget(window.ct.mpr)
    window._choose_photos()
    assert window.workspaces.currentWidget() is window.skin
    assert str(recording) in window.settings.recent_paths
    assert str(photo) in window.settings.recent_paths


def test_an_empty_folder_says_so_and_is_not_added_to_recent(
    qtbot: Any, window: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown: list[tuple[str, str]] = []
    monkeypatch.setattr(
        ct_workspace_module, "show_message", lambda _p, title, text, *a, **k: shown.append((title, text))
    )
    empty = tmp_path / "empty study"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")  # a text file is not DICOM, and is not a problem either
    task = window.open_paths([empty])
    qtbot.waitUntil(lambda: task.done.is_set() and task not in window.tasks.running, timeout=20_000)
    qtbot.waitUntil(lambda: bool(shown))
    assert any(f"No DICOM images found in {empty}" in text for _title, text in shown)
    assert str(empty) not in window.settings.recent_paths
    assert window.ct.volume is None


def test_a_series_opened_goes_to_recent(qtbot: Any, window: Any) -> None:
    open_and_wait(qtbot, window, SAMPLE_SERIES)
    assert window.settings.recent_paths[0] == str(SAMPLE_SERIES)


# --------------------------------------------------------------------------- 10, 11: read-outs and window


def test_window_drag_is_proportional_and_the_preset_box_names_the_window(qtbot: Any, sample_window: Any) -> None:
    window, axial = sample_window, sample_window.ct.mpr.axial
    qtbot.keyClick(axial, Qt.Key.Key_1)  # Lung
    assert axial.display_window == (-600.0, 1500.0)
    assert window.preset_box.currentText() == "Lung"
    viewport = axial.graphics.viewport()
    start = QtCore.QPoint(viewport.width() // 4, viewport.height() // 2)
    mouse_drag(viewport, start, start + QtCore.QPoint(190, 0), Qt.MouseButton.RightButton, steps=10)
    center, width = axial.display_window
    # 190 px took the width from 1500 to 5915 before (each step scaled by the width it had just grown to)
    assert 1500 < width < 2400
    assert center == pytest.approx(-600.0)
    assert window.preset_box.currentIndex() == 0  # a window of one's own is no preset
    qtbot.keyClick(axial, Qt.Key.Key_2)
    assert window.preset_box.currentText() == "Abdomen"


def test_roi_statistics_carry_their_unit_on_a_dark_backing(qtbot: Any, sample_window: Any) -> None:
    axial = sample_window.ct.mpr.axial
    sample_window.ct.mpr.set_tool("rectangle")
    mouse_drag(axial.graphics.viewport(), image_pixel(axial, 0.4, 0.4), image_pixel(axial, 0.6, 0.6))
    (measurement,) = axial.measurements
    assert "HU" in measurement.text
    assert measurement.text.count(" HU") == 2  # mean and SD
    assert measurement.label.fill.color().alpha() > 150
    assert measurement.label.zValue() > axial.crosshair[0].zValue()


def test_the_hover_read_out_follows_the_slice_and_counts_like_the_slice_counter(qtbot: Any, sample_window: Any) -> None:
    axial = sample_window.ct.mpr.axial
    axial.set_index(5)
    pixel = image_pixel(axial, 0.5, 0.5)
    mouse_move(axial, pixel)
    assert "slice 6/20" in axial.corner_labels["bottom_right"].text()
    assert axial.corner_labels["bottom_left"].text().splitlines()[-1].startswith("Axial 6/20")
    assert "slice 6/20" in sample_window.cursor_label.text()
    qtbot.keyClick(axial, Qt.Key.Key_Up)
    z, y, x = axial.cursor_voxel
    assert z == 6
    readout = axial.corner_labels["bottom_right"].text()
    assert "slice 7/20" in readout
    assert readout.startswith(f"{sample_window.ct.volume.voxels[z, y, x]:.0f} HU")
    QtWidgets.QApplication.sendEvent(axial, QtCore.QEvent(QtCore.QEvent.Type.Leave))
    assert axial.corner_labels["bottom_right"].text() == ""


# --------------------------------------------------------------------------- 12: keys after a click elsewhere


def test_slice_keys_work_after_clicking_a_layers_check_box(qtbot: Any, sample_window: Any) -> None:
    window, axial = sample_window, sample_window.ct.mpr.axial
    box = window.ct.layers_panel.measurements
    qtbot.mouseClick(box, Qt.MouseButton.LeftButton)
    box.setFocus()
    assert box.hasFocus() or QtWidgets.QApplication.focusWidget() is box
    qtbot.keyClick(box, Qt.Key.Key_Home)
    assert axial.index == 0
    qtbot.keyClick(box, Qt.Key.Key_Up)
    assert axial.index == 1
    qtbot.keyClick(box, Qt.Key.Key_End)
    assert axial.index == axial.slice_count - 1
    # a widget that uses the keys itself keeps them
    window.ct.layers_panel.list.setFocus()
    qtbot.keyClick(window.ct.layers_panel.list, Qt.Key.Key_Home)
    assert axial.index == axial.slice_count - 1


# --------------------------------------------------------------------------- 16: CT tools belong to CT


def test_ct_toolbar_and_voxel_read_out_show_only_on_the_ct_tab(qtbot: Any, sample_window: Any) -> None:
    window = sample_window
    assert window.ct_toolbar.isVisible()
    assert window.cursor_label.isVisible()
    for other in (window.lung, window.skin):
        window.workspaces.setCurrentWidget(other)
        assert not window.ct_toolbar.isVisible()
        assert not window.cursor_label.isVisible()
    window.workspaces.setCurrentWidget(window.ct.mpr)
    assert window.ct_toolbar.isVisible()


# --------------------------------------------------------------------------- 19: About, enlarge, report folder


def test_about_names_the_folders_and_the_intended_use(qtbot: Any, window: Any, data_dir: Path) -> None:
    window.show_about()
    about = window.findChildren(AboutDialog)[-1]
    assert "Intended use" in about.text
    assert f"Audit log: {data_dir / 'audit'}" in about.text
    assert "Model bundles: " in about.text
    assert "Cache (rebuilt when deleted): " in about.text
    about.close()


def test_any_view_can_be_enlarged(qtbot: Any, sample_window: Any) -> None:
    mpr = sample_window.ct.mpr
    coronal = mpr.views["coronal"]
    mouse_click(coronal.graphics.viewport(), image_pixel(coronal, 0.5, 0.5))
    sample_window.single_action.trigger()  # F2
    assert mpr.enlarged is coronal
    assert coronal.isVisible()
    assert not mpr.axial.isVisible()
    assert not mpr.views["sagittal"].isVisible()
    sample_window.single_action.trigger()
    assert all(view.isVisible() for view in mpr.views.values())
    sagittal = mpr.views["sagittal"]
    double = image_pixel(sagittal, 0.5, 0.5)
    viewport = sagittal.graphics.viewport()
    QtWidgets.QApplication.sendEvent(
        viewport,
        _mouse_event(
            QtCore.QEvent.Type.MouseButtonDblClick,
            viewport,
            double,
            Qt.MouseButton.LeftButton,
            Qt.MouseButton.LeftButton,
        ),
    )
    mouse_click(viewport, double)
    qtbot.waitUntil(lambda: mpr.enlarged is sagittal, timeout=2_000)
    assert sample_window.single_action.isChecked()


def test_the_report_is_offered_in_the_documents_folder(
    qtbot: Any, sample_window: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    offered: list[str] = []
    monkeypatch.setattr(
        QtWidgets.QFileDialog, "getSaveFileName", lambda _p, _t, name, _f: (offered.append(name), ("", ""))[1]
    )
    sample_window._choose_report()
    documents = QtCore.QStandardPaths.writableLocation(QtCore.QStandardPaths.StandardLocation.DocumentsLocation)
    assert offered == [str(Path(documents) / "case_report.pdf")]
    assert "resources" not in offered[0]


# --------------------------------------------------------------------------- cycles collected on the GUI thread


def test_cycles_are_collected_on_the_gui_thread_only(qtbot: Any, window: Any) -> None:
    """A collection run by a worker's allocations freed closed widgets' wrappers there and deadlocked with the
    GUI thread (Qt's object lock against the GIL): with a window open, only the GUI thread collects."""
    import gc
    import threading
    import weakref

    from medview.ui.workers import Task

    collected_on: list[str] = []

    def record(phase: str, _info: dict) -> None:
        if phase == "start":
            collected_on.append(threading.current_thread().name)

    class Node:
        pass

    gc.callbacks.append(record)
    try:
        assert not gc.isenabled()

        def make_cycles(*_args: Any) -> int:
            nodes = [Node() for _ in range(20_000)]
            for node in nodes:
                node.me = node  # type: ignore[attr-defined]
            return len(nodes)

        task = window.tasks.start(Task(make_cycles, "allocating cycles", background=True))
        qtbot.waitUntil(task.done.is_set, timeout=30_000)
        cycle = Node()
        cycle.me = cycle  # type: ignore[attr-defined]
        gone = weakref.ref(cycle)
        del cycle
        qtbot.waitUntil(lambda: gone() is None, timeout=10_000)  # the collector's timer found it
        assert collected_on
        assert set(collected_on) == {threading.main_thread().name}
    finally:
        gc.callbacks.remove(record)
    window.close()
    assert gc.isenabled()
