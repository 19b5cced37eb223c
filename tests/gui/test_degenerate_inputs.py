"""What the app says when a CT model is given an input it was never meant for: a blank series or slice, a
sparse series. A model answers anything; the app must not show that answer as a plain verdict.

(The lung sound workspace's silent and too-short recordings: tests/gui/test_lung_panel.py,
``test_silence_and_a_short_clip_open_without_cycles_and_say_why``.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medview.engine.fitness import volume_fitness
from tests.gui.conftest import COVID_P001, SAMPLE_SERIES, make_volume, open_and_wait, wait_until_settled

RUN_TIMEOUT_MS = 300_000


@pytest.fixture
def ct_window(qtbot: Any, window: Any, shipped_engine: Any) -> Any:
    window.set_engine(shipped_engine)
    return window


def show(window: Any, volume: Any) -> Any:
    window.ct.show_loaded_volume(volume)
    return volume


def run_to_finding(qtbot: Any, window: Any, runner: Any) -> Any:
    with qtbot.waitSignal(window.ct.findings.finding_added, timeout=RUN_TIMEOUT_MS) as blocker:
        task = runner.run()
        assert task is not None, runner.blocked_note.text() or runner.note.text()
    return blocker.args[0]


def verdict_then_warning(finding: Any, verdict: str, warning: str) -> None:
    """The warning is the finding's, and its summary says it right after the verdict, before any table."""
    assert any(warning in each for each in finding.warnings), finding.warnings
    summary = finding.summary_html
    tables = summary.index("<table") if "<table" in summary else len(summary)
    assert summary.index(verdict) < summary.index(warning) < tables


def blank_ct(slices: int = 30) -> Any:
    return make_volume(
        np.full((slices, 128, 128), -1000, np.int16), spacing=(2.0, 2.0, 2.0), series_uid="blank", description="blank"
    )


def test_liver_on_a_blank_series_finds_no_liver_and_says_the_series_is_uniform(qtbot: Any, ct_window: Any) -> None:
    show(ct_window, blank_ct())
    finding = run_to_finding(qtbot, ct_window, ct_window.ct.findings.liver)
    assert finding.title.startswith("No liver found")
    verdict_then_warning(finding, "No liver found in this series", "The series is uniform (every voxel -1000)")
    assert "0.0 mL" not in finding.summary_html


def test_kidney_on_a_blank_slice_says_its_probability_means_nothing(qtbot: Any, ct_window: Any) -> None:
    sample = open_and_wait(qtbot, ct_window, SAMPLE_SERIES)
    voxels = sample.voxels.copy()
    voxels[5] = -1000
    show(ct_window, make_volume(voxels, spacing=sample.spacing, series_uid="sample-blank-6", description="one blank"))
    ct_window.ct.mpr.axial.set_index(5)
    runner = ct_window.ct.findings.kidney
    runner.scope_box.setCurrentIndex(1)  # the slice on screen
    finding = run_to_finding(qtbot, ct_window, runner)
    assert any("1 slice(s) run are uniform (blank: 6)" in warning for warning in finding.warnings)
    assert "their probabilities mean nothing" in window_details(ct_window)


def window_details(window: Any) -> str:
    return window.ct.findings.details.toPlainText()


def test_covid_on_a_blank_series_is_refused_with_the_reason(
    qtbot: Any, ct_window: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown: list[tuple[str, str]] = []
    monkeypatch.setattr("medview.ui.main_window.show_message", lambda _p, t, text, *_a, **_k: shown.append((t, text)))
    show(ct_window, blank_ct(60))
    runner = ct_window.ct.findings.covid
    runner.lung_box.choose(None)
    wait_until_settled(qtbot, ct_window, runner.run(), RUN_TIMEOUT_MS)
    assert "The series is uniform" in runner.note.text()
    qtbot.waitUntil(lambda: bool(shown), timeout=10_000)
    assert "no lung found" in shown[0][1]
    assert ct_window.ct.findings.list.count() == 0  # no verdict on a blank series


def test_covid_on_a_sparse_series_says_so_beside_the_verdict(qtbot: Any, ct_window: Any, shared_data: Path) -> None:
    """Every 8th slice of P001 (16 mm apart, as the CAP and normal samples were kept): the one group is mostly
    black padding, and the series is far sparser than the model's 2 mm data; both are said with the verdict."""
    full = open_and_wait(qtbot, ct_window, shared_data / COVID_P001)
    sparse = make_volume(
        np.ascontiguousarray(full.voxels[::8]),
        spacing=(full.spacing[0] * 8, *full.spacing[1:]),
        series_uid="p001-every-8th",
        description="P001 every 8th slice",
    )
    card = ct_window.ct.findings.covid.model_box.selected_card()
    assert any("16.0 mm apart" in warning for warning in volume_fitness(card, sparse))
    assert volume_fitness(card, full) == []  # the full 2 mm series is what the model was validated on
    show(ct_window, sparse)
    runner = ct_window.ct.findings.covid
    runner.lung_box.choose(None)
    runner.grad_cam_box.setChecked(False)
    finding = run_to_finding(qtbot, ct_window, runner)
    verdict_then_warning(finding, f"Verdict: {finding.result.verdict}", "Slices are 16.0 mm apart")
    assert any("padding" in warning and "say little about this patient" in warning for warning in finding.warnings)
    details = window_details(ct_window)
    assert details.index("Verdict:") < details.index("16.0 mm apart") < details.index("padding")


def test_skin_on_a_blank_photo_and_a_tiny_one_says_so_beside_the_verdict(
    qtbot: Any, window: Any, shipped_engine: Any, tmp_path: Path
) -> None:
    from PIL import Image

    blank, tiny = tmp_path / "blank.png", tmp_path / "tiny.png"
    Image.new("RGB", (300, 300), (200, 150, 140)).save(blank)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(tiny)
    window.set_engine(shipped_engine)
    window.open_paths([blank, tiny])
    skin = window.skin
    qtbot.waitUntil(
        lambda: len(skin.entries) == 2 and all(e.result for e in skin.entries) and not skin.running, timeout=120_000
    )
    by_name = {entry.path.name: entry for entry in skin.entries}
    assert any("The photo is uniform" in warning for warning in by_name["blank.png"].warnings)
    assert any("32x24 pixels, smaller than the 224 pixels" in warning for warning in by_name["tiny.png"].warnings)
    for item in skin.items():
        skin.gallery.clearSelection()
        item.setSelected(True)
        verdict = skin.views[0].verdict.text()
        assert verdict.index("Validated: ") < verdict.index("⚠")  # under the verdict and its validated line
