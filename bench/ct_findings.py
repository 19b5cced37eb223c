"""CT AI targets of issue 5 on the real COVID-CT-MD P001 chest CT (148 slices), CPU.

Run: ``.venv/bin/python -m bench.ct_findings`` (``--skip-gui`` leaves out the window run).
The series is read with the app's own DICOM loader; the shipped demo bundles run
through ``Engine`` as the findings panel calls it.

- liver segmentation of the whole series, target ≤ 30 s on 2 cores; reference
  for the ratio: one batch of 8 slices in the same process, scaled to 148.  The
  forward passes run on ONNX Runtime, whose graph is exported into an empty
  temporary cache folder by the first (8-slice) run, timed on its own row;
  ``--compare-torch`` also times the whole series on eager torch;
- COVID verdict per 50-slice group, target ≤ 0.409 s (the paper's 6-core CPU
  figure): the CNN + biLSTM forward passes (on ONNX Runtime), from the pipeline's
  own progress steps, divided by its groups; the whole pipeline (lung mask by the
  classical method, slice elimination, grouping, vote) and its first run (weights
  read, graph exported) on their own rows;
- Grad-CAM of one kidney slice, target ≤ 0.2 s: the whole one-slice run that
  gives its probability and heatmap (one forward and one backward pass on torch),
  median of 5, as a ratio of the same slice without Grad-CAM (ONNX Runtime);
- a 200-slice series classified for stones, target ≤ 30 s, as a ratio of 200 times
  one slice's time (so the batching's gain shows);
- the GUI thread's longest stall while *Segment liver* runs from the findings
  panel of the real window (offscreen), target < 100 ms.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from bench.gui import StallMeter, offscreen_window, spin_until
from bench.inference import network_gflop
from bench.results import Row, report
from medview.engine.service import Engine
from medview.io.dicom import load_series, scan_paths
from medview.io.volume import Volume

REPO = Path(__file__).resolve().parents[1]
P001 = REPO.parent / "shared" / "data" / "covid_ct" / "COVID-CT-MD" / "COVID-19" / "P001"


def read_series(folder: Path) -> Volume:
    scan = scan_paths([folder])
    return load_series(max(scan.series, key=lambda series: series.slice_count))


def timed(function: object, *args: object, **kwargs: object) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(*args, **kwargs)  # type: ignore[operator]
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-gui", action="store_true", help="leave out the window run")
    parser.add_argument("--compare-torch", action="store_true", help="also time the liver series on eager torch")
    args = parser.parse_args()
    if not P001.is_dir():
        raise SystemExit(f"COVID-CT-MD P001 not found at {P001}")
    volume = read_series(P001)
    onnx_cache = tempfile.mkdtemp(prefix="medview-bench-onnx-")
    try:
        engine = Engine([REPO / "resources" / "models"], onnx_cache=onnx_cache)
        run_all(engine, volume, args)
    finally:
        shutil.rmtree(onnx_cache, ignore_errors=True)


def run_all(engine: Engine, volume: Volume, args: argparse.Namespace) -> None:
    rows: list[Row] = []
    agreement = float("nan")

    liver = engine.cards("liver_segmentation")[0]
    eight = Volume(voxels=volume.voxels[:8], spacing=volume.spacing, modality="CT")
    first_s, _ = timed(engine.segment_liver, liver, eight)  # weights read and checked, ONNX graph exported
    rows.append(Row("liver, first run of 8 slices (+ ONNX export)", first_s))
    batch_s, _ = timed(engine.segment_liver, liver, eight)
    liver_s, result = timed(engine.segment_liver, liver, volume)
    slices = volume.shape[0]
    rows.append(Row(f"liver, whole series ({slices} slices)", liver_s, reference=batch_s * slices / 8, target=30.0))
    rows.append(Row("liver, per slice", liver_s / slices))
    if args.compare_torch:
        eager = Engine(engine.model_folders, onnx_runtime=False)
        eager.segment_liver(liver, eight)  # warm-up: weights read and checked
        torch_s, eager_result = timed(eager.segment_liver, liver, volume)
        agreement = float((eager_result.mask == result.mask).mean())  # type: ignore[attr-defined]
        rows.append(Row("liver, whole series on eager torch", torch_s, reference=liver_s))
        rows.append(Row("liver, per slice on eager torch", torch_s / slices))

    covid = engine.cards("covid_ct")[0]
    first_s, _ = timed(engine.classify_covid, covid, volume)  # weights read and checked, ONNX graph exported
    rows.append(Row("COVID, first run (+ ONNX export)", first_s))
    steps: list[tuple[float, str]] = []
    covid_s, verdict = timed(
        engine.classify_covid,
        covid,
        volume,
        progress=lambda _done, _total, what: steps.append((time.perf_counter(), what)),
    )
    groups = len(verdict.groups)  # type: ignore[attr-defined]
    started = steps[0][0]
    classifying = next(at for at, what in steps if what.startswith("classifying slice group"))
    voting = next(at for at, what in steps if what == "patient vote")
    rows.append(Row(f"COVID, whole pipeline ({groups} groups)", covid_s))
    rows.append(Row("COVID, lung mask, slice selection, preparation", classifying - started))
    rows.append(Row("COVID, per 50-slice group (CNN + biLSTM)", (voting - classifying) / groups, target=0.409))

    kidney = engine.cards("kidney_stone")[0]
    middle = volume.shape[0] // 2
    engine.classify_kidney_slices(kidney, volume, [middle], explain_slices=[middle])  # warm-up
    plain, explained = [], []
    for _ in range(5):
        plain.append(timed(engine.classify_kidney_slices, kidney, volume, [middle])[0])
        explained.append(timed(engine.classify_kidney_slices, kidney, volume, [middle], explain_slices=[middle])[0])
    rows.append(Row("kidney: one slice, no Grad-CAM", statistics.median(plain), best=min(plain)))
    # the whole cost of a heatmap: the explained pass also gives the slice's probability (one forward, one backward
    # on torch, where the plain pass is a forward on ONNX Runtime), so a difference of the two says little
    rows.append(
        Row(
            "kidney: one slice classified with its Grad-CAM",
            statistics.median(explained),
            best=min(explained),
            reference=statistics.median(plain),
            target=0.2,
        )
    )

    # issue 23's whole-series target: 200 slices, the 148 of P001 and the first 52 again (an abdominal series of
    # 200 slices is not in the data; the network's cost does not depend on what the slices show)
    series = Volume(voxels=np.concatenate([volume.voxels, volume.voxels[:52]]), spacing=volume.spacing, modality="CT")
    series_s, _ = timed(engine.classify_kidney_slices, kidney, series, list(range(series.shape[0])))
    rows.append(
        Row(
            f"kidney: whole series classified ({series.shape[0]} slices)",
            series_s,
            reference=statistics.median(plain) * series.shape[0],
            target=30.0,
        )
    )

    kidney_network = engine.networks(kidney)[0]
    rows.append(Row("kidney: the shipped network, per slice", network_gflop(kidney_network, kidney.arch), "GFLOP"))

    if not args.skip_gui:
        rows.append(Row("GUI longest stall, Segment liver", gui_stall_ms(engine, volume), "ms", target=100.0))

    print(f"liver mask of the timed run: {result.volume_ml:,.0f} mL")  # type: ignore[attr-defined]
    print(f"liver run notes: {'; '.join(result.provenance.notes) or 'none'}")  # type: ignore[attr-defined]
    report(
        "ct_findings",
        f"CT findings on COVID-CT-MD P001 {volume.shape}, demo bundles, CPU ({engine.device_name()})",
        rows,
    )
    print("\nratio: liver against 148/8 times one batch of 8 slices run just before in this process;")
    print("kidney Grad-CAM against the same slice classified without it; the kidney series against 200 times that")
    if args.compare_torch:
        print("ratio of the eager torch row: against the whole series on ONNX Runtime")
        print(f"liver masks of ONNX Runtime and eager torch agree on {agreement:.6%} of the voxels")


def gui_stall_ms(engine: Engine, volume: Volume) -> float:
    """The longest stall of the GUI thread while the findings panel segments the liver of ``volume``."""
    with offscreen_window(engine) as window:
        window.ct.show_loaded_volume(volume)  # as a finished load hands it over
        meter = StallMeter()
        meter.start()
        found: list[object] = []
        window.ct.findings.finding_added.connect(found.append)
        window.ct.findings.liver.run()
        spin_until(lambda: bool(found))
        meter.timer.stop()
    return meter.longest_ms


if __name__ == "__main__":
    main()
