"""The PACS loop against a real Orthanc (Debian's ``orthanc`` package) on loopback.

Orthanc is configured as a hospital would (``bench/orthanc.py``).  The round
trip is one test: P001 pushed into Orthanc, found and retrieved by DIMSE and by
DICOMweb, liver and COVID-19 run on it, their reports, SEG, maps and the case
report PDF sent back through the outbox, Orthanc asked for every object, each
fetched again and parsed with highdicom, and the results reopened beside the
CT.  Beside it: C-MOVE into MedView's receiver (the destination Orthanc knows),
DICOMweb search/retrieve/store and errors, the outbox by STOW-RS, and DICOM
over TLS against a second Orthanc that takes TLS only.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from medview.audit import audit_log
from medview.engine.service import Engine
from medview.io import dicom_results as dr
from medview.io.dicom import load_dicom
from medview.pacs import dicomweb
from medview.pacs.dicomweb import WebNode
from medview.pacs.move import move_study
from medview.pacs.outbox import Outbox
from medview.pacs.query import RemoteNode, find_series, find_studies, retrieve_study
from medview.pacs.receiver import PacsError, StorageServer
from medview.pacs.send import send_files
from medview.pacs.store import LocalStudyStore
from medview.workflows.dicom_results import reopen_results, write_result_objects
from tests.conftest import RESOURCES
from tests.orthanc import LOCALHOST, PACS_TITLE, RunningOrthanc, free_port, start_orthanc

OUR_TITLE = "MEDVIEW"
P001 = Path("covid_ct") / "COVID-CT-MD" / "COVID-19" / "P001"


@dataclass
class PacsAndReceiver:
    orthanc: RunningOrthanc
    receiver_store: LocalStudyStore  # MedView's receiver: the C-MOVE destination Orthanc knows

    @property
    def node(self) -> RemoteNode:
        return self.orthanc.node


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PacsAndReceiver]:
    folder = tmp_path_factory.mktemp("orthanc")
    receiver_store = LocalStudyStore(folder / "medview-received")
    receiver = StorageServer(LOCALHOST)
    receiver.start(OUR_TITLE, 0, receiver_store)
    assert receiver.port is not None
    try:
        running = start_orthanc(folder, OUR_TITLE, receiver.port)
        yield PacsAndReceiver(running, receiver_store)
        running.stop()
    finally:
        receiver.stop()
        receiver_store.close()


def _push_p001(orthanc: PacsAndReceiver, shared_data: Path) -> list[Path]:
    """P001 into Orthanc as a modality would send it (again is harmless: a PACS keeps one copy)."""
    source = sorted((shared_data / P001).glob("*.dcm"))
    assert len(source) == 148
    pushed = send_files(orthanc.node, "SCANNER", source)
    assert all(outcome.stored for outcome in pushed), {o.message for o in pushed if not o.stored}
    return source


def test_c_move_sends_the_study_to_medviews_receiver(orthanc: PacsAndReceiver, shared_data: Path) -> None:
    source = _push_p001(orthanc, shared_data)
    (study,) = find_studies(orthanc.node, OUR_TITLE, patient_id=pydicom.dcmread(source[0]).PatientID)
    moved = move_study(orthanc.node, OUR_TITLE, study.study_uid, orthanc.receiver_store)
    assert moved.complete
    assert len(moved.instances) == 148
    assert moved.expected == 148
    assert {instance.calling_ae for instance in moved.instances} == {PACS_TITLE}  # Orthanc opened the association
    uids = {str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in source}
    assert {instance.sop_instance_uid for instance in moved.instances} == uids


def test_c_move_to_a_destination_the_pacs_does_not_know_says_what_to_do(
    orthanc: PacsAndReceiver, shared_data: Path
) -> None:
    source = _push_p001(orthanc, shared_data)
    (study,) = find_studies(orthanc.node, OUR_TITLE, patient_id=pydicom.dcmread(source[0]).PatientID)
    with pytest.raises(PacsError, match=r"refused the move .* do not know the move destination ELSEWHERE: if so, ask"):
        move_study(orthanc.node, OUR_TITLE, study.study_uid, orthanc.receiver_store, destination="ELSEWHERE")


def _case_report_pdf(path: Path, lines: list[str]) -> bytes:
    """A one-page PDF drawn with Qt (as the app's case report is), for the encapsulated PDF."""
    from PySide6 import QtGui

    writer = QtGui.QPdfWriter(str(path))
    painter = QtGui.QPainter(writer)
    for number, line in enumerate(lines):
        painter.drawText(200, 400 + number * 300, line)
    painter.end()
    return path.read_bytes()


def test_round_trip_push_retrieve_run_send_back_and_reopen(
    qapp: object, orthanc: PacsAndReceiver, shared_data: Path, tmp_path: Path
) -> None:
    """Issue 22's loop as one test: P001 pushed into Orthanc; found and retrieved by DIMSE (C-FIND, C-GET) and by
    DICOMweb (QIDO-RS, WADO-RS); liver and COVID-19 run; their reports, SEG, maps and the case report PDF sent
    back through the outbox; Orthanc asked for every object, each fetched again and parsed with highdicom; and
    the CT reopened in MedView's store with the results beside it shows them as stored findings."""
    # a modality pushes the study into the PACS
    source = _push_p001(orthanc, shared_data)
    uids = {str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in source}

    # MedView finds it and fetches it, both ways
    (study,) = find_studies(orthanc.node, OUR_TITLE, patient_id=pydicom.dcmread(source[0]).PatientID)
    before = sorted(series.series_uid for series in find_series(orthanc.node, OUR_TITLE, study.study_uid))
    with LocalStudyStore(tmp_path / "studies") as store:
        fetched = retrieve_study(
            orthanc.node, OUR_TITLE, study.study_uid, store, sop_classes=("1.2.840.10008.5.1.4.1.1.2",)
        )
        ct = [instance for instance in fetched.instances if instance.modality == "CT"]
        assert {instance.sop_instance_uid for instance in ct} == uids
        volume = load_dicom([instance.path for instance in ct])
    with LocalStudyStore(tmp_path / "by-dicomweb") as web_store:
        by_web = dicomweb.retrieve_study(_web(orthanc), study.study_uid, web_store)
        assert {i.sop_instance_uid for i in by_web.instances if i.modality == "CT"} == uids
    assert volume.shape[0] == 148

    # the models run, and the results go back through the outbox with the case report
    engine = Engine([RESOURCES / "models"], device_preference="cpu")
    (liver_card,) = engine.cards("liver_segmentation")
    (covid_card,) = engine.cards("covid_ct")
    (lung_card,) = engine.cards("lung_segmentation")
    liver = engine.segment_liver(liver_card, volume)
    covid = engine.classify_covid(covid_card, volume, lung_card=lung_card, explain=True)
    written = []
    for name, result in (("liver", liver), ("covid", covid)):
        folder = tmp_path / name
        folder.mkdir()
        written += write_result_objects(folder, volume, result).files
    pdf = _case_report_pdf(tmp_path / "report.pdf", [f"Liver {liver.volume_ml:.0f} mL", f"COVID-19: {covid.verdict}"])
    written.append(dr.write_encapsulated_pdf(tmp_path / "report.dcm", pdf, volume, title="MedView case report"))
    outbox = Outbox(tmp_path / "outbox")
    outbox.add(written, orthanc.node, "liver and COVID-19 results, case report", study_uid=study.study_uid)
    delivery = outbox.deliver(OUR_TITLE)
    assert (delivery.stored, delivery.failed) == (len(written), 0), delivery.summary
    assert not outbox.waiting()

    # the PACS holds every object in the patient's study: what Orthanc says of each
    expected = {str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID): path for path in written}
    after = find_series(orthanc.node, OUR_TITLE, study.study_uid)
    new = sorted(series.modality for series in after if series.series_uid not in before)
    assert new == ["DOC", "OT", "OT", "SEG", "SR", "SR"]  # the PDF, 2 maps, the SEG, 2 reports
    for uid in expected:
        (found,) = orthanc.orthanc.rest("/tools/lookup", uid.encode())
        assert found["Type"] == "Instance"
    (now,) = find_studies(orthanc.node, OUR_TITLE, patient_id=study.patient_id)
    classes = {"1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.30"}
    assert classes | {"1.2.840.10008.5.1.4.1.1.104.1"} <= set(now.sop_classes)  # SR, SEG, map, encapsulated PDF

    # fetched again, each parses with highdicom (pydicom for the PDF), and MedView shows them again
    with LocalStudyStore(tmp_path / "again") as again:
        back = retrieve_study(orthanc.node, OUR_TITLE, study.study_uid, again, sop_classes=now.sop_classes)
        ours = [p for p in back.paths if str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) in expected]
        assert len(ours) == len(expected)
        for path in ours:
            dataset = pydicom.dcmread(path)
            if dataset.Modality == "SR":
                content = hd.sr.srread(path).content
                assert [*content.get_image_measurement_groups(), *content.get_volumetric_roi_measurement_groups()]
            elif dataset.Modality == "SEG":
                assert hd.seg.segread(path).number_of_segments == 1
            elif dataset.Modality == "DOC":
                assert dataset.EncapsulatedDocument[: len(pdf)] == pdf
            else:
                assert hd.pm.ParametricMap.from_dataset(dataset).NumberOfFrames > 0
        ct_again = [instance.path for instance in again.study_instances(study.study_uid) if instance.modality == "CT"]
        reopened_volume = load_dicom(ct_again)
    reopened, problems = reopen_results(reopened_volume)
    assert problems == []
    by_kind = {result.kind: result for result in reopened}
    assert set(by_kind) == {"liver", "COVID-19"}
    assert by_kind["liver"].mask is not None
    assert np.array_equal(by_kind["liver"].mask, liver.mask)
    assert by_kind["COVID-19"].map is not None
    assert set(by_kind["COVID-19"].map.values) == set(covid.heatmaps)


# --------------------------------------------------------------------------- DICOMweb


def _web(orthanc: PacsAndReceiver) -> WebNode:
    return WebNode(f"http://{LOCALHOST}:{orthanc.orthanc.http_port}/dicom-web")


def test_round_trip_by_dicomweb_search_retrieve_and_store(
    orthanc: PacsAndReceiver, shared_data: Path, tmp_path: Path
) -> None:
    """The same loop over HTTP: QIDO-RS finds P001, WADO-RS fetches it as Orthanc keeps it, STOW-RS stores
    the results, and QIDO-RS then lists them in the patient's study."""
    source = _push_p001(orthanc, shared_data)
    web = _web(orthanc)
    (study,) = dicomweb.find_studies(web, patient_id=pydicom.dcmread(source[0]).PatientID)
    assert study.modalities[:1] == ("CT",)
    with LocalStudyStore(tmp_path / "studies") as store:
        fetched = dicomweb.retrieve_study(web, study.study_uid, store)
        assert fetched.complete
        uids = {str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in source}
        ct = [instance for instance in fetched.instances if instance.modality == "CT"]
        assert {instance.sop_instance_uid for instance in ct} == uids
        assert {instance.transfer_syntax_uid for instance in ct} == {"1.2.840.10008.1.2.4.70"}  # as kept
        volume = load_dicom([instance.path for instance in ct])
    engine = Engine([RESOURCES / "models"], device_preference="cpu")
    (kidney_card,) = engine.cards("kidney_stone")
    kidney = engine.classify_kidney_slices(kidney_card, volume, range(60, 70), explain_slices=[65])
    (tmp_path / "kidney").mkdir()
    written = write_result_objects(tmp_path / "kidney", volume, kidney).files
    outcomes = dicomweb.store_files(web, list(written))
    assert [outcome.stored for outcome in outcomes] == [True] * len(written), [o.message for o in outcomes]
    series = dicomweb.find_series(web, study.study_uid)
    assert "SR" in {one.modality for one in series}
    stored = {str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID) for path in written}
    assert stored <= {one.series_uid for one in series}


def test_dicomweb_errors_name_the_server_and_what_happened(orthanc: PacsAndReceiver) -> None:
    with pytest.raises(
        PacsError, match=r"DICOMweb http://127\.0\.0\.1:\d+/dicom-web: cannot connect \(connection refused\)"
    ):
        dicomweb.find_studies(WebNode(f"http://{LOCALHOST}:{free_port()}/dicom-web"))
    with pytest.raises(PacsError, match=r"refused the request \(HTTP 404"):
        dicomweb.find_studies(WebNode(f"http://{LOCALHOST}:{orthanc.orthanc.http_port}/not-dicom-web"))
    with pytest.raises(PacsError, match="is not a URL such as"):
        WebNode("pacs.hospital:8042")


def test_the_outbox_delivers_by_stow_rs_to_a_dicomweb_node(
    orthanc: PacsAndReceiver, shared_data: Path, tmp_path: Path
) -> None:
    source = _push_p001(orthanc, shared_data)
    volume = load_dicom(source)
    values = {40: np.linspace(0, 1, 512 * 512, dtype=np.float32).reshape(512, 512)}
    algorithm = dr.Algorithm("test-model", "1.0.0", demo=True)
    path = dr.write_parametric_map(
        tmp_path / "map.dcm", values, volume, dr.MapMeaning("RAMP", "A ramp"), algorithm, series_description="ramp"
    )
    outbox = Outbox(tmp_path / "outbox")
    outbox.add([path], _web(orthanc), "a map")
    delivery = outbox.deliver(OUR_TITLE)
    assert (delivery.stored, delivery.failed) == (1, 0), delivery.summary
    (item,) = outbox.items()
    assert str(item.node).startswith("DICOMweb http://")
    uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
    assert orthanc.orthanc.rest("/tools/lookup", uid.encode())  # Orthanc holds the instance
    exports = [event for event in audit_log().read_events() if event.event == "Export"]
    assert next(o for o in exports[-1].objects if o["role"] == "Destination")["format"] == "DICOMweb STOW-RS"


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningOrthanc, Path]]:
    """Orthanc taking DICOM over TLS only, with a certificate for 127.0.0.1 from its own CA file."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed (installer/bootstrap.sh test installs it)")
    folder = tmp_path_factory.mktemp("orthanc-tls")
    certificate, key = folder / "pacs.pem", folder / "pacs.key"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(certificate),
            "-days",
            "2",
            "-subj",
            "/CN=test PACS",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    tls = {
        "DicomTlsEnabled": True,
        "DicomTlsCertificate": str(certificate),
        "DicomTlsPrivateKey": str(key),
        "DicomTlsTrustedCertificates": str(certificate),
        "DicomTlsRemoteCertificateRequired": False,
    }
    running = start_orthanc(folder, OUR_TITLE, free_port(), tls)
    yield running, certificate
    running.stop()


def test_tls_association_with_the_hospital_ca_and_clear_refusals_without(
    tls_orthanc: tuple[RunningOrthanc, Path],
) -> None:
    running, ca_file = tls_orthanc
    secure = RemoteNode(PACS_TITLE, LOCALHOST, running.dicom_port, tls=True, ca_file=str(ca_file))
    assert find_studies(secure, OUR_TITLE) == []  # associated over TLS: the empty PACS answers
    assert str(secure).endswith("(TLS)")
    untrusted = RemoteNode(PACS_TITLE, LOCALHOST, running.dicom_port, tls=True)
    with pytest.raises(PacsError, match=r"its TLS certificate is not trusted .*: give the hospital's CA file"):
        find_studies(untrusted, OUR_TITLE)
    with pytest.raises(PacsError, match=r"or it was aborted \(does the PACS expect TLS on this port\?\)"):
        find_studies(RemoteNode(PACS_TITLE, LOCALHOST, running.dicom_port), OUR_TITLE)  # plain DICOM to a TLS port
