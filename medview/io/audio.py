"""Auscultation recordings and ICBHI cycle annotations (numpy only).

``read_recording`` opens WAV/FLAC/OGG through soundfile (libsndfile is bundled
with it, no ffmpeg): any sample rate, 16/24/32-bit PCM or float, mono or several
channels (averaged to mono, as the ICBHI recordings are analysed).
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

    @property
    def duration_s(self) -> float:
        return self.samples.size / self.sample_rate


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


def read_recording(path: Path | str) -> Recording:
    """Read an audio file as mono float32; ``InputError`` naming the file when it is not usable audio."""
    path = Path(path)
    try:
        with soundfile.SoundFile(path) as handle:
            rate, channels, subtype, frames = handle.samplerate, handle.channels, handle.subtype, handle.frames
            # before reading: a WAV header announcing more than the file holds would size the buffer
            missing = _missing_wav_bytes(path)
            if missing:
                raise InputError(_truncated(missing), path=path)
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
    if data.shape[0] < frames:
        raise InputError(_truncated(missing), path=path)
    if not np.isfinite(data).all():
        raise InputError("the recording contains invalid (NaN or infinite) samples", path=path)
    return Recording(data.mean(axis=1, dtype=np.float32), int(rate), int(channels), str(subtype), path)


def _truncated(missing: int) -> str:
    return f"truncated: {missing} bytes of audio data announced by the header are missing"


def _missing_wav_bytes(path: Path) -> int:
    """How many bytes of a RIFF/WAVE file's data chunk its header announces but the file lacks (0 if complete).

    libsndfile quietly reads a cut-off WAV as a shorter one; a recording cut in
    transfer must be reported, not analysed as if it ended there.
    """
    with open(path, "rb") as handle:
        header = handle.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return 0
        while chunk := handle.read(8):
            if len(chunk) < 8:
                return 0
            size = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"data":
                if size in (0, 0xFFFFFFFF):  # streamed files leave the size open
                    return 0
                available = path.stat().st_size - handle.tell()
                return max(0, size - available)
            handle.seek(size + (size & 1), 1)
    return 0


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
