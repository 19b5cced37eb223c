"""Sending DICOM files to a PACS: the C-STORE SCU, one association per batch.

Each file is offered in its own transfer syntax and, for a compressed one, also
uncompressed: a PACS that does not take RLE (the maps and screenshots MedView
writes) still gets the object, decompressed by pydicom before it goes.  Every
file gets its own outcome (stored, stored with a warning, refused with the
PACS's reason, or not sent because the association failed), so the outbox can
keep what did not arrive and say why.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.status import STATUS_SUCCESS as CATEGORY_SUCCESS
from pynetdicom.status import STATUS_WARNING as CATEGORY_WARNING
from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS, code_to_category

from medview.errors import Cancelled, MedviewError
from medview.pacs.query import (
    DEFAULT_TIMEOUTS,
    MAX_PRESENTATION_CONTEXTS,
    RemoteNode,
    Timeouts,
    association,
    status_text,
)
from medview.progress import CancelCheck, ProgressCallback

log = logging.getLogger(__name__)

UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


@dataclass(frozen=True)
class SendOutcome:
    """What became of one file: ``stored`` (perhaps with a warning in ``message``), or why not."""

    path: Path
    sop_instance_uid: str
    stored: bool
    message: str = ""


@dataclass(frozen=True)
class _Header:
    path: Path
    sop_class: str
    sop_instance: str
    transfer_syntax: str
    send_dataset: bool  # the dataset and its file meta disagree on the SOP UIDs (or one lacks them)


def _header(path: Path) -> _Header | SendOutcome:
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        meta = dataset.file_meta
        # anonymisers may blank the dataset's UIDs and keep the file meta's, as the bundled sample does
        sop_class = str(dataset.get("SOPClassUID", "") or meta.get("MediaStorageSOPClassUID", ""))
        sop_instance = str(dataset.get("SOPInstanceUID", "") or meta.get("MediaStorageSOPInstanceUID", ""))
        if not sop_class or not sop_instance:
            return SendOutcome(path, "", False, f"{path.name}: no SOP Class or Instance UID: a PACS cannot store it")
        # pynetdicom sends a file by its file meta's UIDs: where those are missing or differ, send the dataset
        consistent = (str(dataset.get("SOPClassUID", "")), str(dataset.get("SOPInstanceUID", ""))) == (
            str(meta.get("MediaStorageSOPClassUID", "")),
            str(meta.get("MediaStorageSOPInstanceUID", "")),
        )
        return _Header(path, sop_class, sop_instance, str(meta.TransferSyntaxUID), not consistent)
    except (OSError, InvalidDicomError, AttributeError) as error:
        return SendOutcome(path, "", False, f"{path.name}: not a readable DICOM file ({error})")


def _contexts(headers: Sequence[_Header]) -> list[tuple[str, tuple[str, ...]]]:
    """Per SOP class, one presentation context per compressed syntax its files have, and one uncompressed.

    Separate contexts, because an SCP accepts one transfer syntax per context: offered together, it may
    choose the uncompressed one and every compressed file would be decoded for nothing.
    """
    contexts: dict[tuple[str, tuple[str, ...]], None] = {}
    for header in headers:
        if UID(header.transfer_syntax).is_compressed:
            contexts[(header.sop_class, (header.transfer_syntax,))] = None
        contexts[(header.sop_class, UNCOMPRESSED)] = None
    return list(contexts)


def _dataset_to_send(header: _Header, accepted: set[str]) -> Dataset | Path | str:
    """The file as it is when the PACS takes its syntax, else decompressed; or the reason it cannot go."""
    compressed = UID(header.transfer_syntax).is_compressed
    # pynetdicom converts between explicit and implicit VR itself
    as_it_is = header.transfer_syntax in accepted or (not compressed and bool(accepted & set(UNCOMPRESSED)))
    if not as_it_is and not accepted & set(UNCOMPRESSED):
        return f"the PACS accepts none of the transfer syntaxes offered for {UID(header.sop_class).name}"
    if as_it_is and not header.send_dataset:
        return header.path  # sent as stored, never decoded
    dataset = pydicom.dcmread(header.path)
    if header.send_dataset:  # the SOP UIDs the C-STORE request names must be in the dataset too
        dataset.SOPClassUID, dataset.SOPInstanceUID = header.sop_class, header.sop_instance
    if not as_it_is:
        # the same instance uncompressed, so it keeps its UID (pydicom would make a new one by default);
        # pydicom decodes RLE itself, and the compressed files MedView writes are RLE
        dataset.decompress(generate_instance_uid=False)
    return dataset


def send_files(
    node: RemoteNode,
    our_ae_title: str,
    paths: Sequence[Path],
    *,
    progress: ProgressCallback | None = None,
    cancelled: CancelCheck | None = None,
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
) -> list[SendOutcome]:
    """C-STORE ``paths`` to ``node`` over one association; one ``SendOutcome`` per path, in order.

    Raises:
        PacsError: the association did not come about (naming the node and why); nothing was sent.
        Cancelled: ``cancelled()`` turned true; files stored before it are stored.
    """
    outcomes: dict[Path, SendOutcome] = {}
    headers: list[_Header] = []
    for path in paths:
        read = _header(Path(path))
        if isinstance(read, SendOutcome):
            outcomes[read.path] = read
        else:
            headers.append(read)
    contexts = _contexts(headers)
    if len(contexts) > MAX_PRESENTATION_CONTEXTS:
        raise MedviewError(f"{len(contexts)} kinds of object in one send: send them in smaller batches")
    if headers:
        with association(node, our_ae_title, contexts, cancelled=cancelled, timeouts=timeouts) as (assoc, _watch):
            accepted: dict[str, set[str]] = {}
            for context in assoc.accepted_contexts:
                accepted.setdefault(str(context.abstract_syntax), set()).add(str(context.transfer_syntax[0]))
            for done, header in enumerate(headers):
                if cancelled is not None and cancelled():
                    raise Cancelled()
                if progress is not None:
                    progress(done, len(headers), f"sending {header.path.name} to {node}")
                outcomes[header.path] = _store(assoc, node, header, accepted.get(header.sop_class, set()))
    if progress is not None:
        progress(len(headers), len(headers), f"sent to {node}")
    return [outcomes[Path(path)] for path in paths]


def _store(assoc: object, node: RemoteNode, header: _Header, accepted: set[str]) -> SendOutcome:
    if not accepted:
        return SendOutcome(
            header.path, header.sop_instance, False, f"{node} does not accept {UID(header.sop_class).name}"
        )
    payload = _dataset_to_send(header, accepted)
    if isinstance(payload, str):
        return SendOutcome(header.path, header.sop_instance, False, f"{node}: {payload}")
    status = assoc.send_c_store(payload)  # type: ignore[attr-defined]
    code = status.get("Status") if status else None
    if code is None:
        return SendOutcome(header.path, header.sop_instance, False, f"{node}: no answer (timeout or aborted)")
    category = code_to_category(code)
    if category == CATEGORY_SUCCESS:
        return SendOutcome(header.path, header.sop_instance, True)
    text = status_text(code, STORAGE_SERVICE_CLASS_STATUS)
    comment = str(status.get("ErrorComment", "") or "").strip()
    detail = f"{text}{': ' + comment if comment else ''}"
    if category == CATEGORY_WARNING:
        return SendOutcome(header.path, header.sop_instance, True, f"stored with a warning: {detail}")
    return SendOutcome(header.path, header.sop_instance, False, f"{node} refused it: {detail}")
