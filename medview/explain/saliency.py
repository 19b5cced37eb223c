"""Integrated gradients (Sundararajan et al. 2017): a pixel-level saliency that adds up to the score's change.

For networks whose last spatial map is too coarse, and too marked by the image
border, for Grad-CAM to say where in the input the evidence lies.  The skin
pipeline's case: EfficientNet-Lite0's 7x7 map gave every photo the same square
frame one cell in from its edges (a flat skin-coloured image got it too), from
the zero padding of its convolutions.  Integrated gradients attributes the
score's change from a content-free ``baseline`` input to the input's own
pixels, so position alone earns nothing: the attributions of a sample sum to
``score(input) - score(baseline)`` (up to the path's discretisation).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medview.errors import ModelError


def integrated_gradients(
    model: nn.Module,
    inputs: torch.Tensor,
    baseline: torch.Tensor,
    score: Callable[[torch.Tensor], torch.Tensor],
    *,
    steps: int = 8,
    patch: int = 8,
    output_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Positive integrated-gradients maps, float32 ``(batch, h, w)``, of ``score`` from ``baseline`` to ``inputs``.

    ``score`` maps the model output to one score per sample.  The path from
    ``baseline`` (same shape as ``inputs``) to each input is walked in ``steps``
    midpoint steps, in one batch; the attribution (input - baseline) x mean
    gradient is summed over channels and over ``patch`` x ``patch`` pixel
    blocks; the blocks that raise the score are kept (ReLU, as Grad-CAM does),
    averaged with their 3x3 neighbours and bilinearly upsampled to
    ``output_size`` (default: the input's).
    """
    if baseline.shape != inputs.shape:
        raise ModelError(
            f"integrated gradients: expected a baseline of shape {tuple(inputs.shape)}, got {tuple(baseline.shape)}"
        )
    alphas = ((torch.arange(steps, device=inputs.device, dtype=inputs.dtype) + 0.5) / steps).view(-1, 1, 1, 1)
    maps = []
    for sample, reference in zip(inputs, baseline, strict=True):
        path = (reference + alphas * (sample - reference)).requires_grad_(True)
        with torch.enable_grad():
            scores = score(model(path))
            if scores.shape != (steps,):
                raise ModelError(f"integrated gradients: expected one score per sample, got {tuple(scores.shape)}")
            (gradient,) = torch.autograd.grad(scores.sum(), path)  # the parameters' .grad stay untouched
        maps.append(((sample - reference) * gradient.mean(dim=0)).sum(dim=0, keepdim=True))
    attribution = F.relu(F.avg_pool2d(torch.stack(maps), patch, ceil_mode=True) * patch**2)
    # each block with its neighbours: single pixels' gradients are noisy, and a lone hot block marks no region
    attribution = F.avg_pool2d(attribution, 3, stride=1, padding=1, count_include_pad=False)
    size = output_size or tuple(inputs.shape[-2:])
    upsampled = F.interpolate(attribution.float(), size=size, mode="bilinear", align_corners=False)
    return upsampled[:, 0].detach().cpu().numpy().astype(np.float32)
