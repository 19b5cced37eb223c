"""Contract tests over every registered architecture (as timm tests its registry)."""

from __future__ import annotations

import numpy as np
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


def test_lung_sound_cnn_folded_gives_the_same_logits() -> None:
    torch.manual_seed(0)
    network = create_model("lung_sound_cnn", num_classes=4)
    for module in network.modules():  # trained-looking statistics, so that the folding has work to do
        if isinstance(module, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    network.eval()
    x = torch.randn(3, 1, 50, 193)
    before = {key: value.clone() for key, value in network.state_dict().items()}
    folded = network.folded()
    with torch.no_grad():
        expected = network(x)
        np.testing.assert_allclose(folded(x), expected, rtol=1e-4, atol=1e-4)
        channels_last = folded.to(memory_format=torch.channels_last)
        np.testing.assert_allclose(
            channels_last(x.contiguous(memory_format=torch.channels_last)), expected, rtol=1e-4, atol=1e-4
        )
    assert not any(isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d) for m in folded.modules())
    assert all(torch.equal(before[key], value) for key, value in network.state_dict().items())  # untouched
