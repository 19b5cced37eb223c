"""AI findings in the CT workspace: the liver segmentation on the bundled real series, through the window."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medview.io.volume_files import read_label_map
from medview.ui.ct.layers import HeatmapLayer, LabelLayer
from medview.ui.qt import QtCore, QtGui, QtWidgets

from .conftest import SAMPLE_MASK, SAMPLE_SERIES, make_volume, open_and_wait, wait_until_settled, watch_tasks

RUN_TIMEOUT_MS = 120_000


@pytest.fixture
def engine(shipped_engine: Any) -> Any:
    if not shipped_engine.cards("liver_segmentation"):
        pytest.skip("no liver_segmentation bundle in resources/models")
    return shipped_engine


@pytest.fixture
def ct_window(qtbot: Any, window: Any, engine: Any) -> Any:
    """The window with the engine and the bundled sample series (20 slices of an abdominal CT) loaded."""
    window.set_engine(engine)
    open_and_wait(qtbot, window, SAMPLE_SERIES)
    return window


def segment(qtbot: Any, window: Any) -> Any:
    """Click *Segment liver* (once the previous run has finished) and wait for the finding."""
    qtbot.waitUntil(window.ct.findings.liver.segment_button.isEnabled, timeout=RUN_TIMEOUT_MS)
    with qtbot.waitSignal(window.ct.findings.finding_added, timeout=RUN_TIMEOUT_MS) as blocker:
        qtbot.mouseClick(window.ct.findings.liver.segment_button, QtCore.Qt.MouseButton.LeftButton)
    return blocker.args[0]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_segment_liver_paints_as_it_goes_and_lists_the_finding_with_provenance(
    qtbot: Any, ct_window: Any, monkeypatch: Any
) -> None:
    window = ct_window
    volume = window.ct.volume
    painted: list[int] = []  # voxels of the growing mask each time the run reported a batch done

    def watch(task: Any) -> None:
        task.signals.progress.connect(
            lambda *_progress: painted.extend(
                int(layer.labels.sum()) for layer in window.ct.layers.layers if layer.name.startswith("Liver (running")
            )
        )

    watch_tasks(monkeypatch, window, watch)
    finding = segment(qtbot, window)

    result = finding.result
    assert result.mask.shape == volume.shape
    assert len(painted) >= 2  # one per batch of 8 slices, painted before the run ended
    assert painted == sorted(painted)
    assert painted[-1] == int(result.mask.sum())
    assert not any(layer.name.startswith("Liver (running") for layer in window.ct.layers.layers)

    # the mask lies on the real liver (a mirrored or shifted mask would not)
    reference = read_label_map(SAMPLE_MASK, volume).labels > 0
    assert dice(result.mask, reference) > 0.7

    mask_layer, probability_layer = finding.mask_layer, finding.heatmap_layer
    assert isinstance(mask_layer, LabelLayer)
    assert isinstance(probability_layer, HeatmapLayer)
    assert window.ct.layers.layers[-2:] == [mask_layer, probability_layer]
    assert np.array_equal(mask_layer.labels > 0, result.mask)
    assert not probability_layer.visible  # the probability map waits until asked for

    # what is drawn: the axial overlay is the mask of the slice shown
    axial = window.ct.mpr.axial
    axial.set_index(int(np.argmax(result.mask.sum(axis=(1, 2)))))
    drawn = next(item for item in axial.overlay_items if item.isVisible())
    assert np.array_equal(drawn.image > 0, result.mask[axial.index])

    # the finding and where it came from
    panel = window.ct.findings
    assert panel.list.count() == 1
    # the liver of the sample runs through all 20 slices: its volume is a lower bound
    first, last = result.slice_range
    assert (first, last) == (0, volume.shape[0] - 1)
    assert panel.list.item(0).text().startswith(f"Liver ≥ {result.volume_ml:,.0f} mL (continues beyond the scan)")
    details = panel.details.toPlainText()
    headline = f"Liver volume {result.volume_ml:,.1f} mL, a lower bound: the liver continues beyond the scanned range"
    assert f"{headline}\n{finding.provenance.validated}\n" in details
    assert f"slices {first + 1}-{last + 1} of {volume.shape[0]}" in details
    for field in ("Trained on", "Validation metrics", "Threshold", "Ran on", finding.provenance.label):
        assert field in details
    assert result.volume_ml == pytest.approx(result.mask.sum() * np.prod(volume.spacing) / 1000)
    # a demo bundle: the banner is on the image
    assert finding.provenance.demo
    assert window.ct.mpr.banner.isVisible()
    assert window.ct.mpr.banner.parent() is window.ct.mpr.axial  # on the image, not in a panel beside it


def test_the_running_layer_and_the_finding_share_one_mask_and_no_copy_is_kept(qtbot: Any, ct_window: Any) -> None:
    """Each copy of a 1,000-slice 512x512 mask is 250 MB (bench/scale.py): the engine fills the running layer's
    array, which becomes the result's mask, and the finding's mask layer is a uint8 view of it."""
    window = ct_window
    running: list[Any] = []  # (layer, the array it showed)

    def note_running_layer() -> None:
        for layer in window.ct.layers.layers:
            if layer.name.startswith("Liver (running") and not any(layer is seen for seen, _ in running):
                running.append((layer, layer.labels))

    window.ct.layers.changed.connect(note_running_layer)
    finding = segment(qtbot, window)
    qtbot.waitUntil(lambda: not window.tasks.running, timeout=RUN_TIMEOUT_MS)

    [(layer, shown)] = running
    labels, mask = finding.mask_layer.labels, finding.result.mask
    assert np.shares_memory(shown, mask)
    assert layer.labels.size == 0  # the finished task still holds the running layer: it holds nothing
    assert labels.dtype == np.uint8
    assert np.shares_memory(labels, mask)
    assert np.array_equal(labels, mask)
    assert labels.max() == 1


def test_a_finished_run_does_not_keep_its_series_alive_once_another_is_shown(
    qtbot: Any, window: Any, engine: Any
) -> None:
    """The run's task outlived it, and with it the voxels of a series no longer shown (500 MB for 1,000 slices)."""
    window.set_engine(engine)
    voxels = np.random.default_rng(0).integers(-100, 200, (4, 64, 64)).astype(np.int16)
    first = make_volume(voxels, series_uid="1.2.3")
    shown = weakref.ref(first)
    window.ct.show_loaded_volume(first)
    with qtbot.waitSignal(window.ct.findings.finding_added, timeout=RUN_TIMEOUT_MS):
        window.ct.findings.liver.run()
    qtbot.waitUntil(lambda: not window.tasks.running, timeout=RUN_TIMEOUT_MS)
    del first

    window.ct.show_loaded_volume(make_volume(voxels.copy(), series_uid="4.5.6"))
    qtbot.wait(50)  # the event loop drops the ended task's slots
    gc.collect()

    assert shown() is None
    window.ct.show_loaded_volume(make_volume(voxels.copy(), series_uid="1.2.3"))
    assert window.ct.findings.list.count() == 1  # the finding itself stays with its series


def test_overlay_controls_outline_probability_and_opacity(qtbot: Any, ct_window: Any) -> None:
    window = ct_window
    finding = segment(qtbot, window)
    panel = window.ct.findings
    axial = window.ct.mpr.axial
    axial.set_index(int(np.argmax(finding.result.mask.sum(axis=(1, 2)))))
    drawn = next(item for item in axial.overlay_items if item.isVisible())
    full = np.count_nonzero(drawn.image)

    panel.outline_box.click()
    assert finding.mask_layer.outline_only
    outline = np.count_nonzero(drawn.image)
    assert 0 < outline < full / 3  # the border only: the anatomy inside shows
    assert np.all(finding.result.mask[axial.index][drawn.image > 0])

    panel.heatmap_box.click()
    assert finding.heatmap_layer.visible
    assert axial.colour_bar is not None
    assert axial.colour_bar.isVisible()
    assert axial.colour_bar.levels() == pytest.approx((0.0, 1.0))

    panel.opacity.setValue(25)
    assert finding.mask_layer.opacity == pytest.approx(0.25)
    assert drawn.opacity() == pytest.approx(0.25)

    panel.show_mask.click()
    assert not finding.mask_layer.visible
    panel.heatmap_box.click()
    assert not window.ct.mpr.banner.isVisible()  # no demo output on screen, no banner


def test_findings_are_kept_per_series_and_a_second_run_is_kept_beside_the_first(
    qtbot: Any, ct_window: Any, shared_data: Path
) -> None:
    window = ct_window
    first = segment(qtbot, window)
    second = segment(qtbot, window)
    assert window.ct.findings.list.count() == 2
    assert first is not second

    other = shared_data / "covid_ct" / "COVID-CT-MD" / "Normal"
    series = next(p for p in sorted(other.iterdir()) if p.is_dir()) if other.is_dir() else None
    if series is None:
        pytest.skip("no second CT series in the shared data")
    open_and_wait(qtbot, window, series)
    assert window.ct.findings.list.count() == 0
    assert window.ct.layers.layers == []

    open_and_wait(qtbot, window, SAMPLE_SERIES)
    assert window.ct.findings.list.count() == 2
    assert [layer for layer in window.ct.layers.layers] == first.layers + second.layers


def test_cancel_leaves_no_half_mask(qtbot: Any, ct_window: Any) -> None:
    window = ct_window
    task = window.ct.findings.liver.run()
    window.cancel_running()
    wait_until_settled(qtbot, window, task, RUN_TIMEOUT_MS)
    assert window.ct.findings.list.count() == 0
    assert window.ct.layers.layers == []
    assert window.ct.findings.liver.segment_button.isEnabled()


def test_a_series_of_another_modality_gets_a_warning_naming_what_the_model_expects(
    qtbot: Any, window: Any, engine: Any
) -> None:
    window.set_engine(engine)
    voxels = np.random.default_rng(0).integers(0, 400, (4, 64, 64)).astype(np.int16)
    window.ct.show_loaded_volume(make_volume(voxels, modality="MR", series_uid="1.2.3"))
    with qtbot.waitSignal(window.ct.findings.finding_added, timeout=RUN_TIMEOUT_MS) as found:
        window.ct.findings.liver.run()
    (warning,) = found.args[0].warnings
    assert "expects CT images" in warning
    assert "this series is MR" in warning
    # beside the verdict, not in the runner's few lines above the list
    assert warning in window.ct.findings.details.toPlainText()
    assert window.ct.findings.liver.note.text() == ""
    assert QtWidgets.QApplication.activeModalWidget() is None


@pytest.mark.parametrize(
    ("body_part", "warned"), [("HEAD", True), ("Chest abdomen", False), ("CHEST_ABDOMEN", False), ("", False)]
)
def test_a_series_of_another_body_part_gets_a_warning_naming_what_the_model_is_meant_for(
    qtbot: Any, window: Any, engine: Any, body_part: str, warned: bool
) -> None:
    window.set_engine(engine)
    voxels = np.random.default_rng(0).integers(0, 400, (4, 64, 64)).astype(np.int16)
    window.ct.show_loaded_volume(make_volume(voxels, series_uid="1.2.3", info={"BodyPartExamined": body_part}))
    with qtbot.waitSignal(window.ct.findings.finding_added, timeout=RUN_TIMEOUT_MS) as found:
        window.ct.findings.liver.run()
    warnings = found.args[0].warnings
    if warned:
        (warning,) = warnings
        assert "is meant for CT of the ABDOMEN, LIVER, CHEST" in warning
        assert "recorded as HEAD" in warning
        assert warning in window.ct.findings.details.toPlainText()
    else:
        assert warnings == ()


def test_the_finding_saves_as_dicom_objects_for_the_pacs_and_the_save_is_audited(
    qtbot: Any, ct_window: Any, tmp_path: Path
) -> None:
    import pydicom

    from medview.audit import audit_log

    window = ct_window
    finding = segment(qtbot, window)
    panel = window.ct.findings
    assert panel.dicom_button.isEnabled()
    with_captures = tmp_path / "with captures"
    with_captures.mkdir()
    wait_until_settled(qtbot, window, panel.export_dicom_results(tmp_path), RUN_TIMEOUT_MS)
    wait_until_settled(qtbot, window, panel.export_dicom_results(with_captures, captures=True), RUN_TIMEOUT_MS)
    modalities = sorted(pydicom.dcmread(path, stop_before_pixels=True).Modality for path in tmp_path.glob("*.dcm"))
    assert modalities == ["OT", "SEG", "SR"]  # a parametric map's modality is the source's or OT
    captures = list(with_captures.rglob("capture_*.dcm"))
    assert len(captures) == int(finding.result.mask.any(axis=(1, 2)).sum())
    assert panel.note.text().startswith(f"Saved {3 + len(captures)} DICOM file(s) in {with_captures}")
    (exported, *_) = [event for event in audit_log().read_events() if event.event == "Export"]
    destination = next(item for item in exported.objects if item["role"] == "Destination")
    assert destination["id"] == str(tmp_path)
    assert destination["format"] == "DICOM SR, SEG, parametric map"


def test_send_to_the_pacs_stores_the_objects_there_and_what_does_not_arrive_waits_in_the_outbox(
    qtbot: Any, ct_window: Any, tmp_path: Path
) -> None:
    import socket

    import pydicom

    from medview.pacs.receiver import StorageServer
    from medview.pacs.store import LocalStudyStore
    from medview.ui.pacs.outbox import OutboxDialog

    window = ct_window
    segment(qtbot, window)
    panel = window.ct.findings
    settings = window.settings
    with LocalStudyStore(tmp_path / "pacs") as store:
        server = StorageServer("127.0.0.1")
        server.start("HOSPITALPACS", 0, store)
        try:
            settings.pacs_remote_ae_title, settings.pacs_remote_host = "HOSPITALPACS", "127.0.0.1"
            settings.pacs_remote_port = server.port
            wait_until_settled(qtbot, window, panel.send_results(), RUN_TIMEOUT_MS)
            assert panel.note.text().endswith("3 object(s) stored in the PACS"), panel.note.text()
            series = [series for study in store.studies() for series in store.series(study.study_uid)]
            assert sorted(one.modality for one in series) == ["OT", "SEG", "SR"]  # map, SEG, report
            # the case report joins them, as an encapsulated PDF in the same study
            wait_until_settled(qtbot, window, window.send_report_to_pacs(), RUN_TIMEOUT_MS)
            (study,) = store.studies()
            (document,) = [one for one in store.series(study.study_uid) if one.modality == "DOC"]
            (path,) = store.series_files(document.series_uid, study.study_uid)
            pdf = pydicom.dcmread(path)
            assert pdf.EncapsulatedDocument.startswith(b"%PDF-")
            assert pdf.DocumentTitle == "MedView case report"
        finally:
            server.stop()
    with socket.socket() as probe:  # a port nothing listens on: the PACS is down
        probe.bind(("127.0.0.1", 0))
        settings.pacs_remote_port = probe.getsockname()[1]
    wait_until_settled(qtbot, window, panel.send_results(), RUN_TIMEOUT_MS)
    assert "3 still waiting in the outbox" in panel.note.text()
    assert "connection refused" in panel.note.text()
    dialog = window.show_outbox()
    assert isinstance(dialog, OutboxDialog)
    assert dialog.table.rowCount() == 7  # 3 + the report sent, 3 waiting
    rows = [(dialog.table.item(row, 4).text(), dialog.table.item(row, 5).text()) for row in range(7)]
    assert sum(state.startswith("sent ") for state, _answer in rows) == 4
    waiting = [(state, answer) for state, answer in rows if state.startswith("waiting: next try in ")]
    assert len(waiting) == 3
    assert all(answer.startswith("connection refused") for _state, answer in waiting)
    dialog.table.selectRow(0)
    dialog.remove_button.click()
    assert dialog.table.rowCount() == 6
    dialog.close()


def test_file_send_the_series_results_sends_every_finding_of_the_series(
    qtbot: Any, ct_window: Any, tmp_path: Path
) -> None:
    from medview.pacs.receiver import StorageServer
    from medview.pacs.store import LocalStudyStore

    window = ct_window
    segment(qtbot, window)
    segment(qtbot, window)  # a second run: two findings of the same model
    with LocalStudyStore(tmp_path / "pacs") as store:
        server = StorageServer("127.0.0.1")
        server.start("HOSPITALPACS", 0, store)
        try:
            settings = window.settings
            settings.pacs_remote_ae_title, settings.pacs_remote_host = "HOSPITALPACS", "127.0.0.1"
            settings.pacs_remote_port = server.port
            entries = [action.text() for action in window.findChildren(QtGui.QAction)]
            assert "Send the series' AI &results to the PACS" in entries
            wait_until_settled(qtbot, window, window.send_series_results(), RUN_TIMEOUT_MS)
            assert window.ct.findings.note.text().endswith("6 object(s) stored in the PACS")
            assert store.instance_count() == 6
        finally:
            server.stop()


def test_stored_results_beside_a_series_come_back_as_findings_in_a_new_session(
    qtbot: Any, window: Any, engine: Any, tmp_path: Path
) -> None:
    """The study folder as the received-studies store keeps it: one folder per series. Results saved beside
    the CT are read back when the CT is opened again, in another window (a new session)."""
    import shutil

    from medview.ui.main_window import MainWindow

    study = tmp_path / "study"
    shutil.copytree(SAMPLE_SERIES, study / "ct")
    window.set_engine(engine)
    open_and_wait(qtbot, window, study / "ct")
    original = segment(qtbot, window)
    (study / "results").mkdir()
    wait_until_settled(qtbot, window, window.ct.findings.export_dicom_results(study / "results"), RUN_TIMEOUT_MS)

    later = MainWindow()
    qtbot.addWidget(later)
    try:
        open_and_wait(qtbot, later, study / "ct")
        panel = later.ct.findings
        qtbot.waitUntil(lambda: panel.list.count() == 1, timeout=RUN_TIMEOUT_MS)
        (finding,) = panel.current_findings()
        assert finding.stored
        volume_ml = original.result.volume_ml
        assert finding.title.startswith(f"Stored: Liver volume {volume_ml:,.1f} mL on slices 1-20:")
        assert finding.title.endswith(f"{original.provenance.label} (demo)")
        assert finding.provenance.validated == original.provenance.validated  # beside the verdict, as when run
        panel.list.setCurrentRow(0)
        details = panel.details.toPlainText()
        assert details.index("Liver volume") < details.index(original.provenance.validated)
        assert "Demo model: not for diagnosis" in details
        assert "MedView did not run the model now" in details
        # the SEG's mask and the probability map are the overlays, on the same voxels
        assert np.array_equal(finding.mask_layer.labels > 0, original.result.mask)
        np.testing.assert_allclose(
            finding.heatmap_layer.values, np.asarray(original.result.probability, np.float32), atol=2e-3
        )
        assert not panel.dicom_button.isEnabled()  # it is DICOM already
    finally:
        later.close()
        later.tasks.pool.waitForDone(5000)


def test_a_series_from_a_file_cannot_be_saved_as_dicom_objects(qtbot: Any, window: Any, engine: Any) -> None:
    window.set_engine(engine)
    voxels = np.random.default_rng(0).integers(0, 400, (4, 64, 64)).astype(np.int16)
    window.ct.show_loaded_volume(make_volume(voxels, series_uid="1.2.3"))
    with qtbot.waitSignal(window.ct.findings.finding_added, timeout=RUN_TIMEOUT_MS):
        window.ct.findings.liver.run()
    assert not window.ct.findings.dicom_button.isEnabled()
    assert "this volume came from a file" in window.ct.findings.dicom_button.toolTip()


def test_the_finding_exports_as_dicom_seg_and_nifti_that_read_back_onto_the_series(
    qtbot: Any, ct_window: Any, tmp_path: Path
) -> None:
    window = ct_window
    finding = segment(qtbot, window)
    panel = window.ct.findings
    assert panel.seg_button.isEnabled()
    assert panel.nifti_button.isEnabled()
    for path, export in ((tmp_path / "liver.dcm", panel.export_seg), (tmp_path / "liver.nii.gz", panel.export_nifti)):
        wait_until_settled(qtbot, window, export(path), RUN_TIMEOUT_MS)
        assert path.name in panel.note.text()
        read_back = read_label_map(path, window.ct.volume)
        assert np.array_equal(read_back.labels > 0, finding.result.mask), path.name

    # the SEG names the model that made it, and says it is a demo
    import pydicom

    seg = pydicom.dcmread(tmp_path / "liver.dcm")
    assert seg.Modality == "SEG"
    assert "DEMO" in seg.SeriesDescription
    algorithm = seg.SegmentSequence[0].SegmentAlgorithmName
    assert algorithm == finding.provenance.model_id
