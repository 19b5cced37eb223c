"""The papers' losses, and the training steps built from them for :func:`training.common.loop.fit`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from training.common.loop import LossStep

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, targets) -> mean loss


def classification_step(loss: Loss) -> LossStep:
    """A step for batches of (inputs, class index): the loss and the number of correct argmax predictions."""

    def step(model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, int, int]:
        inputs, labels = batch[0].to(device), batch[1].to(device)
        logits = model(inputs)
        return loss(logits, labels), int((logits.argmax(1) == labels).sum()), len(labels)

    return step


def segmentation_step(loss: Loss) -> LossStep:
    """A step for batches of (slices, masks); a deep-supervision network's side outputs get the loss too.

    The "correct" count is the pixel accuracy summed over the slices of the batch (a fraction per slice).
    """

    def step(model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, int, int]:
        inputs, target = batch[0].to(device), batch[1].to(device)
        output = model(inputs)
        final, sides = output if isinstance(output, tuple) else (output, [])
        total = loss(final, target) + sum((loss(side, target) for side in sides), torch.zeros((), device=device))
        correct = float((final.argmax(1) == target).float().mean(dim=(1, 2)).sum())
        return total, correct, len(target)

    return step


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Categorical cross-entropy in float32 (mixed-precision logits included)."""
    return functional.cross_entropy(logits.float(), labels)


def inverse_frequency_weights(labels: Sequence[int] | np.ndarray, classes: int) -> torch.Tensor:
    """A weight per class: inverse frequency over the classes present (absent ones 0), a mean of 1 per item.

    So a minority class counts as much as the majority in the loss (60 normal against 9 crackle
    cycles, 116 clear against 30 CAP slices); scikit-learn's ``class_weight="balanced"``.
    """
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=classes).astype(np.float64)
    present = max(int((counts > 0).sum()), 1)
    return torch.tensor(
        np.where(counts > 0, counts.sum() / (present * np.maximum(counts, 1)), 0.0), dtype=torch.float32
    )


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with a weight per class (inverse frequencies, for a minority class to count)."""
    return functional.cross_entropy(logits.float(), labels, weight=weights.to(logits.device))


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Cross-entropy + soft Dice loss of class 1 (liver, lung), smoothed by ``eps`` so an empty slice stays finite."""
    probability = torch.softmax(logits.float(), dim=1)[:, 1]
    foreground = (target == 1).float()
    dice = (2 * (probability * foreground).sum() + eps) / (probability.sum() + foreground.sum() + eps)
    return functional.cross_entropy(logits.float(), target) + (1 - dice)


def focal_loss(
    logits: torch.Tensor, labels: torch.Tensor, gamma: float, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean focal loss (Lin et al. 2017): -alpha_t (1 - p_t)^gamma log(p_t); alpha_t = ``weights[label]`` or 1.

    With weights the mean is over the weights (as cross-entropy's weighted mean), so the
    loss keeps its scale whatever the class mix of a batch.
    """
    log_p = functional.log_softmax(logits.float(), dim=1).gather(1, labels[:, None])[:, 0]
    losses = -((1 - log_p.exp()) ** gamma) * log_p
    if weights is None:
        return losses.mean()
    alpha = weights.to(losses.device)[labels]
    return (alpha * losses).sum() / alpha.sum()
