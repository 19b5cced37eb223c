"""Start-up: from launching ``medview --sample`` to the window on screen and to the sample's first slice.

Run: ``.venv/bin/python -m bench.startup [--repeats N]``.

Each launch is a fresh process (``python -m bench.startup --child``) that does
what the ``medview`` command does (``medview.app.run(["--sample"])``) while a
5 ms timer in its event loop notes, in wall-clock time, when the main window is
first visible with the event loop running (its first paint follows in the same
pass) and when the axial view first holds the sample series; the times are
taken from the moment this process launched it, interpreter start-up included,
as a user clicking the icon waits for it.  The first launch warms the page
cache and is reported on its own; the median is over the warm ones.  Without a
display the window is drawn offscreen.  Targets (issue 23): window <= 1.0 s,
first slice <= 1.5 s, warm.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.results import Row, report

REPO = Path(__file__).resolve().parents[1]
TARGET_WINDOW_S = 1.0
TARGET_FIRST_SLICE_S = 1.5
CHILD_TIMEOUT_S = 120
POLL_MS = 5


def child(marks_file: Path) -> None:
    """Launch the app on its sample and write when the window and the first slice showed; exit at once then."""
    from medview.ui.qt import QtCore, QtWidgets

    # the app reuses this application object: created here only so that the timer below can exist before run()
    app = QtWidgets.QApplication([sys.argv[0]])
    marks: dict[str, float] = {}

    def poll() -> None:
        window = next((w for w in app.topLevelWidgets() if type(w).__name__ == "MainWindow" and w.isVisible()), None)
        if window is None:
            return
        marks.setdefault("window", time.time())
        if window.ct.mpr.axial.volume is not None:  # type: ignore[attr-defined]
            marks["first_slice"] = time.time()
            marks_file.write_text(json.dumps(marks))
            os._exit(0)  # the engine still loading on its worker would hold the exit for seconds

    timer = QtCore.QTimer()
    timer.setInterval(POLL_MS)
    timer.timeout.connect(poll)
    timer.start()
    from medview.app import run

    run(["--sample"])


def launch(marks_file: Path) -> dict[str, float]:
    """One launch: seconds from starting the process to the window and to the first slice."""
    environment = dict(os.environ)
    if not environment.get("DISPLAY") and not environment.get("WAYLAND_DISPLAY"):
        environment.setdefault("QT_QPA_PLATFORM", "offscreen")
    marks_file.unlink(missing_ok=True)
    started = time.time()
    subprocess.run(
        [sys.executable, "-m", "bench.startup", "--child", str(marks_file)],
        cwd=REPO,
        env=environment,
        timeout=CHILD_TIMEOUT_S,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    marks = json.loads(marks_file.read_text())
    return {name: moment - started for name, moment in marks.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="warm launches timed")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return 1  # not reached unless the window never showed the sample
    with tempfile.TemporaryDirectory() as folder:
        marks_file = Path(folder) / "marks.json"
        first = launch(marks_file)
        warm = [launch(marks_file) for _ in range(args.repeats)]
    rows = [
        Row("first launch of this run: window visible", first["window"]),
        Row("first launch of this run: first slice of the sample", first["first_slice"]),
    ]
    for key, label, target in (
        ("window", "window visible after launch, warm", TARGET_WINDOW_S),
        ("first_slice", "first slice of the sample after launch, warm", TARGET_FIRST_SLICE_S),
    ):
        values = [times[key] for times in warm]
        rows.append(Row(label, statistics.median(values), best=min(values), target=target))
    report("startup", f"Start-up of medview --sample, {args.repeats} warm launches (median)", rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
