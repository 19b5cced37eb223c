"""Query/Retrieve against a PACS: find studies and series (C-FIND), fetch a study (C-GET) into the local store.

Retrieval uses C-GET, not C-MOVE: the PACS sends the instances back on the
association this workstation opened, so it needs no route back to us and no
entry for our address, only (on most PACS) our AE title.  For C-GET the
requestor proposes a presentation context, with the SCP role, for each storage
class it will take (at most 128 contexts in all), each offering every transfer
syntax pynetdicom knows, uncompressed first; the instances are filed byte for
byte into the ``LocalStudyStore`` the receiver uses.

A PACS that cannot convert between transfer syntaxes (dcmtk's dcmqrscp) sends
each instance in the one syntax it accepted for its class, and fails the
instances stored otherwise; those are fetched by another pass that leaves out
the syntaxes already accepted (``MAX_GET_PASSES``).

Every failure raises ``PacsError`` naming the node ("PACS ORTHANC@10.0.0.5:4242:
association rejected (called AE title not recognised)").  Timeouts bound every
wait; cancelling aborts the association at once, also while the PACS is silent.
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    DEFAULT_TRANSFER_SYNTAXES,
    StoragePresentationContexts,
    build_role,
    evt,
)
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.pdu import A_ASSOCIATE_RJ
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)
from pynetdicom.status import (
    QR_FIND_SERVICE_CLASS_STATUS,
    QR_GET_SERVICE_CLASS_STATUS,
    STATUS_FAILURE,
    STATUS_PENDING,
    STATUS_SUCCESS,
    STATUS_WARNING,
    code_to_category,
)

from medview.audit import Outcome, audit_log
from medview.errors import Cancelled, DicomError
from medview.pacs.receiver import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_OUT_OF_RESOURCES,
    PacsError,
    refusal_reason,
    store_received_instance,
    store_status,
    validate_ae_title,
    validate_port,
)
from medview.pacs.store import LocalStudyStore, StoredInstance, safe_file_name
from medview.progress import CancelCheck, ProgressCallback

if TYPE_CHECKING:
    from medview.pacs.dicomweb import WebNode

log = logging.getLogger(__name__)

StoredCallback = Callable[[StoredInstance], None]
#: a presentation context to propose: abstract syntax and transfer syntaxes
ContextSpec = tuple[str, tuple[str, ...]]

#: DICOM PS3.8 9.3.2.2: presentation context IDs are the odd numbers 1-255
MAX_PRESENTATION_CONTEXTS = 128
#: passes of C-GET over one study, each leaving out the transfer syntaxes the PACS accepted before
MAX_GET_PASSES = 3
#: studies a search returns at most; beyond that the user should narrow it
MAX_RESULTS = 500
#: how often a running operation looks at the cancel flag
CANCEL_POLL_S = 0.1
#: (0000,0902) Error Comment is an LO
MAX_ERROR_COMMENT = 64
#: value lengths of the matching keys' VRs (PS3.5 6.2): PN component group, LO, SH, CS
MAX_PN, MAX_LO, MAX_SH, MAX_CS = 64, 64, 16, 16
_HOST = re.compile(r"[A-Za-z0-9._:\-\[\]%]+")  # a host name, an IPv4 or an IPv6 address
_MODALITY = re.compile(r"[A-Z0-9_ ]+")
_DATE = re.compile(r"(\d{8})?(-)?(\d{8})?")

#: transfer syntaxes offered for every storage class: uncompressed first (every PACS can send them, and a
#: transcoding one need not compress), then every other one pynetdicom knows, so that a PACS that cannot convert
#: can send its files as it keeps them; "JPIP referenced" syntaxes carry a link instead of the pixel data
OFFERED_TRANSFER_SYNTAXES: tuple[str, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    *(
        syntax
        for syntax in ALL_TRANSFER_SYNTAXES
        if syntax not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian) and "JPIP" not in UID(syntax).name
    ),
)
#: storage classes asked for when the PACS does not say which ones a study holds: pynetdicom's "most commonly used"
DEFAULT_STORAGE_CLASSES: tuple[str, ...] = tuple(
    dict.fromkeys(str(context.abstract_syntax) for context in StoragePresentationContexts)
)


@dataclass(frozen=True)
class Timeouts:
    """How long each wait may last, in seconds, so that a dead or silent PACS never hangs the caller."""

    connect_s: float = 5.0  # TCP connection
    acse_s: float = 15.0  # association accepted or rejected, released
    dimse_s: float = 60.0  # between two messages of one operation: a PACS may fetch from a slow archive first
    network_s: float = 120.0  # no traffic at all


DEFAULT_TIMEOUTS = Timeouts()


@dataclass(frozen=True)
class RemoteNode:
    """A PACS (any Query/Retrieve SCP) as its administrator describes it; validated on creation.

    With ``tls`` the association runs over TLS, the PACS's certificate verified
    against ``ca_file`` (the hospital's CA) or the system's certificate authorities.

    Raises:
        PacsError: an invalid AE title, an empty or malformed host, a port outside 1-65535, a CA file that
            does not exist.
    """

    ae_title: str
    host: str
    port: int
    tls: bool = False
    ca_file: str = ""

    def __post_init__(self) -> None:
        try:
            title = validate_ae_title(self.ae_title)
        except PacsError as error:
            raise PacsError(f"PACS: {error}") from error
        host = self.host.strip() if isinstance(self.host, str) else ""
        if not host:
            raise PacsError("PACS: the host is empty: give its name or IP address, for example 10.0.0.5")
        if not _HOST.fullmatch(host) or len(host) > 253:
            raise PacsError(f"PACS: the host {host!r} is not a host name or an IP address")
        port = validate_port(self.port)
        if port == 0:
            raise PacsError("PACS: the port must be a number from 1 to 65535, got 0")
        if self.ca_file and not Path(self.ca_file).is_file():
            raise PacsError(f"PACS: the CA file {self.ca_file} does not exist")
        object.__setattr__(self, "ae_title", title)
        object.__setattr__(self, "host", host.strip("[]"))  # "[::1]" as URLs write IPv6: the bare address

    def __str__(self) -> str:
        return f"PACS {self.ae_title}@{self.host}:{self.port}" + (" (TLS)" if self.tls else "")

    def tls_context(self) -> ssl.SSLContext | None:
        """The client side of TLS: the PACS's certificate and host name verified (None without TLS)."""
        if not self.tls:
            return None
        try:
            return ssl.create_default_context(cafile=self.ca_file or None)
        except (ssl.SSLError, OSError) as error:
            raise self.error(f"the CA file {self.ca_file} cannot be read as certificates ({error})") from error

    def error(self, problem: str) -> PacsError:
        """A ``PacsError`` whose message names this node."""
        return PacsError(f"{self}: {problem}")


@dataclass(frozen=True)
class RemoteStudy:
    """One study as a PACS describes it in a C-FIND answer; fields the PACS left out are "" / () / None."""

    study_uid: str
    patient_name: str
    patient_id: str
    patient_birth_date: str
    study_date: str
    study_time: str
    study_description: str
    accession_number: str
    modalities: tuple[str, ...]
    series_count: int | None
    instance_count: int | None
    sop_classes: tuple[str, ...]  # (0008,0062), where the PACS reports it: the retrieve then asks for just these


@dataclass(frozen=True)
class RemoteSeries:
    """One series of a study on a PACS."""

    study_uid: str
    series_uid: str
    series_number: int | None
    modality: str
    series_description: str
    body_part: str
    instance_count: int | None


@dataclass(frozen=True)
class RetrieveResult:
    """What a C-GET of one study brought into the store.

    ``missing`` counts the instances the PACS announced but could not send,
    ``refused`` names those the store would not file (no UIDs, ...) with the reason.
    """

    node: RemoteNode | WebNode
    study_uid: str
    instances: tuple[StoredInstance, ...]
    expected: int  # instances the PACS said the study has (0: it did not say)
    missing: int = 0
    refused: tuple[str, ...] = ()
    passes: int = 1

    @property
    def paths(self) -> list[Path]:
        return [instance.path for instance in self.instances]

    @property
    def complete(self) -> bool:
        return not self.missing and not self.refused


# --------------------------------------------------------------------------- matching keys


def _matching_text(label: str, value: str, max_length: int) -> str:
    """A matching key's value without padding; ``PacsError`` for what DICOM cannot carry."""
    text = value.strip() if isinstance(value, str) else ""
    if "\\" in text:
        raise PacsError(f"{label} {text!r} contains a backslash, which DICOM uses between values: remove it")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise PacsError(f"{label} {text!r} contains control characters")
    if len(text) > max_length:
        raise PacsError(f"{label} {text!r} has {len(text)} characters: at most {max_length}")
    return text


def _date_range(value: str) -> str:
    """A DA matching value: YYYYMMDD, or a range YYYYMMDD-YYYYMMDD with either end left open."""
    text = value.strip().replace(" ", "") if isinstance(value, str) else ""
    match = _DATE.fullmatch(text)
    if text and (match is None or text == "-" or (match.group(1) and match.group(3) and not match.group(2))):
        match = None
    if text and match is None:
        raise PacsError(
            f"study date {text!r}: expected YYYYMMDD, or a range YYYYMMDD-YYYYMMDD (either end may be left out)"
        )
    for day in (match.group(1), match.group(3)) if match else ():
        if day:
            try:
                datetime.strptime(day, "%Y%m%d")
            except ValueError:
                raise PacsError(f"study date {text!r}: {day} is not a date (YYYYMMDD)") from None
    return text


def _uid(value: str, label: str) -> str:
    """A UID to match exactly: no wildcards (an empty or "*" value would match every study)."""
    text = _matching_text(label, value, MAX_LO).strip("\x00")
    if not text or "*" in text or "?" in text:
        raise PacsError(f"{label} {text!r}: expected one UID, for example 1.2.840.113619.2.55.3")
    return text


def _needs_unicode(query: Dataset) -> bool:
    return any(isinstance(element.value, str) and not element.value.isascii() for element in query)


# --------------------------------------------------------------------------- answers


def _value(dataset: Dataset, keyword: str) -> str:
    """An answer's value as stripped text, "" when absent or unreadable (a PACS's damaged value must not stop
    the listing)."""
    try:
        value = dataset.get(keyword, "")
    except Exception:  # noqa: BLE001 - pydicom converts lazily and raises many types for damaged values
        return ""
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(item).strip() for item in value)
    return str(value).strip().strip("\x00").strip()


def _values(dataset: Dataset, keyword: str) -> tuple[str, ...]:
    return tuple(item for item in (part.strip() for part in _value(dataset, keyword).split("\\")) if item)


def _number(dataset: Dataset, keyword: str) -> int | None:
    try:
        return int(_value(dataset, keyword))
    except ValueError:
        return None


def study_from_answer(answer: Dataset) -> RemoteStudy:
    return RemoteStudy(
        study_uid=_value(answer, "StudyInstanceUID"),
        patient_name=_value(answer, "PatientName"),
        patient_id=_value(answer, "PatientID"),
        patient_birth_date=_value(answer, "PatientBirthDate"),
        study_date=_value(answer, "StudyDate"),
        study_time=_value(answer, "StudyTime"),
        study_description=_value(answer, "StudyDescription"),
        accession_number=_value(answer, "AccessionNumber"),
        modalities=_values(answer, "ModalitiesInStudy"),
        series_count=_number(answer, "NumberOfStudyRelatedSeries"),
        instance_count=_number(answer, "NumberOfStudyRelatedInstances"),
        sop_classes=_values(answer, "SOPClassesInStudy"),
    )


def series_from_answer(answer: Dataset, study_uid: str) -> RemoteSeries:
    return RemoteSeries(
        study_uid=_value(answer, "StudyInstanceUID") or study_uid,
        series_uid=_value(answer, "SeriesInstanceUID"),
        series_number=_number(answer, "SeriesNumber"),
        modality=_value(answer, "Modality"),
        series_description=_value(answer, "SeriesDescription"),
        body_part=_value(answer, "BodyPartExamined"),
        instance_count=_number(answer, "NumberOfSeriesRelatedInstances"),
    )


def status_text(code: int, table: dict[int, tuple[str, str]]) -> str:
    """A response status in words, e.g. "unable to process (status 0xC001)"."""
    description = table.get(code, ("", ""))[1] or code_to_category(code)
    return f"{description.lower()} (status 0x{code:04X})"


# --------------------------------------------------------------------------- associations


def _abort(assoc: Association) -> None:
    """Abort ``assoc`` and wake a ``send_c_*`` waiting on it.

    pynetdicom wakes a waiting operation only when the *peer* aborts; after our
    own abort it would wait out the DIMSE timeout, so the wake-up is queued here.
    """
    assoc.abort()
    assoc.dimse.msg_queue.put((None, None))


class _CancelWatch:
    """Aborts the association as soon as ``cancelled()`` turns true, also while waiting for a silent PACS."""

    def __init__(self, assoc: Association, cancelled: CancelCheck | None) -> None:
        self.fired = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if cancelled is not None:
            self._thread = threading.Thread(
                target=self._watch, args=(assoc, cancelled), name="medview-pacs-cancel", daemon=True
            )
            self._thread.start()

    def _watch(self, assoc: Association, cancelled: CancelCheck) -> None:
        while not self._stop.wait(CANCEL_POLL_S):
            if cancelled():
                self.fired = True
                _abort(assoc)
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


@dataclass
class _Attempt:
    """What was seen of an association request: the TCP connection, and an A-ASSOCIATE-RJ.

    The rejection is taken from the PDU as it arrives: when the PACS closes the
    connection right after rejecting (dcmqrscp does), pynetdicom may see the
    closed socket first and report an abort instead of the rejection.
    """

    connected: bool = False
    rejection: A_ASSOCIATE_RJ | None = None

    def on_connected(self, _event: Event) -> None:
        self.connected = True

    def on_pdu(self, event: Event) -> None:
        if isinstance(event.pdu, A_ASSOCIATE_RJ):
            self.rejection = event.pdu


def _not_associated(
    node: RemoteNode, assoc: Association, our_title: str, attempt: _Attempt, elapsed_s: float, timeouts: Timeouts
) -> PacsError:
    """The user's words for an association that did not come about."""
    rejection = attempt.rejection
    if rejection is not None:
        try:
            reason = rejection.reason_str
        except ValueError:  # a diagnostic the standard does not define
            reason = ""
        reason = reason[0].lower() + reason[1:] if reason and reason[0] != "(" else "no reason given"
        hint = ""
        if rejection.source == 1 and rejection.reason_diagnostic == 7:
            hint = ": check the PACS's AE title"
        elif rejection.source == 1 and rejection.reason_diagnostic == 3:
            hint = f": the PACS does not know this workstation's AE title {our_title}; ask its administrator to add it"
        elif rejection.result == 0x02:
            hint = ": the PACS is busy, try again later"
        return node.error(f"association rejected ({reason}){hint}")
    if not attempt.connected:
        if elapsed_s < timeouts.connect_s * 0.9:
            return node.error("connection refused: nothing listens on that port there (is the PACS running?)")
        return node.error(
            f"no answer within {timeouts.connect_s:g} s: check the host and port, and that no firewall blocks them"
        )
    answer = assoc.acceptor.primitive
    if answer is not None and answer.result == 0x00:
        return node.error("accepted the association but none of the services asked for")
    hint = "" if node.tls else " (does the PACS expect TLS on this port?)"
    return node.error(f"no answer to the association request within {timeouts.acse_s:g} s, or it was aborted{hint}")


@contextmanager
def association(
    node: RemoteNode,
    our_ae_title: str,
    contexts: Sequence[ContextSpec],
    *,
    roles: Sequence[object] = (),
    handlers: Sequence[tuple[object, Callable[..., object]]] = (),
    cancelled: CancelCheck | None = None,
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
) -> Iterator[tuple[Association, _CancelWatch]]:
    """An established association with ``node``: released when the block ends, aborted if it raises."""
    title = validate_ae_title(our_ae_title)
    if cancelled is not None and cancelled():
        raise Cancelled()
    ae = AE(ae_title=title)
    ae.connection_timeout = timeouts.connect_s
    ae.acse_timeout = timeouts.acse_s
    ae.dimse_timeout = timeouts.dimse_s
    ae.network_timeout = timeouts.network_s
    for abstract_syntax, transfer_syntaxes in contexts:
        ae.add_requested_context(abstract_syntax, list(transfer_syntaxes))
    attempt = _Attempt()
    all_handlers = [*handlers, (evt.EVT_CONN_OPEN, attempt.on_connected), (evt.EVT_PDU_RECV, attempt.on_pdu)]
    started = time.monotonic()
    context = node.tls_context()
    if context is not None:
        _check_tls(node, context, timeouts)
    try:
        assoc = ae.associate(  # as in receiver.py: pynetdicom's stubs do not match its own evt constants
            node.host,
            node.port,
            ae_title=node.ae_title,
            ext_neg=list(roles) or None,  # type: ignore[arg-type]
            evt_handlers=all_handlers,  # type: ignore[arg-type]
            tls_args=(context, node.host) if context is not None else None,
        )
    except OSError as error:  # the host name cannot be resolved
        raise node.error(f"cannot find the host ({error.strerror or error})") from error
    if not assoc.is_established:
        raise _not_associated(node, assoc, title, attempt, time.monotonic() - started, timeouts)
    watch = _CancelWatch(assoc, cancelled)
    try:
        yield assoc, watch
    except BaseException:
        watch.stop()
        _abort(assoc)
        raise
    watch.stop()
    if watch.fired:
        raise Cancelled()
    if assoc.is_established:
        assoc.release()


def _check_tls(node: RemoteNode, context: ssl.SSLContext, timeouts: Timeouts) -> None:
    """A TLS handshake with the PACS before associating, so that a certificate it cannot trust or a PACS
    without TLS is named as such (pynetdicom reports either as a connection that failed)."""
    try:
        connection = socket.create_connection((node.host, node.port), timeout=timeouts.connect_s)
    except OSError:
        return  # no connection at all: the association attempt says why, as without TLS
    try:
        with context.wrap_socket(connection, server_hostname=node.host):
            pass
    except ssl.SSLCertVerificationError as error:
        raise node.error(
            f"its TLS certificate is not trusted ({error.verify_message}): give the hospital's CA file"
        ) from error
    except (ssl.SSLError, OSError) as error:
        raise node.error(f"the TLS handshake failed ({error}): does the PACS use TLS on this port?") from error
    finally:
        connection.close()


def _accepted(assoc: Association, abstract_syntax: str) -> bool:
    return any(context.abstract_syntax == abstract_syntax for context in assoc.accepted_contexts)


# --------------------------------------------------------------------------- C-FIND


def _find(
    assoc: Association, node: RemoteNode, query: Dataset, cancelled: CancelCheck | None, limit: int, what: str
) -> list[Dataset]:
    """The identifiers a C-FIND answers with (at most ``limit``; the operation is aborted beyond that)."""
    if _needs_unicode(query):
        query.SpecificCharacterSet = "ISO_IR 192"
    answers: list[Dataset] = []
    for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
        if cancelled is not None and cancelled():
            raise Cancelled()
        code = status.get("Status")
        if code is None:
            raise node.error(f"the {what} stopped: no answer within the DIMSE timeout, or the PACS aborted")
        category = code_to_category(code)
        if category == STATUS_PENDING:
            if identifier is not None:
                answers.append(identifier)
            if len(answers) >= limit:
                log.info("%s: more than %d answers to the %s; the rest are not read", node, limit, what)
                _abort(assoc)  # a C-CANCEL would also do, but the PACS may keep sending meanwhile
                break
        elif category == STATUS_SUCCESS:
            break
        else:
            raise node.error(f"refused the {what}: {status_text(code, QR_FIND_SERVICE_CLASS_STATUS)}")
    return answers


def _find_context() -> list[ContextSpec]:
    return [(StudyRootQueryRetrieveInformationModelFind, tuple(DEFAULT_TRANSFER_SYNTAXES))]


def _series_query(study_uid: str) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID = study_uid
    query.SeriesInstanceUID = ""
    query.SeriesNumber = ""
    query.Modality = ""
    query.SeriesDescription = ""
    query.BodyPartExamined = ""
    query.NumberOfSeriesRelatedInstances = ""
    return query


def study_keys(patient_name: str, patient_id: str, study_date: str, modality: str, accession: str) -> dict[str, str]:
    """The search keys as DICOM carries them (the same for C-FIND and QIDO-RS), by keyword; "" = any.

    Raises:
        PacsError: a key DICOM cannot carry (too long, a character it has not, not a modality code, a bad date).
    """
    wanted_modality = _matching_text("modality", modality, MAX_CS).upper()
    if wanted_modality and not _MODALITY.fullmatch(wanted_modality):
        raise PacsError(f"modality {modality!r}: expected a DICOM modality code such as CT, MR or US")
    return {
        "PatientName": _matching_text("patient name", patient_name, MAX_PN),
        "PatientID": _matching_text("patient ID", patient_id, MAX_LO),
        "StudyDate": _date_range(study_date),
        "AccessionNumber": _matching_text("accession number", accession, MAX_SH),
        "ModalitiesInStudy": wanted_modality,
    }


def find_studies(
    node: RemoteNode,
    our_ae_title: str,
    *,
    patient_name: str = "",
    patient_id: str = "",
    study_date: str = "",
    modality: str = "",
    accession: str = "",
    cancelled: CancelCheck | None = None,
    limit: int = MAX_RESULTS,
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
) -> list[RemoteStudy]:
    """The studies on ``node`` matching every non-empty key (Study Root C-FIND at STUDY level), newest first.

    Names and IDs may use DICOM's wildcards (``*`` any run, ``?`` one character);
    ``study_date`` is YYYYMMDD or a range YYYYMMDD-YYYYMMDD with either end open.
    A PACS that ignores or does not report Modalities in Study is asked series
    by series, so ``modality`` filters with every PACS.  At most ``limit``
    studies are returned.

    Raises:
        PacsError: a key DICOM cannot carry, or the PACS cannot be reached, rejects or refuses.
        Cancelled: ``cancelled()`` turned true.
    """
    keys = study_keys(patient_name, patient_id, study_date, modality, accession)
    wanted_modality = keys["ModalitiesInStudy"]
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    query.PatientBirthDate = ""
    query.StudyTime = ""
    query.StudyDescription = ""
    query.NumberOfStudyRelatedSeries = ""
    query.NumberOfStudyRelatedInstances = ""
    query.SOPClassesInStudy = ""
    query.StudyInstanceUID = ""
    with association(node, our_ae_title, _find_context(), cancelled=cancelled, timeouts=timeouts) as (assoc, _w):
        studies = [study_from_answer(answer) for answer in _find(assoc, node, query, cancelled, limit, "search")]
        studies = [study for study in studies if study.study_uid]
        if wanted_modality:
            studies = _with_modality(assoc, node, studies, wanted_modality, cancelled)
    studies.sort(key=lambda s: (s.study_date, s.study_time), reverse=True)
    return studies


def _with_modality(
    assoc: Association, node: RemoteNode, studies: list[RemoteStudy], modality: str, cancelled: CancelCheck | None
) -> list[RemoteStudy]:
    """The studies holding a series of ``modality``; those the PACS gave no modalities for are asked series by
    series (matching on Modalities in Study is optional for a PACS)."""
    kept = []
    for study in studies:
        modalities = study.modalities
        if not modalities and assoc.is_established:
            answers = _find(assoc, node, _series_query(study.study_uid), cancelled, MAX_RESULTS, "series search")
            modalities = tuple(dict.fromkeys(filter(None, (_value(answer, "Modality") for answer in answers))))
            study = replace(study, modalities=modalities)
        if modality in modalities:
            kept.append(study)
    return kept


def find_series(
    node: RemoteNode,
    our_ae_title: str,
    study_uid: str,
    *,
    cancelled: CancelCheck | None = None,
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
) -> list[RemoteSeries]:
    """The series of one study on ``node`` (C-FIND at SERIES level), by series number.

    Raises:
        PacsError: an invalid study UID, or the PACS cannot be reached, rejects or refuses.
        Cancelled: ``cancelled()`` turned true.
    """
    uid = _uid(study_uid, "study instance UID")
    with association(node, our_ae_title, _find_context(), cancelled=cancelled, timeouts=timeouts) as (assoc, _w):
        answers = _find(assoc, node, _series_query(uid), cancelled, MAX_RESULTS, "series search")
    series = [series_from_answer(answer, uid) for answer in answers if _value(answer, "SeriesInstanceUID")]
    series.sort(key=lambda s: (s.series_number is None, s.series_number or 0, s.series_uid))
    return series


# --------------------------------------------------------------------------- C-GET


def storage_contexts(sop_classes: Sequence[str] = (), excluded: dict[str, set[str]] | None = None) -> list[ContextSpec]:
    """The storage contexts a C-GET proposes: one per class (``sop_classes``, or the common ones when none are
    known), each with every offered transfer syntax but the ``excluded`` ones of its class; at most 127, so the
    C-GET context fits too."""
    excluded = excluded or {}
    classes = list(dict.fromkeys(sop_classes)) or list(DEFAULT_STORAGE_CLASSES)
    contexts = []
    for sop_class in classes[: MAX_PRESENTATION_CONTEXTS - 1]:
        syntaxes = [syntax for syntax in OFFERED_TRANSFER_SYNTAXES if syntax not in excluded.get(sop_class, set())]
        if syntaxes:
            contexts.append((sop_class, tuple(syntaxes)))
    return contexts


@dataclass
class _Retrieval:
    """The state of one study's retrieval, shared by its passes; its handler runs on the retrieving thread."""

    node: RemoteNode
    store: LocalStudyStore
    progress: ProgressCallback | None
    cancelled: CancelCheck | None
    on_stored: StoredCallback | None
    stored: dict[str, StoredInstance] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    expected: int = 0
    write_error: OSError | None = None

    def report(self) -> None:
        if self.progress is not None:
            # total 0 (unknown) until the PACS has said how many instances there are
            total = max(self.expected, len(self.stored)) if self.expected else 0
            self.progress(len(self.stored), total, "retrieving images")

    def on_c_store(self, event: Event) -> int | Dataset:
        """File one instance the PACS sent, exactly as the receiver files a pushed one."""
        if (self.cancelled is not None and self.cancelled()) or self.write_error is not None:
            return store_status(STATUS_OUT_OF_RESOURCES, "retrieve stopped")
        sop_uid = str(event.request.AffectedSOPInstanceUID or "").strip()  # type: ignore[union-attr]  # a C-STORE
        if sop_uid in self.stored:
            return 0x0000  # sent again by a later pass: already on disk
        try:
            stored = store_received_instance(self.store, event, self.node.ae_title)
        except DicomError as error:
            reason = refusal_reason(error)
            log.warning("%s: refused instance %s: %s", self.node, sop_uid, reason)
            self.refused[sop_uid] = reason
            return store_status(STATUS_CANNOT_UNDERSTAND, reason)
        except OSError as error:
            log.error("%s: cannot store instance %s: %s", self.node, sop_uid, error)
            self.write_error = error
            return store_status(STATUS_OUT_OF_RESOURCES, f"cannot write: {error.strerror or error}")
        self.stored[stored.sop_instance_uid] = stored
        self.report()
        if self.on_stored is not None:
            try:
                self.on_stored(stored)
            except Exception:  # the instance is safely stored: a listener's bug must not fail the retrieve
                log.exception("on_stored listener failed for %s", stored.path)
        return 0x0000

    @property
    def missing(self) -> int:
        return max(0, self.expected - len(self.stored) - len(self.refused))


def _suboperations(status: Dataset) -> int:
    """All sub-operations a C-GET response accounts for (remaining + completed + failed + warning)."""
    keywords = (
        "NumberOfRemainingSuboperations",
        "NumberOfCompletedSuboperations",
        "NumberOfFailedSuboperations",
        "NumberOfWarningSuboperations",
    )
    return sum(int(status.get(keyword) or 0) for keyword in keywords)


def _get_pass(
    node: RemoteNode,
    our_ae_title: str,
    query: Dataset,
    contexts: list[ContextSpec],
    state: _Retrieval,
    timeouts: Timeouts,
) -> tuple[int, dict[str, str]]:
    """One C-GET of the study: its final status and the transfer syntax accepted for each storage class."""
    get_context = (StudyRootQueryRetrieveInformationModelGet, tuple(DEFAULT_TRANSFER_SYNTAXES))
    roles = [build_role(sop_class, scp_role=True) for sop_class, _syntaxes in contexts]
    handlers = [(evt.EVT_C_STORE, state.on_c_store)]
    with association(
        node,
        our_ae_title,
        [get_context, *contexts],
        roles=roles,
        handlers=handlers,
        cancelled=state.cancelled,
        timeouts=timeouts,
    ) as (assoc, watch):
        if not _accepted(assoc, StudyRootQueryRetrieveInformationModelGet):
            raise node.error(
                f"does not offer C-GET (Study Root) to {validate_ae_title(our_ae_title)}: ask its administrator"
            )
        accepted = {
            str(context.abstract_syntax): str(context.transfer_syntax[0])
            for context in assoc.accepted_contexts
            if context.abstract_syntax != StudyRootQueryRetrieveInformationModelGet and context.as_scp
        }
        if not accepted:
            raise node.error("would not send images back on the association (no storage class accepted)")
        final = None
        for status, _identifier in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
            if watch.fired or (state.cancelled is not None and state.cancelled()):
                raise Cancelled()
            if state.write_error is not None:
                error = state.write_error
                raise PacsError(f"cannot write into the study store {state.store.root}: {error.strerror or error}")
            code = status.get("Status")
            if code is None:
                raise node.error(
                    f"the retrieve stopped after {len(state.stored)} instances: no answer within "
                    f"{timeouts.dimse_s:g} s, or the PACS aborted"
                )
            state.expected = max(state.expected, _suboperations(status))
            state.report()
            if code_to_category(code) != STATUS_PENDING:
                final = code
                break
    return (final if final is not None else 0x0000), accepted


def retrieve_study(
    node: RemoteNode,
    our_ae_title: str,
    study_uid: str,
    store: LocalStudyStore,
    *,
    progress: ProgressCallback | None = None,
    cancelled: CancelCheck | None = None,
    sop_classes: Sequence[str] = (),
    on_stored: StoredCallback | None = None,
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
) -> RetrieveResult:
    """Fetch every instance of a study from ``node`` with C-GET and file it in ``store``, byte for byte.

    ``progress(done, total, what)`` counts stored instances (``total`` is 0 until
    the PACS says how many there are); ``on_stored`` is called for each
    instance once it is safely on disk (on this thread).  ``sop_classes``
    (``RemoteStudy.sop_classes``, where the PACS reports them) narrows the
    storage classes proposed.  Instances the PACS could not send are counted
    in ``RetrieveResult.missing``; what was stored stays stored, also when an
    error or a cancel ends the retrieve.  One audit record ("Import") is
    written per call.

    Raises:
        PacsError: the PACS cannot be reached, rejects, refuses, stops answering,
            or sends nothing of the study; the store cannot be written.
        Cancelled: ``cancelled()`` turned true (the association is aborted).
    """
    uid = _uid(study_uid, "study instance UID")
    state = _Retrieval(node, store, progress, cancelled, on_stored)
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = uid
    excluded: dict[str, set[str]] = {}
    classes = list(sop_classes)
    passes, final = 0, 0x0000
    try:
        while passes < MAX_GET_PASSES:
            contexts = storage_contexts(classes, excluded)
            if not contexts:
                break
            passes += 1
            final, accepted = _get_pass(node, our_ae_title, query, contexts, state, timeouts)
            log.info(
                "%s: C-GET pass %d of study %s: status 0x%04X, %d stored, %d missing",
                node,
                passes,
                uid,
                final,
                len(state.stored),
                state.missing,
            )
            if not state.missing or code_to_category(final) not in (STATUS_WARNING, STATUS_FAILURE):
                break
            # the PACS failed instances it may keep in another transfer syntax: offer the others
            for sop_class, syntax in accepted.items():
                excluded.setdefault(sop_class, set()).add(syntax)
            classes = list(accepted)
        if not state.stored:
            if state.expected == 0 and not state.refused:
                raise node.error(f"has no instances of study {uid} (deleted, or on another PACS?)")
            if state.refused:
                reason = next(iter(state.refused.values()))
                raise node.error(f"sent study {uid}, but no instance could be filed: {reason}")
            raise node.error(
                f"could not send any of the {state.expected} instances of study {uid}: "
                f"{status_text(final, QR_GET_SERVICE_CLASS_STATUS)}"
            )
    except Cancelled:
        _audit(state, uid, Outcome.MINOR_FAILURE, "cancelled by the user")
        raise
    except PacsError as error:
        _audit(state, uid, Outcome.SERIOUS_FAILURE, str(error))
        raise
    result = RetrieveResult(
        node=node,
        study_uid=uid,
        instances=tuple(state.stored.values()),
        expected=max(state.expected, len(state.stored)),
        missing=state.missing,
        refused=tuple(f"{sop}: {reason}" for sop, reason in state.refused.items()),
        passes=passes,
    )
    problems = f"{result.missing} not sent, {len(result.refused)} refused" if not result.complete else ""
    _audit(state, uid, Outcome.SUCCESS if result.complete else Outcome.MINOR_FAILURE, problems)
    return result


def _audit(state: _Retrieval, study_uid: str, outcome: Outcome, description: str) -> None:
    instances = list(state.stored.values())
    audit_log().record_received(
        calling_ae=state.node.ae_title,
        peer_address=f"{state.node.host}:{state.node.port}",
        study_uid=study_uid,
        sop_count=len(instances),
        patient_id=instances[0].patient_id or None if instances else None,
        folder=instances[0].path.parent.parent if instances else state.store.root / safe_file_name(study_uid),
        outcome=outcome,
        outcome_description=description,
    )
