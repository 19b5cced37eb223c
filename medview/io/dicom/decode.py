"""Decoding: one slice, or a whole series on a thread pool into a ``Volume`` in LPS orientation.

SimpleITK's GDCM reader where it can (it releases the GIL, and its JPEG-lossless decoder is about twice as
fast as pylibjpeg's), pydicom with the pylibjpeg plugins otherwise."""

from __future__ import annotations

import math
import queue
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pydicom

from medview.config import usable_cores
from medview.errors import Cancelled, DicomError
from medview.io.dicom.geometry import sort_slices
from medview.io.dicom.model import MAX_VOXELS, MISSING_SLICE_VALUE, SeriesInfo, SliceHeader
from medview.io.dicom.scan import scan_paths
from medview.io.volume import (
    Volume,
    canonical_axes,
    reorient_array,
    reorient_geometry,
)
from medview.progress import CancelCheck, ProgressCallback


def _drop_gdcm_decoding_plugin() -> None:
    """Keep pydicom off python-gdcm, for every transfer syntax another plugin (pylibjpeg) decodes.

    GDCM aborts the whole process (``std::terminate``, which Python cannot catch)
    on a file whose header contradicts its pixel data, e.g. a JPEG 2000 plane
    with one component under an RGB PhotometricInterpretation; pylibjpeg raises.
    """
    from pydicom.pixels import get_decoder

    for uid in pydicom.uid.AllTransferSyntaxes:
        try:
            decoder = get_decoder(uid)
        except NotImplementedError:
            continue
        if "gdcm" in decoder.available_plugins and len(decoder.available_plugins) > 1:
            decoder.remove_plugin("gdcm")


_drop_gdcm_decoding_plugin()


# --------------------------------------------------------------------------- decoding


def _decode_with_sitk(header: SliceHeader) -> np.ndarray | None:
    """HU plane through SimpleITK/GDCM, or None when this reader cannot take the file."""
    if header.source.member is not None or header.frame is not None or not header.monochrome:
        return None
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(header.source.path))
    reader.SetNumberOfThreads(1)  # the pool already uses every core
    try:
        image = reader.Execute()
    except RuntimeError:
        return None
    plane = sitk.GetArrayViewFromImage(image)
    if plane.ndim == 3:
        plane = plane[0]
    if plane.shape != (header.rows, header.columns) or image.GetNumberOfComponentsPerPixel() != 1:
        return None
    return np.array(plane)


def _decode_with_pydicom(header: SliceHeader) -> np.ndarray:
    label = header.source.label
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(header.source.open(), force=True)
            if "TransferSyntaxUID" not in dataset.file_meta:
                implicit, little = dataset.original_encoding
                dataset.file_meta.TransferSyntaxUID = (
                    pydicom.uid.ImplicitVRLittleEndian
                    if implicit
                    else pydicom.uid.ExplicitVRLittleEndian
                    if little
                    else pydicom.uid.ExplicitVRBigEndian
                )
            if "PixelData" not in dataset and "FloatPixelData" not in dataset:
                raise DicomError("the file has no pixel data", path=label)
            if header.frame is not None:
                dataset.pixel_array_options(index=header.frame)
            stored = dataset.pixel_array
    except DicomError:
        raise
    except Exception as error:
        raise DicomError(f"pixel data cannot be decoded ({type(error).__name__}: {error})", path=label) from error
    if stored.ndim != 2 or stored.shape != (header.rows, header.columns):
        raise DicomError(
            f"expected a {header.rows}x{header.columns} grayscale plane, got shape {stored.shape}", path=label
        )
    slope, intercept = header.rescale
    return stored.astype(np.float32) * slope + intercept if (slope, intercept) != (1.0, 0.0) else stored


def decode_slice(header: SliceHeader) -> np.ndarray:
    """Decode one plane to Hounsfield units (or raw values for non-CT)."""
    plane = _decode_with_sitk(header)
    return plane if plane is not None else _decode_with_pydicom(header)


#: decode threads per core.  GDCM decodes without the GIL, so the threads run in parallel; where the
#: scheduler shares the cores by thread, more threads take a larger share of a busy machine.  P001 (148
#: JPEG-lossless slices, 2 cores) beside two multi-threaded competitors in the same scheduling group
#: loaded in 0.82x SimpleITK's time with 2 threads, 0.62x with 4, 0.55x with 6 and 0.52x with 8; quiet,
#: 0.66-0.70x with each count.  Where each process is its own group (Linux autogroup: the competitors of
#: ``bench.summary --contention`` run in sessions of their own) the count changes nothing (3.07 s with 6,
#: 3.03 s with 2): each group gets its share of the cores however many threads it runs (issue 23).
DECODE_THREADS_PER_CORE = 3
MAX_DECODE_THREADS = 32  # a cap for many-core machines (not measured there): 300 slices are then in runs of _RUN_MIN

# Neighbouring slices are decoded in runs, one SimpleITK ImageSeriesReader per
# run: a fresh ImageFileReader per file re-parses each header and builds a new
# reader and image each time (P001, 148 JPEG-lossless slices on two threads:
# 0.59 s per file against 0.43 s in runs of 12).  The reader's progress events
# let a cancel abort a run after the slice in hand.
_RUN_MIN, _RUN_MAX = 4, 12  # slices per run: longer runs cost less, shorter ones balance and cancel sooner
_RUNS_PER_WORKER = 3
_CANCEL_POLL_S = 0.05


def default_decode_threads() -> int:
    """The decode pool's size when the settings leave it to MedView (``decode_threads`` 0)."""
    return min(MAX_DECODE_THREADS, DECODE_THREADS_PER_CORE * usable_cores())


def _run_length(count: int, workers: int) -> int:
    return min(_RUN_MAX, max(_RUN_MIN, math.ceil(count / (workers * _RUNS_PER_WORKER))))


def _decode_run_with_sitk(
    headers: Sequence[SliceHeader], out: np.ndarray, zs: Sequence[int], stop: threading.Event
) -> bool:
    """Decode neighbouring single-frame files in one GDCM pass into ``out[zs]``.

    False, with nothing written, when the run must take the per-file path: a zip
    member or a frame, a file GDCM refuses, or a file that is not one grayscale
    plane (ITK would quietly turn RGB or palette colour into luminance here).
    """
    if len(headers) < 2 or any(h.source.member is not None or h.frame is not None or not h.monochrome for h in headers):
        return False
    rows, columns = headers[0].rows, headers[0].columns
    if any((h.rows, h.columns) != (rows, columns) for h in headers):
        return False
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileNames([str(h.source.path) for h in headers])
    # ITK casts each plane from GDCM's rescaled type with a C cast, as numpy's
    # assignment into the volume does on the per-file path: the same voxels
    reader.SetOutputPixelType(sitk.sitkInt16 if out.dtype == np.int16 else sitk.sitkFloat32)
    reader.SetNumberOfThreads(1)  # the pool already uses every core
    reader.SetSpacingWarningRelThreshold(1e9)  # gaps are ours to report, not ITK's on stderr
    reader.MetaDataDictionaryArrayUpdateOn()  # per-file tags, to check every file is grayscale
    reader.AddCommand(sitk.sitkProgressEvent, lambda: reader.Abort() if stop.is_set() else None)
    try:
        image = reader.Execute()
    except RuntimeError:
        return False
    finally:
        reader.RemoveAllCommands()  # the command holds the reader: break the cycle
    if image.GetNumberOfComponentsPerPixel() != 1 or image.GetSize() != (columns, rows, len(headers)):
        return False
    for index in range(len(headers)):
        for key, accept in (("0028|0002", ("1",)), ("0028|0004", ("MONOCHROME1", "MONOCHROME2"))):
            if not reader.HasMetaDataKey(index, key) or reader.GetMetaData(index, key).strip() not in accept:
                return False
    planes = sitk.GetArrayViewFromImage(image)  # valid while ``image`` lives
    if not stop.is_set():
        for index, z in enumerate(zs):
            out[z] = planes[index]
    return True


def _output_dtype(headers: Sequence[SliceHeader], modality: str) -> type:
    """int16 for CT with integral rescale (HU fits), float32 for everything else."""
    if modality not in ("CT", ""):
        return np.float32
    for header in headers:
        slope, intercept = header.rescale
        if slope != int(slope) or intercept != int(intercept):
            return np.float32
    return np.int16


def load_series(
    series: SeriesInfo,
    progress: ProgressCallback | None = None,
    cancelled: CancelCheck | None = None,
    on_slice: Callable[[Volume, int], None] | None = None,
    workers: int | None = None,
) -> Volume:
    """Decode a scanned series into a ``Volume`` in LPS orientation.

    ``on_slice(volume, z)`` is called (from this thread) each time a slice is in
    place, middle slice first, so a viewer can show the image before the rest is
    decoded.  Unreadable slices are reported in ``Volume.warnings`` and left as
    missing; if no slice decodes, ``DicomError`` names the first failing file.
    ``workers`` threads decode (None or 0: ``default_decode_threads()``).
    """
    geometry = sort_slices(series.slices)
    first = geometry.slices[0]
    dtype = _output_dtype(geometry.slices, series.modality)
    voxels_needed = geometry.depth * first.rows * first.columns
    if voxels_needed > MAX_VOXELS:
        raise DicomError(
            f"the series would be {geometry.depth}x{first.rows}x{first.columns} voxels, "
            f"more than MedView opens ({MAX_VOXELS:,})",
            path=first.source.label,
        )
    try:
        acquired: np.ndarray = np.full((geometry.depth, first.rows, first.columns), MISSING_SLICE_VALUE, dtype=dtype)
    except MemoryError as error:
        raise DicomError(
            f"not enough memory for a {geometry.depth}x{first.rows}x{first.columns} volume", path=first.source.label
        ) from error
    order, flips = canonical_axes(geometry.direction)
    spacing, origin, direction = reorient_geometry(
        acquired.shape, geometry.spacing, np.asarray(geometry.origin), geometry.direction, order, flips
    )
    voxels = reorient_array(acquired, order, flips)  # a view: slices written below appear in it

    def to_output_index(z_acquired: int) -> int:
        if order[0] != 0:
            return -1  # not an axial stack: no single output slice corresponds
        return geometry.depth - 1 - z_acquired if flips[0] else z_acquired

    slice_files = [""] * geometry.depth
    slice_uids = [""] * geometry.depth
    for header, z in zip(geometry.slices, geometry.z_index, strict=True):
        slice_files[z] = header.source.label
        slice_uids[z] = header.sop_instance_uid
    if order[0] != 0:  # acquired coronal or sagittal: no output (axial) slice is one file
        slice_files, slice_uids = [], []
    elif flips[0]:
        slice_files.reverse()
        slice_uids.reverse()
    volume = Volume(
        voxels=voxels,
        spacing=spacing,
        origin=origin,
        direction=tuple(direction.ravel()),
        series_uid=series.series_uid,
        description=series.display_name,
        modality=series.modality,
        slice_files=tuple(slice_files),
        slice_uids=tuple(slice_uids),
        missing_slices=frozenset(to_output_index(z) for z in geometry.missing) - {-1},
        default_window=series.window,
        warnings=tuple(series.notes) + geometry.warnings,
        info={
            "PatientName": series.patient_name,
            "PatientID": series.patient_id,
            "PatientBirthDate": series.patient_birth_date,
            "AccessionNumber": series.accession_number,
            "StudyInstanceUID": series.study_uid,
            "StudyDate": series.study_date,
            "StudyDescription": series.study_description,
            "SeriesDescription": series.series_description,
            "Modality": series.modality,
            "BodyPartExamined": series.body_part,
        },
    )
    count = len(geometry.slices)
    middle = count // 2
    pool_size = workers or default_decode_threads()
    run_length = _run_length(count - 1, pool_size)
    # the middle slice alone first, so a viewer has its picture after one decode
    runs = [[middle]] + [
        list(half[start : start + run_length])
        for half in (range(middle), range(middle + 1, count))
        for start in range(0, len(half), run_length)
    ]
    stop = threading.Event()
    finished: queue.SimpleQueue[tuple[list[int], list[DicomError | None] | Exception]] = queue.SimpleQueue()

    def decode_run(run: list[int]) -> None:
        """Decode the slices ``run`` into ``acquired`` (on a worker thread) and report one error or None each."""
        try:
            headers = [geometry.slices[i] for i in run]
            zs = [geometry.z_index[i] for i in run]
            results: list[DicomError | None] = [None] * len(run)
            if not stop.is_set() and not _decode_run_with_sitk(headers, acquired, zs, stop):
                for position, (header, z) in enumerate(zip(headers, zs, strict=True)):
                    if stop.is_set():
                        break
                    try:
                        acquired[z] = decode_slice(header)
                    except DicomError as error:
                        results[position] = error
            finished.put((run, results))
        except Exception as error:  # noqa: BLE001 - a bug, not a bad file: the loading thread re-raises it
            finished.put((run, error))

    failures: list[str] = []
    failed_z: set[int] = set()
    done = 0
    held_back: list[int] = []  # slices that landed before the middle one, announced after it
    middle_landed = False
    poll = _CANCEL_POLL_S if cancelled is not None else None
    with ThreadPoolExecutor(max_workers=pool_size) as pool:
        for run in runs:
            pool.submit(decode_run, run)
        try:
            for _ in runs:
                while True:
                    if cancelled is not None and cancelled():
                        raise Cancelled()
                    try:
                        run, outcome = finished.get(timeout=poll)
                        break
                    except queue.Empty:
                        continue
                if isinstance(outcome, Exception):
                    raise outcome
                landed = []
                for index, failure in zip(run, outcome, strict=True):
                    z = geometry.z_index[index]
                    if failure is None:
                        landed.append(z)
                    else:
                        failures.append(str(failure))
                        failed_z.add(z)
                done += len(run)
                if progress is not None:
                    progress(done, count, "decoding slices")
                middle_landed = middle_landed or middle in run
                if middle_landed:
                    announce, held_back = landed + held_back, []
                else:
                    announce, held_back = [], held_back + landed
                if on_slice is not None:
                    for z in announce:
                        output_z = to_output_index(z)
                        if output_z >= 0:
                            on_slice(volume, output_z)
        finally:
            stop.set()  # running runs stop after their current slice and write nothing more
            pool.shutdown(wait=True, cancel_futures=True)
    if len(failures) == count:
        raise DicomError(f"no slice of the series could be decoded; first error: {failures[0]}")
    if failures:
        missing = volume.missing_slices | {z for z in map(to_output_index, failed_z) if z >= 0}
        volume = _replace_problems(volume, failures, missing)
    if not voxels.flags.c_contiguous:
        volume = _replace_voxels(volume, np.ascontiguousarray(voxels))
    return volume


def _replace_problems(volume: Volume, failures: list[str], missing: Iterable[int]) -> Volume:
    from dataclasses import replace

    return replace(volume, warnings=volume.warnings + tuple(failures), missing_slices=frozenset(missing))


def _replace_voxels(volume: Volume, voxels: np.ndarray) -> Volume:
    from dataclasses import replace

    return replace(volume, voxels=voxels)


def load_dicom(paths: Sequence[Path | str]) -> Volume:
    """Load the largest image series found under ``paths``: the one-call path for scripts."""
    scan = scan_paths(paths)
    if not scan.series:
        reasons = "; ".join(str(p) for p in scan.problems[:3]) or "no files found"
        raise DicomError(f"no DICOM image series found in {', '.join(map(str, paths))} ({reasons})")
    return load_series(max(scan.series, key=lambda s: s.slice_count))
