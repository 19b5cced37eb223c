"""Contract tests over every registered architecture (as timm tests its registry)."""

from __future__ import annotations

import pytest
import torch

from medview.engine.manifest import ARCHITECTURES
from medview.errors import ModelError
from medview.models import create_model, list_models, model_entry


def test_registry_matches_the_manifest_allow_list() -> None:
    assert set(list_models()) == set(ARCHITECTURES)


@pytest.mark.parametrize("arch", list_models())
def test_output_shape_and_target_layer(arch: str) -> None:
    entry = model_entry(arch)
    network = create_model(arch).eval()
    activations: list[torch.Tensor] = []
    if entry.target_layer is not None:
        layer = network.get_submodule(entry.target_layer)
        layer.register_forward_hook(lambda _module, _inputs, output: activations.append(output))
    with torch.no_grad():
        output = network(torch.randn(2, *entry.example_input))
    assert tuple(output.shape) == (2, *entry.output_shape)
    assert torch.isfinite(output).all()
    if entry.target_layer is not None:
        # Grad-CAM weighs the channels of a spatial feature map: the layer must give one
        assert activations, f"target layer {entry.target_layer} is not on the forward path"
        assert activations[0].ndim == 4


@pytest.mark.parametrize("arch", [a for a in list_models() if model_entry(a).paper_parameters])
def test_parameter_count_matches_the_paper(arch: str) -> None:
    entry = model_entry(arch)
    count = sum(p.numel() for p in create_model(arch).parameters())
    assert entry.paper_parameters is not None
    # papers round their counts (004 says "4.9M"): within 2 % of the stated figure
    assert count == pytest.approx(entry.paper_parameters, rel=0.02)


def test_lung_sound_cnn_follows_table_one() -> None:
    network = create_model("lung_sound_cnn", num_classes=2)
    convs = [m for m in network.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 128, 256, 256, 512, 512]
    assert [c.stride[0] for c in convs] == [1, 2, 1, 2, 1, 2, 1]
    assert all(c.kernel_size == (3, 3) for c in convs)
    # valid padding reproduces the table's frequency sizes 50 -> 48 -> 23 -> 21 -> 10 -> 8 -> 3 -> 1
    sizes, x = [], torch.randn(1, 1, 50, 193)
    for block in network.features:
        x = block(x)
        sizes.append(x.shape[2])
    assert sizes == [48, 23, 21, 10, 8, 3, 1]
    assert network(torch.randn(2, 1, 50, 193)).shape == (2, 2)
    with pytest.raises(ValueError, match="expected 2 or 4"):
        create_model("lung_sound_cnn", num_classes=3)


def test_unknown_architecture_and_bad_arguments_are_model_errors() -> None:
    with pytest.raises(ModelError, match="unknown architecture"):
        create_model("resnet_from_the_internet")
    with pytest.raises(ModelError, match="cannot be built"):
        create_model("lung_sound_cnn", depth=12)
