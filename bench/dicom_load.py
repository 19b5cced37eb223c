"""Series load time of MedView against SimpleITK's ImageSeriesReader, same process, same files.

Run: ``.venv/bin/python -m bench.dicom_load [SERIES_FOLDER]`` (default: COVID-CT-MD
P001 from ../shared/data, 148 JPEG-lossless slices).  Each repeat times:

- MedView: ``scan_paths`` on the folder, then ``load_series`` of the series,
  recording when ``on_slice`` first fires (time to first slice) from the start
  of the load and from the start of the scan;
- MedView again with one decode thread per core, the pool size before the default's
  ``DECODE_THREADS_PER_CORE`` (the setting ``decode_threads`` chooses between them);
- SimpleITK: ``GetGDCMSeriesIDs`` + ``GetGDCMSeriesFileNames`` + ``Execute``
  with its defaults, the reference run (ratio = MedView / SimpleITK).

Both run once first so that the files are in the page cache for every timed
repeat.  The voxels of both are compared once.  Targets: ratio ≤ 0.7, first
slice < 0.3 s after the user opens the folder.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from bench.results import Row, report
from medview.config import usable_cores
from medview.io.dicom import load_series, scan_paths
from medview.io.dicom.decode import default_decode_threads

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SERIES = REPO.parent / "shared" / "data" / "covid_ct" / "COVID-CT-MD" / "COVID-19" / "P001"
REPEATS = 7
TARGET_RATIO = 0.7
TARGET_FIRST_SLICE_S = 0.3


def medview_open(folder: Path, workers: int | None = None) -> tuple[float, float, float, float, np.ndarray]:
    """Scan + load seconds, total, first-slice time from load start and from scan start, and the voxels
    (``workers`` decode threads; None: the app's default)."""
    start = time.perf_counter()
    series = max(scan_paths([folder]).series, key=lambda s: s.slice_count)
    scanned = time.perf_counter()
    first: list[float] = []
    volume = load_series(
        series, on_slice=lambda _volume, _z: first or first.append(time.perf_counter()), workers=workers
    )
    end = time.perf_counter()
    return scanned - start, end - start, first[0] - scanned, first[0] - start, volume.voxels


def sitk_open(folder: Path) -> tuple[float, np.ndarray]:
    """Seconds for SimpleITK to find and read the largest series in ``folder``, and its voxels."""
    start = time.perf_counter()
    reader = sitk.ImageSeriesReader()
    names = max(
        (reader.GetGDCMSeriesFileNames(str(folder), uid) for uid in reader.GetGDCMSeriesIDs(str(folder))), key=len
    )
    reader.SetFileNames(names)
    image = reader.Execute()
    return time.perf_counter() - start, sitk.GetArrayViewFromImage(image).copy()


def main(argv: list[str]) -> int:
    folder = Path(argv[0]) if argv else DEFAULT_SERIES
    if not folder.is_dir():
        print(f"series folder not found: {folder}", file=sys.stderr)
        return 2
    *_, ours = medview_open(folder)
    _, reference = sitk_open(folder)
    # MedView orders feet->head along +z (LPS); GDCM's file sort may run the other way
    same = np.array_equal(ours, reference) or np.array_equal(ours, reference[::-1])

    medview_runs, sitk_runs, per_core_runs = [], [], []
    for _ in range(REPEATS):  # interleaved, so drift in machine load hits both alike
        medview_runs.append(medview_open(folder)[:4])
        sitk_runs.append(sitk_open(folder)[0])
        per_core_runs.append(medview_open(folder, usable_cores())[1])
    scan, total, first_load, first_open = (statistics.median(column) for column in zip(*medview_runs, strict=True))
    reference_s = statistics.median(sitk_runs)
    ratio = total / reference_s
    threads = f"{default_decode_threads()} threads"

    rows = [
        Row("SimpleITK ImageSeriesReader (reference)", reference_s, best=min(sitk_runs), reference=reference_s),
        Row("MedView scan (headers)", scan, best=min(run[0] for run in medview_runs)),
        Row("MedView scan + load", total, best=min(run[1] for run in medview_runs), reference=reference_s),
        Row("ratio MedView / SimpleITK (scan + load)", ratio, "ratio", target=TARGET_RATIO),
        Row(
            f"MedView scan + load, {usable_cores()} decode threads (one per core, the default before {threads})",
            statistics.median(per_core_runs),
            best=min(per_core_runs),
            reference=reference_s,
        ),
        Row("first slice, from load start", first_load),
        Row("first slice, from opening the folder", first_open, target=TARGET_FIRST_SLICE_S),
        Row("voxels identical to SimpleITK (1 yes, 0 no)", float(same), "yes/no", target=1, at_least=True),
    ]
    report(
        "dicom_load",
        f"Series: {folder} ({ours.shape[0]} slices {ours.shape[1]}x{ours.shape[2]}), median of {REPEATS} runs",
        rows,
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
