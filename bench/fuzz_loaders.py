"""Fuzz every loader the user can reach and print one table: inputs tried, accepted, rejected cleanly, crashed, hung.

Run: ``.venv/bin/python -m bench.fuzz_loaders [--inputs 10000] [--loader NAME ...] [--timeout S] [--jobs N]``.
Replay a saved failure: ``.venv/bin/python -m bench.fuzz_loaders --replay FOLDER``.

Inputs come from ``bench.fuzzing`` (mutations of the real files in ../shared/data
and resources/, Hypothesis documents for the text formats), drawn by Hypothesis
with a fixed seed (``--seed``), so a run is repeatable.  Each input runs in a
worker process under a memory cap (``RLIMIT_AS``, ``--memory-mb``): a header that
claims a 100 GB image and makes the loader try to allocate it is a crash, not a
slow machine.  A worker that does not answer within the loader's timeout is
killed and replaced (the input is "hung"); one that dies (a segfault, an abort)
is replaced too (the input "crashed").

Verdicts: *accepted* (the loader returned), *rejected cleanly* (a ``MedviewError``
whose message names the file), *crashed* (anything else, including a
``MedviewError`` that does not name the file), *hung*.  The first failures of each
loader are saved under ``--save`` (default ``runs/fuzz/``) with ``case.json`` so
that ``--replay`` reruns them in this process and shows the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import queue
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed

from bench.fuzzing import (
    BUILDERS,
    REPO,
    Context,
    Corpus,
    Outcome,
    Spec,
    build_case,
    execute,
    prepare_corpus,
    spec_strategy,
    write_case,
)
from bench.results import Row, report

#: per-input time limit in seconds.  DICOM inputs scan and decode a series (up to
#: 4 slices of 512x512 JPEG 2000 or JPEG lossless, thread pool, on 2 shared cores:
#: ~1 s when the machine is busy), and a label map through a DICOM SEG goes through
#: highdicom (~0.3 s): 30 s leaves a wide margin so "hung" means stuck, not slow.
DEFAULT_TIMEOUTS = {name: 30.0 if name.startswith("dicom") or name == "label_map" else 10.0 for name in BUILDERS}
DEFAULT_MEMORY_MB = 4096
DEFAULT_SAVE = REPO / "runs" / "fuzz"
_READY_TIMEOUT_S = 120.0
_FILE_SIZE_LIMIT = 1 << 30  # nothing a loader writes (an unpacked bundle) may grow past 1 GiB


@dataclass
class Failure:
    """One crashed or hung input, and where it was saved."""

    status: str
    spec: Spec
    message: str
    details: str = ""
    saved: Path | None = None


@dataclass
class LoaderStats:
    """The counts of one loader's run."""

    loader: str
    tried: int = 0
    accepted: int = 0
    rejected: int = 0
    crashed: int = 0
    hung: int = 0
    generator_errors: int = 0
    seconds: float = 0.0
    failures: list[Failure] = field(default_factory=list)

    def add(self, status: str) -> None:
        self.tried += 1
        name = {"generator": "generator_errors"}.get(status, status)
        setattr(self, name, getattr(self, name) + 1)


# --------------------------------------------------------------------------- worker processes


def _limit_resources(memory_mb: int) -> None:
    """Cap this process's address space and the size of any file it writes."""
    limit = memory_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write then fails with an OSError
    resource.setrlimit(resource.RLIMIT_FSIZE, (_FILE_SIZE_LIMIT, _FILE_SIZE_LIMIT))


def _worker_main(connection: Connection, corpus: Corpus, memory_mb: int, work_dir: str) -> None:
    """Run inputs sent by the parent, one at a time, and send back each ``Outcome``."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # ITK, GDCM and libjpeg print their complaints on stderr: thousands of lines that would bury the table
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 2)
    os.close(quiet)
    context = Context()
    context.warm_up()
    _limit_resources(memory_mb)
    connection.send("ready")
    while True:
        try:
            spec = connection.recv()
        except EOFError:
            return
        if spec is None:
            return
        connection.send(execute(spec, corpus, Path(work_dir), context))


class Worker:
    """A worker process that can be replaced when an input kills it or runs over its time."""

    def __init__(self, corpus: Corpus, memory_mb: int, work_dir: Path) -> None:
        self.corpus, self.memory_mb, self.work_dir = corpus, memory_mb, work_dir
        self._context = multiprocessing.get_context("spawn")
        self._start()

    def _start(self) -> None:
        parent, child = self._context.Pipe()
        self.connection = parent
        self.process = self._context.Process(
            target=_worker_main,
            args=(child, self.corpus, self.memory_mb, str(self.work_dir)),
            daemon=True,
        )
        self.process.start()
        child.close()
        if not parent.poll(_READY_TIMEOUT_S) or parent.recv() != "ready":
            raise RuntimeError("a fuzz worker process did not start")

    def _restart(self) -> None:
        self.process.kill()
        self.process.join()
        self.connection.close()
        shutil.rmtree(self.work_dir, ignore_errors=True)
        self._start()

    def run(self, spec: Spec, timeout: float) -> Outcome:
        """The outcome of one input; a hang or a dead worker is turned into an outcome and the worker replaced."""
        self.connection.send(spec)
        if not self.connection.poll(timeout):
            self._restart()
            return Outcome("hung", f"no answer within {timeout:g} s")
        try:
            return self.connection.recv()
        except (EOFError, ConnectionError):
            self.process.join(5)
            code = self.process.exitcode
            died_of_signal = code is not None and code < 0
            reason = f"signal {-code} ({signal.Signals(-code).name})" if died_of_signal else f"exit {code}"
            self._restart()
            return Outcome("crashed", f"the worker process died: {reason}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.send(None)
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.connection.close()


class WorkerPool:
    """``jobs`` workers, each in its own scratch folder under ``work_root``."""

    def __init__(self, corpus: Corpus, *, jobs: int = 1, memory_mb: int = DEFAULT_MEMORY_MB, work_root: Path) -> None:
        self.workers = [Worker(corpus, memory_mb, work_root / f"worker-{index}") for index in range(max(1, jobs))]

    def close(self) -> None:
        for worker in self.workers:
            worker.close()


# --------------------------------------------------------------------------- running a loader


def run_loader(
    loader: str,
    inputs: int,
    pool: WorkerPool,
    corpus: Corpus,
    *,
    timeout: float | None = None,
    seed: int = 0,
    save_dir: Path | None = None,
    keep: int = 5,
    progress: Callable[[LoaderStats], None] | None = None,
) -> LoaderStats:
    """Fuzz ``loader`` with ``inputs`` Hypothesis-drawn inputs spread over the pool's workers."""
    limit = timeout or DEFAULT_TIMEOUTS[loader]
    stats = LoaderStats(loader)
    lock = threading.Lock()
    pending: queue.Queue[Spec | None] = queue.Queue(maxsize=2 * len(pool.workers))
    start = time.perf_counter()

    def record(spec: Spec, outcome: Outcome) -> None:
        with lock:
            stats.add(outcome.status)
            if outcome.status in ("crashed", "hung", "generator") and len(stats.failures) < keep:
                failure = Failure(outcome.status, spec, outcome.message, outcome.details)
                if save_dir is not None:
                    try:
                        failure.saved = save_failure(failure, corpus, save_dir / loader / f"{len(stats.failures):02d}")
                    except Exception as error:  # noqa: BLE001 - the run goes on; the table says why it is unsaved
                        failure.message += f" (not saved: {type(error).__name__}: {error})"
                stats.failures.append(failure)
            if progress is not None:
                progress(stats)

    def serve(worker: Worker) -> None:
        while (spec := pending.get()) is not None:
            try:
                outcome = worker.run(spec, limit)
            except Exception as error:  # noqa: BLE001 - a runner fault must not stop the run (or deadlock it)
                outcome = Outcome("generator", f"runner error: {type(error).__name__}: {error}", traceback.format_exc())
            record(spec, outcome)

    threads = [threading.Thread(target=serve, args=(worker,), daemon=True) for worker in pool.workers]
    for thread in threads:
        thread.start()
    submitted = 0
    try:
        round_seed = seed
        while submitted < inputs:  # Hypothesis may stop early when it believes it has seen enough
            before = submitted

            @settings(
                max_examples=inputs - submitted,
                database=None,
                deadline=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
                verbosity=Verbosity.quiet,
                print_blob=False,
            )
            @hypothesis_seed(round_seed)
            @given(spec_strategy(loader))
            def submit(spec: Spec) -> None:
                nonlocal submitted
                if submitted < inputs:
                    pending.put(spec)
                    submitted += 1

            submit()
            round_seed += 1
            if submitted == before:
                break
    finally:
        for _ in threads:
            pending.put(None)
        for thread in threads:
            thread.join()
    stats.seconds = time.perf_counter() - start
    return stats


def save_failure(failure: Failure, corpus: Corpus, folder: Path) -> Path:
    """Write a failing input's files and ``case.json`` (loader, spec, verdict) so it can be replayed."""
    if folder.exists():
        shutil.rmtree(folder)
    case = build_case(failure.spec, corpus)
    write_case(case, folder / "files")
    description = {
        "loader": failure.spec.loader,
        "seed": failure.spec.seed,
        "payload": repr(failure.spec.payload) if failure.spec.payload is not None else None,
        "target": case.target,
        "options": case.options,
        "status": failure.status,
        "message": failure.message,
        "details": failure.details,
    }
    (folder / "case.json").write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    return folder


def replay(folder: Path) -> int:
    """Run a saved input again in this process (no worker, no cap) and print what happened."""
    from bench.fuzzing import Case, run_target

    description = json.loads((folder / "case.json").read_text(encoding="utf-8"))
    files = {
        path.relative_to(folder / "files").as_posix(): path.read_bytes()
        for path in sorted((folder / "files").rglob("*"))
        if path.is_file()
    }
    case = Case(files, description["target"], description["options"])
    with tempfile.TemporaryDirectory(prefix="medview-fuzz-replay-") as scratch:
        outcome = run_target(description["loader"], case, Path(scratch) / "case", Context())
    print(f"{description['loader']}: {outcome.status}: {outcome.message}")
    if outcome.details:
        print(outcome.details)
    return 0 if outcome.status in ("accepted", "rejected") else 1


# --------------------------------------------------------------------------- the table

COLUMNS = ("loader", "inputs tried", "accepted", "rejected cleanly", "crashed", "hung", "ms/input")


def format_table(rows: Sequence[LoaderStats]) -> str:
    """The result table, one row per loader and a total."""
    total = LoaderStats("total")
    for row in rows:
        for name in ("tried", "accepted", "rejected", "crashed", "hung", "generator_errors", "seconds"):
            setattr(total, name, getattr(total, name) + getattr(row, name))
    lines = [f"{COLUMNS[0]:14s}" + "".join(f"{c:>18s}" for c in COLUMNS[1:])]
    for row in [*rows, total]:
        per_input = 1000 * row.seconds / row.tried if row.tried else 0.0
        values = (row.tried, row.accepted, row.rejected, row.crashed, row.hung)
        lines.append(f"{row.loader:14s}" + "".join(f"{v:18d}" for v in values) + f"{per_input:18.1f}")
    return "\n".join(lines)


def _describe_failures(rows: Sequence[LoaderStats]) -> str:
    lines = []
    for row in rows:
        for failure in row.failures:
            where = f"  (saved: {failure.saved}; replay: python -m bench.fuzz_loaders --replay {failure.saved})"
            lines.append(f"{row.loader} {failure.status}: {failure.message[:300]}{where if failure.saved else ''}")
        if row.generator_errors:
            lines.append(f"{row.loader}: {row.generator_errors} input(s) not generated or run (a bug in bench/)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz_loaders", description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=10_000, help="inputs per loader (default 10000)")
    parser.add_argument("--loader", action="append", choices=list(BUILDERS), help="only this loader (repeatable)")
    parser.add_argument("--timeout", type=float, help="per-input time limit in seconds (default: per loader)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default: cores)")
    parser.add_argument("--memory-mb", type=int, default=DEFAULT_MEMORY_MB, help="address-space cap per worker")
    parser.add_argument("--seed", type=int, default=0, help="Hypothesis seed (default 0)")
    parser.add_argument("--save", type=Path, default=DEFAULT_SAVE, help="where failing inputs are saved")
    parser.add_argument("--replay", type=Path, help="rerun one saved failure in this process and exit")
    args = parser.parse_args(argv)
    if args.replay:
        return replay(args.replay)
    loaders = args.loader or list(BUILDERS)
    rows = []
    with tempfile.TemporaryDirectory(prefix="medview-fuzz-") as scratch:
        corpus = prepare_corpus(Path(scratch) / "corpus")
        pool = WorkerPool(corpus, jobs=args.jobs, memory_mb=args.memory_mb, work_root=Path(scratch) / "work")
        try:
            for loader in loaders:
                last = [time.monotonic()]

                def show_progress(stats: LoaderStats, last: list[float] = last) -> None:
                    if time.monotonic() - last[0] > 30:
                        last[0] = time.monotonic()
                        print(f"  {stats.loader}: {stats.tried}/{args.inputs}", file=sys.stderr, flush=True)

                stats = run_loader(
                    loader, args.inputs, pool, corpus, timeout=args.timeout, seed=args.seed, save_dir=args.save,
                    progress=show_progress,
                )  # fmt: skip
                rows.append(stats)
                print(f"{loader}: {stats.tried} inputs in {stats.seconds:.0f} s", file=sys.stderr, flush=True)
        except KeyboardInterrupt:
            print("interrupted: the table covers the loaders that finished", file=sys.stderr)
        finally:
            pool.close()
    print(format_table(rows))
    report(
        "fuzz_loaders",
        "Inputs per loader that crashed the process or hung (target 0)",
        [
            Row(f"{row.loader}: crashed or hung, of {row.tried}", row.crashed + row.hung, "inputs", target=0)
            for row in rows
        ],
        digits=0,
    )
    failures = _describe_failures(rows)
    if failures:
        print(failures)
    return 1 if any(row.crashed or row.hung or row.generator_errors for row in rows) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:  # noqa: BLE001 - a bench failing should say why in full
        traceback.print_exc()
        sys.exit(2)
