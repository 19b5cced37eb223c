"""PACS receive in the window: the receiver's controller and its settings dialog.

``PacsReceiver`` owns the DICOM ``StorageServer`` and starts or stops it from
the settings.  Instances arrive on pynetdicom's threads; they are handed to the
GUI thread through a queued signal, gathered for ``BATCH_MS`` and each affected
series is re-scanned (headers only) on a worker thread, so a push of hundreds
of instances updates the study browser a few times a second without freezing
the window.
"""

from __future__ import annotations

import logging

from PySide6 import QtNetwork

from medview.config import Settings
from medview.errors import MedviewError
from medview.io.dicom import ScanResult, scan_paths
from medview.pacs.receiver import DEFAULT_BIND_ADDRESS, StorageServer, validate_ae_title
from medview.pacs.store import LocalStudyStore, StoredInstance
from medview.ui.qt import QtCore, QtWidgets
from medview.ui.workers import Task, TaskRunner

log = logging.getLogger(__name__)

#: arrivals within this time are shown together (and a series is re-scanned at most this often)
BATCH_MS = 250
STOPPED = "stopped"

SeriesKey = tuple[str, str]  # (study UID, series UID)


def receiving_status(ae_title: str, port: int) -> str:
    """The status line of a running receiver, e.g. "Receiving on MEDVIEW:11112"."""
    return f"Receiving on {ae_title}:{port}"


class PacsReceiver(QtCore.QObject):
    """Receives studies pushed by a PACS into the local study store and announces each changed series.

    Signals arrive on the GUI thread: ``series_updated(SeriesInfo)`` for every
    series that received instances (scanned again, so its image count is
    current), ``status_changed(str)`` with "Receiving on AE:port", "stopped" or
    the reason the receiver could not start.
    """

    series_updated = QtCore.Signal(object)  # SeriesInfo
    status_changed = QtCore.Signal(str)
    #: emitted on pynetdicom's threads, delivered queued on the GUI thread
    _instance_stored = QtCore.Signal(object)  # StoredInstance

    def __init__(
        self,
        settings: Settings,
        store: LocalStudyStore | None = None,
        tasks: TaskRunner | None = None,
        parent: QtCore.QObject | None = None,
        bind_address: str = DEFAULT_BIND_ADDRESS,
    ) -> None:
        super().__init__(parent)
        self.settings = settings
        self.store = store if store is not None else LocalStudyStore()
        # a pool of its own by default: scanning a long push must not hold up the user's loads
        self._own_tasks = tasks is None
        self.tasks = tasks if tasks is not None else TaskRunner(self, max_threads=1)
        self.server = StorageServer(bind_address)
        self.status = STOPPED
        self.received_count = 0
        self._pending: set[SeriesKey] = set()
        self._scanning: set[SeriesKey] = set()
        self._rescan: set[SeriesKey] = set()  # instances arrived while the series was being scanned
        self._tasks: list[Task] = []  # scans and rebuilds not finished yet
        self._rebuilding = False
        self._batch_timer = QtCore.QTimer(self, singleShot=True, interval=BATCH_MS)
        self._batch_timer.timeout.connect(self._flush)
        self._instance_stored.connect(self._on_instance_stored, QtCore.Qt.ConnectionType.QueuedConnection)

    # ------------------------------------------------------------------ running

    @property
    def is_running(self) -> bool:
        """Whether the DICOM receiver is listening now."""
        return self.server.is_running

    def apply_settings(self) -> None:
        """Start, restart or stop the receiver so that it runs as the settings say."""
        if not self.settings.pacs_enabled:
            self.stop()
            return
        title, port = self.settings.pacs_ae_title.strip(), self.settings.pacs_port
        if self.is_running and self.server.ae_title == title and port in (0, self.server.port):
            return  # already as asked (port 0: any port)
        self.stop()
        self.start()

    def start(self) -> bool:
        """Listen with the AE title and port of the settings; False (and the reason as status) if it cannot."""
        if self.is_running:
            return True
        if self.store.needs_rebuild:
            self._start_rebuild()  # receiving goes on meanwhile: the store takes both at once
        try:
            self.server.start(
                self.settings.pacs_ae_title, self.settings.pacs_port, self.store, self._instance_stored.emit
            )
        except MedviewError as error:
            log.warning("DICOM receiver not started: %s", error)
            self._set_status(str(error))
            return False
        self._set_status(receiving_status(self.server.ae_title, self.server.port or self.settings.pacs_port))
        return True

    def stop(self) -> None:
        """Stop listening (open associations are aborted; what arrived stays stored)."""
        if self.is_running:
            self.server.stop()
            self._set_status(STOPPED)

    def shutdown(self, wait_ms: int = 3000) -> None:
        """Stop the receiver and cancel its scans, for closing the window (a shared task runner is waited for by
        its owner)."""
        self.stop()
        self._batch_timer.stop()
        self._pending.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._own_tasks:
            self.tasks.pool.waitForDone(wait_ms)

    def publish_stored(self) -> None:
        """Announce every series already in the store (for listing earlier receptions at start-up).

        A lost or damaged index is rebuilt first, in the background; the series are announced after it.
        """
        if self.store.needs_rebuild:
            self._start_rebuild()
            return
        for study in self.store.studies():
            for series in self.store.series(study.study_uid):
                self._pending.add((series.study_uid, series.series_uid))
        self._flush()

    def _set_status(self, text: str) -> None:
        self.status = text
        self.status_changed.emit(text)

    def _start_rebuild(self) -> None:
        """Re-index the store in the background; its series are announced once it is done."""
        if self._rebuilding:
            return
        self._rebuilding = True

        def work(progress: object, cancelled: object, _partial: object) -> object:
            return self.store.rebuild(progress, cancelled)  # type: ignore[arg-type]

        task = Task(work, "Rebuilding the received studies index", background=True)
        task.signals.succeeded.connect(self._on_rebuilt)
        task.signals.errored.connect(lambda message, _details: log.warning("received studies index: %s", message))
        task.signals.finished.connect(lambda: setattr(self, "_rebuilding", False))
        self._run(task)

    def _on_rebuilt(self, _report: object) -> None:
        self._rebuilding = False
        if not self.store.needs_rebuild:
            self.publish_stored()

    # ------------------------------------------------------------------ arrivals (GUI thread)

    def _on_instance_stored(self, instance: StoredInstance) -> None:
        self.received_count += 1
        self._pending.add((instance.study_uid, instance.series_uid))
        if not self._batch_timer.isActive():
            # not restarted by later arrivals: during a long push the browser still updates every BATCH_MS
            self._batch_timer.start()

    def _flush(self) -> None:
        pending, self._pending = self._pending, set()
        for key in sorted(pending):
            if key in self._scanning:
                self._rescan.add(key)
            else:
                self._scan(key)

    def _scan(self, key: SeriesKey) -> None:
        study_uid, series_uid = key
        store = self.store

        def work(progress: object, cancelled: object, _partial: object) -> ScanResult:
            files = store.series_files(series_uid, study_uid)
            return scan_paths(files, progress, cancelled)  # type: ignore[arg-type]

        task = Task(work, f"Reading received series {series_uid}", background=True)
        self._scanning.add(key)
        task.signals.succeeded.connect(self._on_scanned)
        task.signals.errored.connect(lambda message, _details: log.warning("received series: %s", message))
        task.signals.finished.connect(lambda: self._on_scan_finished(key, task))
        self._run(task)

    def _run(self, task: Task) -> None:
        self._tasks.append(task)
        task.signals.finished.connect(lambda: self._tasks.remove(task) if task in self._tasks else None)
        self.tasks.start(task)

    def _on_scanned(self, result: ScanResult) -> None:
        for problem in result.problems:
            log.info("received file not listed: %s", problem)
        for series in result.series:
            self.series_updated.emit(series)

    def _on_scan_finished(self, key: SeriesKey, task: Task) -> None:
        self._scanning.discard(key)
        if key in self._rescan and not task.is_cancelled:
            self._rescan.discard(key)
            self._pending.add(key)
            if not self._batch_timer.isActive():
                self._batch_timer.start()


def local_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback, to give to the PACS administrator.

    Read from the network interfaces (QNetworkInterface): no name lookup, nothing sent.
    """
    ipv4 = QtNetwork.QAbstractSocket.NetworkLayerProtocol.IPv4Protocol
    return [
        address.toString()
        for address in QtNetwork.QNetworkInterface.allAddresses()
        if address.protocol() == ipv4 and not address.isLoopback()
    ]


class PacsSettingsDialog(QtWidgets.QDialog):
    """Enable the DICOM receiver and choose its AE title and port; shows what to tell the PACS administrator.

    On OK the values are written into ``settings`` (the caller saves them and
    calls ``PacsReceiver.apply_settings``); invalid input keeps the dialog open
    with the reason shown.
    """

    def __init__(self, settings: Settings, parent: QtWidgets.QWidget | None = None, status: str = "") -> None:
        super().__init__(parent)
        self.setObjectName("pacs_settings_dialog")
        self.setWindowTitle("PACS receive")
        self.settings = settings
        self.enabled = QtWidgets.QCheckBox("Receive studies sent to this workstation (DICOM C-STORE)")
        self.enabled.setChecked(settings.pacs_enabled)
        self.ae_title = QtWidgets.QLineEdit(settings.pacs_ae_title)
        self.ae_title.setMaxLength(16)
        self.ae_title.setToolTip("1 to 16 characters: letters, digits, spaces, punctuation except the backslash")
        self.port = QtWidgets.QSpinBox()
        self.port.setRange(1, 65535)
        self.port.setValue(settings.pacs_port if 0 < settings.pacs_port < 65536 else 11112)
        addresses = local_addresses()
        host = QtNetwork.QHostInfo.localHostName()
        self.address_label = QtWidgets.QLabel(
            f"Give the PACS administrator: host {host}"
            + (f", address {', '.join(addresses)}" if addresses else " (no network address found)")
            + ", and the AE title and port above."
        )
        self.address_label.setWordWrap(True)
        self.address_label.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status_label = QtWidgets.QLabel(f"Now: {status}" if status else "")
        self.error_label = QtWidgets.QLabel()
        self.error_label.setObjectName("pacs_settings_error")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #e05050")
        self.error_label.setVisible(False)
        self.buttons = QtWidgets.QDialogButtonBox(
            QtWidgets.QDialogButtonBox.StandardButton.Ok | QtWidgets.QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        form = QtWidgets.QFormLayout()
        form.addRow(self.enabled)
        form.addRow("AE title", self.ae_title)
        form.addRow("Port", self.port)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.address_label)
        layout.addWidget(self.status_label)
        layout.addWidget(self.error_label)
        layout.addWidget(self.buttons)
        self.ae_title.textChanged.connect(lambda _text: self.error_label.setVisible(False))

    def problem(self) -> str:
        """Why the input cannot be used, or "" when it can."""
        try:
            validate_ae_title(self.ae_title.text())
        except MedviewError as error:
            return str(error)
        return ""

    def accept(self) -> None:
        """Save the settings and apply them, unless one is invalid (then the dialog stays, saying which)."""
        problem = self.problem()
        if problem:
            self.error_label.setText(problem)
            self.error_label.setVisible(True)
            return
        self.settings.pacs_enabled = self.enabled.isChecked()
        self.settings.pacs_ae_title = validate_ae_title(self.ae_title.text())
        self.settings.pacs_port = self.port.value()
        super().accept()
