"""Slice-wise CT segmentation: every axial slice through a U-Net, the probability map back on the CT grid.

Used by the liver EAS U-Net (paper 001) and by the lung U-Net of paper 002.
Per slice (as training prepares them): HU clipped to the bundle's window
([-200, 250] for the liver) and scaled to [0, 1], resized to the bundle's input
size (256x256), optionally with the neighbouring slices as channels; the
softmax probability of the liver class is resized back to the slice's own grid
and thresholded.  ``on_slices`` receives each batch's probabilities as soon as
they exist, so the viewer can paint the mask while the run goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from medview.engine.api import SegmentationResult, SlicePaintCallback
from medview.engine.pipelines.context import RunContext, batches
from medview.errors import ModelError
from medview.io.volume import Volume
from medview.preprocess.image import resize_back, segmentation_inputs

#: slices per forward pass.  One at a time: as fast as 8 on the CPU (8.2 s against 7.4-8.4 s for 148 slices of the
#: liver U-Net, 2 cores), and the activations of 8 full U-Net passes held ~500 MB more at the peak of a 1,000-slice
#: series (bench.scale: 1,948 MB peak RSS against 2,510 MB)
BATCH = 1


@torch.no_grad()
def slice_probabilities(
    network: torch.nn.Module,
    voxels: np.ndarray,
    target: int,
    window: tuple[float, float],
    size: tuple[int, int],
    channels: int,
    device: torch.device,
    forward: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """(first slice index, probabilities (n, y, x) of class ``target`` on the slices' own grid), batch by batch.

    The one place slices go through a segmentation network: the pipeline below,
    and training's evaluation of the liver and lung U-Nets.  ``forward`` (numpy
    batch in, logits out) runs the network instead of ``network`` on ``device``:
    the pipeline passes the run's ``RunContext.forward_passes`` (ONNX Runtime on
    the CPU); training, whose weights change, leaves it out.
    """
    depth, height, width = voxels.shape
    network.eval()
    for part in batches(depth, BATCH):
        inputs = segmentation_inputs(voxels, range(part.start, part.stop), window, size, channels)
        output = torch.from_numpy(forward(inputs)) if forward else network(torch.from_numpy(inputs).to(device))
        classes = torch.softmax(output.float(), dim=1)[:, target].cpu().numpy()
        yield part.start, np.clip(resize_back(classes, (height, width)), 0.0, 1.0)


def prepare(context: RunContext) -> None:
    """Set up the forward passes a run will use (exports the ONNX graph on the first use of a bundle)."""
    context.forward_passes(0)


def segment(
    context: RunContext,
    volume: Volume,
    *,
    structure: str,
    on_slices: SlicePaintCallback | None = None,
    mask_out: np.ndarray | None = None,
) -> SegmentationResult:
    """Probability and mask of ``structure`` (a class name of the bundle) over every slice of ``volume``.

    The mask is written into ``mask_out`` (bool, the volume's shape) as each batch arrives when it is given.
    """
    card = context.card
    if structure not in card.class_names:
        raise ModelError(f"bundle {card.label} has no class {structure!r} (classes: {', '.join(card.class_names)})")
    if card.input.hu_window is None or len(card.input.size) != 2:
        raise ModelError(f"bundle {card.label}: a segmentation bundle needs input.hu_window and a 2-D input.size")
    target = card.class_names.index(structure)
    size = (card.input.size[0], card.input.size[1])
    depth = volume.shape[0]
    probability = np.zeros(volume.shape, dtype=np.float16)
    if mask_out is not None and (mask_out.shape != volume.shape or mask_out.dtype != np.bool_):
        raise ValueError(f"mask_out: expected bool {volume.shape}, got {mask_out.dtype} {mask_out.shape}")
    mask = np.zeros(volume.shape, dtype=bool) if mask_out is None else mask_out
    threshold = context.threshold(structure)
    context.step(0, depth, f"segmenting {structure}: slice 1 of {depth}")
    forward = context.forward_passes(0)  # the first run of a bundle on the CPU exports its ONNX graph here
    batches_of_slices = slice_probabilities(
        context.networks[0],
        volume.voxels,
        target,
        card.input.hu_window,
        size,
        card.input.channels,
        context.device,
        forward=forward,
    )
    for start, painted in batches_of_slices:
        probability[start : start + len(painted)] = painted
        np.greater_equal(probability[start : start + len(painted)], threshold, out=mask[start : start + len(painted)])
        if on_slices is not None:  # the stored (float16) values, so the painted mask is the final one
            on_slices(start, probability[start : start + len(painted)])
        done = start + len(painted)
        context.step(done, depth, f"segmenting {structure}: slice {min(done + 1, depth)} of {depth}")
    context.step(depth, depth, f"segmenting {structure}")
    return SegmentationResult(
        provenance=context.provenance(threshold=threshold),
        label_name=structure,
        probability=probability,
        mask=mask,
        spacing=volume.spacing,
    )
