"""The lung sound workspace's work on a recording, without Qt: open it, tabulate its cycles, export them.

- :func:`open_recording` reads a recording (or the readable part of a cut-off
  one, when the user chose to open it), its cycles from the ICBHI annotation
  file beside it or, without one, found from the pauses between breaths, and
  the display spectrograms and waveform summary the workspace draws;
- :func:`cycle_table` is the table of cycles with their predicted classes
  that the CSV export writes and the case report prints;
- :func:`predicted_cycles` gives the cycles flagged as the model classified
  them, for the ICBHI-format export.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from medview.engine.api import ClassScores, LungSoundResult
from medview.errors import MedviewError
from medview.io.audio import (
    ICBHI_CLASSES,
    Cycle,
    Recording,
    annotation_path,
    read_icbhi_annotations,
    read_recording,
)
from medview.preprocess.audio import Spectrogram, display_spectrogram
from medview.preprocess.cycles import MIN_DURATION_S, detect_cycles
from medview.preprocess.waveform import WaveformSummary

#: the columns of the cycle table (CSV export, case report)
CYCLE_TABLE_COLUMNS = (
    "recording",
    "recording_truncated",
    "cycle",
    "start_s",
    "end_s",
    "annotated",
    "predicted",
    "p_abnormal",
    *(f"p_{name}" for name in ICBHI_CLASSES),
    "model",
    "demo_model",
)


@dataclass(frozen=True, eq=False)
class OpenedRecording:
    """A recording with what the panel shows of it, prepared off the GUI thread."""

    recording: Recording
    cycles: tuple[Cycle, ...]
    cycles_note: str  # where the cycles came from, or why there are none
    annotated: bool  # the cycles come from an annotation file (else detected, without labels)
    spectrograms: dict[bool, Spectrogram]  # by mel
    waveform: WaveformSummary

    @property
    def truncation_note(self) -> str:
        """That the file is cut off and how much of it is shown; empty for a whole recording."""
        return truncation_note(self.recording)

    @property
    def annotation_note(self) -> str:
        """What the info line and the case report say of the cycles, the truncation first when the file is cut off."""
        return " ".join(note for note in (self.truncation_note, self.cycles_note) if note)


def truncation_note(recording: Recording) -> str:
    """One sentence saying that ``recording`` is only the readable start of a cut-off file; empty when it is whole."""
    if recording.announced_s is None:
        return ""
    return (
        f"Truncated file: only the first {recording.duration_s:.1f} s of the {recording.announced_s:.1f} s "
        "announced by its header could be read; the cycles and results cover that part only."
    )


def open_recording(path: Path, *, allow_truncated: bool = False) -> OpenedRecording:
    """Read ``path``, its ICBHI annotation file when there is one, and both display spectrograms.

    ``allow_truncated`` opens the readable part of a file that was cut off (the user chose to);
    without it such a file raises ``TruncatedRecordingError``.
    """
    recording = read_recording(path, allow_truncated=allow_truncated)
    annotations = annotation_path(path)
    problem = ""
    if annotations.is_file():
        try:
            if recording.truncated:
                cycles, note = _readable_cycles(annotations, recording.duration_s)
            else:
                cycles = read_icbhi_annotations(annotations, duration_s=recording.duration_s)
                note = f"{len(cycles)} cycles from {annotations.name}."
        except MedviewError as error:
            problem = f"The annotation file could not be used ({error}). "
        else:
            return _prepared(recording, cycles, note, annotated=True)
    else:
        problem = f"No annotation file ({annotations.name}). "
    spans = detect_cycles(recording.samples, recording.sample_rate)
    if spans:
        note = (
            f"{problem}{len(spans)} cycles found automatically from the pauses between breaths; "
            "check them and drag their edges to correct them."
        )
    elif recording.duration_s < MIN_DURATION_S:
        note = f"{problem}The recording is too short ({recording.duration_s:.1f} s) to find breathing cycles in."
    else:
        note = (
            f"{problem}No breathing cycles were found: the recording has no regular breath sounds (silence or noise)."
        )
    return _prepared(recording, [Cycle(start, end) for start, end in spans], note, annotated=False)


def _readable_cycles(annotations: Path, duration_s: float) -> tuple[list[Cycle], str]:
    """The annotated cycles that lie wholly in a truncated recording's readable part, and a note saying so.

    A cycle the cut runs through is left out: its label describes sound that is not in the file.
    """
    every = read_icbhi_annotations(annotations)
    kept = [cycle for cycle in every if cycle.end_s <= duration_s]
    note = (
        f"{len(kept)} of the {len(every)} cycles in {annotations.name} lie wholly in the readable part; "
        "the others fall in the missing part and are left out."
    )
    return kept, note


def _prepared(recording: Recording, cycles: list[Cycle], note: str, annotated: bool) -> OpenedRecording:
    spectrograms = {
        mel: display_spectrogram(recording.samples, recording.sample_rate, mel=mel) for mel in (True, False)
    }
    waveform = WaveformSummary(recording.samples, recording.sample_rate)
    return OpenedRecording(recording, tuple(cycles), note, annotated, spectrograms, waveform)


def cycle_probabilities(result: LungSoundResult, index: int, two_class: bool) -> dict[str, float]:
    """The probabilities of cycle ``index``: the 4 ICBHI classes, or normal / abnormal (the sum of the other three)."""
    probabilities = dict(result.scores[index].probabilities)
    if not two_class:
        return probabilities
    normal = probabilities.get("normal", 0.0)
    return {"normal": normal, "abnormal": 1.0 - normal}


def cycle_table(
    opened: OpenedRecording | None,
    cycles: Sequence[Cycle],
    result: LungSoundResult | None,
    stale: set[int] | frozenset[int] = frozenset(),
) -> list[dict[str, str]]:
    """The cycle table as text, one dict of ``CYCLE_TABLE_COLUMNS`` per cycle: what the CSV export writes and the
    case report prints.  ``stale`` cycles (edited since the model ran) have no prediction."""
    provenance = result.provenance if result is not None else None
    recording = opened.recording.path.name if opened is not None else ""
    truncated = str(opened is not None and opened.recording.truncated).lower()
    annotated = opened is not None and opened.annotated
    rows = []
    for index, cycle in enumerate(cycles):
        current = result is not None and index not in stale
        probabilities = cycle_probabilities(result, index, two_class=False) if result is not None and current else None
        values = [
            recording,
            truncated,
            str(index + 1),
            f"{cycle.start_s:.3f}",
            f"{cycle.end_s:.3f}",
            cycle.label if annotated else "",
            ClassScores(probabilities).label if probabilities else "",
            f"{1 - probabilities['normal']:.4f}" if probabilities else "",
            *(f"{probabilities[name]:.4f}" if probabilities else "" for name in ICBHI_CLASSES),
            *([provenance.label, str(provenance.demo).lower()] if probabilities and provenance else ["", ""]),
        ]
        rows.append(dict(zip(CYCLE_TABLE_COLUMNS, values, strict=True)))
    return rows


def write_cycle_csv(path: Path, rows: Sequence[dict[str, str]]) -> None:
    """The cycle table as CSV: times, annotated and predicted class, the 4 probabilities and the model."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CYCLE_TABLE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def predicted_cycles(cycles: Sequence[Cycle], result: LungSoundResult | None, stale: set[int]) -> list[Cycle]:
    """The cycles with the crackle/wheeze flags the model gave them (the ICBHI annotation format's columns).

    Refused while a cycle has no current prediction: the file would mix the model's flags with no flags.
    """
    if result is None or stale:
        raise MedviewError("classify the cycles (again) before exporting their predicted classes")
    flagged = []
    for index, cycle in enumerate(cycles):
        label = result.scores[index].label
        flagged.append(replace(cycle, crackles=label in ("crackle", "both"), wheezes=label in ("wheeze", "both")))
    return flagged


def export_name(recording: Recording, suffix: str) -> str:
    """The proposed export file: the recording's name, marked when it is truncated, and ``suffix``."""
    return str(recording.path.with_suffix("")) + ("_truncated" if recording.truncated else "") + suffix
