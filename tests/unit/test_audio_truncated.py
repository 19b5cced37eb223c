"""A WAV cut off before the end its header announces: refused in plain words, or read as far as it goes on request."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from medview.errors import InputError
from medview.io.audio import TruncatedRecordingError, read_recording

ICBHI = Path("lung_sound") / "icbhi_sample"
#: (recording, bytes kept, readable frames, announced seconds, missing bytes)
CUTS = {
    "4 kHz 16-bit": ("104_1b1_Ar_sc_Litt3200.wav", 30_000, 14_978, 25.584, 174_716),
    "44.1 kHz 24-bit": ("106_2b1_Pl_mc_LittC2SE.wav", 500_000, 166_652, 20.0, 2_146_044),
}


def cut(shared_data: Path, folder: Path, name: str, size: int) -> tuple[Path, Path]:
    """The first ``size`` bytes of a real recording, as a file cut off in a copy would be."""
    source = shared_data / ICBHI / name
    path = folder / name
    path.write_bytes(source.read_bytes()[:size])
    return source, path


@pytest.mark.parametrize("case", CUTS.values(), ids=CUTS.keys())
def test_a_cut_off_wav_is_refused_in_plain_words_with_the_bytes_as_detail(
    shared_data: Path, tmp_path: Path, case: tuple[str, int, int, float, int]
) -> None:
    name, size, frames, announced_s, missing = case
    _source, path = cut(shared_data, tmp_path, name, size)
    with pytest.raises(TruncatedRecordingError) as raised:
        read_recording(path)
    error = raised.value
    assert isinstance(error, InputError)
    rate = soundfile.info(path).samplerate
    assert error.readable_s == pytest.approx(frames / rate)
    assert error.announced_s == pytest.approx(announced_s, abs=1e-3)
    assert error.missing_bytes == missing
    message = str(error)
    assert message.startswith(f"{path}: the file ends early")
    assert f"announces {announced_s:.1f} s" in message
    assert f"only the first {frames / rate:.1f} s" in message
    assert "bytes" not in message
    assert error.details == f"{missing} bytes of audio data announced by the header are missing"


@pytest.mark.parametrize("case", CUTS.values(), ids=CUTS.keys())
def test_on_request_the_readable_part_is_read_and_marked(
    shared_data: Path, tmp_path: Path, case: tuple[str, int, int, float, int]
) -> None:
    name, size, frames, announced_s, _missing = case
    source, path = cut(shared_data, tmp_path, name, size)
    recording = read_recording(path, allow_truncated=True)
    whole = read_recording(source)
    assert recording.truncated
    assert recording.announced_s == pytest.approx(announced_s, abs=1e-3)
    assert recording.samples.size == frames
    np.testing.assert_array_equal(recording.samples, whole.samples[:frames])
    assert (recording.sample_rate, recording.subtype) == (whole.sample_rate, whole.subtype)
    assert not whole.truncated
    assert whole.announced_s is None
