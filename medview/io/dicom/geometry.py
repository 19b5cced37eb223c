"""A series' geometry: its slices in order along the normal of their orientation, spacing, gaps."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medview.errors import DicomError
from medview.io.dicom.model import SliceHeader

# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class SeriesGeometry:
    """The sorted slice order of a series and where each slice goes in the volume."""

    slices: tuple[SliceHeader, ...]  # sorted along the normal, duplicates removed
    z_index: tuple[int, ...]  # volume slice index of each entry in ``slices``
    depth: int  # number of volume slices, missing ones included
    spacing: tuple[float, float, float]  # z, y, x
    origin: tuple[float, float, float]
    direction: np.ndarray
    missing: frozenset[int]
    warnings: tuple[str, ...]


def sort_slices(headers: Sequence[SliceHeader]) -> SeriesGeometry:
    """Sort slices along the plane normal and detect gaps, duplicates and irregular steps.

    The order comes from ImagePositionPatient projected on the normal of
    ImageOrientationPatient (never from file names or InstanceNumber, which
    scanners do not keep monotonic).  A gap that is a whole number of steps is
    kept in the geometry as missing slices, so distances across it stay true.
    """
    if not headers:
        raise DicomError("the series has no image slices")
    notes: list[str] = []
    first = headers[0]
    distances = None
    if first.orientation is not None and all(h.position is not None for h in headers):
        normal = np.cross(np.asarray(first.orientation[:3]), np.asarray(first.orientation[3:]))
        with np.errstate(over="ignore", invalid="ignore"):  # checked below
            distances = np.array([float(np.dot(normal, h.position)) for h in headers])  # type: ignore[arg-type]
        if not np.all(np.isfinite(distances)):  # positions so far out that their projections overflow
            distances = None
    if distances is None or first.orientation is None:
        # Without geometry, fall back to InstanceNumber and say so.
        ordered = sorted(headers, key=lambda h: (h.instance_number is None, h.instance_number or 0))
        notes.append(
            "no ImagePositionPatient/ImageOrientationPatient: slices ordered by InstanceNumber, "
            "distances along z are not reliable"
        )
        spacing_z = first.slice_thickness or 1.0
        direction = np.eye(3)
        return SeriesGeometry(
            slices=tuple(ordered),
            z_index=tuple(range(len(ordered))),
            depth=len(ordered),
            spacing=(spacing_z, first.pixel_spacing[0], first.pixel_spacing[1]),
            origin=(0.0, 0.0, 0.0),
            direction=direction,
            missing=frozenset(),
            warnings=tuple(notes),
        )
    row_dir = np.asarray(first.orientation[:3])
    col_dir = np.asarray(first.orientation[3:])
    normal = np.cross(row_dir, col_dir)
    order = np.argsort(distances, kind="stable")
    ordered = []
    positions: list[float] = []
    for index in order:
        if positions and abs(distances[index] - positions[-1]) < 1e-3:
            notes.append(
                f"{headers[index].source.label} lies at the same position as "
                f"{ordered[-1].source.label} ({distances[index]:.2f} mm): kept the first"
            )
            continue
        ordered.append(headers[index])
        positions.append(distances[index])
    steps = np.diff(positions)
    step = float(np.median(steps)) if len(steps) else first.slice_thickness or 1.0
    z_index = [0]
    missing: set[int] = set()
    for i, gap in enumerate(steps):
        ratio = gap / step
        if ratio > 1.5:
            whole = round(float(ratio)) if math.isfinite(ratio) else 0
            # empty slices for a gap, but never more than there are real ones (a damaged position is not a gap)
            if abs(ratio - whole) < 0.1 and len(missing) + whole - 1 <= len(ordered):
                missing.update(range(z_index[-1] + 1, z_index[-1] + whole))
                notes.append(
                    f"{whole - 1} slice(s) missing between {ordered[i].source.label} and "
                    f"{ordered[i + 1].source.label} (gap {gap:.2f} mm, step {step:.2f} mm): shown as empty"
                )
                z_index.append(z_index[-1] + whole)
                continue
            notes.append(
                f"irregular gap of {gap:.2f} mm (step {step:.2f} mm) between "
                f"{ordered[i].source.label} and {ordered[i + 1].source.label}"
            )
        elif abs(ratio - 1) > 0.1:
            notes.append(f"irregular slice step {gap:.2f} mm (median {step:.2f} mm) at {ordered[i + 1].source.label}")
        z_index.append(z_index[-1] + 1)
    direction = np.column_stack([row_dir, col_dir, normal])
    return SeriesGeometry(
        slices=tuple(ordered),
        z_index=tuple(z_index),
        depth=z_index[-1] + 1,
        spacing=(step, first.pixel_spacing[0], first.pixel_spacing[1]),
        origin=tuple(float(v) for v in ordered[0].position or ()),  # type: ignore[arg-type]
        direction=direction,
        missing=frozenset(missing),
        warnings=tuple(notes),
    )
