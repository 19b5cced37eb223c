"""Audio playback of a recording through the default output device (sounddevice/PortAudio), Qt-free.

``AudioPlayer`` plays a span of a mono signal once or in a loop, at a speed and
volume that can change while it plays, and answers where the listener is:
``position_s`` follows the stream, from the time PortAudio says each buffer
reaches the converter (``outputBufferDacTime``), not a free-running clock, so a
playhead drawn from it stays with what is heard.  When there is no output
device (a workstation without a sound card, a PortAudio library missing) every
call that would start sound raises ``PlaybackError`` with a plain message for
the user, PortAudio's own error chained as its ``__cause__`` for the details;
nothing else depends on sound.

Speed is varispeed, as on a tape machine (pitch follows speed): the callback
reads the source at a fractional step with linear interpolation.  A resampler
such as soxr would filter better, but the step must change live and map every
output frame back to an exact source position for the playhead; at speed 1 and
the file's own rate the step is 1 and the samples sent are the file's samples.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from medview.errors import PlaybackError

BLOCK_FRAMES = 512  # ~12 ms at 44.1 kHz: a short latency for a seek or a speed change
SPEEDS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)


@dataclass(frozen=True)
class _Buffer:
    """Where one output buffer starts in the source, and when PortAudio says it is heard."""

    dac_time: float
    source_frame: float
    step: float
    frames: int


class AudioPlayer:
    """Plays ``samples`` (mono float32 at ``sample_rate``) through the default output device.

    Every method is called from one thread (the GUI's); the stream's callback runs
    on PortAudio's thread and shares only the fields guarded by ``_lock``.
    """

    def __init__(self, samples: np.ndarray, sample_rate: int) -> None:
        self.samples = np.ascontiguousarray(samples, dtype=np.float32)
        self.sample_rate = int(sample_rate)
        self.volume = 1.0
        self.speed = 1.0
        self.loop = False
        self._lock = threading.Lock()
        self._stream: Any = None
        self._start_frame = 0.0
        self._end_frame = float(self.samples.size)
        self._next_frame = 0.0  # source frame of the next output frame, advanced by the callback
        self._buffers: deque[_Buffer] = deque(maxlen=64)
        self._clock: tuple[float, float] | None = None  # (PortAudio time, time.monotonic()) at the last callback
        self._output_rate = self.sample_rate
        self._latency_s = 0.0
        self._paused_at: float | None = None
        self._finished = False

    # ------------------------------------------------------------------ state

    @property
    def duration_s(self) -> float:
        return self.samples.size / self.sample_rate

    @property
    def playing(self) -> bool:
        """Sound is going out (False when paused, stopped or at the end of a span played once)."""
        return self._stream is not None and not self._finished

    @property
    def paused(self) -> bool:
        return self._paused_at is not None

    def position_s(self) -> float:
        """Where the listener is now, in seconds of the recording, from the stream's own timing."""
        if self._paused_at is not None:
            return self._paused_at
        with self._lock:
            if self._finished:
                return self._end_frame / self.sample_rate
            frame = self._heard_frame()
        return frame / self.sample_rate

    # ------------------------------------------------------------------ control

    def play(self, start_s: float = 0.0, end_s: float | None = None, *, from_s: float | None = None) -> None:
        """Play the span ``start_s``-``end_s`` (None: to the end of the recording), beginning at ``from_s``.

        ``from_s`` defaults to the span's start; with ``loop`` set the span repeats
        from its start until ``stop`` or ``pause``.  Raises ``PlaybackError`` when
        there is no output device.
        """
        self._close()
        # whole frames, so that at speed 1 every frame sent is a sample of the file
        start = float(np.clip(round(start_s * self.sample_rate), 0, self.samples.size - 1))
        end = float(
            self.samples.size
            if end_s is None
            else np.clip(round(end_s * self.sample_rate), start + 1, self.samples.size)
        )
        begin = start if from_s is None else float(np.clip(round(from_s * self.sample_rate), start, end - 1))
        self._start_frame, self._end_frame = start, end
        self._restart_from(begin)

    def pause(self) -> None:
        """Stop the sound and keep the position; ``resume`` continues from there."""
        if not self.playing:
            return
        position = self.position_s()
        self._close()
        self._paused_at = position

    def resume(self) -> None:
        """Continue a paused span from where it was paused."""
        if self._paused_at is None:
            return
        self._restart_from(float(round(self._paused_at * self.sample_rate)))

    def stop(self) -> None:
        """Stop the sound; the position goes back to the start of the span."""
        self._close()
        self._reset(self._start_frame)

    def close(self) -> None:
        """Release the output device."""
        self._close()

    # ------------------------------------------------------------------ the stream

    def _reset(self, frame: float) -> None:
        self._paused_at = None
        self._finished = False
        self._next_frame = frame
        self._buffers.clear()
        self._clock = None

    def _restart_from(self, frame: float) -> None:
        self._reset(frame)
        self._open_stream()

    def _open_stream(self) -> None:
        sounddevice = _sounddevice()
        try:
            rate = self._supported_rate(sounddevice)
            stream = sounddevice.OutputStream(
                samplerate=rate,
                channels=1,
                dtype="float32",
                blocksize=BLOCK_FRAMES,
                callback=self._callback,
                finished_callback=self._on_finished,
            )
            self._output_rate, self._latency_s = rate, float(stream.latency)
            stream.start()
        except sounddevice.PortAudioError as error:
            # the message is for the user; PortAudio's own words ("Error querying device -1") stay on the cause
            raise PlaybackError("no sound output device was found on this computer") from error
        self._stream = stream

    def _supported_rate(self, sounddevice: Any) -> int:
        """The recording's own rate when the device takes it, else the device's default rate."""
        if not sounddevice.query_devices():
            _rescan(sounddevice)  # headphones plugged in since the app started
        try:
            sounddevice.check_output_settings(samplerate=self.sample_rate, channels=1, dtype="float32")
            return self.sample_rate
        except sounddevice.PortAudioError as error:
            if "Invalid sample rate" not in str(error):
                raise
        return int(sounddevice.query_devices(kind="output")["default_samplerate"])

    def _close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.abort()  # drop what is queued: a pause or a seek is heard at once
            stream.close()

    def _callback(self, output: np.ndarray, frames: int, timing: Any, _status: Any) -> None:
        step = self.speed * self.sample_rate / self._output_rate
        positions = self._next_frame + step * np.arange(frames)
        if self.loop:
            length = self._end_frame - self._start_frame
            positions = self._start_frame + np.mod(positions - self._start_frame, length)
            filled = frames
        else:
            filled = int(np.searchsorted(positions, self._end_frame - 1e-9))
        output[:filled, 0] = self._interpolate(positions[:filled]) * self.volume
        output[filled:, 0] = 0.0
        with self._lock:
            self._clock = (float(timing.currentTime), time.monotonic())
            dac_time = float(timing.outputBufferDacTime) or float(timing.currentTime) + self._latency_s
            self._buffers.append(_Buffer(dac_time, self._next_frame, step, filled))
            self._next_frame = float(positions[-1] + step) if filled == frames else self._end_frame
            if self.loop and self._next_frame >= self._end_frame:
                self._next_frame -= self._end_frame - self._start_frame
        if filled < frames:
            raise _sounddevice().CallbackStop

    def _interpolate(self, positions: np.ndarray) -> np.ndarray:
        """The source at fractional ``positions``; exact samples at integer positions."""
        if positions.size == 0:
            return positions.astype(np.float32)
        low = int(positions.min())
        high = min(int(positions.max()) + 2, self.samples.size)
        window = self.samples[low:high]
        return np.interp(positions, np.arange(low, low + window.size), window).astype(np.float32)

    def _on_finished(self) -> None:
        with self._lock:
            if self._next_frame >= self._end_frame:
                self._finished = True

    def _heard_frame(self) -> float:
        """The source frame being heard now (caller holds ``_lock``)."""
        if self._clock is None:
            return self._next_frame
        stream_time, at = self._clock
        now = stream_time + (time.monotonic() - at)
        heard = None
        for buffer in self._buffers:
            if buffer.dac_time > now:
                break
            heard = buffer
        if heard is None:
            return self._buffers[0].source_frame if self._buffers else self._next_frame
        elapsed_frames = min((now - heard.dac_time) * self._output_rate, heard.frames)
        frame = heard.source_frame + elapsed_frames * heard.step
        if self.loop:
            frame = self._start_frame + (frame - self._start_frame) % (self._end_frame - self._start_frame)
        return min(frame, self._end_frame)


def _sounddevice() -> Any:
    """The sounddevice module, imported on first use: importing it starts PortAudio and probes devices."""
    try:
        import sounddevice
    except OSError as error:  # the PortAudio shared library is missing
        raise PlaybackError("no sound output is available: the sound library could not be loaded") from error
    return sounddevice


def _rescan(sounddevice: Any) -> None:
    """Make PortAudio list the devices again; it only probes them when it starts.

    sounddevice has no public call for this; terminating and re-initialising the
    library is the way its author gives, safe here because no stream is open.
    """
    sounddevice._terminate()
    sounddevice._initialize()
