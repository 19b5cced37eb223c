"""Time per slice change in the axial view, with and without a mask overlay.

Run: ``.venv/bin/python -m bench.slice_change``.  Each change is ``set_index``
followed by a synchronous repaint of the view, so the figure includes turning
the slice and the overlay into pixels, not just queuing an update.  The
no-overlay run in the same process is the reference for the ratio.
Target: ≤ 16 ms per change with the mask (one frame at 60 Hz).
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np

from bench.results import Row, report
from medview.io.dicom import load_dicom
from medview.io.volume_files import read_label_map
from medview.ui.ct.layers import LabelLayer, LayerStack
from medview.ui.ct.slice_view import SliceView
from medview.ui.qt import QtWidgets

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "resources" / "samples" / "totalsegmentator_ct"
TARGET_MS = 16.0
SWEEPS = 5


def time_changes(view: SliceView, count: int) -> list[float]:
    """Milliseconds per slice change over ``SWEEPS`` sweeps through the volume."""
    timings = []
    viewport = view.graphics.viewport()
    for _ in range(SWEEPS):
        for index in range(count):
            start = time.perf_counter()
            view.set_index(index)
            viewport.repaint()
            timings.append((time.perf_counter() - start) * 1000)
    return timings


def main() -> None:
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    volume = load_dicom([SAMPLE / "dicom"])
    mask = read_label_map(SAMPLE / "liver_mask.nii.gz", volume)
    layers = LayerStack()
    view = SliceView("axial", layers)
    view.resize(900, 900)
    view.show()
    view.set_volume(volume)
    app.processEvents()
    count = volume.shape[0]
    time_changes(view, count)  # warm-up: first paints allocate buffers

    reference = time_changes(view, count)
    timings = {"no overlay (reference)": reference}
    layer = LabelLayer(name="liver", labels=mask.labels)
    layers.add(layer)
    timings["liver mask overlay"] = time_changes(view, count)
    layers.update(layer, outline_only=True)
    timings["liver mask, outline only"] = time_changes(view, count)

    reference_median = statistics.median(reference)
    rows = []
    for name, each in timings.items():
        median = statistics.median(each)
        rows.append(Row(name, median, "ms", best=min(each), reference=reference_median, target=TARGET_MS))
        rows.append(Row(f"{name}, 95th percentile", float(np.percentile(each, 95)), "ms"))
    report(
        "slice_change",
        f"Slice change, axial 512x512, {count} slices x {SWEEPS} sweeps, view 900x900 offscreen",
        rows,
        digits=2,
    )
    view.close()


if __name__ == "__main__":
    main()
