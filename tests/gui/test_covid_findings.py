"""COVID-19 (paper 002) in the findings panel: the real COVID-CT-MD series through the window, short and odd input.

A run on the real series P001 (148 slices) takes about 15 s on a 2-core CPU with
Grad-CAM, so it is made once and every check of the finding is made on it.
"""

from __future__ import annotations

import html
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medview.engine.api import CovidResult
from medview.ui.covid_findings import GRAD_CAM_THRESHOLD, describe_group
from medview.ui.layers import HeatmapLayer, LabelLayer
from medview.ui.provenance import provenance_html
from medview.ui.qt import QtCore

from .conftest import COVID_P001, make_volume, open_and_wait, wait_until_settled

RUN_TIMEOUT_MS = 300_000


@pytest.fixture
def engine(shipped_engine: Any) -> Any:
    if not shipped_engine.cards("covid_ct"):
        pytest.skip("no covid_ct bundle in resources/models")
    return shipped_engine


@pytest.fixture
def p001(shared_data: Path) -> Path:
    series = shared_data / COVID_P001
    if not series.is_dir():
        pytest.skip(f"COVID-CT-MD P001 not in the shared data: {series}")
    return series


@pytest.fixture
def shown_messages(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """The window's error messages (title, text), recorded instead of shown."""
    shown: list[tuple[str, str]] = []
    monkeypatch.setattr(
        "medview.ui.main_window.show_message", lambda _p, title, text, *a, **k: shown.append((title, text))
    )
    return shown


def classify(qtbot: Any, window: Any) -> Any:
    """Click *Classify COVID-19* and wait for the finding."""
    with qtbot.waitSignal(window.findings.finding_added, timeout=RUN_TIMEOUT_MS) as blocker:
        qtbot.mouseClick(window.findings.covid.classify_button, QtCore.Qt.MouseButton.LeftButton)
    return blocker.args[0]


def section(details: str, start: str, end: str = "</table>") -> str:
    """The part of the summary from ``start`` to the next ``end``."""
    return details.split(start, 1)[1].split(end, 1)[0]


def phantom_chest(depth: int = 40, lungs: bool = True) -> np.ndarray:
    """A (z, 128, 128) HU volume: air around an elliptic soft-tissue body holding two aerated lungs."""
    z, y, x = np.ogrid[:depth, :128, :128]
    voxels = np.full((depth, 128, 128), -1000, np.int16)
    voxels[np.broadcast_to(((y - 64) / 50) ** 2 + ((x - 64) / 60) ** 2 <= 1, voxels.shape)] = 40
    if lungs:
        for centre in (38, 90):
            lung = ((z - depth / 2) / (depth / 2.5)) ** 2 + ((y - 64) / 30) ** 2 + ((x - centre) / 18) ** 2 <= 1
            voxels[lung] = -850
    return voxels


def test_covid_on_the_real_p001_series_shows_verdict_slices_groups_lungs_and_grad_cam(
    qtbot: Any, window: Any, engine: Any, p001: Path
) -> None:
    window.set_engine(engine)
    volume = open_and_wait(qtbot, window, p001)
    panel, runner = window.findings, window.findings.covid
    assert "COVID-19" in [panel.tasks.tabText(i) for i in range(panel.tasks.count())]
    assert runner.classify_button.isEnabled()
    assert runner.grad_cam_box.isChecked()
    # only a demo lung U-Net is shipped: the classical mask is the first choice, the U-Net the other
    assert runner.lung_box.selected_card() is None
    assert any(runner.lung_box.itemData(i) is not None for i in range(runner.lung_box.count()))

    start = time.perf_counter()
    finding = classify(qtbot, window)
    elapsed = time.perf_counter() - start
    result = finding.result
    assert isinstance(result, CovidResult)
    print(
        f"\nCOVID run on P001 {volume.shape}: {elapsed:.1f} s in the window, {result.provenance.seconds:.1f} s "
        f"in the engine ({result.provenance.device}), {len(result.groups)} groups, {len(result.heatmaps)} Grad-CAM"
    )

    # listed, with the verdict and its votes
    assert panel.list.count() == 1
    title = panel.list.item(0).text()
    verdict = re.fullmatch(r"COVID-19: (\S+) \((\d+)/(\d+) groups?[^)]*\): (.+)", title)
    assert verdict is not None, title
    assert verdict[1] == result.verdict
    assert int(verdict[2]) == result.votes[result.verdict]
    assert int(verdict[3]) == len(result.groups)
    assert verdict[4] == f"{result.provenance.label} (demo)"

    shown = panel.details.toPlainText()
    assert f"Verdict: {result.verdict}" in shown
    assert "Every slice" in shown
    details = finding.summary_html + provenance_html(finding.provenance)  # what the panel shows, as HTML
    assert f"Verdict: {result.verdict}</b>" in details
    assert html.escape(result.reason) in details
    for name in result.class_names:
        assert f"{name} {result.votes[name]}" in details
    assert "0.9 rule" in details
    if result.switched:
        assert "switched" in details
        assert "> 0.9" in result.reason

    # one table row per group, with its slices (numbered as in the views) and probabilities
    rows = section(details, "<b>Groups</b>").split("<tr>")[2:]  # after the header row
    assert len(rows) == len(result.groups)
    for row, group in zip(rows, result.groups, strict=True):
        assert html.escape(describe_group(group.sources)) in row
        assert group.kind in row
        for probability in group.scores.probabilities.values():
            assert f"{probability:.3f}" in row
    real = [s for s in result.groups[0].sources if s is not None]
    assert describe_group(result.groups[0].sources).startswith(f"{real[0] + 1}-")

    # kept and left-out slices: counts add up; the grouping says what the paper does with the remainder
    kept = len(result.kept_slices)
    assert f"{kept} of {volume.shape[0]} slices kept" in details
    left_out = re.findall(r"<td align='right'>(\d+)</td>", section(details, "Left out because"))
    assert sum(int(count) for count in left_out) == volume.shape[0] - kept
    remainder = kept % 50
    if remainder > 25 or kept < 50:
        assert f"padded with {50 - remainder} black slices to 50" in details
    elif remainder:
        assert "resampled to 50 by interpolation" in details
    assert details.count("<tr><td align='right'>") >= volume.shape[0]  # every slice's reason, at the end
    for field in ("Trained on", "Ran on", "lung mask: classical method", finding.provenance.label):
        assert field in details

    # the lung mask, outlined
    mask_layer, heatmap_layer = finding.mask_layer, finding.heatmap_layer
    assert isinstance(mask_layer, LabelLayer)
    assert np.array_equal(mask_layer.labels > 0, result.lung_mask)
    assert mask_layer.outline_only
    assert finding.export_label is None
    assert not panel.seg_button.isEnabled()

    # Grad-CAM on the volume grid, drawn on the axial view with its colour bar
    assert isinstance(heatmap_layer, HeatmapLayer)
    assert heatmap_layer.values.shape == volume.shape
    assert set(result.heatmaps) <= set(result.kept_slices)
    assert window.layers.layers[-2:] == [mask_layer, heatmap_layer]
    explained = [index for index, heatmap in result.heatmaps.items() if heatmap.values.any()]
    z = max(explained, key=lambda index: int(result.lung_mask[index].sum()))
    relative = result.heatmaps[z].relative()  # scaled to the slice's own maximum, drawn in the lungs only
    assert np.allclose(heatmap_layer.values[z], relative * result.lung_mask[z], atol=1e-3)
    assert heatmap_layer.values[z].max() > 0.5
    assert not heatmap_layer.values[z][~result.lung_mask[z]].any()
    assert not heatmap_layer.values[[i for i in range(volume.shape[0]) if i not in result.heatmaps]].any()
    axial = window.mpr.axial
    axial.set_index(z)
    visible = [layer for layer in window.layers.layers if layer.visible]
    drawn = axial.overlay_items[visible.index(heatmap_layer)].image
    shown = np.isfinite(drawn)
    assert shown.any()
    assert not shown.all()  # near zero is transparent
    assert np.array_equal(shown, heatmap_layer.values[z].astype(np.float32) >= GRAD_CAM_THRESHOLD)
    assert axial.colour_bar is not None
    assert axial.colour_bar.isVisible()
    assert axial.colour_bar.levels() == pytest.approx((0.0, 1.0))

    # the axial view says, on each slice, whether it was kept and into which group, or why it was left out
    read_out = axial.corner_labels["bottom_left"]
    first_group = result.groups[0]
    label = first_group.scores.label
    assert read_out.text().startswith(f"COVID-19: {result.slice_reasons[z]}; group ")
    axial.set_index(result.kept_slices[0])
    assert read_out.text().startswith(
        f"COVID-19: {result.slice_reasons[result.kept_slices[0]]}; group 1/{len(result.groups)} votes {label} "
        f"({first_group.scores.probabilities[label]:.2f})\nAxial {result.kept_slices[0] + 1}/"
    )
    left = next(index for index, reason in enumerate(result.slice_reasons) if not reason.startswith("kept"))
    axial.set_index(left)
    assert read_out.text().startswith(f"COVID-19: {result.slice_reasons[left]}\nAxial {left + 1}/")
    window.layers.update(mask_layer, visible=False)
    assert read_out.text().startswith(f"Axial {left + 1}/")
    window.layers.update(mask_layer, visible=True)

    # a demo bundle: the banner is on the image
    assert finding.provenance.demo
    assert mask_layer.demo
    assert heatmap_layer.demo
    assert window.mpr.banner.isVisible()


def test_a_short_series_with_the_lung_unet_gets_one_padded_group_as_the_paper_does(
    qtbot: Any, window: Any, engine: Any, p001: Path
) -> None:
    lung_cards = engine.cards("lung_segmentation")
    if not lung_cards:
        pytest.skip("no lung_segmentation bundle in resources/models")
    window.set_engine(engine)
    full = open_and_wait(qtbot, window, p001)
    # 30 slices from the middle of the lungs, same spacing
    short = make_volume(
        np.ascontiguousarray(full.voxels[60:90]),
        spacing=full.spacing,
        series_uid="p001-short",
        description="P001 60-89",
    )
    window._on_volume_loaded(short)
    runner = window.findings.covid
    runner.lung_box.choose(lung_cards[0])
    runner.grad_cam_box.setChecked(False)
    finding = classify(qtbot, window)
    result = finding.result

    assert result.lung_mask.shape == short.shape
    assert "lung U-Net" in result.lung_mask_source
    assert len(result.groups) == 1
    group = result.groups[0]
    kept = len(result.kept_slices)
    assert group.kind == "padded"
    assert sum(source is None for source in group.sources) == 50 - kept
    details = window.findings.details.toPlainText()
    text = f"{kept} slices kept: one group of {kept} slices padded with {50 - kept} black slices to 50"
    assert text in details
    assert ("as the paper does" in details) == (kept > 25)
    assert result.lung_mask_source in details
    # no Grad-CAM asked: no map, the panel's map switch is off
    assert finding.heatmap_layer is None
    assert not window.findings.heatmap_box.isEnabled()
    assert finding.mask_layer.demo  # the lung U-Net and the COVID model are demos
    assert window.mpr.banner.isVisible()


def test_cancel_leaves_no_finding(qtbot: Any, window: Any, engine: Any) -> None:
    window.set_engine(engine)
    window._on_volume_loaded(make_volume(phantom_chest(), spacing=(2.0, 2.5, 2.5), series_uid="1.2.3.4"))
    runner = window.findings.covid
    runner.lung_box.choose(None)
    task = runner.run()
    assert task is not None
    assert not runner.classify_button.isEnabled()
    window.cancel_running()
    wait_until_settled(qtbot, window, task, RUN_TIMEOUT_MS)
    assert task.is_cancelled
    assert window.findings.list.count() == 0
    assert window.layers.layers == []
    assert runner.classify_button.isEnabled()


def test_a_series_without_lungs_of_another_modality_gets_a_note_and_a_message_not_a_crash(
    qtbot: Any, window: Any, engine: Any, shown_messages: list[tuple[str, str]]
) -> None:
    window.set_engine(engine)
    window._on_volume_loaded(
        make_volume(phantom_chest(lungs=False), spacing=(2.0, 2.5, 2.5), modality="MR", series_uid="1.2.3.5")
    )
    runner = window.findings.covid
    runner.lung_box.choose(None)
    wait_until_settled(qtbot, window, runner.run(), RUN_TIMEOUT_MS)
    note = runner.note.text()
    assert "expects CT images" in note
    assert "this series is MR" in note
    qtbot.waitUntil(lambda: bool(shown_messages), timeout=5000)
    title, text = shown_messages[0]
    assert "failed" in title
    assert "no lung found" in text
    assert "Traceback" not in text
    assert window.findings.list.count() == 0
    assert runner.classify_button.isEnabled()


def synthetic_result(kept: int, probabilities: list[list[float]], *, verdict: str, switched: bool, reason: str) -> Any:
    """A CovidResult of ``kept`` kept slices (from slice 10 of 200) grouped like the pipeline does."""
    from medview.engine.api import ClassScores, GroupScore, Provenance
    from medview.preprocess.chest import group_slices

    names = ("covid_pneumonia", "non_covid_pneumonia", "healthy")
    indices = list(range(10, 10 + kept))
    groups = group_slices(np.zeros((kept, 2, 2), np.float32), indices)
    assert len(groups) == len(probabilities)
    scores = tuple(
        GroupScore(group.describe(), group.kind, group.sources, ClassScores(dict(zip(names, row, strict=True))))
        for group, row in zip(groups, probabilities, strict=True)
    )
    votes = {name: sum(int(np.argmax(row)) == i for row in probabilities) for i, name in enumerate(names)}
    reasons = ["no lung"] * 200
    for index in indices:
        reasons[index] = "kept: lung area 0.95 of max >= 0.9 (lower end)"
    provenance = Provenance("covid-cnn-bilstm", "1.0.0", "covid_ct", "covid_cnn_bilstm", False, "x", {}, 0.9, "CPU", 1)
    mask = np.zeros((200, 8, 8), bool)
    mask[indices, 2:6, 2:6] = True
    return CovidResult(
        provenance, names, mask, "classical method", tuple(reasons), tuple(indices), scores, verdict, votes,
        switched, reason,
    )  # fmt: skip


def test_a_healthy_majority_switched_by_the_09_rule_and_a_resampled_group_are_spelled_out(engine: Any) -> None:
    from medview.ui.covid_findings import covid_finding

    card = engine.cards("covid_ct")[0]
    reason = (
        "majority vote: healthy in 2 of 3 groups; group 3 predicts covid_pneumonia with probability 0.950 > 0.9, "
        "so the label switches to covid_pneumonia"
    )
    result = synthetic_result(
        160,  # 3 groups of 50 and 10 left over: the last 60 resampled to 50
        [[0.1, 0.1, 0.8], [0.2, 0.1, 0.7], [0.95, 0.03, 0.02]],
        verdict="covid_pneumonia",
        switched=True,
        reason=reason,
    )
    volume = make_volume(np.zeros((200, 8, 8), np.int16))
    finding = covid_finding(result, card, volume)
    assert finding.title.startswith("COVID-19: covid_pneumonia (1/3 groups, 0.9 rule): ")
    assert finding.heatmap_layer is None
    details = finding.summary_html
    assert html.escape(reason) in details
    assert "healthy 2" in details
    assert "switched to covid_pneumonia" in details
    assert "160 of 200 slices kept</b>: 11-170" in details
    text = "160 slices kept: 2 groups of 50, then the last 60 slices (10 left over after a group of 50) resampled to 50"
    assert text in details
    assert "<td>no lung</td><td align='right'>40</td><td>1-10, 171-200</td>" in details
    assert "resampled" in section(details, "<b>Groups</b>").split("<tr>")[-1]
