"""AudioPlayer through a real PortAudio stream on a null ALSA device that records what was sent."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from medview.errors import PlaybackError
from medview.io.audio import read_recording
from medview.io.playback import AudioPlayer
from tests.conftest import played_frames

RECORDINGS = {
    "44.1 kHz 24-bit": "104_1b1_Ar_sc_Litt3200.wav",
    "4 kHz 16-bit": "102_1b1_Ar_sc_Meditron.wav",
}


def wait_until_done(player: AudioPlayer, timeout_s: float = 20.0) -> list[float]:
    """Poll the player as the panel's timer does; the positions it reported, in order."""
    positions = []
    deadline = time.monotonic() + timeout_s
    while player.playing:
        assert time.monotonic() < deadline, "playback did not end"
        positions.append(player.position_s())
        time.sleep(0.002)
    return positions


@pytest.mark.parametrize("name", RECORDINGS.values(), ids=RECORDINGS.keys())
def test_a_span_plays_exactly_its_samples_and_ends_at_its_end(shared_data: Path, audio_output: Path, name: str) -> None:
    recording = read_recording(shared_data / "lung_sound" / "icbhi_sample" / name)
    player = AudioPlayer(recording.samples, recording.sample_rate)
    player.play(2.0, 5.5)
    positions = wait_until_done(player)
    player.close()

    rate = recording.sample_rate
    expected = np.trim_zeros(recording.samples[2 * rate : round(5.5 * rate)])
    np.testing.assert_array_equal(played_frames(audio_output), expected)
    assert player.position_s() == pytest.approx(5.5)
    assert not player.playing
    assert all(2.0 <= p <= 5.5 for p in positions)
    assert positions == sorted(positions), "the playhead went backwards"


def test_speed_and_volume_change_what_is_sent(audio_output: Path) -> None:
    rate = 8000
    tone = (0.8 * np.cos(2 * np.pi * 440 * np.arange(4 * rate) / rate)).astype(np.float32)
    player = AudioPlayer(tone, rate)
    player.speed, player.volume = 2.0, 0.5
    player.play(0.0)
    wait_until_done(player)
    player.close()

    out = played_frames(audio_output)
    assert out.size == pytest.approx(tone.size / 2, abs=2)  # twice as fast: half the frames
    assert np.abs(out).max() == pytest.approx(0.4, abs=0.01)
    np.testing.assert_allclose(out, 0.5 * tone[: 2 * out.size : 2], atol=1e-6)
    assert player.position_s() == pytest.approx(4.0)


def test_loop_repeats_the_span_until_stopped(audio_output: Path) -> None:
    rate = 4000
    ramp = np.linspace(0.1, 0.9, 10 * rate, dtype=np.float32)
    player = AudioPlayer(ramp, rate)
    player.loop = True
    player.play(1.0, 2.0)
    deadline = time.monotonic() + 10
    while np.fromfile(audio_output, dtype="<f4").size < 5 * rate and time.monotonic() < deadline:
        assert 1.0 <= player.position_s() <= 2.0
        time.sleep(0.005)
    assert player.playing
    player.stop()
    assert not player.playing
    assert player.position_s() == pytest.approx(1.0)

    out = played_frames(audio_output)
    span = ramp[rate : 2 * rate]
    loops = out.size // span.size
    assert loops >= 4
    np.testing.assert_array_equal(out[: loops * span.size], np.tile(span, loops))


def test_pause_keeps_the_position_and_resume_finishes(audio_output: Path) -> None:
    rate = 44_100
    noise = np.random.default_rng(1).uniform(-0.5, 0.5, 600 * rate).astype(np.float32)  # 10 minutes
    player = AudioPlayer(noise, rate)
    player.play(0.0)
    time.sleep(0.05)
    player.pause()
    paused_at = player.position_s()
    assert player.paused
    assert not player.playing
    assert 0.0 < paused_at < 600.0
    time.sleep(0.05)
    assert player.position_s() == paused_at

    player.resume()
    wait_until_done(player, timeout_s=60)
    player.close()
    assert player.position_s() == pytest.approx(600.0)
    out = played_frames(audio_output)
    # everything after the pause point went out once more, ending with the recording's last sample
    np.testing.assert_array_equal(out[-rate:], noise[-rate:])


def test_no_output_device_is_a_clear_error(no_audio_output: None) -> None:
    player = AudioPlayer(np.zeros(4000, np.float32), 4000)
    with pytest.raises(PlaybackError, match=r"^no sound output device was found on this computer$") as raised:
        player.play(0.0)
    assert "PortAudio" not in str(raised.value)  # plain words for the user; PortAudio's own on the cause
    assert raised.value.__cause__ is not None
    assert "device" in str(raised.value.__cause__)
    assert not player.playing
    assert player.position_s() == 0.0
