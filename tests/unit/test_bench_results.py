"""bench.results: verdicts for upper and lower bounds, the ratio, the table and the JSON lines for bench.summary."""

from __future__ import annotations

import json
import math

import pytest

from bench.results import JSON_ENV, Row, report


def test_an_upper_bound_is_met_at_or_below_the_target() -> None:
    assert Row("load", 0.25, target=0.3).verdict == "meets"
    assert Row("load", 0.3, target=0.3).verdict == "meets"
    assert Row("load", 0.31, target=0.3).verdict == "misses"


def test_a_lower_bound_is_met_at_or_above_the_target() -> None:
    assert Row("F1", 0.8, "F1", target=0.7, at_least=True).verdict == "meets"
    assert Row("F1", 0.7, "F1", target=0.7, at_least=True).verdict == "meets"
    assert Row("F1", 0.69, "F1", target=0.7, at_least=True).verdict == "misses"


def test_a_row_without_a_target_has_no_verdict_and_a_failed_measure_misses() -> None:
    assert Row("context", 12.0).verdict == ""
    assert Row("stall", math.nan, "ms", target=100.0).verdict == "misses"


def test_the_ratio_is_the_median_over_the_reference_and_absent_without_one() -> None:
    assert Row("ours", 1.5, reference=3.0).ratio == pytest.approx(0.5)
    assert Row("ours", 1.5).ratio is None
    assert Row("ours", 1.5, reference=0.0).ratio is None


def test_report_prints_a_markdown_table_and_writes_nothing_without_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    monkeypatch.delenv(JSON_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    report("demo", "Demo title", [Row("photo", 0.25, best=0.2, reference=0.5, target=0.3)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "Demo title"
    assert lines[-1] == "| photo | s | 0.250 | 0.200 | 0.50 | ≤ 0.3 | meets |"
    assert list(tmp_path.iterdir()) == []


def test_report_appends_one_json_line_per_row_when_the_variable_names_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    destination = tmp_path / "rows.jsonl"
    destination.write_text(json.dumps({"benchmark": "earlier", "case": "kept"}) + "\n", encoding="utf-8")
    monkeypatch.setenv(JSON_ENV, str(destination))
    report("skin_drop", "title", [Row("per photo", 0.4, target=0.3), Row("F1", 0.9, "F1", target=0.8, at_least=True)])

    records = [json.loads(line) for line in destination.read_text(encoding="utf-8").splitlines()]
    assert records[0] == {"benchmark": "earlier", "case": "kept"}
    assert records[1] == {
        "benchmark": "skin_drop",
        "case": "per photo",
        "median": 0.4,
        "unit": "s",
        "best": None,
        "reference": None,
        "target": 0.3,
        "at_least": False,
        "verdict": "misses",
    }
    assert (records[2]["benchmark"], records[2]["unit"], records[2]["at_least"], records[2]["verdict"]) == (
        "skin_drop",
        "F1",
        True,
        "meets",
    )


def test_bench_summary_reads_back_the_rows_that_report_wrote(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from bench.summary import read_rows

    destination = tmp_path / "rows.jsonl"
    monkeypatch.setenv(JSON_ENV, str(destination))
    rows = [Row("redraw", 12.5, "ms", best=10.0, reference=5.0, target=50.0), Row("nan", math.nan)]
    report("lung_sound", "title", rows)
    with destination.open("a", encoding="utf-8") as handle:
        handle.write('{"benchmark": "cut by a ki')  # a benchmark killed while writing

    read, unreadable = read_rows(destination)
    assert [name for name, _ in read] == ["lung_sound", "lung_sound"]
    assert read[0][1] == rows[0]
    assert math.isnan(read[1][1].median)
    assert unreadable == 1


def test_contention_slowdowns_compare_each_timing_with_its_quiet_run() -> None:
    from bench.summary import MAX_SLOWDOWN, Run, slowdowns

    quiet = Run(
        "inference", [], rows=[("inference", Row("kidney per slice", 0.06)), ("inference", Row("peak", 900, "MB"))]
    )
    busy = Run(
        "inference", [], rows=[("inference", Row("kidney per slice", 0.24)), ("inference", Row("peak", 950, "MB"))]
    )
    lines = slowdowns([quiet], [busy])
    assert len(lines) == 3  # the header, its rule and the one timing: a memory row has no slowdown
    assert lines[2] == f"| inference | kidney per slice | 0.06 | 0.24 | 4.00x | ≤ {MAX_SLOWDOWN:g}x | misses |"
    busy.rows[0] = ("inference", Row("kidney per slice", 0.09))
    assert slowdowns([quiet], [busy])[2].endswith("| 1.50x | ≤ 3x | meets |")


def test_a_competitor_stops_by_itself() -> None:
    import subprocess
    import sys

    from bench.summary import REPO

    done = subprocess.run(
        [sys.executable, "-m", "bench.competitor", "--seconds", "1", "--size", "64"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "products of 64x64 float32 in 1 s" in done.stdout


def test_thread_policies_name_a_thread_count_and_the_openmp_wait() -> None:
    import argparse

    from bench.summary import COMPETITOR_ENVIRONMENT
    from bench.thread_policy import default_policies, parse_policy

    assert default_policies(2) == ["1", "2", "2:passive"]
    assert default_policies(8) == ["1", "4", "4:passive", "8", "8:passive"]
    assert parse_policy("2:passive") == (2, {"OMP_WAIT_POLICY": "PASSIVE"})
    assert parse_policy("1") == (1, {"GOMP_SPINCOUNT": "300000"})  # libgomp's default spin
    for bad in ("0", "two", "2:active"):
        with pytest.raises(argparse.ArgumentTypeError, match="policy"):
            parse_policy(bad)
    # the competitors run OpenMP as torch leaves it, whatever MedView sets for itself
    assert "OMP_WAIT_POLICY" not in COMPETITOR_ENVIRONMENT
    assert COMPETITOR_ENVIRONMENT["GOMP_SPINCOUNT"] == "300000"
