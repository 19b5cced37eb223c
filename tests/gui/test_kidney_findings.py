"""Kidney stone findings (paper 000) on the bundled real abdominal CT, through the window and the shipped demo bundle.

The bundled series has no kidney mask (nor has the shared data: ../shared/data/README.md);
where a kidney mask ROI is tested, its liver mask stands in for one, loaded from a copy named
``kidney_mask.nii.gz`` (a kidney mask is recognised by its segments' or its file's name); the liver
mask under its own name is not offered as a kidney ROI.

The sample series shows no kidney stone: the Grad-CAM map of a slice the model calls normal is empty,
or the summary says it is no stone.  Where a test is about what a map does (kept inside a drawn ROI,
scaled, shown for the positive slices) it runs on a series of real stone and normal slices of the
Kaggle kidney CT set instead (``stone_series``), where the model finds the stones.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import ndimage

from medview.engine.api import Heatmap, validated_summary
from medview.ui.ct.findings.kidney import (
    GRAD_CAM_THRESHOLD,
    ROI_COLOUR,
    WHOLE_SLICE,
    KidneyTab,
    kidney_labels,
)
from medview.ui.ct.layers import HeatmapLayer, LabelLayer
from medview.ui.qt import QtCore, QtWidgets
from medview.workflows.kidney import FEW_POSITIVES
from tests.kidney_slices import KAGGLE_KIDNEY, STONE_SLICES, kaggle_slice_hu

from .conftest import (
    SAMPLE_MASK,
    SAMPLE_SERIES,
    Qt,
    make_volume,
    mouse_drag,
    open_and_wait,
    view_point_at,
    viewport_point,
    wait_until_settled,
)

RUN_TIMEOUT_MS = 180_000


@pytest.fixture
def engine(shipped_engine: Any) -> Any:
    if not shipped_engine.cards("kidney_stone"):
        pytest.skip("no kidney_stone bundle in resources/models")
    return shipped_engine


def wire(window: Any) -> KidneyTab:
    """The runner, which the window connects to the axial view (slice, drawn ROIs) and the panel's selection."""
    runner: KidneyTab = window.ct.findings.kidney
    assert runner.current_slice() == window.ct.mpr.axial.index
    return runner


@pytest.fixture
def ct_window(qtbot: Any, window: Any, engine: Any) -> Any:
    """The window with the engine and the bundled sample series (20 slices of an abdominal CT) loaded."""
    window.set_engine(engine)
    wire(window)
    open_and_wait(qtbot, window, SAMPLE_SERIES)
    return window


#: real slices with a stone (Kaggle kidney CT) that the shipped model calls a stone with a non-empty Grad-CAM
#: map, by where they go in ``stone_series``; every other slice there is a normal one
def stone_series(
    shared_data: Path, engine: Any, count: int = 20, size: int = 512, stones: dict[int, str] | None = None
) -> Any:
    """A CT volume of ``count`` real kidney slices: the stone slices ``stones`` (default ``STONE_SLICES``)
    where they go, normal slices of the Kaggle set elsewhere; 0.7 mm pixels at 512 x 512."""
    (card,) = engine.cards("kidney_stone")
    folder = shared_data / KAGGLE_KIDNEY
    placed = STONE_SLICES if stones is None else stones
    normals = iter(sorted((folder / "Normal").glob("*.jpg")))
    paths = [folder / placed[index] if index in placed else next(normals) for index in range(count)]
    voxels = np.stack([kaggle_slice_hu(path, size, card.input.hu_window) for path in paths])
    return make_volume(voxels, spacing=(2.0, 0.7 * 512 / size, 0.7 * 512 / size), series_uid=f"kidney.stones.{size}")


@pytest.fixture
def stone_window(qtbot: Any, window: Any, engine: Any, shared_data: Path) -> Any:
    """The window with the engine and ``stone_series`` loaded."""
    window.set_engine(engine)
    wire(window)
    window.ct.show_loaded_volume(stone_series(shared_data, engine))
    return window


def empty_maps_named(summary: str) -> list[int]:
    """The slice numbers the summary names as having an empty Grad-CAM map ("No region raises ...")."""
    found = re.search(r"No region raises the \w+ score on slice\(s\) ([\d, ]+): their maps are empty", summary)
    return [int(number) for number in found.group(1).split(", ")] if found else []


def assert_map_shown_or_said_empty(finding: Any, index: int) -> None:
    """A non-empty map is shown scaled to its own maximum; an empty one leaves the layer at zero there, and
    the summary names the slice as empty."""
    values = finding.heatmap_layer.values[index]
    empty = [number + 1 for number in sorted(finding.heatmaps) if not finding.heatmaps[number].values.any()]
    assert empty_maps_named(finding.summary_html) == empty
    if finding.heatmaps[index].values.any():
        assert values.max() == 1.0
    else:
        assert not values.any()
        assert index + 1 in empty


def assert_on_the_body(values: np.ndarray, slice_hu: np.ndarray) -> None:
    """The map lies on the body, not on the air around it nor in the corners (it was brightest in the
    corners: issue 19, item 6)."""
    air, _count = ndimage.label(slice_hu < -900)
    outside = np.isin(air, np.unique(np.concatenate([air[0], air[-1], air[:, 0], air[:, -1]]))) & (air > 0)
    assert outside.mean() > 0.4
    assert not values[outside].any()
    for corner in (np.s_[:64, :64], np.s_[:64, -64:], np.s_[-64:, :64], np.s_[-64:, -64:]):
        assert not values[corner].any()


def run(qtbot: Any, window: Any) -> Any:
    """Click *Find kidney stones*, wait for the finding and for the runner to be free again."""
    runner = window.ct.findings.kidney
    with qtbot.waitSignal(window.ct.findings.finding_added, timeout=RUN_TIMEOUT_MS) as blocker:
        qtbot.mouseClick(runner.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not runner.running() and runner.run_button.isEnabled(), timeout=10_000)
    return blocker.args[0]


def listed(summary: str, heading: str) -> list[tuple[int, str]]:
    """The '3 (0.71), 9 (0.66)' list after ``heading`` in a summary, as (slice number, probability text)."""
    text = summary.split(f"{heading}: ", 1)[1].split("</p>", 1)[0]
    return [(int(number), probability) for number, probability in re.findall(r"(\d+) \((\d\.\d\d)\)", text)]


def shown_overlays(view: Any) -> list[Any]:
    return [item for item in view.overlay_items if item.isVisible()]


def test_whole_series_in_the_whole_slice_lists_the_positive_slices_with_grad_cam_of_this_slice(
    qtbot: Any, ct_window: Any
) -> None:
    window = ct_window
    panel, runner, axial, volume = window.ct.findings, window.ct.findings.kidney, window.ct.mpr.axial, window.ct.volume
    count = volume.shape[0]
    assert panel.task_tabs.tabText(panel.task_tabs.indexOf(runner)) == "Kidney stone"
    axial.set_index(7)
    assert runner.scope_box.currentText() == "Whole series"
    assert runner.roi_box.currentText() == "Whole slice (no kidney mask)"

    finding = run(qtbot, window)
    result = finding.result
    assert result.slice_indices == tuple(range(count))
    assert result.probabilities.shape == (count,)
    assert np.all((result.probabilities > 0) & (result.probabilities < 1))
    assert result.roi == WHOLE_SLICE
    threshold = finding.provenance.threshold
    card = runner.model_box.selected_card()
    assert threshold == card.thresholds["stone"]
    positives = result.positive_slices()
    assert positives == [index for index in range(count) if result.probabilities[index] >= threshold]

    # the list line names the ROI; the summary: 1-based slice numbers with their probabilities
    label = finding.provenance.label
    title = f"Kidney stone · whole slice · {len(positives)} of {count} slices ≥ {threshold:g} · {label} (demo)"
    assert panel.list.count() == 1
    assert panel.list.item(0).text() == title
    summary = finding.summary_html
    assert listed(summary, "Slices at or above the threshold") == [
        (index + 1, f"{result.probabilities[index]:.2f}") for index in positives
    ]
    assert listed(finding.more_html, "Every slice run") == [
        (index + 1, f"{probability:.2f}") for index, probability in enumerate(result.probabilities)
    ]
    assert f"Slices run: {count} (whole series)" in summary
    assert "Kidney ROI: whole slice (no kidney mask" in summary
    details = panel.details.toPlainText()
    for text in ("Slices at or above the threshold", "Trained on", "Validation metrics", finding.provenance.label):
        assert text in details
    # the verdict with the validated performance under it and the warning (the sample is recorded as
    # PARTIALBODY) beside it, in the scrolling details, before the ROI and the slice lists (issue 19, item 5)
    warning = (
        f"{label} is meant for CT of the ABDOMEN, KIDNEY, ABDOMENPELVIS, CHESTABDPELVIS, WHOLEBODY; this series "
        "is recorded as PARTIALBODY: the result may be meaningless."
    )
    validated = finding.provenance.validated
    assert validated == validated_summary(card, threshold)  # the bundle's own recorded validation
    assert validated.startswith("Validated: sensitivity ")
    assert f" at threshold {threshold:g}" in validated
    verdict = f"Stone probability ≥ {threshold:g} on {len(positives)} of {count} slices"
    assert details.index(verdict) < details.index(validated)
    for text in (verdict, validated, warning):
        assert details.index(text) < details.index("Kidney ROI") < details.index("Slices at or above")
    assert finding.warnings == (warning,)
    assert runner.note.text() == ""  # not in the runner's few lines, where it was clipped
    # every slice's probability is the long list, folded below the provenance until asked for
    assert "Every slice run:" not in details
    assert finding.more_title == f"Every slice run ({count}): stone probability"
    panel.details.anchorClicked.emit(QtCore.QUrl("#more"))
    assert panel.details.toPlainText().index("Every slice run:") > panel.details.toPlainText().index("Trained on")
    assert finding.mask_layer is None  # the whole slice: no region to outline; the summary says so

    # Grad-CAM of the slice on screen (and of the positive slices when only a few)
    explained = {7} | (set(positives) if len(positives) <= FEW_POSITIVES else set())
    assert set(finding.heatmaps) == explained
    layer = finding.heatmap_layer
    assert isinstance(layer, HeatmapLayer)
    assert layer in window.ct.layers.layers
    assert layer.visible
    assert layer.demo
    assert layer.levels == (0.0, 1.0)
    assert layer.legend == "Grad-CAM, stone class, each slice by its own maximum\ninside the body"
    assert layer.values.shape == volume.shape
    heatmap = finding.heatmaps[7]
    assert heatmap.values.shape == volume.shape[1:]
    assert heatmap.target_class == "stone"
    np.testing.assert_array_equal(layer.values[7], heatmap.relative().astype(np.float16))
    assert not layer.values[[index for index in range(count) if index not in explained]].any()
    # a map is shown scaled to its own maximum; an empty one (nothing on the slice raises the stone score: the
    # sample shows no stone) is all zero, and the summary says so
    assert_map_shown_or_said_empty(finding, 7)
    if heatmap.values.any():
        assert np.count_nonzero(layer.values[7] >= GRAD_CAM_THRESHOLD) > 1000
        assert_on_the_body(layer.values[7], volume.voxels[7])
        # on a slice the model calls normal the map is said to be no stone (it looks as strong as one)
        below = "Slice(s) 8 below the threshold: the map shows where the stone score rose most, not a stone"
        assert (below in panel.details.toPlainText()) == (result.probabilities[7] < threshold)
    else:
        assert "No region raises the stone score on slice(s) 8" in panel.details.toPlainText()
    # drawn on the axial view, near-zero transparent, with its colour bar; the demo banner on the image
    (drawn,) = shown_overlays(axial)
    values = layer.values[7].astype(np.float32)
    np.testing.assert_array_equal(drawn.image, np.where(values >= GRAD_CAM_THRESHOLD, values, np.nan))
    assert axial.colour_bar is not None
    assert axial.colour_bar.isVisible()
    assert axial.colour_bar.levels() == pytest.approx((0.0, 1.0))
    assert window.ct.mpr.banner.isVisible()

    # Grad-CAM of another slice, added to this finding
    axial.set_index(12)
    assert runner.explain_button.isEnabled()
    qtbot.mouseClick(runner.explain_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: 12 in finding.heatmaps and not runner.running(), timeout=RUN_TIMEOUT_MS)
    assert set(finding.heatmaps) == explained | {12}
    np.testing.assert_array_equal(layer.values[12], finding.heatmaps[12].relative().astype(np.float16))
    assert_map_shown_or_said_empty(finding, 12)
    (drawn,) = shown_overlays(axial)
    np.testing.assert_array_equal(
        np.nan_to_num(drawn.image), np.where(layer.values[12] >= GRAD_CAM_THRESHOLD, layer.values[12], 0)
    )
    assert panel.list.count() == 1  # the same finding, not a new one

    # absolute scale: one scale (the largest peak over the explained slices) for all of them; all zero when
    # every map is empty.  Checked here for exactness; test_current_axial_slice_only_runs_that_slice checks
    # it on maps of different strength
    scale = max(float(map_.values.max()) for map_ in finding.heatmaps.values())
    runner.absolute_box.click()
    assert finding.heatmap_layer is layer
    for index, map_ in finding.heatmaps.items():
        if scale > 0:
            np.testing.assert_array_equal(layer.values[index], map_.absolute(scale).astype(np.float16))
            assert float(layer.values[index].max()) == pytest.approx(float(map_.values.max()) / scale, abs=1e-3)
        else:
            assert not layer.values[index].any()
    (drawn,) = shown_overlays(axial)  # near-zero transparent on this scale too
    shown = layer.values[12].astype(np.float32)
    np.testing.assert_array_equal(np.nan_to_num(drawn.image), np.where(shown >= GRAD_CAM_THRESHOLD, shown, 0))
    assert "one scale for all explained slices" in finding.summary_html
    assert layer.legend == "Grad-CAM, stone class, one scale for the explained slices\ninside the body"
    runner.absolute_box.click()
    for index, map_ in finding.heatmaps.items():
        np.testing.assert_array_equal(layer.values[index], map_.relative().astype(np.float16))
    assert "each slice scaled to its own maximum" in finding.summary_html


def test_a_rectangle_drawn_with_the_roi_tool_is_the_roi_on_every_slice_run(qtbot: Any, stone_window: Any) -> None:
    window = stone_window
    runner, axial, volume = window.ct.findings.kidney, window.ct.mpr.axial, window.ct.volume
    count = volume.shape[0]
    axial.set_index(9)  # a stone slice
    window.ct.mpr.set_tool("rectangle")
    # over the kidneys, leaving out the spine, the lower kidney's edge and the flanks, where the whole slice's
    # map reaches
    start = viewport_point(axial, QtCore.QPointF(42.0, 105.0))
    end = viewport_point(axial, QtCore.QPointF(280.0, 280.0))
    mouse_drag(axial.graphics.viewport(), start, end, Qt.MouseButton.LeftButton)
    assert [m.kind for m in axial.measurements] == ["rectangle"]
    measurement = axial.measurements[0]
    # where the press and the release fell on the slice, in mm (before the map's colour bar narrows the view)
    p0, p1 = view_point_at(axial, start), view_point_at(axial, end)

    # offered in the chooser as soon as it is drawn
    texts = [runner.roi_box.itemText(i) for i in range(runner.roi_box.count())]
    offered = [text for text in texts if text.startswith("ROI rectangle 1 on axial slice 10 (")]
    assert len(offered) == 1
    runner.roi_box.setCurrentIndex(texts.index(offered[0]))
    assert runner.roi_box.selected_source().drawn is measurement

    finding = run(qtbot, window)
    result = finding.result
    assert result.slice_indices == tuple(range(count))
    assert result.roi.startswith("ROI rectangle 1 (slice 10): rectangle drawn on axial slice 10 (")
    assert finding.title.startswith("Kidney stone · ROI rectangle 1 (slice 10) · ")
    assert result.roi.endswith("the same region on every slice run")
    assert result.roi in finding.summary_html

    # the ROI is the pixels whose centres lie between where the press and the release fell
    row_mm, col_mm = volume.spacing[1], volume.spacing[2]
    rows, cols = np.arange(volume.shape[1]) + 0.5, np.arange(volume.shape[2]) + 0.5
    in_rows = (rows >= min(p0.y(), p1.y()) / row_mm) & (rows < max(p0.y(), p1.y()) / row_mm)
    in_cols = (cols >= min(p0.x(), p1.x()) / col_mm) & (cols < max(p0.x(), p1.x()) / col_mm)
    expected = in_rows[:, None] & in_cols[None, :]
    assert 200 * 200 < expected.sum() < 300 * 300
    np.testing.assert_array_equal(finding.roi, expected)  # what the pipeline got
    roi_layer = finding.mask_layer
    assert isinstance(roi_layer, LabelLayer)
    assert roi_layer.outline_only
    assert roi_layer.colour(1) == ROI_COLOUR
    assert roi_layer.demo
    for z in range(count):
        np.testing.assert_array_equal(roi_layer.labels[z] > 0, expected, err_msg=f"slice {z}")

    # drawn on the image: its outline is the rectangle's border
    outline, _heatmap = shown_overlays(axial)
    border = np.argwhere(outline.image > 0)
    (top, left), (bottom, right) = border.min(axis=0), border.max(axis=0)
    found_rows, found_cols = np.flatnonzero(in_rows), np.flatnonzero(in_cols)
    assert (top, bottom, left, right) == (found_rows[0], found_rows[-1], found_cols[0], found_cols[-1])
    assert np.count_nonzero(outline.image) < expected.sum() / 10
    # the Grad-CAM lies in the rectangle only (it went on over the whole slice: issue 19, item 6)
    assert 9 in finding.heatmaps
    assert finding.heatmaps[9].values.any()  # the model finds something of the stone in the rectangle
    for index in finding.heatmaps:
        assert not finding.heatmap_layer.values[index][~expected].any()
        assert_map_shown_or_said_empty(finding, index)

    # the model saw the rectangle: the same slice in the whole slice scores differently, and its map (the
    # whole slice's) reaches out of the rectangle
    runner.scope_box.setCurrentIndex(1)
    runner.roi_box.setCurrentIndex(0)
    whole = run(qtbot, window)
    assert whole.result.slice_indices == (9,)
    assert whole.result.roi == WHOLE_SLICE
    assert abs(float(whole.result.probabilities[0]) - float(result.probabilities[9])) > 0.01
    assert whole.heatmap_layer.values[9][~expected].any()


def load_mask(qtbot: Any, window: Any, path: Path) -> Any:
    """Overlay > Load mask, waiting for its layer."""
    count = len(window.ct.layers.layers)
    task = window.ct.load_mask(path)
    qtbot.waitUntil(lambda: task.done.is_set() and len(window.ct.layers.layers) == count + 1, timeout=30_000)
    return window.ct.layers.layers[-1]


def roi_texts(runner: KidneyTab) -> list[str]:
    return [runner.roi_box.itemText(i) for i in range(runner.roi_box.count())]


def test_a_loaded_kidney_mask_is_offered_and_used_as_the_roi(qtbot: Any, ct_window: Any, tmp_path: Path) -> None:
    window = ct_window
    runner, volume = window.ct.findings.kidney, window.ct.volume
    kidney_file = tmp_path / "kidney_mask.nii.gz"  # the liver mask standing in for a kidney mask
    shutil.copyfile(SAMPLE_MASK, kidney_file)
    mask_layer = load_mask(qtbot, window, kidney_file)
    assert mask_layer.name == "label 1 [kidney_mask.nii.gz]"
    assert (mask_layer.labels > 0).any(axis=(1, 2)).all()  # the liver is on every slice of the sample
    mask_layer.labels[:3] = 0  # a kidney mask covers part of a series: the slices without it are not run
    mask = mask_layer.labels > 0
    texts = roi_texts(runner)
    assert f"Kidney mask: {mask_layer.name}" in texts
    runner.roi_box.setCurrentIndex(texts.index(f"Kidney mask: {mask_layer.name}"))
    window.ct.mpr.axial.set_index(10)
    assert mask[10].any()

    finding = run(qtbot, window)
    result = finding.result
    with_roi = [z for z in range(volume.shape[0]) if mask[z].any()]
    assert with_roi == list(range(3, volume.shape[0]))
    assert result.slice_indices == tuple(with_roi)  # a slice without mask voxels would be a black image
    assert f"Slices run: {len(with_roi)} (whole series, 3 slice(s) without ROI voxels left out)" in finding.summary_html
    assert result.roi == f"mask {mask_layer.name}"
    assert f"Kidney ROI: mask {mask_layer.name}" in finding.summary_html
    assert finding.title.startswith(f"Kidney stone · mask {mask_layer.name} · ")
    np.testing.assert_array_equal(finding.roi, mask)
    roi_layer = finding.mask_layer
    assert roi_layer.outline_only
    np.testing.assert_array_equal(roi_layer.labels > 0, mask)
    assert 10 in finding.heatmaps
    assert not finding.heatmap_layer.values[10][~mask[10]].any()  # the map stays in the mask
    assert window.ct.layers.layers == [mask_layer, roi_layer, finding.heatmap_layer]
    # the finding's own ROI outline is not offered as a kidney mask
    assert roi_texts(runner) == ["Whole slice (no kidney mask)", f"Kidney mask: {mask_layer.name}"]


def test_only_kidney_masks_are_offered_as_a_kidney_roi(qtbot: Any, ct_window: Any) -> None:
    window = ct_window
    runner, volume = window.ct.findings.kidney, window.ct.volume
    liver = load_mask(qtbot, window, SAMPLE_MASK)
    assert liver.name == "label 1 [liver_mask.nii.gz]"
    # the liver mask was offered as a kidney ROI (issue 19, item 6); now the tooltip says why it is not
    assert roi_texts(runner) == ["Whole slice (no kidney mask)"]
    assert kidney_labels(liver) == ()
    assert "Not offered" in runner.roi_box.toolTip()
    assert liver.name in runner.roi_box.toolTip()

    # a multi-label map with named segments (TotalSegmentator's names; the liver split in halves stands in for
    # the kidneys): both kidneys together and each alone, never the liver or an adrenal gland
    labels = np.zeros(volume.shape, np.uint8)
    inside = liver.labels > 0
    half = volume.shape[2] // 2
    labels[:, :, :half][inside[:, :, :half]] = 2
    labels[:, :, half:][inside[:, :, half:]] = 3
    labels[:, :40, :40] = 1
    labels[:, -40:, -40:] = 4
    names = {1: "liver", 2: "kidney_right", 3: "kidney_left", 4: "adrenal_gland_left"}
    segments = LabelLayer(name="liver, kidney_right, kidney_left, adrenal_gland_left [ts.nii.gz]", labels=labels)
    segments.names = names
    window.ct.layers.add(segments)
    assert kidney_labels(segments) == (2, 3)
    assert roi_texts(runner) == [
        "Whole slice (no kidney mask)",
        "Kidney mask: kidney_right + kidney_left",
        "Kidney mask: kidney_right",
        "Kidney mask: kidney_left",
    ]
    runner.roi_box.setCurrentIndex(1)
    source = runner.roi_box.selected_source()
    assert source.name == "mask kidney_right + kidney_left"
    roi, text = runner._resolve_roi(source, volume)
    np.testing.assert_array_equal(roi, (labels == 2) | (labels == 3))
    assert text == f"mask {segments.name}, labels 2 kidney_right, 3 kidney_left"
    runner.roi_box.setCurrentIndex(3)
    roi, text = runner._resolve_roi(runner.roi_box.selected_source(), volume)
    np.testing.assert_array_equal(roi, labels == 3)
    assert text == f"mask {segments.name}, label 3 kidney_left"


def test_three_runs_are_told_apart_and_one_map_is_shown_at_a_time(qtbot: Any, ct_window: Any, tmp_path: Path) -> None:
    window = ct_window
    panel, runner, axial = window.ct.findings, window.ct.findings.kidney, window.ct.mpr.axial
    axial.set_index(11)
    runner.scope_box.setCurrentIndex(1)  # the slice on screen: three quick runs
    window.ct.mpr.set_tool("rectangle")
    mouse_drag(
        axial.graphics.viewport(),
        viewport_point(axial, QtCore.QPointF(120.0, 220.0)),
        viewport_point(axial, QtCore.QPointF(280.0, 330.0)),
    )
    kidney_file = tmp_path / "kidney_mask.nii.gz"
    shutil.copyfile(SAMPLE_MASK, kidney_file)
    mask_layer = load_mask(qtbot, window, kidney_file)
    texts = roi_texts(runner)
    findings = []
    for text in ("Whole slice (no kidney mask)", "ROI rectangle 1 on axial slice 12 (", "Kidney mask: "):
        runner.roi_box.setCurrentIndex(next(i for i, shown in enumerate(texts) if shown.startswith(text)))
        findings.append(run(qtbot, window))
    titles = [panel.list.item(row).text() for row in range(panel.list.count())]
    assert titles == [finding.title for finding in findings]
    names = ["whole slice", "ROI rectangle 1 (slice 12)", f"mask {mask_layer.name}"]
    threshold = runner.model_box.selected_card().thresholds["stone"]
    for title, name, finding in zip(titles, names, findings, strict=True):
        positive = len(finding.result.positive_slices())
        assert finding.provenance.threshold == threshold
        assert title.startswith(f"Kidney stone · {name} · {positive} of 1 slice (slice 12) ≥ {threshold:g} · ")
        assert name in finding.heatmap_layer.name
        # each finding has its own map layer, holding its own slice's map (or zeros where it is empty)
        np.testing.assert_array_equal(
            finding.heatmap_layer.values[11], finding.heatmaps[11].relative().astype(np.float16)
        )
        assert_map_shown_or_said_empty(finding, 11)
    assert len({id(finding.heatmap_layer) for finding in findings}) == 3
    # the three lines differ within what the list shows of them at its width
    shown = panel.list.viewport().width() // panel.list.fontMetrics().averageCharWidth()
    assert len({title[:shown] for title in titles}) == 3

    # the newest map alone is shown: three maps under one colour bar could not be told apart
    def maps_shown() -> list[Any]:
        return [layer for layer in window.ct.layers.layers if isinstance(layer, HeatmapLayer) and layer.visible]

    assert maps_shown() == [findings[2].heatmap_layer]
    # choosing another finding in the list shows its map instead, and the boxes say so
    panel.list.setCurrentRow(0)
    assert maps_shown() == [findings[0].heatmap_layer]
    assert panel.heatmap_box.isChecked()
    # a map hidden elsewhere (the Layers dock) unticks its box here
    window.ct.layers.update(findings[0].heatmap_layer, visible=False)
    assert not panel.heatmap_box.isChecked()
    panel.heatmap_box.click()
    assert maps_shown() == [findings[0].heatmap_layer]
    assert axial.colour_bar is not None
    assert axial.colour_bar.isVisible()
    # another task's map switched on over a kidney map (a probability map) hides the kidney map
    other = HeatmapLayer(name="Liver probability", values=np.zeros(window.ct.volume.shape, np.float16))
    window.ct.layers.add(other)
    assert maps_shown() == [other]


def test_current_axial_slice_only_runs_that_slice(qtbot: Any, stone_window: Any) -> None:
    window = stone_window
    runner = window.ct.findings.kidney
    window.ct.mpr.axial.set_index(4)  # a stone slice
    runner.scope_box.setCurrentIndex(1)
    finding = run(qtbot, window)
    result = finding.result
    assert result.slice_indices == (4,)
    assert result.probabilities.shape == (1,)
    positive = len(result.positive_slices())
    assert finding.title.startswith(f"Kidney stone · whole slice · {positive} of 1 slice (slice 5) ≥ ")
    assert "Slices run: 1 (axial slice 5 only)" in finding.summary_html
    assert listed(finding.more_html, "Every slice run") == [(5, f"{result.probabilities[0]:.2f}")]
    assert set(finding.heatmaps) == {4}
    assert result.probabilities[0] >= finding.provenance.threshold  # the model finds the stone
    layer = finding.heatmap_layer
    assert finding.heatmaps[4].values.any()
    assert layer.values[4].max() == 1.0
    assert empty_maps_named(finding.summary_html) == []
    assert_on_the_body(layer.values[4], window.ct.volume.voxels[4])

    # the scale switch on maps of different strength: the real map of slice 5 and half of it on slice 8
    real = finding.heatmaps[4]
    finding.heatmaps[7] = Heatmap(real.values * 0.5, real.target_class, real.layer)
    runner.rescale_heatmaps()
    np.testing.assert_array_equal(layer.values[7], layer.values[4])  # relative: each by its own peak
    runner.absolute_box.click()
    np.testing.assert_array_equal(layer.values[4], real.relative().astype(np.float16))
    np.testing.assert_allclose(layer.values[7], real.relative() * 0.5, atol=1e-3)
    assert float(layer.values[7].max()) == pytest.approx(0.5, abs=1e-3)
    assert float(layer.values[4].max()) == 1.0


class FewPositives:
    """The real engine, with the threshold read so that exactly ``count`` slices are positive (the highest
    ``count`` probabilities, whatever the bundle's threshold), to exercise the Grad-CAM of few positive slices."""

    def __init__(self, engine: Any, count: int) -> None:
        self.engine, self.count = engine, count
        self.threshold: float | None = None
        self.calls: list[tuple[list[int], list[int]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def classify_kidney_slices(self, card: Any, volume: Any, slices: Any, **options: Any) -> Any:
        result = self.engine.classify_kidney_slices(card, volume, slices, **options)
        if self.threshold is None:
            self.threshold = float(np.sort(result.probabilities)[-self.count])
        self.calls.append((list(slices), list(options["explain_slices"])))
        return dataclasses.replace(result, provenance=dataclasses.replace(result.provenance, threshold=self.threshold))


def test_a_few_positive_slices_get_their_grad_cam_too(
    qtbot: Any, ct_window: Any, engine: Any, shared_data: Path
) -> None:
    window = ct_window
    runner = window.ct.findings.kidney
    # two stone slices among normal ones, at the Kaggle images' own 256 x 256, away from the slice on screen
    small = stone_series(shared_data, engine, 10, 256, {1: STONE_SLICES[4], 8: STONE_SLICES[9]})
    window.ct.show_loaded_volume(small)
    wrapped = FewPositives(engine, 2)
    runner.set_engine(wrapped)
    current = window.ct.mpr.axial.index

    finding = run(qtbot, window)
    positives = finding.result.positive_slices()
    assert len(positives) == 2
    missing = [index for index in positives if index != current]
    assert wrapped.calls == [(list(range(small.shape[0])), [current]), (missing, missing)]
    assert positives == [1, 8]  # the stones
    assert set(finding.heatmaps) == {current, *positives}
    for index in positives:  # a map where the model finds a stone
        assert finding.heatmaps[index].values.any()
    for index in finding.heatmaps:
        assert_map_shown_or_said_empty(finding, index)
    assert listed(finding.summary_html, "Slices at or above the threshold") == [
        (index + 1, f"{finding.result.probabilities[index]:.2f}") for index in positives
    ]


def test_cancel_leaves_no_finding(qtbot: Any, ct_window: Any) -> None:
    window = ct_window
    runner = window.ct.findings.kidney
    task = runner.run()
    window.cancel_running()
    wait_until_settled(qtbot, window, task, RUN_TIMEOUT_MS)
    assert task.is_cancelled
    assert window.ct.findings.list.count() == 0
    assert runner.findings == []
    assert window.ct.layers.layers == []
    assert runner.run_button.isEnabled()


def test_a_series_of_another_modality_gets_a_warning_naming_what_the_model_expects(
    qtbot: Any, window: Any, engine: Any
) -> None:
    window.set_engine(engine)
    wire(window)
    voxels = np.random.default_rng(0).integers(0, 400, (3, 64, 64)).astype(np.int16)
    window.ct.show_loaded_volume(make_volume(voxels, modality="MR", series_uid="1.2.3"))
    with qtbot.waitSignal(window.ct.findings.finding_added, timeout=RUN_TIMEOUT_MS) as blocker:
        window.ct.findings.kidney.run()
    finding = blocker.args[0]
    assert finding.title.startswith("Kidney stone · whole slice · ")
    details = window.ct.findings.details.toPlainText()
    assert "expects CT images; this series is MR: the result may be meaningless." in details
    assert details.index("expects CT images") < details.index("Kidney ROI")
    assert QtWidgets.QApplication.activeModalWidget() is None
