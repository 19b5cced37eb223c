"""Sending results to the PACS from the window: the outbox's worker, and the dialog that shows each object.

``PacsOutbox`` puts files in the on-disk outbox (``medview.pacs.outbox``) and
delivers them off the GUI thread: at once after a send, then whenever a
waiting object is due (checked every ``CHECK_MS``), also after a restart.
The destination is the PACS of *Query/retrieve* (its AE title, host and port
in ``Settings``).  ``OutboxDialog`` lists every object with its state in
words (sent, or waiting with the next try and the PACS's reason) and lets the
user retry now or remove one.  pynetdicom and the outbox's index load with the
first send or check, on a worker, never at start-up.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medview.config import Settings
from medview.errors import MedviewError
from medview.progress import CancelCheck
from medview.ui.qt import QtCore, QtWidgets
from medview.ui.workers import Task

if TYPE_CHECKING:
    from medview.pacs.dicomweb import WebNode
    from medview.pacs.outbox import Outbox
    from medview.pacs.query import RemoteNode

log = logging.getLogger(__name__)

#: how often waiting objects are checked for being due
CHECK_MS = 30_000
#: the first check after start-up, once the window is up
FIRST_CHECK_MS = 5_000
#: the outbox's index file (``medview.pacs.outbox.INDEX_NAME``, named here so that start-up need not import it)
OUTBOX_INDEX = "outbox.sqlite3"

#: makes the files to send into the folder it is given (a temporary one), checking ``cancelled`` between them
FileMaker = Callable[[Path, CancelCheck], list[Path]]


def remote_node(settings: Settings) -> RemoteNode | WebNode:
    """The PACS results go to (the one *Query/retrieve* uses, by DIMSE or DICOMweb as chosen there), or
    ``PacsError`` saying what to set."""
    from medview.pacs.dicomweb import WebNode
    from medview.pacs.query import RemoteNode

    if settings.pacs_remote_retrieve == "DICOMweb":
        return WebNode(settings.pacs_remote_url, settings.pacs_remote_ca_file)
    if not settings.pacs_remote_host or not settings.pacs_remote_ae_title:
        from medview.pacs.receiver import PacsError

        raise PacsError(
            "no PACS is set up to send to: enter its AE title, host and port in File > Query/retrieve from PACS"
        )
    ca_file = settings.pacs_remote_ca_file if settings.pacs_remote_tls else ""
    return RemoteNode(
        settings.pacs_remote_ae_title,
        settings.pacs_remote_host,
        settings.pacs_remote_port,
        tls=settings.pacs_remote_tls,
        ca_file=ca_file,
    )


class PacsOutbox(QtCore.QObject):
    """The window's outbox: sends in the background, retries what is due, tells the status bar."""

    #: one line on what the last send or retry did
    status_changed = QtCore.Signal(str)
    #: the outbox's contents changed (for an open dialog)
    changed = QtCore.Signal()

    def __init__(
        self,
        settings: Settings,
        start_task: Callable[[Task, str], Task],
        parent: QtCore.QObject | None = None,
        root: Path | None = None,
    ) -> None:
        super().__init__(parent)
        self.settings = settings
        self.start_task = start_task  # the window's: progress and Cancel in the status bar
        self.root = root
        self._outbox: Outbox | None = None
        self._opening = threading.Lock()
        self._delivering: Task | None = None
        self.timer = QtCore.QTimer(self, interval=CHECK_MS)
        self.timer.timeout.connect(self.deliver_due)

    def start(self) -> None:
        """Check for objects left waiting (a restart), then every ``CHECK_MS``."""
        QtCore.QTimer.singleShot(FIRST_CHECK_MS, self, self.deliver_due)  # not after the window has gone
        self.timer.start()

    def outbox(self) -> Outbox:
        """The on-disk outbox, opened on first use (call from a worker: it imports pynetdicom)."""
        with self._opening:  # two workers at once must not open two: the second would remove the first's copies
            if self._outbox is None:
                from medview.pacs.outbox import Outbox

                self._outbox = Outbox(self.root)
            return self._outbox

    def _index_exists(self) -> bool:
        from medview.config import data_dir

        root = self.root if self.root is not None else data_dir() / "outbox"
        return (root / OUTBOX_INDEX).is_file()

    def close(self) -> None:
        self.timer.stop()
        if self._outbox is not None:
            self._outbox.close()

    # ------------------------------------------------------------------ sending

    def send(self, make_files: FileMaker, description: str, *, study_uid: str = "", patient_id: str = "") -> Task:
        """Make the files, put them in the outbox for the configured PACS and send them, in the background.

        The task fails with a message (nothing queued) when no PACS is set up or the files cannot be made.
        """
        settings = self.settings

        def work(progress: Any, cancelled: CancelCheck, _partial: object) -> str:
            import tempfile

            node = remote_node(settings)
            outbox = self.outbox()
            with tempfile.TemporaryDirectory(prefix="medview-send-") as folder:
                progress(0, 0, f"writing {description}")
                files = make_files(Path(folder), cancelled)
                outbox.add(files, node, description, study_uid=study_uid, patient_id=patient_id)
            return outbox.deliver(settings.pacs_ae_title, progress=progress, cancelled=cancelled).summary

        return self._start(Task(work, f"Sending {description} to the PACS"), f"Sending {description} to the PACS…")

    def deliver_due(self) -> Task | None:
        """Send what is waiting and due, unless a delivery is already running or nothing was ever put in the
        outbox (then no worker starts: most sessions never send)."""
        if self._delivering is not None and not self._delivering.done.is_set():
            return None
        if self._outbox is None and not self._index_exists():
            return None
        settings = self.settings

        def work(progress: Any, cancelled: CancelCheck, _partial: object) -> str:
            outbox = self.outbox()
            due = outbox.next_due()
            if due is None or due > time.time():
                return ""
            return outbox.deliver(settings.pacs_ae_title, progress=progress, cancelled=cancelled).summary

        return self._start(Task(work, "Sending waiting results to the PACS", background=True), "")

    def _start(self, task: Task, message: str) -> Task:
        self._delivering = task
        task.signals.succeeded.connect(self._on_delivered)
        task.signals.finished.connect(self.changed.emit)
        return self.start_task(task, message)

    def _on_delivered(self, summary: str) -> None:
        if summary:
            self.status_changed.emit(f"PACS: {summary}")

    # ------------------------------------------------------------------ the dialog's controls (GUI thread)

    def items(self) -> list[Any]:
        return self.outbox().items()

    def retry_now(self, ids: list[int]) -> Task | None:
        self.outbox().retry_now(ids)
        return self.deliver_due()

    def remove(self, ids: list[int]) -> None:
        self.outbox().remove(ids)
        self.changed.emit()


class OutboxDialog(QtWidgets.QDialog):
    """Every object sent or waiting, with its state; Retry now and Remove for the selected ones."""

    COLUMNS = ("Object", "File", "PACS", "Added", "State", "Last answer")

    def __init__(self, outbox: PacsOutbox, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("outbox_dialog")
        self.setWindowTitle("Outbox: results sent to the PACS")
        self.resize(1200, 420)
        self.outbox = outbox
        self.table = QtWidgets.QTableWidget(0, len(self.COLUMNS))
        self.table.setObjectName("outbox_table")
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(len(self.COLUMNS) - 1, QtWidgets.QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.summary = QtWidgets.QLabel()
        self.summary.setWordWrap(True)
        self.retry_button = QtWidgets.QPushButton("Retry now")
        self.remove_button = QtWidgets.QPushButton("Remove from the outbox")
        self.remove_button.setToolTip("A waiting object that is removed is never sent")
        close = QtWidgets.QPushButton("Close")
        buttons = QtWidgets.QHBoxLayout()
        for button in (self.retry_button, self.remove_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(close)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addWidget(self.table, stretch=1)
        layout.addLayout(buttons)
        self.retry_button.clicked.connect(lambda: self.outbox.retry_now(self.selected_ids()))
        self.remove_button.clicked.connect(self._remove)
        close.clicked.connect(self.accept)
        outbox.changed.connect(self.refresh)
        self.refresh()

    def selected_ids(self) -> list[int]:
        rows = sorted({index.row() for index in self.table.selectionModel().selectedRows()})
        cells = [self.table.item(row, 0) for row in rows]
        return [int(cell.data(QtCore.Qt.ItemDataRole.UserRole)) for cell in cells if cell is not None]

    def _remove(self) -> None:
        ids = self.selected_ids()
        if ids:
            self.outbox.remove(ids)

    def refresh(self) -> None:
        try:
            items = self.outbox.items()
        except (MedviewError, sqlite3.Error) as error:
            self.summary.setText(f"The outbox cannot be read: {error}")
            return
        waiting = sum(item.status != "sent" for item in items)
        self.summary.setText(
            f"{len(items)} object(s): {len(items) - waiting} sent, {waiting} waiting. Waiting objects are tried "
            "again by themselves (from 30 s up to every hour), also after MedView restarts."
            if items
            else "Nothing has been sent yet: use Export > For the PACS > Send to the PACS on a finding."
        )
        self.table.setRowCount(len(items))
        for row, item in enumerate(items):
            node = (
                item.node.url
                if hasattr(item.node, "url")
                else f"{item.node.ae_title}@{item.node.host}:{item.node.port}"
            )
            added = item.added[:19].replace("T", " ")
            values = (item.description, item.file_name, node, added, item.state, item.message)
            for column, value in enumerate(values):
                cell = QtWidgets.QTableWidgetItem(value)
                cell.setToolTip(value)
                if column == 0:
                    cell.setData(QtCore.Qt.ItemDataRole.UserRole, item.id)
                self.table.setItem(row, column, cell)
