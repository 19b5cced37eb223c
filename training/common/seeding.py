"""Seeds for reproducible runs: the same seed gives the same split, the same initial weights, the same batches."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, *, deterministic: bool = True) -> torch.Generator:
    """Seed Python, numpy and torch (all devices); returns a torch generator for data loaders.

    ``deterministic`` asks cuDNN for deterministic kernels (slower, same result on
    re-runs); CPU runs are deterministic anyway.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)
