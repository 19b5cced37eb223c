"""Run every benchmark that reports through ``bench.results`` and print one table of targets and measured values.

Run: ``.venv/bin/python -m bench.summary [--only NAME ...] [--skip NAME ...] [--quick] [--timeout S] [--logs DIR]
[--contention N]``.

A benchmark is any ``bench/*.py`` module run as ``python -m bench.NAME`` that imports
``bench.results``: a new one is picked up without changing this file.  Each runs in
a subprocess of its own (its own process group, killed whole at its time limit)
with ``MEDVIEW_BENCH_JSON`` naming a temporary file, where ``bench.results.report``
appends its rows.  ``--quick`` passes each benchmark's fast options (fewer repeats,
smaller inputs; listed in ``QUICK_ARGS``), so its figures are rougher than a full run's.

``--contention N`` runs every benchmark twice: quiet, then beside N competitor processes
(``bench.competitor``: torch matrix products with the default thread count, what a busy
workstation runs beside MedView; stopped when the run ends, and by their own time limit),
and prints a second table of each timing's slowdown against the quiet run of the same
invocation, with the target that no figure slows more than ``MAX_SLOWDOWN`` times.

The exit status is 0 even when targets are missed (this is a report), 1 when a
benchmark crashed: died of a signal or exited with a non-zero status (a traceback,
or a check of its own that failed, as ``dicom_load``'s voxel comparison).  A
benchmark that runs past its time limit is listed with the rows it had written;
it does not change the exit status.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

from bench.results import JSON_ENV, Row
from medview.config import LIBGOMP_DEFAULT_SPINCOUNT

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
#: the fast options of each benchmark under ``--quick``; one not listed runs with none
QUICK_ARGS: dict[str, list[str]] = {
    "inference": ["--repeats", "1"],
    "lung_sound": ["--repeats", "1", "--cold-runs", "1"],
    "skin_drop": ["--photos", "20"],
    "scale": ["--slices", "300", "--minutes", "3", "--photos", "100"],
    "responsiveness": ["--cancels", "1", "--photos", "10"],
    "fuzz_loaders": ["--inputs", "200"],
}
#: seconds a benchmark may run before it is killed (``--timeout`` overrides)
TIMEOUT_S = 3600
QUICK_TIMEOUT_S = 1200
LONG_TIMEOUT_S = {"scale": 4 * 3600, "fuzz_loaders": 4 * 3600}
LONG_QUICK_TIMEOUT_S = {"scale": 2400, "responsiveness": 2400}  # every task through the real window, child processes
STDERR_LINES = 12
#: the most a timing may slow beside the competitors of ``--contention`` (issue 23: two competitors on 2 cores)
MAX_SLOWDOWN = 3.0
#: a competitor is what other software runs: OpenMP as torch leaves it, not the passive waits MedView sets
COMPETITOR_ENVIRONMENT = {
    **{name: value for name, value in os.environ.items() if name != "OMP_WAIT_POLICY"},
    "GOMP_SPINCOUNT": LIBGOMP_DEFAULT_SPINCOUNT,
}


@dataclass
class Run:
    """One benchmark's subprocess: what it reported, how it ended."""

    name: str
    args: list[str]
    rows: list[tuple[str, Row]] = field(default_factory=list)  # (the benchmark name it reported under, the row)
    exit_code: int | None = None
    timed_out: bool = False
    seconds: float = 0.0
    stderr_tail: list[str] = field(default_factory=list)
    unreadable_lines: int = 0

    @property
    def crashed(self) -> bool:
        return not self.timed_out and self.exit_code != 0


def discover() -> list[str]:
    """The ``bench/*.py`` modules that can run as ``python -m bench.NAME`` and import ``bench.results``."""
    names = []
    for path in sorted(BENCH.glob("*.py")):
        if path.stem in {"__init__", "results", "summary"}:
            continue
        source = path.read_text(encoding="utf-8")
        if '__name__ == "__main__"' in source and _imports_results(ast.parse(source, filename=str(path))):
            names.append(path.stem)
    return names


def _imports_results(tree: ast.AST) -> bool:
    for node in ast.walk(tree):  # anywhere, including inside functions
        if isinstance(node, ast.ImportFrom) and node.module == "bench.results":
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "bench" and any(a.name == "results" for a in node.names):
            return True
        if isinstance(node, ast.Import) and any(a.name == "bench.results" for a in node.names):
            return True
    return False


def run_benchmark(
    name: str, args: list[str], timeout_s: float, folder: Path, environment: dict[str, str] | None = None
) -> Run:
    """``python -m bench.NAME ARGS`` with its rows sent to a file in ``folder``; stdout and stderr kept there too.

    ``environment``: variables set for this run only (a thread policy), beside this process's.
    """
    run = Run(name, args)
    rows_file = folder / f"{name}.jsonl"
    rows_file.unlink(missing_ok=True)
    env = dict(os.environ, **(environment or {}), **{JSON_ENV: str(rows_file)})
    start = time.perf_counter()
    with open(folder / f"{name}.out", "w") as stdout, open(folder / f"{name}.err", "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", f"bench.{name}", *args],
            cwd=REPO,
            env=env,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # its own process group: the children it starts are killed with it
        )
        try:
            run.exit_code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            run.timed_out = True
            run.exit_code = stop_process(process)
        except BaseException:  # Ctrl-C: the group does not get the terminal's signal, so stop it here
            stop_process(process)
            raise
    run.seconds = time.perf_counter() - start
    run.stderr_tail = (folder / f"{name}.err").read_text(errors="replace").splitlines()[-STDERR_LINES:]
    if rows_file.exists():
        run.rows, run.unreadable_lines = read_rows(rows_file)
    return run


def start_competitors(count: int, limit_s: float, folder: Path) -> list[subprocess.Popen]:
    """``count`` competitor processes (``bench.competitor``), each stopping by itself after ``limit_s``."""
    competitors = []
    for index in range(count):
        with open(folder / f"competitor-{index}.out", "w") as out:
            competitors.append(
                subprocess.Popen(
                    [sys.executable, "-m", "bench.competitor", "--seconds", str(limit_s)],
                    cwd=REPO,
                    env=COMPETITOR_ENVIRONMENT,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    time.sleep(2.0)  # torch imported and the loops running before the benchmark starts
    return competitors


def slowdowns(quiet: list[Run], contended: list[Run]) -> list[str]:
    """The markdown lines of the contention table: each timing quiet and contended, and the slowdown."""
    lines = [
        "| benchmark | case | quiet (s) | contended (s) | slowdown | target | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    quiet_rows = {(benchmark, row.case): row for run in quiet for benchmark, row in run.rows if row.unit == "s"}
    for run in contended:
        for benchmark, row in run.rows:
            before = quiet_rows.get((benchmark, row.case))
            if before is None or before.median <= 0:
                continue
            factor = row.median / before.median
            verdict = "meets" if factor <= MAX_SLOWDOWN else "misses"
            cells = [benchmark, row.case, number(before.median), number(row.median), f"{factor:.2f}x"]
            cells += [f"≤ {MAX_SLOWDOWN:g}x", verdict]
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return lines


def stop_process(process: subprocess.Popen) -> int:
    """Terminate the process group, then kill it if it is still there after 10 s; the exit code."""
    for sent in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sent)
        except ProcessLookupError:
            break
        try:
            return process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            continue
    return process.wait()


def read_rows(path: Path) -> tuple[list[tuple[str, Row]], int]:
    """The rows in a ``MEDVIEW_BENCH_JSON`` file and the number of lines that were not rows (a line cut by a kill)."""
    names = {each.name for each in fields(Row)}
    rows, unreadable = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            rows.append((record["benchmark"], Row(**{k: v for k, v in record.items() if k in names})))
        except (ValueError, KeyError, TypeError):
            unreadable += 1
    return rows, unreadable


def run_problems(run: Run) -> list[str]:
    """What went wrong with ``run``, in words; empty when nothing did."""
    problems = []
    if run.timed_out:
        problems.append(f"timed out after {run.seconds:.0f} s ({len(run.rows)} rows written before)")
    elif run.crashed:
        how = (
            f"killed by signal {-run.exit_code}" if (run.exit_code or 0) < 0 else f"exited with status {run.exit_code}"
        )
        problems.append(f"{how} ({len(run.rows)} rows written)")
    elif not run.rows:
        problems.append("reported no rows")
    if run.unreadable_lines:
        problems.append(f"{run.unreadable_lines} unreadable lines in its rows file")
    return problems


def number(value: float) -> str:
    """Three significant digits, whole numbers from 1000 up (MB, ms), never an exponent for those."""
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def table(runs: list[Run]) -> list[str]:
    """The markdown lines of the one table: benchmark, case, unit, target, measured median, verdict."""
    lines = [
        "| benchmark | case | unit | target | measured (median) | verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for run in runs:
        for benchmark, row in run.rows:
            *_, target, verdict = row.cells(3)
            cells = [benchmark, row.case, row.unit, target, number(row.median), verdict]
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return lines


def machine() -> str:
    import torch  # the threads the benchmarks' torch gets by default on this machine

    from medview.engine.device import usable_cores

    usable = usable_cores()
    return (
        f"{platform.machine()} {platform.processor() or ''}".strip()
        + f", {os.cpu_count()} CPUs ({usable} usable), torch {torch.__version__} with {torch.get_num_threads()} "
        + f"threads, Python {platform.python_version()}"
    )


def load_average() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg()) + " (1, 5, 15 min)"


def main(argv: list[str] | None = None) -> int:
    available = discover()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", action="extend", default=[], metavar="NAME", help="run only these")
    parser.add_argument("--skip", nargs="+", action="extend", default=[], metavar="NAME", help="leave these out")
    parser.add_argument("--quick", action="store_true", help="each benchmark's fast options (rougher figures)")
    parser.add_argument(
        "--timeout", type=float, help="seconds per benchmark (default: 3600, 1200 with --quick; more for scale)"
    )
    parser.add_argument("--logs", type=Path, help="keep each benchmark's stdout and stderr in this folder")
    parser.add_argument(
        "--contention",
        type=int,
        default=0,
        metavar="N",
        help="run each benchmark again beside N multi-threaded competitor processes and report the slowdowns",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.only + args.skip) - set(available))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; found: {', '.join(available)}")
    chosen = [name for name in available if (not args.only or name in args.only) and name not in args.skip]

    print(f"Benchmarks{' (--quick)' if args.quick else ''}: {', '.join(chosen)}")
    print(f"machine: {machine()}")
    print(f"load average at start: {load_average()}")
    started = time.perf_counter()
    runs: list[Run] = []
    contended: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="medview-bench-summary-") as temporary:
        folder = args.logs or Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        for index, name in enumerate(chosen, 1):
            options = QUICK_ARGS.get(name, []) if args.quick else []
            timeout_s = args.timeout or (
                LONG_QUICK_TIMEOUT_S.get(name, QUICK_TIMEOUT_S) if args.quick else LONG_TIMEOUT_S.get(name, TIMEOUT_S)
            )
            print(f"[{index}/{len(chosen)}] bench.{name} {' '.join(options)}".rstrip(), file=sys.stderr, flush=True)
            run = run_benchmark(name, options, timeout_s, folder)
            ended = "timed out" if run.timed_out else f"exit {run.exit_code}"
            print(f"    {ended} after {run.seconds:.0f} s, {len(run.rows)} rows", file=sys.stderr, flush=True)
            runs.append(run)
            if args.contention:
                print(f"    again beside {args.contention} competitor(s)", file=sys.stderr, flush=True)
                competitors = start_competitors(args.contention, timeout_s + 60, folder)
                try:
                    contended.append(run_benchmark(name, options, timeout_s, folder))
                finally:
                    for competitor in competitors:
                        stop_process(competitor)
    wall = time.perf_counter() - started

    print()
    print("\n".join(table(runs)))
    if args.contention:
        print(f"\nbeside {args.contention} competitor process(es) (bench.competitor), against the quiet run above:\n")
        print("\n".join(slowdowns(runs, contended)))
    rows = [row for run in runs for _, row in run.rows]
    verdicts = [row.verdict for row in rows]
    print(
        f"\n{len(rows)} rows: {verdicts.count('meets')} meet their target, {verdicts.count('misses')} miss it, "
        f"{verdicts.count('')} have none"
    )
    print("\nruns:")
    for run in runs:
        ended = f"timed out, exit {run.exit_code}" if run.timed_out else f"exit {run.exit_code}"
        print(f"- bench.{run.name} {' '.join(run.args)}".rstrip() + f": {run.seconds:.0f} s, {ended}")
    problems = {run.name: run_problems(run) for run in runs}
    if any(problems.values()):
        print("\nfailed, timed out or without rows:")
        for run in runs:
            if problems[run.name]:
                print(f"- bench.{run.name}: {'; '.join(problems[run.name])}; exit code {run.exit_code}; last stderr:")
                print("\n".join(f"    {line}" for line in run.stderr_tail) or "    (nothing)")
    print(f"\nload average at end: {load_average()}")
    print(f"wall time: {wall:.0f} s" + (f"; logs in {args.logs}" if args.logs else ""))
    return 1 if any(run.crashed for run in runs + contended) else 0


if __name__ == "__main__":
    sys.exit(main())
