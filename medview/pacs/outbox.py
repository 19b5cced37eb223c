"""The outbox: DICOM objects waiting to reach a PACS, kept on disk until the PACS has stored them.

``add`` copies the files into the outbox (so the folder they came from may go)
and indexes them in SQLite, one row per object with its destination; only
then does anything go out.  ``deliver`` sends what is due, one association
per destination, and records each object's outcome: stored (the copy is
deleted, the row kept as history), or not (the PACS's reason, the attempt
count, and the time of the next try, backing off from 30 s to an hour).

Nothing is lost to a crash: a row leaves "waiting" only after the PACS
answered, so an object being sent when the process died is sent again after
restart (a PACS keeps one copy of a SOP instance it receives twice).  A copy
made but not yet indexed when the process died is removed on the next open.
Every delivery attempt is in the audit log.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from medview.audit import Outcome, audit_log
from medview.config import data_dir
from medview.errors import Cancelled, ExportError, MedviewError
from medview.pacs.dicomweb import WebNode, store_files
from medview.pacs.query import RemoteNode
from medview.pacs.receiver import PacsError
from medview.pacs.send import SendOutcome, send_files
from medview.pacs.store import fsync_folder
from medview.progress import CancelCheck, ProgressCallback

log = logging.getLogger(__name__)

INDEX_NAME = "outbox.sqlite3"
FIRST_RETRY_S = 30.0
LAST_RETRY_S = 3600.0

#: after this many failed tries an object is no longer tried by itself (about 6 hours): Retry now sends it again
MAX_ATTEMPTS = 12
#: the next_try of an object given up on
NEVER = 9e18

WAITING, SENT = "waiting", "sent"

Sender = Callable[..., list[SendOutcome]]


def retry_delay(attempts: int) -> float:
    """Seconds until the next try after ``attempts`` failed ones: 30 s, doubling, at most an hour."""
    return min(FIRST_RETRY_S * 2 ** max(attempts - 1, 0), LAST_RETRY_S)


@dataclass(frozen=True)
class OutboxItem:
    """One object in the outbox, as the user sees it."""

    id: int
    description: str  # what it is: "kidney stone report (kidney-hybrid 1.3.0)"
    file_name: str  # the name it had when added
    node: RemoteNode | WebNode
    status: str  # "waiting" or "sent"
    attempts: int
    next_try: float  # time.time() of the next try (waiting)
    message: str  # the last try's outcome: a PACS's reason, a warning, or ""
    added: str  # ISO time
    sent: str  # ISO time, or ""
    path: Path  # the outbox's copy (gone once sent)

    @property
    def state(self) -> str:
        """The status in a few words, e.g. "sent 2026-12-07 16:46:44", "waiting: next try in 2 min (3 tries)";
        ``message`` says why a waiting object did not arrive."""
        if self.status == SENT:
            return f"sent {self.sent[:19].replace('T', ' ')}"
        if not self.attempts:
            return "waiting: not tried yet"
        if self.next_try >= NEVER:
            return f"not sent: given up after {self.attempts} tries (Retry now sends it again)"
        wait = max(0.0, self.next_try - time.time())
        when = "now" if wait < 1 else f"in {wait:.0f} s" if wait < 90 else f"in {wait / 60:.0f} min"
        return f"waiting: next try {when} ({self.attempts} {'try' if self.attempts == 1 else 'tries'})"


@dataclass(frozen=True)
class Delivery:
    """What one ``deliver`` did."""

    stored: int
    failed: int
    messages: tuple[str, ...]  # one per destination or object that failed

    @property
    def summary(self) -> str:
        text = f"{self.stored} object(s) stored in the PACS"
        if self.failed:
            text += f"; {self.failed} still waiting in the outbox: " + "; ".join(dict.fromkeys(self.messages))
        return text


def _node(ae_title: str, host: str, port: int, url: str, ca_file: str, tls: int) -> RemoteNode | WebNode:
    """An item's destination as stored: a DICOMweb server when it has a URL, else a DIMSE node."""
    try:
        if url:
            return WebNode(url, ca_file)
        return RemoteNode(ae_title, host, port, tls=bool(tls), ca_file=ca_file)
    except PacsError:  # the CA file has gone since: the system's CAs verify, and the error will say if they fail
        return WebNode(url) if url else RemoteNode(ae_title, host, port, tls=bool(tls))


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Outbox:
    """Objects waiting for a PACS, on disk; thread-safe (a worker delivers while the UI lists)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else data_dir() / "outbox"
        self.files = self.root / "files"
        self.files.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._delivery = threading.Lock()
        self._connection = sqlite3.connect(self.root / INDEX_NAME, check_same_thread=False, isolation_level=None)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=FULL")
        self._connection.execute(
            "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, file TEXT NOT NULL, name TEXT NOT NULL, "
            "description TEXT NOT NULL, ae_title TEXT NOT NULL, host TEXT NOT NULL, port INTEGER NOT NULL, "
            "status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_try REAL NOT NULL DEFAULT 0, "
            "message TEXT NOT NULL DEFAULT '', added TEXT NOT NULL, sent TEXT NOT NULL DEFAULT '', "
            "study_uid TEXT NOT NULL DEFAULT '', patient_id TEXT NOT NULL DEFAULT '', "
            "url TEXT NOT NULL DEFAULT '', ca_file TEXT NOT NULL DEFAULT '', tls INTEGER NOT NULL DEFAULT 0)"
        )
        self._remove_unindexed_copies()

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def _remove_unindexed_copies(self) -> None:
        """Copies a crash left between copying and indexing: never announced, so removed."""
        with self._lock:
            known = {row[0] for row in self._connection.execute("SELECT file FROM items")}
        for path in self.files.iterdir():
            if path.name not in known:
                log.info("outbox: removing %s, copied but never queued (interrupted add)", path.name)
                path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ adding

    def add(
        self,
        paths: Sequence[Path],
        node: RemoteNode | WebNode,
        description: str,
        *,
        study_uid: str = "",
        patient_id: str = "",
    ) -> list[int]:
        """Copy ``paths`` into the outbox for ``node``; their ids.  Copies are durable before they are queued.

        Raises:
            ExportError: a file cannot be read or the outbox cannot be written (nothing is queued).
        """
        copies = []
        try:
            for path in paths:
                target = self.files / f"{uuid.uuid4().hex}.dcm"
                temporary = target.with_suffix(".part")
                shutil.copyfile(path, temporary)
                with open(temporary, "rb+") as handle:
                    os.fsync(handle.fileno())
                os.replace(temporary, target)
                copies.append((Path(path), target))
            fsync_folder(self.files)
        except OSError as error:
            for _source, target in copies:
                target.unlink(missing_ok=True)
            raise ExportError(
                f"cannot put it in the outbox ({error.strerror or error})", path=error.filename
            ) from error
        added = _now_iso()
        if isinstance(node, RemoteNode):
            where: tuple[str, str, int, str, str, int] = (
                node.ae_title,
                node.host,
                node.port,
                "",
                node.ca_file,
                int(node.tls),
            )
        else:
            where = ("", "", 0, node.url, node.ca_file, 0)
        with self._lock, self._connection:
            self._connection.execute("BEGIN")
            ids = [
                self._connection.execute(
                    "INSERT INTO items (file, name, description, ae_title, host, port, url, ca_file, tls, status, "
                    "added, study_uid, patient_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (target.name, source.name, description, *where, WAITING, added, study_uid, patient_id),
                ).lastrowid
                or 0
                for source, target in copies
            ]
        return ids

    # ------------------------------------------------------------------ listing

    def items(self) -> list[OutboxItem]:
        """Every object, newest first."""
        with self._lock:
            rows = self._connection.execute(
                "SELECT id, description, name, ae_title, host, port, url, ca_file, tls, status, attempts, "
                "next_try, message, added, sent, file FROM items ORDER BY id DESC"
            ).fetchall()
        return [
            OutboxItem(
                id=row[0],
                description=row[1],
                file_name=row[2],
                node=_node(*row[3:9]),
                status=row[9],
                attempts=row[10],
                next_try=row[11],
                message=row[12],
                added=row[13],
                sent=row[14],
                path=self.files / row[15],
            )
            for row in rows
        ]

    def waiting(self) -> list[OutboxItem]:
        return [item for item in self.items() if item.status == WAITING]

    def next_due(self) -> float | None:
        """When the next waiting object is due (time.time()), or None when nothing waits to be tried by itself."""
        with self._lock:
            (due,) = self._connection.execute(
                "SELECT MIN(next_try) FROM items WHERE status = ? AND next_try < ?", (WAITING, NEVER)
            ).fetchone()
        return due

    # ------------------------------------------------------------------ the user's controls

    def retry_now(self, ids: Sequence[int] | None = None) -> None:
        """Make waiting objects (all, or ``ids``) due now."""
        with self._lock, self._connection:
            if ids is None:
                self._connection.execute("UPDATE items SET next_try = 0 WHERE status = ?", (WAITING,))
            else:
                self._connection.executemany(
                    "UPDATE items SET next_try = 0 WHERE id = ? AND status = ?", [(i, WAITING) for i in ids]
                )

    def remove(self, ids: Sequence[int]) -> None:
        """Take objects out of the outbox (a waiting one is then never sent)."""
        with self._lock, self._connection:
            for item_id in ids:
                row = self._connection.execute("SELECT file FROM items WHERE id = ?", (item_id,)).fetchone()
                if row is not None:
                    (self.files / row[0]).unlink(missing_ok=True)
                    self._connection.execute("DELETE FROM items WHERE id = ?", (item_id,))

    # ------------------------------------------------------------------ delivery

    def deliver(
        self,
        our_ae_title: str,
        *,
        now: float | None = None,
        send: Sender = send_files,
        progress: ProgressCallback | None = None,
        cancelled: CancelCheck | None = None,
    ) -> Delivery:
        """Send every waiting object that is due, one association per destination, and record each outcome."""
        with self._delivery:  # one delivery at a time: a send and the timer's retry must not send an object twice
            return self._deliver(our_ae_title, time.time() if now is None else now, send, progress, cancelled)

    def _deliver(
        self,
        our_ae_title: str,
        moment: float,
        send: Sender,
        progress: ProgressCallback | None,
        cancelled: CancelCheck | None,
    ) -> Delivery:
        due = [item for item in self.waiting() if item.next_try <= moment]
        by_node: dict[RemoteNode | WebNode, list[OutboxItem]] = {}
        for item in reversed(due):  # oldest first
            by_node.setdefault(item.node, []).append(item)
        stored, failed, messages = 0, 0, []
        for node, items in by_node.items():
            paths = [item.path for item in items]
            try:
                if isinstance(node, RemoteNode):
                    outcomes = send(node, our_ae_title, paths, progress=progress, cancelled=cancelled)
                else:
                    outcomes = store_files(node, paths, progress=progress, cancelled=cancelled)
            except Cancelled:
                raise  # nothing recorded: what was not confirmed stays due (a PACS keeps one copy of a resend)
            except MedviewError as error:  # no association: every object waits, with the reason
                outcomes = [SendOutcome(item.path, "", False, str(error)) for item in items]
            except Exception as error:
                log.exception("outbox: sending to %s failed", node)
                reason = f"{node}: {type(error).__name__}: {error}"
                outcomes = [SendOutcome(item.path, "", False, reason) for item in items]
            for item, outcome in zip(items, outcomes, strict=True):
                self._record(item, outcome, moment, str(node))
                stored += outcome.stored
                failed += not outcome.stored
                if not outcome.stored:
                    messages.append(outcome.message)
            self._audit(node, items, outcomes)
        return Delivery(stored, failed, tuple(messages))

    def _record(self, item: OutboxItem, outcome: SendOutcome, moment: float, node: str) -> None:
        # the row names its PACS already: "PACS X@host:port: connection refused" is kept as "connection refused"
        message = outcome.message.removeprefix(f"{node}: ").removeprefix(f"{node} ")
        with self._lock, self._connection:
            if outcome.stored:
                self._connection.execute(
                    "UPDATE items SET status = ?, sent = ?, message = ?, attempts = attempts + 1 WHERE id = ?",
                    (SENT, _now_iso(), message, item.id),
                )
                item.path.unlink(missing_ok=True)
            else:
                attempts = item.attempts + 1
                next_try = moment + retry_delay(attempts) if attempts < MAX_ATTEMPTS else NEVER
                self._connection.execute(
                    "UPDATE items SET attempts = ?, next_try = ?, message = ? WHERE id = ? AND status = ?",
                    (attempts, next_try, message, item.id, WAITING),
                )

    def _audit(self, node: RemoteNode | WebNode, items: list[OutboxItem], outcomes: list[SendOutcome]) -> None:
        with self._lock:
            rows = self._connection.execute(
                f"SELECT DISTINCT study_uid, patient_id FROM items WHERE id IN ({','.join('?' * len(items))})",
                [item.id for item in items],
            ).fetchall()
        refused = [outcome for outcome in outcomes if not outcome.stored]
        description = "; ".join(dict.fromkeys(outcome.message for outcome in refused))
        for study_uid, patient_id in rows:
            audit_log().record_export(
                f"{len(outcomes)} DICOM object(s): {', '.join(dict.fromkeys(item.description for item in items))}",
                str(node),
                anonymised=False,
                file_format="DICOM C-STORE" if isinstance(node, RemoteNode) else "DICOMweb STOW-RS",
                study_uid=study_uid or None,
                patient_id=patient_id or None,
                outcome=Outcome.SUCCESS if not refused else Outcome.MINOR_FAILURE,
                outcome_description=description,
            )
