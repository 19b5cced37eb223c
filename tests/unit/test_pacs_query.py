"""Query/retrieve against a real dcmtk dcmqrscp on 127.0.0.1: C-FIND studies and series, C-GET into the local store.

The archive is filled once per module by dcmtk's storescu with real series:
dcmqi's 3 slices (sent as explicit VR), COVID-CT-MD's cap001 (21 slices, kept
JPEG lossless) and pydicom's CT_small.  dcmqrscp runs with ``+xs`` so it takes
and keeps JPEG lossless; it cannot convert between transfer syntaxes, so a
retrieve of the uncompressed study needs the second C-GET pass.  Timing-free
cancel and timeout checks use a pynetdicom SCP whose C-GET never answers.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGLosslessSV1
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)

from medview.audit import EventId, Outcome, audit_log
from medview.errors import Cancelled, MedviewError
from medview.io.dicom import load_series, scan_paths
from medview.pacs.query import (
    MAX_PRESENTATION_CONTEXTS,
    OFFERED_TRANSFER_SYNTAXES,
    RemoteNode,
    Timeouts,
    find_series,
    find_studies,
    retrieve_study,
    storage_contexts,
)
from medview.pacs.receiver import PacsError
from medview.pacs.store import PARTIAL_SUFFIX, LocalStudyStore

DCMQRSCP = Path("/usr/bin/dcmqrscp")
STORESCU = Path("/usr/bin/storescu")
needs_dcmtk = pytest.mark.skipif(
    not (DCMQRSCP.is_file() and STORESCU.is_file()), reason="dcmtk (dcmqrscp, storescu) is not installed"
)
LOCALHOST = "127.0.0.1"
ARCHIVE_TITLE = "QRSCP"
OUR_TITLE = "MEDVIEW"
START_TIMEOUT_S = 10.0

DCMQI = Path("dicom_ct") / "dcmqi_ct-3slice"  # implicit VR, patient JANCT000 / 99000, 2003-04-17
CAP001 = Path("covid_ct") / "COVID-CT-MD" / "CAP" / "cap001"  # 21 slices JPEG lossless, 98C1066-ASAD, 2019-04-27
CT_SMALL = Path("dicom_ct") / "pydicom-3.0.2-testfiles" / "CT_small.dcm"  # CompressedSamples^CT1 / 1CT1, 2004-01-19


@pytest.fixture(autouse=True)
def _quiet_pydicom() -> Iterator[None]:
    """Real scanners write values pydicom warns about; these tests compare content, not warnings."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="pydicom")
        yield


def free_port() -> int:
    """A TCP port nothing listens on right now (the system's pick)."""
    with socket.socket() as probe:
        probe.bind((LOCALHOST, 0))
        return int(probe.getsockname()[1])


def source_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_file()) if folder.is_dir() else [folder]


def study_uid_of(path: Path) -> str:
    return str(pydicom.dcmread(source_files(path)[0], stop_before_pixels=True).StudyInstanceUID)


@dataclass
class QrArchive:
    """A running dcmqrscp with its storage area, filled with real series."""

    process: subprocess.Popen[bytes]
    port: int
    folder: Path
    log: Path

    @property
    def node(self) -> RemoteNode:
        return RemoteNode(ARCHIVE_TITLE, LOCALHOST, self.port)

    def send(self, paths: list[Path], *options: str) -> None:
        """Store ``paths`` in the archive with storescu (``options`` choose the proposed transfer syntaxes)."""
        command = [str(STORESCU), "-aet", "TESTSCU", "-aec", ARCHIVE_TITLE, *options, LOCALHOST, str(self.port)]
        sent = subprocess.run(command + [str(p) for p in paths], capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0, f"storescu failed: {sent.stdout}{sent.stderr}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def start_archive(folder: Path) -> QrArchive:
    """dcmqrscp on a free loopback port, one AE (``ARCHIVE_TITLE``) that accepts any peer; waits until it listens."""
    storage = folder / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    for _attempt in range(3):  # another program may take the port between the pick and dcmqrscp's bind
        port = free_port()
        config = folder / "dcmqrscp.cfg"
        config.write_text(
            f"NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 16\n\n"
            "HostTable BEGIN\nHostTable END\n\nVendorTable BEGIN\nVendorTable END\n\n"
            f"AETable BEGIN\n{ARCHIVE_TITLE} {storage} RW (200, 1024mb) ANY\nAETable END\n",
            encoding="ascii",
        )
        log = folder / "dcmqrscp.log"
        with open(log, "wb") as output:
            # +xs: take (and so keep) JPEG lossless as sent, besides the uncompressed syntaxes
            process = subprocess.Popen(
                [str(DCMQRSCP), "-c", str(config), "+xs", str(port)], stdout=output, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while process.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection((LOCALHOST, port), timeout=1).close()
            except OSError:
                time.sleep(0.05)
                continue
            return QrArchive(process, port, storage, log)
        process.kill()
        process.wait(10)
    pytest.fail(f"dcmqrscp did not start: {log.read_text(errors='replace')}")


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Iterator[QrArchive]:
    if not (DCMQRSCP.is_file() and STORESCU.is_file()):
        pytest.skip("dcmtk (dcmqrscp, storescu) is not installed")
    running = start_archive(tmp_path_factory.mktemp("dcmqrscp"))
    try:
        running.send([*source_files(shared_data / DCMQI), shared_data / CT_SMALL])
        running.send(source_files(shared_data / CAP001), "-xs")  # proposes JPEG lossless: sent as it is
        yield running
    finally:
        running.stop()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalStudyStore]:
    with LocalStudyStore(tmp_path / "studies") as opened:
        yield opened


def comparable(dataset: Dataset) -> dict[int, object]:
    """The dataset's values by tag, without the file meta (group 0002) and group lengths."""
    return {
        int(element.tag): element.value
        for element in dataset
        if element.tag.group != 0x0002 and element.tag.element != 0x0000
    }


# --------------------------------------------------------------------------- C-FIND


@needs_dcmtk
def test_find_by_patient_id_returns_the_study_with_its_fields(archive: QrArchive, shared_data: Path) -> None:
    found = find_studies(archive.node, OUR_TITLE, patient_id="99000")

    assert len(found) == 1
    study = found[0]
    assert study.study_uid == study_uid_of(shared_data / DCMQI)
    assert (study.patient_name, study.patient_id, study.study_date) == ("JANCT000", "99000", "20030417")
    assert study.accession_number == "03086212"
    assert find_studies(archive.node, OUR_TITLE, patient_id="00000") == []


@needs_dcmtk
def test_find_by_wildcard_name(archive: QrArchive, shared_data: Path) -> None:
    assert [s.study_uid for s in find_studies(archive.node, OUR_TITLE, patient_name="JAN*")] == [
        study_uid_of(shared_data / DCMQI)
    ]
    assert [s.patient_id for s in find_studies(archive.node, OUR_TITLE, patient_name="Compressed*")] == ["1CT1"]
    assert [s.patient_id for s in find_studies(archive.node, OUR_TITLE, patient_name="JANCT00?")] == ["99000"]
    assert find_studies(archive.node, OUR_TITLE, patient_name="NOBODY*") == []


@needs_dcmtk
def test_find_by_date_and_range_newest_first(archive: QrArchive) -> None:
    assert [s.patient_id for s in find_studies(archive.node, OUR_TITLE, study_date="20190427")] == ["98C1066-ASAD"]
    in_range = find_studies(archive.node, OUR_TITLE, study_date="20030101-20041231")
    assert [s.study_date for s in in_range] == ["20040119", "20030417"]
    assert [s.patient_id for s in find_studies(archive.node, OUR_TITLE, study_date="20190101-")] == ["98C1066-ASAD"]
    assert [s.patient_id for s in find_studies(archive.node, OUR_TITLE, study_date="-20031231")] == ["99000"]


@needs_dcmtk
def test_find_everything_and_by_modality(archive: QrArchive) -> None:
    everything = find_studies(archive.node, OUR_TITLE)
    assert [s.study_date for s in everything] == ["20190427", "20040119", "20030417"]
    # dcmqrscp neither matches nor returns Modalities in Study: asked series by series instead
    computed = find_studies(archive.node, OUR_TITLE, modality="ct")
    assert len(computed) == 3
    assert all(study.modalities == ("CT",) for study in computed)
    assert find_studies(archive.node, OUR_TITLE, modality="MR") == []


@needs_dcmtk
def test_find_series_of_a_study(archive: QrArchive, shared_data: Path) -> None:
    header = pydicom.dcmread(source_files(shared_data / CAP001)[0], stop_before_pixels=True)

    series = find_series(archive.node, OUR_TITLE, str(header.StudyInstanceUID))

    assert [(s.series_uid, s.modality, s.series_number) for s in series] == [
        (str(header.SeriesInstanceUID), "CT", int(header.SeriesNumber))
    ]
    assert series[0].study_uid == str(header.StudyInstanceUID)


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"study_date": "2019-04-27"}, "expected YYYYMMDD"),
        ({"study_date": "20190231"}, "not a date"),
        ({"study_date": "2019042720190501"}, "expected YYYYMMDD"),
        ({"patient_name": "DOE\\JOHN"}, "backslash"),
        ({"accession": "A" * 17}, "at most 16"),
        ({"modality": "C/T"}, "modality code"),
    ],
)
def test_find_refuses_keys_dicom_cannot_carry(keys: dict[str, str], expected: str) -> None:
    # checked before any connection: the port has nothing listening
    with pytest.raises(PacsError, match=expected):
        find_studies(RemoteNode("PACS", LOCALHOST, free_port()), OUR_TITLE, **keys)


# --------------------------------------------------------------------------- C-GET


@needs_dcmtk
@pytest.mark.parametrize(
    ("source", "transfer_syntax"),
    [(CAP001, JPEGLosslessSV1), (DCMQI, ExplicitVRLittleEndian)],
    ids=["jpeg-lossless", "uncompressed"],
)
def test_retrieve_stores_every_instance_as_the_source(
    archive: QrArchive, store: LocalStudyStore, shared_data: Path, source: Path, transfer_syntax: str
) -> None:
    sources = source_files(shared_data / source)
    by_sop = {str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID): path for path in sources}
    study_uid = study_uid_of(shared_data / source)
    progress: list[tuple[int, int]] = []
    announced = []

    result = retrieve_study(
        archive.node,
        OUR_TITLE,
        study_uid,
        store,
        progress=lambda d, t, _what: progress.append((d, t)),
        on_stored=announced.append,
    )

    assert result.complete
    assert result.expected == len(sources)
    assert sorted(i.sop_instance_uid for i in result.instances) == sorted(by_sop)
    assert [i.sop_instance_uid for i in announced] == [i.sop_instance_uid for i in result.instances]
    assert progress[-1] == (len(sources), len(sources))
    assert store.instance_count() == len(sources)
    assert [(s.study_uid, s.instance_count) for s in store.studies()] == [(study_uid, len(sources))]
    for instance in result.instances:
        assert instance.calling_ae == ARCHIVE_TITLE
        assert instance.transfer_syntax_uid == transfer_syntax  # as the archive keeps it, not converted
        received = pydicom.dcmread(instance.path)
        expected = pydicom.dcmread(by_sop[instance.sop_instance_uid])
        assert received.file_meta.SourceApplicationEntityTitle == ARCHIVE_TITLE
        assert received.PixelData == expected.PixelData  # the compressed fragments too
        assert comparable(received) == comparable(expected)

    loaded = scan_paths(result.paths)
    reference = scan_paths(sources)
    assert not loaded.problems
    assert len(loaded.series) == 1
    volume = load_series(loaded.series[0])
    np.testing.assert_array_equal(volume.voxels, load_series(reference.series[0]).voxels)

    imports = [event for event in audit_log().read_events() if event.event == EventId.IMPORT]
    assert [(event.outcome, event.objects[2]["id"], event.objects[2]["count"]) for event in imports] == [
        (Outcome.SUCCESS, study_uid, len(sources))
    ]


@needs_dcmtk
def test_retrieve_of_a_study_the_archive_does_not_hold_names_the_node(
    archive: QrArchive, store: LocalStudyStore
) -> None:
    with pytest.raises(PacsError, match=rf"^PACS {ARCHIVE_TITLE}@127\.0\.0\.1:{archive.port}: has no instances"):
        retrieve_study(archive.node, OUR_TITLE, "1.2.3.4.5.6.7", store)
    assert store.instance_count() == 0


@needs_dcmtk
def test_cancel_mid_retrieve_aborts_and_keeps_what_arrived(
    archive: QrArchive, store: LocalStudyStore, shared_data: Path
) -> None:
    study_uid = study_uid_of(shared_data / CAP001)
    total = len(source_files(shared_data / CAP001))
    stored = []

    with pytest.raises(Cancelled):
        retrieve_study(
            archive.node, OUR_TITLE, study_uid, store, cancelled=lambda: bool(stored), on_stored=stored.append
        )

    kept = store.instance_count()
    assert 1 <= kept < total
    assert all(path.is_file() for path in store.series_files(stored[0].series_uid))
    assert not list(store.root.rglob(f"*{PARTIAL_SUFFIX}"))
    imports = [event for event in audit_log().read_events() if event.event == EventId.IMPORT]
    assert [(event.outcome, event.outcome_description) for event in imports] == [
        (Outcome.MINOR_FAILURE, "cancelled by the user")
    ]
    # the archive survived the abort: the study can be fetched in full now
    assert len(retrieve_study(archive.node, OUR_TITLE, study_uid, store).instances) == total
    assert store.instance_count() == total


# --------------------------------------------------------------------------- failures name the node


@needs_dcmtk
def test_unknown_called_ae_title_is_rejected_naming_the_node(archive: QrArchive, store: LocalStudyStore) -> None:
    stranger = RemoteNode("NOSUCHAE", LOCALHOST, archive.port)
    expected = rf"^PACS NOSUCHAE@127\.0\.0\.1:{archive.port}: association rejected \(called AE title not recognised\)"

    with pytest.raises(PacsError, match=expected):
        find_studies(stranger, OUR_TITLE)
    with pytest.raises(PacsError, match=expected):
        retrieve_study(stranger, OUR_TITLE, "1.2.3", store)


def test_port_with_nothing_listening_fails_at_once_naming_the_node(store: LocalStudyStore) -> None:
    port = free_port()
    node = RemoteNode("PACS", LOCALHOST, port)

    with pytest.raises(PacsError, match=rf"^PACS PACS@127\.0\.0\.1:{port}: connection refused") as raised:
        find_studies(node, OUR_TITLE)
    assert isinstance(raised.value, MedviewError)
    with pytest.raises(PacsError, match=rf"^PACS PACS@127\.0\.0\.1:{port}: connection refused"):
        retrieve_study(node, OUR_TITLE, "1.2.3", store)


def test_unknown_host_name_is_reported_naming_the_node(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_such_host(*_args: object, **_kwargs: object) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)  # no name service is asked
    with pytest.raises(PacsError, match=r"^PACS PACS@pacs\.invalid:104: cannot find the host \(Name or service"):
        find_studies(RemoteNode("PACS", "pacs.invalid", 104), OUR_TITLE)


def test_a_refused_search_names_the_node_and_the_status() -> None:
    ae = AE(ae_title="REFUSING")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)

    def refuse(_event: object) -> Iterator[tuple[int, None]]:
        yield 0xC001, None

    server = ae.start_server((LOCALHOST, 0), block=False, evt_handlers=[(evt.EVT_C_FIND, refuse)])
    try:
        node = RemoteNode("REFUSING", LOCALHOST, int(server.server_address[1]))
        with pytest.raises(
            PacsError, match=r"^PACS REFUSING@.*: refused the search: unable to process \(status 0xC001\)"
        ):
            find_studies(node, OUR_TITLE, patient_id="1")
    finally:
        server.shutdown()


class SilentPacs:
    """A pynetdicom Q/R SCP that accepts C-FIND and C-GET and then says nothing until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        ae = AE(ae_title="SILENT")
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
        ae.add_supported_context(CTImageStorage, scp_role=True, scu_role=False)
        handlers = [(evt.EVT_C_GET, self._silent), (evt.EVT_C_FIND, self._silent)]
        self.server = ae.start_server((LOCALHOST, 0), block=False, evt_handlers=handlers)
        self.node = RemoteNode("SILENT", LOCALHOST, int(self.server.server_address[1]))

    def _silent(self, _event: object) -> Iterator[object]:
        self.entered.set()
        self.release.wait(30)
        yield 0xA700, None  # never reached in time: the requestor has aborted or timed out

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()


@pytest.fixture
def silent_pacs() -> Iterator[SilentPacs]:
    pacs = SilentPacs()
    try:
        yield pacs
    finally:
        pacs.stop()


@pytest.mark.timeout(60)  # a hang guard, not a timing check: without the abort the waits below last an hour
def test_cancel_while_the_pacs_is_silent_aborts(silent_pacs: SilentPacs, store: LocalStudyStore) -> None:
    patient = Timeouts(dimse_s=3600, network_s=3600)
    # the cancel comes while the operation waits for the PACS's first answer
    with pytest.raises(Cancelled):
        retrieve_study(
            silent_pacs.node, OUR_TITLE, "1.2.3", store, cancelled=silent_pacs.entered.is_set, timeouts=patient
        )
    silent_pacs.entered.clear()
    with pytest.raises(Cancelled):
        find_studies(silent_pacs.node, OUR_TITLE, cancelled=silent_pacs.entered.is_set, timeouts=patient)
    assert store.instance_count() == 0


def test_a_pacs_that_stops_answering_times_out_naming_the_node(silent_pacs: SilentPacs, store: LocalStudyStore) -> None:
    quick = Timeouts(connect_s=5, acse_s=5, dimse_s=0.5, network_s=30)
    with pytest.raises(PacsError, match=r"^PACS SILENT@127\.0\.0\.1:\d+: the retrieve stopped after 0 instances"):
        retrieve_study(silent_pacs.node, OUR_TITLE, "1.2.3", store, timeouts=quick)
    with pytest.raises(PacsError, match=r"^PACS SILENT@127\.0\.0\.1:\d+: the search stopped"):
        find_studies(silent_pacs.node, OUR_TITLE, timeouts=quick)


# --------------------------------------------------------------------------- nodes and contexts


@pytest.mark.parametrize(
    ("title", "host", "port", "expected"),
    [
        ("", "pacs", 104, "AE title is empty"),
        ("A" * 17, "pacs", 104, "at most 16"),
        ("BACK\\SLASH", "pacs", 104, "backslash"),
        ("PACS", "  ", 104, "host is empty"),
        ("PACS", "pacs server", 104, "not a host name"),
        ("PACS", "pacs", 0, "1 to 65535, got 0"),
        ("PACS", "pacs", 70000, "1 to 65535"),
    ],
)
def test_remote_node_is_validated(title: str, host: str, port: int, expected: str) -> None:
    with pytest.raises(PacsError, match=expected):
        RemoteNode(title, host, port)


def test_remote_node_names_itself() -> None:
    node = RemoteNode(" ORTHANC ", " 10.0.0.5 ", 4242)
    assert (node.ae_title, node.host) == ("ORTHANC", "10.0.0.5")
    assert str(node.error("association rejected")) == "PACS ORTHANC@10.0.0.5:4242: association rejected"


def test_storage_contexts_fit_beside_the_get_context() -> None:
    contexts = storage_contexts()
    assert 0 < len(contexts) <= MAX_PRESENTATION_CONTEXTS - 1
    assert CTImageStorage in [sop_class for sop_class, _syntaxes in contexts]
    assert all(syntaxes[0] == ExplicitVRLittleEndian for _sop_class, syntaxes in contexts)

    narrowed = storage_contexts([CTImageStorage], {CTImageStorage: {ExplicitVRLittleEndian}})
    assert narrowed == [(CTImageStorage, tuple(s for s in OFFERED_TRANSFER_SYNTAXES if s != ExplicitVRLittleEndian))]
