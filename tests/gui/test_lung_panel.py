"""The lung sound workspace on the real ICBHI recordings, through the real window and the shipped demo bundle."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from medview.io.audio import read_icbhi_annotations
from medview.preprocess.cycles import detect_cycles
from medview.ui.lung_panel import clock
from medview.ui.qt import QtCore, QtWidgets
from tests.conftest import played_frames
from tests.gui.conftest import cell_text, mouse_click, mouse_drag

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
    assert "no audio output device" in lung.playback_note.text()
    assert lung.play_button.text() == "Play"
    assert not lung.playhead_timer.isActive()
    assert QtWidgets.QApplication.activeModalWidget() is None
    lung.seek(5.0)  # seeking and the views still work
    assert lung.playhead.value() == pytest.approx(5.0)
    assert lung.spectrum_image.image is not None


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
        (lambda p, src: p.write_bytes(src.read_bytes()[: len(src.read_bytes()) // 2]), "truncated"),
        (lambda p, src: p.write_text("just some text, not audio"), "not a readable audio file"),
    ],
    ids=["empty", "truncated", "text"],
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
    from medview.ui.lung_panel import MAX_BAND_ITEMS

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
