"""The DICOM receiver: a C-STORE (and C-ECHO) SCP a PACS or a modality pushes studies to.

Built on pynetdicom.  Every storage SOP class is accepted in every transfer
syntax pynetdicom knows (JPEG 2000, JPEG lossless, JPEG-LS, RLE, deflated, ...),
so a compressed series is stored as it was sent: the received bytes go to the
``LocalStudyStore`` untouched, never decoded and re-encoded.  An instance the
store refuses (no Study/Series/SOP Instance UID) is answered with a failure
status and its reason, so the sender keeps it and can report it.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset

from medview.audit import audit_log
from medview.errors import DicomError, MedviewError
from medview.pacs.store import LocalStudyStore, StoredInstance

if TYPE_CHECKING:  # pynetdicom itself loads when the receiver starts or files an instance, not with the window
    from pynetdicom import AE
    from pynetdicom.events import Event
    from pynetdicom.transport import ThreadedAssociationServer

log = logging.getLogger(__name__)

DEFAULT_BIND_ADDRESS = "0.0.0.0"  # every interface: the PACS is on another machine
MAX_AE_TITLE_LENGTH = 16
#: C-STORE statuses (DICOM PS3.4 B.2.3)
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000
#: (0000,0902) Error Comment is an LO: at most 64 characters
MAX_ERROR_COMMENT = 64
#: how long ``stop`` waits for each association thread after aborting it
ASSOCIATION_JOIN_TIMEOUT_S = 10.0

StoredCallback = Callable[[StoredInstance], None]


class PacsError(MedviewError):
    """The DICOM receiver cannot start as configured: an invalid AE title, a port in use or not allowed."""


def validate_ae_title(title: str) -> str:
    """The AE title without padding spaces, or ``PacsError`` saying what is wrong with it.

    DICOM allows 1 to 16 characters of the default repertoire (printable ASCII)
    except the backslash; leading and trailing spaces are not significant.
    """
    stripped = title.strip(" ")
    if not stripped:
        raise PacsError("the AE title is empty: give 1 to 16 characters, for example MEDVIEW")
    if len(stripped) > MAX_AE_TITLE_LENGTH:
        raise PacsError(f"the AE title {stripped!r} has {len(stripped)} characters: at most {MAX_AE_TITLE_LENGTH}")
    bad = sorted({c for c in stripped if c == "\\" or not (" " <= c <= "~")})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise PacsError(
            f"the AE title {stripped!r} contains {shown}: only letters, digits, spaces and ASCII punctuation "
            "other than the backslash are allowed"
        )
    return stripped


def validate_port(port: int) -> int:
    """A TCP port number 1-65535 (0 asks the system for any free port), or ``PacsError``."""
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise PacsError(f"the port must be a number from 1 to 65535, got {port!r}")
    return port


def _listen_error(error: OSError, address: str, port: int) -> PacsError:
    """The user's words for a failed bind."""
    if error.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", None)):
        return PacsError(f"port {port} is already in use by another program: choose another port in the PACS settings")
    if error.errno in (errno.EACCES, getattr(errno, "WSAEACCES", None)):
        return PacsError(
            f"port {port} needs administrator rights on this system (ports below 1024): choose a port from 1024 up"
        )
    if error.errno in (errno.EADDRNOTAVAIL, getattr(errno, "WSAEADDRNOTAVAIL", None)):
        return PacsError(f"address {address} is not an address of this machine: cannot listen on port {port}")
    return PacsError(f"cannot listen on {address} port {port}: {error.strerror or error}")


def store_status(code: int, comment: str) -> Dataset:
    """A C-STORE response status with its ErrorComment (cut to what the field holds)."""
    status = Dataset()
    status.Status = code
    status.ErrorComment = comment[:MAX_ERROR_COMMENT]
    return status


def store_received_instance(store: LocalStudyStore, event: Event, calling_ae: str) -> StoredInstance:
    """File what a C-STORE request carried: the dataset bytes exactly as sent, behind a file meta header naming
    their transfer syntax (and the sender, so a rebuilt index knows it again).

    Raises:
        DicomError: the dataset is not one the store can index.
        OSError: the store cannot be written.
    """
    from pynetdicom.dsutils import encode_file_meta

    meta = event.file_meta
    if calling_ae:
        meta.SourceApplicationEntityTitle = calling_ae
    encoded = b"\x00" * 128 + b"DICM" + encode_file_meta(meta) + event.encoded_dataset(include_meta=False)
    return store.store_bytes(encoded, calling_ae=calling_ae)


def refusal_reason(error: DicomError) -> str:
    """The problem of a refused instance, for the sender's ErrorComment (the store's temporary path left out)."""
    return str(error).removeprefix(f"{error.path}: ") if error.path is not None else str(error)


class StorageServer:
    """A C-STORE/C-ECHO SCP that files what it receives into a ``LocalStudyStore``.

    ``on_stored`` is called on pynetdicom's association thread after each
    instance is safely on disk and indexed; a UI must hand it to its own thread.
    """

    def __init__(self, bind_address: str = DEFAULT_BIND_ADDRESS) -> None:
        self.bind_address = bind_address
        self._lock = threading.Lock()
        self._ae: AE | None = None
        self._server: ThreadedAssociationServer | None = None
        self._store: LocalStudyStore | None = None
        self._on_stored: StoredCallback | None = None
        self.ae_title = ""
        #: instances stored per open association, by study: written to the audit log when it ends
        self._received: dict[int, dict[str, list[StoredInstance]]] = {}
        self._received_lock = threading.Lock()  # not ``_lock``: stop() holds that while associations end

    @property
    def is_running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int | None:
        """The port listened on (the one the system chose when started with port 0), None when stopped."""
        server = self._server
        return int(server.server_address[1]) if server is not None else None

    def start(self, ae_title: str, port: int, store: LocalStudyStore, on_stored: StoredCallback | None = None) -> None:
        """Listen for associations to ``ae_title`` on ``port``; raises ``PacsError`` if that cannot be done."""
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        title = validate_ae_title(ae_title)
        validate_port(port)
        with self._lock:
            if self._server is not None:
                raise PacsError(f"the DICOM receiver is already running as {self.ae_title} on port {self.port}")
            ae = AE(ae_title=title)
            for context in AllStoragePresentationContexts:
                ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)  # type: ignore[arg-type]  # never None here
            ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
            handlers = [
                (evt.EVT_C_STORE, self._on_c_store),
                (evt.EVT_C_ECHO, self._on_c_echo),
                (evt.EVT_RELEASED, self._on_association_end),
                (evt.EVT_ABORTED, self._on_association_end),
            ]
            self._store, self._on_stored = store, on_stored
            try:
                # pynetdicom's evt constants are typed as plain tuples, its parameter as its event classes
                server = ae.start_server((self.bind_address, port), block=False, evt_handlers=handlers)  # type: ignore[arg-type]
            except OSError as error:
                self._store = self._on_stored = None
                raise _listen_error(error, self.bind_address, port) from error
            self._ae, self._server, self.ae_title = ae, server, title
        log.info("DICOM receiver %s listening on %s:%s", title, self.bind_address, self.port)

    def stop(self) -> None:
        """Abort open associations, close the port and wait for pynetdicom's threads; safe to call twice."""
        with self._lock:
            ae, server = self._ae, self._server
            self._ae = self._server = None
            if ae is None or server is None:
                return
            associations = list(ae.active_associations)
            # stops accepting, ends serve_forever (its thread returns), closes the socket
            ae.shutdown()
            for association in associations:
                association.join(ASSOCIATION_JOIN_TIMEOUT_S)
                if association.is_alive():
                    log.warning("DICOM association thread %s did not end in time", association.name)
            self._store = self._on_stored = None
        log.info("DICOM receiver stopped")

    # ------------------------------------------------------------------ handlers (pynetdicom's threads)

    def _on_c_echo(self, _event: Event) -> int:
        return STATUS_SUCCESS

    def _on_c_store(self, event: Event) -> int | Dataset:
        store, on_stored = self._store, self._on_stored
        calling_ae = str(event.assoc.requestor.ae_title).strip()
        if store is None:
            return store_status(STATUS_OUT_OF_RESOURCES, "receiver is stopping")
        try:
            stored = store_received_instance(store, event, calling_ae)
        except DicomError as error:
            log.warning("refused an instance from %s: %s", calling_ae, error)
            return store_status(STATUS_CANNOT_UNDERSTAND, refusal_reason(error))
        except OSError as error:
            log.error("could not store an instance from %s: %s", calling_ae, error)
            return store_status(STATUS_OUT_OF_RESOURCES, f"cannot write: {error.strerror or error}")
        with self._received_lock:
            self._received.setdefault(id(event.assoc), {}).setdefault(stored.study_uid, []).append(stored)
        if on_stored is not None:
            try:
                on_stored(stored)
            except Exception:  # the instance is safely stored: a listener's bug must not fail the send
                log.exception("on_stored listener failed for %s", stored.path)
        return STATUS_SUCCESS

    def _on_association_end(self, event: Event) -> None:
        """One audit record ("Import") per study an association brought, once the sender has finished."""
        with self._received_lock:
            received = self._received.pop(id(event.assoc), {})
        requestor = event.assoc.requestor
        for study_uid, instances in received.items():
            audit_log().record_received(
                calling_ae=str(requestor.ae_title).strip(),
                peer_address=f"{requestor.address}:{requestor.port}",
                study_uid=study_uid,
                sop_count=len(instances),
                patient_id=instances[0].patient_id or None,
                folder=instances[0].path.parent.parent,
            )
