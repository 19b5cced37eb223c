"""The papers' losses, shared where two tasks use the same one."""

from __future__ import annotations

import torch
from torch.nn import functional


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Cross-entropy + soft Dice loss of class 1 (liver, lung), smoothed by ``eps`` so an empty slice stays finite."""
    probability = torch.softmax(logits.float(), dim=1)[:, 1]
    foreground = (target == 1).float()
    dice = (2 * (probability * foreground).sum() + eps) / (probability.sum() + foreground.sum() + eps)
    return functional.cross_entropy(logits.float(), target) + (1 - dice)


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float) -> torch.Tensor:
    """Mean focal loss (Lin et al. 2017) without class weights: -(1 - p_t)^gamma * log(p_t)."""
    log_p = functional.log_softmax(logits.float(), dim=1).gather(1, labels[:, None])[:, 0]
    return (-((1 - log_p.exp()) ** gamma) * log_p).mean()
