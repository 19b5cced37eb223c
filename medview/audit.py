"""The audit log: who opened which study, series, recording or photo, which model ran on it, what was exported.

Records follow DICOM PS3.15 Annex A.5 audit messages (RFC 3881): an event id
with its DICOM code, an action code (C/R/U/D/E), an outcome (0/4/8/12), a UTC
time, the active participant (OS user, host, process) and participant objects
(patient ID as displayed, study and series instance UIDs, files, models,
export destinations).  They are never pixel data: only text, numbers,
booleans and None (in lists and dicts) are accepted.

The log is JSON Lines in ``data_dir()/audit``, one file a month
(``audit-YYYY-MM.jsonl``).  Each record is appended with one ``os.write`` of one
line to a file opened with ``O_APPEND`` and then ``fsync``-ed, so a crash or a
``kill -9`` loses at most the record being written.  Each record carries the
SHA-256 of the line before it (across months; the first ever links to
``GENESIS``), so ``verify()`` finds an edited or removed line.  Writing never
raises for the disk's sake: a full disk or a read-only folder is logged once and
kept in ``AuditLog.problem`` for the UI to show; the user's work goes on.

No library offers an fsync-ed, hash-chained, append-only JSON Lines log, so this
is written out here; the cross-process lock comes from ``filelock``.
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import hashlib
import json
import logging
import math
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Any

from filelock import FileLock

from medview import __version__
from medview.config import data_dir

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
#: what the first record ever links to
GENESIS = "0" * 64
#: longer text (a description, an error message) is cut to this many characters
MAX_TEXT = 1024
#: a list or dict in a record holds at most this many items: a record describes, it never carries data
MAX_ITEMS = 64
MAX_DEPTH = 4
MAX_LINE_BYTES = 64 * 1024
#: waiting for another MedView process that is writing the log
LOCK_TIMEOUT_S = 10.0

ACTIONS = ("C", "R", "U", "D", "E")  # create, read, update, delete, execute
OPEN_KINDS = ("study", "series", "volume", "recording", "photo")
_FILE_NAME = re.compile(r"audit-(\d{4})-(\d{2})\.jsonl")
_TAIL_CHUNK = 8192
_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation


class EventId(StrEnum):
    """Event ids: the DICOM PS3.15 A.5.3 names, plus MedView's own for what DICOM has no code for."""

    APPLICATION_ACTIVITY = "Application Activity"
    AUDIT_LOG_USED = "Audit Log Used"
    INSTANCES_ACCESSED = "DICOM Instances Accessed"
    EXPORT = "Export"
    IMPORT = "Import"
    #: MedView: a non-DICOM file (NIfTI volume, lung sound recording, skin photo) opened
    FILE_ACCESSED = "File Accessed"
    #: MedView: a model ran on a study, series, recording or photo
    AI_MODEL_RUN = "AI Model Run"


#: coding scheme and code of each event id
_EVENT_CODES = {
    EventId.APPLICATION_ACTIVITY.value: "DCM 110100",
    EventId.AUDIT_LOG_USED.value: "DCM 110101",
    EventId.INSTANCES_ACCESSED.value: "DCM 110103",
    EventId.EXPORT.value: "DCM 110106",
    EventId.IMPORT.value: "DCM 110107",
    EventId.FILE_ACCESSED.value: "MEDVIEW 1",
    EventId.AI_MODEL_RUN.value: "MEDVIEW 2",
}


class Outcome(IntEnum):
    """EventOutcomeIndicator of RFC 3881 / DICOM PS3.15."""

    SUCCESS = 0
    MINOR_FAILURE = 4
    SERIOUS_FAILURE = 8
    MAJOR_FAILURE = 12


@dataclass(frozen=True)
class AuditEvent:
    """One record read back from the log."""

    time: datetime  # UTC, timezone-aware
    event: str
    action: str
    outcome: int
    user: str
    host: str
    pid: int
    event_code: str = ""
    event_type: str = ""
    outcome_description: str = ""
    app: str = ""
    objects: tuple[Mapping[str, Any], ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)
    #: file and line it was read from, for messages
    where: str = ""

    @classmethod
    def from_line(cls, line: bytes, where: str = "") -> AuditEvent:
        """Parse one line; ``ValueError`` says what is wrong with it."""
        try:
            raw = json.loads(line)
        except ValueError as error:
            raise ValueError(f"not JSON ({error})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
        try:
            time = datetime.fromisoformat(raw["time"])
            if time.tzinfo is None:
                raise ValueError(f"time {raw['time']!r} has no timezone")
            objects = raw.get("objects", [])
            details = raw.get("details", {})
            if not isinstance(objects, list) or not all(isinstance(o, dict) for o in objects):
                raise ValueError("objects is not a list of objects")
            if not isinstance(details, dict):
                raise ValueError("details is not an object")
            return cls(
                time=time.astimezone(UTC),
                event=_text_field(raw, "event"),
                action=_text_field(raw, "action"),
                outcome=_int_field(raw, "outcome"),
                user=_text_field(raw, "user"),
                host=_text_field(raw, "host"),
                pid=_int_field(raw, "pid"),
                event_code=_text_field(raw, "event_code", ""),
                event_type=_text_field(raw, "event_type", ""),
                outcome_description=_text_field(raw, "outcome_description", ""),
                app=_text_field(raw, "app", ""),
                objects=tuple(objects),
                details=details,
                where=where,
            )
        except KeyError as error:
            raise ValueError(f"field {error} missing") from None
        except TypeError as error:
            raise ValueError(str(error)) from None

    def subject(self) -> str:
        """What the event concerns (patient, study, series, file, model, destination), in one line."""
        parts = []
        for item in self.objects:
            text = f"{item.get('role', '?')} {item.get('id', '')}".strip()
            extras = [str(item[key]) for key in ("version", "description", "format") if item.get(key) not in (None, "")]
            if item.get("count") is not None:
                extras.append(f"{item['count']} instances")
            if item.get("anonymised") is not None:
                extras.append("anonymised" if item["anonymised"] else "not anonymised")
            parts.append(f"{text} ({', '.join(extras)})" if extras else text)
        return "; ".join(parts)


def _text_field(raw: Mapping[str, Any], key: str, *default: str) -> str:
    value = raw[key] if not default else raw.get(key, default[0])
    if not isinstance(value, str):
        raise TypeError(f"{key} is {type(value).__name__}, expected text")
    return value


def _int_field(raw: Mapping[str, Any], key: str) -> int:
    value = raw[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{key} is {type(value).__name__}, expected an integer")
    return value


@dataclass(frozen=True)
class ChainReport:
    """What ``AuditLog.verify`` found."""

    records: int
    files: int
    #: the first broken link ("audit-2026-05.jsonl line 7: ..."), None when the chain holds
    broken: str | None = None
    #: unreadable lines that keep the chain (a write cut short by a crash): reported, not a break
    unreadable: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.broken is None

    def summary(self) -> str:
        """One line for the UI."""
        if self.broken is not None:
            return f"Hash chain BROKEN: {self.broken}"
        text = f"Hash chain verified: {self.records} records in {self.files} file(s)"
        if self.unreadable:
            text += f"; {len(self.unreadable)} unreadable line(s), e.g. {self.unreadable[0]}"
        return text


class AuditLog:
    """An append-only, fsync-ed, hash-chained log of what was opened, run and exported.

    Thread-safe, and safe with several MedView processes writing the same folder.
    ``record_*`` return True when the record is on disk, False when it could not be
    written (then ``problem`` says why); they raise only for a programming error
    (a value that is not plain data, an unknown action or kind).
    """

    def __init__(self, folder: Path | str, *, clock: Callable[[], datetime] | None = None) -> None:
        self.folder = Path(folder)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        # the threading lock already serialises this process; the file lock guards against other processes
        self._process_lock = FileLock(self.folder / "audit.lock", timeout=LOCK_TIMEOUT_S, thread_local=False)
        self._problem: str | None = None

    @property
    def problem(self) -> str | None:
        """Why the last failed record could not be written ("audit log not writable: <path>: <reason>"), or None.

        Stays set once a record was lost, for the UI to show, even if later writes succeed.
        """
        return self._problem

    # ------------------------------------------------------------------ the events MedView records

    def record_app_start(self) -> bool:
        """MedView started (Application Activity / Application Start)."""
        return self.record(EventId.APPLICATION_ACTIVITY, "E", event_type="Application Start")

    def record_app_stop(self) -> bool:
        """MedView is closing (Application Activity / Application Stop)."""
        return self.record(EventId.APPLICATION_ACTIVITY, "E", event_type="Application Stop")

    def record_open(
        self,
        kind: str,
        path: Path | str,
        *,
        study_uid: str | None = None,
        series_uid: str | None = None,
        patient_id: str | None = None,
        sop_count: int | None = None,
        description: str = "",
        outcome: Outcome = Outcome.SUCCESS,
        outcome_description: str = "",
    ) -> bool:
        """A study, series, volume file, recording or photo was opened (or failed to open: pass the outcome).

        ``kind`` is one of ``OPEN_KINDS``; studies and series are "DICOM Instances Accessed",
        the others "File Accessed".  ``patient_id`` is the ID as the viewer displays it.
        """
        if kind not in OPEN_KINDS:
            raise ValueError(f"audit: open kind must be one of {OPEN_KINDS}, got {kind!r}")
        event = EventId.INSTANCES_ACCESSED if kind in ("study", "series") else EventId.FILE_ACCESSED
        # the instance count goes on the narrowest object the files identify (many anonymised ones carry no UIDs)
        counted = "Series" if series_uid else "Study" if study_uid else "File"
        objects = [
            _object("Patient", "Patient Number", patient_id),
            _object("Study", "Study Instance UID", study_uid, count=sop_count if counted == "Study" else None),
            _object("Series", "Series Instance UID", series_uid, count=sop_count),
            _object(
                "File", "URI", path, description=description or None, count=sop_count if counted == "File" else None
            ),
        ]
        return self.record(
            event,
            "R",
            event_type=kind,
            outcome=outcome,
            outcome_description=outcome_description,
            objects=objects,
        )

    def record_model_run(
        self,
        model_id: str,
        version: str,
        *,
        target: Path | str | None = None,
        study_uid: str | None = None,
        series_uid: str | None = None,
        patient_id: str | None = None,
        outcome: Outcome = Outcome.SUCCESS,
        outcome_description: str = "",
        seconds: float | None = None,
        device: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> bool:
        """A model ran (or failed) on a study, series, recording or photo; ``target`` is its file or folder.

        ``details`` may hold summary results (a class, a probability, a volume in mL), never arrays.
        """
        objects = [
            _object("Model", "Model ID", model_id, version=version),
            _object("Patient", "Patient Number", patient_id),
            _object("Study", "Study Instance UID", study_uid),
            _object("Series", "Series Instance UID", series_uid),
            _object("File", "URI", target),
        ]
        extra = {"seconds": round(seconds, 3) if seconds is not None else None, "device": device, **(details or {})}
        return self.record(
            EventId.AI_MODEL_RUN,
            "E",
            event_type=model_id,
            outcome=outcome,
            outcome_description=outcome_description,
            objects=objects,
            details={key: value for key, value in extra.items() if value is not None},
        )

    def record_export(
        self,
        kind: str,
        destination: Path | str,
        *,
        anonymised: bool,
        file_format: str = "",
        source: Path | str | None = None,
        study_uid: str | None = None,
        series_uid: str | None = None,
        patient_id: str | None = None,
        outcome: Outcome = Outcome.SUCCESS,
        outcome_description: str = "",
    ) -> bool:
        """Something left MedView (a DICOM SEG, a NIfTI mask, a CSV table) to ``destination``.

        ``kind`` says what ("liver segmentation", "cycle table"); ``file_format`` defaults
        to the destination's suffixes.
        """
        file_format = file_format or "".join(Path(destination).suffixes).lstrip(".")
        objects = [
            _object("Destination", "URI", destination, format=file_format, anonymised=bool(anonymised)),
            _object("Patient", "Patient Number", patient_id),
            _object("Study", "Study Instance UID", study_uid),
            _object("Series", "Series Instance UID", series_uid),
            _object("Source", "URI", source),
        ]
        return self.record(
            EventId.EXPORT,
            "R",  # PS3.15 A.5.3.7: the exported data is read
            event_type=kind,
            outcome=outcome,
            outcome_description=outcome_description,
            objects=objects,
        )

    def record_received(
        self,
        *,
        calling_ae: str,
        study_uid: str | None,
        sop_count: int,
        patient_id: str | None = None,
        peer_address: str | None = None,
        folder: Path | str | None = None,
        outcome: Outcome = Outcome.SUCCESS,
        outcome_description: str = "",
    ) -> bool:
        """A PACS (``calling_ae`` at ``peer_address``) sent ``sop_count`` instances of a study, stored in ``folder``."""
        objects = [
            _object("Source", "AE Title", calling_ae, address=peer_address),
            _object("Patient", "Patient Number", patient_id),
            _object("Study", "Study Instance UID", study_uid, count=sop_count),
            _object("File", "URI", folder),
        ]
        return self.record(
            EventId.IMPORT,
            "C",  # PS3.15 A.5.3.5: new local instances are created
            event_type="DICOM C-STORE",
            outcome=outcome,
            outcome_description=outcome_description,
            objects=objects,
        )

    def record(
        self,
        event: EventId | str,
        action: str,
        *,
        event_type: str = "",
        outcome: Outcome | int = Outcome.SUCCESS,
        outcome_description: str = "",
        objects: Sequence[Mapping[str, Any] | None] = (),
        details: Mapping[str, Any] | None = None,
    ) -> bool:
        """Append one record; ``None`` objects are left out.  The other ``record_*`` are shorthands for this."""
        if action not in ACTIONS:
            raise ValueError(f"audit: action must be one of {ACTIONS}, got {action!r}")
        outcome = Outcome(outcome)  # ValueError for anything but 0, 4, 8, 12
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("audit: the clock must give timezone-aware times")
        now = now.astimezone(UTC)
        body = {
            "schema": SCHEMA_VERSION,
            "time": now.isoformat(timespec="microseconds"),
            "event": _clean(str(event), "event"),
            "event_code": _EVENT_CODES.get(str(event), ""),
            "event_type": _clean(event_type, "event_type"),
            "action": action,
            "outcome": int(outcome),
            "outcome_description": _clean(outcome_description, "outcome_description"),
            "user": _user_name(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "app": f"MedView {__version__}",
            "objects": _clean([item for item in objects if item is not None], "objects"),
            "details": _clean(dict(details or {}), "details"),
        }
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        if len(text.encode("utf-8")) + 80 > MAX_LINE_BYTES:  # 80: the "prev" link still to come
            raise ValueError(f"audit: record of {len(text)} characters is too long (limit {MAX_LINE_BYTES} bytes)")
        return self._append(body, now)

    # ------------------------------------------------------------------ writing

    def _append(self, body: dict[str, Any], now: datetime) -> bool:
        path = self.folder
        with self._lock:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                with self._process_lock:
                    path = self._file_for(now)
                    self._write_line(path, body)
            except OSError as error:
                self._failed(path, error)
                return False
        return True

    def _file_for(self, now: datetime) -> Path:
        """This month's file, or the newest one if the clock went back: the log only ever grows at its end."""
        name = f"audit-{now:%Y-%m}.jsonl"
        files = self.files()
        if files and files[-1].name > name:
            return files[-1]
        return self.folder / name

    def _write_line(self, path: Path, body: dict[str, Any]) -> None:
        """One ``os.write`` of one line, then fsync; a torn line left by a crash is closed off first."""
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | _O_BINARY, 0o600)
        try:
            last, complete = _last_line(fd)
            created = last is None
            if last is None:
                body["prev"] = self._link_from_previous_file(path)
            else:
                body["prev"] = hashlib.sha256(last).hexdigest()
            line = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
            data = (b"" if complete else b"\n") + line + b"\n"
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, f"only {written} of {len(data)} bytes written")
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_folder(self.folder)

    def _link_from_previous_file(self, path: Path) -> str:
        """A new month's first record links to the last line of the month before (or to GENESIS)."""
        earlier = [file for file in self.files() if file.name < path.name]
        for file in reversed(earlier):
            fd = os.open(file, os.O_RDONLY | _O_BINARY)
            try:
                last, _ = _last_line(fd)
            finally:
                os.close(fd)
            if last is not None:
                return hashlib.sha256(last).hexdigest()
        return GENESIS

    def _failed(self, path: Path, error: OSError) -> None:
        message = f"audit log not writable: {path}: {error.strerror or error}"
        if message != self._problem:
            log.warning("%s", message)
        self._problem = message

    # ------------------------------------------------------------------ reading

    def files(self) -> list[Path]:
        """The monthly files, oldest first."""
        try:
            return sorted(p for p in self.folder.iterdir() if _FILE_NAME.fullmatch(p.name) and p.is_file())
        except OSError:
            return []

    def read_events(self, since: datetime | None = None, problems: list[str] | None = None) -> Iterator[AuditEvent]:
        """The records, oldest first (from ``since`` on); unreadable lines are skipped and described in ``problems``."""
        since_month = f"audit-{since.astimezone(UTC):%Y-%m}.jsonl" if since is not None else ""
        for path in self.files():
            if path.name < since_month:
                continue
            try:
                data = path.read_bytes()
            except OSError as error:
                _note(problems, f"{path}: unreadable ({error.strerror or error})")
                continue
            for number, line, complete in _lines(data):
                where = f"{path.name} line {number}"
                try:
                    event = AuditEvent.from_line(line, where)
                except ValueError as error:
                    _note(problems, _unreadable(where, complete, error))
                    continue
                if since is None or event.time >= since:
                    yield event

    def verify(self) -> ChainReport:
        """Follow the hash chain through every file; the first broken link is reported.

        An edited line breaks the link of the line after it, a removed line (or file)
        the link of the line that followed it.  An unreadable line whose successor
        still links to it was cut short by a crash: listed, not a break.  Removing the
        very last record cannot be seen from the log alone.
        """
        expected = GENESIS
        records = 0
        unreadable: list[str] = []
        files = self.files()
        for path in files:
            try:
                data = path.read_bytes()
            except OSError as error:
                return ChainReport(records, len(files), f"{path.name}: unreadable ({error.strerror or error})")
            previous_where = ""
            for number, line, complete in _lines(data):
                where = f"{path.name} line {number}"
                records += 1
                try:
                    prev = json.loads(line)["prev"]
                    if not isinstance(prev, str):
                        raise TypeError("prev is not text")
                except (ValueError, KeyError, TypeError) as error:
                    unreadable.append(_unreadable(where, complete, error))
                else:
                    if prev != expected:
                        if previous_where:
                            reason = f"{previous_where} was changed, or records between them removed"
                        elif expected == GENESIS:
                            reason = "links to a record that is not in this folder (an earlier file removed?)"
                        else:
                            reason = "the previous file's last record was changed, or records removed"
                        return ChainReport(records, len(files), f"{where}: {reason}", tuple(unreadable))
                expected = hashlib.sha256(line).hexdigest()
                previous_where = where
        return ChainReport(records, len(files), None, tuple(unreadable))


# ---------------------------------------------------------------------- the app's log

_default: AuditLog | None = None
_default_lock = threading.Lock()


def audit_log() -> AuditLog:
    """The app's audit log in ``data_dir()/audit`` (a new one whenever that folder changes, as between tests)."""
    global _default
    folder = data_dir() / "audit"
    with _default_lock:
        if _default is None or _default.folder != folder:
            _default = AuditLog(folder)
        return _default


# ---------------------------------------------------------------------- helpers


def _object(role: str, id_type: str, identifier: Path | str | None, **extra: Any) -> dict[str, Any] | None:
    """A participant object (RFC 3881 ParticipantObjectIdentification, simplified); None without an id."""
    if identifier is None or identifier == "":
        return None
    item = {"role": role, "id_type": id_type, "id": str(identifier)}
    item.update({key: value for key, value in extra.items() if value is not None})
    return item


def _clean(value: Any, where: str, depth: int = 0) -> Any:
    """Plain data only (text, numbers, booleans, None; lists and dicts of them): never pixels, never bytes."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else str(value)
    if isinstance(value, str):
        text = str(value)
        return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"
    if isinstance(value, list | tuple | dict):
        if depth >= MAX_DEPTH:
            raise TypeError(f"audit {where}: nested deeper than {MAX_DEPTH} levels")
        if len(value) > MAX_ITEMS:
            raise TypeError(f"audit {where}: {len(value)} items, at most {MAX_ITEMS} (a record never carries data)")
        if isinstance(value, dict):
            if not all(isinstance(key, str) for key in value):
                raise TypeError(f"audit {where}: dict keys must be text")
            return {key: _clean(item, f"{where}.{key}", depth + 1) for key, item in value.items()}
        return [_clean(item, f"{where}[{index}]", depth + 1) for index, item in enumerate(value)]
    raise TypeError(
        f"audit {where}: {type(value).__name__} is not allowed; only text, numbers, booleans and None "
        "(and lists/dicts of them) go into the audit log, never pixel data"
    )


def _user_name() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):  # no login name in the environment nor in the password database
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"


def _lines(data: bytes) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, line without newline, whether it ended with a newline).

    Split on b"\\n" only: ``str.splitlines`` would also split at U+2028 inside a JSON string.
    """
    parts = data.split(b"\n")
    complete = parts[-1] == b""
    if complete:
        parts.pop()
    for index, part in enumerate(parts):
        yield index + 1, part, complete or index < len(parts) - 1


def _last_line(fd: int) -> tuple[bytes | None, bool]:
    """The last line of an open file (None when empty) and whether the file ends with a newline."""
    end = os.lseek(fd, 0, os.SEEK_END)
    if end == 0:
        return None, True
    os.lseek(fd, end - 1, os.SEEK_SET)
    complete = os.read(fd, 1) == b"\n"
    stop = end - 1 if complete else end
    start = stop
    buffer = b""
    while start > 0:
        step = min(_TAIL_CHUNK, start)
        start -= step
        os.lseek(fd, start, os.SEEK_SET)
        buffer = _read_exactly(fd, step) + buffer
        cut = buffer.rfind(b"\n")
        if cut >= 0:
            return buffer[cut + 1 :], complete
    return buffer, complete


def _read_exactly(fd: int, size: int) -> bytes:
    chunks = []
    while size > 0:
        chunk = os.read(fd, size)
        if not chunk:
            raise OSError(errno.EIO, "audit file shrank while being read")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _fsync_folder(folder: Path) -> None:
    """Make a new file's name durable too (POSIX; Windows cannot open a folder, and does not need to)."""
    if os.name != "posix":
        return
    # some file systems refuse this; the record itself is on disk already, so that is no failure to report
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _unreadable(where: str, complete: bool, error: Exception) -> str:
    if not complete:
        return f"{where}: incomplete last line (MedView stopped while writing it)"
    return f"{where}: not an audit record ({error})"


def _note(problems: list[str] | None, message: str) -> None:
    log.warning("audit log: %s", message)
    if problems is not None:
        problems.append(message)
