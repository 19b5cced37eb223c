"""Paper 004 at inference: each respiratory cycle -> chunks -> snapshot ensemble -> class probabilities.

Exactly the paper's chain: resample the recording to 22,050 Hz, cut each cycle
into 9 s segments with sample padding, log-mel + z-score, 2 chunks of 193 frames
per segment (``medview.preprocess.audio``, shared with training), softmax of
every snapshot on every chunk, then the mean over the cycle's chunks and over
the snapshots; the argmax is the cycle's label.

Speed (bench/lung_sound.py): the front end runs once per recording, all chunks
of all cycles go through each snapshot in batches, and each snapshot runs in its
inference form (``inference_form``: BatchNorms folded into the convolutions,
channels-last on the CPU, where oneDNN then needs no layout conversion between
layers), built once per loaded network.  The probabilities are those of the
networks as trained, up to float rounding.  Tried and not used: ONNX Runtime
(no faster end to end on 2 cores, and a graph export per snapshot on first use)
and an int8 graph (2.4x faster, but it changed the label of 1 chunk in 10 on the
ICBHI recordings).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from itertools import chain

import numpy as np
import torch
from torch import nn

from medview.engine.api import ClassScores, LungSoundResult
from medview.engine.pipelines.context import RunContext, batches
from medview.errors import InputError, ModelError
from medview.io.audio import Recording
from medview.preprocess.audio import SAMPLE_RATE, cycle_chunks, resample

BATCH = 32  # chunks per forward pass (the paper trains with batch 32)


_forms: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[object, ...], nn.Module]] = weakref.WeakKeyDictionary()
_forms_lock = threading.Lock()


def inference_form(network: nn.Module, device: torch.device) -> nn.Module:
    """What runs ``network``'s forward pass here: its folded form (``LungSoundCNN.folded``) when it has one
    and is in eval mode, channels-last on the CPU; built once and kept while ``network`` lives and is unchanged.

    "Unchanged" is checked by the storage and version counter of every parameter
    and buffer, so a network that was trained further or reloaded in between is
    folded again instead of answering with stale weights.
    """
    fold = getattr(network, "folded", None)
    if fold is None or network.training:
        return network
    state = tuple((t.data_ptr(), t._version) for t in chain(network.parameters(), network.buffers()))
    key = (str(device), state)
    with _forms_lock:
        cached = _forms.get(network)
        if cached is not None and cached[0] == key:
            return cached[1]
    form = fold().eval()
    if device.type == "cpu":
        form = form.to(memory_format=torch.channels_last)
    with _forms_lock:
        _forms[network] = (key, form)
    return form


@torch.no_grad()
def snapshot_probabilities(
    networks: Sequence[nn.Module],
    inputs: np.ndarray,
    device: torch.device,
    step: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """(chunks, classes): softmax of every snapshot on every chunk, averaged over the snapshots.

    The ensemble step of paper 004, shared by this pipeline and training's evaluation.
    """
    total = len(networks) * len(inputs)
    probabilities: np.ndarray | None = None
    done = 0
    layout = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    for network in networks:
        forward = inference_form(network, device)
        for part in batches(len(inputs), BATCH):
            if step is not None:
                step(done, total)
            batch_input = torch.from_numpy(np.ascontiguousarray(inputs[part], dtype=np.float32)).to(device)
            logits = forward(batch_input.contiguous(memory_format=layout))
            batch = torch.softmax(logits.float(), dim=1).cpu().numpy().astype(np.float64)
            if probabilities is None:
                probabilities = np.zeros((len(inputs), batch.shape[1]))
            probabilities[part] += batch
            done += part.stop - part.start
    if step is not None:
        step(total, total)
    if probabilities is None:
        raise ValueError("snapshot_probabilities needs at least one network and one chunk")
    return probabilities / len(networks)


def cycle_inputs(recording: Recording, cycles: Sequence[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """The front end: every CNN input of every cycle, shape (n, 1, 50, 193), and the index of the cycle of each.

    The recording is resampled once; each cycle is cut from the resampled signal.
    """
    signal = resample(recording.samples, recording.sample_rate, SAMPLE_RATE)
    chunks, owners = [], []
    for index, (start_s, end_s) in enumerate(cycles):
        first, last = round(start_s * SAMPLE_RATE), min(round(end_s * SAMPLE_RATE), signal.size)
        if last <= first:
            raise InputError(
                f"cycle {index + 1} ({start_s:.3f}-{end_s:.3f} s) holds no samples of the recording "
                f"({recording.duration_s:.3f} s long)",
                path=recording.path,
            )
        cycle = cycle_chunks(signal[first:last])
        chunks.append(cycle)
        owners.extend([index] * len(cycle))
    return np.concatenate(chunks), np.asarray(owners)


@torch.no_grad()
def classify_cycles(
    context: RunContext, recording: Recording, cycles: Sequence[tuple[float, float]]
) -> LungSoundResult:
    """Class probabilities of every cycle ``(start_s, end_s)`` of ``recording``."""
    if not cycles:
        raise InputError("no respiratory cycles to classify", path=recording.path)
    rate = context.card.input.sample_rate
    if rate is not None and rate != SAMPLE_RATE:
        raise ModelError(
            f"bundle {context.card.label}: trained at {rate} Hz, this pipeline prepares {SAMPLE_RATE} Hz (paper 004)",
            path=context.card.bundle_dir,
        )
    inputs, owner = cycle_inputs(recording, cycles)
    probabilities = snapshot_probabilities(
        context.networks,
        inputs,
        context.device,
        lambda done, total: context.step(done, total, "classifying breathing cycles"),
    )

    scores = []
    for index in range(len(cycles)):
        mean = probabilities[owner == index].mean(axis=0)
        scores.append(ClassScores(dict(zip(context.card.class_names, mean.tolist(), strict=True))))
    return LungSoundResult(
        provenance=context.provenance(threshold=None),
        class_names=context.card.class_names,
        cycles=tuple((float(a), float(b)) for a, b in cycles),
        scores=tuple(scores),
        snapshots=len(context.networks),
        chunks_per_cycle=tuple(int((owner == i).sum()) for i in range(len(cycles))),
    )
