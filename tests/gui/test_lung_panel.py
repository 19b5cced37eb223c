"""The lung sound workspace on the real ICBHI recordings, through the real window and the shipped demo bundle."""

from __future__ import annotations

import csv
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from medview.io.audio import read_icbhi_annotations
from medview.preprocess.cycles import detect_cycles
from medview.ui.lung.plots import clock
from medview.ui.qt import QtCore, QtGui, QtWidgets
from tests.conftest import played_frames
from tests.gui.conftest import MOVE_INTERVAL_S, cell_text, mouse_click, mouse_drag

ICBHI = Path("lung_sound") / "icbhi_sample"
TIMEOUT_MS = 60_000


@pytest.fixture
def engine(shipped_engine: Any) -> Any:
    if not shipped_engine.cards("lung_sound"):
        pytest.skip("no lung_sound bundle in resources/models")
    return shipped_engine


@pytest.fixture
def recordings(shared_data: Path) -> Path:
    return shared_data / ICBHI


def open_and_classify(qtbot: Any, window: Any, path: Path) -> Any:
    with qtbot.waitSignal(window.lung.classified, timeout=TIMEOUT_MS) as blocker:
        window.open_paths([path])
    return blocker.args[0]


@pytest.mark.parametrize(
    ("name", "rate", "subtype"),
    [
        ("102_1b1_Ar_sc_Meditron", 44_100, "PCM_16"),
        ("106_2b1_Pr_mc_LittC2SE", 44_100, "PCM_24"),
        ("104_1b1_Ar_sc_Litt3200", 4000, "PCM_16"),
    ],
)
def test_a_recording_opens_with_its_annotated_cycles_classified(
    qtbot: Any, window: Any, engine: Any, recordings: Path, name: str, rate: int, subtype: str
) -> None:
    window.set_engine(engine)
    path = recordings / f"{name}.wav"
    result = open_and_classify(qtbot, window, path)
    lung = window.lung
    assert window.workspaces.currentWidget() is lung
    recording = lung.opened_recording.recording
    assert (recording.sample_rate, recording.subtype) == (rate, subtype)
    assert f"{rate} Hz" in lung.status.text()

    # the cycles are exactly the annotation file's, in the table and as bands
    expected = read_icbhi_annotations(path.with_suffix(".txt"), duration_s=recording.duration_s)
    assert lung.cycles == expected
    assert lung.table.model().rowCount() == len(expected)
    assert len(lung.regions) == len(expected)
    for row, cycle in enumerate(expected):
        assert cell_text(lung.table, row, 1) == f"{cycle.start_s:.3f}"
        assert cell_text(lung.table, row, 3) == cycle.label
        assert lung.regions[row][0].getRegion() == pytest.approx((cycle.start_s, cycle.end_s))

    # every cycle's prediction is in the table, and its band takes the class colour
    assert len(result.scores) == len(expected)
    for row, scores in enumerate(result.scores):
        assert cell_text(lung.table, row, 4) == scores.label
        assert float(cell_text(lung.table, row, 5)) == pytest.approx(scores.probabilities["normal"], abs=0.005)
        assert (
            lung.regions[row][0].brush.color().getRgb()[:3]
            == {
                "normal": (120, 200, 120),
                "crackle": (255, 170, 60),
                "wheeze": (90, 170, 255),
                "both": (230, 80, 200),
            }[scores.label]
        )
    assert lung.banner.isVisible()
    assert "lung-sound" in lung.details.text()
    # the cycles' verdicts, then the model's validated performance under them, before the model's table
    details = lung.details.text()
    assert f"{len(result.scores)} cycles: " in details
    assert details.index(f"{len(result.scores)} cycles: ") < details.index("Validated: ") < details.index("<table")

    # the waveform and spectrogram cover the whole recording
    times, _values = lung.wave_curve.getData()
    assert times[-1] == pytest.approx(recording.duration_s, abs=0.05)
    assert lung.spectrum_image.image.shape[1] > 100


def test_two_class_view_sums_the_abnormal_classes(qtbot: Any, window: Any, engine: Any, recordings: Path) -> None:
    window.set_engine(engine)
    result = open_and_classify(qtbot, window, recordings / "104_1b1_Al_sc_Litt3200.wav")
    lung = window.lung
    lung.classes_box.setCurrentIndex(1)
    model = lung.table.model()
    headers = [model.headerData(c, QtCore.Qt.Orientation.Horizontal) for c in range(model.columnCount())]
    assert headers[-2:] == ["p(normal)", "p(abnormal)"]
    for row, scores in enumerate(result.scores):
        abnormal = 1 - scores.probabilities["normal"]
        assert float(cell_text(lung.table, row, 6)) == pytest.approx(abnormal, abs=0.005)
        assert cell_text(lung.table, row, 4) == ("abnormal" if abnormal > 0.5 else "normal")


def open_recording(qtbot: Any, window: Any, path: Path) -> Any:
    with qtbot.waitSignal(window.lung.opened, timeout=TIMEOUT_MS) as blocker:
        window.open_paths([path])
    return blocker.args[0].recording


def plot_pixel(lung: Any, plot: Any, seconds: float) -> QtCore.QPoint:
    """The viewport pixel at ``seconds`` on ``plot``, half-way up."""
    box = plot.getViewBox()
    low, high = box.viewRange()[1]
    return lung.graphics.mapFromScene(box.mapViewToScene(QtCore.QPointF(seconds, (low + high) / 2)))


def wait_until_played(qtbot: Any, lung: Any) -> list[float]:
    """Wait for the span to end, collecting the playhead positions the panel's timer drew."""
    positions: list[float] = []
    lung.playhead.sigPositionChanged.connect(lambda line: positions.append(line.value()))
    qtbot.waitUntil(lambda: not lung.playhead_timer.isActive(), timeout=TIMEOUT_MS)
    return positions


def test_clicking_a_row_selects_and_plays_that_cycle(
    qtbot: Any, window: Any, recordings: Path, audio_output: Path
) -> None:
    recording = open_recording(qtbot, window, recordings / "104_1b1_Ar_sc_Litt3200.wav")
    lung = window.lung
    lung.wave_plot.setXRange(0, 3, padding=0)
    row = len(lung.cycles) - 1
    cycle = lung.cycles[row]
    cell = lung.table.model().index(row, 1)
    lung.table.scrollTo(cell)
    rect = lung.table.visualRect(cell)
    qtbot.mouseClick(lung.table.viewport(), QtCore.Qt.MouseButton.LeftButton, pos=rect.center())

    assert lung.selection_span() == pytest.approx((cycle.start_s, cycle.end_s))
    positions = wait_until_played(qtbot, lung)
    assert lung.play_button.text() == "Play"
    assert lung.playhead.value() == pytest.approx(cycle.end_s, abs=1e-3)  # ends at the end of the cycle
    assert all(cycle.start_s - 1e-3 <= p <= cycle.end_s + 1e-3 for p in positions)
    low, high = lung.wave_plot.viewRange()[0]
    assert low <= cycle.start_s <= high  # scrolled into view
    rate = recording.sample_rate
    expected = recording.samples[round(cycle.start_s * rate) : round(cycle.end_s * rate)]
    np.testing.assert_array_equal(played_frames(audio_output), np.trim_zeros(expected))


def test_click_seeks_then_play_runs_to_the_end_at_the_chosen_speed_and_volume(
    qtbot: Any, window: Any, recordings: Path, audio_output: Path
) -> None:
    recording = open_recording(qtbot, window, recordings / "102_1b1_Ar_sc_Meditron.wav")
    lung = window.lung
    duration = recording.duration_s
    mouse_click(lung.graphics.viewport(), plot_pixel(lung, lung.spectrum_plot, duration - 4.0))
    start = lung.playhead.value()
    assert start == pytest.approx(duration - 4.0, abs=0.1)  # within a pixel of the click
    lung.speed_box.setCurrentText("2×")
    lung.volume_slider.setValue(50)
    window.activateWindow()
    lung.table.setFocus()
    qtbot.keyClick(lung.table, QtCore.Qt.Key.Key_Space)  # Space plays

    positions = wait_until_played(qtbot, lung)
    assert lung.playhead.value() == pytest.approx(duration)
    assert positions == sorted(positions)
    assert lung.time_label.text().startswith(clock(duration))
    rate = recording.sample_rate
    expected = 0.5 * recording.samples[round(start * rate) :: 2]
    out = played_frames(audio_output)
    assert out.size == pytest.approx(np.trim_zeros(expected).size, abs=2)
    np.testing.assert_allclose(out, np.trim_zeros(expected)[: out.size], atol=1e-6)


def test_shift_drag_selects_and_loop_repeats_the_selection(
    qtbot: Any, window: Any, recordings: Path, audio_output: Path
) -> None:
    recording = open_recording(qtbot, window, recordings / "104_1b1_Ar_sc_Litt3200.wav")
    lung = window.lung
    lung.wave_plot.setXRange(0, 10, padding=0)
    mouse_drag(
        lung.graphics.viewport(),
        plot_pixel(lung, lung.wave_plot, 2.0),
        plot_pixel(lung, lung.wave_plot, 3.0),
        modifiers=QtCore.Qt.KeyboardModifier.ShiftModifier,
    )
    start, end = lung.selection_span()
    assert (start, end) == pytest.approx((2.0, 3.0), abs=0.05)
    assert lung.wave_plot.viewRange()[0] == pytest.approx([0, 10])  # a selection, not a pan
    assert lung.cycles == read_icbhi_annotations(recordings / "104_1b1_Ar_sc_Litt3200.txt")  # no band moved

    lung.loop_box.setChecked(True)
    qtbot.mouseClick(lung.play_button, QtCore.Qt.MouseButton.LeftButton)
    rate = recording.sample_rate
    span = recording.samples[round(start * rate) : round(end * rate)]
    qtbot.waitUntil(lambda: np.fromfile(audio_output, dtype="<f4").size > 4 * span.size, timeout=TIMEOUT_MS)
    assert lung.player.playing
    qtbot.mouseClick(lung.stop_button, QtCore.Qt.MouseButton.LeftButton)
    assert not lung.player.playing
    assert lung.playhead.value() == pytest.approx(start, abs=1 / rate)  # back to the start of the selection
    out = np.fromfile(audio_output, dtype="<f4")
    out = out[np.flatnonzero(out)[0] :]
    loops = out.size // span.size
    np.testing.assert_array_equal(out[: (loops - 1) * span.size], np.tile(span, loops - 1))

    qtbot.mouseClick(lung.clear_selection_button, QtCore.Qt.MouseButton.LeftButton)
    assert lung.selection_span() is None


def test_without_an_output_device_playback_says_so_and_the_rest_works(
    qtbot: Any, window: Any, recordings: Path, no_audio_output: None
) -> None:
    open_recording(qtbot, window, recordings / "104_1b1_Ar_sc_Litt3200.wav")
    lung = window.lung
    qtbot.mouseClick(lung.play_button, QtCore.Qt.MouseButton.LeftButton)
    assert lung.playback_note.isVisible()
    note = lung.playback_note.text()
    assert "no sound output device was found" in note
    assert "PortAudio" not in note
    assert "-1" not in note
    assert "Error querying device -1" in lung.playback_note.toolTip()
    assert lung.play_button.text() == "Play"
    assert not lung.playhead_timer.isActive()
    assert QtWidgets.QApplication.activeModalWidget() is None
    lung.seek(5.0)  # seeking and the views still work
    assert lung.playhead.value() == pytest.approx(5.0)
    assert lung.spectrum_image.image is not None

    # said of that recording's try: the next recording opens without it, and Play tries the device again
    open_recording(qtbot, window, recordings / "104_1b1_Al_sc_Litt3200.wav")
    assert not lung.playback_note.isVisible()
    assert lung.playback_note.toolTip() == ""
    qtbot.mouseClick(lung.play_button, QtCore.Qt.MouseButton.LeftButton)
    assert lung.playback_note.isVisible()


def test_editing_a_cycle_clears_its_result_until_classified_again(
    qtbot: Any, window: Any, engine: Any, recordings: Path
) -> None:
    window.set_engine(engine)
    open_and_classify(qtbot, window, recordings / "104_1b1_Ar_sc_Litt3200.wav")
    lung = window.lung
    region = lung.regions[2][0]
    start, end = region.getRegion()
    region.setRegion((start + 0.25, end))
    region.sigRegionChangeFinished.emit(region)
    assert lung.cycles[2].start_s == pytest.approx(start + 0.25)
    assert cell_text(lung.table, 2, 4) == "edited: classify again"
    assert cell_text(lung.table, 2, 5) == ""
    assert not lung.icbhi_button.isEnabled()
    with qtbot.waitSignal(lung.classified, timeout=TIMEOUT_MS) as blocker:
        qtbot.mouseClick(lung.classify_button, QtCore.Qt.MouseButton.LeftButton)
    assert blocker.args[0].cycles[2][0] == pytest.approx(start + 0.25)
    assert cell_text(lung.table, 2, 4) in ("normal", "crackle", "wheeze", "both")
    assert lung.icbhi_button.isEnabled()


def test_exports_csv_and_icbhi(qtbot: Any, window: Any, engine: Any, recordings: Path, tmp_path: Path) -> None:
    window.set_engine(engine)
    result = open_and_classify(qtbot, window, recordings / "106_2b1_Pl_mc_LittC2SE.wav")
    lung = window.lung
    lung.export_csv(tmp_path / "cycles.csv")
    rows = list(csv.DictReader((tmp_path / "cycles.csv").open()))
    assert len(rows) == len(lung.cycles)
    for row, cycle, scores in zip(rows, lung.cycles, result.scores, strict=True):
        assert float(row["start_s"]) == pytest.approx(cycle.start_s, abs=1e-3)
        assert row["annotated"] == cycle.label
        assert row["predicted"] == scores.label
        assert float(row["p_wheeze"]) == pytest.approx(scores.probabilities["wheeze"], abs=1e-4)
        assert row["demo_model"] == "true"

    lung.export_icbhi(tmp_path / "predicted.txt")
    exported = read_icbhi_annotations(tmp_path / "predicted.txt")
    assert [c.label for c in exported] == [s.label for s in result.scores]
    assert [c.start_s for c in exported] == pytest.approx([c.start_s for c in lung.cycles], abs=1e-3)


def test_a_recording_without_annotations_gets_its_cycles_found_and_classified(
    qtbot: Any, window: Any, engine: Any, recordings: Path, tmp_path: Path
) -> None:
    window.set_engine(engine)
    path = tmp_path / "bare.wav"
    shutil.copy(recordings / "106_2b1_Pl_mc_LittC2SE.wav", path)
    result = open_and_classify(qtbot, window, path)
    lung = window.lung
    recording = lung.opened_recording.recording
    assert [(c.start_s, c.end_s) for c in lung.cycles] == detect_cycles(recording.samples, recording.sample_rate)
    assert len(lung.cycles) >= 5
    assert "found automatically" in lung.status.text()
    assert "No annotation file (bare.txt)" in lung.status.text()
    assert "found automatically" in lung.details.text()
    assert len(result.scores) == len(lung.cycles)
    for row in range(len(lung.cycles)):
        assert cell_text(lung.table, row, 3) == ""  # nobody annotated these cycles
        assert cell_text(lung.table, row, 4) == result.scores[row].label
    lung.export_csv(tmp_path / "cycles.csv")
    assert {row["annotated"] for row in csv.DictReader((tmp_path / "cycles.csv").open())} == {""}


@pytest.mark.parametrize(
    ("seconds", "rate", "expected"),
    [(600, 44_100, "No breathing cycles were found"), (1, 4000, "too short (1.0 s)")],
    ids=["10 minutes of silence", "a 1 s clip"],
)
def test_silence_and_a_short_clip_open_without_cycles_and_say_why(
    qtbot: Any, window: Any, engine: Any, tmp_path: Path, seconds: int, rate: int, expected: str
) -> None:
    window.set_engine(engine)
    path = tmp_path / "quiet.wav"
    soundfile.write(path, np.zeros(seconds * rate, np.int16), rate, subtype="PCM_16")
    with qtbot.waitSignal(window.lung.opened, timeout=TIMEOUT_MS):
        window.open_paths([path])
    lung = window.lung
    assert lung.cycles == []
    assert expected in lung.status.text()
    assert f"{seconds:.1f} s, {rate} Hz" in lung.status.text()
    assert not lung.classify_button.isEnabled()
    assert lung.table.model().rowCount() == 0
    assert lung.spectrum_image.image is not None
    assert QtWidgets.QApplication.activeModalWidget() is None


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p, src: p.write_bytes(b""), "not a readable audio file"),
        (lambda p, src: p.write_text("just some text, not audio"), "not a readable audio file"),
    ],
    ids=["empty", "text"],
)
def test_bad_recordings_get_a_message_naming_the_file_and_keep_what_was_open(
    qtbot: Any, window: Any, engine: Any, recordings: Path, tmp_path: Path, make: Any, expected: str, monkeypatch: Any
) -> None:
    shown: list[tuple[str, str]] = []
    monkeypatch.setattr(
        "medview.ui.main_window.show_message", lambda _p, title, text, *a, **k: shown.append((title, text))
    )
    window.set_engine(engine)
    good = recordings / "104_1b1_Ar_sc_Litt3200.wav"
    open_and_classify(qtbot, window, good)
    bad = tmp_path / "bad.wav"
    make(bad, good)
    window.open_paths([bad])
    qtbot.waitUntil(lambda: bool(shown), timeout=TIMEOUT_MS)
    assert "bad.wav" in shown[0][1]
    assert expected in shown[0][1]
    assert window.lung.opened_recording.recording.path == good  # what was open stays
    assert window.lung.table.model().rowCount() > 0


def test_malformed_annotation_rows_are_named_and_the_recording_still_opens(
    qtbot: Any, window: Any, recordings: Path, tmp_path: Path
) -> None:
    path = tmp_path / "rec.wav"
    shutil.copy(recordings / "104_1b1_Ar_sc_Litt3200.wav", path)
    path.with_suffix(".txt").write_text("0.0\t1.5\t0\t0\n1.5\tabc\t0\t1\n")
    with qtbot.waitSignal(window.lung.opened, timeout=TIMEOUT_MS):
        window.open_paths([path])
    lung = window.lung
    assert "line 2" in lung.status.text()
    assert "rec.txt" in lung.status.text()
    assert "found automatically" in lung.status.text()  # the rows that cannot be trusted are not half-used
    assert lung.wave_curve.getData()[0] is not None


def test_spectrogram_switches_between_mel_and_linear_and_range(qtbot: Any, window: Any, recordings: Path) -> None:
    with qtbot.waitSignal(window.lung.opened, timeout=TIMEOUT_MS):
        window.open_paths([recordings / "102_1b1_Ar_sc_Meditron.wav"])
    lung = window.lung
    mel_bins = lung.spectrum_image.image.shape[0]
    lung.spectrum_box.setCurrentIndex(1)
    assert lung.spectrum_image.image.shape[0] == 1025  # linear, 2048-point FFT at 44.1 kHz
    assert mel_bins == 128
    lung.range_box.setValue(50)
    assert lung.spectrum_image.levels == pytest.approx([-50.0, 0.0])
    assert np.isfinite(lung.spectrum_image.image).all()
    assert "linear" in lung.spectrum_plot.getAxis("left").labelText


def test_no_lung_model_says_what_is_missing(qtbot: Any, window: Any, recordings: Path, tmp_path: Path) -> None:
    from medview.engine.service import Engine

    window.set_engine(Engine([tmp_path]))
    with qtbot.waitSignal(window.lung.opened, timeout=TIMEOUT_MS):
        window.open_paths([recordings / "104_1b1_Ar_sc_Litt3200.wav"])
    lung = window.lung
    assert "No lung sound model installed" in lung.details.text()
    assert cell_text(lung.table, 0, 4) == ""
    assert not [w for w in QtWidgets.QApplication.topLevelWidgets() if isinstance(w, QtWidgets.QMessageBox)]


def test_the_waveform_draws_every_sample_zoomed_in_and_an_envelope_zoomed_out(
    qtbot: Any, window: Any, recordings: Path
) -> None:
    recording = open_recording(qtbot, window, recordings / "106_2b1_Pr_mc_LittC2SE.wav")
    lung = window.lung
    pixels = int(lung.wave_plot.getViewBox().width())
    times, values = lung.wave_curve.getData()
    assert values.size <= 2 * pixels + 4  # the whole recording: a min/max per pixel, not 44,100 points a second
    assert values.max() == recording.samples.max()

    lung.wave_plot.setXRange(3.0, 3.01, padding=0)
    times, values = lung.wave_curve.getData()
    rate = recording.sample_rate
    np.testing.assert_array_equal(values, recording.samples[np.rint(times * rate).astype(int)])
    assert times[0] <= 3.0
    assert times[-1] >= 3.01


def test_a_long_recording_draws_its_many_cycles_as_one_overview_until_zoomed_in(
    qtbot: Any, window: Any, recordings: Path, tmp_path: Path
) -> None:
    """~1,100 cycles of a 30-minute recording as one draggable band each took seconds per repaint (bench.scale)."""
    from medview.ui.lung.panel import MAX_BAND_ITEMS

    samples, rate = soundfile.read(recordings / "104_1b1_Ar_sc_Litt3200.wav", dtype="int16")
    long = tmp_path / "long.wav"
    soundfile.write(long, np.tile(samples, 20), rate, subtype="PCM_16")  # 20 x 20 s
    duration = 20 * len(samples) / rate
    starts = np.arange(0.0, duration - 2.0, 2.0)
    long.with_suffix(".txt").write_text("".join(f"{s:.3f}\t{s + 2.0:.3f}\t0\t0\n" for s in starts))

    open_recording(qtbot, window, long)
    lung = window.lung
    assert len(lung.cycles) == len(starts) > MAX_BAND_ITEMS
    assert lung.band_overview_shown
    assert lung.regions == [None] * len(starts)  # no draggable band made while none is shown
    assert len(lung.overviews[0].starts) == len(starts)

    lung.wave_plot.setXRange(100.0, 140.0, padding=0)
    in_view = {i for i, cycle in enumerate(lung.cycles) if cycle.end_s >= 100.0 and cycle.start_s <= 140.0}
    assert not lung.band_overview_shown
    shown = {i for i, pair in enumerate(lung.regions) if pair and pair[0].isVisible() and pair[1].isVisible()}
    assert shown == in_view
    assert {i for i, pair in enumerate(lung.regions) if pair} == in_view

    lung.wave_plot.setXRange(0.0, duration, padding=0)
    assert lung.band_overview_shown
    assert not any(region.isVisible() for pair in lung.regions if pair for region in pair)
    # the overview is what tints the spectrogram under the cycles
    point = plot_pixel(lung, lung.spectrum_plot, 1.0)
    with_bands = lung.graphics.grab().toImage().pixelColor(point)
    for overview in lung.overviews:
        overview.hide()
    without = lung.graphics.grab().toImage().pixelColor(point)
    assert with_bands.getRgb() != without.getRgb()


# --------------------------------------------------------------------------- a recording cut off (issue 19, item 9)


def cut_recording(source: Path, folder: Path, size: int = 30_000) -> Path:
    """The first ``size`` bytes of a real ICBHI recording, with its annotation file: a WAV cut off in a copy."""
    path = folder / source.name
    path.write_bytes(source.read_bytes()[:size])
    shutil.copy(source.with_suffix(".txt"), path.with_suffix(".txt"))
    return path


def truncated_question(qtbot: Any, lung: Any) -> QtWidgets.QMessageBox:
    """The question the panel asks about a cut-off file, once it is shown."""
    qtbot.waitUntil(lambda: lung.findChild(QtWidgets.QMessageBox, "truncated_question") is not None, timeout=TIMEOUT_MS)
    box = lung.findChild(QtWidgets.QMessageBox, "truncated_question")
    qtbot.waitExposed(box)
    return box


def answer(box: QtWidgets.QMessageBox, role: QtWidgets.QMessageBox.ButtonRole) -> None:
    button = next(button for button in box.buttons() if box.buttonRole(button) == role)
    button.click()


def test_a_truncated_recording_is_explained_and_its_readable_part_opens_marked_when_chosen(
    qtbot: Any, window: Any, engine: Any, recordings: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    shown: list[str] = []
    monkeypatch.setattr("medview.ui.main_window.show_message", lambda _p, _title, text, *a, **k: shown.append(text))
    window.set_engine(engine)
    good = recordings / "104_1b1_Al_sc_Litt3200.wav"
    open_and_classify(qtbot, window, good)
    lung = window.lung
    source = recordings / "104_1b1_Ar_sc_Litt3200.wav"
    cut = cut_recording(source, tmp_path)  # 3.7 s of its 25.6 s: 174,716 bytes of audio data missing

    window.open_paths([cut])
    box = truncated_question(qtbot, lung)
    text = box.text()
    assert "104_1b1_Ar_sc_Litt3200.wav ends early" in text
    assert "25.6 s" in text
    assert "first 3.7 s" in text
    assert "bytes" not in text
    assert "header are missing" not in text
    assert "174716 bytes" in box.detailedText()
    assert "marked as truncated" in box.informativeText()
    assert shown == []  # a question, not an error
    assert lung.opened_recording.recording.path == good  # nothing opens before the user chooses

    with qtbot.waitSignal(lung.classified, timeout=TIMEOUT_MS):
        answer(box, QtWidgets.QMessageBox.ButtonRole.AcceptRole)
    recording = lung.opened_recording.recording
    assert recording.path == cut
    assert recording.truncated
    assert recording.duration_s == pytest.approx(14_978 / 4000)
    full = soundfile.read(source, dtype="float32")[0]
    np.testing.assert_array_equal(recording.samples, full[: recording.samples.size])

    # marked on screen: the info line, a warning line above the plots and the details beside the results
    assert "104_1b1_Ar_sc_Litt3200.wav (TRUNCATED): 3.7 s readable of 25.6 s" in lung.status.text()
    assert lung.truncated_note.isVisible()
    assert "Truncated file: only the first 3.7 s of the 25.6 s" in lung.truncated_note.text()
    assert "Truncated file" in lung.details.text()
    assert "Ensemble of" in lung.details.text()  # classified, below the warning
    # only the annotated cycles wholly inside the readable part are shown and classified
    annotated = read_icbhi_annotations(source.with_suffix(".txt"))
    assert lung.cycles == [cycle for cycle in annotated if cycle.end_s <= recording.duration_s]
    assert len(lung.cycles) == 2
    assert "2 of the 14 cycles" in lung.status.text()
    assert lung.table.model().rowCount() == 2
    times, _values = lung.wave_curve.getData()
    assert times[-1] == pytest.approx(recording.duration_s, abs=0.01)

    # and in the exports
    lung.export_csv(tmp_path / "cycles.csv")
    assert {row["recording_truncated"] for row in csv.DictReader((tmp_path / "cycles.csv").open())} == {"true"}
    assert lung._export_name("_predicted.txt").endswith("104_1b1_Ar_sc_Litt3200_truncated_predicted.txt")
    assert shown == []

    # a whole recording opened next is not marked
    open_and_classify(qtbot, window, good)
    assert not lung.truncated_note.isVisible()
    assert "TRUNCATED" not in lung.status.text()
    assert "Truncated" not in lung.details.text()


def test_declining_a_truncated_recording_keeps_what_was_open(
    qtbot: Any, window: Any, recordings: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    shown: list[str] = []
    monkeypatch.setattr("medview.ui.main_window.show_message", lambda _p, _title, text, *a, **k: shown.append(text))
    good = recordings / "104_1b1_Al_sc_Litt3200.wav"
    open_recording(qtbot, window, good)
    lung = window.lung
    status = lung.status.text()
    window.open_paths([cut_recording(recordings / "106_2b1_Pl_mc_LittC2SE.wav", tmp_path, size=500_000)])
    box = truncated_question(qtbot, lung)
    assert "first 3.8 s" in box.text()  # 24-bit at 44.1 kHz: 499,956 bytes of audio data
    answer(box, QtWidgets.QMessageBox.ButtonRole.RejectRole)
    qtbot.waitUntil(lambda: lung.findChild(QtWidgets.QMessageBox, "truncated_question") is None)
    qtbot.wait(50)  # let anything the answer started run; nothing should
    assert not [task for task in window.tasks.running if not task.done.is_set()]
    assert lung.opened_recording.recording.path == good
    assert lung.status.text() == status
    assert not lung.truncated_note.isVisible()
    assert shown == []


# --------------------------------------------------------------------------- the plots (issue 19, item 16)


def hover(widget: QtWidgets.QWidget, pos: QtCore.QPoint) -> None:
    """Move the mouse (no button) to ``pos``, twice, as far apart in time as pyqtgraph's rate limit asks."""
    for dx in (-2, 0):
        point = QtCore.QPointF(pos.x() + dx, pos.y())
        event = QtGui.QMouseEvent(
            QtCore.QEvent.Type.MouseMove,
            point,
            point,
            QtCore.QPointF(widget.mapToGlobal(point.toPoint())),
            QtCore.Qt.MouseButton.NoButton,
            QtCore.Qt.MouseButton.NoButton,
            QtCore.Qt.KeyboardModifier.NoModifier,
        )
        QtWidgets.QApplication.sendEvent(widget, event)
        QtWidgets.QApplication.processEvents()
        time.sleep(MOVE_INTERVAL_S)


def test_the_band_legend_beside_the_plots_names_every_colour(qtbot: Any, window: Any, recordings: Path) -> None:
    from medview.ui.lung.plots import CLASS_COLOURS, UNCLASSIFIED_COLOUR

    open_recording(qtbot, window, recordings / "104_1b1_Ar_sc_Litt3200.wav")
    lung = window.lung
    legend = lung.legend
    assert legend.isVisible()
    graphics = lung.graphics.geometry()
    beside = legend.geometry()
    assert beside.left() >= graphics.right()  # beside the plots, not over them
    assert beside.top() < graphics.bottom()
    assert beside.bottom() > graphics.top()

    def shown() -> dict[str, tuple[str, tuple[int, int, int]]]:
        entries = {}
        for name in legend.shown_names():
            label = legend.entries[name]
            assert label.isVisible()
            assert legend.swatches[name].isVisible()
            swatch = legend.swatches[name].pixmap().toImage()
            colour = swatch.pixelColor(swatch.width() // 2, swatch.height() // 2)
            entries[name] = (label.text(), colour.getRgb()[:3])
        return entries

    entries = shown()
    assert list(entries) == ["normal", "crackle", "wheeze", "both", ""]
    for name, (text, colour) in entries.items():
        assert name in text
        assert colour == pytest.approx(CLASS_COLOURS.get(name, UNCLASSIFIED_COLOUR), abs=2)
    assert entries[""][0].startswith("not classified")

    lung.classes_box.setCurrentIndex(1)  # normal / abnormal: the legend follows the view
    entries = shown()
    assert list(entries) == ["normal", "abnormal", ""]
    assert entries["abnormal"][1] == pytest.approx(CLASS_COLOURS["abnormal"], abs=2)


def test_the_amplitude_axis_label_is_whole_and_the_plots_line_up(qtbot: Any, window: Any, recordings: Path) -> None:
    open_recording(qtbot, window, recordings / "106_2b1_Pl_mc_LittC2SE.wav")  # quiet: pyqtgraph scaled it x0.001
    lung = window.lung
    axis = lung.wave_plot.getAxis("left")
    assert "(x" not in axis.labelString()
    assert axis.label.toPlainText().strip() == "amplitude"
    # the label is drawn turned on its side: its length must fit the axis' height
    assert axis.label.boundingRect().width() <= axis.geometry().height()
    low, high = lung.wave_plot.viewRange()[1]
    assert high - low < 2  # ticks in the samples' own units (the range is about +-0.3)
    boxes = [plot.getViewBox().sceneBoundingRect() for plot in (lung.wave_plot, lung.spectrum_plot)]
    assert boxes[0].left() == pytest.approx(boxes[1].left())  # one time axis for both plots


def test_a_hovered_band_stays_translucent_with_a_stronger_outline(
    qtbot: Any, window: Any, engine: Any, recordings: Path
) -> None:
    from medview.ui.lung.plots import BAND_ALPHA, CLASS_COLOURS, EDGE_WIDTH, HOVER_EDGE_WIDTH

    window.set_engine(engine)
    open_and_classify(qtbot, window, recordings / "104_1b1_Ar_sc_Litt3200.wav")
    lung = window.lung
    lung.wave_plot.setXRange(0, 8, padding=0)
    index = 2
    cycle = lung.cycles[index]
    region = lung.regions[index][0]
    colour = CLASS_COLOURS[lung.predicted_label(index)]
    point = plot_pixel(lung, lung.wave_plot, (cycle.start_s + cycle.end_s) / 2)
    before = lung.graphics.grab().toImage()

    hover(lung.graphics.viewport(), point)
    qtbot.waitUntil(lambda: region.mouseHovering)
    assert region.currentBrush.color().getRgb() == (*colour, BAND_ALPHA)  # as translucent as when not hovered
    assert [line.currentPen.widthF() for line in region.lines] == [HOVER_EDGE_WIDTH] * 2
    assert [line.currentPen.color().getRgb()[:3] for line in region.lines] == [colour] * 2
    after = lung.graphics.grab().toImage()
    # inside the band, away from its edges, the picture is unchanged: the waveform shows through as before
    inside = QtCore.QPoint(point.x() + 3, point.y())
    assert after.pixelColor(inside).getRgb() == before.pixelColor(inside).getRgb()

    hover(lung.graphics.viewport(), plot_pixel(lung, lung.wave_plot, lung.cycles[index + 2].start_s + 0.3))
    qtbot.waitUntil(lambda: not region.mouseHovering)
    assert [line.currentPen.widthF() for line in region.lines] == [EDGE_WIDTH] * 2


# --------------------------------------------------------------------------- between two recordings (issue 24)


def test_a_second_recording_replaces_everything_the_first_left_on_screen_and_in_the_exports(
    qtbot: Any, window: Any, engine: Any, recordings: Path, tmp_path: Path, audio_output: Path
) -> None:
    """Long, then short: with the first classified, a cycle selected and played, the playhead moved, a band
    hovered and the view zoomed, nothing of the first may remain in a view, label, table, legend or export."""
    from medview.ui.lung.plots import CycleRegion

    window.set_engine(engine)
    first_path = recordings / "106_2b1_Pl_mc_LittC2SE.wav"  # 20 s, 44.1 kHz, 24-bit
    second_path = recordings / "104_1b1_Al_sc_Litt3200.wav"  # 15.9 s, 4 kHz, 16-bit
    open_and_classify(qtbot, window, first_path)
    lung = window.lung
    first_regions = [region for pair in lung.regions if pair for region in pair]

    # the first recording, worked on: zoomed, a cycle clicked in the table (selected and played), a band hovered
    lung.wave_plot.setXRange(2.0, 9.0, padding=0)
    cell = lung.table.model().index(2, 1)
    qtbot.mouseClick(lung.table.viewport(), QtCore.Qt.MouseButton.LeftButton, pos=lung.table.visualRect(cell).center())
    assert lung.selection_span() is not None
    qtbot.waitUntil(lambda: not lung.playhead_timer.isActive(), timeout=TIMEOUT_MS)
    lung.seek(8.5)  # the playhead moved on
    hovered = lung.regions[3][0]
    hover(lung.graphics.viewport(), plot_pixel(lung, lung.wave_plot, sum(hovered.getRegion()) / 2))
    qtbot.waitUntil(lambda: hovered.mouseHovering)
    lung.table.selectRow(4)
    first_note = lung.opened_recording.annotation_note

    # what the panel shows the moment the second has been read, before its own result comes
    at_open: dict[str, Any] = {}

    def snapshot(_opened: Any) -> None:
        at_open.update(
            details=lung.details.text(),
            banner=lung.banner.isVisible(),
            predicted=[cell_text(lung.table, row, 4) for row in range(lung.table.model().rowCount())],
            colours={lung.band_colour(row) for row in range(len(lung.cycles))},
        )

    lung.opened.connect(snapshot)
    second = open_and_classify(qtbot, window, second_path)
    recording = lung.opened_recording.recording
    assert recording.path == second_path
    assert "106_2b1" not in at_open["details"]
    assert first_note not in at_open["details"]
    assert "Ensemble of" not in at_open["details"]  # the first's model and provenance are gone
    assert "6 cycles from 104_1b1_Al_sc_Litt3200.txt" in at_open["details"]
    assert not at_open["banner"]
    assert set(at_open["predicted"]) == {""}
    assert at_open["colours"] == {(180, 180, 180)}

    cycles = read_icbhi_annotations(second_path.with_suffix(".txt"), duration_s=recording.duration_s)
    spans = [(cycle.start_s, cycle.end_s) for cycle in cycles]
    # the labels
    assert lung.status.text().startswith("104_1b1_Al_sc_Litt3200.wav: 15.9 s, 4000 Hz, 16-bit")
    assert "106_2b1" not in lung.status.text()
    assert lung.time_label.text() == f"{clock(0)} / {clock(recording.duration_s)}"
    assert "106_2b1" not in lung.details.text()
    assert "6 cycles from 104_1b1_Al_sc_Litt3200.txt" in lung.details.text()
    assert not lung.playback_note.isVisible()
    assert not lung.truncated_note.isVisible()
    assert lung.legend.shown_names() == ["normal", "crackle", "wheeze", "both", ""]
    # the views: the whole second recording, its own bands only, no selection, the playhead at its start
    assert lung.wave_plot.viewRange()[0] == pytest.approx([0.0, recording.duration_s])
    times, values = lung.wave_curve.getData()
    assert times[-1] == pytest.approx(recording.duration_s, abs=0.05)
    assert np.abs(values).max() == pytest.approx(np.abs(recording.samples).max())
    low, high = lung.wave_plot.viewRange()[1]  # the amplitude axis fits the second's samples, not the first's
    assert low <= values.min()
    assert high >= values.max()
    assert high - low <= 1.2 * (values.max() - values.min())
    assert "106_2b1" not in window.statusBar().currentMessage()
    assert lung.spectrum_image.image.shape == lung.opened_recording.spectrograms[True].db.shape
    assert lung.spectrum_image.boundingRect().width() > 0
    assert lung.spectrum_image.mapRectToParent(lung.spectrum_image.boundingRect()).width() == pytest.approx(
        recording.duration_s
    )
    assert lung.selection_span() is None
    assert not lung.selection_shade.isVisible()
    assert lung.playhead.value() == 0.0
    assert lung.spectrum_playhead.value() == 0.0
    assert lung.player.duration_s == pytest.approx(recording.duration_s)
    assert lung.player.sample_rate == 4000
    assert not lung.player.playing
    np.testing.assert_allclose([region.getRegion() for region, _ in lung.regions], spans)
    current = {id(region) for pair in lung.regions for region in pair}
    for plot in (lung.wave_plot, lung.spectrum_plot):
        bands = [item for item in plot.items if isinstance(item, CycleRegion)]
        assert {id(item) for item in bands} <= current  # not one band of the first left in a plot
    assert all(region.scene() is None for region in first_regions)
    assert not any(region.mouseHovering for pair in lung.regions for region in pair)
    assert list(lung.overviews[0].starts) == pytest.approx([start for start, _ in spans])
    # the table: the second's cycles and results, nothing selected
    model = lung.table.model()
    assert model.rowCount() == len(cycles)
    for row, (cycle, scores) in enumerate(zip(cycles, second.scores, strict=True)):
        assert cell_text(lung.table, row, 1) == f"{cycle.start_s:.3f}"
        assert cell_text(lung.table, row, 4) == scores.label
    assert not lung.table.selectionModel().hasSelection()
    np.testing.assert_allclose(second.cycles, spans)
    # the exports
    lung.export_csv(tmp_path / "cycles.csv")
    rows = list(csv.DictReader((tmp_path / "cycles.csv").open()))
    assert {row["recording"] for row in rows} == {second_path.name}
    np.testing.assert_allclose([(float(row["start_s"]), float(row["end_s"])) for row in rows], spans, atol=1e-3)
    assert [row["predicted"] for row in rows] == [scores.label for scores in second.scores]
    assert {row["recording_truncated"] for row in rows} == {"false"}
    lung.export_icbhi(tmp_path / "predicted.txt")
    exported = read_icbhi_annotations(tmp_path / "predicted.txt")
    np.testing.assert_allclose([(c.start_s, c.end_s) for c in exported], spans, atol=1e-3)
    assert [c.label for c in exported] == [scores.label for scores in second.scores]
    assert lung._export_name(".csv") == str(second_path.with_suffix(".csv"))
