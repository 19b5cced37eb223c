"""DICOMweb, the other way PACS speak: QIDO-RS search, WADO-RS retrieve, STOW-RS store (dicomweb-client).

The same results as the DIMSE client: ``RemoteStudy`` / ``RemoteSeries`` from a
search, a ``RetrieveResult`` whose instances are filed in the ``LocalStudyStore``
(byte for byte as the server sends them, as the receiver does), and a
``SendOutcome`` per file from a store.  HTTPS is verified against the system's
certificate authorities, or against the hospital's own CA file where the node
names one.  Every failure names the node and says what happened in words.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from urllib.parse import urlsplit

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from medview.audit import Outcome, audit_log
from medview.errors import Cancelled, MedviewError
from medview.pacs.query import (
    MAX_RESULTS,
    RemoteSeries,
    RemoteStudy,
    RetrieveResult,
    series_from_answer,
    study_from_answer,
    study_keys,
)
from medview.pacs.receiver import PacsError
from medview.pacs.send import SendOutcome
from medview.pacs.store import LocalStudyStore, safe_file_name
from medview.progress import CancelCheck, ProgressCallback

log = logging.getLogger(__name__)

#: seconds to connect and between two reads of one answer
TIMEOUT_S = (5.0, 120.0)
#: files per STOW-RS request
STORE_BATCH = 20
STUDY_FIELDS = ("StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")


@dataclass(frozen=True)
class WebNode:
    """A DICOMweb server: its base URL (``http(s)://host:port/dicom-web``) and, for HTTPS, the CA file to trust.

    Raises:
        PacsError: not an http or https URL with a host.
    """

    url: str
    ca_file: str = ""  # "" = the system's certificate authorities

    def __post_init__(self) -> None:
        url = self.url.strip().rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PacsError(f"DICOMweb: {self.url!r} is not a URL such as http://pacs.hospital:8042/dicom-web")
        if self.ca_file and not Path(self.ca_file).is_file():
            raise PacsError(f"DICOMweb: the CA file {self.ca_file} does not exist")
        object.__setattr__(self, "url", url)

    def __str__(self) -> str:
        return f"DICOMweb {self.url}"

    def error(self, problem: str) -> PacsError:
        return PacsError(f"{self}: {problem}")


@contextmanager
def _client(node: WebNode) -> Iterator[object]:
    """A dicomweb-client on a session that verifies HTTPS as the node says; HTTP and network errors become
    ``PacsError`` naming the node."""
    import requests
    from dicomweb_client.api import DICOMwebClient

    session = requests.Session()
    session.verify = node.ca_file or True
    session.trust_env = False  # no proxy from the environment: the PACS is on the hospital network
    # no redirects: a query string carries the patient's name and ID, and a login page or another host must not
    # receive them (requests would follow a redirect anywhere)
    session.max_redirects = 0
    try:
        yield DICOMwebClient(node.url, session=session, timeout=TIMEOUT_S)
    except requests.exceptions.SSLError as error:
        raise node.error(f"the server's certificate is not trusted ({_reason(error)})") from error
    except requests.exceptions.ConnectionError as error:
        raise node.error(f"cannot connect ({_reason(error)}): check the URL, and that the server runs") from error
    except requests.exceptions.Timeout as error:
        raise node.error("no answer in time") from error
    except requests.exceptions.TooManyRedirects as error:
        raise node.error("the server redirects elsewhere: give the DICOMweb URL it redirects to") from error
    except requests.exceptions.HTTPError as error:
        raise node.error(_refusal(error)) from error
    except (requests.exceptions.RequestException, ValueError) as error:  # a broken or unreadable answer
        raise node.error(f"gave an answer that cannot be read ({type(error).__name__}: {_reason(error)})") from error
    except OSError as error:
        if "CA certificate bundle" not in str(error):  # a disk error of the caller's, say: not the server's doing
            raise
        raise node.error(f"the CA file {node.ca_file} cannot be used ({error})") from error
    finally:
        session.close()


def _refusal(error: Exception) -> str:
    """An HTTP error answer in words: its status code and the first line of its body."""
    response = getattr(error, "response", None)
    code = response.status_code if response is not None else "?"
    lines = (response.text or "").strip().splitlines() if response is not None else []
    text = lines[0][:200] if lines else ""
    return f"refused the request (HTTP {code}{': ' + text if text else ''})"


def _reason(error: Exception) -> str:
    text = str(error)
    for marker in ("Connection refused", "Name or service not known", "certificate verify failed", "timed out"):
        if marker in text:
            return marker.lower()
    return text.splitlines()[0][:200] if text else type(error).__name__


def find_studies(
    node: WebNode,
    *,
    patient_name: str = "",
    patient_id: str = "",
    study_date: str = "",
    modality: str = "",
    accession: str = "",
    limit: int = MAX_RESULTS,
) -> list[RemoteStudy]:
    """The studies matching every non-empty key (QIDO-RS), newest first; the keys as for the DIMSE search."""
    filters = study_keys(patient_name, patient_id, study_date, modality, accession)
    with _client(node) as client:
        answers = client.search_for_studies(  # type: ignore[attr-defined]
            search_filters={key: value for key, value in filters.items() if value},
            fields=list(STUDY_FIELDS),
            limit=limit,
        )
    studies = [study_from_answer(Dataset.from_json(answer)) for answer in answers]
    return sorted(studies, key=lambda study: (study.study_date, study.study_time), reverse=True)


def find_series(node: WebNode, study_uid: str) -> list[RemoteSeries]:
    """The series of one study (QIDO-RS), by series number."""
    with _client(node) as client:
        answers = client.search_for_series(study_instance_uid=study_uid)  # type: ignore[attr-defined]
    series = [series_from_answer(Dataset.from_json(answer), study_uid) for answer in answers]
    return sorted(series, key=lambda one: (one.series_number is None, one.series_number or 0, one.series_uid))


def retrieve_study(
    node: WebNode,
    study_uid: str,
    store: LocalStudyStore,
    *,
    progress: ProgressCallback | None = None,
    cancelled: CancelCheck | None = None,
) -> RetrieveResult:
    """Fetch every instance of a study (WADO-RS, as the server keeps it) and file it in ``store``.

    What was stored stays stored when an error or a cancel ends it; one audit record ("Import") per call.

    Raises:
        PacsError: the server cannot be reached, refuses, or has no such study.
        Cancelled: ``cancelled()`` turned true.
    """
    stored, refused = [], []
    outcome, description = Outcome.SUCCESS, ""
    try:
        with _client(node) as client:
            # "*": the transfer syntax the server keeps, so nothing is transcoded on the way
            media = (("application/dicom", "*"),)
            for number, dataset in enumerate(client.iter_study(study_uid, media_types=media), start=1):  # type: ignore[attr-defined]
                if cancelled is not None and cancelled():
                    raise Cancelled()
                try:
                    stored.append(store.store_bytes(_file_bytes(dataset), calling_ae=str(node)))
                except MedviewError as error:
                    refused.append(str(error))
                if progress is not None:
                    progress(number, 0, f"retrieving from {node}")
        if not stored and not refused:
            raise node.error(f"has no instances of study {study_uid}")
    except Exception as error:  # every way it ends early is in the audit record, then goes on up
        outcome = Outcome.MINOR_FAILURE if isinstance(error, Cancelled) else Outcome.SERIOUS_FAILURE
        description = "cancelled by the user" if isinstance(error, Cancelled) else str(error)
        raise
    finally:
        audit_log().record_received(
            calling_ae=str(node),
            peer_address=node.url,
            study_uid=study_uid,
            sop_count=len(stored),
            patient_id=stored[0].patient_id or None if stored else None,
            folder=stored[0].path.parent.parent if stored else store.root / safe_file_name(study_uid),
            outcome=outcome if not refused or outcome != Outcome.SUCCESS else Outcome.MINOR_FAILURE,
            outcome_description=description or "; ".join(refused[:3]),
        )
    return RetrieveResult(
        node=node,
        study_uid=study_uid,
        instances=tuple(stored),
        expected=len(stored) + len(refused),
        refused=tuple(refused),
    )


def _file_bytes(dataset: Dataset) -> bytes:
    """A DICOM file of ``dataset`` as the server sent it (its file meta, its transfer syntax)."""
    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def store_files(
    node: WebNode,
    paths: Sequence[Path],
    *,
    progress: ProgressCallback | None = None,
    cancelled: CancelCheck | None = None,
) -> list[SendOutcome]:
    """STOW-RS ``paths`` in batches; one ``SendOutcome`` per path, in order, from the server's answer.

    Raises:
        PacsError: the server cannot be reached or refuses a whole request.
        Cancelled: ``cancelled()`` turned true; batches stored before it are stored.
    """
    outcomes: dict[Path, SendOutcome] = {}
    readable: list[tuple[Path, Dataset]] = []
    for path in map(Path, paths):
        try:
            readable.append((path, pydicom.dcmread(path)))
        except (OSError, InvalidDicomError, AttributeError) as error:
            outcomes[path] = SendOutcome(path, "", False, f"{path.name}: not a readable DICOM file ({error})")
    import requests

    with _client(node) as client:
        for start in range(0, len(readable), STORE_BATCH):
            if cancelled is not None and cancelled():
                raise Cancelled()
            batch = readable[start : start + STORE_BATCH]
            if progress is not None:
                progress(start, len(readable), f"storing on {node}")
            try:
                answer = client.store_instances([dataset for _path, dataset in batch])  # type: ignore[attr-defined]
            except requests.exceptions.HTTPError as error:  # e.g. 409: this batch refused, the others go on
                refused = f"{node} {_refusal(error)}"
                outcomes.update((path, SendOutcome(path, str(ds.SOPInstanceUID), False, refused)) for path, ds in batch)
                continue
            outcomes.update(_store_outcomes(node, batch, answer))
    if progress is not None:
        progress(len(readable), len(readable), f"stored on {node}")
    return [outcomes[Path(path)] for path in paths]


def _store_outcomes(node: WebNode, batch: list[tuple[Path, Dataset]], answer: Dataset) -> dict[Path, SendOutcome]:
    """Each file's outcome from a STOW-RS response (PS3.18 Store Instances Response Module)."""
    if "ReferencedSOPSequence" not in answer and "FailedSOPSequence" not in answer:
        # a success status (the client raises for the others) whose body it could not read, e.g. JSON declared
        # with a charset: PS3.18 says a 200 stored them all
        return {path: SendOutcome(path, str(dataset.SOPInstanceUID), True) for path, dataset in batch}
    stored = {str(item.ReferencedSOPInstanceUID) for item in answer.get("ReferencedSOPSequence", [])}
    failed = {
        str(item.ReferencedSOPInstanceUID): int(item.get("FailureReason") or 0)
        for item in answer.get("FailedSOPSequence", [])
    }
    outcomes = {}
    for path, dataset in batch:
        uid = str(dataset.SOPInstanceUID)
        if uid in stored:
            outcomes[path] = SendOutcome(path, uid, True)
        elif uid in failed:
            outcomes[path] = SendOutcome(path, uid, False, f"{node} refused it (failure reason 0x{failed[uid]:04X})")
        else:
            outcomes[path] = SendOutcome(path, uid, False, f"{node} did not say whether it stored it")
    return outcomes
