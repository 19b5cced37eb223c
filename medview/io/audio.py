"""Auscultation recordings and ICBHI cycle annotations (numpy only).

``read_recording`` opens WAV/FLAC/OGG through soundfile (libsndfile is bundled
with it, no ffmpeg): any sample rate, 16/24/32-bit PCM or float, mono or several
channels (averaged to mono, as the ICBHI recordings are analysed).  A file cut
off before the end its header announces is refused with
``TruncatedRecordingError`` (how much is readable, how much is missing), and
read as far as it goes only when the caller asks (the user chose to).
``read_icbhi_annotations`` reads the ICBHI 2017 text format: one row per
respiratory cycle, ``start end crackles wheezes`` in seconds and 0/1 flags.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from medview.errors import InputError

#: the 4 classes of ICBHI 2017, indexed by crackles + 2 * wheezes
ICBHI_CLASSES = ("normal", "crackle", "wheeze", "both")
#: file suffixes opened as recordings
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


@dataclass(frozen=True, eq=False)
class Recording:
    """A mono recording: float32 samples in [-1, 1] at ``sample_rate`` Hz."""

    samples: np.ndarray
    sample_rate: int
    channels: int  # in the file, before averaging
    subtype: str  # soundfile's name of the sample format, e.g. "PCM_24"
    path: Path
    #: a truncated file opened anyway: the duration its header announces (the samples are only the readable part)
    announced_s: float | None = None

    @property
    def duration_s(self) -> float:
        return self.samples.size / self.sample_rate

    @property
    def truncated(self) -> bool:
        """The file ends before the audio its header announces: these samples are only its readable start."""
        return self.announced_s is not None


class TruncatedRecordingError(InputError):
    """The file ends before the audio its header announces (cut off while copying or recording).

    Carries what the user needs to decide whether to open the readable part:
    how much of it there is and how much the header promised.
    """

    def __init__(self, path: Path, *, readable_s: float, announced_s: float, missing_bytes: int | None) -> None:
        self.readable_s = readable_s
        self.announced_s = announced_s
        #: the technical detail: bytes of audio data the header announces but the file lacks (None: not a WAV)
        self.missing_bytes = missing_bytes
        super().__init__(
            f"the file ends early: its header announces {announced_s:.1f} s of audio, "
            f"but only the first {readable_s:.1f} s are in the file (it was probably cut off while being "
            "copied or recorded)",
            path=path,
        )

    @property
    def details(self) -> str:
        """The technical detail, for a "details" box rather than the message."""
        if self.missing_bytes is None:
            return f"{self.announced_s:.3f} s announced by the header, {self.readable_s:.3f} s readable"
        return f"{self.missing_bytes} bytes of audio data announced by the header are missing"


@dataclass(frozen=True)
class Cycle:
    """One respiratory cycle, in seconds from the start of the recording, with its ICBHI flags."""

    start_s: float
    end_s: float
    crackles: bool = False
    wheezes: bool = False

    @property
    def label(self) -> str:
        """The 4-class ICBHI label: normal, crackle, wheeze or both."""
        return ICBHI_CLASSES[int(self.crackles) + 2 * int(self.wheezes)]


def read_recording(path: Path | str, *, allow_truncated: bool = False) -> Recording:
    """Read an audio file as mono float32; ``InputError`` naming the file when it is not usable audio.

    A file that ends before the audio its header announces raises ``TruncatedRecordingError``
    unless ``allow_truncated``: then its readable part is returned, with ``announced_s`` set so
    that everything shown from it can say it is truncated.
    """
    path = Path(path)
    try:
        with soundfile.SoundFile(path) as handle:
            rate, channels, subtype, frames = handle.samplerate, handle.channels, handle.subtype, handle.frames
            # before reading: a WAV header announcing more than the file holds would size the buffer
            wav = _wav_data_bytes(path)
            if wav is not None and wav.missing and not allow_truncated:
                raise _truncated_error(path, frames / rate, wav)
            data = handle.read(dtype="float32", always_2d=True)
    except FileNotFoundError as error:
        raise InputError("file not found", path=path) from error
    except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
        raise InputError(f"not a readable audio file ({error})", path=path) from error
    except MemoryError as error:  # a header announcing more frames than memory holds (FLAC and OGG are not checked)
        raise InputError(
            f"the recording announces {frames} frames of {channels} channel(s), more than fit in memory", path=path
        ) from error
    if data.shape[0] == 0:
        raise InputError("the recording holds no samples", path=path)
    announced_s = None
    if wav is not None and wav.missing:
        announced_s = _truncated_error(path, data.shape[0] / rate, wav).announced_s
    elif data.shape[0] < frames:  # libsndfile's count from the header: another format cut short
        if not allow_truncated:
            raise TruncatedRecordingError(
                path, readable_s=data.shape[0] / rate, announced_s=frames / rate, missing_bytes=None
            )
        announced_s = frames / rate
    if not np.isfinite(data).all():
        raise InputError("the recording contains invalid (NaN or infinite) samples", path=path)
    samples = data.mean(axis=1, dtype=np.float32)
    return Recording(samples, int(rate), int(channels), str(subtype), path, announced_s)


@dataclass(frozen=True)
class _WavData:
    """The size a RIFF/WAVE file's data chunk announces, and how much of it the file holds."""

    announced: int
    present: int

    @property
    def missing(self) -> int:
        return max(0, self.announced - self.present)


def _truncated_error(path: Path, readable_s: float, wav: _WavData) -> TruncatedRecordingError:
    """The error for a WAV missing part of its data chunk; the announced duration scales with the bytes (PCM)."""
    announced_s = readable_s * wav.announced / wav.present if wav.present else readable_s
    return TruncatedRecordingError(path, readable_s=readable_s, announced_s=announced_s, missing_bytes=wav.missing)


def _wav_data_bytes(path: Path) -> _WavData | None:
    """The data chunk of a RIFF/WAVE file, announced against present bytes; None when not a WAV or left open.

    libsndfile quietly reads a cut-off WAV as a shorter one; a recording cut in
    transfer must be reported, not analysed as if it ended there.
    """
    with open(path, "rb") as handle:
        header = handle.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return None
        while chunk := handle.read(8):
            if len(chunk) < 8:
                return None
            size = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"data":
                if size in (0, 0xFFFFFFFF):  # streamed files leave the size open
                    return None
                return _WavData(size, min(size, path.stat().st_size - handle.tell()))
            handle.seek(size + (size & 1), 1)
    return None


def read_icbhi_annotations(path: Path | str, *, duration_s: float | None = None) -> list[Cycle]:
    """The cycles of an ICBHI annotation file; ``InputError`` naming the file and the row for a malformed row.

    With ``duration_s`` a cycle that starts after the end of the recording is an
    error too, and one that runs past it is clipped (ICBHI files round the last end).
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"unreadable annotation file ({error})", path=path) from error
    cycles = []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"line {number}: {line.strip()[:60]!r}"
        if len(fields) != 4:
            raise InputError(f"{where}: expected 4 columns (start end crackles wheezes), got {len(fields)}", path=path)
        try:
            start, end = float(fields[0]), float(fields[1])
            flags = int(fields[2]), int(fields[3])
        except ValueError as error:
            raise InputError(f"{where}: expected two times in seconds and two 0/1 flags", path=path) from error
        if not (np.isfinite(start) and np.isfinite(end)) or start < 0 or end <= start:
            raise InputError(f"{where}: expected 0 <= start < end, got {start} and {end}", path=path)
        if any(flag not in (0, 1) for flag in flags):
            raise InputError(f"{where}: expected crackle and wheeze flags of 0 or 1, got {flags}", path=path)
        if duration_s is not None:
            if start >= duration_s:
                raise InputError(f"{where}: starts after the recording ends ({duration_s:.2f} s)", path=path)
            end = min(end, duration_s)
        cycles.append(Cycle(start, end, bool(flags[0]), bool(flags[1])))
    return cycles


def annotation_path(recording: Path) -> Path:
    """Where ICBHI keeps a recording's cycle annotations: the same name with ``.txt``."""
    return recording.with_suffix(".txt")


def write_icbhi_annotations(path: Path | str, cycles: Sequence[Cycle]) -> None:
    """Write ``cycles`` in the ICBHI 2017 format (``start end crackles wheezes``, tab-separated)."""
    lines = [f"{c.start_s:.3f}\t{c.end_s:.3f}\t{int(c.crackles)}\t{int(c.wheezes)}\n" for c in cycles]
    Path(path).write_text("".join(lines), encoding="utf-8")
