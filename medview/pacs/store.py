"""The local study database: DICOM instances received from a PACS, kept on this machine.

Files are the truth, the index is a convenience.  Each instance is one file
``<root>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`` holding
the bytes as they were received (file meta + dataset, never decoded and
re-encoded); a SQLite index (WAL mode) lists patients, studies, series and
instances for the browser.  A file is written to a temporary name, flushed to
disk and renamed before it is indexed, so a crash leaves at worst an unindexed
temporary file, never an indexed half instance.  A missing or damaged index is
rebuilt from the folder (``rebuild``).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import sqlite3
import tempfile
import threading
import warnings
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from medview.config import data_dir
from medview.errors import Cancelled, DicomError
from medview.progress import CancelCheck, ProgressCallback

log = logging.getLogger(__name__)

INDEX_NAME = "index.sqlite3"
INDEX_SCHEMA_VERSION = 1
INSTANCE_SUFFIX = ".dcm"
#: temporary files start with a dot and end so: never indexed, removed by ``rebuild``
PARTIAL_SUFFIX = ".partial"
#: the identifying attributes without which an instance cannot be filed, with their tags for the message
REQUIRED_UIDS = (
    ("StudyInstanceUID", "(0020,000D)"),
    ("SeriesInstanceUID", "(0020,000E)"),
    ("SOPInstanceUID", "(0008,0018)"),
)
_PLAIN_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_MAX_PLAIN_NAME = 64


_COLUMNS = (
    "sop_instance_uid",
    "sop_class_uid",
    "study_uid",
    "series_uid",
    "patient_name",
    "patient_id",
    "study_date",
    "study_description",
    "series_number",
    "series_description",
    "modality",
    "instance_number",
    "transfer_syntax_uid",
    "path",
    "received_at",
    "calling_ae",
)
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid TEXT PRIMARY KEY,
    sop_class_uid TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    patient_name TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    study_date TEXT NOT NULL,
    study_description TEXT NOT NULL,
    series_number INTEGER,
    series_description TEXT NOT NULL,
    modality TEXT NOT NULL,
    instance_number INTEGER,
    transfer_syntax_uid TEXT NOT NULL,
    path TEXT NOT NULL UNIQUE,
    received_at TEXT NOT NULL,
    calling_ae TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_by_series ON instances (study_uid, series_uid);
PRAGMA user_version = {INDEX_SCHEMA_VERSION};
"""


@dataclass(frozen=True)
class StoredInstance:
    """One instance in the store: where its file is, and what the browser lists it under."""

    sop_instance_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    patient_name: str
    patient_id: str
    study_date: str
    study_description: str
    series_number: int | None
    series_description: str
    modality: str
    instance_number: int | None
    transfer_syntax_uid: str
    path: Path
    received_at: str  # ISO 8601, UTC
    calling_ae: str  # the AE title of the sender ("" when unknown, e.g. after a rebuild of an old file)


@dataclass(frozen=True)
class StudyRecord:
    """One study in the store; patient and study fields are those of its most recently received instance."""

    study_uid: str
    patient_name: str
    patient_id: str
    study_date: str
    study_description: str
    series_count: int
    instance_count: int
    last_received: str


@dataclass(frozen=True)
class SeriesRecord:
    """One series of a study in the store."""

    study_uid: str
    series_uid: str
    series_number: int | None
    series_description: str
    modality: str
    instance_count: int
    last_received: str


@dataclass
class RebuildReport:
    """What ``rebuild`` indexed, and the files it left alone with the reason (they are never deleted)."""

    indexed: int = 0
    removed_partials: int = 0
    problems: list[str] = field(default_factory=list)


def safe_file_name(uid: str) -> str:
    """A file or folder name for a UID that cannot escape its folder or clash with another UID's name.

    Real UIDs (digits and dots) are used as they are; anything else (the invalid
    UUID strings some scanners write, or hostile input) keeps its harmless
    characters and gets a hash of the exact value, so two UIDs that differ only
    in a replaced character or in case still get different names.
    """
    if _PLAIN_UID.fullmatch(uid) and len(uid) <= _MAX_PLAIN_NAME:
        return uid
    readable = re.sub(r"[^0-9A-Za-z.\-]", "_", uid).strip(".")[:40] or "uid"
    digest = hashlib.sha256(uid.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{readable}_{digest}"


def _text(dataset: Dataset, keyword: str) -> str:
    """A header value as stripped text; "" when absent or unreadable (a damaged value must not stop the filing)."""
    try:
        value = dataset.get(keyword, "")
    except Exception:  # noqa: BLE001 - pydicom converts lazily and raises many types for damaged values
        return ""
    return str(value).strip().strip("\x00").strip() if value is not None else ""


def _int_or_none(dataset: Dataset, keyword: str) -> int | None:
    try:
        return int(dataset.get(keyword))
    except Exception:  # noqa: BLE001 - absent, empty or damaged: no number
        return None


def _read_header(data: bytes | Path, label: str) -> Dataset:
    """The header of a DICOM file (bytes or path), pixel data not read."""
    source = io.BytesIO(data) if isinstance(data, bytes) else str(data)
    try:
        with warnings.catch_warnings():
            # real scanners write invalid UIDs etc.: pydicom warns and reads on
            warnings.simplefilter("ignore")
            return pydicom.dcmread(source, stop_before_pixels=True)
    except InvalidDicomError as error:
        raise DicomError("not a DICOM file (no DICM preamble)", path=label) from error
    except Exception as error:  # pydicom raises many types for damaged headers
        raise DicomError(f"unreadable DICOM header ({type(error).__name__}: {error})", path=label) from error


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; Windows cannot open folders and needs no such step)."""
    if os.name != "posix":
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


class LocalStudyStore:
    """Received DICOM instances on disk, with a SQLite index for listing them.

    Thread-safe: the DICOM receiver stores from its association threads while
    the UI lists from others; one connection behind a lock serialises the
    index (writes are a row each, so the lock is held for microseconds).
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else data_dir() / "studies"
        self.root.mkdir(parents=True, exist_ok=True)
        self.index_path = self.root / INDEX_NAME
        self._lock = threading.RLock()
        #: True when the index was missing or damaged while instance files exist: call ``rebuild()``
        self.needs_rebuild = False
        self._connection = self._open_index()

    # ------------------------------------------------------------------ index file

    def _open_index(self) -> sqlite3.Connection:
        existed = self.index_path.exists()
        try:
            connection = self._connect()
        except sqlite3.DatabaseError as error:
            log.warning("study index %s is damaged (%s): moving it aside and rebuilding", self.index_path, error)
            self._move_index_aside()
            connection = self._connect()
            self.needs_rebuild = True
        if not existed and self._has_instance_files():
            log.warning("study index %s is missing: it will be rebuilt from the folder", self.index_path)
            self.needs_rebuild = True
        return connection

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.index_path, check_same_thread=False, timeout=30)
        try:
            if connection.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("quick_check failed")
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, INDEX_SCHEMA_VERSION):
                # written by another MedView version: the files are the truth, rebuild from them
                connection.execute("DROP TABLE IF EXISTS instances")
                self.needs_rebuild = True
            connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(_SCHEMA)
        except sqlite3.DatabaseError:
            connection.close()
            raise
        return connection

    def _move_index_aside(self) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        for suffix in ("", "-wal", "-shm"):
            path = self.index_path.with_name(self.index_path.name + suffix)
            if path.exists():
                os.replace(path, path.with_name(f"{path.name}.damaged-{stamp}"))

    def _has_instance_files(self) -> bool:
        return any(self._instance_files())

    def _instance_files(self) -> list[Path]:
        return sorted(path for path in self.root.glob(f"*/*/*{INSTANCE_SUFFIX}") if not path.name.startswith("."))

    def close(self) -> None:
        """Close the index (the store cannot be used afterwards)."""
        with self._lock:
            self._connection.close()

    def __enter__(self) -> LocalStudyStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ storing

    def store_bytes(self, encoded: bytes, *, calling_ae: str = "") -> StoredInstance:
        """File one received instance (DICOM file bytes: preamble, file meta, dataset) and index it.

        The bytes are written as they are. Receiving the same SOP Instance again
        replaces the earlier file (also when it now belongs to another series).

        Raises:
            DicomError: the bytes are not DICOM, or lack a Study, Series or SOP
                Instance UID, or their file meta names another instance than the
                dataset (the instance is refused and nothing is written).
            OSError: the disk is full or not writable.
        """
        sender = f"instance received from {calling_ae or 'an unnamed sender'}"
        dataset = _read_header(encoded, sender)
        instance = self._describe(dataset, sender, calling_ae, utc_now())
        meta_uid = _text(dataset.file_meta, "MediaStorageSOPInstanceUID") if dataset.file_meta else ""
        if meta_uid and meta_uid != instance.sop_instance_uid:
            raise DicomError(
                f"refused: SOP Instance UID {instance.sop_instance_uid!r} differs from the one "
                f"announced for it ({meta_uid!r})",
                path=sender,
            )
        final = self.root / instance.path
        final.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary_name = tempfile.mkstemp(dir=final.parent, prefix=".", suffix=PARTIAL_SUFFIX)
        temporary = Path(temporary_name)
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(encoded)
                file.flush()
                os.fsync(file.fileno())
            with self._lock:
                previous = self._connection.execute(
                    "SELECT path FROM instances WHERE sop_instance_uid = ?", (instance.sop_instance_uid,)
                ).fetchone()
                os.replace(temporary, final)
                fsync_folder(final.parent)
                self._upsert([instance])
                if previous is not None and previous[0] != str(instance.path):
                    self._remove_file(self.root / previous[0])
        finally:
            temporary.unlink(missing_ok=True)
        return self._absolute(instance)

    def _describe(self, dataset: Dataset, label: str, calling_ae: str, received_at: str) -> StoredInstance:
        """The index row of ``dataset`` (path relative to the root), refusing it without its identifying UIDs."""
        missing = [f"{keyword} {tag}" for keyword, tag in REQUIRED_UIDS if not _text(dataset, keyword)]
        if missing:
            raise DicomError(f"refused: no {', '.join(missing)}", path=label)
        study_uid = _text(dataset, "StudyInstanceUID")
        series_uid = _text(dataset, "SeriesInstanceUID")
        sop_uid = _text(dataset, "SOPInstanceUID")
        meta = dataset.file_meta if dataset.file_meta is not None else Dataset()
        relative = (
            Path(safe_file_name(study_uid)) / safe_file_name(series_uid) / f"{safe_file_name(sop_uid)}{INSTANCE_SUFFIX}"
        )
        return StoredInstance(
            sop_instance_uid=sop_uid,
            sop_class_uid=_text(dataset, "SOPClassUID") or _text(meta, "MediaStorageSOPClassUID"),
            study_uid=study_uid,
            series_uid=series_uid,
            patient_name=_text(dataset, "PatientName"),
            patient_id=_text(dataset, "PatientID"),
            study_date=_text(dataset, "StudyDate"),
            study_description=_text(dataset, "StudyDescription"),
            series_number=_int_or_none(dataset, "SeriesNumber"),
            series_description=_text(dataset, "SeriesDescription"),
            modality=_text(dataset, "Modality"),
            instance_number=_int_or_none(dataset, "InstanceNumber"),
            transfer_syntax_uid=_text(meta, "TransferSyntaxUID"),
            path=relative,
            received_at=received_at,
            calling_ae=calling_ae,
        )

    def _upsert(self, instances: list[StoredInstance]) -> None:
        rows = [tuple(str(v) if isinstance(v, Path) else v for v in _row(instance)) for instance in instances]
        placeholders = ", ".join("?" * len(_COLUMNS))
        path_column = _COLUMNS.index("path")
        with self._connection:
            # a row of another UID at the same path (a file overwritten outside MedView, then rebuilt) gives way
            self._connection.executemany("DELETE FROM instances WHERE path = ?", [(row[path_column],) for row in rows])
            self._connection.executemany(
                f"INSERT OR REPLACE INTO instances ({', '.join(_COLUMNS)}) VALUES ({placeholders})", rows
            )

    def _remove_file(self, path: Path) -> None:
        """Delete a replaced instance's file, and its series and study folders once empty."""
        path.unlink(missing_ok=True)
        for folder in (path.parent, path.parent.parent):
            try:
                folder.rmdir()
            except OSError:
                break  # not empty (or already gone): keep it

    def _absolute(self, instance: StoredInstance) -> StoredInstance:
        return replace(instance, path=self.root / instance.path)

    # ------------------------------------------------------------------ queries

    def studies(self) -> list[StudyRecord]:
        """Every study, newest arrival first."""
        # SQLite takes the bare columns of a max() aggregate from the row holding the maximum:
        # the patient and study fields of the latest instance
        query = """
            SELECT study_uid, patient_name, patient_id, study_date, study_description,
                   COUNT(DISTINCT series_uid), COUNT(*), MAX(received_at)
            FROM instances GROUP BY study_uid ORDER BY MAX(received_at) DESC, study_uid
        """
        with self._lock:
            rows = self._connection.execute(query).fetchall()
        return [StudyRecord(*row) for row in rows]

    def series(self, study_uid: str) -> list[SeriesRecord]:
        """The series of one study, by series number."""
        query = """
            SELECT study_uid, series_uid, series_number, series_description, modality, COUNT(*), MAX(received_at)
            FROM instances WHERE study_uid = ? GROUP BY series_uid
            ORDER BY series_number IS NULL, series_number, series_uid
        """
        with self._lock:
            rows = self._connection.execute(query, (study_uid,)).fetchall()
        return [SeriesRecord(*row) for row in rows]

    def series_files(self, series_uid: str, study_uid: str | None = None) -> list[Path]:
        """The files of one series, by instance number (``study_uid`` narrows it where a sender reused a series UID)."""
        query = "SELECT path FROM instances WHERE series_uid = ?"
        arguments: tuple[str, ...] = (series_uid,)
        if study_uid is not None:
            query += " AND study_uid = ?"
            arguments += (study_uid,)
        query += " ORDER BY instance_number IS NULL, instance_number, sop_instance_uid"
        with self._lock:
            rows = self._connection.execute(query, arguments).fetchall()
        return [self.root / row[0] for row in rows]

    def study_instances(self, study_uid: str) -> list[StoredInstance]:
        """Every instance of one study, by series and instance number."""
        query = (
            f"SELECT {', '.join(_COLUMNS)} FROM instances WHERE study_uid = ? "
            "ORDER BY series_number IS NULL, series_number, series_uid, instance_number IS NULL, instance_number"
        )
        with self._lock:
            rows = self._connection.execute(query, (study_uid,)).fetchall()
        return [self._absolute(StoredInstance(**dict(zip(_COLUMNS, row, strict=True)))) for row in rows]

    def instance(self, sop_instance_uid: str) -> StoredInstance | None:
        """One instance by its SOP Instance UID, or None."""
        with self._lock:
            row = self._connection.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,)
            ).fetchone()
        if row is None:
            return None
        values = dict(zip(_COLUMNS, row, strict=True))
        values["path"] = self.root / values["path"]
        return StoredInstance(**values)

    def instance_count(self) -> int:
        """How many instances the index lists."""
        with self._lock:
            return int(self._connection.execute("SELECT COUNT(*) FROM instances").fetchone()[0])

    # ------------------------------------------------------------------ rebuilding

    def rebuild(self, progress: ProgressCallback | None = None, cancelled: CancelCheck | None = None) -> RebuildReport:
        """Re-index every instance file under the root (after a lost or damaged index, or files copied in).

        Unreadable files are reported and left where they are, never deleted;
        leftover temporary files of interrupted writes are removed. Instances
        received while this runs are kept.
        """
        report = RebuildReport()
        for partial in self.root.glob(f"*/*/.*{PARTIAL_SUFFIX}"):
            partial.unlink(missing_ok=True)
            report.removed_partials += 1
        files = self._instance_files()
        found: dict[str, StoredInstance] = {}
        for done, path in enumerate(files, start=1):
            if cancelled is not None and cancelled():
                raise Cancelled()
            if progress is not None:
                progress(done, len(files), "indexing received instances")
            try:
                dataset = _read_header(path, str(path))
                received = datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="milliseconds")
                meta = dataset.file_meta if dataset.file_meta is not None else Dataset()
                instance = self._describe(dataset, str(path), _text(meta, "SourceApplicationEntityTitle"), received)
            except (DicomError, OSError) as error:
                report.problems.append(str(error))
                continue
            # index the file where it is, even if its UIDs would file it elsewhere: never move data on a rebuild
            instance = replace(instance, path=path.relative_to(self.root))
            if instance.sop_instance_uid in found:
                report.problems.append(
                    f"{path}: same SOP Instance UID as {self.root / found[instance.sop_instance_uid].path}; "
                    "the first one is indexed"
                )
                continue
            found[instance.sop_instance_uid] = instance
        with self._lock:
            self._upsert(list(found.values()))
            indexed_paths = [row[0] for row in self._connection.execute("SELECT path FROM instances")]
            gone = [(p,) for p in indexed_paths if not (self.root / p).is_file()]
            with self._connection:
                self._connection.executemany("DELETE FROM instances WHERE path = ?", gone)
            self.needs_rebuild = False
        report.indexed = len(found)
        for problem in report.problems:
            log.warning("study store rebuild: %s", problem)
        return report


def _row(instance: StoredInstance) -> tuple[object, ...]:
    return tuple(getattr(instance, column) for column in _COLUMNS)
