"""COVID-19 (paper 002) in the findings panel: the real COVID-CT-MD series through the window, short and odd input.

A run on the real series P001 (148 slices) takes about 15 s on a 2-core CPU with
Grad-CAM, so it is made once and every check of the finding is made on it.
"""

from __future__ import annotations

import dataclasses
import html
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medview.engine.api import CovidResult, Heatmap, Provenance, validated_summary
from medview.ui.ct.findings.base import input_warning
from medview.ui.ct.findings.covid import (
    GRAD_CAM_THRESHOLD,
    NO_MAP_FAINT_ABSOLUTE,
    NO_MAP_ZERO,
    covid_finding,
    describe_group,
)
from medview.ui.ct.layers import HeatmapLayer, LabelLayer
from medview.ui.qt import QtCore, QtGui

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
    with qtbot.waitSignal(window.ct.findings.finding_added, timeout=RUN_TIMEOUT_MS) as blocker:
        qtbot.mouseClick(window.ct.findings.covid.classify_button, QtCore.Qt.MouseButton.LeftButton)
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
    panel, runner = window.ct.findings, window.ct.findings.covid
    assert "COVID-19" in [panel.task_tabs.tabText(i) for i in range(panel.task_tabs.count())]
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
    # the model's validated performance on the line under the verdict, before any table; every slice folded
    lines = shown.splitlines()
    assert lines[lines.index(f"Verdict: {result.verdict}") + 1] == finding.provenance.validated
    assert finding.provenance.validated.startswith("Validated: ")
    assert finding.provenance.validated == validated_summary(runner.model_box.selected_card())
    assert shown.index(finding.provenance.validated) < shown.index("Left out because") < shown.index("Trained on")
    assert "kept: lung area" not in shown  # the reason of every slice: folded
    tip = panel.list.item(0).toolTip()
    assert title in tip
    assert finding.provenance.validated in tip
    details = panel.details_html(finding)  # what the panel shows, as HTML
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
    assert finding.more_html.count("<tr><td align='right'>") == volume.shape[0]  # every slice's reason, apart
    for field in ("Trained on", "Ran on", "lung mask: classical method", finding.provenance.label):
        assert field in details

    # the lung mask, outlined
    mask_layer, heatmap_layer = finding.mask_layer, finding.heatmap_layer
    assert isinstance(mask_layer, LabelLayer)
    assert np.array_equal(mask_layer.labels > 0, result.lung_mask)
    assert mask_layer.outline_only
    assert finding.export_label is None
    assert not panel.seg_button.isEnabled()

    # Grad-CAM on the volume grid, on one scale for the whole volume, drawn on the axial view with its colour bar
    assert isinstance(heatmap_layer, HeatmapLayer)
    assert heatmap_layer.values.shape == volume.shape
    assert set(result.heatmaps) <= set(result.kept_slices)
    assert window.ct.layers.layers[-2:] == [mask_layer, heatmap_layer]
    assert runner.absolute_box.isChecked()
    inside = {index: heatmap.values * result.lung_mask[index] for index, heatmap in result.heatmaps.items()}
    scale = max(float(values.max()) for values in inside.values())
    explained = [index for index, values in inside.items() if values.max() >= GRAD_CAM_THRESHOLD * scale]
    z = max(explained, key=lambda index: int(result.lung_mask[index].sum()))
    for index in (z, *explained[:3]):  # every slice by the same scale, drawn in the lungs only
        assert np.allclose(heatmap_layer.values[index], inside[index] / scale, atol=1e-3)
    assert float(max(heatmap_layer.values[index].max() for index in result.heatmaps)) == pytest.approx(1.0)
    assert not heatmap_layer.values[z][~result.lung_mask[z]].any()
    assert not heatmap_layer.values[[i for i in range(volume.shape[0]) if i not in result.heatmaps]].any()
    axial = window.ct.mpr.axial
    axial.set_index(z)
    visible = [layer for layer in window.ct.layers.layers if layer.visible]
    drawn = axial.overlay_items[visible.index(heatmap_layer)].image
    shown = np.isfinite(drawn)
    assert shown.any()
    assert not shown.all()  # near zero is transparent
    assert np.array_equal(shown, heatmap_layer.values[z].astype(np.float32) >= GRAD_CAM_THRESHOLD)
    assert axial.colour_bar is not None
    assert axial.colour_bar.isVisible()
    assert axial.colour_bar.levels() == pytest.approx((0.0, 1.0))
    bar_label = axial.colour_bar.getAxis("left").labelText
    assert bar_label == "Grad-CAM, covid pneumonia class<br>one scale for the volume"
    # a kept slice without a map to show says so on the image
    blank = [index for index in result.kept_slices if float(heatmap_layer.values[index].max()) < GRAD_CAM_THRESHOLD]
    assert blank  # P001: slice 75's map is zero in the lungs, slice 76's faint
    axial.set_index(blank[0])
    assert "No Grad-CAM map on this slice (" in axial.corner_labels["bottom_left"].text()
    axial.set_index(z)

    # the axial view says, on each slice, whether it was kept and into which group, or why it was left out
    read_out = axial.corner_labels["bottom_left"]
    first_group = result.groups[0]
    label = first_group.scores.label
    assert read_out.text().startswith(f"COVID-19: {result.slice_reasons[z]}; group ")
    axial.set_index(result.kept_slices[0])
    first = result.kept_slices[0]
    lines = read_out.text().split("\n")
    assert lines[0] == (
        f"COVID-19: {result.slice_reasons[first]}; group 1/{len(result.groups)} votes {label} "
        f"({first_group.scores.probabilities[label]:.2f})"
    )
    mapped = float(heatmap_layer.values[first].max()) >= GRAD_CAM_THRESHOLD
    assert lines[1].startswith(f"Axial {first + 1}/" if mapped else "No Grad-CAM map on this slice (")
    left = next(index for index, reason in enumerate(result.slice_reasons) if not reason.startswith("kept"))
    axial.set_index(left)
    assert read_out.text().startswith(f"COVID-19: {result.slice_reasons[left]}\nAxial {left + 1}/")
    window.ct.layers.update(mask_layer, visible=False)
    assert read_out.text().startswith(f"Axial {left + 1}/")
    window.ct.layers.update(mask_layer, visible=True)

    # a demo bundle: the banner is on the image
    assert finding.provenance.demo
    assert mask_layer.demo
    assert heatmap_layer.demo
    assert window.ct.mpr.banner.isVisible()

    # each slice by its own maximum, when asked: the map, the bar's label and the summary say so
    runner.absolute_box.click()
    relative = result.heatmaps[z].relative()
    assert np.allclose(heatmap_layer.values[z], relative * result.lung_mask[z], atol=1e-3)
    assert axial.colour_bar.getAxis("left").labelText.endswith("each slice by its own max")
    assert "each slice scaled to its own maximum" in panel.details.toPlainText()


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
    window.ct.show_loaded_volume(short)
    runner = window.ct.findings.covid
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
    details = window.ct.findings.details.toPlainText()
    text = f"{kept} slices kept: one group of {kept} slices padded with {50 - kept} black slices to 50"
    assert text in details
    assert ("as the paper does" in details) == (kept > 25)
    assert result.lung_mask_source in details
    # no Grad-CAM asked: no map, the panel's map switch is off
    assert finding.heatmap_layer is None
    assert not window.ct.findings.heatmap_box.isEnabled()
    assert finding.mask_layer.demo  # the lung U-Net and the COVID model are demos
    assert window.ct.mpr.banner.isVisible()


def test_cancel_leaves_no_finding(qtbot: Any, window: Any, engine: Any) -> None:
    window.set_engine(engine)
    window.ct.show_loaded_volume(make_volume(phantom_chest(), spacing=(2.0, 2.5, 2.5), series_uid="1.2.3.4"))
    runner = window.ct.findings.covid
    runner.lung_box.choose(None)
    task = runner.run()
    assert task is not None
    assert not runner.classify_button.isEnabled()
    window.cancel_running()
    wait_until_settled(qtbot, window, task, RUN_TIMEOUT_MS)
    assert task.is_cancelled
    assert window.ct.findings.list.count() == 0
    assert window.ct.layers.layers == []
    assert runner.classify_button.isEnabled()


def test_a_series_without_lungs_of_another_modality_gets_a_note_and_a_message_not_a_crash(
    qtbot: Any, window: Any, engine: Any, shown_messages: list[tuple[str, str]]
) -> None:
    window.set_engine(engine)
    window.ct.show_loaded_volume(
        make_volume(phantom_chest(lungs=False), spacing=(2.0, 2.5, 2.5), modality="MR", series_uid="1.2.3.5")
    )
    runner = window.ct.findings.covid
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
    assert window.ct.findings.list.count() == 0
    assert runner.classify_button.isEnabled()


def synthetic_result(
    kept: int,
    probabilities: list[list[float]],
    *,
    verdict: str,
    switched: bool,
    reason: str,
    provenance: Any = None,
) -> Any:
    """A CovidResult of ``kept`` kept slices (from slice 10 of 200) grouped like the pipeline does."""
    from medview.engine.api import ClassScores, GroupScore
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
    if provenance is None:
        provenance = Provenance(
            "covid-cnn-bilstm", "1.0.0", "covid_ct", "covid_cnn_bilstm", False, "x", {}, 0.9, "CPU", 1
        )
    mask = np.zeros((200, 8, 8), bool)
    mask[indices, 2:6, 2:6] = True
    return CovidResult(
        provenance, names, mask, "classical method", tuple(reasons), tuple(indices), scores, verdict, votes,
        switched, reason,
    )  # fmt: skip


def test_a_healthy_majority_switched_by_the_09_rule_and_a_resampled_group_are_spelled_out(engine: Any) -> None:
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


def grad_cam_result(engine: Any) -> tuple[Any, CovidResult]:
    """The shipped COVID-19 card and a run of it on 50 kept slices (11-60 of 200) with Grad-CAM whose strength
    alternates from slice to slice (1 and 2), zero on slice 21 and faint (0.01) on slice 22."""
    card = engine.cards("covid_ct")[0]
    provenance = Provenance.of(card, threshold=0.9, device="CPU", seconds=1.0)
    reason = "majority vote: covid_pneumonia in 1 of 1 groups"
    result = synthetic_result(
        50, [[0.8, 0.1, 0.1]], verdict="covid_pneumonia", switched=False, reason=reason, provenance=provenance
    )
    strengths = {index: 2.0 if index % 2 else 1.0 for index in result.kept_slices}
    strengths.update({20: 0.0, 21: 0.01})
    heatmaps = {
        index: Heatmap(np.full((8, 8), value, np.float32), "covid_pneumonia", "cnn")
        for index, value in strengths.items()
    }
    return card, dataclasses.replace(result, heatmaps=heatmaps)


def show_found(qtbot: Any, window: Any, volume: Any, finding: Any) -> None:
    """Hand ``finding`` to the COVID-19 runner as a finished run does, and wait until the panel lists it."""
    with qtbot.waitSignal(window.ct.findings.finding_added, timeout=5000):
        window.ct.findings.covid._on_classified(volume, finding)


def drawn(view: Any, layer: Any) -> np.ndarray:
    """What ``view`` draws of ``layer`` on its slice now (NaN where transparent)."""
    visible = [each for each in view.layers.layers if each.visible]
    return view.overlay_items[visible.index(layer)].image


def click_text(qtbot: Any, browser: Any, text: str) -> None:
    """Click on ``text`` in a text browser (a link), scrolled into view first."""
    found = browser.document().find(text)
    assert not found.isNull(), text
    cursor = QtGui.QTextCursor(found)
    cursor.setPosition(found.selectionStart() + 2)
    browser.setTextCursor(cursor)
    browser.ensureCursorVisible()
    qtbot.mouseClick(browser.viewport(), QtCore.Qt.MouseButton.LeftButton, pos=browser.cursorRect(cursor).center())


def test_grad_cam_is_on_one_scale_for_the_volume_by_default_and_a_slice_without_a_map_says_so(
    qtbot: Any, window: Any, engine: Any
) -> None:
    card, result = grad_cam_result(engine)
    volume = make_volume(np.zeros((200, 8, 8), np.int16), series_uid="1.2.3.9")
    window.ct.show_loaded_volume(volume)
    runner, panel = window.ct.findings.covid, window.ct.findings
    assert runner.absolute_box.isChecked()  # the default
    finding = covid_finding(result, card, volume, absolute=runner.absolute_box.isChecked())
    show_found(qtbot, window, volume, finding)
    layer, lungs = finding.heatmap_layer, result.lung_mask

    # one scale: the weaker slices look weaker, and a cut across the slices shows both strengths, not stripes
    # of each slice's own maximum
    assert layer.values[11][lungs[11]] == pytest.approx(1.0)
    assert layer.values[10][lungs[10]] == pytest.approx(0.5)
    coronal = window.ct.mpr.views["coronal"]
    coronal.set_index(4)  # through the lungs (rows 2-5 of each slice)
    cut = drawn(coronal, layer)
    assert sorted(np.unique(np.round(cut[np.isfinite(cut)], 3))) == [0.5, 1.0]

    # the colour bar says what it shows and on which scale
    axial = window.ct.mpr.axial
    axial.set_index(11)
    assert axial.colour_bar.isVisible()
    assert axial.colour_bar.getAxis("left").labelText == "Grad-CAM, covid pneumonia class<br>one scale for the volume"
    assert "on one scale for the whole volume" in panel.details.toPlainText()

    # a kept slice without a map to show says so on the image
    read_out = axial.corner_labels["bottom_left"]
    assert "No Grad-CAM" not in read_out.text()
    axial.set_index(20)
    assert NO_MAP_ZERO in read_out.text()
    axial.set_index(21)
    assert NO_MAP_FAINT_ABSOLUTE in read_out.text()
    assert not np.isfinite(drawn(axial, layer)).any()
    assert "No map is drawn on 1 slice with a map that is zero inside the lungs; 1 slice with the map below 0.1" in (
        panel.details.toPlainText()
    )

    # each slice by its own maximum, when asked: every slice at 1, the faint one drawn, the bar and summary say so
    runner.absolute_box.click()
    assert layer.values[10][lungs[10]] == pytest.approx(1.0)
    assert np.isfinite(drawn(axial, layer)).any()
    assert "No Grad-CAM" not in read_out.text()
    assert axial.colour_bar.getAxis("left").labelText.endswith("<br>each slice by its own max")
    assert "each slice scaled to its own maximum" in panel.details.toPlainText()
    axial.set_index(20)
    assert NO_MAP_ZERO in read_out.text()


def test_with_two_maps_shown_the_colour_bar_is_the_top_ones_and_says_so(qtbot: Any, window: Any, engine: Any) -> None:
    card, result = grad_cam_result(engine)
    volume = make_volume(np.zeros((200, 8, 8), np.int16), series_uid="1.2.3.10")
    window.ct.show_loaded_volume(volume)
    probability = HeatmapLayer(
        name="Liver probability [x]", values=np.full(volume.shape, 0.7, np.float32), legend="liver probability 0-1"
    )
    window.ct.layers.add(probability)
    axial = window.ct.mpr.axial
    axial.set_index(11)
    label = axial.colour_bar.getAxis("left")
    assert label.labelText == "liver probability 0-1"

    show_found(qtbot, window, volume, covid_finding(result, card, volume))
    assert label.labelText == (
        "Grad-CAM, covid pneumonia class<br>one scale for the volume<br>(the top one of the 2 maps shown)"
    )
    window.ct.findings.heatmap_box.click()  # the Grad-CAM off: the bar is the probability's again
    assert label.labelText == "liver probability 0-1"


def test_the_verdict_has_the_validated_performance_and_the_warnings_beside_it_and_every_slice_folds_away(
    qtbot: Any, window: Any, engine: Any
) -> None:
    card, result = grad_cam_result(engine)
    volume = make_volume(np.zeros((200, 8, 8), np.int16), series_uid="1.2.3.11", modality="MR")
    window.ct.show_loaded_volume(volume)
    warning = input_warning(card, volume)
    assert "this series is MR" in warning
    finding = covid_finding(result, card, volume, warnings=[warning])
    show_found(qtbot, window, volume, finding)
    panel = window.ct.findings
    validated = finding.provenance.validated
    assert validated == validated_summary(card)  # the bundle's own recorded validation

    # the demo warning above the verdict, the validated performance under it, the input warning next
    text = panel.details.toPlainText()
    lines = text.splitlines()
    verdict = lines.index("Verdict: covid_pneumonia")
    assert "Demo model: not for diagnosis." in lines[:verdict]
    assert lines[verdict + 1] == validated
    assert warning in lines[verdict + 2]
    # then the vote and the tables; the provenance before the reason of every slice, which is folded
    assert text.index(warning) < text.index("Group votes") < text.index("Left out because") < text.index("Trained on")
    assert "kept: lung area" not in text
    click_text(qtbot, panel.details, "Every slice (200)")
    text = panel.details.toPlainText()
    assert text.count("kept: lung area 0.95 of max >= 0.9 (lower end)") == 50
    assert text.index("Trained on") < text.index("kept: lung area")
    assert text.index("Verdict: covid_pneumonia") < text.index(validated) < text.index("Group votes")

    # the list entry: the whole name in its tooltip with the validated performance and the warnings, elided
    # where the panel is narrow instead of scrolled sideways
    item = panel.list.item(0)
    for line in (finding.title, validated, warning, "Demo model: not for diagnosis"):
        assert line in item.toolTip()
    panel.list.setFixedWidth(200)
    qtbot.wait(10)
    assert panel.list.fontMetrics().horizontalAdvance(finding.title) > panel.list.viewport().width()
    assert not panel.list.horizontalScrollBar().isVisible()
