"""The workstation around the viewer, through the real window: audit trail, anonymised export, view export, PACS."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pydicom
import pytest

from medview.audit import audit_log
from medview.io.dicom import load_series, scan_paths
from medview.ui.qt import QtGui

from .conftest import LOAD_TIMEOUT_MS, SAMPLE_SERIES, open_and_wait, wait_until_settled
from .test_findings_panel import RUN_TIMEOUT_MS, segment
from .test_lung_panel import open_and_classify
from .test_pacs_ui import DCMQI, STORESCU, series_items


@pytest.fixture
def engine(shipped_engine: Any) -> Any:
    return shipped_engine


def events(name: str) -> list[Any]:
    return [event for event in audit_log().read_events() if event.event == name]


def objects(event: Any, role: str) -> list[dict]:
    return [item for item in event.objects if item["role"] == role]


def object_ids(event: Any, role: str) -> list[str]:
    return [item["id"] for item in objects(event, role)]


def test_opening_a_series_running_a_model_and_exporting_are_audited_without_pixels(
    qtbot: Any, window: Any, engine: Any, tmp_path: Path
) -> None:
    window.set_engine(engine)
    volume = open_and_wait(qtbot, window, SAMPLE_SERIES)
    [opened] = events("DICOM Instances Accessed")
    assert opened.event_type == "series"
    assert opened.outcome == 0
    assert object_ids(opened, "File") == [str(SAMPLE_SERIES)]
    # the bundled series carries no Study or Series Instance UID: the count goes on the files, and the key MedView
    # groups such files by is never written as if it were a UID
    assert objects(opened, "Series") == []
    [files] = objects(opened, "File")
    assert files["count"] == volume.shape[0]

    finding = segment(qtbot, window)
    [run] = events("AI Model Run")
    [model] = objects(run, "Model")
    assert (model["id"], model["version"]) == (finding.provenance.model_id, finding.provenance.model_version)
    assert run.details["demo"] is True
    assert run.details["seconds"] == pytest.approx(finding.provenance.seconds, abs=1e-3)

    seg = tmp_path / "liver.dcm"
    wait_until_settled(qtbot, window, window.ct.findings.export_seg(seg), RUN_TIMEOUT_MS)
    pdf = tmp_path / "report.pdf"
    wait_until_settled(qtbot, window, window.export_report(pdf, anonymise=True), RUN_TIMEOUT_MS)
    assert pdf.read_bytes().startswith(b"%PDF")
    png = tmp_path / "view.png"
    assert window.export_view(png)
    image = QtGui.QImage(str(png))
    assert (image.width(), image.height()) == (window.ct.mpr.width(), window.ct.mpr.height())
    exported = [objects(event, "Destination")[0] for event in events("Export")]
    assert [(item["id"], item["format"], item["anonymised"]) for item in exported] == [
        (str(seg), "DICOM SEG", False),
        (str(pdf), "PDF", True),
        (str(png), "PNG", False),
    ]

    # what the log holds is a few lines of text, chained: no pixel array made it in
    text = "".join(path.read_text() for path in audit_log().folder.glob("*.jsonl"))
    assert len(text.splitlines()) == 5
    assert "no-series-uid" not in text
    assert len(text) < 10_000
    assert audit_log().verify().ok


def test_the_series_exports_anonymised_and_reads_back_as_one_series_with_the_same_voxels(
    qtbot: Any, window: Any, tmp_path: Path
) -> None:
    volume = open_and_wait(qtbot, window, SAMPLE_SERIES)
    destination = tmp_path / "anonymised"
    task = window.export_anonymised(destination)
    wait_until_settled(qtbot, window, task, RUN_TIMEOUT_MS)
    files = sorted(destination.rglob("*.dcm"))
    assert len(files) == volume.shape[0]
    header = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert header.PatientIdentityRemoved == "YES"
    assert header.PatientName == "ANONYMOUS"
    [series] = scan_paths(files).series
    assert (load_series(series).voxels == volume.voxels).all()
    [export] = events("Export")
    [written] = objects(export, "Destination")
    assert (written["id"], written["format"], written["anonymised"]) == (str(destination), "DICOM", True)


def test_a_recording_opened_and_classified_is_audited(qtbot: Any, window: Any, engine: Any, shared_data: Path) -> None:
    window.set_engine(engine)
    recording = sorted((shared_data / "lung_sound").rglob("*.wav"))[0]
    open_and_classify(qtbot, window, recording)
    [opened] = events("File Accessed")
    assert opened.event_type == "recording"
    assert object_ids(opened, "File") == [str(recording)]
    [run] = events("AI Model Run")
    assert object_ids(run, "File") == [str(recording)]
    assert run.details["task"] == "lung_sound"


def test_the_audit_log_dialog_lists_what_happened(qtbot: Any, window: Any) -> None:
    open_and_wait(qtbot, window, SAMPLE_SERIES)
    dialog = window.show_audit_log()
    with qtbot.waitSignal(dialog.loaded, timeout=LOAD_TIMEOUT_MS):
        pass
    model = dialog.table.model()
    shown = [model.index(row, 2).data() for row in range(model.rowCount())]
    assert shown == ["Audit Log Used", "DICOM Instances Accessed (series)"]  # newest first
    dialog.close()


@pytest.mark.skipif(not STORESCU.is_file(), reason="dcmtk's storescu is not installed")
def test_with_the_receiver_enabled_a_pushed_series_is_listed_and_its_import_audited(
    qtbot: Any, window: Any, shared_data: Path
) -> None:
    window.settings.pacs_enabled, window.settings.pacs_port = True, 0  # 0: a free port the system picks
    window.pacs.apply_settings()
    port = window.pacs.server.port
    assert port
    files = sorted((shared_data / DCMQI).glob("*.dcm"))
    push = subprocess.run(
        [str(STORESCU), "-aet", "MODALITY", "-aec", window.settings.pacs_ae_title, "127.0.0.1", str(port)]
        + [str(path) for path in files],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert push.returncode == 0, push.stderr
    qtbot.waitUntil(lambda: [item.text(2) for item in series_items(window.ct.browser)] == [str(len(files))])
    qtbot.waitUntil(lambda: len(events("Import")) == 1)
    [received] = events("Import")
    assert object_ids(received, "Source") == ["MODALITY"]
    [study] = objects(received, "Study")
    assert study["id"] == pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    assert study["count"] == len(files)
