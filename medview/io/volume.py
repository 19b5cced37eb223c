"""The image volume every CT loader returns, with its patient-space geometry.

Conventions (the whole app relies on them):

* ``voxels`` is indexed ``[z, y, x]`` (slice, row, column), row-major.
* ``spacing`` is in millimetres in the same ``(z, y, x)`` order as the axes.
* ``origin`` is the patient (DICOM LPS) position of voxel ``[0, 0, 0]`` in mm.
* ``direction`` is the 3x3 matrix whose *columns* are the LPS unit vectors of
  the x (column), y (row) and z (slice) axes: the ITK convention, so a
  SimpleITK image maps one to one.

Loaders hand out volumes re-oriented to the closest LPS axes (column index
growing towards patient left, row towards posterior, slice towards superior)
so that every view can display them in radiological convention without
knowing how the scanner stored them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

AXIS_LETTERS_LPS = (("R", "L"), ("A", "P"), ("I", "S"))


@dataclass(frozen=True)
class Volume:
    """A 3-D scalar image (CT in Hounsfield units) with its geometry and origin."""

    voxels: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    series_uid: str = ""
    description: str = ""
    modality: str = ""
    #: the file each slice came from (DICOM), in ``z`` order; empty for NIfTI/NRRD and for
    #: series acquired in another plane than axial (then no axial slice is one file)
    slice_files: tuple[str, ...] = ()
    #: SOP Instance UID of each slice in ``z`` order (DICOM only; for SEG references)
    slice_uids: tuple[str, ...] = ()
    #: slices that were absent from the series and filled with air
    missing_slices: frozenset[int] = frozenset()
    #: the display window the series suggests, (center, width)
    default_window: tuple[float, float] | None = None
    #: human-readable problems found while loading (gaps, irregular spacing, ...)
    warnings: tuple[str, ...] = ()
    #: patient / study identifiers for display
    info: Mapping[str, str] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(z, y, x)`` size in voxels."""
        return tuple(self.voxels.shape)  # type: ignore[return-value]

    @property
    def direction_matrix(self) -> np.ndarray:
        """3x3 array whose columns are the LPS directions of the x, y, z axes."""
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    def index_to_lps(self, z: float, y: float, x: float) -> np.ndarray:
        """Patient (LPS, mm) position of a voxel index."""
        steps = np.array([x * self.spacing[2], y * self.spacing[1], z * self.spacing[0]])
        return np.asarray(self.origin) + self.direction_matrix @ steps

    def with_voxels(self, voxels: np.ndarray) -> Volume:
        """The same geometry carrying other voxel data (a mask, a probability map)."""
        if voxels.shape != self.voxels.shape:
            raise ValueError(f"expected shape {self.voxels.shape}, got {voxels.shape}")
        return replace(self, voxels=voxels)


def axis_letters(direction: np.ndarray, axis: int) -> tuple[str, str]:
    """Patient-side letters at the low and high end of an array axis.

    ``axis`` is 0 for x (columns), 1 for y (rows), 2 for z (slices), i.e. a column
    of ``direction``.  An oblique axis gets two letters, strongest first ("LA").
    """
    vector = direction[:, axis]
    order = np.argsort(-np.abs(vector))
    high, low = "", ""
    for component in order[:2]:
        if abs(vector[component]) < 0.3 and high:
            break
        negative, positive = AXIS_LETTERS_LPS[component]
        high += positive if vector[component] > 0 else negative
        low += negative if vector[component] > 0 else positive
    return low, high


def canonical_axes(direction: np.ndarray) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """How to permute and flip ``[z, y, x]`` array axes to the closest LPS orientation.

    Returns ``(order, flips)``: ``voxels.transpose(order)`` then flipping the axes
    marked in ``flips`` gives an array whose columns run towards L, rows towards P
    and slices towards S.  ``direction`` columns are the x, y, z axis vectors.
    """
    # For each patient axis (L, P, S) pick the image axis most aligned with it,
    # greedily from the strongest alignment so that each image axis is used once.
    weights = np.abs(direction)  # [patient component, image axis x/y/z]
    assignment: dict[int, int] = {}
    for flat in np.argsort(-weights, axis=None):
        component, image_axis = divmod(int(flat), 3)
        if component in assignment or image_axis in assignment.values():
            continue
        assignment[component] = image_axis
    # array axis index of image axis x/y/z is 2/1/0
    array_axis_of = {0: 2, 1: 1, 2: 0}
    # new array axes (z, y, x) are patient S, P, L (components 2, 1, 0)
    order = tuple(array_axis_of[assignment[c]] for c in (2, 1, 0))
    flips = tuple(bool(direction[c, assignment[c]] < 0) for c in (2, 1, 0))
    return order, flips  # type: ignore[return-value]


def reorient_geometry(
    shape_zyx: tuple[int, int, int],
    spacing_zyx: tuple[float, float, float],
    origin: np.ndarray,
    direction: np.ndarray,
    order: tuple[int, int, int],
    flips: tuple[bool, bool, bool],
) -> tuple[tuple[float, float, float], tuple[float, float, float], np.ndarray]:
    """Spacing, origin and direction after ``canonical_axes``' permutation and flips."""
    # column of `direction` for array axis a (0=z,1=y,2=x) is 2-a
    new_spacing = []
    new_direction = np.zeros((3, 3))
    new_origin = np.asarray(origin, dtype=float).copy()
    for new_axis, (old_axis, flip) in enumerate(zip(order, flips, strict=True)):
        vector = direction[:, 2 - old_axis].copy()
        step = spacing_zyx[old_axis]
        if flip:
            new_origin = new_origin + vector * step * (shape_zyx[old_axis] - 1)
            vector = -vector
        new_direction[:, 2 - new_axis] = vector
        new_spacing.append(step)
    return tuple(new_spacing), tuple(new_origin), new_direction  # type: ignore[return-value]


def reorient_array(voxels: np.ndarray, order: tuple[int, int, int], flips: tuple[bool, ...]) -> np.ndarray:
    """A *view* of ``voxels`` permuted and flipped by ``canonical_axes``' answer."""
    view = voxels.transpose(order)
    slices = tuple(slice(None, None, -1) if flip else slice(None) for flip in flips)
    return view[slices]


def source_path_label(path: Path | str, member: str | None = None) -> str:
    """How a file is named in messages: ``archive.zip!inner/file.dcm`` for zip members."""
    return f"{path}!{member}" if member else str(path)
