"""Cut a display plane out of an LPS-oriented ``[z, y, x]`` array, and map back.

Volumes arrive oriented to LPS (see ``medview.io.volume``), so the radiological
display of each plane is a fixed slicing rule:

* axial ``[z]``: rows anterior -> posterior, columns patient right -> left
  (patient right on screen left);
* coronal ``[:, y, :]``: rows superior -> inferior (the z axis reversed),
  columns right -> left;
* sagittal ``[:, :, x]``: rows superior -> inferior, columns anterior -> posterior.

Image, masks and heatmaps all go through these functions, so they cannot
disagree about orientation.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Plane = Literal["axial", "coronal", "sagittal"]
PLANES: tuple[Plane, ...] = ("axial", "coronal", "sagittal")
#: array axis a plane's index runs along
PLANE_AXIS = {"axial": 0, "coronal": 1, "sagittal": 2}


def plane_count(shape_zyx: tuple[int, ...], plane: Plane) -> int:
    """How many slices the volume has in this plane."""
    return int(shape_zyx[PLANE_AXIS[plane]])


def extract_plane(array: np.ndarray, plane: Plane, index: int) -> np.ndarray:
    """The 2-D image of ``plane`` at ``index`` in display orientation (a view where possible)."""
    if plane == "axial":
        return array[index]
    if plane == "coronal":
        return array[::-1, index, :]
    return array[::-1, :, index]


def plane_spacing(spacing_zyx: tuple[float, float, float], plane: Plane) -> tuple[float, float]:
    """(row, column) pixel spacing in mm of the displayed plane."""
    z, y, x = spacing_zyx
    if plane == "axial":
        return (y, x)
    if plane == "coronal":
        return (z, x)
    return (z, y)


def display_to_voxel(shape_zyx: tuple[int, ...], plane: Plane, index: int, row: int, col: int) -> tuple[int, int, int]:
    """Voxel ``(z, y, x)`` under display pixel ``(row, col)`` of ``plane`` at ``index``."""
    depth = shape_zyx[0]
    if plane == "axial":
        return (index, row, col)
    if plane == "coronal":
        return (depth - 1 - row, index, col)
    return (depth - 1 - row, col, index)


def voxel_to_display(shape_zyx: tuple[int, ...], plane: Plane, voxel: tuple[int, int, int]) -> tuple[int, int, int]:
    """``(index, row, col)`` of a voxel in ``plane``: the inverse of ``display_to_voxel``."""
    z, y, x = voxel
    depth = shape_zyx[0]
    if plane == "axial":
        return (z, y, x)
    if plane == "coronal":
        return (y, depth - 1 - z, x)
    return (x, depth - 1 - z, y)


def edge_letters(direction: np.ndarray, plane: Plane) -> dict[str, str]:
    """Orientation letters at the left, right, top and bottom edges of a plane.

    ``direction`` is the volume's 3x3 matrix (columns = x, y, z axis vectors in
    LPS); the letters follow the actual axes, so an oblique series shows two.
    """
    from medview.io.volume import axis_letters

    x_low, x_high = axis_letters(direction, 0)
    y_low, y_high = axis_letters(direction, 1)
    z_low, z_high = axis_letters(direction, 2)
    if plane == "axial":
        return {"left": x_low, "right": x_high, "top": y_low, "bottom": y_high}
    if plane == "coronal":
        return {"left": x_low, "right": x_high, "top": z_high, "bottom": z_low}
    return {"left": y_low, "right": y_high, "top": z_high, "bottom": z_low}
