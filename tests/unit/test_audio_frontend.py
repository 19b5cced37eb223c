"""The lung-sound front end of paper 004 and the audio readers, on real ICBHI recordings."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile

from medview.errors import InputError
from medview.io.audio import read_icbhi_annotations, read_recording
from medview.preprocess import audio


@pytest.fixture(scope="module")
def icbhi(shared_data: Path) -> Path:
    return shared_data / "lung_sound" / "icbhi_sample"


def test_mel_filterbank_and_log_mel_equal_librosa() -> None:
    librosa = pytest.importorskip("librosa")
    reference = librosa.filters.mel(sr=22_050, n_fft=512, n_mels=50)
    np.testing.assert_allclose(audio.mel_filterbank(), reference, atol=1e-7)
    signal = np.random.default_rng(0).standard_normal(audio.SEGMENT_SAMPLES).astype(np.float32)
    power = librosa.feature.melspectrogram(y=signal, sr=22_050, n_fft=512, hop_length=512, n_mels=50, center=False)
    expected = np.log(np.maximum(power, 1e-10))
    expected = (expected - expected.mean()) / expected.std()
    np.testing.assert_allclose(audio.log_mel(signal), expected, atol=1e-4)


def test_segment_and_chunk_sizes_are_the_papers() -> None:
    # 9 s at 22,050 Hz without overlap: 387 frames, two chunks of N = 193 (Table I input 50 x 193)
    assert audio.SEGMENT_SAMPLES == 198_450
    assert audio.SEGMENT_FRAMES == 387
    assert audio.CHUNK_FRAMES == 193
    chunks = audio.cycle_chunks(np.random.default_rng(1).standard_normal(3 * 22_050).astype(np.float32))
    assert chunks.shape == (2, 1, 50, 193)
    assert chunks.dtype == np.float32


def test_sample_padding_repeats_the_cycle_and_long_cycles_give_several_segments() -> None:
    cycle = np.arange(1, 8, dtype=np.float32)  # 7 samples, segments of 3
    segments = audio.sample_padded_segments(cycle, segment_samples=3)
    assert segments.tolist() == [[1, 2, 3], [4, 5, 6], [7, 1, 2]]
    short = audio.sample_padded_segments(np.array([5.0, 6.0], dtype=np.float32), segment_samples=5)
    assert short.tolist() == [[5, 6, 5, 6, 5]]  # never zero padding
    assert 0.0 not in short
    long_cycle = np.ones(int(9.5 * 22_050), dtype=np.float32)
    assert audio.cycle_chunks(long_cycle).shape[0] == 4  # two segments, two chunks each
    with pytest.raises(ValueError, match="non-empty"):
        audio.sample_padded_segments(np.zeros(0, dtype=np.float32))


def test_silence_gives_finite_zero_features() -> None:
    features = audio.log_mel(np.zeros(audio.SEGMENT_SAMPLES, dtype=np.float32))
    assert np.isfinite(features).all()
    assert not features.any()


def test_vtlp_warps_the_filterbank_and_keeps_nyquist() -> None:
    frequencies = np.array([0.0, 1000.0, 11_025.0])
    warped = audio.vtlp_warp(frequencies, alpha=1.1, f_hi=3500.0)
    assert warped[0] == 0.0
    assert warped[1] == pytest.approx(1100.0)
    assert warped[2] == pytest.approx(11_025.0)
    stretched = audio.mel_filterbank(vtlp_alpha=0.9)
    assert stretched.shape == (50, 257)
    assert not np.allclose(stretched, audio.mel_filterbank())


def test_resample_to_the_papers_rate(icbhi: Path) -> None:
    recording = read_recording(icbhi / "104_1b1_Al_sc_Litt3200.wav")
    resampled = audio.resample(recording.samples, recording.sample_rate)
    assert resampled.dtype == np.float32
    assert resampled.size == pytest.approx(recording.duration_s * 22_050, abs=2)
    # a 440 Hz tone keeps its frequency through 4 kHz -> 22.05 kHz
    tone = np.sin(2 * np.pi * 440 * np.arange(4000) / 4000).astype(np.float32)
    spectrum = np.abs(np.fft.rfft(audio.resample(tone, 4000)))
    peak_hz = np.argmax(spectrum) * 22_050 / (2 * (spectrum.size - 1))
    assert peak_hz == pytest.approx(440, abs=2)


@pytest.mark.parametrize(
    ("name", "rate", "subtype"),
    [("102_1b1_Ar_sc_Meditron.wav", 44_100, "PCM_16"), ("104_1b1_Al_sc_Litt3200.wav", 4000, "PCM_16"),
     ("106_2b1_Pl_mc_LittC2SE.wav", 44_100, "PCM_24")],
)  # fmt: skip
def test_real_icbhi_recordings_and_their_cycles(icbhi: Path, name: str, rate: int, subtype: str) -> None:
    recording = read_recording(icbhi / name)
    assert (recording.sample_rate, recording.subtype, recording.channels) == (rate, subtype, 1)
    assert recording.samples.dtype == np.float32
    assert np.abs(recording.samples).max() <= 1.0
    cycles = read_icbhi_annotations((icbhi / name).with_suffix(".txt"), duration_s=recording.duration_s)
    with open(icbhi / "cycles.csv", newline="") as handle:
        expected = [row for row in csv.DictReader(handle) if row["wav"] == name]
    assert len(cycles) == len(expected) > 0
    for cycle, row in zip(cycles, expected, strict=True):
        assert cycle.start_s == pytest.approx(float(row["start_s"]))
        assert cycle.label == row["label4"]


def test_stereo_is_averaged_to_mono(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    left = np.full(800, 0.5, dtype=np.float32)
    soundfile.write(path, np.stack([left, -left / 2], axis=1), 8000, subtype="PCM_16")
    recording = read_recording(path)
    assert recording.channels == 2
    np.testing.assert_allclose(recording.samples, 0.125, atol=1e-4)


def test_bad_audio_files_are_input_errors_naming_the_file(tmp_path: Path, icbhi: Path) -> None:
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes((icbhi / "102_1b1_Ar_sc_Meditron.wav").read_bytes()[:5000])
    no_samples = tmp_path / "no_samples.wav"
    soundfile.write(no_samples, np.zeros(0, dtype=np.float32), 8000)
    for path in (text, empty, truncated, no_samples, tmp_path / "missing.wav"):
        with pytest.raises(InputError) as caught:
            read_recording(path)
        assert path.name in str(caught.value)


@pytest.mark.parametrize(
    ("row", "message"),
    [("0.1 0.5 0", "expected 4 columns"), ("a b 0 0", "two times"), ("0.5 0.1 0 0", "start < end"),
     ("0.1 0.5 2 0", "0 or 1"), ("30 31 0 0", "starts after")],
)  # fmt: skip
def test_malformed_annotation_rows_name_the_line(tmp_path: Path, row: str, message: str) -> None:
    path = tmp_path / "cycles.txt"
    path.write_text(f"0.0\t0.1\t0\t0\n{row}\n")
    with pytest.raises(InputError, match=message) as caught:
        read_icbhi_annotations(path, duration_s=20.0)
    assert "line 2" in str(caught.value)
    assert "cycles.txt" in str(caught.value)
