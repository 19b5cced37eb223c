"""Series load time of MedView against SimpleITK's ImageSeriesReader, same process, same files.

Run: ``.venv/bin/python -m bench.dicom_load [SERIES_FOLDER]`` (default: COVID-CT-MD
P001 from ../shared/data, 148 JPEG-lossless slices).  Each repeat times:

- MedView: ``scan_paths`` on the folder, then ``load_series`` of the series,
  recording when ``on_slice`` first fires (time to first slice) from the start
  of the load and from the start of the scan;
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

from medview.io.dicom import load_series, scan_paths

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SERIES = REPO.parent / "shared" / "data" / "covid_ct" / "COVID-CT-MD" / "COVID-19" / "P001"
REPEATS = 7
TARGET_RATIO = 0.7
TARGET_FIRST_SLICE_S = 0.3


def medview_open(folder: Path) -> tuple[float, float, float, float, np.ndarray]:
    """Scan + load seconds, total, first-slice time from load start and from scan start, and the voxels."""
    start = time.perf_counter()
    series = max(scan_paths([folder]).series, key=lambda s: s.slice_count)
    scanned = time.perf_counter()
    first: list[float] = []
    volume = load_series(series, on_slice=lambda _volume, _z: first or first.append(time.perf_counter()))
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

    medview_runs, sitk_runs = [], []
    for _ in range(REPEATS):  # interleaved, so drift in machine load hits both alike
        medview_runs.append(medview_open(folder)[:4])
        sitk_runs.append(sitk_open(folder)[0])
    scan, total, first_load, first_open = (statistics.median(column) for column in zip(*medview_runs, strict=True))
    reference_s = statistics.median(sitk_runs)
    ratio = total / reference_s

    print(f"Series: {folder} ({ours.shape[0]} slices {ours.shape[1]}x{ours.shape[2]}), median of {REPEATS} runs")
    print(f"{'measure':42s} {'value':>10s} {'target':>10s} {'met':>5s}")
    rows = [
        ("SimpleITK ImageSeriesReader (reference)", f"{reference_s:.3f} s", "", ""),
        ("MedView scan (headers)", f"{scan:.3f} s", "", ""),
        ("MedView scan + load", f"{total:.3f} s", "", ""),
        ("ratio MedView / SimpleITK", f"{ratio:.2f}x", f"<= {TARGET_RATIO}x", "yes" if ratio <= TARGET_RATIO else "NO"),
        ("first slice, from load start", f"{first_load:.3f} s", "", ""),
        (
            "first slice, from opening the folder",
            f"{first_open:.3f} s",
            f"< {TARGET_FIRST_SLICE_S} s",
            "yes" if first_open < TARGET_FIRST_SLICE_S else "NO",
        ),
        ("voxels identical to SimpleITK", "yes" if same else "NO", "yes", "yes" if same else "NO"),
    ]
    for name, value, target, met in rows:
        print(f"{name:42s} {value:>10s} {target:>10s} {met:>5s}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
