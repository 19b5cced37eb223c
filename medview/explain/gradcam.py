"""Grad-CAM (Selvaraju et al. 2017) with forward hooks on the layer a bundle names.

Own hooks rather than the ``grad-cam`` package (pytorch-grad-cam): that package
always rescales each map to [0, 1] by its own maximum, which would make the
"absolute scale" option (comparing slices or photos on one scale) impossible;
it is published as a source distribution only and pulls matplotlib, ttach and
tqdm into an offline install; and what MedView needs is small: weight each
channel of the target layer's activation by the mean gradient of a score, sum,
ReLU, upsample.  The layer is resolved with ``model.get_submodule``; the score is
a class logit or any function of the output (the skin pipeline weights the CNN's
1000 features by the forest's feature importances).

Also handled here: frozen networks (no parameter needs a gradient, so the
activation is made a leaf that does), networks that apply the layer to a batch
of slices inside one sample (the COVID CNN + biLSTM: one map per slice of the
group), and cuDNN's refusal to run an LSTM backward pass in eval mode on CUDA
(cuDNN is disabled for the pass).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medview.errors import ModelError

Score = int | Callable[[torch.Tensor], torch.Tensor]
_CUDNN_LOCK = threading.Lock()


def _cudnn_disabled(on_cuda: bool) -> contextlib.AbstractContextManager[object]:
    """cuDNN off for a CUDA pass (its RNN backward refuses eval mode); nothing at all on the CPU."""
    return torch.backends.cudnn.flags(enabled=False) if on_cuda else contextlib.nullcontext()


def grad_cam(
    model: nn.Module,
    inputs: torch.Tensor,
    layer: str,
    score: Score,
    *,
    output_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Raw (non-normalised, ReLU'd) Grad-CAM maps, float32, one per activation of ``layer``.

    ``score`` is a class index (its logit is explained, per sample) or a function
    of the model output returning one score per sample.  Maps are bilinearly
    upsampled to ``output_size`` (default: the spatial size of ``inputs``).
    The result has one map per time ``layer`` saw a sample: ``(batch, h, w)``
    for an image classifier, ``(batch * slices, h, w)`` for a slice sequence.
    """
    return grad_cam_and_output(model, inputs, layer, score, output_size=output_size)[0]


def grad_cam_and_output(
    model: nn.Module,
    inputs: torch.Tensor,
    layer: str,
    score: Score,
    *,
    output_size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, torch.Tensor]:
    """``grad_cam``'s maps and the model's output (detached) of the same forward pass.

    A caller that needs both the prediction and its explanation of an input
    runs the network once instead of twice.
    """
    try:
        module = model.get_submodule(layer)
    except AttributeError as error:
        raise ModelError(f"Grad-CAM: the model has no layer {layer!r}") from error
    captured: list[torch.Tensor] = []
    thread = threading.get_ident()

    def keep(_module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        if threading.get_ident() != thread:  # the engine shares networks: another worker's forward pass
            return output
        if not output.requires_grad:  # frozen network: let the gradient start here
            output = output.detach().requires_grad_(True)
        captured.append(output)
        return output

    handle = module.register_forward_hook(keep)
    # cuDNN flags are process-wide: one CUDA Grad-CAM at a time switches them off and back
    one_at_a_time = _CUDNN_LOCK if inputs.is_cuda else contextlib.nullcontext()
    try:
        with torch.enable_grad(), one_at_a_time, _cudnn_disabled(inputs.is_cuda):
            output = model(inputs)
            scores = output[:, score] if isinstance(score, int) else score(output)
            if scores.ndim != 1 or scores.shape[0] != inputs.shape[0]:
                raise ModelError(f"Grad-CAM: expected one score per sample, got shape {tuple(scores.shape)}")
            if not captured:
                raise ModelError(f"Grad-CAM: layer {layer!r} is not on the forward path")
            activation = captured[-1]
            if activation.ndim != 4:
                raise ModelError(f"Grad-CAM: layer {layer!r} does not give a spatial feature map")
            # autograd.grad rather than backward(): the parameters' .grad stay untouched
            (gradient,) = torch.autograd.grad(scores.sum(), activation)
    finally:
        handle.remove()
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    cams = F.relu((weights * activation).sum(dim=1, keepdim=True)).detach()
    size = output_size or tuple(inputs.shape[-2:])
    cams = F.interpolate(cams.float(), size=size, mode="bilinear", align_corners=False)
    return cams[:, 0].cpu().numpy().astype(np.float32), output.detach()
