"""Responsiveness targets of the hardening issue: GUI stalls while each AI task runs, cancel latency, close mid-run.

Run: ``.venv/bin/python -m bench.responsiveness`` (``--tasks liver,kidney,...``,
``--cancels N``, ``--photos N``, ``--skip-close``, ``--onnx-cache DIR`` to time a second
session: graphs exported by an earlier run are read, not exported).  Every task runs on real
inputs from ../shared/data through the real main window (offscreen) with the
shipped bundles, started as its button starts it:

- liver: *Segment liver* on COVID-CT-MD P001 (148 slices);
- kidney: *Kidney stone* over the whole TotalSegmentator abdominal series (20
  slices), with Grad-CAM of the slice on screen;
- covid: *COVID-19* on P001 with Grad-CAM;
- lung: classification of the cycles of an ICBHI recording (102_1b1_Ar_sc_Meditron,
  20 s at 44.1 kHz; its opening is timed on its own row);
- skin: a folder of ``--photos`` ISIC photos dropped on the skin tab, read and classified.

For each task:

0. opening its input (CT: then showing the task's tab, as a user does before
   its button), with the window loading that model in the background
   (``MainWindow.prepare_models``, which the imports of its libraries make the
   slowest, GIL-holding part): its time and the GUI's longest stall, no model
   running yet;
1. the GUI thread's longest stall during the first and a second whole run (``bench.gui.StallMeter``:
   a 5 ms timer's late ticks), target < 100 ms.  Stalls over 50 ms are
   attributed to the GUI thread's Python stack (sampled by a watchdog thread
   while the stall lasts) and listed under the table;
2. cancel latency: ``--cancels`` more runs, each cancelled with the status bar's
   Cancel (``window.cancel_running()``) at an evenly spread fraction of the
   full run's time; from the call to the task's ``cancelled`` (or ``finished``)
   signal on the GUI thread, target ≤ 1 s.  A cancelled run must add no result;
3. closing the window mid-run, in a fresh process (``--skip-close`` leaves it
   out): the window is built and run as ``medview.app.run`` does (``app.exec``,
   then the pool waited for), the task run once to the end (weights loaded),
   started again and the window closed half-way through;
   the process must exit with code 0 within 10 s of the close, with no
   non-daemon Python thread left (``threading.enumerate()``), no active thread
   in the window's pool nor in Qt's global pool, and no running task.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from bench.gui import StallMeter, offscreen_window, spin_until

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
P001 = SHARED / "covid_ct" / "COVID-CT-MD" / "COVID-19" / "P001"
ABDOMEN = SHARED / "dicom_ct" / "totalsegmentator_example_ct_dicom"
RECORDING = SHARED / "lung_sound" / "icbhi_sample" / "102_1b1_Ar_sc_Meditron.wav"
ISIC = SHARED / "skin" / "isic_uda1_250px"
MODELS = REPO / "resources" / "models"
TASKS = ("liver", "kidney", "covid", "lung", "skin")
STALL_TARGET_MS = 100.0
CANCEL_TARGET_S = 1.0
CLOSE_TARGET_S = 10.0
RUN_TIMEOUT_S = 1200.0
RESULT_PREFIX = "RESPONSIVENESS-RESULT "


# --------------------------------------------------------------------------- where a stall comes from


class StallWatch(StallMeter):
    """A ``StallMeter`` that also says where each stall over ``threshold_ms`` was spent.

    A watchdog thread samples the GUI thread's Python stack every 5 ms while
    the timer is late; each stall keeps its most frequent sample.  Code that
    holds the GIL in C (a long numpy call) delays the samples to its end, so a
    sample names the Python line that called it, or the one just after.
    """

    def __init__(self, threshold_ms: float = 50.0) -> None:
        super().__init__()
        self.threshold_ms = threshold_ms
        self.stalls: list[tuple[float, str]] = []  # (ms, where)
        self._samples: Counter[str] = Counter()
        self._main = threading.main_thread().ident
        self._schedstat = Path(f"/proc/self/task/{threading.main_thread().native_id}/schedstat")
        self._scheduled = self._scheduler_ms()
        self._stop = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="stall-watchdog", daemon=True)

    def start(self) -> None:
        super().start()
        self._scheduled = self._scheduler_ms()
        if not self._watchdog.is_alive():
            self._watchdog.start()

    def stop(self) -> None:
        self.timer.stop()
        self._stop.set()

    def reset(self) -> None:
        """Start a new measurement: the longest stall and the list cleared."""
        self.longest_ms = 0.0
        self.stalls = []
        self._samples.clear()
        self._last = time.perf_counter()
        self._scheduled = self._scheduler_ms()

    def _scheduler_ms(self) -> tuple[float, float]:
        """The GUI thread's time on a CPU and time waiting for one (runnable), in ms (Linux schedstat)."""
        try:
            running, waiting, _slices = self._schedstat.read_text().split()
        except (OSError, ValueError):
            return (0.0, 0.0)
        return (int(running) / 1e6, int(waiting) / 1e6)

    def _tick(self) -> None:
        late_ms = (time.perf_counter() - self._last) * 1000 - 5
        scheduled = self._scheduler_ms()
        if late_ms > self.threshold_ms:
            where = self._samples.most_common(1)[0][0] if self._samples else "(no sample: C code held the GIL)"
            ran, waited = (now - before for now, before in zip(scheduled, self._scheduled, strict=True))
            blocked = max(0.0, late_ms + 5 - ran - waited)
            where += f" [GUI thread: ran {ran:.0f} ms, waited for a CPU {waited:.0f} ms, blocked {blocked:.0f} ms]"
            self.stalls.append((late_ms, where))
        self._scheduled = scheduled
        self._samples.clear()
        super()._tick()

    def _watch(self) -> None:
        me = threading.get_ident()
        while not self._stop.wait(0.005):
            if (time.perf_counter() - self._last) * 1000 - 5 <= self.threshold_ms / 2:
                continue
            frames = sys._current_frames()
            frame = frames.pop(self._main, None)
            frames.pop(me, None)
            if frame is None:
                continue
            where = describe_stack(frame)
            if frame.f_code.co_filename.endswith("gui.py"):
                where = "Qt's event loop (C++, or waiting for the GIL)"
            # a worker holding the GIL stalls the GUI thread as surely as its own work: say what they run
            busy = [describe_stack(other, depth=2) for other in frames.values() if _in_project(other)]
            self._samples[f"{where} | workers in: {' ; '.join(busy) or 'none'}"] += 1

    def worst(self, count: int = 3) -> list[tuple[float, str]]:
        """The ``count`` longest stalls with where they were spent."""
        return sorted(self.stalls, reverse=True)[:count]


def _in_project(frame: Any) -> bool:
    return any("/medview/" in f.filename for f in traceback.extract_stack(frame))


def describe_stack(frame: Any, depth: int = 3) -> str:
    """The innermost ``depth`` frames of the project's and pyqtgraph's code, innermost last."""
    frames = traceback.extract_stack(frame)
    ours = [f for f in frames if "/medview/" in f.filename or "/pyqtgraph/" in f.filename]
    chosen = (ours or frames)[-depth:]
    return " > ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in chosen)


# --------------------------------------------------------------------------- the tasks


@dataclass
class Scenario:
    """One AI task as the window runs it: how to prepare its input, start it, and see its result."""

    name: str
    what: str
    prepare: Callable[[Any], None]
    start: Callable[[Any], Any]  # -> the Task doing the work
    results: Callable[[Any], int]  # how many results the window shows (findings, classified cycles, photos)
    extra: dict[str, Any] = field(default_factory=dict)


def open_series(window: Any, folder: Path) -> None:
    """Open ``folder`` as File > Open does and wait for the decoded volume."""
    loaded: list[Any] = []
    window.ct.volume_loaded.connect(loaded.append)
    window.open_paths([folder])
    spin_until(lambda: bool(loaded), timeout_s=RUN_TIMEOUT_S)
    window.ct.volume_loaded.disconnect(loaded.append)
    spin_until(lambda: all(task.done.is_set() for task in window.tasks.running if not task.background), 60)


def open_series_for(task: str, folder: Path) -> Callable[[Any], None]:
    """Open ``folder``, then show the findings tab of ``task`` (liver, kidney, covid), as a user does before its
    button: the window loads that task's model meanwhile."""

    def prepare(window: Any) -> None:
        open_series(window, folder)
        window.ct.findings.task_tabs.setCurrentWidget(getattr(window.ct.findings, task))

    return prepare


def findings_count(window: Any) -> int:
    return window.ct.findings.list.count()


def start_kidney(window: Any) -> Any:
    runner = window.ct.findings.kidney
    runner.scope_box.setCurrentIndex(0)  # whole series; Grad-CAM of the slice on screen comes with it
    return runner.run()


def start_covid(window: Any) -> Any:
    window.ct.findings.covid.grad_cam_box.setChecked(True)
    return window.ct.findings.covid.run()


class LungScenario:
    """The recording is opened once (timed, with its stall); each run classifies its cycles again."""

    def __init__(self) -> None:
        self.classified = 0
        self.open_s = 0.0
        self.open_stall_ms = 0.0
        self.open_stalls: list[tuple[float, str]] = []

    def prepare(self, window: Any) -> None:
        lung = window.lung
        lung.classified.connect(lambda _result: setattr(self, "classified", self.classified + 1))
        opened: list[Any] = []
        lung.opened.connect(opened.append)
        watch = StallWatch()
        watch.start()
        start = time.perf_counter()
        window.open_paths([RECORDING])
        spin_until(lambda: bool(opened), timeout_s=RUN_TIMEOUT_S)
        self.open_s = time.perf_counter() - start
        spin_until(lambda: self.classified > 0, timeout_s=RUN_TIMEOUT_S)  # the automatic first classification
        watch.stop()
        self.open_stall_ms, self.open_stalls = watch.longest_ms, watch.worst()

    def start(self, window: Any) -> Any:
        return window.lung.classify()

    def results(self, _window: Any) -> int:
        return self.classified


class SkinScenario:
    """Each run drops a folder of photos the gallery does not hold yet (the next ones of the 350)."""

    def __init__(self, work: Path, per_run: int) -> None:
        self.photos = sorted(ISIC.glob("*.jpg"))
        self.work = work
        self.per_run = per_run
        self.runs = 0

    def prepare(self, window: Any) -> None:
        window.workspaces.setCurrentWidget(window.skin)

    def start(self, window: Any) -> Any:
        first = (self.runs * self.per_run) % len(self.photos)
        folder = self.work / f"photos-{self.runs}"
        folder.mkdir()
        for path in self.photos[first : first + self.per_run]:
            shutil.copy(path, folder / f"run{self.runs}_{path.name}")
        self.runs += 1
        before = len(window.skin.running)
        window.open_paths([folder])  # as a dropped folder
        return window.skin.running[before]

    def results(self, window: Any) -> int:
        return sum(entry.result is not None for entry in window.skin.entries)


def scenarios(work: Path, photos: int) -> dict[str, Scenario]:
    lung, skin = LungScenario(), SkinScenario(work, photos)
    return {
        "liver": Scenario(
            "liver",
            "Segment liver, P001 (148 slices)",
            open_series_for("liver", P001),
            lambda window: window.ct.findings.liver.run(),
            findings_count,
        ),
        "kidney": Scenario(
            "kidney",
            "Kidney stone over the series + Grad-CAM, abdominal CT (20 slices)",
            open_series_for("kidney", ABDOMEN),
            start_kidney,
            findings_count,
        ),
        "covid": Scenario(
            "covid",
            "COVID-19 + Grad-CAM, P001 (148 slices)",
            open_series_for("covid", P001),
            start_covid,
            findings_count,
        ),
        "lung": Scenario(
            "lung", f"Lung sound cycles, {RECORDING.name}", lung.prepare, lung.start, lung.results, {"scenario": lung}
        ),
        "skin": Scenario(
            "skin", f"Skin, a dropped folder of {photos} ISIC photos", skin.prepare, skin.start, skin.results
        ),
    }


# --------------------------------------------------------------------------- one run, one cancel


@dataclass
class Outcome:
    seconds: float
    stall_ms: float
    stalls: list[tuple[float, str]]
    outcome: str  # succeeded, cancelled, errored
    results_added: int
    cancel_latency_s: float | None = None
    cancel_at_s: float | None = None


def open_and_prepare(window: Any, scenario: Scenario) -> Outcome:
    """Open the scenario's input, then wait while the window loads the models it can run on it (in the
    background, as it does for a user: MainWindow.prepare_models); the stall covers both."""
    watch = StallWatch()
    watch.start()
    start = time.perf_counter()
    scenario.prepare(window)
    spin_until(lambda: window.preparation is None or window.preparation.done.is_set(), RUN_TIMEOUT_S)
    watch.stop()
    return Outcome(time.perf_counter() - start, watch.longest_ms, watch.worst(), "succeeded", 0)


def run_once(window: Any, scenario: Scenario, cancel_after_s: float | None = None) -> Outcome:
    """Start the task; cancel it after ``cancel_after_s`` when given; wait for its end and its result."""
    before = scenario.results(window)
    watch = StallWatch()
    events: dict[str, float] = {}
    watch.start()
    start = time.perf_counter()
    start_task = window.tasks.start

    def start_watched(started: Any) -> Any:
        # connected before the start: a quick task could end before a connection made after it
        if not events.get("watched"):
            events["watched"] = 1.0
            for name in ("succeeded", "cancelled", "errored", "finished"):
                getattr(started.signals, name).connect(lambda *_a, n=name: events.setdefault(n, time.perf_counter()))
        return start_task(started)

    window.tasks.start = start_watched
    try:
        task = scenario.start(window)
    finally:
        del window.tasks.start
    if task is None:
        raise RuntimeError(f"{scenario.name}: the task did not start")
    latency = cancelled_at = None
    if cancel_after_s is not None:
        spin_until(lambda: "finished" in events or time.perf_counter() - start >= cancel_after_s, RUN_TIMEOUT_S)
        if "finished" not in events:
            cancelled_at = time.perf_counter()
            window.cancel_running()
            spin_until(lambda: "cancelled" in events or "finished" in events, RUN_TIMEOUT_S)
            latency = (
                min(events.get("cancelled", float("inf")), events["finished"] if "finished" in events else float("inf"))
                - cancelled_at
            )
    spin_until(lambda: "finished" in events, RUN_TIMEOUT_S)
    if "succeeded" in events:
        spin_until(lambda: scenario.results(window) > before, RUN_TIMEOUT_S)  # shown, not only computed
    else:
        spin_until(lambda: time.perf_counter() - events["finished"] > 0.3, 5)  # a late result would show now
    seconds = time.perf_counter() - start
    watch.stop()
    outcome = next((name for name in ("succeeded", "cancelled", "errored") if name in events), "none")
    return Outcome(
        seconds,
        watch.longest_ms,
        watch.worst(),
        outcome,
        scenario.results(window) - before,
        latency,
        None if cancelled_at is None else cancelled_at - start,
    )


def measure(engine: Any, chosen: list[str], cancels: int, photos: int) -> dict[str, Any]:
    """Full run and ``cancels`` cancelled runs of each chosen task in one offscreen window."""
    measured: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="medview-bench-responsiveness-") as work,
        offscreen_window(engine) as window,
    ):
        table = scenarios(Path(work), photos)
        for name in chosen:
            scenario = table[name]
            opening = open_and_prepare(window, scenario)
            print(
                f"{name}: input opened and models prepared in {opening.seconds:.1f} s, stall {opening.stall_ms:.0f} ms"
            )
            first = run_once(window, scenario)  # the first run after the models were prepared
            print(f"{name}: first run {first.seconds:.1f} s, {first.outcome}, longest stall {first.stall_ms:.0f} ms")
            full = run_once(window, scenario)
            print(
                f"{name}: full run {full.seconds:.1f} s, {full.outcome}, longest stall {full.stall_ms:.0f} ms",
                flush=True,
            )
            cancelled = []
            for index in range(cancels):
                fraction = (index + 1) / (cancels + 1)
                each = run_once(window, scenario, cancel_after_s=full.seconds * fraction)
                print(
                    f"{name}: cancel at {each.cancel_at_s or 0:.2f} s -> {each.outcome} after "
                    f"{each.cancel_latency_s if each.cancel_latency_s is not None else float('nan'):.3f} s, "
                    f"results added {each.results_added}",
                    flush=True,
                )
                cancelled.append(each)
            measured[name] = {
                "scenario": scenario,
                "opening": opening,
                "first": first,
                "full": full,
                "cancelled": cancelled,
            }
    return measured


# --------------------------------------------------------------------------- closing mid-run, in a fresh process


def child_close(name: str, after_s: float) -> None:
    """Build the window as ``medview.app.run`` does, start ``name``, close the window ``after_s`` later."""
    from medview.app import SHUTDOWN_WAIT_MS
    from medview.engine.service import Engine
    from medview.ui.main_window import MainWindow
    from medview.ui.qt import QtCore, QtWidgets

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([sys.argv[0]])
    window = MainWindow()
    window.show()
    window.set_engine(Engine([MODELS]))
    with tempfile.TemporaryDirectory(prefix="medview-bench-close-") as work:
        scenario = scenarios(Path(work), 60)[name]
        scenario.prepare(window)
        warm = scenario.start(window)  # a whole run first: the close then lands in inference, not in loading
        spin_until(lambda: warm.done.is_set() and not window.tasks.running, RUN_TIMEOUT_S)
        task = scenario.start(window)
        marks: dict[str, float] = {}
        task.signals.finished.connect(lambda: marks.setdefault("finished", time.time()))

        def close() -> None:
            marks["running_at_close"] = float(not task.done.is_set())
            marks["close"] = time.time()
            window.close()
            marks["close_returned"] = time.time()

        QtCore.QTimer.singleShot(int(after_s * 1000), close)
        code = app.exec()
        marks["exec_returned"] = time.time()
        waited = window.tasks.pool.waitForDone(SHUTDOWN_WAIT_MS)
        marks["pool_waited"] = time.time()
        main = threading.main_thread()
        report = {
            "code": code,
            "marks": marks,
            "pool_done_in_time": waited,
            "task_done": task.done.is_set(),
            "task_cancelled": task.is_cancelled,
            "running_tasks": [t.description for t in window.tasks.running if not t.done.is_set()],
            "pool_active_threads": window.tasks.pool.activeThreadCount(),
            "global_pool_active_threads": QtCore.QThreadPool.globalInstance().activeThreadCount(),
            "non_daemon_threads": [t.name for t in threading.enumerate() if t is not main and not t.daemon],
            "all_threads": [f"{t.name}{' (daemon)' if t.daemon else ''}" for t in threading.enumerate()],
            "results_added": scenario.results(window),
        }
    print(RESULT_PREFIX + json.dumps(report), flush=True)
    sys.exit(code)


def close_mid_run(name: str, after_s: float) -> dict[str, Any]:
    """Run ``child_close`` in a fresh process; its report, exit code and the time from the close to its exit."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")  # the parent's data and cache folders (ONNX graphs)
    with tempfile.TemporaryDirectory(prefix="medview-bench-close-config-") as folder:
        env["MEDVIEW_CONFIG_DIR"] = folder
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.responsiveness", "--child-close", name, str(after_s)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        ended = time.time()
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    report = json.loads(lines[-1][len(RESULT_PREFIX) :]) if lines else {"marks": {}}
    report["exit_code"] = process.returncode
    marks = report["marks"]
    report["close_to_exit_s"] = ended - marks["close"] if "close" in marks else None
    report["stderr_problems"] = [
        line
        for line in stderr.splitlines()
        if any(word in line for word in ("Traceback", "Error", "QThread", "Fatal", "Segmentation", "abort"))
    ]
    return report


# --------------------------------------------------------------------------- report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    parser.add_argument("--cancels", type=int, default=3, help="cancelled runs per task")
    parser.add_argument("--photos", type=int, default=30, help="photos per skin run")
    parser.add_argument("--skip-close", action="store_true", help="leave out closing the window mid-run")
    parser.add_argument(
        "--onnx-cache",
        type=Path,
        help="ONNX graph cache to use and keep (default: a fresh one, so graphs are exported as on a new install)",
    )
    parser.add_argument("--child-close", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_close:
        child_close(args.child_close[0], float(args.child_close[1]))
        return 0

    from medview.engine.service import Engine

    chosen = [name.strip() for name in args.tasks.split(",") if name.strip()]
    unknown = set(chosen) - set(TASKS)
    if unknown:
        raise SystemExit(f"unknown task(s): {', '.join(sorted(unknown))}")
    for needed in (P001, ABDOMEN, RECORDING, ISIC):
        if not needed.exists():
            raise SystemExit(f"real sample data not found: {needed}")
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="medview-bench-responsiveness-") as folder:
        # the audit log and the ONNX graphs of these runs (and of the close children) are not the user's
        os.environ["MEDVIEW_DATA_DIR"] = str(Path(folder) / "data")
        os.environ["MEDVIEW_CACHE_DIR"] = str(Path(folder) / "cache")
        engine = Engine([MODELS], onnx_cache=args.onnx_cache)
        print(f"Responsiveness, CPU ({os.cpu_count()} cores, {engine.device_name()}), load average before: {load}")
        measured = measure(engine, chosen, args.cancels, args.photos)
        report_runs(measured, load)
        if not args.skip_close:
            report_close(chosen, measured)
    return 0


def report_runs(measured: dict[str, Any], load: str) -> None:
    """The stall and cancel table, the cancel outcomes and where the stalls were spent."""
    from bench.results import Row, report

    rows = []
    where = []
    for name, parts in measured.items():
        opening, first, full, cancelled = parts["opening"], parts["first"], parts["full"], parts["cancelled"]
        rows.append(Row(f"{name}: open the input, models prepared in the background", opening.seconds))
        rows.append(
            Row(
                f"{name}: GUI longest stall while opening and preparing (no model running)", opening.stall_ms, unit="ms"
            )
        )
        where += [(f"{name} (opening, preparing): {ms:.0f} ms", at) for ms, at in opening.stalls]
        rows.append(Row(f"{name}: first run ({first.outcome})", first.seconds))
        rows.append(
            Row(f"{name}: GUI longest stall during the first run", first.stall_ms, unit="ms", target=STALL_TARGET_MS)
        )
        where += [(f"{name} (first run): {ms:.0f} ms", at) for ms, at in first.stalls]
        rows.append(Row(f"{name}: second run ({full.outcome})", full.seconds))
        if name == "lung":
            lung = parts["scenario"].extra["scenario"]
            rows.append(Row("lung: open the recording (read, spectrograms), then classify", lung.open_s))
            rows.append(
                Row(
                    "lung: GUI longest stall while opening + first classification",
                    lung.open_stall_ms,
                    unit="ms",
                    target=STALL_TARGET_MS,
                )
            )
            where += [(f"lung open: {ms:.0f} ms", at) for ms, at in lung.open_stalls]
        rows.append(
            Row(f"{name}: GUI longest stall during the second run", full.stall_ms, unit="ms", target=STALL_TARGET_MS)
        )
        where += [(f"{name}: {ms:.0f} ms", at) for ms, at in full.stalls]
        latencies = [each.cancel_latency_s for each in cancelled if each.cancel_latency_s is not None]
        if latencies:
            rows.append(
                Row(
                    f"{name}: Cancel to the task's cancelled signal, median of {len(latencies)}",
                    statistics.median(latencies),
                    best=min(latencies),
                )
            )
            rows.append(Row(f"{name}: Cancel to cancelled, worst", max(latencies), target=CANCEL_TARGET_S))
            rows.append(
                Row(
                    f"{name}: GUI longest stall during the cancelled runs",
                    max(e.stall_ms for e in cancelled),
                    unit="ms",
                    target=STALL_TARGET_MS,
                )
            )
            where += [(f"{name} (cancelled runs): {ms:.0f} ms", at) for each in cancelled for ms, at in each.stalls]
            added = sum(each.results_added for each in cancelled if each.cancel_latency_s is not None)
            if name == "skin":  # each photo is its own result: those classified before the Cancel keep theirs
                rows.append(Row(f"{name}: photos classified before the cancels (kept)", added, unit="count"))
            else:
                rows.append(Row(f"{name}: results added by cancelled runs", added, unit="count", target=0))
    report(
        "responsiveness", f"GUI stall and cancel per AI task, real window offscreen, load average before: {load}", rows
    )
    for cancelled_name, parts in measured.items():
        outcomes = ", ".join(
            f"{each.cancel_at_s:.1f} s -> {each.outcome}"
            if each.cancel_at_s is not None
            else f"ended first ({each.outcome})"
            for each in parts["cancelled"]
        )
        print(f"- {cancelled_name} cancels: {outcomes}")
    if where:
        print("\nWhere the GUI stalls over 50 ms were spent (the GUI thread's Python stack, innermost last):")
        for label, at in where:
            print(f"- {label}: {at}")


def report_close(chosen: list[str], measured: dict[str, Any]) -> None:
    """Close the window half-way through each task's run, in a fresh process each; the table and the details."""
    from bench.results import Row, report

    close_rows = []
    details = []
    for name in chosen:
        after = max(1.0, measured[name]["full"].seconds / 2) if name in measured else 2.0
        outcome = close_mid_run(name, after)
        clean = (
            outcome["exit_code"] == 0
            and not outcome.get("non_daemon_threads")
            and outcome.get("pool_active_threads") == 0
            and outcome.get("global_pool_active_threads") == 0
            and not outcome.get("running_tasks")
        )
        close_s = outcome["close_to_exit_s"]
        marks = outcome["marks"]
        close_rows.append(
            Row(
                f"{name}: close {after:.1f} s into the run -> process exit ({'clean' if clean else 'NOT clean'})",
                close_s if close_s is not None else float("nan"),
                target=CLOSE_TARGET_S,
            )
        )
        if "close" in marks:
            close_rows.append(
                Row(f"{name}: closeEvent (cancels, waits up to 3 s)", marks["close_returned"] - marks["close"])
            )
            close_rows.append(
                Row(f"{name}: event loop left to process exit", close_s - (marks["exec_returned"] - marks["close"]))
            )
        details.append(
            f"- {name}: exit code {outcome['exit_code']}, task running at close: "
            f"{bool(marks.get('running_at_close'))}, task cancelled: {outcome.get('task_cancelled')}, "
            f"non-daemon threads left: {outcome.get('non_daemon_threads')}, pool active: "
            f"{outcome.get('pool_active_threads')}, global pool active: {outcome.get('global_pool_active_threads')}, "
            f"running tasks: {outcome.get('running_tasks')}, threads at exit: {outcome.get('all_threads')}, "
            f"stderr problems: {outcome['stderr_problems'] or 'none'}"
        )
    report("responsiveness-close", "Closing the window mid-run, fresh process each (as medview.app.run)", close_rows)
    print("\n" + "\n".join(details))


if __name__ == "__main__":
    sys.exit(main())
