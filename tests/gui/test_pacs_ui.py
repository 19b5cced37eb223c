"""PACS receive in the window: a real storescu pushes a series, the study browser lists it as it arrives.

The receiver listens on 127.0.0.1 on a port the system picks (settings port 0).
"""

from __future__ import annotations

import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from medview.config import Settings
from medview.io.dicom import SeriesInfo, scan_paths
from medview.pacs.store import LocalStudyStore
from medview.ui.ct.panels import StudyBrowserPanel
from medview.ui.pacs.receiver import STOPPED, PacsReceiver, PacsSettingsDialog, receiving_status
from medview.ui.qt import QtWidgets

from .conftest import LOAD_TIMEOUT_MS, Qt

STORESCU = Path("/usr/bin/storescu")
CAP001 = Path("covid_ct") / "COVID-CT-MD" / "CAP" / "cap001"  # 21 slices, JPEG lossless
DCMQI = Path("dicom_ct") / "dcmqi_ct-3slice"
needs_storescu = pytest.mark.skipif(not STORESCU.is_file(), reason="dcmtk's storescu is not installed")
PUSH_TIMEOUT_MS = 60_000


@pytest.fixture(autouse=True)
def _quiet_pydicom() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="pydicom")
        yield


def receiver_settings(enabled: bool = True) -> Settings:
    settings = Settings()
    settings.pacs_enabled, settings.pacs_ae_title, settings.pacs_port = enabled, "MEDVIEW", 0
    return settings


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalStudyStore]:
    with LocalStudyStore(tmp_path / "studies") as opened:
        yield opened


def series_items(browser: StudyBrowserPanel) -> list[QtWidgets.QTreeWidgetItem]:
    found = []
    iterator = QtWidgets.QTreeWidgetItemIterator(browser)
    while iterator.value():
        item = iterator.value()
        if isinstance(item.data(0, Qt.ItemDataRole.UserRole), SeriesInfo):
            found.append(item)
        iterator += 1
    return found


@needs_storescu
def test_pushed_series_appears_as_it_arrives_and_opens(
    qtbot: Any, window: Any, store: LocalStudyStore, shared_data: Path
) -> None:
    files = sorted((shared_data / CAP001).glob("*.dcm"))
    receiver = PacsReceiver(receiver_settings(), store, tasks=window.tasks, parent=window, bind_address="127.0.0.1")
    receiver.series_updated.connect(window.ct.browser.add_or_update_series)
    updates: list[SeriesInfo] = []
    receiver.series_updated.connect(updates.append)
    try:
        with qtbot.waitSignal(receiver.status_changed, timeout=10_000) as started:
            receiver.apply_settings()
        port = receiver.server.port
        assert started.args == [receiving_status("MEDVIEW", port)]

        # the GUI thread stays free while storescu sends: arrivals are shown as they come
        push = subprocess.Popen(
            [str(STORESCU), "-aet", "MODALITY", "-aec", "MEDVIEW", "-xs", "-R", "127.0.0.1", str(port)]
            + [str(path) for path in files],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            qtbot.waitUntil(
                lambda: [item.text(2) for item in series_items(window.ct.browser)] == [str(len(files))],
                timeout=PUSH_TIMEOUT_MS,
            )
            _out, errors = push.communicate(timeout=60)
        finally:
            if push.poll() is None:
                push.kill()
        assert push.returncode == 0, errors
        assert receiver.received_count == len(files)
        assert all(series.series_uid == updates[0].series_uid for series in updates)
        [item] = series_items(window.ct.browser)  # one entry however many updates came
        series = item.data(0, Qt.ItemDataRole.UserRole)
        assert series.slice_count == len(files)
        assert all(header.source.path.is_relative_to(store.root) for header in series.slices)

        with qtbot.waitSignal(window.ct.volume_loaded, timeout=LOAD_TIMEOUT_MS) as loaded:
            window.ct.browser.series_activated.emit(series)
        assert loaded.args[0].voxels.shape == (len(files), 512, 512)
    finally:
        receiver.shutdown()
    assert receiver.status == STOPPED
    assert not receiver.is_running


def test_port_in_use_is_reported_as_status(qtbot: Any, store: LocalStudyStore) -> None:
    first = PacsReceiver(receiver_settings(), store, bind_address="127.0.0.1")
    first.apply_settings()
    try:
        settings = receiver_settings()
        settings.pacs_port = first.server.port
        second = PacsReceiver(settings, store, bind_address="127.0.0.1")
        with qtbot.waitSignal(second.status_changed) as reported:
            second.apply_settings()
        assert reported.args == [
            f"port {settings.pacs_port} is already in use by another program: choose another port in the PACS settings"
        ]
        assert not second.is_running
    finally:
        first.shutdown()


def test_settings_off_stops_the_receiver(qtbot: Any, store: LocalStudyStore) -> None:
    settings = receiver_settings()
    receiver = PacsReceiver(settings, store, bind_address="127.0.0.1")
    receiver.apply_settings()
    assert receiver.is_running
    settings.pacs_enabled = False
    with qtbot.waitSignal(receiver.status_changed) as reported:
        receiver.apply_settings()
    assert reported.args == [STOPPED]
    assert not receiver.is_running


def test_lost_index_is_rebuilt_and_earlier_receptions_announced(qtbot: Any, shared_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "studies"
    files = sorted((shared_data / DCMQI).glob("*.dcm"))
    with LocalStudyStore(root) as first:
        for path in files:
            first.store_bytes(path.read_bytes(), calling_ae="PACS")
    for index in root.glob("index.sqlite3*"):
        index.unlink()
    with LocalStudyStore(root) as store:
        assert store.needs_rebuild
        receiver = PacsReceiver(receiver_settings(), store, bind_address="127.0.0.1")
        try:
            with qtbot.waitSignal(receiver.series_updated, timeout=10_000) as announced:
                receiver.apply_settings()
            assert announced.args[0].slice_count == len(files)
            assert store.instance_count() == len(files)
        finally:
            receiver.shutdown()


def test_earlier_receptions_are_announced_without_receiving(
    qtbot: Any, shared_data: Path, store: LocalStudyStore
) -> None:
    files = sorted((shared_data / DCMQI).glob("*.dcm"))
    for path in files:
        store.store_bytes(path.read_bytes(), calling_ae="PACS")
    receiver = PacsReceiver(receiver_settings(enabled=False), store, bind_address="127.0.0.1")
    with qtbot.waitSignal(receiver.series_updated, timeout=10_000) as announced:
        receiver.publish_stored()
    assert announced.args[0].slice_count == len(files)
    assert not receiver.is_running
    receiver.shutdown()


def test_growing_series_updates_its_item(qtbot: Any, shared_data: Path) -> None:
    browser = StudyBrowserPanel()
    qtbot.addWidget(browser)
    files = sorted((shared_data / DCMQI).glob("*.dcm"))
    [partial] = scan_paths(files[:2]).series
    [complete] = scan_paths(files).series
    [other] = scan_paths([shared_data / CAP001]).series

    browser.add_or_update_series(partial)
    browser.add_or_update_series(complete)
    assert [item.text(2) for item in series_items(browser)] == ["3"]
    assert series_items(browser)[0].data(0, Qt.ItemDataRole.UserRole) is complete
    assert list(browser.series_items) == [id(complete)]
    browser.add_or_update_series(other)
    assert sorted(item.text(2) for item in series_items(browser)) == ["21", "3"]


def test_settings_dialog_refuses_an_invalid_ae_title(qtbot: Any) -> None:
    settings = receiver_settings(enabled=False)
    dialog = PacsSettingsDialog(settings)
    qtbot.addWidget(dialog)
    dialog.show()
    ok = dialog.buttons.button(QtWidgets.QDialogButtonBox.StandardButton.Ok)

    dialog.enabled.setChecked(True)
    dialog.ae_title.setText("CT\\ROOM")
    qtbot.mouseClick(ok, Qt.MouseButton.LeftButton)
    assert dialog.isVisible()
    assert dialog.error_label.isVisible()
    assert "backslash" in dialog.error_label.text()
    assert (settings.pacs_enabled, settings.pacs_ae_title) == (False, "MEDVIEW")  # nothing written

    dialog.ae_title.setText("   ")
    qtbot.mouseClick(ok, Qt.MouseButton.LeftButton)
    assert dialog.isVisible()
    assert "empty" in dialog.error_label.text()

    dialog.ae_title.setText("CTROOM")
    dialog.port.setValue(4242)
    qtbot.mouseClick(ok, Qt.MouseButton.LeftButton)
    assert dialog.result() == QtWidgets.QDialog.DialogCode.Accepted
    assert (settings.pacs_enabled, settings.pacs_ae_title, settings.pacs_port) == (True, "CTROOM", 4242)
