"""Allow-listed model constructors: ``register_model`` / ``create_model`` (after timm's registry).

Bundles name their architecture by id; only ids in ``medview.tasks.ARCHITECTURES``
can be registered, so a manifest can never make MedView build something this
code does not define.  Each entry also carries what the contract tests need: an
example input shape, the Grad-CAM target layer, and the paper's parameter count
where the paper states one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from medview.errors import ModelError
from medview.tasks import ARCHITECTURES

ModelFactory = TypeVar("ModelFactory", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class ModelEntry:
    """A registered architecture and its facts."""

    arch: str
    factory: Callable[..., nn.Module]
    example_input: tuple[int, ...]  # one sample, without the batch dimension
    output_shape: tuple[int, ...]  # the output of one example input with default arguments, without batch
    target_layer: str | None  # for Grad-CAM, resolved with ``model.get_submodule``
    paper_parameters: int | None = None  # as the paper states it (rounded), for the contract test


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    arch: str,
    *,
    example_input: tuple[int, ...],
    output_shape: tuple[int, ...],
    target_layer: str | None,
    paper_parameters: int | None = None,
) -> Callable[[ModelFactory], ModelFactory]:
    """Class or function decorator that registers a model constructor under an allow-listed id."""

    def decorate(factory: ModelFactory) -> ModelFactory:
        if arch not in ARCHITECTURES:
            raise ValueError(f"{arch!r} is not in medview.tasks.ARCHITECTURES: add it there first")
        if arch in _REGISTRY:
            raise ValueError(f"architecture {arch!r} is registered twice")
        _REGISTRY[arch] = ModelEntry(arch, factory, example_input, output_shape, target_layer, paper_parameters)
        return factory

    return decorate


def model_entry(arch: str) -> ModelEntry:
    """The registry entry of ``arch``; ``ModelError`` for an id this build does not define."""
    try:
        return _REGISTRY[arch]
    except KeyError:
        raise ModelError(f"unknown architecture {arch!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def create_model(arch: str, **kwargs: Any) -> nn.Module:
    """Build architecture ``arch`` with the constructor arguments a manifest records."""
    entry = model_entry(arch)
    try:
        return entry.factory(**kwargs)
    except TypeError as error:  # wrong or missing constructor arguments in a manifest
        raise ModelError(f"architecture {arch!r} cannot be built with {kwargs}: {error}") from error


def list_models() -> list[str]:
    """Registered architecture ids, sorted."""
    return sorted(_REGISTRY)
