"""Forward-only passes of the segmentation U-Nets through ONNX Runtime on the CPU (DESIGN.md, "Runtime rules").

On two CPU cores ONNX Runtime runs the liver EAS U-Net about 5x faster than
eager torch (PLATFORM.md: depth-wise convolutions are where eager torch is
slowest).  The graph is exported from the bundle's own network (its weights
were checksum-verified when it was loaded) on first use, checked against torch
on a random batch, and cached under the user's cache folder.  The file name is
the hash of everything the graph depends on: the weights file's sha256, arch and
arch_args, the input shape, the torch version, the opset and this module's
export procedure.  A sidecar JSON holds the graph's own sha256, so a damaged or
half-written file is noticed, deleted and exported again.  An ONNX file is
protobuf: reading it runs no code.  Torch stays for gradients (Grad-CAM),
training and CUDA.

Everything that can go wrong here ends as ``OnnxUnavailable`` with a readable
reason, and the caller goes on with eager torch and says so in the result's
provenance: the speed-up is never worth a failed run.

The exporter is torch's TorchScript-based one (``dynamo=False``): it needs only
the ``onnx`` package beside torch, where the torch.export-based one also needs
onnxscript and onnx-ir.  Torch is pinned (2.13.0), so its deprecation does not
bite; the graph is checked against torch either way.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medview.engine.manifest import ModelCard

log = logging.getLogger(__name__)

# onnxruntime (1.31) sends usage telemetry to Microsoft ~10 s after a session starts and keeps a device id in
# ~/.cache/Microsoft; only this variable, read when onnxruntime loads, turns that off (its
# disable_telemetry_events() does not). Set here, before anything imports onnxruntime, so every process that
# runs the engine (the app, tests, benchmarks, training) keeps off the network.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

#: ONNX opset of the exported graphs (the TorchScript exporter goes up to 20; ONNX Runtime 1.31 runs them all)
OPSET = 17
#: bumped when the export procedure below changes, so older cached graphs are not reused
EXPORT_VERSION = 1
INPUT_NAME = "slices"
OUTPUT_NAME = "logits"
#: a cached graph not used for this long is deleted when an engine starts (its bundle was replaced or removed)
UNUSED_GRAPH_DAYS = 60
#: the exported graph must give torch's logits within this (seen: 2e-5 on the liver U-Net, 1e-6 on the lung U-Net)
VERIFY_TOLERANCE = 1e-3


class OnnxUnavailable(Exception):
    """ONNX Runtime cannot run this network here; the message says why (it goes into the provenance note)."""


@dataclass(frozen=True, eq=False)
class OnnxNetwork:
    """One network as an ONNX Runtime session: a float32 batch (n, c, h, w) in, float32 logits out."""

    session: Any  # onnxruntime.InferenceSession; onnxruntime is imported only when a session is wanted
    version: str  # of ONNX Runtime
    path: Path  # the cached graph

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(inputs, dtype=np.float32)
        return np.asarray(self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0])


class OnnxSessions:
    """The ONNX Runtime sessions of one engine: built once per network, input shape and process.

    Graphs are cached in ``folder``. A network that cannot run on ONNX Runtime
    is remembered as such (with the reason), so a failing export is not tried
    again on every run.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._known: dict[str, tuple[str, OnnxNetwork | str]] = {}  # graph key -> (weights sha256, session or why not)
        self._lock = threading.Lock()
        prune_unused(self.folder)

    def network(
        self, card: ModelCard, index: int, network: nn.Module, sample_shape: Sequence[int] | None = None
    ) -> OnnxNetwork:
        """The session of ``card``'s network ``index`` (``network``, on the CPU); ``OnnxUnavailable`` says why not.

        ``sample_shape``: one input without the batch dimension; by default the
        bundle's image input, ``(channels, height, width)``.
        """
        shape = tuple(sample_shape) if sample_shape is not None else default_sample_shape(card)
        key = graph_key(card, index, shape)
        with self._lock:
            known = self._known.get(key, (None, None))[1]
            if known is None:
                try:
                    known = load_or_export(card, index, network, self.folder, shape)
                except OnnxUnavailable as error:
                    log.warning("%s: ONNX Runtime not used, forward passes on torch (%s)", card.label, error)
                    known = str(error)
                self._known[key] = (_weights(card)[index].sha256, known)
        if isinstance(known, str):
            raise OnnxUnavailable(known)
        return known

    def refuse(self, card: ModelCard, index: int, reason: str, sample_shape: Sequence[int] | None = None) -> None:
        """Stop using ONNX Runtime for this network in this process (it failed during a run)."""
        shape = tuple(sample_shape) if sample_shape is not None else default_sample_shape(card)
        with self._lock:
            self._known[graph_key(card, index, shape)] = (_weights(card)[index].sha256, reason)

    def retain(self, cards: Sequence[ModelCard]) -> None:
        """Let go of the sessions of networks no longer in ``cards`` (bundles removed or replaced)."""
        current = {weight.sha256 for card in cards for weight in _weights(card)}
        with self._lock:
            for key in [key for key, (weights, _) in self._known.items() if weights not in current]:
                del self._known[key]


def default_sample_shape(card: ModelCard) -> tuple[int, ...]:
    """One image input of ``card`` without the batch dimension: ``(channels, height, width)``."""
    if len(card.input.size) != 2:
        raise OnnxUnavailable(f"expected a 2-D input size, got {tuple(card.input.size)}")
    return (card.input.channels, *card.input.size)


def graph_key(card: ModelCard, index: int, sample_shape: Sequence[int]) -> str:
    """sha256 of everything the exported graph of ``card``'s network ``index`` depends on."""
    fields = {
        "weights_sha256": _weights(card)[index].sha256,
        "arch": card.arch,
        "arch_args": card.arch_args,
        "input": list(sample_shape),
        "torch": torch.__version__,
        "opset": OPSET,
        "export": EXPORT_VERSION,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def graph_path(card: ModelCard, index: int, folder: Path, sample_shape: Sequence[int]) -> Path:
    """Where the graph of ``card``'s network ``index`` for inputs of ``sample_shape`` is cached in ``folder``."""
    return Path(folder) / f"{card.arch}-{graph_key(card, index, sample_shape)}.onnx"


def load_or_export(
    card: ModelCard, index: int, network: nn.Module, folder: Path, sample_shape: Sequence[int]
) -> OnnxNetwork:
    """The cached graph of the network as a session, exported (and cached) first when there is none."""
    runtime = _import_runtime()
    shape = (1, *sample_shape)
    path = graph_path(card, index, folder, sample_shape)
    data = _read_cached(path)
    if data is not None:
        try:
            return OnnxNetwork(_session(runtime, data), runtime.__version__, path)
        except OnnxUnavailable as error:
            log.warning("cached ONNX graph %s refused (%s): exporting it again", path, error)
            _remove(path)
    started = time.perf_counter()
    data = export_onnx(network, shape)
    session = _session(runtime, data)
    _verify(session, network, shape)
    _write_cached(path, data, card)
    log.info(
        "%s: exported to ONNX (opset %s, %.1f MB) and checked against torch in %.1f s: %s",
        card.label,
        OPSET,
        len(data) / 1e6,
        time.perf_counter() - started,
        path,
    )
    return OnnxNetwork(session, runtime.__version__, path)


def export_onnx(network: nn.Module, shape: Sequence[int]) -> bytes:
    """The ONNX graph of ``network`` in eval mode for inputs ``shape`` (the batch dimension left dynamic)."""
    example = torch.zeros((1, *shape[1:]), dtype=torch.float32)
    buffer = io.BytesIO()
    try:
        # The tracer warns where the networks check their input's H and W in Python: those become
        # constants, which is right (H and W are fixed by the bundle's input size; only the batch varies,
        # and _verify runs another batch size). The legacy exporter warns that it is deprecated.
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                network.eval(),
                (example,),
                buffer,  # type: ignore[arg-type]  # a file object works (documented), the stub names paths only
                dynamo=False,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )
    except Exception as error:  # any exporter failure means "use torch", with the reason
        raise OnnxUnavailable(f"export to ONNX failed: {type(error).__name__}: {error}") from error
    return buffer.getvalue()


def _import_runtime() -> Any:
    try:
        import onnxruntime
    except (ImportError, OSError) as error:  # OSError: a shared library of the wheel did not load
        raise OnnxUnavailable(f"onnxruntime cannot be imported ({error})") from error
    return onnxruntime


def _weights(card: ModelCard) -> list[Any]:
    # load_networks builds one network per safetensors file, in this order
    return [weight for weight in card.weights if weight.format == "safetensors"]


def _session(runtime: Any, data: bytes) -> Any:
    options = runtime.SessionOptions()
    options.graph_optimization_level = runtime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: its warnings go to stderr, not to logging
    # Idle pool threads sleep instead of spinning: with 2 cores the GUI thread and the pipeline's numpy work
    # between batches need the CPU, and spinning was no faster (8-slice batches of the liver U-Net, 2 threads).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # No memory pattern: it plans one more arena block per input shape, and the batch dimension varies (the
    # last batch of a series, the 2-slice check): ~600 MB more resident after a 148-slice liver run, no faster.
    options.enable_mem_pattern = False
    try:
        return runtime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # ONNX Runtime's errors derive from Exception only
        raise OnnxUnavailable(f"ONNX Runtime cannot load the graph: {error}") from error


def _verify(session: Any, network: nn.Module, shape: Sequence[int]) -> None:
    """The session gives torch's logits on a random batch of 2 (the export traced a batch of 1)."""
    sample = torch.rand((2, *shape[1:]), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = network.eval()(sample)
    if not isinstance(expected, torch.Tensor):
        raise OnnxUnavailable(f"expected the network to return one tensor in eval mode, got {type(expected).__name__}")
    try:
        got = session.run([OUTPUT_NAME], {INPUT_NAME: sample.numpy()})[0]
    except Exception as error:  # ONNX Runtime's errors derive from Exception only
        raise OnnxUnavailable(f"ONNX Runtime failed on a test batch: {error}") from error
    reference = expected.float().numpy()
    if got.shape != reference.shape:
        raise OnnxUnavailable(f"the exported graph gives shape {got.shape}, torch {reference.shape}")
    difference = float(np.max(np.abs(got - reference)))
    if not np.allclose(got, reference, atol=VERIFY_TOLERANCE, rtol=VERIFY_TOLERANCE):
        raise OnnxUnavailable(f"the exported graph disagrees with torch (largest difference {difference:.3g})")


def prune_unused(folder: Path, days: float = UNUSED_GRAPH_DAYS) -> list[Path]:
    """Delete the cached graphs (with their sidecars) not used for ``days``: graphs of replaced bundles would
    otherwise pile up, a few MB each.  A graph is marked used each time it is read.  Returns what was deleted."""
    cutoff = time.time() - days * 86400
    deleted = []
    for path in sorted(Path(folder).glob("*.onnx")):
        try:
            unused = path.stat().st_mtime < cutoff
        except OSError:
            continue
        if unused:
            _remove(path)
            deleted.append(path)
    if deleted:
        log.info("deleted %d ONNX graph(s) unused for %g days from %s", len(deleted), days, folder)
    return deleted


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _read_cached(path: Path) -> bytes | None:
    """The cached graph's bytes if they match the sha256 of its sidecar, else None (a damaged pair is removed)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        log.warning("cached ONNX graph %s unreadable (%s): exporting it again", path, error)
        _remove(path)
        return None
    try:
        expected = json.loads(_sidecar(path).read_text(encoding="utf-8"))["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("cached ONNX graph %s has no readable checksum (%s): exporting it again", path, error)
        _remove(path)
        return None
    if hashlib.sha256(data).hexdigest() != expected:
        log.warning("cached ONNX graph %s does not match its checksum: exporting it again", path)
        _remove(path)
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # used now: kept by prune_unused
    return data


def _write_cached(path: Path, data: bytes, card: ModelCard) -> None:
    """Graph, then sidecar, each written atomically; a failure is logged (the session runs from memory)."""
    about = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "bundle": card.label,
        "arch": card.arch,
        "torch": torch.__version__,
        "opset": OPSET,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, data)
        _write_atomic(_sidecar(path), json.dumps(about, indent=2).encode())
    except OSError as error:
        log.warning("could not cache the ONNX graph in %s (%s): it will be exported again next time", path, error)


def _write_atomic(path: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _remove(path: Path) -> None:
    for stale in (path, _sidecar(path)):
        try:
            stale.unlink(missing_ok=True)
        except OSError as error:
            log.warning("could not delete the damaged ONNX cache file %s: %s", stale, error)
