"""The ICBHI 2017 Respiratory Sound Database layout.

Each recording ``<patient>_<index>_<location>_<mode>_<device>.wav`` has an
annotation file of the same stem with one row per respiratory cycle
(``start end crackles wheezes``).  The patient is the first field of the name.
The challenge's official split is a text file of ``<stem> train|test`` rows
(``ICBHI_challenge_train_test.txt``); when it is in the folder it is used,
otherwise paper 004's random 80/20 splits by patient apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medview.errors import InputError
from medview.io.audio import ICBHI_CLASSES, read_icbhi_annotations, read_recording
from medview.preprocess.audio import SAMPLE_RATE, resample

OFFICIAL_SPLIT_FILE = "ICBHI_challenge_train_test.txt"
AUDIO_SUFFIXES = (".wav", ".flac")


@dataclass(frozen=True, eq=False)
class LabelledCycle:
    """One annotated respiratory cycle at 22,050 Hz."""

    samples: np.ndarray
    label: int  # index into ICBHI_CLASSES
    patient: str
    recording: str  # the recording's file name
    start_s: float
    end_s: float
    official_side: str | None = None

    @property
    def item_id(self) -> str:
        return f"{self.recording}@{self.start_s:.3f}"


def _official_split(root: Path) -> dict[str, str] | None:
    path = root / OFFICIAL_SPLIT_FILE
    if not path.is_file():
        return None
    sides = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("train", "test"):
            raise InputError(f"line {number}: expected '<recording> train|test', got {line.strip()[:60]!r}", path=path)
        sides[fields[0]] = fields[1]
    return sides


def read_icbhi_dataset(root: Path) -> list[LabelledCycle]:
    """Every annotated cycle of every recording under ``root`` that has an annotation file beside it."""
    root = Path(root)
    if not root.is_dir():
        raise InputError("not a folder", path=root)
    official = _official_split(root)
    cycles = []
    recordings = sorted(path for path in root.rglob("*") if path.suffix.lower() in AUDIO_SUFFIXES)
    for path in recordings:
        annotation = path.with_suffix(".txt")
        if not annotation.is_file():
            continue
        recording = read_recording(path)
        samples = resample(recording.samples, recording.sample_rate, SAMPLE_RATE)
        side = official.get(path.stem) if official is not None else None
        if official is not None and side is None:
            raise InputError(f"{path.stem} is not listed in {OFFICIAL_SPLIT_FILE}", path=root / OFFICIAL_SPLIT_FILE)
        for cycle in read_icbhi_annotations(annotation, duration_s=recording.duration_s):
            first, last = round(cycle.start_s * SAMPLE_RATE), min(round(cycle.end_s * SAMPLE_RATE), samples.size)
            if last - first < 512:  # shorter than one FFT window: nothing to analyse
                continue
            cycles.append(
                LabelledCycle(
                    samples[first:last],
                    ICBHI_CLASSES.index(cycle.label),
                    path.name.split("_")[0],
                    path.name,
                    cycle.start_s,
                    cycle.end_s,
                    side,
                )
            )
    if not cycles:
        raise InputError("no ICBHI recordings found (expected <name>.wav with <name>.txt cycle annotations)", path=root)
    return cycles
