"""Send throughput to a real PACS: MedView's C-STORE and STOW-RS beside dcmtk's storescu, same run, same files.

Run: ``.venv/bin/python -m bench.pacs_send [--repeats N] [SERIES_FOLDER]`` (default: COVID-CT-MD P001 from
../shared/data, 148 JPEG-lossless slices; needs Debian's orthanc and dcmtk, which
``installer/bootstrap.sh test`` installs).

Orthanc runs on loopback (``bench.orthanc``).  Each repeat sends the whole
series three ways, the study deleted from Orthanc before each send so that
every one stores afresh:

- dcmtk's ``storescu``, the reference, proposing the files' own transfer syntax (``-xs``: JPEG lossless);
- MedView's C-STORE SCU (``medview.pacs.send.send_files``, one association);
- MedView's STOW-RS (``medview.pacs.dicomweb.store_files``, 20 files per request).

Each row is instances per second (median and best of the repeats); its ratio is
to storescu's median (above 1: faster).  No target is set: the issue asks for
the figures beside storescu's.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.orthanc import LOCALHOST, ORTHANC, PACS_TITLE, RunningOrthanc, free_port, start_orthanc
from bench.results import Row, report
from medview.pacs.dicomweb import WebNode, store_files
from medview.pacs.send import send_files

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SERIES = REPO.parent / "shared" / "data" / "covid_ct" / "COVID-CT-MD" / "COVID-19" / "P001"
STORESCU = shutil.which("storescu") or "/usr/bin/storescu"
REPEATS = 5


def _empty(orthanc: RunningOrthanc) -> None:
    """Delete every study in Orthanc, so that the next send stores afresh."""
    import urllib.request

    for study in orthanc.rest("/studies"):
        request = urllib.request.Request(f"http://{LOCALHOST}:{orthanc.http_port}/studies/{study}", method="DELETE")
        urllib.request.urlopen(request, timeout=60).close()


def _storescu(orthanc: RunningOrthanc, files: list[Path]) -> None:
    command = [STORESCU, "-aet", "STORESCU", "-aec", PACS_TITLE, "-xs", LOCALHOST, str(orthanc.dicom_port)]
    result = subprocess.run(command + [str(path) for path in files], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"storescu failed: {result.stdout}{result.stderr}")


def _medview_c_store(orthanc: RunningOrthanc, files: list[Path]) -> None:
    outcomes = send_files(orthanc.node, "MEDVIEW", files)
    if not all(outcome.stored for outcome in outcomes):
        raise RuntimeError(f"C-STORE: {[o.message for o in outcomes if not o.stored][:3]}")


def _medview_stow(orthanc: RunningOrthanc, files: list[Path]) -> None:
    outcomes = store_files(WebNode(f"http://{LOCALHOST}:{orthanc.http_port}/dicom-web"), files)
    if not all(outcome.stored for outcome in outcomes):
        raise RuntimeError(f"STOW-RS: {[o.message for o in outcomes if not o.stored][:3]}")


def _rate(orthanc: RunningOrthanc, send: Callable[[RunningOrthanc, list[Path]], None], files: list[Path]) -> float:
    _empty(orthanc)
    start = time.perf_counter()
    send(orthanc, files)
    seconds = time.perf_counter() - start
    if int(orthanc.rest("/statistics")["CountInstances"]) != len(files):
        raise RuntimeError("the PACS does not hold every instance sent")
    return len(files) / seconds


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("series", nargs="?", type=Path, default=DEFAULT_SERIES)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    args = parser.parse_args(argv)
    files = sorted(path for path in args.series.iterdir() if path.is_file())
    if not Path(STORESCU).is_file() or not Path(ORTHANC).is_file():
        # a report, not a failure: bench.summary lists the benchmark without rows
        print("not run: needs dcmtk's storescu and Orthanc (installer/bootstrap.sh test installs both)")
        return 0
    with tempfile.TemporaryDirectory(prefix="medview-bench-orthanc-") as folder:
        orthanc = start_orthanc(Path(folder), "MEDVIEW", free_port())
        try:
            ways: dict[str, Callable[[RunningOrthanc, list[Path]], None]] = {
                "storescu (dcmtk), C-STORE": _storescu,
                "MedView C-STORE": _medview_c_store,
                "MedView STOW-RS": _medview_stow,
            }
            for send in ways.values():  # once each first: files in the page cache, connections warm
                _rate(orthanc, send, files)
            rates: dict[str, list[float]] = {name: [] for name in ways}
            for _ in range(args.repeats):
                for name, send in ways.items():
                    rates[name].append(_rate(orthanc, send, files))
        finally:
            orthanc.stop()
    reference = statistics.median(rates["storescu (dcmtk), C-STORE"])
    rows = [
        Row(f"{name}, {len(files)} instances", statistics.median(values), "inst/s", max(values), reference)
        for name, values in rates.items()
    ]
    report("pacs_send", f"Send throughput to Orthanc on loopback, {args.series.name} ({args.repeats} repeats)", rows, 1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
