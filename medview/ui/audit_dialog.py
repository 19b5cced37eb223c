"""The audit log, read-only: who opened what, which model ran, what was exported, and whether the log is intact.

A year of use is about 100k records.  Measured on a 2-core machine with 100k
records: reading them ~5 s (JSON decoding dominates), the hash chain ~2 s,
the table's text ~2 s; so all of it runs on a worker thread and the table
fills when it is done.  The filter matches text in any column over strings
built on that thread (~0.15 s a keystroke at 100k rows): a QSortFilterProxyModel
would ask the model for every cell from Python instead.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from medview.audit import AuditEvent, AuditLog, ChainReport, EventId, Outcome, audit_log
from medview.errors import Cancelled
from medview.progress import CancelCheck
from medview.ui.qt import QtCore, QtGui, QtWidgets
from medview.ui.workers import Task, TaskRunner

COLUMNS = ("Time", "User", "Event", "Action", "Outcome", "What", "Details")
ACTION_NAMES = {"C": "create", "R": "read", "U": "update", "D": "delete", "E": "execute"}
OUTCOME_NAMES = {int(outcome): outcome.name.lower().replace("_", " ") for outcome in Outcome}
#: check for Cancel every this many records
CANCEL_EVERY = 2000
OK_COLOUR = "#7bd88f"
BAD_COLOUR = "#ff6b6b"


@dataclass(frozen=True)
class AuditContents:
    """What the worker read: table rows newest first, and the chain check."""

    rows: list[tuple[str, ...]]
    failed: list[bool]  # per row: outcome other than success
    chain: ChainReport
    #: per row, its cells in one lower-case string for the filter (built here, off the GUI thread)
    haystacks: list[str] = field(default_factory=list)


def event_row(event: AuditEvent) -> tuple[str, ...]:
    """The table's cells for one record, time in local time."""
    details = [event.outcome_description] if event.outcome_description else []
    details += [f"{key}={value}" for key, value in event.details.items()]
    details.append(f"{event.host}, pid {event.pid}, {event.app}".rstrip(", "))
    return (
        event.time.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
        event.user,
        f"{event.event} ({event.event_type})" if event.event_type else event.event,
        f"{event.action} {ACTION_NAMES.get(event.action, '')}".strip(),
        f"{event.outcome} {OUTCOME_NAMES.get(event.outcome, '')}".strip(),
        event.subject(),
        "; ".join(details),
    )


def read_contents(log: AuditLog, cancelled: CancelCheck = lambda: False) -> AuditContents:
    """Read every record and check the chain (Qt-free work for the worker thread)."""
    rows: list[tuple[str, ...]] = []
    failed: list[bool] = []
    for count, event in enumerate(log.read_events()):
        if count % CANCEL_EVERY == 0 and cancelled():
            raise Cancelled()
        rows.append(event_row(event))
        failed.append(event.outcome != Outcome.SUCCESS)
    if cancelled():
        raise Cancelled()
    chain = log.verify()
    rows.reverse()
    failed.reverse()
    return AuditContents(rows, failed, chain, haystacks(rows))


def haystacks(rows: list[tuple[str, ...]]) -> list[str]:
    """What the filter searches: each row's cells, case-folded."""
    return ["\t".join(row).casefold() for row in rows]


class AuditTableModel(QtCore.QAbstractTableModel):
    """Rows of text, filtered by a substring of any column (case-insensitive)."""

    def __init__(self, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self._all: list[tuple[str, ...]] = []
        self._failed: list[bool] = []
        self._haystacks: list[str] = []
        self._shown: list[int] = []  # indices into _all
        self._needle = ""

    def set_rows(self, rows: list[tuple[str, ...]], failed: list[bool], searchable: list[str] | None = None) -> None:
        """Replace every row (``failed`` marks the rows to show in red; ``searchable`` from ``haystacks``)."""
        self.beginResetModel()
        self._all, self._failed = rows, failed
        self._haystacks = searchable if searchable is not None else haystacks(rows)
        self._apply_filter()
        self.endResetModel()

    def set_filter(self, text: str) -> None:
        """Show only rows containing ``text`` in any column."""
        self.beginResetModel()
        self._needle = text.strip().casefold()
        self._apply_filter()
        self.endResetModel()

    def _apply_filter(self) -> None:
        if self._needle:
            self._shown = [index for index, haystack in enumerate(self._haystacks) if self._needle in haystack]
        else:
            self._shown = list(range(len(self._all)))

    def row_text(self, row: int) -> tuple[str, ...]:
        """The cells of shown row ``row``, as text (for copying and the tests)."""
        return self._all[self._shown[row]]

    def rowCount(self, parent: QtCore.QModelIndex | QtCore.QPersistentModelIndex | None = None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self._shown)

    def columnCount(self, parent: QtCore.QModelIndex | QtCore.QPersistentModelIndex | None = None) -> int:
        return 0 if parent is not None and parent.isValid() else len(COLUMNS)

    def data(self, index: QtCore.QModelIndex | QtCore.QPersistentModelIndex, role: int = 0) -> Any:
        if not index.isValid():
            return None
        row = self._shown[index.row()]
        if role in (QtCore.Qt.ItemDataRole.DisplayRole, QtCore.Qt.ItemDataRole.ToolTipRole):
            return self._all[row][index.column()]
        if role == QtCore.Qt.ItemDataRole.ForegroundRole and self._failed[row]:
            return QtGui.QColor(BAD_COLOUR)
        return None

    def headerData(self, section: int, orientation: QtCore.Qt.Orientation, role: int = 0) -> Any:
        if orientation == QtCore.Qt.Orientation.Horizontal and role == QtCore.Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None


class AuditLogDialog(QtWidgets.QDialog):
    """Read-only view of the audit log, newest first, with a filter and the hash chain's state.

    Opening it is itself recorded ("Audit Log Used", DICOM PS3.15 A.5.3.2).
    """

    loaded = QtCore.Signal()

    def __init__(self, tasks: TaskRunner, log: AuditLog | None = None, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("audit_log_dialog")
        self.setWindowTitle("Audit log")
        self.tasks = tasks
        self.log = log or audit_log()
        self.load_task: Task | None = None
        self.chain: ChainReport | None = None

        self.filter_edit = QtWidgets.QLineEdit()
        self.filter_edit.setPlaceholderText("Filter: user, patient ID, UID, file, model, event…")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.textChanged.connect(self._on_filter_changed)
        self.model = AuditTableModel(self)
        self.table = QtWidgets.QTableView()
        self.table.setModel(self.model)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setWordWrap(False)
        self.table.horizontalHeader().setStretchLastSection(True)
        # sizing columns to all of 100k rows takes seconds: to the visible ones only
        self.table.horizontalHeader().setResizeContentsPrecision(0)
        self.chain_label = QtWidgets.QLabel()
        self.chain_label.setWordWrap(True)
        self.chain_label.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.problem_label = QtWidgets.QLabel()
        self.problem_label.setWordWrap(True)
        self.problem_label.setStyleSheet(f"color: {BAD_COLOUR}")

        self.refresh_button = QtWidgets.QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        self.folder_button = QtWidgets.QPushButton("Open folder")
        self.folder_button.clicked.connect(self.open_folder)
        buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        buttons.addButton(self.refresh_button, QtWidgets.QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(self.folder_button, QtWidgets.QDialogButtonBox.ButtonRole.ActionRole)

        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(self.filter_edit)
        layout.addWidget(self.table, stretch=1)
        layout.addWidget(self.chain_label)
        layout.addWidget(self.problem_label)
        layout.addWidget(buttons)
        self.resize(1100, 600)

        self.log.record(
            EventId.AUDIT_LOG_USED,
            "R",
            objects=[{"role": "Audit log", "id_type": "URI", "id": str(self.log.folder)}],
        )
        self.refresh()

    def refresh(self) -> Task:
        """Read the log again (on a worker thread); ``loaded`` is emitted when the table shows it."""
        if self.load_task is not None and not self.load_task.done.is_set():
            return self.load_task
        log = self.log

        def work(_progress: object, cancelled: Any, _partial: object) -> AuditContents:
            return read_contents(log, cancelled)

        task = Task(work, "Reading the audit log", background=True)
        task.signals.succeeded.connect(self._on_loaded)
        task.signals.errored.connect(self._on_load_failed)
        self.refresh_button.setEnabled(False)
        self.chain_label.setText("Reading the audit log…")
        self.chain_label.setStyleSheet("")
        self.load_task = self.tasks.start(task)
        return task

    def _on_loaded(self, contents: AuditContents) -> None:
        self.model.set_rows(contents.rows, contents.failed, contents.haystacks)
        self.table.resizeColumnsToContents()
        self.chain = contents.chain
        self.chain_label.setText(contents.chain.summary())
        self.chain_label.setStyleSheet(f"color: {OK_COLOUR if contents.chain.ok else BAD_COLOUR}")
        self.problem_label.setText(self.log.problem or "")
        self.problem_label.setVisible(bool(self.log.problem))
        self.refresh_button.setEnabled(True)
        self.loaded.emit()

    def _on_load_failed(self, message: str, _details: str) -> None:
        self.chain_label.setText(f"Could not read the audit log: {message}")
        self.chain_label.setStyleSheet(f"color: {BAD_COLOUR}")
        self.refresh_button.setEnabled(True)

    def _on_filter_changed(self, text: str) -> None:
        self.model.set_filter(text)

    def open_folder(self) -> None:
        """Show the log's folder in the system's file manager."""
        with contextlib.suppress(OSError):  # a read-only place: the file manager shows what is there, or says so
            self.log.folder.mkdir(parents=True, exist_ok=True)
        QtGui.QDesktopServices.openUrl(QtCore.QUrl.fromLocalFile(str(self.log.folder)))

    def done(self, result: int) -> None:
        """Close the dialog; a read of the log still running is cancelled."""
        if self.load_task is not None:
            self.load_task.cancel()
        super().done(result)
