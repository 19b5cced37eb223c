"""Build the networks of a verified bundle (torch side of the engine).

Weights are read only with ``safetensors`` (tensors, no code), from the very
bytes that were matched against the manifest's checksum (``read_verified``), so
a file swapped between checking and reading cannot slip through.  A
snapshot ensemble lists one safetensors file per snapshot; each becomes one
model with the same architecture, built (and randomly initialised, ~0.1 s for
the lung CNN) once: the other snapshots start as copies of the first, and every
weight is overwritten by its own file.
"""

from __future__ import annotations

import copy

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from torch import nn

from medview.engine.bundles import read_verified
from medview.engine.manifest import ModelCard
from medview.errors import ModelError
from medview.models import create_model


def load_networks(card: ModelCard, device: torch.device | str = "cpu") -> list[nn.Module]:
    """One network per safetensors file of ``card``, weights loaded strictly, in eval mode on ``device``."""
    networks: list[nn.Module] = []
    for weight in card.weights:
        if weight.format != "safetensors":
            continue
        path = card.file_path(weight)
        data = read_verified(card, weight)
        network = copy.deepcopy(networks[0]) if networks else create_model(card.arch, **card.arch_args)
        try:
            state = load_tensors(data)
        except (SafetensorError, OSError) as error:
            raise ModelError(f"bundle {card.label}: not a readable safetensors file ({error})", path=path) from error
        try:
            result = network.load_state_dict(state, strict=False)
        except RuntimeError as error:  # a tensor of the wrong shape
            raise ModelError(
                f"bundle {card.label}: weights do not fit architecture {card.arch!r} ({error})", path=path
            ) from error
        if result.missing_keys or result.unexpected_keys:
            raise ModelError(
                f"bundle {card.label}: weights do not fit architecture {card.arch!r} "
                f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})",
                path=path,
            )
        networks.append(network.to(device).eval())
    if not networks:
        raise ModelError(f"bundle {card.label}: no safetensors weights listed", path=card.bundle_dir)
    return networks
