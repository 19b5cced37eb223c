"""Kidney stone runs (paper 000) without Qt: which slices a run classifies and explains, and the run itself.

The radiologist chooses the slices (the whole series or the axial slice on
screen) and a region of interest; :func:`plan_kidney_run` turns that into the
slices to classify (a slice with no ROI voxel would be a black image and is
left out, and the scope says so), the slice to explain (the one on screen),
and a warning for slices that are blank.  :func:`classify_and_explain` runs it
and adds the Grad-CAM of the positive slices when there are only a few.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from medview.engine.api import Heatmap, InferenceService, SliceClassificationResult
from medview.engine.fitness import is_uniform
from medview.engine.manifest import ModelCard
from medview.errors import InputError
from medview.io.volume import Volume
from medview.progress import CancelCheck, ProgressCallback

#: the positive slices are explained too when there are at most this many
FEW_POSITIVES = 5


@dataclass(frozen=True)
class KidneyRun:
    """What one run classifies and explains, in words for the finding too."""

    slices: tuple[int, ...]
    explain: tuple[int, ...]  # the slice on screen, when it is run
    scope: str  # "whole series", "axial slice 12 only", and the slices left out
    warnings: tuple[str, ...]  # about the slices run (blank ones), shown beside the verdict


def plan_kidney_run(
    volume: Volume, roi: np.ndarray | None, roi_text: str, current: int, *, whole_series: bool
) -> KidneyRun:
    """The run of the whole series or of slice ``current`` in ``roi`` (bool (z, y, x) or (y, x); None: the whole
    slice).  Raises ``InputError`` with what to tell the user when the ROI leaves nothing to run."""
    slices = list(range(volume.shape[0])) if whole_series else [current]
    scope = "whole series" if whole_series else f"axial slice {current + 1} only"
    if roi is not None and not roi.any():
        raise InputError(f"The kidney ROI ({roi_text}) holds no pixel.")
    if roi is not None and roi.ndim == 3:  # a slice without ROI voxels would be a black image: not run
        empty = [index for index in slices if not roi[index].any()]
        slices = [index for index in slices if roi[index].any()]
        if not slices:
            raise InputError(f"The kidney ROI has no voxel on axial slice {current + 1}.")
        if empty:
            scope += f", {len(empty)} slice(s) without ROI voxels left out"
    warnings = []
    blank = [index + 1 for index in slices if is_uniform(volume.voxels[index])]
    if blank and len(blank) < volume.shape[0]:  # a blank series is said of the whole series already
        shown = ", ".join(map(str, blank[:10])) + (", …" if len(blank) > 10 else "")
        warnings.append(f"{len(blank)} slice(s) run are uniform (blank: {shown}): their probabilities mean nothing.")
    explain = (current,) if current in slices else ()
    return KidneyRun(tuple(slices), explain, scope, tuple(warnings))


def classify_and_explain(
    engine: InferenceService,
    card: ModelCard,
    volume: Volume,
    run: KidneyRun,
    roi: np.ndarray | None,
    roi_text: str,
    progress: ProgressCallback,
    cancelled: CancelCheck,
) -> tuple[SliceClassificationResult, dict[int, Heatmap]]:
    """The per-slice run with Grad-CAM of ``run.explain``; then, when only a few slices are positive, their
    Grad-CAM too (a second small run: which slices are positive is known only after the first)."""
    first = len(run.slices) + len(run.explain)
    result = engine.classify_kidney_slices(
        card,
        volume,
        run.slices,
        roi=roi,
        roi_source=roi_text,
        explain_slices=run.explain,
        progress=progress,
        cancelled=cancelled,
    )
    heatmaps = dict(result.heatmaps)
    positives = result.positive_slices()
    missing = [index for index in positives if index not in heatmaps]
    if len(positives) <= FEW_POSITIVES and missing:
        extra = engine.classify_kidney_slices(
            card,
            volume,
            missing,
            roi=roi,
            roi_source=roi_text,
            explain_slices=missing,
            progress=lambda done, total, what: progress(first + done, first + total, what),
            cancelled=cancelled,
        )
        heatmaps.update(extra.heatmaps)
    return result, heatmaps


def grad_cam_values(shape: tuple[int, int, int], heatmaps: Mapping[int, Heatmap], absolute: bool) -> np.ndarray:
    """The Grad-CAM maps on the volume grid, zero on slices not explained.

    Relative: each slice by its own maximum.  Absolute: every slice by the
    largest value over all explained slices, so a weaker map looks weaker.
    float16 like the liver probability: a mostly-empty volume-sized array.
    """
    values = np.zeros(shape, np.float16)
    scale = max((float(heatmap.values.max()) for heatmap in heatmaps.values() if heatmap.values.size), default=0.0)
    for index, heatmap in heatmaps.items():
        if absolute:
            values[index] = heatmap.absolute(scale) if scale > 0 else 0.0
        else:
            values[index] = heatmap.relative()
    return values
