"""The whole flow with every connection to another machine blocked: start, open a series, run each model, export,
report; a recording and a photo too.  Loopback stays open (the PACS tests use it).

Python's audit hooks see every socket connect and name lookup of the process (``NetworkWatch``, which
``medview --self-test`` uses); native code that opens sockets on its own is not seen here, which the
offline installer's proof covers (installer/verify_offline.sh runs the self-test with no network interface).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from medview.ui.qt import QtGui
from medview.ui.selftest import NetworkWatch
from tests.gui.test_covid_findings import classify as classify_covid
from tests.gui.test_findings_panel import segment
from tests.gui.test_kidney_findings import run as find_kidney_stones
from tests.gui.test_lung_panel import open_and_classify
from tests.gui.test_skin_panel import drop, wait_settled

from .conftest import COVID_P001, SAMPLE_SERIES, open_and_wait, wait_until_settled

NORMAL_CHEST = COVID_P001.parents[1] / "Normal" / "normal001"  # 20 slices: the COVID pipeline end to end, quickly
RECORDING = Path("lung_sound") / "icbhi_sample" / "104_1b1_Ar_sc_Litt3200.wav"
PHOTO = Path("skin") / "isic_uda1_250px" / "ISIC_0000150.jpg"
#: an address reserved for documentation (RFC 5737): never a real host
UNREACHABLE = ("192.0.2.1", 80)

_WATCH = NetworkWatch(enabled=False)  # an audit hook cannot be removed: one for the session, on only in this test


@pytest.fixture
def network_blocked() -> Iterator[NetworkWatch]:
    if not getattr(_WATCH, "installed", False):
        _WATCH.install()
        _WATCH.installed = True  # type: ignore[attr-defined]
    _WATCH.attempts.clear()
    _WATCH.enabled = True
    try:
        yield _WATCH
    finally:
        _WATCH.enabled = False


@pytest.fixture
def engine(shipped_engine: Any) -> Any:
    for task in ("liver_segmentation", "kidney_stone", "covid_ct", "lung_sound", "skin_lesion"):
        if not shipped_engine.cards(task):
            pytest.skip(f"no {task} bundle in resources/models")
    return shipped_engine


def test_the_whole_flow_works_with_the_network_blocked(
    qtbot: Any, window: Any, engine: Any, shared_data: Path, tmp_path: Path, network_blocked: NetworkWatch
) -> None:
    # the watch works: a connection to another machine is refused and recorded
    with pytest.raises(OSError, match="network use blocked"):
        socket.create_connection(UNREACHABLE, timeout=1)
    assert network_blocked.attempts == ["getaddrinfo '192.0.2.1'"]
    network_blocked.attempts.clear()

    window.set_engine(engine)
    open_and_wait(qtbot, window, SAMPLE_SERIES)
    liver = segment(qtbot, window)
    # the finding just listed is the one exported
    wait_until_settled(qtbot, window, window.ct.findings.export_seg(tmp_path / "liver.dcm"))
    wait_until_settled(qtbot, window, window.ct.findings.export_nifti(tmp_path / "liver.nii.gz"))
    kidney = find_kidney_stones(qtbot, window)
    wait_until_settled(qtbot, window, window.export_anonymised(tmp_path / "anonymised"))
    wait_until_settled(qtbot, window, window.export_report(tmp_path / "report.pdf"))
    assert window.export_view(tmp_path / "view.png")

    open_and_wait(qtbot, window, shared_data / NORMAL_CHEST)
    covid = classify_covid(qtbot, window)
    lung = open_and_classify(qtbot, window, shared_data / RECORDING)
    drop(window, [shared_data / PHOTO])
    wait_settled(qtbot, window, 1)

    assert network_blocked.attempts == []
    # and each step did its work
    assert liver.result.mask.any()
    assert kidney.provenance.model_id
    assert covid.provenance.model_id
    assert len(lung.scores) == len(lung.cycles) > 0
    assert window.skin.entries[0].result is not None
    assert (tmp_path / "liver.dcm").stat().st_size > 0
    assert (tmp_path / "liver.nii.gz").stat().st_size > 0
    assert any((tmp_path / "anonymised").rglob("*.dcm"))
    assert (tmp_path / "report.pdf").read_bytes().startswith(b"%PDF")
    assert not QtGui.QImage(str(tmp_path / "view.png")).isNull()
