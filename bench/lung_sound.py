"""Lung-sound targets of issue 6: analysis time, first analysis from an empty cache, spectrogram zoom.

Run: ``.venv/bin/python -m bench.lung_sound`` (``--repeats N``, ``--cold-runs N``,
``--threads N``, ``--skip-analysis``, ``--skip-cold``, ``--skip-gui``).  Real ICBHI recordings from
../shared/data/lung_sound/icbhi_sample, read with ``medview.io.audio``.

(a) Analysis of a 20 s recording on the CPU, target ≤ 1.5 s: the recording cut
    to its first 20 s with the annotated cycles that end inside them, through
    ``Engine.classify_lung_sound`` end to end, median of ``--repeats`` runs after
    one warm-up run.  The shipped bundle (resources/models/lung-sound-demo) and
    the paper's 8 snapshots (the shipped bundle's 4 files listed twice: the same
    work as 8 different snapshots) are timed, with the parts: the front end
    (resampling + log-mel, ``cycle_inputs``) and the network forward passes
    (``snapshot_probabilities``).  Reference for the ratio: the same bundle cut
    to its first snapshot, end to end, in the same process.
(b) First analysis after install, target ≤ 3 s: a fresh interpreter with every
    cache and settings folder (NUMBA_CACHE_DIR, XDG_*, HOME, TORCH_HOME,
    MEDVIEW_CONFIG_DIR, MEDVIEW_MODELS_DIR) in a new empty folder, from process
    start to the first result of (a)'s recording: interpreter start, engine and
    torch imports, bundle scan, load with checksum verification, classification.
    The child also reports whether ``librosa`` or ``numba`` got imported: the
    front end is numpy + soxr only, and this bench exits with status 1 if either
    was.  Median over ``--cold-runs`` runs, each in its own empty folder.
(c) Spectrogram redraw when zooming, target < 50 ms: the display spectrogram
    (``display_spectrogram``, as the lung panel shows it: row-major ImageItem,
    magma, 80 dB range) of a real 44.1 kHz recording in a pyqtgraph PlotWidget,
    offscreen; each step is ``setXRange`` (zooming in to 1 s around the middle and
    back out) followed by a synchronous repaint of the viewport.  20 s and a
    30-minute recording (the real one tiled).  Reference: the same plot without
    an image.

The machine's load average is printed first: on a shared 2-core machine other
processes' work shows in the medians; "best" is the fastest run.
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
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np

from bench.results import Row, report
from medview.config import resources_dir
from medview.io.audio import Recording, read_icbhi_annotations, read_recording

REPO = Path(__file__).resolve().parents[1]
ICBHI = REPO.parent / "shared" / "data" / "lung_sound" / "icbhi_sample"
#: where the app looks for the bundles shipped with it (``Settings.model_folders``, first entry)
SHIPPED = resources_dir() / "models"
#: (a) and (b): 4 kHz Littmann 3200, 25.6 s cut to 20 s (10 cycles); 44.1 kHz Meditron, 20 s (13 cycles)
RECORDINGS = ("104_1b1_Ar_sc_Litt3200.wav", "102_1b1_Ar_sc_Meditron.wav")
#: (c): the panel's spectrogram of a 44.1 kHz recording (the larger image)
ZOOM_RECORDING = "102_1b1_Ar_sc_Meditron.wav"
SECONDS = 20.0
ANALYSIS_TARGET_S = 1.5
COLD_TARGET_S = 3.0
REDRAW_TARGET_MS = 50.0
FORBIDDEN = ("librosa", "numba")


def timings(run: Callable[[], object], repeats: int) -> list[float]:
    """Seconds of ``repeats`` calls of ``run``, after one untimed call."""
    run()
    result = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        result.append(time.perf_counter() - start)
    return result


def row(
    case: str,
    values: Sequence[float],
    reference: float | None = None,
    target: float | None = None,
    unit: str = "s",
) -> Row:
    """The median and best of ``values`` (seconds unless ``unit`` says otherwise) as a table row."""
    return Row(case, statistics.median(values), unit, min(values), reference, target)


def first_seconds(path: Path, seconds: float = SECONDS) -> tuple[Recording, list[tuple[float, float]]]:
    """The recording cut to its first ``seconds`` and its annotated cycles that end inside them."""
    recording = read_recording(path)
    cut = replace(recording, samples=recording.samples[: round(seconds * recording.sample_rate)])
    cycles = [(c.start_s, c.end_s) for c in read_icbhi_annotations(path.with_suffix(".txt")) if c.end_s <= seconds]
    return cut, cycles


def bundle_variant(bundle: Path, folder: Path, snapshots: int) -> Path:
    """A model folder holding a copy of ``bundle`` whose manifest lists ``snapshots`` weight files
    (the bundle's own, cycled): the same work as an ensemble of that many snapshots."""
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    listed = manifest["weights"]
    out = folder / f"lung-sound-{snapshots}"
    out.mkdir(parents=True)
    weights = []
    for index in range(snapshots):
        entry = dict(listed[index % len(listed)])
        name = f"snapshot-{index + 1}.safetensors"
        shutil.copy(bundle / entry["path"], out / name)
        weights.append({**entry, "path": name, "role": f"snapshot-{index + 1}"})
    (out / "manifest.json").write_text(json.dumps({**manifest, "weights": weights}, indent=2), encoding="utf-8")
    return folder


# --------------------------------------------------------------------------- (a) warm analysis


def analysis(repeats: int) -> list[tuple[str, list[Row]]]:
    """(a): one table per recording."""
    from medview.engine.service import Engine

    shipped = Engine([SHIPPED], device_preference="cpu")
    (card,) = shipped.cards("lung_sound")
    ensembles = {len(card.weights): (shipped, card)}
    with tempfile.TemporaryDirectory() as folder:
        for snapshots in {1, 8} - ensembles.keys():
            variant = bundle_variant(card.bundle_dir, Path(folder) / str(snapshots), snapshots)
            engine = Engine([variant], device_preference="cpu")
            ensembles[snapshots] = (engine, engine.cards("lung_sound")[0])
        for engine, each in ensembles.values():
            engine.networks(each)  # loaded and verified before any timing
        return [analysis_of(ICBHI / name, ensembles, shipped, repeats) for name in RECORDINGS]


def analysis_of(path: Path, ensembles: dict, shipped: object, repeats: int) -> tuple[str, list[Row]]:
    """(a) for one recording: the 1-snapshot reference, the front end, and each ensemble's forward and total."""
    import torch

    from medview.engine.pipelines.lung_sound import cycle_inputs, snapshot_probabilities

    recording, cycles = first_seconds(path)
    inputs, _owner = cycle_inputs(recording, cycles)
    what = (
        f"{path.name} cut to {recording.duration_s:.0f} s ({recording.sample_rate} Hz), "
        f"{len(cycles)} cycles, {len(inputs)} chunks"
    )

    def end_to_end(snapshots: int) -> list[float]:
        engine, card = ensembles[snapshots]
        return timings(lambda: engine.classify_lung_sound(card, recording, cycles), repeats)

    def forward(snapshots: int) -> list[float]:
        engine, card = ensembles[snapshots]
        networks = engine.networks(card)
        return timings(lambda: snapshot_probabilities(networks, inputs, torch.device("cpu")), repeats)

    tag = f"{path.stem.rsplit('_', 1)[-1]} {recording.sample_rate / 1000:g} kHz: "  # the case names' recording
    reference_s = end_to_end(1)
    reference = statistics.median(reference_s)
    rows = [
        row(f"{tag}1 snapshot, end to end (reference)", reference_s, reference=reference),
        row(f"{tag}front end: resample + log-mel", timings(lambda: cycle_inputs(recording, cycles), repeats)),
    ]
    for snapshots in sorted(ensembles):
        if snapshots == 1:
            continue
        label = "shipped bundle" if ensembles[snapshots][0] is shipped else "paper's count"
        rows.append(row(f"{tag}network forward, {snapshots} snapshots", forward(snapshots), reference=reference))
        rows.append(
            row(
                f"{tag}end to end, {snapshots} snapshots ({label})",
                end_to_end(snapshots),
                reference=reference,
                target=ANALYSIS_TARGET_S,
            )
        )
    return what, rows


# --------------------------------------------------------------------------- (b) first analysis, empty cache

CHILD = """
import sys, time, json
from pathlib import Path
from dataclasses import replace
marks = {"imports": time.time()}
from medview.config import Settings
from medview.engine.service import Engine
from medview.io.audio import read_icbhi_annotations, read_recording
marks["engine"] = time.time()
settings = Settings.load()  # as medview.app.start_engine: the shipped bundles, then the (empty) user folder
engine = Engine(settings.model_folders(), device_preference=settings.device)
(card,) = engine.cards("lung_sound")
marks["load"] = time.time()
engine.networks(card)
marks["read"] = time.time()
path = Path(sys.argv[1])
recording = read_recording(path)
seconds = float(sys.argv[2])
recording = replace(recording, samples=recording.samples[: round(seconds * recording.sample_rate)])
cycles = [(c.start_s, c.end_s) for c in read_icbhi_annotations(path.with_suffix(".txt")) if c.end_s <= seconds]
marks["classify"] = time.time()
result = engine.classify_lung_sound(card, recording, cycles)
marks["result"] = time.time()
engine.classify_lung_sound(card, recording, cycles)
marks["warm"] = time.time()
loaded = [name for name in ("librosa", "numba", "sklearn") if name in sys.modules]
print(json.dumps({"marks": marks, "loaded": loaded, "device": engine.device_name(), "snapshots": result.snapshots}))
"""


def cold_run(recording: Path) -> dict:
    """One fresh interpreter with every cache in a new empty folder; wall-clock marks since its start."""
    with tempfile.TemporaryDirectory(prefix="medview-cold-") as empty:
        root = Path(empty)
        env = dict(os.environ)
        for variable, sub in (
            ("HOME", "home"),
            ("XDG_CACHE_HOME", "cache"),
            ("XDG_CONFIG_HOME", "config"),
            ("XDG_DATA_HOME", "data"),
            ("NUMBA_CACHE_DIR", "numba"),
            ("TORCH_HOME", "torch"),
            ("MEDVIEW_CONFIG_DIR", "medview-config"),
            ("MEDVIEW_MODELS_DIR", "medview-models"),
        ):
            (root / sub).mkdir()
            env[variable] = str(root / sub)
        started = time.time()
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(recording), str(SECONDS)],
            env=env,
            cwd=empty,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"cold run failed:\n{done.stderr}")
        report = json.loads(done.stdout.strip().splitlines()[-1])
        report["started"] = started
        return report


def cold_start(runs: int) -> tuple[list[Row], list[str], str]:
    reports = [cold_run(ICBHI / RECORDINGS[0]) for _ in range(runs)]

    def span(start: str, end: str) -> list[float]:
        return [r["marks"][end] - (r["started"] if start == "started" else r["marks"][start]) for r in reports]

    total = span("started", "result")
    classify = span("classify", "result")
    warm = span("result", "warm")
    rows = [
        row("empty caches: process start to first result", total, target=COLD_TARGET_S),
        row("empty caches, part: interpreter start", span("started", "imports")),
        row("empty caches, part: import engine (torch, medview)", span("imports", "engine")),
        row("empty caches, part: bundle scan (manifests)", span("engine", "load")),
        row(f"empty caches, part: load {reports[0]['snapshots']} snapshots, checksums verified", span("load", "read")),
        row("empty caches, part: read the recording", span("read", "classify")),
        row("empty caches, part: first classification call alone", classify, reference=statistics.median(warm)),
        row("empty caches: second classification call (warm, reference)", warm, reference=statistics.median(warm)),
    ]
    loaded = sorted({name for r in reports for name in r["loaded"]})
    return rows, loaded, reports[0]["device"]


# --------------------------------------------------------------------------- (c) spectrogram zoom


def zoom_steps(duration: float) -> list[tuple[float, float]]:
    """X ranges from the whole recording in to 1 s around its middle and back out, 20 steps each way."""
    middle = duration / 2
    spans = np.geomspace(duration, min(1.0, duration), 20)
    inward = [(middle - s / 2, middle + s / 2) for s in spans]
    return inward + inward[::-1]


def zoom_redraws(seconds_of_audio: Sequence[float], sweeps: int = 3) -> tuple[list[Row], str]:
    from medview.preprocess.audio import display_spectrogram
    from medview.ui.qt import QtCore, QtWidgets, pg

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    source = read_recording(ICBHI / ZOOM_RECORDING)
    widget = pg.PlotWidget()
    widget.resize(1400, 500)
    widget.show()
    plot = widget.getPlotItem()
    plot.setMouseEnabled(x=True, y=False)
    image = pg.ImageItem(axisOrder="row-major")
    image.setLookupTable(pg.colormap.get("magma").getLookupTable(nPts=256))
    plot.addItem(image)
    viewport = widget.viewport()

    def time_zoom(duration: float) -> list[float]:
        plot.setXRange(0, duration, padding=0)
        app.processEvents()
        result = []
        for sweep in range(sweeps + 1):  # the first sweep warms up
            for low, high in zoom_steps(duration):
                start = time.perf_counter()
                plot.setXRange(low, high, padding=0)
                viewport.repaint()
                if sweep:
                    result.append((time.perf_counter() - start) * 1000)
        return result

    image.hide()
    reference_ms = time_zoom(SECONDS)
    reference = statistics.median(reference_ms)
    rows = [row("zoom: plot without an image (reference)", reference_ms, reference=reference, unit="ms")]
    image.show()
    for seconds in seconds_of_audio:
        repeats = int(np.ceil(seconds * source.sample_rate / source.samples.size))
        samples = np.tile(source.samples, repeats)[: round(seconds * source.sample_rate)]
        length = f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"
        for mel in (True, False):
            spectrogram = display_spectrogram(samples, source.sample_rate, mel=mel)
            bins, frames = spectrogram.db.shape
            image.setImage(spectrogram.db, levels=(-80.0, 0.0))
            image.setRect(QtCore.QRectF(0, 0, samples.size / source.sample_rate, bins))
            plot.setYRange(0, bins, padding=0)
            case = f"zoom: {length}, {'log-mel' if mel else 'linear'} {bins}x{frames}"
            redraws = time_zoom(samples.size / source.sample_rate)
            rows.append(row(case, redraws, reference=reference, target=REDRAW_TARGET_MS, unit="ms"))
    widget.close()
    what = (
        f"{ZOOM_RECORDING} ({source.sample_rate} Hz), PlotWidget 1400x500 offscreen, "
        f"{sweeps} sweeps x {len(zoom_steps(1.0))} zoom steps (whole recording <-> 1 s)"
    )
    return rows, what


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case of (a)")
    parser.add_argument("--cold-runs", type=int, default=3, help="fresh processes for (b)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for (a) (default: torch's)")
    parser.add_argument("--skip-analysis", action="store_true")
    parser.add_argument("--skip-cold", action="store_true")
    parser.add_argument("--skip-gui", action="store_true")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(
        f"Lung sound, CPU ({os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads), "
        f"load average before: {load}"
    )

    if not args.skip_analysis:
        for what, rows in analysis(args.repeats):
            report("lung_sound", f"(a) Analysis, {what}; median of {args.repeats} after a warm-up", rows)

    status = 0
    if not args.skip_cold:
        rows, loaded, device = cold_start(args.cold_runs)
        forbidden = [name for name in loaded if name in FORBIDDEN]
        rows.append(Row("empty caches: librosa or numba imported by the child", len(forbidden), "modules", target=0))
        report(
            "lung_sound",
            f"(b) First analysis from empty caches, fresh process, {RECORDINGS[0]} cut to 20 s, shipped bundle, "
            f"{device}; median of {args.cold_runs} processes",
            rows,
            digits=2,
        )
        print(f"\nmodules imported by the child: {', '.join(loaded) or 'none'} of librosa, numba, sklearn")
        print(f"librosa or numba imported: {'YES: ' + ', '.join(forbidden) if forbidden else 'no'}")
        if forbidden:
            status = 1

    if not args.skip_gui:
        rows, what = zoom_redraws([SECONDS, 30 * 60.0])
        report("lung_sound", f"(c) Spectrogram redraw per zoom step, {what}", rows, digits=1)
    return status


if __name__ == "__main__":
    sys.exit(main())
