"""Orthanc (Debian's ``orthanc`` package) on loopback, configured as a hospital would: for the PACS tests and
the send benchmark (``tests/orthanc.py`` turns its errors into skips and failures).

Its own AE title; MedView declared as a known modality at the port of MedView's
receiver (the C-MOVE destination), so only MedView may query and retrieve
(``DicomAlwaysAllowFind/Get`` stay off); the DICOMweb plugin loaded.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medview.pacs.query import RemoteNode

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
LOCALHOST = "127.0.0.1"
PACS_TITLE = "HOSPITALPACS"
START_TIMEOUT_S = 30


class OrthancMissing(RuntimeError):
    """Debian's orthanc package is not installed."""


def free_port() -> int:
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

    def rest(self, path: str, data: bytes | None = None) -> Any:
        """Orthanc's REST API on loopback (the test's own look into the PACS; MedView does not use it)."""
        request = urllib.request.Request(
            f"http://{LOCALHOST}:{self.http_port}{path}", data=data, method="POST" if data is not None else "GET"
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.load(answer)

    def study_id(self, study_uid: str) -> str:
        """Orthanc's own identifier of a study (its REST API's key), by Study Instance UID."""
        (found,) = self.rest("/tools/lookup", study_uid.encode())
        return str(found["ID"])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(15)


def start_orthanc(
    folder: Path, medview_title: str, medview_port: int, extra: dict[str, Any] | None = None
) -> RunningOrthanc:
    """Orthanc on free loopback ports, knowing MedView as ``medview_title`` at ``medview_port``; waits until up.
    ``extra`` adds to or overrides its configuration (TLS, say)."""
    if not Path(ORTHANC).is_file():
        raise OrthancMissing("Orthanc is not installed (Debian: installer/bootstrap.sh test installs orthanc)")
    folder.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = free_port(), free_port()
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
        "DicomModalities": {"medview": [medview_title, LOCALHOST, medview_port]},
        "DicomAlwaysAllowFind": False,
        "DicomAlwaysAllowGet": False,
        "Plugins": [str(DICOMWEB_PLUGIN)] if DICOMWEB_PLUGIN.is_file() else [],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        **(extra or {}),
    }
    config_path = folder / "orthanc.json"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    log = folder / "orthanc.log"
    with open(log, "wb") as output:
        process = subprocess.Popen([ORTHANC, str(config_path)], stdout=output, stderr=subprocess.STDOUT)
    running = RunningOrthanc(process, dicom_port, http_port, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            running.rest("/system")
            socket.create_connection((LOCALHOST, dicom_port), timeout=1).close()  # a TCP connection, TLS or not
            return running
        except OSError:
            time.sleep(0.1)
    running.stop()
    raise RuntimeError(f"Orthanc did not start: {log.read_text(errors='replace')[-3000:]}")
