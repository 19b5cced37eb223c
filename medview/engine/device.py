"""Where models run: CUDA, then Apple MPS, then the CPU, unless the user's settings say otherwise.

``run_on`` runs a piece of inference on the chosen device and, when CUDA runs
out of memory, says so and runs it once more on the CPU: a workstation with a
small GPU still gets its result, slower, with a note in the result's provenance.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import torch

from medview.config import DEVICE_CHOICES, usable_cores
from medview.errors import ModelError

log = logging.getLogger(__name__)

PREFERENCES = DEVICE_CHOICES
T = TypeVar("T")


def default_compute_threads() -> int:
    """The engine's CPU threads when the settings leave it to MedView (``compute_threads`` 0): one per core.

    Measured with ``bench.thread_policy`` (every pipeline, quiet and beside two
    multi-threaded competitors, OpenMP waits passive as the app sets them) on the
    2-core reference machine: one thread per core was the fastest quiet (one
    thread took 1.2-1.9x as long) and within 1.0-1.2x of one thread under
    contention, except the COVID-19 group (1.9x); with torch's default spinning
    waits two threads collapsed instead (``medview.config.prepare_compute_environment``).
    """
    return usable_cores()


def set_compute_threads(threads: int = 0) -> int:
    """Use ``threads`` CPU threads for torch and the ONNX Runtime sessions made after this (0 = the default).

    Returns the count in use.  Sessions take ``torch.get_num_threads()`` when created, so this is called
    before the engine makes any (``Engine.__init__``).
    """
    if threads < 0:
        raise ModelError(f"compute threads: expected 0 (the default) or more, got {threads}")
    chosen = threads or default_compute_threads()
    if torch.get_num_threads() != chosen:
        torch.set_num_threads(chosen)
        log.info("compute threads: %d", chosen)
    return chosen


def available_devices() -> list[str]:
    """The device kinds torch can use on this machine, best first."""
    devices = []
    if torch.cuda.is_available():
        devices.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    devices.append("cpu")
    return devices


def choose_device(preference: str = "auto") -> torch.device:
    """The device for ``preference`` ("auto" = CUDA -> MPS -> CPU); an unavailable choice is a ``ModelError``."""
    if preference not in PREFERENCES:
        raise ModelError(f"device: expected one of {', '.join(PREFERENCES)}, got {preference!r}")
    available = available_devices()
    if preference == "auto":
        return torch.device(available[0])
    if preference not in available:
        raise ModelError(
            f"device {preference!r} was chosen in the settings but is not available here "
            f"(available: {', '.join(available)})"
        )
    return torch.device(preference)


def describe(device: torch.device) -> str:
    """A human-readable device name for the findings panel and the About dialog."""
    if device.type == "cuda":
        return f"CUDA {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "Apple MPS"
    return f"CPU ({torch.get_num_threads()} threads)"


def run_on(device: torch.device, work: Callable[[torch.device, str], T]) -> T:
    """``work(device, "")``; on CUDA out-of-memory, free the cache and run ``work(cpu, note)`` once more.

    The note says what happened, for the provenance of the result computed on the CPU.
    """
    try:
        return work(device, "")
    except torch.cuda.OutOfMemoryError as error:
        if device.type != "cuda":
            raise
        log.warning("CUDA out of memory (%s); running again on the CPU", str(error).splitlines()[0])
    # retried outside the except block: the exception's frames hold the failed attempt's GPU tensors
    torch.cuda.empty_cache()
    note = f"the GPU ({device}) ran out of memory: this result was computed on the CPU"
    return work(torch.device("cpu"), note)
