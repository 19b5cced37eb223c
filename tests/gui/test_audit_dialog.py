"""The audit log dialog on real widgets: newest first, the filter, the hash chain's state, the folder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from medview.audit import AuditLog, Outcome
from medview.ui.audit_dialog import COLUMNS, AuditLogDialog
from medview.ui.qt import QtCore, QtGui
from medview.ui.workers import TaskRunner

LOAD_TIMEOUT_MS = 10_000


def minute_clock(start: datetime) -> Callable[[], datetime]:
    times = (start + timedelta(minutes=n) for n in range(1_000_000))
    return lambda: next(times)


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    """A log with an open, a model run and an export, a minute apart, the last one failed."""
    log = AuditLog(tmp_path / "audit", clock=minute_clock(datetime(2026, 6, 1, 8, 0, tzinfo=UTC)))
    log.record_open("series", "/studies/ct", study_uid="1.2.3", series_uid="1.2.3.4", patient_id="P00042")
    log.record_model_run("liver-unet", "1.2.0", series_uid="1.2.3.4", patient_id="P00042", seconds=2.5)
    log.record_export(
        "liver segmentation", "/out/liver.dcm", anonymised=False, file_format="DICOM SEG",
        outcome=Outcome.SERIOUS_FAILURE, outcome_description="disk full",
    )  # fmt: skip
    log.record_open("photo", "/photos/ISIC_0000001.jpg")
    return log


@pytest.fixture
def runner() -> Iterator[TaskRunner]:
    tasks = TaskRunner()
    yield tasks
    tasks.cancel_all()


def open_dialog(qtbot: Any, runner: TaskRunner, log: AuditLog) -> AuditLogDialog:
    """The dialog, shown, once its first reading is on screen."""
    dialog = AuditLogDialog(runner, log)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitUntil(lambda: dialog.chain is not None, timeout=LOAD_TIMEOUT_MS)
    return dialog


def column(dialog: AuditLogDialog, name: str) -> list[str]:
    index = COLUMNS.index(name)
    return [dialog.model.row_text(row)[index] for row in range(dialog.model.rowCount())]


def refresh(qtbot: Any, dialog: AuditLogDialog) -> None:
    with qtbot.waitSignal(dialog.loaded, timeout=LOAD_TIMEOUT_MS):
        qtbot.mouseClick(dialog.refresh_button, QtCore.Qt.MouseButton.LeftButton)


def test_shows_events_newest_first(qtbot: Any, runner: TaskRunner, log: AuditLog) -> None:
    dialog = open_dialog(qtbot, runner, log)
    assert dialog.table.model().rowCount() == 5
    assert column(dialog, "Event") == [
        "Audit Log Used",  # opening the dialog is itself recorded
        "File Accessed (photo)",
        "Export (liver segmentation)",
        "AI Model Run (liver-unet)",
        "DICOM Instances Accessed (series)",
    ]
    local = datetime(2026, 6, 1, 8, 0, tzinfo=UTC).astimezone()
    assert column(dialog, "Time")[-1] == local.strftime("%Y-%m-%d %H:%M:%S")
    assert column(dialog, "Time") == sorted(column(dialog, "Time"), reverse=True)
    export = dialog.model.row_text(2)
    assert export[COLUMNS.index("Outcome")] == "8 serious failure"
    assert "disk full" in export[COLUMNS.index("Details")]
    assert "Destination /out/liver.dcm (DICOM SEG, not anonymised)" in export[COLUMNS.index("What")]
    assert dialog.model.data(dialog.model.index(2, 0), QtCore.Qt.ItemDataRole.ForegroundRole) is not None
    assert dialog.model.data(dialog.model.index(1, 0), QtCore.Qt.ItemDataRole.ForegroundRole) is None

    log.record_open("recording", "/sounds/101_1b1.wav")
    refresh(qtbot, dialog)
    assert column(dialog, "Event")[0] == "File Accessed (recording)"


def test_filter_narrows_the_rows(qtbot: Any, runner: TaskRunner, log: AuditLog) -> None:
    dialog = open_dialog(qtbot, runner, log)
    qtbot.keyClicks(dialog.filter_edit, "p00042")  # any column, any case
    assert column(dialog, "Event") == ["AI Model Run (liver-unet)", "DICOM Instances Accessed (series)"]
    dialog.filter_edit.setText("liver-unet")
    assert dialog.model.rowCount() == 1
    dialog.filter_edit.setText("nothing like this")
    assert dialog.model.rowCount() == 0
    dialog.filter_edit.clear()
    assert dialog.model.rowCount() == 5
    dialog.filter_edit.setText("ISIC")  # the filter holds over a refresh
    refresh(qtbot, dialog)
    assert column(dialog, "What") == ["File /photos/ISIC_0000001.jpg"]


def test_chain_line_says_verified_then_broken(qtbot: Any, runner: TaskRunner, log: AuditLog) -> None:
    dialog = open_dialog(qtbot, runner, log)
    assert dialog.chain_label.text().startswith("Hash chain verified: 5 records")
    assert not dialog.problem_label.isVisible()

    path = log.files()[0]
    path.write_bytes(path.read_bytes().replace(b"/studies/ct", b"/studies/xx"))
    refresh(qtbot, dialog)
    assert dialog.chain_label.text().startswith("Hash chain BROKEN: audit-2026-06.jsonl line 2: ")


def test_open_folder_and_unwritable_log(
    qtbot: Any, runner: TaskRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    log = AuditLog(blocker / "audit")
    opened: list[QtCore.QUrl] = []
    monkeypatch.setattr(QtGui.QDesktopServices, "openUrl", lambda url: opened.append(url) or True)
    dialog = open_dialog(qtbot, runner, log)
    assert dialog.model.rowCount() == 0
    assert dialog.problem_label.isVisible()
    assert dialog.problem_label.text().startswith(f"audit log not writable: {blocker / 'audit'}")
    qtbot.mouseClick(dialog.folder_button, QtCore.Qt.MouseButton.LeftButton)
    assert [Path(url.toLocalFile()) for url in opened] == [blocker / "audit"]
