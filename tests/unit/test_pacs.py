"""The DICOM receiver and the local study store, against real peers: dcmtk's echoscu/storescu and pynetdicom.

Every test listens on 127.0.0.1 only, on a port the system picks.
"""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom import AE
from pynetdicom.dsutils import encode_file_meta, split_dataset
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from medview.errors import DicomError
from medview.io.dicom import load_series, scan_paths
from medview.pacs.receiver import (
    STATUS_CANNOT_UNDERSTAND,
    PacsError,
    StorageServer,
    validate_ae_title,
)
from medview.pacs.store import INDEX_NAME, LocalStudyStore, StoredInstance, safe_file_name

STORESCU = Path("/usr/bin/storescu")
ECHOSCU = Path("/usr/bin/echoscu")
needs_dcmtk = pytest.mark.skipif(
    not (STORESCU.is_file() and ECHOSCU.is_file()), reason="dcmtk (storescu, echoscu) is not installed"
)
LOCALHOST = "127.0.0.1"
TITLE = "MEDVIEW"
SENDER = "TESTSCU"
DCMQI = Path("dicom_ct") / "dcmqi_ct-3slice"  # 3 slices, implicit VR little endian
CAP001 = Path("covid_ct") / "COVID-CT-MD" / "CAP" / "cap001"  # 21 slices, JPEG lossless SV1
J2K_INSTANCE = Path("dicom_ct") / "pydicom-data" / "693_J2KR.dcm"  # one slice, JPEG 2000 lossless


@pytest.fixture(autouse=True)
def _quiet_pydicom() -> Iterator[None]:
    """Real scanners write values pydicom warns about; these tests compare content, not warnings."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="pydicom")
        yield


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalStudyStore]:
    with LocalStudyStore(tmp_path / "studies") as opened:
        yield opened


class Receiver:
    """A running ``StorageServer`` and what its ``on_stored`` was told."""

    def __init__(self, store: LocalStudyStore) -> None:
        self.store = store
        self.server = StorageServer(LOCALHOST)
        self.stored: list[StoredInstance] = []
        self.threads: set[str] = set()
        self.server.start(TITLE, 0, store, self._on_stored)

    def _on_stored(self, instance: StoredInstance) -> None:
        self.threads.add(threading.current_thread().name)
        self.stored.append(instance)

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port


@pytest.fixture
def receiver(store: LocalStudyStore) -> Iterator[Receiver]:
    running = Receiver(store)
    yield running
    running.server.stop()


def storescu(port: int, files: list[Path], *options: str) -> subprocess.CompletedProcess[str]:
    """Send ``files`` with dcmtk's storescu, proposing only the presentation contexts they need (-R)."""
    command = [str(STORESCU), "-aet", SENDER, "-aec", TITLE, "-R", *options, LOCALHOST, str(port), *map(str, files)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def dataset_bytes(path: Path) -> bytes:
    """The encoded dataset of a DICOM file, after its file meta header."""
    _meta, offset = split_dataset(path)
    return path.read_bytes()[offset:]


def content(path: Path) -> Dataset:
    """A file's dataset without its file meta (group 0002, written by the receiver) and without group lengths
    (xxxx,0000): retired elements that senders recompute (storescu does) as they re-encode lengths."""
    dataset = pydicom.dcmread(path)
    dataset.file_meta = pydicom.dataset.FileMetaDataset()
    for tag in [element.tag for element in dataset if element.tag.element == 0]:
        del dataset[tag]
    return dataset


def with_full_file_meta(source: Path, folder: Path) -> Path:
    """A copy of ``source`` whose file meta names its SOP instance (some real files omit it); same dataset bytes."""
    header = pydicom.dcmread(source, stop_before_pixels=True)
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = header.SOPClassUID
    meta.MediaStorageSOPInstanceUID = header.SOPInstanceUID
    meta.TransferSyntaxUID = header.file_meta.TransferSyntaxUID
    copy = folder / source.name
    copy.write_bytes(b"\x00" * 128 + b"DICM" + encode_file_meta(meta) + dataset_bytes(source))
    return copy


def sop_instance_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


# --------------------------------------------------------------------------- real peers


@needs_dcmtk
def test_echoscu_is_answered(receiver: Receiver) -> None:
    result = subprocess.run(
        [str(ECHOSCU), "-aet", SENDER, "-aec", TITLE, LOCALHOST, str(receiver.port)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert receiver.store.instance_count() == 0


@needs_dcmtk
@pytest.mark.parametrize(
    ("relative", "propose", "transfer_syntax"),
    [
        (DCMQI, "-xi", ImplicitVRLittleEndian),  # uncompressed, sent in its own implicit VR encoding
        (CAP001, "-xs", JPEGLosslessSV1),
        (J2K_INSTANCE, "-xv", JPEG2000Lossless),
    ],
    ids=["implicit-vr", "jpeg-lossless", "jpeg2000"],
)
def test_storescu_series_arrives_identical_and_opens(
    shared_data: Path, receiver: Receiver, relative: Path, propose: str, transfer_syntax: str
) -> None:
    source = shared_data / relative
    files = sorted(source.glob("*.dcm")) if source.is_dir() else [source]
    result = storescu(receiver.port, files, propose)
    assert result.returncode == 0, result.stderr

    assert len(receiver.stored) == len(files)
    assert threading.current_thread().name not in receiver.threads  # told on pynetdicom's thread
    store = receiver.store
    for path in files:
        stored = store.instance(sop_instance_uid(path))
        assert stored is not None, f"{path.name} did not arrive"
        assert stored.calling_ae == SENDER
        assert stored.transfer_syntax_uid == transfer_syntax  # stored as sent, not transcoded
        # storescu re-encodes sequence lengths as it sends (undefined -> defined): equal content, not equal bytes;
        # test_received_bytes_are_stored_as_sent checks the bytes with a sender that sends files verbatim
        received, original = content(stored.path), content(path)
        assert received == original
        assert received.PixelData == original.PixelData
        assert pydicom.dcmread(stored.path).file_meta.SourceApplicationEntityTitle == SENDER

    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    [study] = store.studies()
    assert (study.study_uid, study.series_count, study.instance_count) == (first.StudyInstanceUID, 1, len(files))
    assert study.patient_id == str(first.get("PatientID", ""))
    [series] = store.series(study.study_uid)
    assert (series.series_uid, series.instance_count) == (first.SeriesInstanceUID, len(files))
    assert series.modality == "CT"

    received_files = store.series_files(series.series_uid, study.study_uid)
    assert len(received_files) == len(files)
    [received_series] = scan_paths(received_files).series
    [source_series] = scan_paths(files).series
    assert received_series.slice_count == len(files)
    received_volume, source_volume = load_series(received_series), load_series(source_series)
    assert received_volume.voxels.shape == source_volume.voxels.shape
    np.testing.assert_array_equal(received_volume.voxels, source_volume.voxels)


def _send(port: int, dataset: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> Dataset:
    """Send one dataset with pynetdicom as the SCU; the C-STORE response status dataset."""
    ae = AE(ae_title=SENDER)
    ae.add_requested_context(CTImageStorage, [transfer_syntax])
    association = ae.associate(LOCALHOST, port, ae_title=TITLE)
    assert association.is_established
    try:
        return association.send_c_store(dataset)
    finally:
        association.release()


def test_dataset_without_sop_instance_uid_is_refused(
    shared_data: Path, receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sender announcing an instance whose dataset has no SOP Instance UID gets a failure and its reason."""
    import pynetdicom._config

    dataset = pydicom.dcmread(shared_data / DCMQI / "01.dcm")
    announced = dataset.SOPInstanceUID
    del dataset.SOPInstanceUID
    dataset.file_meta.MediaStorageSOPInstanceUID = announced
    path = tmp_path / "no_sop_instance_uid.dcm"
    dataset.save_as(path, enforce_file_format=False)
    # sent from the file as it is (a dataset object without the UID cannot be sent by pynetdicom at all)
    monkeypatch.setattr(pynetdicom._config, "STORE_SEND_CHUNKED_DATASET", True)

    ae = AE(ae_title=SENDER)
    ae.add_requested_context(CTImageStorage, [ImplicitVRLittleEndian])
    association = ae.associate(LOCALHOST, receiver.port, ae_title=TITLE)
    assert association.is_established
    try:
        status = association.send_c_store(path)
    finally:
        association.release()

    assert status.Status == STATUS_CANNOT_UNDERSTAND
    assert "SOPInstanceUID" in status.ErrorComment
    assert receiver.stored == []
    assert receiver.store.instance_count() == 0
    assert not list(receiver.store.root.rglob("*.dcm"))


@pytest.mark.parametrize("relative", [CAP001 / "98C1066-ASAD_104.dcm", J2K_INSTANCE], ids=["jpeg-lossless", "jpeg2000"])
def test_received_bytes_are_stored_as_sent(
    shared_data: Path, receiver: Receiver, relative: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A compressed instance sent byte for byte from its file is stored byte for byte: never decoded, re-encoded."""
    import pynetdicom._config

    source = with_full_file_meta(shared_data / relative, tmp_path)
    monkeypatch.setattr(pynetdicom._config, "STORE_SEND_CHUNKED_DATASET", True)  # send the file's dataset bytes
    transfer_syntax = pydicom.dcmread(source, stop_before_pixels=True).file_meta.TransferSyntaxUID
    ae = AE(ae_title=SENDER)
    ae.add_requested_context(CTImageStorage, [transfer_syntax])
    association = ae.associate(LOCALHOST, receiver.port, ae_title=TITLE)
    assert association.is_established
    try:
        assert association.send_c_store(source).Status == 0
    finally:
        association.release()

    [stored] = receiver.stored
    assert stored.transfer_syntax_uid == transfer_syntax
    assert dataset_bytes(stored.path) == dataset_bytes(source)


@pytest.mark.parametrize(
    "transfer_syntax",
    [RLELossless, JPEGLSLossless, JPEG2000, JPEGBaseline8Bit, JPEGLosslessSV1, DeflatedExplicitVRLittleEndian],
)
def test_compressed_transfer_syntaxes_are_accepted(receiver: Receiver, transfer_syntax: str) -> None:
    """A sender proposing only a compressed transfer syntax gets it accepted: its data is stored as it is sent."""
    ae = AE(ae_title=SENDER)
    ae.add_requested_context(CTImageStorage, [transfer_syntax])
    association = ae.associate(LOCALHOST, receiver.port, ae_title=TITLE)
    try:
        assert association.is_established
        assert [context.transfer_syntax[0] for context in association.accepted_contexts] == [transfer_syntax]
    finally:
        association.release()


def test_deflated_instance_is_stored_deflated_and_lists(shared_data: Path, receiver: Receiver) -> None:
    source = shared_data / DCMQI / "01.dcm"
    dataset = pydicom.dcmread(source)
    assert _send(receiver.port, dataset, DeflatedExplicitVRLittleEndian).Status == 0
    [stored] = receiver.stored
    assert stored.transfer_syntax_uid == DeflatedExplicitVRLittleEndian
    assert pydicom.dcmread(stored.path).PixelData == dataset.PixelData
    [series] = scan_paths(receiver.store.series_files(stored.series_uid)).series
    assert series.slice_count == 1


def test_dataset_without_study_uid_is_refused(shared_data: Path, receiver: Receiver) -> None:
    dataset = pydicom.dcmread(shared_data / DCMQI / "01.dcm")
    del dataset.StudyInstanceUID
    status = _send(receiver.port, dataset, ImplicitVRLittleEndian)
    assert status.Status == STATUS_CANNOT_UNDERSTAND
    assert "StudyInstanceUID" in status.ErrorComment
    assert receiver.store.instance_count() == 0


def test_instance_sent_twice_is_stored_once(shared_data: Path, receiver: Receiver) -> None:
    dataset = pydicom.dcmread(shared_data / DCMQI / "01.dcm")
    assert _send(receiver.port, dataset, ImplicitVRLittleEndian).Status == 0
    assert _send(receiver.port, dataset, ImplicitVRLittleEndian).Status == 0

    assert len(receiver.stored) == 2
    assert receiver.stored[0].path == receiver.stored[1].path
    assert receiver.store.instance_count() == 1
    assert list(receiver.store.root.rglob("*.dcm")) == [receiver.stored[0].path]
    received = pydicom.dcmread(receiver.stored[0].path)
    assert received.SOPInstanceUID == dataset.SOPInstanceUID
    assert received.PixelData == dataset.PixelData


# --------------------------------------------------------------------------- starting and stopping


def test_port_in_use_is_named(store: LocalStudyStore) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other_program:
        other_program.bind((LOCALHOST, 0))
        other_program.listen()
        port = other_program.getsockname()[1]
        server = StorageServer(LOCALHOST)
        with pytest.raises(PacsError, match=f"port {port} is already in use by another program"):
            server.start(TITLE, port, store)
        assert not server.is_running


def test_stop_frees_the_port_and_ends_the_threads(store: LocalStudyStore) -> None:
    server = StorageServer(LOCALHOST)
    server.start(TITLE, 0, store)
    port = server.port
    assert port is not None
    ae = AE(ae_title=SENDER)
    ae.add_requested_context(CTImageStorage)
    association = ae.associate(LOCALHOST, port, ae_title=TITLE)  # left open: stop must end it
    assert association.is_established

    server.stop()
    association.join(10)
    assert not server.is_running
    assert not association.is_alive()
    assert not [t for t in threading.enumerate() if t.name.startswith("AcceptorServer")]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        assert probe.connect_ex((LOCALHOST, port)) != 0  # nothing listens any more
    server.start(TITLE, port, store)  # and the port can be taken again
    assert server.port == port
    server.stop()
    server.stop()  # twice is harmless


@pytest.mark.parametrize(
    ("title", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("A" * 17, "17 characters"),
        ("MED\\VIEW", "backslash"),
        ("MED\nVIEW", "'\\n'"),
        ("MÉDVIEW", "'É'"),
    ],
)
def test_invalid_ae_titles_are_refused(store: LocalStudyStore, title: str, problem: str) -> None:
    with pytest.raises(PacsError, match="AE title") as caught:
        validate_ae_title(title)
    assert problem in str(caught.value)
    server = StorageServer(LOCALHOST)
    with pytest.raises(PacsError):
        server.start(title, 0, store)
    assert not server.is_running


def test_valid_ae_titles_are_kept_without_padding() -> None:
    assert validate_ae_title(" MEDVIEW ") == "MEDVIEW"
    assert validate_ae_title("A" * 16) == "A" * 16
    assert validate_ae_title("CT_1-ROOM 2") == "CT_1-ROOM 2"


# --------------------------------------------------------------------------- the store on its own


def _encoded(path: Path) -> bytes:
    return path.read_bytes()


def test_store_refuses_what_it_cannot_file(store: LocalStudyStore, shared_data: Path, tmp_path: Path) -> None:
    with pytest.raises(DicomError, match="not a DICOM file"):
        store.store_bytes(b"\x89PNG not dicom" * 20, calling_ae="PEER")
    dataset = pydicom.dcmread(shared_data / DCMQI / "02.dcm")
    del dataset.SeriesInstanceUID
    path = tmp_path / "no_series.dcm"
    dataset.save_as(path)
    with pytest.raises(DicomError, match=r"SeriesInstanceUID \(0020,000E\)"):
        store.store_bytes(path.read_bytes(), calling_ae="PEER")
    assert store.instance_count() == 0
    assert not [p for p in store.root.rglob("*") if p.is_file() and p.name != INDEX_NAME and "sqlite" not in p.name]


def test_instance_moved_to_another_series_replaces_the_old_file(
    store: LocalStudyStore, shared_data: Path, tmp_path: Path
) -> None:
    source = shared_data / DCMQI / "01.dcm"
    first = store.store_bytes(_encoded(source))
    dataset = pydicom.dcmread(source)
    dataset.SeriesInstanceUID = dataset.SeriesInstanceUID + ".9"
    moved = tmp_path / "moved.dcm"
    dataset.save_as(moved)
    second = store.store_bytes(moved.read_bytes())

    assert second.path != first.path
    assert not first.path.exists()
    assert not first.path.parent.exists()  # the emptied series folder goes too
    assert store.instance_count() == 1
    assert store.instance(first.sop_instance_uid) == second


def test_rebuild_restores_a_lost_or_damaged_index(store: LocalStudyStore, shared_data: Path, tmp_path: Path) -> None:
    files = sorted((shared_data / DCMQI).glob("*.dcm"))
    for path in files:
        store.store_bytes(_encoded(path), calling_ae="PEER")
    studies = store.studies()
    [series] = store.series(studies[0].study_uid)
    store_root = store.root
    series_folder = store.series_files(series.series_uid)[0].parent
    (series_folder / ".interrupted.partial").write_bytes(b"half an instance")
    (series_folder / "unreadable.dcm").write_bytes(b"not dicom at all")
    store.close()

    for damage in ("lost", "damaged"):
        index = store_root / INDEX_NAME
        for leftover in store_root.glob(f"{INDEX_NAME}*"):
            leftover.unlink()
        if damage == "damaged":
            index.write_bytes(b"this is not a database" * 100)
        with LocalStudyStore(store_root) as reopened:
            assert reopened.needs_rebuild
            assert reopened.instance_count() == 0
            report = reopened.rebuild()
            assert report.indexed == len(files)
            assert any("unreadable.dcm" in problem for problem in report.problems)
            assert (series_folder / "unreadable.dcm").exists()  # reported, never deleted
            assert not reopened.needs_rebuild
            assert [(s.study_uid, s.series_count, s.instance_count) for s in reopened.studies()] == [
                (studies[0].study_uid, 1, len(files))
            ]
            assert [s.instance_count for s in reopened.series(studies[0].study_uid)] == [len(files)]
            assert {sop_instance_uid(p) for p in reopened.series_files(series.series_uid)} == {
                sop_instance_uid(p) for p in files
            }
        if damage == "damaged":
            assert list(store_root.glob(f"{INDEX_NAME}.damaged-*")), "the damaged index is kept aside"
    assert not (series_folder / ".interrupted.partial").exists()


def test_file_names_from_uids_stay_in_their_folder() -> None:
    assert safe_file_name("1.2.840.113619.2.55") == "1.2.840.113619.2.55"
    hostile = ["..", ".", "../../etc/passwd", "a/b", "C:\\x", "", "1.2.", "con"]
    names = [safe_file_name(uid) for uid in hostile]
    for name in names:
        assert re.fullmatch(r"[0-9A-Za-z_\-][0-9A-Za-z._\-]*", name), name  # no separator, not hidden, not ".."
    assert len(set(names)) == len(hostile)
    assert safe_file_name("Ab-1") != safe_file_name("aB-1")  # case-insensitive file systems
    assert safe_file_name("1.2_3") != safe_file_name("1.2/3")
