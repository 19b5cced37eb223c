"""The query/retrieve dialog against a real dcmtk dcmqrscp on 127.0.0.1: search shows rows, Retrieve fills the store
and the study browser, invalid input is refused before any connection."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from medview.config import Settings
from medview.errors import MedviewError
from medview.io.dicom import SeriesInfo
from medview.pacs.store import LocalStudyStore
from medview.ui.pacs.query_dialog import PacsQueryDialog
from medview.ui.qt import QtGui
from tests.unit.test_pacs_query import (
    ARCHIVE_TITLE,
    CT_SMALL,
    DCMQI,
    DCMQRSCP,
    STORESCU,
    QrArchive,
    free_port,
    needs_dcmtk,
    source_files,
    start_archive,
    study_uid_of,
)

from .conftest import Qt

NETWORK_TIMEOUT_MS = 60_000


@pytest.fixture(autouse=True)
def _quiet_pydicom() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="pydicom")
        yield


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Iterator[QrArchive]:
    if not (DCMQRSCP.is_file() and STORESCU.is_file()):
        pytest.skip("dcmtk (dcmqrscp, storescu) is not installed")
    running = start_archive(tmp_path_factory.mktemp("dcmqrscp"))
    try:
        running.send([*source_files(shared_data / DCMQI), shared_data / CT_SMALL])
        yield running
    finally:
        running.stop()


def enter_node(dialog: PacsQueryDialog, title: str, port: int) -> None:
    dialog.ae_title.setText(title)
    dialog.host.setText("127.0.0.1")
    dialog.port.setValue(port)


def cells(dialog: PacsQueryDialog, row: int) -> list[str]:
    return [dialog.table.item(row, column).text() for column in range(dialog.table.columnCount())]


@needs_dcmtk
def test_search_shows_rows_and_retrieve_fills_the_store_and_the_browser(
    qtbot: Any, window: Any, archive: QrArchive, shared_data: Path
) -> None:
    store: LocalStudyStore = window.pacs.store
    menu_entry = next(a for a in window.findChildren(QtGui.QAction) if a.text() == "&Query/retrieve from PACS…")
    menu_entry.trigger()
    dialog = window.findChild(PacsQueryDialog)
    assert dialog is not None
    assert dialog.isVisible()
    announced: list[SeriesInfo] = []
    dialog.series_retrieved.connect(announced.append)
    dialog.show()
    enter_node(dialog, ARCHIVE_TITLE, archive.port)
    assert not dialog.retrieve_button.isEnabled()

    with qtbot.waitSignal(dialog.searched, timeout=NETWORK_TIMEOUT_MS):
        qtbot.mouseClick(dialog.search_button, Qt.MouseButton.LeftButton)
    assert dialog.table.rowCount() == 2
    assert [cells(dialog, row)[:4] for row in range(2)] == [
        ["CompressedSamples, CT1", "1CT1", "", "2004-01-19"],
        ["JANCT000", "99000", "", "2003-04-17"],
    ]

    dialog.patient_name.setText("JAN*")
    with qtbot.waitSignal(dialog.searched, timeout=NETWORK_TIMEOUT_MS):
        qtbot.mouseClick(dialog.search_button, Qt.MouseButton.LeftButton)
    assert dialog.table.rowCount() == 1
    assert cells(dialog, 0)[:4] == ["JANCT000", "99000", "", "2003-04-17"]
    assert dialog.status_label.text() == "1 study found"

    dialog.table.selectRow(0)
    assert dialog.retrieve_button.isEnabled()
    with qtbot.waitSignal(dialog.retrieved, timeout=NETWORK_TIMEOUT_MS) as retrieved:
        qtbot.mouseClick(dialog.retrieve_button, Qt.MouseButton.LeftButton)
        assert dialog.stop_button.isEnabled()
        assert not dialog.search_button.isEnabled()

    paths = retrieved.args[0]
    sources = source_files(shared_data / DCMQI)
    assert sorted(str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths) == sorted(
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in sources
    )
    assert all(path.parent.parent.parent == store.root for path in paths)
    study_uid = study_uid_of(shared_data / DCMQI)
    assert [(s.study_uid, s.instance_count) for s in store.studies()] == [(study_uid, 3)]
    assert [(series.study_uid, series.slice_count) for series in announced] == [(study_uid, 3)]
    listed = [item.data(0, Qt.ItemDataRole.UserRole) for item in window.ct.browser.series_items.values()]
    assert [(series.study_uid, series.slice_count) for series in listed] == [(study_uid, 3)]
    assert dialog.status_label.text() == "Retrieved 3 images of 1 study"
    assert dialog.error_label.isHidden()
    assert dialog.search_button.isEnabled()
    assert not dialog.stop_button.isEnabled()

    # the node is remembered for the next dialog, and in the settings file for the next session
    again = PacsQueryDialog(window.settings, store, parent=window)
    qtbot.addWidget(again)
    assert (again.ae_title.text(), again.host.text(), again.port.value()) == (ARCHIVE_TITLE, "127.0.0.1", archive.port)
    saved = Settings.load()
    assert (saved.pacs_remote_ae_title, saved.pacs_remote_host, saved.pacs_remote_port) == (
        ARCHIVE_TITLE,
        "127.0.0.1",
        archive.port,
    )


def test_empty_ae_title_is_refused_before_any_connection(qtbot: Any, tmp_path: Path) -> None:
    with LocalStudyStore(tmp_path / "studies") as store:
        dialog = PacsQueryDialog(Settings(), store)
        qtbot.addWidget(dialog)
        dialog.show()
        enter_node(dialog, "   ", free_port())

        qtbot.mouseClick(dialog.search_button, Qt.MouseButton.LeftButton)

        assert dialog.error_label.isVisible()
        assert "AE title is empty" in dialog.error_label.text()
        assert dialog.task is None
        assert dialog.table.rowCount() == 0
        assert dialog.search_button.isEnabled()


def test_unreachable_pacs_is_reported_naming_it(qtbot: Any, tmp_path: Path) -> None:
    port = free_port()
    with LocalStudyStore(tmp_path / "studies") as store:
        dialog = PacsQueryDialog(Settings(), store)
        qtbot.addWidget(dialog)
        dialog.show()
        enter_node(dialog, "ORTHANC", port)

        qtbot.mouseClick(dialog.search_button, Qt.MouseButton.LeftButton)
        assert dialog.task is not None
        qtbot.waitUntil(lambda: dialog.error_label.isVisible(), timeout=NETWORK_TIMEOUT_MS)

        assert dialog.error_label.text().startswith(f"PACS ORTHANC@127.0.0.1:{port}: connection refused")
        qtbot.waitUntil(lambda: dialog.search_button.isEnabled())
        assert dialog.table.rowCount() == 0


def test_c_move_brings_the_study_to_the_running_receiver_and_the_browser(
    qtbot: Any, window: Any, shared_data: Path, tmp_path: Path
) -> None:
    """Orthanc knows this workstation's receiver (AE title, port) and sends the study there."""
    from medview.pacs.send import send_files
    from tests.orthanc import PACS_TITLE, start_orthanc

    settings = window.settings
    settings.pacs_enabled, settings.pacs_ae_title, settings.pacs_port = True, "MEDVIEW", free_port()
    window.pacs.apply_settings()
    qtbot.waitUntil(lambda: window.pacs.server.port == settings.pacs_port, timeout=NETWORK_TIMEOUT_MS)
    orthanc = start_orthanc(tmp_path / "orthanc", "MEDVIEW", settings.pacs_port)
    try:
        cap001 = sorted((shared_data / "covid_ct" / "COVID-CT-MD" / "CAP" / "cap001").glob("*.dcm"))
        assert all(outcome.stored for outcome in send_files(orthanc.node, "SCANNER", cap001))
        dialog = window.show_pacs_query()
        enter_node(dialog, PACS_TITLE, orthanc.dicom_port)
        dialog.method.setCurrentIndex(dialog.method.findData("C-MOVE"))
        with qtbot.waitSignal(dialog.searched, timeout=NETWORK_TIMEOUT_MS):
            qtbot.mouseClick(dialog.search_button, Qt.MouseButton.LeftButton)
        assert dialog.table.rowCount() == 1
        dialog.table.selectRow(0)
        with qtbot.waitSignal(dialog.retrieved, timeout=NETWORK_TIMEOUT_MS) as retrieved:
            qtbot.mouseClick(dialog.retrieve_button, Qt.MouseButton.LeftButton)
        assert len(retrieved.args[0]) == len(cap001)
        assert dialog.status_label.text() == f"Retrieved {len(cap001)} images of 1 study"
        assert dialog.error_label.isHidden()
        instances = window.pacs.store.study_instances(dialog.studies[0].study_uid)
        assert {instance.calling_ae for instance in instances} == {PACS_TITLE}  # the PACS pushed them
        assert Settings.load().pacs_remote_retrieve == "C-MOVE"
    finally:
        orthanc.stop()


def test_c_move_with_the_receiver_off_says_so_before_asking_the_pacs(qtbot: Any, tmp_path: Path) -> None:
    with LocalStudyStore(tmp_path / "studies") as store:
        dialog = PacsQueryDialog(Settings(), store)
        qtbot.addWidget(dialog)
        enter_node(dialog, "ANY", 104)
        dialog.method.setCurrentIndex(dialog.method.findData("C-MOVE"))
        from medview.pacs.query import RemoteNode, RemoteStudy

        study = RemoteStudy("1.2.3", "", "", "", "", "", "", "", (), None, None, ())
        assert dialog.retrieve(RemoteNode("ANY", "127.0.0.1", 104), [study]) is None
        assert "receiver, which is off" in dialog.error_label.text()


def test_dicomweb_search_and_retrieve_from_the_dialog(
    qtbot: Any, window: Any, shared_data: Path, tmp_path: Path
) -> None:
    from medview.pacs.send import send_files
    from tests.orthanc import start_orthanc

    orthanc = start_orthanc(tmp_path / "orthanc", "MEDVIEW", free_port())
    try:
        cap001 = sorted((shared_data / "covid_ct" / "COVID-CT-MD" / "CAP" / "cap001").glob("*.dcm"))
        assert all(outcome.stored for outcome in send_files(orthanc.node, "SCANNER", cap001))
        dialog = window.show_pacs_query()
        dialog.method.setCurrentIndex(dialog.method.findData("DICOMweb"))
        assert not dialog.ae_title.isEnabled()
        assert dialog.url.isEnabled()
        dialog.url.setText(f"http://127.0.0.1:{orthanc.http_port}/dicom-web/")
        with qtbot.waitSignal(dialog.searched, timeout=NETWORK_TIMEOUT_MS):
            qtbot.mouseClick(dialog.search_button, Qt.MouseButton.LeftButton)
        assert dialog.table.rowCount() == 1
        assert dialog.status_label.text() == "1 study found"
        dialog.table.selectRow(0)
        with qtbot.waitSignal(dialog.retrieved, timeout=NETWORK_TIMEOUT_MS) as retrieved:
            qtbot.mouseClick(dialog.retrieve_button, Qt.MouseButton.LeftButton)
        assert len(retrieved.args[0]) == len(cap001)
        assert dialog.error_label.isHidden()
        saved = Settings.load()
        assert (saved.pacs_remote_retrieve, saved.pacs_remote_url) == (
            "DICOMweb",
            f"http://127.0.0.1:{orthanc.http_port}/dicom-web",
        )
    finally:
        orthanc.stop()


def test_tls_and_its_ca_file_are_part_of_the_node_and_remembered(qtbot: Any, tmp_path: Path) -> None:
    ca_file = tmp_path / "hospital-ca.pem"
    ca_file.write_text("-----BEGIN CERTIFICATE-----\n", encoding="ascii")
    with LocalStudyStore(tmp_path / "studies") as store:
        dialog = PacsQueryDialog(Settings(), store)
        qtbot.addWidget(dialog)
        enter_node(dialog, "SECUREPACS", 2762)
        assert not dialog.ca_file.isEnabled()
        dialog.tls.setChecked(True)
        assert dialog.ca_file.isEnabled()
        dialog.ca_file.setText(str(ca_file))
        node = dialog.node()
        assert (node.tls, node.ca_file, str(node)) == (True, str(ca_file), "PACS SECUREPACS@127.0.0.1:2762 (TLS)")
        dialog._remember(node)
        saved = Settings.load()
        assert (saved.pacs_remote_tls, saved.pacs_remote_ca_file) == (True, str(ca_file))
        dialog.ca_file.setText(str(tmp_path / "missing.pem"))
        with pytest.raises(MedviewError, match=r"the CA file .*missing\.pem does not exist"):
            dialog.node()
