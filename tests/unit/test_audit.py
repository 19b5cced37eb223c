"""The audit log: records round-trip, refuse pixel data, chain their hashes, survive torn lines and kill -9."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from medview.audit import GENESIS, MAX_ITEMS, MAX_TEXT, AuditEvent, AuditLog, EventId, Outcome, audit_log
from medview.io.volume import Volume

REPO_ROOT = Path(__file__).resolve().parents[2]


def ticking_clock(start: datetime, step: timedelta = timedelta(seconds=1)) -> Callable[[], datetime]:
    """A clock that moves ``step`` at each reading, so every record has its own time."""
    times: Iterator[datetime] = (start + step * n for n in range(1_000_000))
    return lambda: next(times)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "audit"


@pytest.fixture
def log(folder: Path) -> AuditLog:
    return AuditLog(folder, clock=ticking_clock(datetime(2026, 3, 14, 9, 30, tzinfo=UTC)))


def object_id(event: AuditEvent, role: str) -> str:
    """The id of the event's participant object with ``role``."""
    return next(item["id"] for item in event.objects if item["role"] == role)


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


def test_records_round_trip_with_all_fields(log: AuditLog, folder: Path) -> None:
    assert log.record_app_start()
    assert log.record_open(
        "series",
        Path("/studies/abdomen"),
        study_uid="1.2.3",
        series_uid="1.2.3.4",
        patient_id="P00042",
        sop_count=120,
        description="CT abdomen",
    )
    assert log.record_open(
        "recording", "/sounds/101_1b1.wav", outcome=Outcome.SERIOUS_FAILURE, outcome_description="not a WAV file"
    )
    assert log.record_model_run(
        "liver-unet", "1.2.0", series_uid="1.2.3.4", patient_id="P00042", seconds=3.14159, device="cpu",
        details={"volume_ml": 1523.5, "demo": True},
    )  # fmt: skip
    assert log.record_export(
        "liver segmentation", Path("/out/liver.seg.dcm"), anonymised=False, file_format="DICOM SEG",
        source="/studies/abdomen", series_uid="1.2.3.4", patient_id="P00042",
    )  # fmt: skip
    assert log.record_received(
        calling_ae="PACS1", peer_address="127.0.0.1", study_uid="1.2.9", sop_count=57, patient_id="P7",
        folder="/data/received/1.2.9",
    )  # fmt: skip
    assert log.record_app_stop()
    assert log.problem is None
    assert [p.name for p in log.files()] == ["audit-2026-03.jsonl"]

    problems: list[str] = []
    events = list(log.read_events(problems=problems))
    assert problems == []
    assert [(e.event, e.event_type, e.action, e.outcome) for e in events] == [
        ("Application Activity", "Application Start", "E", 0),
        ("DICOM Instances Accessed", "series", "R", 0),
        ("File Accessed", "recording", "R", 8),
        ("AI Model Run", "liver-unet", "E", 0),
        ("Export", "liver segmentation", "R", 0),
        ("Import", "DICOM C-STORE", "C", 0),
        ("Application Activity", "Application Stop", "E", 0),
    ]
    assert [e.event_code for e in events[:2]] == ["DCM 110100", "DCM 110103"]
    assert events[0].time == datetime(2026, 3, 14, 9, 30, tzinfo=UTC)
    assert [e.time for e in events] == sorted(e.time for e in events)
    for event in events:
        assert event.user
        assert event.host
        assert event.pid == os.getpid()
        assert event.app.startswith("MedView ")
    opened = events[1]
    assert opened.objects == (
        {"role": "Patient", "id_type": "Patient Number", "id": "P00042"},
        {"role": "Study", "id_type": "Study Instance UID", "id": "1.2.3"},
        {"role": "Series", "id_type": "Series Instance UID", "id": "1.2.3.4", "count": 120},
        {"role": "File", "id_type": "URI", "id": str(Path("/studies/abdomen")), "description": "CT abdomen"},
    )
    assert "Patient P00042" in opened.subject()
    assert "120 instances" in opened.subject()
    assert events[2].outcome_description == "not a WAV file"
    run = events[3]
    assert run.objects[0] == {"role": "Model", "id_type": "Model ID", "id": "liver-unet", "version": "1.2.0"}
    assert run.details == {"seconds": 3.142, "device": "cpu", "volume_ml": 1523.5, "demo": True}
    export = events[4]
    assert export.objects[0] == {
        "role": "Destination", "id_type": "URI", "id": str(Path("/out/liver.seg.dcm")),
        "format": "DICOM SEG", "anonymised": False,
    }  # fmt: skip
    assert {"role": "Source", "id_type": "URI", "id": "/studies/abdomen"} in export.objects
    received = events[5]
    assert received.objects[0] == {"role": "Source", "id_type": "AE Title", "id": "PACS1", "address": "127.0.0.1"}
    assert {"role": "Study", "id_type": "Study Instance UID", "id": "1.2.9", "count": 57} in received.objects

    # on disk: one JSON object per line, UTC with offset, nothing but the documented fields
    record = json.loads(lines_of(log.files()[0])[1])
    assert record["time"] == "2026-03-14T09:30:01.000000+00:00"
    assert set(record) == {
        "schema", "time", "event", "event_code", "event_type", "action", "outcome", "outcome_description",
        "user", "host", "pid", "app", "objects", "details", "prev",
    }  # fmt: skip


def test_export_format_defaults_to_the_suffixes(log: AuditLog) -> None:
    log.record_export("liver mask", "/out/mask.nii.gz", anonymised=True)
    (event,) = log.read_events()
    assert event.objects[0]["format"] == "nii.gz"
    assert event.objects[0]["anonymised"] is True


@pytest.mark.parametrize(
    "value",
    [
        np.zeros((4, 4), dtype=np.int16),
        b"\x00\x01pixels",
        bytearray(b"pixels"),
        memoryview(b"pixels"),
        np.int16(7),
        Path("/a/file"),
        Volume(voxels=np.zeros((1, 2, 2), dtype=np.int16), spacing=(1.0, 1.0, 1.0)),
        [1, 2, np.zeros(3)],
        {"nested": {"deeper": b"raw"}},
    ],
    ids=["ndarray", "bytes", "bytearray", "memoryview", "numpy-int", "path", "volume", "in-list", "in-dict"],
)
def test_refuses_anything_but_plain_data(log: AuditLog, value: object) -> None:
    with pytest.raises(TypeError, match="never pixel data"):
        log.record(EventId.AI_MODEL_RUN, "E", details={"result": value})
    with pytest.raises(TypeError):
        log.record(EventId.EXPORT, "R", objects=[{"role": "Destination", "id": value}])
    assert log.files() == []  # nothing was written


def test_refuses_bulk_and_caps_text(log: AuditLog) -> None:
    with pytest.raises(TypeError, match="at most"):
        log.record(EventId.AI_MODEL_RUN, "E", details={"probabilities": list(range(MAX_ITEMS + 1))})
    with pytest.raises(TypeError, match="keys"):
        log.record(EventId.AI_MODEL_RUN, "E", details={"x": {1: "one"}})
    with pytest.raises(ValueError, match="action"):
        log.record(EventId.EXPORT, "X")
    with pytest.raises(ValueError, match="kind"):
        log.record_open("hologram", "/x")
    with pytest.raises(ValueError, match="is not a valid Outcome"):
        log.record(EventId.EXPORT, "R", outcome=3)
    assert log.files() == []
    assert log.record_open("photo", "/p.jpg", description="é" * (MAX_TEXT * 3), patient_id="P\n1")
    (event,) = log.read_events()
    description = event.objects[-1]["description"]
    assert len(description) == MAX_TEXT
    assert description.endswith("…")
    assert event.objects[0]["id"] == "P\n1"  # JSON escapes it: still one line
    assert len(lines_of(log.files()[0])) == 1


def test_hash_chain_verifies_and_links_every_line(log: AuditLog) -> None:
    for index in range(4):
        log.record_open("photo", f"/photos/{index}.jpg")
    report = log.verify()
    assert report.ok
    assert report.records == 4
    assert report.files == 1
    assert report.unreadable == ()
    assert report.summary().startswith("Hash chain verified: 4 records")
    lines = lines_of(log.files()[0])
    assert json.loads(lines[0])["prev"] == GENESIS
    for before, after in itertools.pairwise(lines):
        assert json.loads(after)["prev"] == hashlib.sha256(before).hexdigest()


def test_hash_chain_detects_an_edited_line(log: AuditLog) -> None:
    for index in range(4):
        log.record_open("series", f"/studies/{index}", patient_id=f"P{index}")
    path = log.files()[0]
    path.write_bytes(path.read_bytes().replace(b'"id":"P1"', b'"id":"P9"'))
    assert len(list(log.read_events())) == 4  # still readable records: only the chain can tell
    report = log.verify()
    assert not report.ok
    assert report.broken == f"{path.name} line 3: {path.name} line 2 was changed, or records between them removed"
    assert report.summary().startswith("Hash chain BROKEN")


def test_hash_chain_detects_a_deleted_line(log: AuditLog) -> None:
    for index in range(4):
        log.record_open("photo", f"/photos/{index}.jpg")
    path = log.files()[0]
    lines = lines_of(path)
    path.write_bytes(b"\n".join(lines[:1] + lines[2:]) + b"\n")
    report = log.verify()
    assert report.broken is not None
    assert report.broken.startswith(f"{path.name} line 2: ")
    # removing the first record: the chain no longer starts at the genesis value
    path.write_bytes(b"\n".join(lines[1:]) + b"\n")
    report = log.verify()
    assert report.broken is not None
    assert "not in this folder" in report.broken


def test_torn_last_line_is_reported_and_the_next_record_starts_a_new_line(log: AuditLog) -> None:
    for index in range(3):
        log.record_open("photo", f"/photos/{index}.jpg")
    path = log.files()[0]
    with open(path, "ab") as handle:  # what a crash in the middle of os.write leaves
        handle.write(lines_of(path)[-1][:40])

    problems: list[str] = []
    assert len(list(log.read_events(problems=problems))) == 3
    assert problems == [f"{path.name} line 4: incomplete last line (MedView stopped while writing it)"]
    report = log.verify()
    assert report.ok
    assert report.unreadable == tuple(problems)

    assert log.record_open("photo", "/photos/after-the-crash.jpg")
    problems = []
    events = list(log.read_events(problems=problems))
    assert [object_id(e, "File") for e in events][-1] == "/photos/after-the-crash.jpg"
    assert len(events) == 4
    assert len(problems) == 1
    assert problems[0].startswith(f"{path.name} line 4: not an audit")
    assert len(lines_of(path)) == 5
    report = log.verify()  # the new record links to the torn line: the chain still holds
    assert report.ok
    assert report.records == 5
    assert len(report.unreadable) == 1


def test_month_rollover_links_the_files(folder: Path) -> None:
    log = AuditLog(folder, clock=ticking_clock(datetime(2026, 1, 31, 23, 59, 58, tzinfo=UTC)))
    for index in range(4):  # 23:59:58, 23:59:59, then 00:00:00 and 00:00:01 of February
        log.record_open("photo", f"/photos/{index}.jpg")
    january, february = log.files()
    assert (january.name, february.name) == ("audit-2026-01.jsonl", "audit-2026-02.jsonl")
    assert len(lines_of(january)) == 2
    assert len(lines_of(february)) == 2
    assert json.loads(lines_of(february)[0])["prev"] == hashlib.sha256(lines_of(january)[-1]).hexdigest()
    report = log.verify()
    assert report.ok
    assert report.records == 4
    assert report.files == 2

    since = datetime(2026, 2, 1, 0, 0, 1, tzinfo=UTC)
    assert [object_id(e, "File") for e in log.read_events(since=since)] == ["/photos/3.jpg"]
    assert len(list(log.read_events())) == 4

    january.unlink()  # a month's file removed
    report = log.verify()
    assert (
        report.broken
        == f"{february.name} line 1: links to a record that is not in this folder (an earlier file removed?)"
    )


def test_a_clock_going_back_still_appends_at_the_end(folder: Path) -> None:
    times = iter([datetime(2026, 5, 2, tzinfo=UTC), datetime(2026, 4, 30, tzinfo=UTC)])
    log = AuditLog(folder, clock=lambda: next(times))
    log.record_app_start()
    log.record_app_stop()
    assert [p.name for p in log.files()] == ["audit-2026-05.jsonl"]
    assert log.verify().ok


def test_concurrent_writers_write_intact_lines(folder: Path) -> None:
    # two AuditLog objects on one folder stand for two MedView processes (the file lock keeps them apart)
    logs = [AuditLog(folder), AuditLog(folder)]
    threads = [
        threading.Thread(
            target=lambda log=logs[n % 2], n=n: [log.record_open("photo", f"/t{n}/{i}.jpg") for i in range(25)]
        )
        for n in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    problems: list[str] = []
    events = list(logs[0].read_events(problems=problems))
    assert problems == []
    assert sorted(object_id(e, "File") for e in events) == sorted(f"/t{n}/{i}.jpg" for n in range(8) for i in range(25))
    report = logs[1].verify()
    assert report.ok
    assert report.records == 200


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="no SIGKILL on this platform")
def test_records_survive_kill_9(folder: Path) -> None:
    count = 30
    script = (
        "import os, signal, sys\n"
        "from medview.audit import AuditLog\n"
        "log = AuditLog(sys.argv[1])\n"
        "for i in range(int(sys.argv[2])):\n"
        "    assert log.record_open('series', f'/studies/{i}', series_uid=f'1.2.{i}', patient_id='P1')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, "-c", script, str(folder), str(count)], env=env, capture_output=True, timeout=60
    )
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
    problems: list[str] = []
    events = list(AuditLog(folder).read_events(problems=problems))
    assert problems == []
    assert [object_id(e, "Series") for e in events] == [f"1.2.{i}" for i in range(count)]
    assert AuditLog(folder).verify().ok


def test_an_unwritable_folder_sets_the_flag_and_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the audit folder should be")
    log = AuditLog(blocker / "audit")
    assert log.record_app_start() is False
    assert log.record_open("photo", "/p.jpg") is False
    assert log.problem is not None
    assert log.problem.startswith(f"audit log not writable: {blocker / 'audit'}: ")
    assert sum("audit log not writable" in r.getMessage() for r in caplog.records) == 1  # said once, not per record
    assert list(log.read_events()) == []
    assert log.verify().ok


READ_ONLY_CHECK = """
import sys
from pathlib import Path
from medview.audit import AuditLog

log = AuditLog(Path(sys.argv[1]))
assert log.record_app_start() is False, "a record was written into a read-only folder"
assert log.problem is not None and log.problem.startswith("audit log not writable: "), log.problem
print("flagged:", log.problem)
"""


@pytest.mark.skipif(os.name != "posix", reason="needs POSIX permissions")
def test_a_read_only_folder_sets_the_flag(folder: Path) -> None:
    """Run where the folder's permissions bind: root (as CI runs) writes anywhere, so as root the check runs in
    a child process without the capabilities that override file permissions (util-linux's setpriv)."""
    folder.mkdir()
    folder.chmod(0o555)
    command = [sys.executable, "-c", READ_ONLY_CHECK, str(folder)]
    if os.geteuid() == 0:
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "flagged: audit log not writable" in result.stdout
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)


def test_a_short_write_is_flagged_and_the_log_goes_on(log: AuditLog, monkeypatch: pytest.MonkeyPatch) -> None:
    log.record_app_start()
    real_write = os.write

    def disk_full(fd: int, data: bytes) -> int:
        return real_write(fd, data[: len(data) // 2])

    with monkeypatch.context() as patch:
        patch.setattr(os, "write", disk_full)
        assert log.record_open("photo", "/p/lost.jpg") is False
    assert log.problem is not None
    assert "bytes written" in log.problem
    assert log.record_open("photo", "/p/kept.jpg") is True
    problems: list[str] = []
    assert [e.event_type for e in log.read_events(problems=problems)] == ["Application Start", "photo"]
    assert len(problems) == 1
    assert "line 2" in problems[0]
    assert log.verify().ok


def test_default_log_lives_in_the_data_folder(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert audit_log() is audit_log()
    assert audit_log().folder == data_dir / "audit"
    assert audit_log().record_app_start()
    assert (data_dir / "audit").is_dir()
    assert len(list(audit_log().read_events())) == 1
    monkeypatch.setenv("MEDVIEW_DATA_DIR", str(tmp_path / "elsewhere"))
    assert audit_log().folder == tmp_path / "elsewhere" / "audit"
