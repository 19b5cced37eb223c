"""The lung workflow without Qt: a recording opened with its cycles, the cycle table, the exports, their audit."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from medview.audit import Outcome, audit_log
from medview.engine.api import ClassScores, LungSoundResult, Provenance
from medview.errors import Cancelled, MedviewError
from medview.io.audio import read_icbhi_annotations
from medview.workflows.audit import AuditedExport
from medview.workflows.lung import (
    CYCLE_TABLE_COLUMNS,
    cycle_table,
    export_name,
    open_recording,
    predicted_cycles,
    write_cycle_csv,
)

RECORDING = Path("lung_sound") / "icbhi_sample" / "106_2b1_Pl_mc_LittC2SE.wav"
SCORES = (  # one per class, so each row's predicted class is known
    {"normal": 0.7, "crackle": 0.1, "wheeze": 0.1, "both": 0.1},
    {"normal": 0.1, "crackle": 0.6, "wheeze": 0.2, "both": 0.1},
    {"normal": 0.1, "crackle": 0.1, "wheeze": 0.7, "both": 0.1},
    {"normal": 0.1, "crackle": 0.2, "wheeze": 0.2, "both": 0.5},
)


def _result(cycles: list[tuple[float, float]]) -> LungSoundResult:
    provenance = Provenance("lung-test", "1.0", "lung_sound", "lung_sound_cnn", True, "", {}, None, "cpu", 0.1)
    scores = tuple(ClassScores(SCORES[index % len(SCORES)]) for index in range(len(cycles)))
    classes = ("normal", "crackle", "wheeze", "both")
    return LungSoundResult(provenance, classes, tuple(cycles), scores, 4, (2,) * len(cycles))


def test_an_annotated_recording_opens_with_its_cycles_and_both_spectrograms(shared_data: Path) -> None:
    path = shared_data / RECORDING
    opened = open_recording(path)
    annotated = read_icbhi_annotations(path.with_suffix(".txt"))
    assert opened.annotated
    assert [(c.start_s, c.end_s, c.label) for c in opened.cycles] == [(c.start_s, c.end_s, c.label) for c in annotated]
    assert opened.cycles_note == f"{len(annotated)} cycles from {path.with_suffix('.txt').name}."
    assert set(opened.spectrograms) == {True, False}
    assert opened.truncation_note == ""


def test_without_its_annotation_file_the_cycles_are_found_and_the_note_says_so(
    shared_data: Path, tmp_path: Path
) -> None:
    path = tmp_path / "bare.wav"
    shutil.copy(shared_data / RECORDING, path)
    opened = open_recording(path)
    assert not opened.annotated
    assert len(opened.cycles) >= 5
    assert "No annotation file (bare.txt)" in opened.cycles_note
    assert "found automatically" in opened.cycles_note


def test_the_cycle_table_holds_each_cycles_prediction_and_none_for_an_edited_one(
    shared_data: Path, tmp_path: Path
) -> None:
    opened = open_recording(shared_data / RECORDING)
    cycles = list(opened.cycles)
    result = _result([(c.start_s, c.end_s) for c in cycles])
    rows = cycle_table(opened, cycles, result, stale={1})
    assert [row["predicted"] for row in rows[:4]] == ["normal", "", "wheeze", "both"]
    assert rows[0]["p_abnormal"] == "0.3000"
    assert rows[1]["p_crackle"] == ""
    assert rows[0]["annotated"] == cycles[0].label
    assert rows[0]["model"] == "lung-test 1.0"
    assert rows[0]["demo_model"] == "true"
    assert {row["recording"] for row in rows} == {RECORDING.name}

    write_cycle_csv(tmp_path / "cycles.csv", rows)
    with open(tmp_path / "cycles.csv", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == CYCLE_TABLE_COLUMNS
        assert list(reader) == rows

    with pytest.raises(MedviewError, match="classify the cycles"):
        predicted_cycles(cycles, result, {1})
    flagged = predicted_cycles(cycles, result, set())
    flags = [(c.crackles, c.wheezes) for c in flagged[:4]]
    assert flags == [(False, False), (True, False), (False, True), (True, True)]
    assert [c.start_s for c in flagged] == [c.start_s for c in cycles]


def test_an_export_name_marks_a_truncated_recording(shared_data: Path) -> None:
    opened = open_recording(shared_data / RECORDING)
    assert export_name(opened.recording, ".csv") == str((shared_data / RECORDING).with_suffix("")) + ".csv"


def test_an_audited_export_records_its_success_its_failure_and_its_cancel(tmp_path: Path) -> None:
    written = tmp_path / "table.csv"
    AuditedExport("cycle table", written, "CSV", source="a.wav").write(lambda: written.write_text("x"))
    missing = tmp_path / "no such folder" / "table.csv"
    with pytest.raises(OSError, match="No such file or directory"):
        AuditedExport("cycle table", missing, "CSV").write(lambda: missing.write_text("x"))

    def cancelled() -> None:
        raise Cancelled

    with pytest.raises(Cancelled):
        AuditedExport("series", tmp_path / "out", "DICOM", anonymised=True).write(cancelled)

    events = list(audit_log().read_events())
    assert [(event.event_type, event.outcome) for event in events] == [
        ("cycle table", Outcome.SUCCESS),
        ("cycle table", Outcome.SERIOUS_FAILURE),
        ("series", Outcome.MINOR_FAILURE),
    ]
    assert str(missing) in events[1].outcome_description
    assert "No such file or directory" in events[1].outcome_description
    assert events[2].outcome_description == "cancelled by the user"
    assert any(o["id"] == str(written) for o in events[0].objects)
