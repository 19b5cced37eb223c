"""The liver tab before the engine is ready, and what a liver finding says of its volume and its map."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from medview.engine.api import Provenance, SegmentationResult
from medview.ui.ct.findings.liver import liver_finding

from .conftest import make_volume, open_and_wait

SLICES = 10


@pytest.fixture
def engine(shipped_engine: Any) -> Any:
    if not shipped_engine.cards("liver_segmentation"):
        pytest.skip("no liver_segmentation bundle in resources/models")
    return shipped_engine


def segmentation(card: Any, first: int, last: int) -> SegmentationResult:
    """A liver mask on slices ``first``-``last`` of a 10-slice series of 2 x 1 x 1 mm voxels."""
    mask = np.zeros((SLICES, 16, 16), bool)
    mask[first : last + 1, 4:12, 4:12] = True
    provenance = Provenance.of(card, threshold=0.5, device="CPU", seconds=1.0)
    return SegmentationResult(provenance, "liver", mask.astype(np.float16), mask, (2.0, 1.0, 1.0))


def show(qtbot: Any, window: Any, finding: Any, volume: Any) -> None:
    """Hand ``finding`` to the panel as a finished liver run does, and wait until it is listed."""
    with qtbot.waitSignal(window.ct.findings.finding_added, timeout=5000):
        window.ct.findings.liver.found.emit(volume, finding)


@pytest.mark.parametrize(
    ("first", "last", "ends"),
    [(0, 4, "first slice"), (3, SLICES - 1, "last slice"), (0, SLICES - 1, "first and last slice"), (2, 6, "")],
)
def test_a_liver_reaching_an_end_of_the_scan_has_its_volume_as_a_lower_bound(
    qtbot: Any, window: Any, engine: Any, first: int, last: int, ends: str
) -> None:
    card = engine.cards("liver_segmentation")[0]
    volume = make_volume(np.zeros((SLICES, 16, 16), np.int16), spacing=(2.0, 1.0, 1.0), series_uid="1.2.3")
    window.ct.show_loaded_volume(volume)
    result = segmentation(card, first, last)
    finding = liver_finding(result, card, SLICES)
    show(qtbot, window, finding, volume)

    panel = window.ct.findings
    text = panel.details.toPlainText()
    lines = text.splitlines()
    millilitres = f"{result.volume_ml:,.1f} mL"
    verdict = next(index for index, line in enumerate(lines) if line.startswith("Liver volume"))
    assert lines[verdict + 1] == finding.provenance.validated  # what the model's validation showed, under it
    assert finding.provenance.validated.startswith("Validated: Dice")
    assert f"slices {first + 1}-{last + 1} of {SLICES}" in text
    if ends:
        assert lines[verdict] == (
            f"Liver volume {millilitres}, a lower bound: the liver continues beyond the scanned range"
        )
        assert f"The mask reaches the {ends} of the series" in text
        assert panel.list.item(0).text().startswith(f"Liver ≥ {result.volume_ml:,.0f} mL (continues beyond the scan)")
    else:
        assert lines[verdict] == f"Liver volume {millilitres}"
        assert "lower bound" not in text
        assert panel.list.item(0).text().startswith(f"Liver {result.volume_ml:,.0f} mL: ")
    assert finding.provenance.validated in panel.list.item(0).toolTip()


def test_the_probability_map_colour_bar_says_what_it_shows(qtbot: Any, window: Any, engine: Any) -> None:
    card = engine.cards("liver_segmentation")[0]
    volume = make_volume(np.zeros((SLICES, 16, 16), np.int16), spacing=(2.0, 1.0, 1.0), series_uid="1.2.4")
    window.ct.show_loaded_volume(volume)
    show(qtbot, window, liver_finding(segmentation(card, 2, 6), card, SLICES), volume)
    axial = window.ct.mpr.axial
    axial.set_index(4)
    window.ct.findings.heatmap_box.click()
    assert axial.colour_bar.isVisible()
    assert axial.colour_bar.getAxis("left").labelText == "liver probability 0-1"


def test_until_the_engine_is_ready_the_liver_tab_says_it_is_loading_and_what_is_missing_if_it_fails(
    qtbot: Any, window: Any, engine: Any, sample_series_dir: Any
) -> None:
    liver = window.ct.findings.liver
    assert window.ct.findings.task_tabs.currentWidget() is liver
    assert liver.model_box.currentText() == ""
    assert liver.model_box.placeholderText() == "Loading the AI engine…"
    assert not liver.segment_button.isEnabled()
    assert liver.blocked_note.isVisible()
    assert liver.blocked_note.text() == "Loading the AI engine…"

    window.ct.findings.set_engine_problem("torch could not be imported: libtorch_cpu.so missing")
    assert liver.model_box.placeholderText() == "AI engine unavailable"
    assert liver.blocked_note.text() == (
        "The AI engine did not start: torch could not be imported: libtorch_cpu.so missing"
    )
    assert not liver.segment_button.isEnabled()

    window.set_engine(engine)
    assert liver.blocked_note.text() == "Open a CT series first"
    open_and_wait(qtbot, window, sample_series_dir)
    assert liver.segment_button.isEnabled()
    assert not liver.blocked_note.isVisible()
    assert liver.model_box.currentText().startswith("liver-eas-unet")
    qtbot.waitUntil(lambda: not window.tasks.running, timeout=60_000)  # the model loaded ahead of a run
