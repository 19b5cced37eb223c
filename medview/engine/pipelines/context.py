"""What every pipeline run gets from the service: the bundle, its networks, the device, progress and cancel."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from medview.engine.api import CancelCheck, ProgressCallback, Provenance
from medview.engine.manifest import ModelCard
from medview.errors import Cancelled, ModelError


@dataclass
class RunContext:
    """One run of one bundle: reports progress, honours cancel, and writes the provenance of the result."""

    card: ModelCard
    networks: Sequence[nn.Module]
    device: torch.device
    device_name: str
    progress: ProgressCallback | None = None
    cancelled: CancelCheck | None = None
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def step(self, done: int, total: int, what: str) -> None:
        """Report progress; raise ``Cancelled`` when the user asked to stop (checked between batches)."""
        if self.cancelled is not None and self.cancelled():
            raise Cancelled()
        if self.progress is not None:
            self.progress(done, total, what)

    def provenance(self, threshold: float | None) -> Provenance:
        """The provenance of the result being returned now."""
        return Provenance.of(
            self.card,
            threshold=threshold,
            device=self.device_name,
            seconds=time.perf_counter() - self.started,
            notes=self.notes,
        )

    def threshold(self, name: str, default: float = 0.5) -> float:
        """The bundle's decision threshold ``name``, else ``default``."""
        return float(self.card.thresholds.get(name, default))

    def channel_stats(self) -> tuple[Sequence[float], Sequence[float]]:
        """Mean and std per input channel: the manifest's, else those the backbone's ImageNet weights expect."""
        network = self.networks[0]
        mean = self.card.input.extra.get("mean", getattr(network, "mean", None))
        std = self.card.input.extra.get("std", getattr(network, "std", None))
        if mean is None or std is None:
            raise ModelError(
                f"bundle {self.card.label}: input.extra needs the channel mean and std", path=self.card.bundle_dir
            )
        return mean, std

    def tensor(self, array: np.ndarray) -> torch.Tensor:
        """A float32 numpy batch as a tensor on the run's device."""
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self.device)


def batches(count: int, size: int) -> Iterator[slice]:
    """Consecutive slices of ``range(count)`` of at most ``size`` items."""
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))
