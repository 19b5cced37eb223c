"""Paper 000 at inference: per-slice stone probability inside a kidney ROI, Grad-CAM on asked slices.

Per slice: HU clipped to the bundle's window and scaled to [0, 1], everything
outside the ROI set to 0 (the paper's input is the ROI image, the kidney with the
rest masked out), resized to the input size (224x224), the grey image repeated
on the 3 channels, then the backbone's channel mean/std.  Without an ROI the
whole slice is used and the result says so: the demo bundle is trained that way
because the public samples have no kidney masks (MODELS.md).

A Grad-CAM map is kept only where a reader can act on it: inside the ROI and
inside the body (``grad_cam_region``).  Outside the ROI the model saw black, and
the air, table and arms around an abdomen are not where a stone can be; a map
left there (the demo bundle's is brightest in the corners) draws the eye to
nothing, and, as each map is shown scaled to its maximum, a maximum out there
makes the map over the kidney look faint.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from medview.engine.api import Heatmap, SliceClassificationResult
from medview.engine.pipelines.context import RunContext, batches
from medview.errors import InputError, ModelError
from medview.explain import grad_cam_and_output
from medview.io.volume import Volume
from medview.preprocess.chest import AIR_HU
from medview.preprocess.image import grey_batch, resize_back, window_to_unit

#: slices per forward pass; Cancel is checked between passes.  4 slices take ~0.7 s on 2 CPU cores, so a cancel
#: takes effect well within a second (16 took up to 2.6 s), and larger batches were no faster on the CPU
BATCH = 4


def body_mask(slice_hu: np.ndarray, *, air_hu: float = AIR_HU) -> np.ndarray:
    """The patient's body on one axial slice (y, x) of HU: the largest connected region denser than air,
    holes filled (lungs, bowel gas), so the table, the arms lying apart from the trunk and the air are out.

    ``scipy.ndimage`` labelling and hole filling, ~13 ms on 512 x 512.  A slice without anything denser
    than ``air_hu`` gives an empty mask.  (``medview.preprocess.chest`` finds the air outside the patient
    by its touching the slice border, which keeps the table and the arms in: right for the lungs, not here.)
    """
    # scipy loads here, not with the engine (as in medview.preprocess.chest)
    from scipy import ndimage

    labels, count = ndimage.label(np.asarray(slice_hu) > air_hu)
    if count == 0:
        return np.zeros(slice_hu.shape, bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return np.asarray(ndimage.binary_fill_holes(labels == int(sizes.argmax())))


def grad_cam_region(slice_hu: np.ndarray, roi: np.ndarray | None) -> np.ndarray:
    """Where a slice's Grad-CAM is kept: the ROI (all of the slice without one) inside the body.

    A slice where no body is found (nothing denser than air) keeps the ROI alone: there is nothing to
    restrict to, and an empty map would hide what the model did.
    """
    body = body_mask(slice_hu)
    if roi is None:
        return body if body.any() else np.ones(slice_hu.shape, bool)
    return roi & body if body.any() else roi.astype(bool)


def _inputs(context: RunContext, slices: np.ndarray, roi: np.ndarray | None) -> np.ndarray:
    card = context.card
    unit = window_to_unit(slices, card.input.hu_window)  # type: ignore[arg-type]
    if roi is not None:
        unit = unit * roi
    return grey_batch(unit, (card.input.size[0], card.input.size[1]), *context.channel_stats())


def prepare(context: RunContext) -> None:
    """Set up the forward passes a run will use (exports the ONNX graph on the first use of a bundle)."""
    context.forward_passes(0)


def classify_slices(
    context: RunContext,
    volume: Volume,
    slice_indices: Sequence[int],
    *,
    roi: np.ndarray | None = None,
    roi_source: str = "whole slice",
    explain_slices: Sequence[int] = (),
) -> SliceClassificationResult:
    """Stone probability of each listed slice; ``roi`` is a bool mask of the volume's shape (or one slice's).

    The Grad-CAM of each of ``explain_slices`` is zero outside ``grad_cam_region`` (the ROI inside the body).
    """
    card = context.card
    if card.input.hu_window is None or len(card.input.size) != 2:
        raise ModelError(f"bundle {card.label}: needs input.hu_window and a 2-D input.size", path=card.bundle_dir)
    positive = str(card.input.extra.get("positive_class", card.class_names[-1]))
    target = card.class_names.index(positive)
    indices = list(slice_indices)
    if not indices or min(indices) < 0 or max(indices) >= volume.shape[0]:
        raise InputError(f"slices: expected indices in 0..{volume.shape[0] - 1}, got {indices[:5]}")
    if any(not 0 <= index < volume.shape[0] for index in explain_slices):
        raise InputError(f"Grad-CAM slices: expected indices in 0..{volume.shape[0] - 1}, got {list(explain_slices)}")
    if roi is not None:
        if roi.shape not in (volume.shape, volume.shape[1:]):
            raise InputError(
                f"kidney ROI: expected the shape of the volume {volume.shape} or of a slice, got {roi.shape}"
            )
        roi = np.broadcast_to(roi.astype(bool), volume.shape)
    network = context.networks[0]
    probability = {}
    heatmaps = {}
    total = len(indices) + len(explain_slices)
    for done, index in enumerate(explain_slices):
        context.step(done, total, f"Grad-CAM of slice {index + 1}")
        inputs = _inputs(context, volume.voxels[[index]], roi[[index]] if roi is not None else None)
        maps, logits = grad_cam_and_output(network, context.tensor(inputs), card.target_layer or "", target)
        region = grad_cam_region(volume.voxels[index], roi[index] if roi is not None else None)
        heatmaps[index] = Heatmap(
            resize_back(maps, volume.shape[1:])[0] * region, target_class=positive, layer=card.target_layer or ""
        )
        # the explained pass is also the slice's classification: no second forward pass for it
        probability[index] = float(torch.softmax(logits.float(), dim=1)[0, target])
    plain = [index for index in dict.fromkeys(indices) if index not in probability]
    # forward-only: ONNX Runtime on the CPU (eager torch took 0.21 s a slice on 2 cores and slowed 8.5x beside
    # two busy processes); Grad-CAM above needs torch's gradients
    forward = context.forward_passes(0) if plain else None
    for part in batches(len(plain), BATCH):
        context.step(len(explain_slices) + part.start, total, f"stone probability: {part.stop} of {len(plain)} slices")
        chosen = plain[part]
        inputs = _inputs(context, volume.voxels[chosen], roi[chosen] if roi is not None else None)
        logits = torch.from_numpy(forward(inputs)).float()  # type: ignore[misc]
        probability.update(zip(chosen, torch.softmax(logits, dim=1)[:, target].tolist(), strict=True))
    probabilities = np.array([probability[index] for index in indices], dtype=np.float32)
    context.step(total, total, "done")
    return SliceClassificationResult(
        provenance=context.provenance(threshold=context.threshold(positive)),
        positive_class=positive,
        slice_indices=tuple(indices),
        probabilities=probabilities,
        roi=roi_source,
        heatmaps=heatmaps,
    )
