"""Training time of every shipped demo bundle on the machine that trained it, and its size on disk.

Run: ``.venv/bin/python -m bench.training_times`` (reads ``resources/models``), or
``--retrain TASK ...`` to train those tasks' demo bundles again here (``medview-train
TASK --demo`` into a temporary folder; minutes to tens of minutes each) and time them.

Each demo training records its wall time in its manifest (``metrics.training_seconds``,
and the machine in ``trained_on.notes``), so the default run costs nothing and reports
what the shipped bundles took.  Target (issue 20): a full demo training of a task in
well under an hour on a 2-core CPU without a GPU (3600 s as the bound).  The liver
bundle predates the recorded times and shows none.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.results import Row, report
from medview.engine.manifest import load_manifest

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "resources" / "models"
TARGET_S = 3600.0


def bundle_size_mb(folder: Path) -> float:
    """The bundle folder's files, in MB."""
    return sum(path.stat().st_size for path in folder.iterdir() if path.is_file()) / 1e6


def recorded_rows() -> list[Row]:
    """One row per shipped bundle with a recorded training time, and one for its size."""
    rows = []
    for folder in sorted(path for path in MODELS.iterdir() if (path / "manifest.json").is_file()):
        card = load_manifest(folder)
        seconds = card.metrics.get("training_seconds")
        name = f"{card.task} ({folder.name} {card.version})"
        if seconds is not None:
            rows.append(Row(f"{name}: training", float(seconds), "s", target=TARGET_S))
        rows.append(Row(f"{name}: bundle size", bundle_size_mb(folder), "MB"))
    return rows


def retrain(task: str) -> Row:
    """Train ``task``'s demo bundle into a temporary folder and time the whole command."""
    with tempfile.TemporaryDirectory() as scratch:
        command = [
            sys.executable,
            "-m",
            "training.cli",
            task,
            "--demo",
            "--quiet",
            "--bundle-dir",
            str(Path(scratch) / "bundle"),
            "--run-dir",
            str(Path(scratch) / "run"),
        ]
        started = time.perf_counter()
        subprocess.run(command, check=True, cwd=REPO)
        return Row(f"{task}: demo training, here", time.perf_counter() - started, "s", target=TARGET_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--retrain", nargs="+", default=[], metavar="TASK", help="train these demo bundles again")
    args = parser.parse_args(argv)
    rows = recorded_rows() + [retrain(task) for task in args.retrain]
    report("training_times", "Demo training time per task (2-core CPU, no GPU) and bundle size", rows, digits=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
