"""Retrieving a study with C-MOVE: the PACS sends it to this workstation's own DICOM receiver.

Many PACS allow only C-MOVE.  Unlike C-GET, the images do not come back on the
association MedView opened: the PACS opens its own association to the
destination AE title it has configured for us (host and port on its side), so
MedView's receiver must be running and the PACS must know where it listens.
The receiver files (and audits) every instance as for any push; this module
asks for the move, follows the PACS's counts, and reports what arrived.
"""

from __future__ import annotations

import logging

from pydicom.dataset import Dataset
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove  # type: ignore[attr-defined]
from pynetdicom.status import QR_MOVE_SERVICE_CLASS_STATUS, code_to_category
from pynetdicom.status import STATUS_FAILURE as CATEGORY_FAILURE
from pynetdicom.status import STATUS_PENDING as CATEGORY_PENDING

from medview.errors import Cancelled
from medview.pacs.query import (
    DEFAULT_TIMEOUTS,
    DEFAULT_TRANSFER_SYNTAXES,
    RemoteNode,
    RetrieveResult,
    Timeouts,
    association,
    status_text,
)
from medview.pacs.store import LocalStudyStore, utc_now
from medview.progress import CancelCheck, ProgressCallback

log = logging.getLogger(__name__)

#: "Move destination unknown" (PS3.4 C.4.2.1.5): the PACS does not know the AE title we asked it to send to
DESTINATION_UNKNOWN = 0xA801


def _count(status: Dataset, keyword: str) -> int:
    value = status.get(keyword)
    return int(value) if value is not None else 0


def move_study(
    node: RemoteNode,
    our_ae_title: str,
    study_uid: str,
    store: LocalStudyStore,
    *,
    destination: str | None = None,
    progress: ProgressCallback | None = None,
    cancelled: CancelCheck | None = None,
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
) -> RetrieveResult:
    """Ask ``node`` to C-MOVE a study to ``destination`` (this workstation's AE title by default), whose receiver
    files it in ``store``; what the study then holds in ``store``, with the PACS's count of failures.

    Raises:
        PacsError: the PACS cannot be reached, does not know the destination (with what to do), refuses, or
            moves nothing.
        Cancelled: ``cancelled()`` turned true (the association is aborted; what arrived stays).
    """
    target = destination or our_ae_title
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    contexts = [(StudyRootQueryRetrieveInformationModelMove, tuple(DEFAULT_TRANSFER_SYNTAXES))]
    began = utc_now()
    completed = failed = warned = 0
    final, comment = 0x0000, ""
    with association(node, our_ae_title, contexts, cancelled=cancelled, timeouts=timeouts) as (assoc, _watch):
        for status, _identifier in assoc.send_c_move(query, target, StudyRootQueryRetrieveInformationModelMove):
            if cancelled is not None and cancelled():
                raise Cancelled()
            code = status.get("Status")
            if code is None:
                raise node.error("the move stopped: no answer within the DIMSE timeout, or the PACS aborted")
            completed = _count(status, "NumberOfCompletedSuboperations") or completed
            failed = _count(status, "NumberOfFailedSuboperations") or failed
            warned = _count(status, "NumberOfWarningSuboperations") or warned
            remaining = _count(status, "NumberOfRemainingSuboperations")
            if code_to_category(code) == CATEGORY_PENDING:
                if progress is not None:
                    progress(completed + failed + warned, completed + failed + warned + remaining, "moving")
                continue
            final, comment = code, str(status.get("ErrorComment", "") or "").strip()
            break
    add_us = (
        "ask its administrator to add this workstation (AE title, host, receiver port) to the PACS's list of "
        "DICOM nodes"
    )
    if final == DESTINATION_UNKNOWN:
        raise node.error(f"does not know the move destination {target}: {add_us}")
    if code_to_category(final) == CATEGORY_FAILURE and not completed:
        reason = status_text(final, QR_MOVE_SERVICE_CLASS_STATUS) + (f": {comment}" if comment else "")
        raise node.error(
            f"refused the move of study {study_uid} ({reason}). Some PACS answer so when they do not know the "
            f"move destination {target}: if so, {add_us}"
        )
    # what this move brought: received since it began (a study fetched before is in the store already)
    instances = tuple(instance for instance in store.study_instances(study_uid) if instance.received_at >= began)
    if not instances:
        raise node.error(
            f"reported the move of study {study_uid} done, but nothing arrived at {target}: is this "
            "workstation's receiver running, and does the PACS have its right host and port?"
        )
    log.info("%s: C-MOVE of %s to %s: %d completed, %d failed", node, study_uid, target, completed, failed)
    expected = completed + failed + warned
    return RetrieveResult(node=node, study_uid=study_uid, instances=instances, expected=expected, missing=failed)
