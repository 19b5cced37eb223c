"""Trained networks -> a model bundle the app accepts, proven by loading it back through the app's loader.

``export_bundle`` writes one safetensors file per network (a snapshot ensemble
has several), the manifest with every file's SHA-256 and the library versions,
then reads the folder back with ``load_manifest`` + ``load_networks`` (the same
code the viewer uses) and checks that the reloaded networks give the same
outputs as the ones in memory on the architecture's example input.

A model that ignores its input is a defect, not a demo (MODELS.md, issue 20):
given the model's validation outputs and its output on a blank input
(:class:`ResponseEvidence`), ``export_bundle`` refuses, before writing a file,
a model whose validation outputs are near-constant, that puts one class on
almost all of a (class-balanced) validation set, or that answers almost every
real input as it answers the blank one (:func:`check_responsive`).
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import math
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from sklearn.ensemble import RandomForestClassifier
from skops import io as skops_io
from torch import nn

from medview.engine.bundles import sha256_file
from medview.engine.forest import load_forest
from medview.engine.manifest import DataProvenance, InputSpec, ModelCard, WeightFile, load_manifest, write_manifest
from medview.engine.weights import load_networks
from medview.errors import ModelError
from medview.models import model_entry

log = logging.getLogger("training.export")

_VERSIONED_LIBRARIES = ("medview", "torch", "numpy", "safetensors", "timm", "scikit-learn", "skops", "librosa")

#: below this standard deviation of a class's validation probability the outputs count as constant
MIN_OUTPUT_SPREAD = 0.02
#: the largest share of a class-balanced validation set a model may put on one class / answer like a blank
MAX_CLASS_SHARE = 0.95


@dataclass(frozen=True)
class ResponseEvidence:
    """What a model answered on its validation items and on a blank input: the proof that it looks at its input.

    ``probabilities`` (n, classes) and ``labels`` (n,) are the validation
    items' class probabilities and true class indices, ``blank`` (classes,) the
    probabilities of a blank input as the app would prepare it (a uniform grey
    photo, a slice of air).  ``predicted`` (n,) are the validation decisions
    under the bundle's thresholds; None means the most probable class.
    """

    probabilities: np.ndarray
    labels: np.ndarray
    blank: np.ndarray
    predicted: np.ndarray | None = None


def check_responsive(evidence: ResponseEvidence, class_names: Sequence[str]) -> dict[str, float]:
    """Refuse (``ModelError``) a model that ignores its input; else return the three measures for the manifest.

    - ``output_spread``: the largest standard deviation of one class's
      validation probability; below :data:`MIN_OUTPUT_SPREAD` the outputs are
      near-constant.
    - ``largest_class_share``: the share of the validation set decided as one
      class, each true class weighted equally (as on a balanced set); above
      :data:`MAX_CLASS_SHARE` the model says one thing whatever it is shown.
    - ``blank_like_share``: the (class-balanced) share of validation items
      whose probabilities all lie within the spread (at least the floor) of the
      blank input's; above :data:`MAX_CLASS_SHARE` the model answers real inputs
      as it answers an empty one.  A model that looks at its input spreads its
      real answers, so a blank landing among them is fine; real answers
      bunched on the blank's are not.

    The shares weigh the classes the validation set has; it must have two at least.
    """
    probabilities = np.asarray(evidence.probabilities, dtype=float)
    labels = np.asarray(evidence.labels).astype(int)
    blank = np.asarray(evidence.blank, dtype=float).ravel()
    classes = len(class_names)
    if probabilities.ndim != 2 or probabilities.shape != (labels.size, classes) or blank.shape != (classes,):
        raise ModelError(
            f"validation evidence: expected ({labels.size}, {classes}) probabilities and {classes} blank ones, "
            f"got {probabilities.shape} and {blank.shape}"
        )
    missing = [name for index, name in enumerate(class_names) if not (labels == index).any()]
    if len(class_names) - len(missing) < 2:  # a class the data lack (ICBHI "both" in 3 patients) is no proof either way
        raise ModelError(
            f"refused: the validation set has no {', '.join(missing)} item, so it cannot show that the model tells "
            "the classes apart"
        )
    predicted = probabilities.argmax(axis=1) if evidence.predicted is None else np.asarray(evidence.predicted)
    spreads = probabilities.std(axis=0)
    spread = float(spreads.max())
    if spread < MIN_OUTPUT_SPREAD:
        raise ModelError(
            f"refused: the model's validation outputs are near-constant (the {class_names[int(spreads.argmax())]} "
            f"probability varies by a standard deviation of {spread:.4f} over {labels.size} validation items, "
            f"floor {MIN_OUTPUT_SPREAD}): it ignores its input"
        )
    shares = np.array([_balanced_mean(predicted == k, labels, classes) for k in range(classes)])
    largest = float(shares.max())
    if largest > MAX_CLASS_SHARE:
        raise ModelError(
            f"refused: the model decides {class_names[int(shares.argmax())]} on {largest:.1%} of a class-balanced "
            f"validation set (limit {MAX_CLASS_SHARE:.0%}): it gives one answer whatever it is shown"
        )
    tolerance = max(MIN_OUTPUT_SPREAD, spread)
    like_blank = np.abs(probabilities - blank).max(axis=1) <= tolerance
    blank_like = _balanced_mean(like_blank, labels, classes)
    if blank_like > MAX_CLASS_SHARE:
        raise ModelError(
            f"refused: the model answers {blank_like:.1%} of a class-balanced validation set within {tolerance:.3f} "
            f"of its answer to a blank input (limit {MAX_CLASS_SHARE:.0%}): it answers real inputs as it answers "
            "an empty one"
        )
    return {"output_spread": spread, "largest_class_share": largest, "blank_like_share": blank_like}


def _balanced_mean(flags: np.ndarray, labels: np.ndarray, classes: int) -> float:
    """The mean of ``flags`` with every true class weighing the same (the rate on a class-balanced set)."""
    return float(np.mean([flags[labels == k].mean() for k in range(classes) if (labels == k).any()]))


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries a bundle's numbers depend on."""
    versions = {}
    for name in _VERSIONED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def export_bundle(
    networks: Sequence[nn.Module],
    out_dir: Path,
    *,
    model_id: str,
    version: str,
    task: str,
    arch: str,
    arch_args: Mapping[str, Any],
    input_spec: InputSpec,
    class_names: Sequence[str],
    trained_on: DataProvenance,
    metrics: Mapping[str, float],
    thresholds: Mapping[str, float] | None = None,
    target_layer: str | None = None,
    forest: RandomForestClassifier | None = None,
    half: bool = False,
    evidence: ResponseEvidence | None = None,
) -> ModelCard:
    """Write ``networks`` (and a skin bundle's ``forest``, as skops) as bundle folder ``out_dir``.

    Metrics that are not finite (a surface distance to an empty prediction) stay
    out of the manifest, whose schema takes finite numbers; the run's report
    keeps them.  ``half`` stores floating-point tensors as fp16 (half the size); evaluate the
    networks through :func:`as_shipped` first so that the manifest's metrics are
    those of the weights that ship.  With ``evidence`` (the validation outputs
    and a blank input's), a model that ignores its input is refused
    (:func:`check_responsive`) before anything is written, and the measures
    join the manifest's metrics.  Returns the card, reloaded and checked
    through the app's own loaders.
    """
    if not networks:
        raise ValueError("export_bundle needs at least one network")
    metrics = dict(metrics)
    if evidence is not None:
        measures = check_responsive(evidence, class_names)
        log.info("the model responds to its input: %s", ", ".join(f"{k} {v:.3f}" for k, v in measures.items()))
        metrics.update({f"validation_{key}": round(value, 4) for key, value in measures.items()})
    else:
        log.warning("no validation evidence given: not checked that the model responds to its input")
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = []
    for index, network in enumerate(networks):
        suffix = f"-snapshot-{index + 1}" if len(networks) > 1 else ""
        name = f"{model_id}-{version}{suffix}.safetensors"
        state = {key: _stored(key, value, half) for key, value in network.state_dict().items()}
        save_file(state, str(out_dir / name), metadata={"arch": arch, "id": model_id, "version": version})
        role = f"snapshot-{index + 1}" if len(networks) > 1 else "weights"
        weights.append(WeightFile(path=name, sha256=sha256_file(out_dir / name), format="safetensors", role=role))
    if forest is not None:
        name = f"{model_id}-{version}-forest.skops"
        skops_io.dump(forest, out_dir / name, compression=zipfile.ZIP_DEFLATED, compresslevel=9)
        weights.append(WeightFile(path=name, sha256=sha256_file(out_dir / name), format="skops", role="forest"))
    card = ModelCard(
        id=model_id,
        version=version,
        task=task,
        arch=arch,
        arch_args=dict(arch_args),
        weights=tuple(weights),
        input=input_spec,
        class_names=tuple(class_names),
        thresholds=dict(thresholds or {}),
        target_layer=target_layer if target_layer is not None else model_entry(arch).target_layer,
        trained_on=trained_on,
        metrics={key: value for key, value in metrics.items() if math.isfinite(value)},
        library_versions=library_versions(),
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        bundle_dir=out_dir,
    )
    write_manifest(card)
    shipped = [as_shipped(network, half) for network in networks]
    check_bundle(out_dir, reference=shipped)
    if half:
        log.info(
            "fp16 weights change the outputs by at most %.2g on the example input",
            _fp16_change(networks, shipped, arch),
        )
    return card


@torch.no_grad()
def _fp16_change(networks: Sequence[nn.Module], shipped: Sequence[nn.Module], arch: str) -> float:
    example = torch.randn(2, *model_entry(arch).example_input, generator=torch.Generator().manual_seed(0))
    return max(
        float((_eval_output(full, example) - _eval_output(half, example)).abs().max())
        for full, half in zip(networks, shipped, strict=True)
    )


def _stored(key: str, tensor: torch.Tensor, half: bool) -> torch.Tensor:
    tensor = tensor.detach().cpu().contiguous()
    if not (half and tensor.is_floating_point()):
        return tensor
    rounded = tensor.half()
    if not torch.isfinite(rounded).all() and torch.isfinite(tensor).all():
        raise ModelError(f"tensor {key} does not fit fp16 (values up to {tensor.abs().max():.3g}); export without half")
    return rounded


def as_shipped(network: nn.Module, half: bool) -> nn.Module:
    """A copy of ``network`` whose weights went through the bundle's storage precision (fp16 when ``half``)."""
    shipped = copy.deepcopy(network)
    if half:
        with torch.no_grad():
            for key, tensor in shipped.state_dict().items():
                if tensor.is_floating_point():
                    tensor.copy_(_stored(key, tensor, half))
    return shipped


@torch.no_grad()
def check_bundle(bundle_dir: Path, reference: Sequence[nn.Module] | None = None) -> ModelCard:
    """Load a bundle as the app does and run each network on the architecture's example input.

    With ``reference`` networks, their outputs must match the reloaded ones.
    Raises ``ModelError`` naming the file on any failure.
    """
    card = load_manifest(bundle_dir)
    reloaded = load_networks(card)
    entry = model_entry(card.arch)
    if entry.target_layer is not None and card.target_layer is not None:
        try:
            reloaded[0].get_submodule(card.target_layer)
        except AttributeError as error:
            raise ModelError(
                f"target_layer {card.target_layer!r} is not a layer of {card.arch}", path=bundle_dir
            ) from error
    example = torch.randn(2, *entry.example_input, generator=torch.Generator().manual_seed(0))
    has_forest = any(weight.format == "skops" for weight in card.weights)
    for index, network in enumerate(reloaded):
        output = network(example)
        if has_forest:  # CNN features -> forest: the forest gives the classes
            forest = load_forest(card, output.shape[1])
            if forest.predict_proba(output.numpy()).shape != (2, len(card.class_names)):
                raise ModelError("the forest does not give one probability per class name", path=bundle_dir)
        elif output.shape[1] != len(card.class_names):
            raise ModelError(
                f"network {index + 1} gives {output.shape[1]} outputs for {len(card.class_names)} class names",
                path=bundle_dir,
            )
        if reference is not None:
            expected = _eval_output(reference[index], example)
            if not torch.allclose(output, expected, rtol=1e-4, atol=1e-5):
                raise ModelError(
                    f"network {index + 1} reloaded from the bundle computes different outputs", path=bundle_dir
                )
    return card


def _eval_output(network: nn.Module, example: torch.Tensor) -> torch.Tensor:
    """``network``'s eval-mode output on CPU, leaving the caller's network on its device and in its mode."""
    was_training = network.training
    device = next(network.parameters()).device
    try:
        return network.eval()(example.to(device)).cpu()
    finally:
        network.train(was_training)
