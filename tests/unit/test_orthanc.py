"""The PACS loop against a real Orthanc (Debian's ``orthanc`` package) on loopback.

Orthanc is configured as a hospital would: its own AE title, MedView declared
as a known modality (so only MedView may query and retrieve, as
``DicomAlwaysAllowFind/Get`` stay off), the DICOMweb plugin loaded.  The round
trip, by DIMSE: P001 is pushed into Orthanc, found with C-FIND and fetched
with C-GET into MedView's study store, liver and COVID-19 run on it, their
report, SEG and maps go back through the outbox, and Orthanc is then asked
(C-FIND, and its REST API on loopback) for every object, which is fetched
again and parsed with highdicom.

Still to come in this loop (issue 22): DICOMweb retrieve and store, C-MOVE,
and reopening the results as findings.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from medview.engine.service import Engine
from medview.io.dicom import load_dicom
from medview.pacs.outbox import Outbox
from medview.pacs.query import RemoteNode, find_series, find_studies, retrieve_study
from medview.pacs.send import send_files
from medview.pacs.store import LocalStudyStore
from medview.workflows.dicom_results import write_result_objects
from tests.conftest import RESOURCES

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
LOCALHOST = "127.0.0.1"
PACS_TITLE = "HOSPITALPACS"
OUR_TITLE = "MEDVIEW"
P001 = Path("covid_ct") / "COVID-CT-MD" / "COVID-19" / "P001"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOCALHOST, 0))
        return int(probe.getsockname()[1])


@dataclass
class RunningOrthanc:
    process: subprocess.Popen[bytes]
    dicom_port: int
    http_port: int
    log: Path

    @property
    def node(self) -> RemoteNode:
        return RemoteNode(PACS_TITLE, LOCALHOST, self.dicom_port)

    def rest(self, path: str) -> object:
        with urllib.request.urlopen(f"http://{LOCALHOST}:{self.http_port}{path}", timeout=30) as answer:
            return json.load(answer)


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningOrthanc]:
    if not Path(ORTHANC).is_file():
        pytest.skip("Orthanc is not installed (Debian: installer/bootstrap.sh test installs orthanc)")
    folder = tmp_path_factory.mktemp("orthanc")
    dicom_port, http_port = _free_port(), _free_port()
    config = {
        "Name": "MedView test PACS",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "DicomAet": PACS_TITLE,
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": True,
        # only known modalities may query and retrieve (Orthanc's defaults); MedView is one
        "DicomModalities": {"medview": [OUR_TITLE, LOCALHOST, _free_port()]},
        "DicomAlwaysAllowFind": False,
        "DicomAlwaysAllowGet": False,
        "Plugins": [str(DICOMWEB_PLUGIN)] if DICOMWEB_PLUGIN.is_file() else [],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    config_path = folder / "orthanc.json"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    log = folder / "orthanc.log"
    with open(log, "wb") as output:
        process = subprocess.Popen([ORTHANC, str(config_path)], stdout=output, stderr=subprocess.STDOUT)
    running = RunningOrthanc(process, dicom_port, http_port, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            running.rest("/system")
            socket.create_connection((LOCALHOST, dicom_port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        process.kill()
        pytest.fail(f"Orthanc did not start: {log.read_text(errors='replace')[-3000:]}")
    yield running
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()


def test_round_trip_by_dimse_results_arrive_in_orthanc_and_parse(
    orthanc: RunningOrthanc, shared_data: Path, tmp_path: Path
) -> None:
    # a modality pushes the study into the PACS
    source = sorted((shared_data / P001).glob("*.dcm"))
    assert len(source) == 148
    pushed = send_files(orthanc.node, "SCANNER", source)
    assert all(outcome.stored for outcome in pushed), {o.message for o in pushed if not o.stored}

    # MedView finds it and fetches it
    (study,) = find_studies(orthanc.node, OUR_TITLE, patient_id=pydicom.dcmread(source[0]).PatientID)
    assert [series.modality for series in find_series(orthanc.node, OUR_TITLE, study.study_uid)] == ["CT"]
    with LocalStudyStore(tmp_path / "studies") as store:
        fetched = retrieve_study(orthanc.node, OUR_TITLE, study.study_uid, store)
        assert fetched.complete
        assert len(fetched.paths) == 148
        volume = load_dicom(fetched.paths)
    assert volume.shape[0] == 148

    # the models run, and the results go back through the outbox
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
    outbox = Outbox(tmp_path / "outbox")
    outbox.add(written, orthanc.node, "liver and COVID-19 results", study_uid=study.study_uid)
    delivery = outbox.deliver(OUR_TITLE)
    assert (delivery.stored, delivery.failed) == (len(written), 0), delivery.summary
    assert not outbox.waiting()

    # the PACS holds every object in the patient's study, and each parses
    expected = {str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in written}
    modalities = sorted(series.modality for series in find_series(orthanc.node, OUR_TITLE, study.study_uid))
    assert modalities == ["CT", "OT", "OT", "SEG", "SR", "SR"]  # maps are OT, reports SR
    statistics = orthanc.rest(f"/studies/{_orthanc_study_id(orthanc, study.study_uid)}/statistics")
    assert int(statistics["CountInstances"]) == 148 + len(written)  # type: ignore[index]
    (now,) = find_studies(orthanc.node, OUR_TITLE, patient_id=study.patient_id)
    assert {"1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.30"} <= set(
        now.sop_classes
    )  # Comprehensive 3D SR, Segmentation, Parametric Map, as Orthanc lists them
    with LocalStudyStore(tmp_path / "again") as again:
        back = retrieve_study(orthanc.node, OUR_TITLE, study.study_uid, again, sop_classes=now.sop_classes)
        ours = {p for p in back.paths if str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) in expected}
        assert len(ours) == len(expected)
        kinds = set()
        for path in ours:
            dataset = pydicom.dcmread(path)
            if dataset.Modality == "SR":
                report = hd.sr.srread(path)
                assert (
                    report.content.get_image_measurement_groups()
                    or report.content.get_volumetric_roi_measurement_groups()
                )
            elif dataset.Modality == "SEG":
                assert hd.seg.segread(path).number_of_segments == 1
            else:
                assert hd.pm.ParametricMap.from_dataset(dataset).NumberOfFrames > 0
            kinds.add(dataset.Modality)
        assert kinds == {"SR", "SEG", "OT"}


def _orthanc_study_id(orthanc: RunningOrthanc, study_uid: str) -> str:
    """Orthanc's own identifier of a study (its REST API's key), looked up by Study Instance UID."""
    request = urllib.request.Request(
        f"http://{LOCALHOST}:{orthanc.http_port}/tools/lookup", data=study_uid.encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        (found,) = json.load(answer)
    return str(found["ID"])
