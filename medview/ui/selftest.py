"""``medview --self-test``: the real window through a short session, one line per step, exit code 0 or 1.

For hospital IT after an install, and for the offline installer's proof
(installer/verify_offline.sh): the window opens, the bundled sample CT series
loads, the lung sound recording given opens, the AI engine starts from the
installed model folders, and then every installed clinical task runs once
(``TASK_STEPS``): the liver is segmented, kidney stones are looked for and
COVID-19 is classified (with the lung U-Net, when one is installed) on the
sample series through the findings panel, a bundled lesion photo is classified
in the skin workspace and the recording's breathing cycles in the lung sound
workspace; then the window closes.  Every step goes through the window, panels
and worker tasks a user drives; the self-test only starts them and waits for
their signals.

A step fails on an error message the window shows (what a user would see), on
its own check, or when its time limit passes, and the steps after it do not run.
An installed task that cannot start fails too, so "passed" means every installed
model ran: its model cannot be chosen, or its input is missing (the lung sound
model has a recording to classify: a real one given with --self-test-recording or
bundled, else a synthetic breathing test signal the self-test writes, since no real
recording may be bundled (resources/samples/README.md says why); the synthetic
signal checks that the model loads and runs, not what it finds).  Nothing ran then,
so the other steps still run and report.

Python's audit hooks watch the whole process for network use (socket connects
and name lookups, loopback excepted) and block it: MedView must work with no
network at all, so any attempt fails the self-test.  Native code that opens
sockets on its own is not seen here; the installer's proof runs the self-test
with no network interface.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import sys
import tempfile
import time
import wave
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from medview import __version__
from medview.config import resources_dir
from medview.engine.api import InferenceService
from medview.io.audio import AUDIO_SUFFIXES
from medview.io.photo import split_photo_paths
from medview.tasks import ClinicalTask
from medview.ui.qt import QtCore, QtGui, QtWidgets
from medview.ui.workers import Task

SAMPLE_SERIES = Path("samples") / "totalsegmentator_ct" / "dicom"
SAMPLE_RECORDINGS = Path("samples") / ClinicalTask.LUNG_SOUND
SAMPLE_PHOTOS = Path("samples") / "isic_dermoscopy"
#: the step that runs each clinical task's models (``ModelCard.task``), in the order they run; the COVID-19 step
#: takes its lung mask from the lung U-Net bundle, so it runs both
TASK_STEPS: dict[str, tuple[str, ...]] = {
    "liver": (ClinicalTask.LIVER_SEGMENTATION,),
    "kidney": (ClinicalTask.KIDNEY_STONE,),
    "covid": (ClinicalTask.COVID_CT, ClinicalTask.LUNG_SEGMENTATION),
    "skin": (ClinicalTask.SKIN_LESION,),
    "lung-sounds": (ClinicalTask.LUNG_SOUND,),
}
#: generous limits: a first run on a slow workstation imports torch from a cold disk and exports the ONNX graph
STEP_TIMEOUT_S = {
    "window": 60,
    "series": 120,
    "recording": 60,
    "engine": 300,
    "liver": 600,
    "kidney": 300,
    "covid": 600,
    "skin": 300,
    "lung-sounds": 300,
}
SHUTDOWN_WAIT_MS = 15_000
NETWORK_EVENTS = ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr")


class StepFailed(Exception):
    """A self-test step did not do what it should; the message says what happened instead."""


class StepNotRun(StepFailed):
    """A task step could not start (its model cannot be chosen, its input is missing): it fails, but nothing ran,
    the window is as it was, so the next steps still run and say what they can."""


def process_age_s() -> float | None:
    """Seconds since this process started (Linux: from /proc), or None where that cannot be read."""
    try:
        with open("/proc/self/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, clock ticks after boot
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return None


SYNTHETIC_RECORDING = "self-test-synthetic-breathing.wav"


def synthetic_breathing_wav(folder: Path, seconds: float = 20.0, rate: int = 4_000) -> Path:
    """A breathing-like test signal (noise shaped as inspiration, expiration and a pause every 3 s) written as a
    16-bit WAV: what the lung sound step classifies when no real recording is given, since none may be bundled."""
    t = np.arange(round(seconds * rate)) / rate
    phase = (t % 3.0) / 3.0
    inspiration = np.where(phase < 0.4, np.sin(np.pi * phase / 0.4), 0.0)
    expiration = np.where((phase >= 0.4) & (phase < 0.8), 0.5 * np.sin(np.pi * (phase - 0.4) / 0.4), 0.0)
    noise = np.random.default_rng(0).standard_normal(t.size)
    samples = np.clip(0.2 * noise * (0.02 + inspiration + expiration), -1.0, 1.0)
    path = folder / SYNTHETIC_RECORDING
    with wave.open(str(path), "wb") as out:  # the standard library's writer: nothing more is needed for PCM
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((samples * 32767).astype("<i2").tobytes())
    return path


def default_recording(resources: Path | None = None) -> Path | None:
    """The first recording bundled under resources/samples/lung_sound, if any is."""
    folder = (resources or resources_dir()) / SAMPLE_RECORDINGS
    if not folder.is_dir():
        return None
    return next((path for path in sorted(folder.iterdir()) if path.suffix.lower() in AUDIO_SUFFIXES), None)


def sample_photo(resources: Path | None = None) -> Path | None:
    """The first bundled lesion photo (resources/samples/isic_dermoscopy), if there is one."""
    folder = (resources or resources_dir()) / SAMPLE_PHOTOS
    photos, _ = split_photo_paths([folder]) if folder.is_dir() else ([], [])
    return photos[0] if photos else None


def steps_for(tasks: Iterable[str]) -> list[str]:
    """The task steps that run ``tasks`` (each task's models), in ``TASK_STEPS`` order."""
    wanted = set(tasks)
    return [step for step, covered in TASK_STEPS.items() if wanted.intersection(covered)]


def tasks_without_step(tasks: Iterable[str]) -> list[str]:
    """The tasks of ``tasks`` that no self-test step runs: the self-test could not check their models."""
    covered = {task for step_tasks in TASK_STEPS.values() for task in step_tasks}
    return sorted(set(tasks) - covered)


def _is_loopback(host: object) -> bool:
    if host in (None, "", "localhost", b"localhost"):
        return True
    try:
        return ipaddress.ip_address(host.decode() if isinstance(host, bytes) else str(host)).is_loopback
    except ValueError:
        return False


@dataclass
class NetworkWatch:
    """Records and blocks every attempt of this process to reach another machine, through Python's audit hooks.

    The hook runs before the connect or the name lookup and raises, so nothing leaves the machine even where a
    network is up.  An audit hook cannot be removed: install it only in a process that ends with the self-test.
    """

    attempts: list[str] = field(default_factory=list)
    #: off, the hook lets everything through (a test process that watches only part of its run)
    enabled: bool = True

    def install(self) -> NetworkWatch:
        """Watch the whole process for network use from now on (a ``sys`` audit hook)."""
        sys.addaudithook(self._hook)
        return self

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.enabled or event not in NETWORK_EVENTS:
            return
        if event == "socket.connect":
            address = args[1]
            if not isinstance(address, tuple) or _is_loopback(address[0]):  # AF_UNIX paths are local
                return
            attempt = f"connect {address[0]}:{address[1]}"
        elif _is_loopback(args[0]):
            return
        else:
            attempt = f"{event.removeprefix('socket.')} {args[0]!r}"
        self.attempts.append(attempt)
        raise OSError(f"MedView self-test: network use blocked ({attempt})")


class _WindowWatch(QtCore.QObject):
    """Event filter on the main window: its first paint, and every message box it opens."""

    def __init__(self, window: QtWidgets.QMainWindow, on_message: Callable[[str], None]) -> None:
        super().__init__(window)
        self.painted_at: float | None = None  # perf_counter of the first paint
        self.painted_age_s: float | None = None  # the process's age then, where it can be read
        self.on_painted: Callable[[], None] | None = None
        self.on_message = on_message
        window.installEventFilter(self)

    def eventFilter(self, watched: QtCore.QObject, event: QtCore.QEvent) -> bool:
        kind = event.type()
        if kind == QtCore.QEvent.Type.Paint and self.painted_at is None:
            self.painted_at, self.painted_age_s = time.perf_counter(), process_age_s()
            if self.on_painted is not None:
                self.on_painted()
        elif isinstance(event, QtCore.QChildEvent) and kind == QtCore.QEvent.Type.ChildPolished:
            if isinstance(event.child(), QtWidgets.QMessageBox):
                event.child().installEventFilter(self)  # its text is set after it is created: read it when shown
        elif kind == QtCore.QEvent.Type.Show and isinstance(watched, QtWidgets.QMessageBox):
            self.on_message(f"{watched.windowTitle()}: {watched.text()}")
        return False


class SelfTest:
    """Drives ``MainWindow`` through the self-test steps and prints one line per step to ``out``."""

    def __init__(self, out: TextIO | None = None) -> None:
        # pythonw.exe (the Windows launcher) has no stdout: the exit code is all there is to read then
        self.out = out or sys.stdout or open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
        self.started = time.perf_counter()
        self._scratch_folder: tempfile.TemporaryDirectory[str] | None = None  # the synthetic recording, if written
        # first, so that nothing this process does later goes unwatched
        self.network = NetworkWatch().install()
        self._fail_current: Callable[[str], None] | None = None
        self._messages: list[str] = []
        self.not_run: list[str] = []  # the steps that failed without starting anything (``StepNotRun``)

    # ------------------------------------------------------------------ reporting

    def _line(self, step: str, status: str, seconds: float, detail: str) -> None:
        detail = " ".join(detail.split())  # one line per step: a panel's message may span several
        self.out.write(f"self-test {step:<12} {status:<7} {seconds:7.2f} s  {detail}\n")
        self.out.flush()

    def _step(self, step: str, action: Callable[[], str]) -> None:
        """Run one step; its detail line or the reason it failed is printed with its time."""
        began = time.perf_counter()
        try:
            detail = action()
        except StepNotRun as failure:
            self._line(step, "FAILED", time.perf_counter() - began, str(failure))
            self.not_run.append(step)
            return
        except StepFailed as failure:
            self._line(step, "FAILED", time.perf_counter() - began, str(failure))
            raise
        self._line(step, "ok", time.perf_counter() - began, detail)

    # ------------------------------------------------------------------ waiting for the window's signals

    def _on_message(self, message: str) -> None:
        self._messages.append(message)
        if self._fail_current is not None:
            self._fail_current(f"the window showed an error: {message}")

    def _wait(
        self,
        step: str,
        signal: QtCore.SignalInstance,
        start: Callable[[], object] | None = None,
        errored: tuple[QtCore.SignalInstance, ...] = (),
        until: Callable[..., bool] | None = None,
    ) -> tuple[Any, ...]:
        """Call ``start`` and run the event loop until ``signal`` fires (with arguments ``until`` accepts, where
        given); fail on an error signal, an error message of the window, or the step's time limit."""
        loop = QtCore.QEventLoop()
        outcome: dict[str, Any] = {}

        def settle(key: str, value: Any) -> None:
            outcome.setdefault(key, value)
            loop.quit()

        def done(*args: Any) -> None:
            if until is None or until(*args):
                settle("result", args)

        def failed(message: str, *_details: Any) -> None:
            settle("error", message)

        timeout = STEP_TIMEOUT_S[step]
        timer = QtCore.QTimer(singleShot=True)
        timer.timeout.connect(lambda: settle("error", f"no result after {timeout} s"))
        signal.connect(done)
        for error_signal in errored:
            error_signal.connect(failed)
        self._fail_current = lambda message: settle("error", message)
        try:
            if self._messages:
                raise StepFailed(f"the window showed an error: {self._messages[0]}")
            timer.start(timeout * 1000)
            if start is not None:
                start()
            if not outcome:
                loop.exec()
        finally:
            self._fail_current = None
            timer.stop()
            signal.disconnect(done)
            for error_signal in errored:
                # a finished task's signals object may be deleted already (deleteLater ran in the loop above)
                with contextlib.suppress(RuntimeError):
                    error_signal.disconnect(failed)
        if "error" in outcome:
            raise StepFailed(outcome["error"])
        return outcome["result"]

    # ------------------------------------------------------------------ the steps

    def run(self, window: Any, engine_task: Task, recording: Path | None = None, hold_s: float = 0.0) -> int:
        """Run every step on ``window`` (shown, its engine loading through ``engine_task``); the exit code.

        After the engine has started, one step per installed clinical task (``TASK_STEPS``).
        ``hold_s``: keep the session open that long after the models ran, before the network check, so that
        background work that starts late (an uploader on a timer) is watched too."""
        platform = QtWidgets.QApplication.platformName()
        self.out.write(f"MedView {__version__} self-test (Qt platform: {platform})\n")
        recording = recording or default_recording() or synthetic_breathing_wav(self._scratch())
        watch = _WindowWatch(window, self._on_message)
        task_steps: dict[str, Callable[[], str]] = {
            "liver": lambda: self._liver(window),
            "kidney": lambda: self._kidney(window),
            "covid": lambda: self._covid(window),
            "skin": lambda: self._skin(window),
            "lung-sounds": lambda: self._lung_sounds(window, recording),
        }
        try:
            self._step("window", lambda: self._window(window, watch))
            self._step("series", lambda: self._series(window))
            if recording is not None:
                self._step("recording", lambda: self._recording(window, recording))
            self._step("engine", lambda: self._engine(window, engine_task))
            for step in steps_for(card.task for card in window.engine.cards()):
                self._step(step, task_steps[step])
            if hold_s > 0:
                self._step("hold", lambda: self._hold(hold_s))
            self._step("network", self._network)
        except StepFailed:
            self._close(window)
            self.out.write(f"self-test FAILED after {time.perf_counter() - self.started:.1f} s\n")
            return 1
        self._step("close", lambda: self._close(window))
        if self.not_run:
            self.out.write(
                f"self-test FAILED after {time.perf_counter() - self.started:.1f} s "
                f"({', '.join(self.not_run)} could not run)\n"
            )
            return 1
        self.out.write(f"self-test passed in {time.perf_counter() - self.started:.1f} s\n")
        return 0

    def _window(self, window: Any, watch: _WindowWatch) -> str:
        if watch.painted_at is None:
            loop = QtCore.QEventLoop()
            watch.on_painted = loop.quit
            QtCore.QTimer.singleShot(STEP_TIMEOUT_S["window"] * 1000, loop.quit)
            loop.exec()
            watch.on_painted = None
        if watch.painted_at is None:
            raise StepFailed(f"the window was not drawn within {STEP_TIMEOUT_S['window']} s")
        if watch.painted_age_s is not None:
            return f"time to window {watch.painted_age_s:.2f} s from process start"
        return f"time to window {watch.painted_at - self.started:.2f} s from MedView's start (process age unknown)"

    def _series(self, window: Any) -> str:
        series = resources_dir() / SAMPLE_SERIES
        if not series.is_dir():
            raise StepFailed(f"the sample series is missing: {series} (is MEDVIEW_RESOURCES set to the install?)")
        (volume,) = self._wait("series", window.ct.volume_loaded, lambda: window.open_paths([series]))
        z, y, x = volume.shape
        return f"{z} x {y} x {x} voxels from {series}"

    def _recording(self, window: Any, recording: Path) -> str:
        if not recording.is_file():
            raise StepFailed(f"the recording is missing: {recording}")
        (opened,) = self._wait("recording", window.lung.opened, lambda: window.open_paths([recording]))
        sound = opened.recording
        if not opened.cycles:
            raise StepFailed(f"{recording.name}: no breathing cycles ({opened.annotation_note})")
        return (
            f"{recording.name}: {sound.duration_s:.1f} s at {sound.sample_rate} Hz, "
            f"{len(opened.cycles)} cycles ({opened.annotation_note})"
        )

    def _engine(self, window: Any, engine_task: Task) -> str:
        if window.engine is None:
            if window.engine_problem:
                raise StepFailed(f"the AI engine did not start: {window.engine_problem}")
            self._wait("engine", window.engine_ready, errored=(engine_task.signals.errored,))
        engine: InferenceService = window.engine
        cards = engine.cards()
        if not cards:
            raise StepFailed("the AI engine found no model bundles (resources/models and the user's model folder)")
        tasks = sorted({card.task for card in cards})
        unchecked = tasks_without_step(tasks)
        if unchecked:
            raise StepFailed(f"no self-test step runs the models of {', '.join(unchecked)}")
        return f"{len(cards)} models ({', '.join(tasks)}) on {engine.device_name()}"

    def _finding(self, window: Any, step: str, runner: Any, kind: str) -> Any:
        """Run ``runner`` on the sample series from its tab of the findings panel, as the AI menu does; its
        finding (``Finding.kind`` ``kind``)."""
        reason = runner.blocked_reason(runner.model_box.selected_card(), kind)
        if reason:
            raise StepNotRun(reason)
        findings = window.ct.findings
        findings.task_tabs.setCurrentWidget(runner)

        def start() -> None:
            if runner.run() is None:  # its note says why (an empty region of interest, ...)
                raise StepNotRun(runner.note.text() or f"the {kind} model did not start")

        (finding,) = self._wait(step, findings.finding_added, start, until=lambda added: added.kind == kind)
        return finding

    @staticmethod
    def _ran(provenance: Any) -> str:
        return f"on {provenance.device} in {provenance.seconds:.2f} s"

    def _liver(self, window: Any) -> str:
        finding = self._finding(window, "liver", window.ct.findings.liver, "liver")
        result = finding.result
        if result.slice_range is None:
            raise StepFailed(f"{finding.provenance.label} found no liver on the sample series")
        first, last = result.slice_range
        slices = f"slices {first + 1}-{last + 1} of {result.mask.shape[0]}"
        return f"{finding.title}, {slices}; {self._ran(finding.provenance)}"

    def _kidney(self, window: Any) -> str:
        finding = self._finding(window, "kidney", window.ct.findings.kidney, "kidney stone")
        result = finding.result
        if len(result.slice_indices) != window.ct.volume.shape[0] or not finding.heatmaps:
            raise StepFailed(
                f"{finding.provenance.label} classified {len(result.slice_indices)} of {window.ct.volume.shape[0]} "
                f"slices, with Grad-CAM of {len(finding.heatmaps)}"
            )
        return f"{finding.title}; Grad-CAM of {len(finding.heatmaps)} slice(s); {self._ran(finding.provenance)}"

    def _covid(self, window: Any) -> str:
        covid = window.ct.findings.covid
        lung_cards = window.engine.cards(ClinicalTask.LUNG_SEGMENTATION)
        if lung_cards:  # the lung U-Net is installed: it makes the lung mask, so that its model runs too
            covid.lung_box.choose(lung_cards[0])
        finding = self._finding(window, "covid", covid, "COVID-19")
        result = finding.result
        if not result.groups:
            raise StepFailed(f"{finding.provenance.label}: no group of slices was classified ({result.reason})")
        if lung_cards and lung_cards[0].label not in result.lung_mask_source:
            raise StepFailed(f"the lung mask came from {result.lung_mask_source}, not {lung_cards[0].label}")
        return (
            f"{finding.title}; {len(result.kept_slices)} of {result.lung_mask.shape[0]} slices kept, lung mask: "
            f"{result.lung_mask_source}; {self._ran(finding.provenance)}"
        )

    def _skin(self, window: Any) -> str:
        photo = sample_photo()
        if photo is None:
            raise StepNotRun(f"the sample photos are missing: {resources_dir() / SAMPLE_PHOTOS}")
        skin = window.skin
        if skin.selected_card() is None:
            raise StepNotRun(skin.status.text() or "no skin lesion model to choose")

        def entry() -> Any:
            return next((each for each in skin.entries if each.path == photo), None)

        def settled() -> bool:
            found = entry()
            return found is not None and (found.result is not None or bool(found.problem))

        self._wait("skin", skin.results_changed, lambda: window.open_paths([photo]), until=settled)
        lesion = entry()
        if lesion.problem:
            raise StepFailed(f"{photo.name}: {lesion.problem}")
        if lesion.result.saliency is None:  # computed only while the Saliency box is ticked: tick it, as a user does
            ticked = skin.saliency_box.isChecked()
            self._wait(
                "skin",
                skin.results_changed,
                lambda: skin.saliency_box.setChecked(True),
                until=lambda: entry().result.saliency is not None,
            )
            skin.saliency_box.setChecked(ticked)
        result = lesion.result
        demo = " (demo)" if result.provenance.demo else ""
        return (
            f"{photo.name}: {result.label} ({result.positive_class} {lesion.positive_probability:.0%}), "
            f"{'with' if result.saliency is not None else 'no'} saliency map; {result.provenance.label}{demo} "
            f"{self._ran(result.provenance)}"
        )

    def _lung_sounds(self, window: Any, recording: Path) -> str:
        lung = window.lung

        def classify() -> None:
            if lung.classify() is None:  # the panel says why (no model installed, ...)
                reason = QtGui.QTextDocumentFragment.fromHtml(lung.details.text()).toPlainText()
                raise StepNotRun(reason or "the classification could not start")

        if lung.result is None:  # the panel classifies on its own once the engine is ready: wait for that run
            running = lung.task is not None and not lung.task.done.is_set()
            self._wait("lung-sounds", lung.classified, None if running else classify)
        result = lung.result
        counts = Counter(scores.label for scores in result.scores)
        found = ", ".join(f"{label} {count}" for label, count in counts.most_common())
        provenance = result.provenance
        demo = " (demo)" if provenance.demo else ""
        source = (
            "synthetic test signal: checks that the model loads and runs, not what it finds"
            if recording.name == SYNTHETIC_RECORDING
            else recording.name
        )
        return f"{len(result.scores)} cycles ({source}): {found}; {provenance.label}{demo} {self._ran(provenance)}"

    def _hold(self, seconds: float) -> str:
        loop = QtCore.QEventLoop()
        QtCore.QTimer.singleShot(round(seconds * 1000), loop.quit)
        loop.exec()
        return f"session kept open {seconds:g} s"

    def _network(self) -> str:
        if self.network.attempts:
            shown = "; ".join(self.network.attempts[:5])
            raise StepFailed(f"{len(self.network.attempts)} network attempt(s): {shown}")
        # native code is not seen by the audit hook: onnxruntime's telemetry must be off (medview.engine.onnx_runtime)
        if os.environ.get("ORT_DISABLE_TELEMETRY", "").lower() not in ("1", "true"):
            raise StepFailed("onnxruntime telemetry is on: ORT_DISABLE_TELEMETRY is not set to 1")
        return "no connection attempts or name lookups from Python (loopback excepted); onnxruntime telemetry off"

    def _scratch(self) -> Path:
        """A folder of this self-test's own, removed with it."""
        if self._scratch_folder is None:
            self._scratch_folder = tempfile.TemporaryDirectory(prefix="medview-self-test-")
        return Path(self._scratch_folder.name)

    def _close(self, window: Any) -> str:
        window.close()
        if not window.tasks.pool.waitForDone(SHUTDOWN_WAIT_MS):
            raise StepFailed(f"background tasks still running {SHUTDOWN_WAIT_MS // 1000} s after closing")
        return "window closed, every background task finished"
