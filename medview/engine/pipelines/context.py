"""What every pipeline run gets from the service: the bundle, its networks, the device, progress and cancel."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from medview.engine.api import CancelCheck, ProgressCallback, Provenance
from medview.engine.manifest import ModelCard
from medview.engine.onnx_runtime import OnnxSessions, OnnxUnavailable
from medview.errors import Cancelled, ModelError

log = logging.getLogger(__name__)
#: numpy float32 batch in, numpy float32 network output out
Forward = Callable[[np.ndarray], np.ndarray]


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
    #: ONNX Runtime sessions for forward-only passes on the CPU; None: always torch
    onnx: OnnxSessions | None = None

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

    def forward_passes(self, index: int = 0, sample_shape: Sequence[int] | None = None) -> Forward:
        """Forward-only passes of network ``index``: ONNX Runtime on the CPU where it can, else torch eager.

        For inference without gradients (DESIGN.md, "Runtime rules"). The
        provenance notes say which ran; when ONNX Runtime cannot be used, or
        fails during the run, torch takes over and the note says why.
        ``sample_shape``: one input without the batch dimension, when it is not
        the bundle's ``(channels, height, width)`` image (a COVID slice group).
        """
        network = self.networks[index]

        def on_torch(inputs: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return network(self.tensor(inputs)).float().cpu().numpy()

        if self.onnx is None or self.device.type != "cpu":
            return on_torch
        label = self.card.label
        try:
            session = self.onnx.network(self.card, index, network, sample_shape)
        except OnnxUnavailable as error:
            self._note(f"forward passes on torch {torch.__version__} eager ({label}): ONNX Runtime not used, {error}")
            return on_torch
        self._note(f"forward passes on ONNX Runtime {session.version} ({label})")
        sessions, card = self.onnx, self.card
        failed: list[str] = []

        def on_onnx_runtime(inputs: np.ndarray) -> np.ndarray:
            if not failed:
                try:
                    return session(inputs)
                except Exception as error:  # noqa: BLE001 - ONNX Runtime's errors derive from Exception only
                    reason = f"ONNX Runtime failed during the run ({error})"
                    log.warning("%s: %s; going on with torch", label, reason)
                    failed.append(reason)
                    sessions.refuse(card, index, reason, sample_shape)
                    self._note(f"{reason}: the rest of the forward passes on torch {torch.__version__} eager ({label})")
            return on_torch(inputs)

        return on_onnx_runtime

    def _note(self, note: str) -> None:
        if note not in self.notes:
            self.notes.append(note)

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
