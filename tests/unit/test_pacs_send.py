"""Sending results to a PACS: the C-STORE SCU and the outbox that keeps what has not arrived.

Destinations are real SCPs on loopback: MedView's own receiver (takes every
transfer syntax), dcmtk's storescp (takes only uncompressed ones, so an RLE
map must be decompressed on the way), and a pynetdicom SCP that refuses with
"out of resources".  The outbox is checked across a restart and a kill -9.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pynetdicom import AE, evt
from pynetdicom.presentation import AllStoragePresentationContexts

from bench.orthanc import free_port
from medview.audit import audit_log
from medview.errors import Cancelled
from medview.io import dicom_results as dr
from medview.io.dicom import load_dicom
from medview.pacs.outbox import FIRST_RETRY_S, MAX_ATTEMPTS, SENT, WAITING, Outbox, retry_delay
from medview.pacs.query import RemoteNode, Timeouts
from medview.pacs.receiver import StorageServer
from medview.pacs.send import SendOutcome, send_files
from medview.pacs.store import LocalStudyStore

LOCALHOST = "127.0.0.1"
TITLE = "PACS"
STORESCP = Path("/usr/bin/storescp")
QUICK = Timeouts(connect_s=2, acse_s=5, dimse_s=10, network_s=20)


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> list[Path]:
    """Three CT slices of COVID-CT-MD P001 as they are and an RLE parametric map on them."""
    volume = load_dicom([shared_data / "covid_ct" / "COVID-CT-MD" / "COVID-19" / "P001"])
    folder = tmp_path_factory.mktemp("objects")
    values = {z: np.linspace(0, 1, volume.shape[1] * volume.shape[2]).reshape(volume.shape[1:]) for z in (3, 4)}
    algorithm = dr.Algorithm("test-model", "1.0.0", demo=True)
    meaning = dr.MapMeaning("TEST", "A test ramp")
    rle = dr.write_parametric_map(folder / "map.dcm", values, volume, meaning, algorithm, series_description="map")
    return [Path(volume.slice_files[z]) for z in (0, 1, 2)] + [rle]


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[RemoteNode, LocalStudyStore]]:
    with LocalStudyStore(tmp_path / "pacs") as store:
        server = StorageServer(LOCALHOST)
        server.start(TITLE, 0, store)
        assert server.port is not None
        yield RemoteNode(TITLE, LOCALHOST, server.port), store
        server.stop()


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[RemoteNode, Path]]:
    """dcmtk's storescp with its default transfer syntaxes (uncompressed only)."""
    if not STORESCP.is_file():
        pytest.skip("dcmtk's storescp is not installed (installer/bootstrap.sh test installs it)")
    folder = tmp_path / "storescp"
    folder.mkdir()
    port = free_port()
    process = subprocess.Popen([str(STORESCP), "-aet", TITLE, "-od", str(folder), str(port)])
    deadline = time.monotonic() + 10
    import socket

    while time.monotonic() < deadline:
        try:
            socket.create_connection((LOCALHOST, port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    yield RemoteNode(TITLE, LOCALHOST, port), folder
    process.terminate()
    process.wait(10)


@pytest.fixture
def refusing_pacs() -> Iterator[RemoteNode]:
    """An SCP that answers every C-STORE with 0xA700 (out of resources) and a comment."""

    def refuse(_event: object) -> object:
        status = pydicom.Dataset()
        status.Status = 0xA700
        status.ErrorComment = "disk full"
        return status

    ae = AE(ae_title=TITLE)
    ae.supported_contexts = AllStoragePresentationContexts
    server = ae.start_server((LOCALHOST, 0), block=False, evt_handlers=[(evt.EVT_C_STORE, refuse)])
    yield RemoteNode(TITLE, LOCALHOST, server.server_address[1])
    server.shutdown()


# --------------------------------------------------------------------------- C-STORE SCU


def test_every_object_arrives_unchanged_where_the_pacs_takes_its_syntax(
    objects: list[Path], receiver: tuple[RemoteNode, LocalStudyStore]
) -> None:
    node, store = receiver
    outcomes = send_files(node, "MEDVIEW", objects, timeouts=QUICK)
    assert [(o.stored, o.message) for o in outcomes] == [(True, "")] * len(objects)
    for path in objects:
        uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        stored = store.instance(uid)
        assert stored is not None
        kept = pydicom.dcmread(stored.path)
        assert kept.file_meta.TransferSyntaxUID == pydicom.dcmread(path).file_meta.TransferSyntaxUID


def test_an_rle_map_is_decompressed_for_a_pacs_that_takes_only_uncompressed(
    objects: list[Path], storescp: tuple[RemoteNode, Path]
) -> None:
    node, folder = storescp
    rle = objects[-1]
    (outcome,) = send_files(node, "MEDVIEW", [rle], timeouts=QUICK)
    assert outcome.stored, outcome.message
    (received,) = folder.iterdir()
    kept, original = pydicom.dcmread(received), pydicom.dcmread(rle)
    assert not kept.file_meta.TransferSyntaxUID.is_compressed
    assert original.file_meta.TransferSyntaxUID.is_compressed
    np.testing.assert_array_equal(kept.pixel_array, original.pixel_array)


def test_a_refusal_is_reported_per_object_with_the_pacs_reason(objects: list[Path], refusing_pacs: RemoteNode) -> None:
    outcomes = send_files(refusing_pacs, "MEDVIEW", objects[:2], timeouts=QUICK)
    assert [o.stored for o in outcomes] == [False, False]
    assert "refused it: " in outcomes[0].message
    assert "0xA700" in outcomes[0].message
    assert "disk full" in outcomes[0].message


def test_a_file_that_is_not_dicom_is_named_and_the_rest_still_go(
    tmp_path: Path, objects: list[Path], receiver: tuple[RemoteNode, LocalStudyStore]
) -> None:
    node, _store = receiver
    bad = tmp_path / "scan.dcm"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    outcomes = send_files(node, "MEDVIEW", [bad, objects[0]], timeouts=QUICK)
    assert not outcomes[0].stored
    assert outcomes[0].message.startswith("scan.dcm: not a readable DICOM file")
    assert outcomes[1].stored


# --------------------------------------------------------------------------- the outbox


def test_the_outbox_keeps_what_did_not_arrive_and_delivers_it_when_due(
    tmp_path: Path, objects: list[Path], receiver: tuple[RemoteNode, LocalStudyStore]
) -> None:
    node, store = receiver
    down = RemoteNode(TITLE, LOCALHOST, free_port())  # nothing listens there
    outbox = Outbox(tmp_path / "outbox")
    ids = outbox.add(objects[:2], down, "liver report (test-model 1.0.0)", study_uid="1.2.3", patient_id="P1")
    assert len(ids) == 2
    start = time.time()
    first = outbox.deliver("MEDVIEW", now=start, send=lambda *a, **k: send_files(*a, **k, timeouts=QUICK))
    assert (first.stored, first.failed) == (0, 2)
    assert "connection refused" in first.summary
    waiting = outbox.waiting()
    assert [item.attempts for item in waiting] == [1, 1]
    assert all(item.next_try == pytest.approx(start + FIRST_RETRY_S) for item in waiting)
    assert waiting[0].state == "waiting: next try in 30 s (1 try)"
    assert all(item.path.is_file() for item in waiting)
    # not due yet: nothing is tried
    assert outbox.deliver("MEDVIEW", now=start + 1).failed == 0
    # the PACS comes back at another address: the user removes and re-adds, or the same node answers later
    outbox.close()
    reopened = Outbox(tmp_path / "outbox")  # a restart keeps every waiting object
    assert [item.id for item in reopened.waiting()] == [item.id for item in waiting]
    again = reopened.add(objects[2:3], node, "kidney report")
    done = reopened.deliver("MEDVIEW", now=start + 1, send=lambda *a, **k: send_files(*a, **k, timeouts=QUICK))
    assert (done.stored, done.failed) == (1, 0)  # the due one; the other two wait for their time
    (sent,) = [item for item in reopened.items() if item.id in again]
    assert sent.status == SENT
    assert not sent.path.exists()
    assert store.instance(str(pydicom.dcmread(objects[2], stop_before_pixels=True).SOPInstanceUID)) is not None
    # every attempt is in the audit log, with its outcome
    exports = [e for e in audit_log().read_events() if e.event == "Export"]
    destinations = [next(o for o in e.objects if o["role"] == "Destination") for e in exports]
    assert [d["id"] for d in destinations] == [str(down), str(node)]
    assert {d["format"] for d in destinations} == {"DICOM C-STORE"}
    assert [e.outcome for e in exports] == [4, 0]  # minor failure, then success
    reopened.close()


def test_retry_now_makes_waiting_objects_due_and_remove_drops_them(tmp_path: Path, objects: list[Path]) -> None:
    outbox = Outbox(tmp_path / "outbox")
    down = RemoteNode(TITLE, LOCALHOST, free_port())
    ids = outbox.add(objects[:2], down, "report")
    outbox.deliver("MEDVIEW", now=time.time(), send=lambda *a, **k: send_files(*a, **k, timeouts=QUICK))
    assert outbox.next_due() > time.time() + 10
    outbox.retry_now([ids[0]])
    assert outbox.next_due() == 0
    outbox.remove([ids[0]])
    assert [item.id for item in outbox.items()] == [ids[1]]
    assert len(list(outbox.files.iterdir())) == 1


def test_the_backoff_doubles_from_30_seconds_to_an_hour() -> None:
    assert [retry_delay(n) for n in (1, 2, 3, 8, 20)] == [30, 60, 120, 3600, 3600]


def test_a_kill_9_after_queueing_loses_nothing_and_a_copy_never_queued_is_removed(
    tmp_path: Path, objects: list[Path]
) -> None:
    root = tmp_path / "outbox"
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from medview.pacs.outbox import Outbox\n"
        "from medview.pacs.query import RemoteNode\n"
        "outbox = Outbox(Path(sys.argv[1]))\n"
        "outbox.add([Path(p) for p in sys.argv[2:]], RemoteNode('PACS', '127.0.0.1', 104), 'report')\n"
        "(outbox.files / 'interrupted.dcm').write_bytes(b'half')  # a copy whose add never finished\n"
        "os.kill(os.getpid(), 9)\n"
    )
    killed = subprocess.run([sys.executable, "-c", script, str(root), *map(str, objects[:2])], check=False)
    assert killed.returncode == -9
    outbox = Outbox(root)
    waiting = outbox.waiting()
    assert [item.file_name for item in reversed(waiting)] == [p.name for p in objects[:2]]
    assert all(
        item.status == WAITING and item.path.read_bytes() == src.read_bytes()
        for item, src in zip(reversed(waiting), objects[:2], strict=True)
    )
    assert not (outbox.files / "interrupted.dcm").exists()


def test_an_object_is_given_up_after_the_last_try_and_retry_now_brings_it_back(
    tmp_path: Path, objects: list[Path]
) -> None:
    outbox = Outbox(tmp_path / "outbox")
    node = RemoteNode(TITLE, LOCALHOST, free_port())
    (item_id,) = outbox.add(objects[:1], node, "report")

    def refuse(node: RemoteNode, _title: str, paths: list[Path], **_options: object) -> list[SendOutcome]:
        return [SendOutcome(path, "", False, f"{node} refused it: out of resources") for path in paths]

    moment = time.time()
    for _ in range(MAX_ATTEMPTS):
        outbox.deliver("MEDVIEW", now=moment, send=refuse)
        moment = (outbox.next_due() or moment) + 1
    (item,) = outbox.items()
    assert item.state == f"not sent: given up after {MAX_ATTEMPTS} tries (Retry now sends it again)"
    assert outbox.next_due() is None  # not tried by itself any more
    outbox.retry_now([item_id])
    assert outbox.next_due() == 0


def test_an_unexpected_error_waits_with_its_reason_and_a_cancel_records_nothing(
    tmp_path: Path, objects: list[Path]
) -> None:
    outbox = Outbox(tmp_path / "outbox")
    node = RemoteNode(TITLE, LOCALHOST, free_port())
    outbox.add(objects[:2], node, "report")

    def broken(*_args: object, **_options: object) -> list[SendOutcome]:
        raise FileNotFoundError("gone")

    def cancelled(*_args: object, **_options: object) -> list[SendOutcome]:
        raise Cancelled()

    with pytest.raises(Cancelled):
        outbox.deliver("MEDVIEW", send=cancelled)
    assert [item.attempts for item in outbox.items()] == [0, 0]
    delivery = outbox.deliver("MEDVIEW", send=broken)
    assert delivery.failed == 2
    assert all(item.message == "FileNotFoundError: gone" for item in outbox.items())


def test_the_window_looks_for_the_outbox_where_it_is() -> None:
    from medview.pacs.outbox import INDEX_NAME
    from medview.ui.pacs.outbox import OUTBOX_INDEX

    assert OUTBOX_INDEX == INDEX_NAME
