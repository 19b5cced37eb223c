"""Scale targets of the hardening issue: a 1,000-slice series, a 30-minute recording, a folder of 500 photos.

Run: ``.venv/bin/python -m bench.scale`` (``--slices N``, ``--minutes M``, ``--photos N``,
``--skip-series``, ``--skip-recording``, ``--skip-photos``).  Every input is built from
the real samples of ../shared/data into a temporary folder (never written into
../shared/data), and every measurement runs in a child process of its own, so
its resident memory is that of MedView alone.

(1) Series: the 148 JPEG-lossless slices of COVID-CT-MD P001 copied (pydicom,
    pixel data untouched) to ``--slices`` files of one consistent series: new
    Series and SOP Instance UIDs, InstanceNumber, ImagePositionPatient and
    SliceLocation continuing the original 2 mm steps.  In the child: the real
    window (offscreen) opens the folder (``open_paths`` until ``volume_loaded``),
    scrolls the axial view through every slice (``set_index``, pending events,
    synchronous repaint), then segments the liver from the findings panel with
    the shipped bundle (its ONNX graph exported beforehand by another process,
    as in a second session).  Peak RSS (``ru_maxrss``, and the kernel's
    ``VmHWM`` of the child's own address space) against 2 GB, with the current
    RSS and the large arrays after each stage.
(2) Recording: a real ICBHI recording tiled to ``--minutes`` and written as a
    16-bit WAV (no annotation file: its cycles are found automatically and
    classified, as for any long recording).  The child opens it in the lung
    tab, plays it through ALSA's null device (``ALSA_CONFIG_PATH``, as the
    tests' ``audio_output`` fixture does) and checks that the playhead advances;
    open time, classification time, peak RSS, the GUI thread's longest stall.
(3) Photos: ``--photos`` real ISIC photos (the 350 of the sample, then again
    under new names) in one folder, dropped on the window by real drag-and-drop
    events: time until all are listed, all read (thumbnails), all classified,
    and the GUI thread's longest stall in each phase.

Targets: peak RSS ≤ 2048 MB for (1); GUI stall < 100 ms; the recording's
playhead advances; the photos are listed without blocking (stall < 100 ms).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
P001 = SHARED / "covid_ct" / "COVID-CT-MD" / "COVID-19" / "P001"
ICBHI_RECORDING = SHARED / "lung_sound" / "icbhi_sample" / "102_1b1_Ar_sc_Meditron.wav"
ISIC = SHARED / "skin" / "isic_uda1_250px"
MODELS = REPO / "resources" / "models"
RSS_TARGET_MB = 2048.0
STALL_TARGET_MS = 100.0
RESULT_PREFIX = "SCALE-RESULT "
MB = 1024 * 1024


# --------------------------------------------------------------------------- memory


def memory_mb() -> dict[str, float]:
    """Current and peak resident memory of this process, in MB.

    ``ru_maxrss`` is what the issue asks for; ``VmHWM`` is the peak of this
    process's own address space (``ru_maxrss`` can also carry the parent's
    resident size at the time of the fork, which stays far below these figures).
    """
    status = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            status[key] = int(value.split()[0]) / 1024
    return {
        "rss": status["VmRSS"],
        "hwm": status["VmHWM"],
        "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


# --------------------------------------------------------------------------- building the inputs


def build_series(source: Path, destination: Path, count: int) -> Path:
    """``count`` DICOM files in ``destination``: the slices of ``source`` repeated as one consistent series.

    The pixel data and every other attribute are the real files'; what makes it
    one series is rewritten: Series and SOP Instance UIDs, InstanceNumber,
    ImagePositionPatient and SliceLocation (the source's own slice step, on).
    """
    import pydicom
    from pydicom.uid import generate_uid

    files = sorted(
        source.glob("*.dcm"), key=lambda path: int(pydicom.dcmread(path, stop_before_pixels=True).InstanceNumber)
    )
    first, second = (pydicom.dcmread(path, stop_before_pixels=True) for path in files[:2])
    origin = [float(value) for value in first.ImagePositionPatient]
    step = [float(b) - float(a) for a, b in zip(first.ImagePositionPatient, second.ImagePositionPatient, strict=True)]
    series_uid = generate_uid(entropy_srcs=[str(first.SeriesInstanceUID), "medview-bench-scale", str(count)])
    destination.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        dataset = pydicom.dcmread(files[index % len(files)])
        position = [origin[axis] + step[axis] * index for axis in range(3)]
        sop_uid = generate_uid(entropy_srcs=[series_uid, str(index)])
        dataset.SeriesInstanceUID = series_uid
        dataset.SeriesDescription = f"{dataset.get('SeriesDescription', '')} (synthetic {count} slices)".strip()
        dataset.SOPInstanceUID = sop_uid
        dataset.file_meta.MediaStorageSOPInstanceUID = sop_uid
        dataset.InstanceNumber = index + 1
        dataset.ImagePositionPatient = [f"{value:.4f}" for value in position]
        dataset.SliceLocation = f"{position[2]:.4f}"
        dataset.save_as(destination / f"slice_{index:04d}.dcm")
    return destination


def build_recording(source: Path, destination: Path, minutes: float) -> Path:
    """``source`` tiled to ``minutes`` and written as a 16-bit WAV (at its own rate, mono)."""
    import numpy as np
    import soundfile

    samples, rate = soundfile.read(source, dtype="int16", always_2d=True)
    mono = samples[:, 0]
    total = round(minutes * 60 * rate)
    with wave.open(str(destination), "wb") as out:  # written in chunks: the whole int16 tile is never held twice
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        written = 0
        while written < total:
            chunk = mono[: total - written]
            out.writeframes(np.ascontiguousarray(chunk).tobytes())
            written += chunk.size
    return destination


def build_photo_folder(source: Path, destination: Path, count: int) -> Path:
    """``count`` real photos from ``source`` in ``destination``; past the source's own, again under new names."""
    photos = sorted(source.glob("*.jpg"))
    destination.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        photo = photos[index % len(photos)]
        name = photo.name if index < len(photos) else f"{photo.stem}_copy{index // len(photos)}{photo.suffix}"
        shutil.copy(photo, destination / name)
    return destination


# --------------------------------------------------------------------------- children (one process each)


def _report(result: dict[str, Any]) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def child_warm(cache: Path) -> None:
    """Export the liver bundle's ONNX graph into ``cache`` (what the first run of a first session does)."""
    from bench.ct_findings import read_series
    from medview.engine.service import Engine
    from medview.io.volume import Volume

    engine = Engine([MODELS], onnx_cache=cache)
    card = engine.cards("liver_segmentation")[0]
    volume = read_series(P001)
    engine.segment_liver(card, Volume(voxels=volume.voxels[:8], spacing=volume.spacing, modality="CT"))
    _report({"warmed": card.label})


def child_series(folder: Path, cache: Path) -> None:
    """(1) Open, scroll and segment the series in ``folder`` in the real window; memory at each stage."""
    marks: dict[str, dict[str, float]] = {"start": memory_mb()}
    from bench.gui import offscreen_window, spin_until
    from bench.responsiveness import StallWatch
    from medview.engine.service import Engine
    from medview.ui.qt import QtWidgets

    engine = Engine([MODELS], onnx_cache=cache)
    card = engine.cards("liver_segmentation")[0]
    engine.networks(card)  # weights read and verified, as after the engine's first use
    marks["engine loaded"] = memory_mb()
    result: dict[str, Any] = {"model": card.label}
    with offscreen_window(engine) as window:
        app = QtWidgets.QApplication.instance()
        marks["window shown"] = memory_mb()

        loaded: list[Any] = []
        window.ct.volume_loaded.connect(loaded.append)
        meter = StallWatch()
        meter.start()
        start = time.perf_counter()
        window.open_paths([folder])
        spin_until(lambda: bool(loaded), timeout_s=3600)
        result["open_s"] = time.perf_counter() - start
        meter.stop()
        result["open_stall_ms"] = meter.longest_ms
        result["stalls"] = [(f"open {ms:.0f} ms", at) for ms, at in meter.worst()]
        volume = loaded[0]
        result["shape"] = list(volume.shape)
        result["dtype"] = str(volume.voxels.dtype)
        marks["opened"] = memory_mb()

        axial = window.ct.mpr.axial
        viewport = axial.graphics.viewport()
        steps = []
        start = time.perf_counter()
        for index in range(volume.shape[0]):
            began = time.perf_counter()
            axial.set_index(index)
            app.processEvents()  # what the slice change queued (the other planes' crosshair, read-outs)
            viewport.repaint()
            steps.append((time.perf_counter() - began) * 1000)
        result["scroll_s"] = time.perf_counter() - start
        result["scroll_step_ms"] = {"median": statistics.median(steps), "max": max(steps)}
        marks["scrolled"] = memory_mb()

        found: list[Any] = []
        window.ct.findings.finding_added.connect(found.append)
        meter = StallWatch()
        meter.start()
        start = time.perf_counter()
        window.ct.findings.liver.run()
        spin_until(lambda: bool(found), timeout_s=3600)
        result["segment_s"] = time.perf_counter() - start
        meter.stop()
        result["segment_stall_ms"] = meter.longest_ms
        result["stalls"] += [(f"segment {ms:.0f} ms", at) for ms, at in meter.worst()]
        spin_until(lambda: window.ct.findings.liver.task is None or window.ct.findings.liver.task.done.is_set())
        app.processEvents()
        marks["segmented"] = memory_mb()
        gc.collect()
        marks["segmented, after gc"] = memory_mb()

        finding = found[0]
        arrays = {
            "CT volume (voxels)": volume.voxels,
            "probability map (result.probability)": finding.result.probability,
            "mask (result.mask)": finding.result.mask,
            "mask layer (labels)": finding.mask_layer.labels,
            "heatmap layer (values)": finding.heatmap_layer.values,
        }
        seen: dict[int, str] = {}
        breakdown = {}
        for name, array in arrays.items():
            owner = array if array.base is None else array.base
            shared = seen.get(id(owner))
            breakdown[name] = {
                "MB": array.nbytes / MB,
                "dtype": str(array.dtype),
                "shares memory with": shared or "",
            }
            seen.setdefault(id(owner), name)
        result["arrays"] = breakdown
        running = [
            obj
            for obj in gc.get_objects()
            if type(obj).__name__ == "LabelLayer" and getattr(obj, "name", "").startswith("Liver (running")
        ]
        result["running_layers_left"] = [len(running), sum(layer.labels.nbytes for layer in running) / MB]
        result["liver_ml"] = finding.result.volume_ml
    marks["window closed"] = memory_mb()
    result["marks"] = marks
    _report(result)


def child_recording(path: Path, alsa_folder: Path) -> None:
    """(2) Open the recording in the lung tab, let it be classified, play it through the null device."""
    config = alsa_folder / "asound.conf"
    config.write_text("</usr/share/alsa/alsa.conf>\npcm.!default { type null }\n", encoding="utf-8")
    os.environ["ALSA_CONFIG_PATH"] = str(config)  # before PortAudio starts (sounddevice's import)
    marks: dict[str, dict[str, float]] = {"start": memory_mb()}
    from bench.gui import offscreen_window, spin_until
    from bench.responsiveness import StallWatch
    from medview.engine.service import Engine

    engine = Engine([MODELS])
    card = engine.cards("lung_sound")[0]
    engine.networks(card)
    marks["engine loaded"] = memory_mb()
    result: dict[str, Any] = {"model": card.label}
    with offscreen_window(engine) as window:
        lung = window.lung
        opened: list[Any] = []
        classified: list[Any] = []
        lung.opened.connect(opened.append)
        lung.classified.connect(classified.append)
        meter = StallWatch()
        meter.start()
        start = time.perf_counter()
        window.open_paths([path])
        spin_until(lambda: bool(opened), timeout_s=1800)
        result["open_s"] = time.perf_counter() - start
        result["open_stall_ms"] = meter.longest_ms
        marks["opened"] = memory_mb()
        recording = opened[0].recording
        result["duration_s"] = recording.duration_s
        result["sample_rate"] = recording.sample_rate
        result["cycles"] = len(opened[0].cycles)
        result["annotation_note"] = opened[0].annotation_note

        # play while the cycles are being classified, as a user would
        positions: list[float] = []
        lung.playhead.sigPositionChanged.connect(lambda line: positions.append(float(line.value())))
        lung.play()
        result["playback_note"] = lung.playback_note.text() if not lung.playback_note.isHidden() else ""
        play_start = time.perf_counter()
        heard_from = lung.player.position_s() if lung.player is not None else None
        spin_until(lambda: time.perf_counter() - play_start > 5.0, timeout_s=600)
        result["played_wall_s"] = time.perf_counter() - play_start
        heard_to = lung.player.position_s() if lung.player is not None else None
        result["player_s"] = {"first": heard_from, "last": heard_to}  # the stream's own position
        result["playhead_s"] = {
            "first": positions[0] if positions else None,
            "last": positions[-1] if positions else None,
        }
        result["playhead_updates"] = len(positions)
        result["playhead_advanced"] = len(positions) > 1 and positions[-1] > positions[0]
        lung.pause()

        if lung.cycles:
            spin_until(lambda: bool(classified), timeout_s=3600)
            result["classify_s"] = time.perf_counter() - start - result["open_s"]
        meter.stop()
        result["stall_ms"] = meter.longest_ms
        result["stalls"] = [(f"{ms:.0f} ms", at) for ms, at in meter.worst()]
        marks["classified"] = memory_mb()
        arrays = {
            "samples (float32)": recording.samples,
            "waveform summary samples": opened[0].waveform.samples,
            "log-mel display spectrogram": opened[0].spectrograms[True].db,
            "linear display spectrogram": opened[0].spectrograms[False].db,
        }
        if lung.player is not None:
            arrays["player samples"] = lung.player.samples
        result["arrays"] = {
            name: {
                "MB": array.nbytes / MB,
                "shares memory with samples": bool(array.base is recording.samples or array is recording.samples),
            }
            for name, array in arrays.items()
        }
    marks["window closed"] = memory_mb()
    result["marks"] = marks
    _report(result)


def child_photos(folder: Path, count: int) -> None:
    """(3) Drop the folder on the window: listed, read, classified; the GUI stall of each phase."""
    marks: dict[str, dict[str, float]] = {"start": memory_mb()}
    from bench.gui import offscreen_window, spin_until
    from bench.responsiveness import StallWatch
    from bench.skin_drop import drop
    from medview.engine.service import Engine

    engine = Engine([MODELS])
    card = engine.cards("skin_lesion")[0]
    engine.networks(card)
    marks["engine loaded"] = memory_mb()
    result: dict[str, Any] = {"model": card.label}
    with offscreen_window(engine) as window:
        skin = window.skin
        phases: dict[str, float] = {}
        stalls: dict[str, float] = {}
        meter = StallWatch()
        meter.start()
        start = time.perf_counter()
        drop(window, [folder])  # returns once the drop event was handled: the listing is synchronous
        phases["listed"] = time.perf_counter() - start
        result["listed_count"] = skin.gallery.count()
        spin_until(lambda: skin.gallery.count() >= count, timeout_s=600)
        stalls["listed"] = meter.longest_ms
        phases["listed (event loop back)"] = time.perf_counter() - start
        where = [(f"listing {ms:.0f} ms", at) for ms, at in meter.worst()]

        meter.reset()
        spin_until(lambda: all(entry.photo is not None or entry.problem for entry in skin.entries), timeout_s=3600)
        phases["all read (thumbnails)"] = time.perf_counter() - start
        stalls["reading"] = meter.longest_ms
        where += [(f"reading {ms:.0f} ms", at) for ms, at in meter.worst()]

        meter.reset()
        spin_until(lambda: all(entry.result is not None or entry.problem for entry in skin.entries), timeout_s=3600)
        phases["all classified"] = time.perf_counter() - start
        stalls["classifying"] = meter.longest_ms
        where += [(f"classifying {ms:.0f} ms", at) for ms, at in meter.worst()]
        meter.stop()
        result["stalls"] = where
        result["problems"] = sum(bool(entry.problem) for entry in skin.entries)
        marks["classified"] = memory_mb()
        result["phases_s"] = phases
        result["stalls_ms"] = stalls
    marks["window closed"] = memory_mb()
    result["marks"] = marks
    _report(result)


# --------------------------------------------------------------------------- parent


def run_child(args: list[str], env: dict[str, str], timeout_s: float) -> tuple[dict[str, Any], float]:
    """Run this module as a child with ``args``; its result and wall time."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bench.scale", "--child", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    wall = time.perf_counter() - start
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"child {args[0]} failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
        )
    return json.loads(lines[-1][len(RESULT_PREFIX) :]), wall


def print_stalls(stalls: list[tuple[str, str]]) -> None:
    """Where the longest GUI stalls were spent (``StallWatch``)."""
    if stalls:
        print("\nLongest GUI stalls over 50 ms and where (the GUI thread's Python stack, innermost last):")
        for label, where in stalls:
            print(f"- {label}: {where}")


def print_marks(marks: dict[str, dict[str, float]]) -> None:
    print("\n| stage | RSS now MB | peak so far (VmHWM) MB | ru_maxrss MB |")
    print("| --- | --- | --- | --- |")
    for stage, values in marks.items():
        print(f"| {stage} | {values['rss']:.0f} | {values['hwm']:.0f} | {values['maxrss']:.0f} |")


def series_part(work: Path, env: dict[str, str], slices: int) -> None:
    from bench.results import Row, report

    folder = work / "series"
    start = time.perf_counter()
    build_series(P001, folder, slices)
    built_s = time.perf_counter() - start
    size_mb = sum(path.stat().st_size for path in folder.iterdir()) / MB
    cache = work / "onnx"
    run_child(["warm", str(cache)], env, 1800)
    result, wall = run_child(["series", str(folder), str(cache)], env, 7200)
    marks = result["marks"]
    peak = max(values["maxrss"] for values in marks.values())
    hwm = max(values["hwm"] for values in marks.values())
    rows = [
        Row(f"build {slices} files from P001 (not timed against a target)", built_s),
        Row("open: scan + decode until volume_loaded", result["open_s"]),
        Row("open: GUI longest stall", result["open_stall_ms"], unit="ms", target=STALL_TARGET_MS),
        Row(f"scroll {slices} slices, per step, median", result["scroll_step_ms"]["median"], unit="ms"),
        Row(f"scroll {slices} slices, per step, slowest", result["scroll_step_ms"]["max"], unit="ms"),
        Row("segment liver from the panel, until the finding", result["segment_s"]),
        Row("segment: GUI longest stall", result["segment_stall_ms"], unit="ms", target=STALL_TARGET_MS),
        Row("peak RSS, ru_maxrss", peak, unit="MB", target=RSS_TARGET_MB),
        Row("peak RSS, VmHWM of the child", hwm, unit="MB", target=RSS_TARGET_MB),
        Row("whole child process, wall", wall),
    ]
    report(
        "scale-series",
        f"(1) Synthetic series of {slices} slices {tuple(result['shape'])} {result['dtype']} from P001 "
        f"({size_mb:.0f} MB on disk, JPEG lossless), real window offscreen, {result['model']}",
        rows,
        digits=1,
    )
    print_marks(marks)
    print_stalls(result["stalls"])
    print("\n| array held after the run | MB | dtype | shares memory with |")
    print("| --- | --- | --- | --- |")
    for name, values in result["arrays"].items():
        print(f"| {name} | {values['MB']:.0f} | {values['dtype']} | {values['shares memory with']} |")
    print(
        f"\n'Liver (running…)' layers still alive after the run: {result['running_layers_left'][0]}, "
        f"holding {result['running_layers_left'][1]:.0f} MB; "
        f"liver volume found {result['liver_ml']:,.0f} mL"
    )


def recording_part(work: Path, env: dict[str, str], minutes: float) -> None:
    from bench.results import Row, report

    path = work / f"{ICBHI_RECORDING.stem}_x{minutes:g}min.wav"
    start = time.perf_counter()
    build_recording(ICBHI_RECORDING, path, minutes)
    built_s = time.perf_counter() - start
    alsa = work / "alsa"
    alsa.mkdir(exist_ok=True)
    result, wall = run_child(["recording", str(path), str(alsa)], env, 7200)
    marks = result["marks"]
    peak = max(values["maxrss"] for values in marks.values())
    hwm = max(values["hwm"] for values in marks.values())
    head, heard = result["playhead_s"], result["player_s"]
    rows = [
        Row(f"write the {minutes:g}-minute WAV (not timed against a target)", built_s),
        Row("open until the panel shows it", result["open_s"]),
        Row("open + classify: GUI longest stall", result["stall_ms"], unit="ms", target=STALL_TARGET_MS),
        Row(f"classify {result['cycles']} detected cycles, after the open", result.get("classify_s", float("nan"))),
        Row(
            "audio stream position advanced over 5 s of playback",
            (heard["last"] or 0) - (heard["first"] or 0),
            unit="s",
            target=0.5,
            at_least=True,
        ),
        Row(
            "playhead drawn: advanced over those 5 s",
            (head["last"] or 0) - (head["first"] or 0),
            unit="s",
            target=0.5,
            at_least=True,
        ),
        Row("peak RSS, ru_maxrss", peak, unit="MB", target=RSS_TARGET_MB),
        Row("peak RSS, VmHWM of the child", hwm, unit="MB", target=RSS_TARGET_MB),
        Row("whole child process, wall", wall),
    ]
    report(
        "scale-recording",
        f"(2) {path.name}: {result['duration_s'] / 60:.1f} min at {result['sample_rate']} Hz "
        f"({path.stat().st_size / MB:.0f} MB), lung tab, ALSA null device, {result['model']}",
        rows,
        digits=2,
    )
    print(f"\nthe audio stream's own position: {heard['first']} s -> {heard['last']} s (null device)")
    print(
        f"playhead drawn: {result['playhead_updates']} updates, {head['first']} s -> {head['last']} s "
        f"in {result['played_wall_s']:.1f} s wall; playback note: {result['playback_note'] or 'none'}"
    )
    print(f"cycles: {result['annotation_note']}")
    print_marks(marks)
    print_stalls(result["stalls"])
    print("\n| array | MB | a view of the samples |")
    print("| --- | --- | --- |")
    for name, values in result["arrays"].items():
        print(f"| {name} | {values['MB']:.0f} | {values['shares memory with samples']} |")


def photos_part(work: Path, env: dict[str, str], count: int) -> None:
    from bench.results import Row, report

    folder = build_photo_folder(ISIC, work / "photos", count)
    result, wall = run_child(["photos", str(folder), str(count)], env, 7200)
    marks = result["marks"]
    phases, stalls = result["phases_s"], result["stalls_ms"]
    rows = [
        Row(f"drop to all {count} listed (drop event handled)", phases["listed"]),
        Row("listing: GUI longest stall", stalls["listed"], unit="ms", target=STALL_TARGET_MS),
        Row("drop to all read (thumbnails shown)", phases["all read (thumbnails)"]),
        Row("reading: GUI longest stall", stalls["reading"], unit="ms", target=STALL_TARGET_MS),
        Row("drop to all classified", phases["all classified"]),
        Row("classifying: GUI longest stall", stalls["classifying"], unit="ms", target=STALL_TARGET_MS),
        Row("per photo, drop to all classified", phases["all classified"] / count),
        Row("peak RSS, VmHWM of the child", max(v["hwm"] for v in marks.values()), unit="MB", target=RSS_TARGET_MB),
        Row("whole child process, wall", wall),
    ]
    report(
        "scale-photos",
        f"(3) A folder of {count} real ISIC photos (250x250 JPEG) dropped on the skin tab, {result['model']}; "
        f"{result['listed_count']} listed when the drop returned, {result['problems']} unreadable",
        rows,
    )
    print_marks(marks)
    print_stalls(result["stalls"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--photos", type=int, default=500)
    parser.add_argument("--skip-series", action="store_true")
    parser.add_argument("--skip-recording", action="store_true")
    parser.add_argument("--skip-photos", action="store_true")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        {
            "warm": lambda: child_warm(Path(rest[0])),
            "series": lambda: child_series(Path(rest[0]), Path(rest[1])),
            "recording": lambda: child_recording(Path(rest[0]), Path(rest[1])),
            "photos": lambda: child_photos(Path(rest[0]), int(rest[1])),
        }[kind]()
        return 0

    for needed in (P001, ICBHI_RECORDING, ISIC):
        if not needed.exists():
            raise SystemExit(f"real sample data not found: {needed}")
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"Scale, CPU ({os.cpu_count()} cores), load average before: {load}")
    with tempfile.TemporaryDirectory(prefix="medview-bench-scale-") as temporary:
        work = Path(temporary)
        env = dict(os.environ)
        env["QT_QPA_PLATFORM"] = "offscreen"
        for variable, sub in (("MEDVIEW_DATA_DIR", "data"), ("MEDVIEW_CACHE_DIR", "cache")):
            (work / sub).mkdir()
            env[variable] = str(work / sub)  # the audit log and caches of these runs stay out of the user's
        if not args.skip_series:
            series_part(work, env, args.slices)
        if not args.skip_recording:
            recording_part(work, env, args.minutes)
        if not args.skip_photos:
            photos_part(work, env, args.photos)
    return 0


if __name__ == "__main__":
    sys.exit(main())
