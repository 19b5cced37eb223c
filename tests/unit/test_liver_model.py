"""The liver EAS U-Net of paper 001: separable blocks, EAS module, deep supervision, shapes, arguments."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medview.models import create_model, model_entry
from medview.models.liver import EAS, ECA, LiverEASUNet, SeparableConv, eca_kernel_size


@pytest.fixture(scope="module")
def network() -> LiverEASUNet:
    torch.manual_seed(0)
    model = create_model("liver_eas_unet")
    assert isinstance(model, LiverEASUNet)
    return model


def _separable_units(module: nn.Module) -> list[SeparableConv]:
    return [m for m in module.modules() if isinstance(m, SeparableConv)]


def test_every_stage_is_two_optimised_separable_units(network: LiverEASUNet) -> None:
    stages = [*network.encoder, network.bottleneck, *(stage.block for stage in network.decoder)]
    assert len(stages) == 2 * network.depth + 1 == 9
    for stage in stages:
        units = list(stage.children())
        assert len(units) == 2
        for unit in units:
            layers = list(unit.children())
            assert [type(layer) for layer in layers] == [
                nn.Conv2d,
                nn.BatchNorm2d,
                nn.LeakyReLU,
                nn.Conv2d,
                nn.BatchNorm2d,
                nn.Hardswish,
            ]
            depthwise, pointwise = layers[0], layers[3]
            assert depthwise.kernel_size == (3, 3)
            assert depthwise.groups == depthwise.in_channels
            assert pointwise.kernel_size == (1, 1)
            assert pointwise.groups == 1
    # widths 32 .. 512 along the encoder and back down the decoder
    assert [stage[1].pointwise.out_channels for stage in stages] == [32, 64, 128, 256, 512, 256, 128, 64, 32]


def test_no_dense_spatial_convolution_anywhere(network: LiverEASUNet) -> None:
    spatial = [m for m in network.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
    assert len(spatial) == 2 * 9 + 3  # two per stage plus the three atrous branches
    assert all(conv.groups == conv.in_channels for conv in spatial)
    # the stem's depth-wise conv on a one-channel slice has a depth multiplier (a full bank of 3x3 filters)
    stem = network.encoder[0][0].depthwise
    assert (stem.in_channels, stem.out_channels) == (1, 32)


def test_eas_module_is_aspp_with_eca_on_the_1x1_branch(network: LiverEASUNet) -> None:
    eas = network.eas
    assert isinstance(eas, EAS)
    assert [unit.depthwise.dilation for unit in eas.atrous] == [(6, 6), (12, 12), (18, 18)]
    assert [unit.depthwise.padding for unit in eas.atrous] == [(6, 6), (12, 12), (18, 18)]
    first = eas.branch1x1[0]
    assert isinstance(first, nn.Conv2d)
    assert first.kernel_size == (1, 1)
    assert (first.in_channels, first.out_channels) == (512, 256)
    assert isinstance(eas.branch1x1[-1], ECA)
    assert isinstance(eas.image_pool.pool, nn.AdaptiveAvgPool2d)
    assert eas.image_pool.pool.output_size == 1
    assert eas.project[0].in_channels == 5 * 256  # 1x1 + three atrous + image pooling, concatenated
    assert eas.project[0].out_channels == 512
    ecas = [m for m in network.modules() if isinstance(m, ECA)]
    assert len(ecas) == 1
    eca = ecas[0]
    # ECA-Net: |log2(256) + 1| / 2 = 4.5 -> 4 -> odd 5
    assert eca.kernel_size == 5
    assert eca.conv.kernel_size == (5,)
    assert eca.conv.padding == (2,)
    assert eca.conv.bias is None


@pytest.mark.parametrize(("channels", "kernel"), [(16, 3), (64, 3), (128, 5), (256, 5), (512, 5), (2048, 7)])
def test_eca_kernel_size_follows_eca_net(channels: int, kernel: int) -> None:
    assert eca_kernel_size(channels) == kernel


def test_eca_gates_channels_without_changing_shape() -> None:
    eca = ECA(64).eval()
    x = torch.rand(2, 64, 5, 7)
    y = eca(x)
    assert y.shape == x.shape
    ratio = y / x  # one gate in (0, 1) per channel, shared by every pixel
    assert torch.allclose(ratio, ratio[:, :, :1, :1].expand_as(ratio), atol=1e-6)
    assert ((ratio > 0) & (ratio < 1)).all()


def test_registry_entry() -> None:
    entry = model_entry("liver_eas_unet")
    assert entry.example_input == (1, 256, 256)
    assert entry.output_shape == (2, 256, 256)
    assert entry.paper_parameters is None  # the paper states no count


@pytest.mark.parametrize(("height", "width"), [(256, 256), (128, 192)])
def test_eval_output_is_final_logits_at_input_size(network: LiverEASUNet, height: int, width: int) -> None:
    network.eval()
    with torch.no_grad():
        output = network(torch.randn(1, 1, height, width))
    assert isinstance(output, torch.Tensor)
    assert output.shape == (1, 2, height, width)
    assert torch.isfinite(output).all()


def test_training_returns_final_and_every_side_output_with_gradients() -> None:
    torch.manual_seed(0)
    network = LiverEASUNet(num_classes=3).train()
    x = torch.randn(2, 1, 64, 96)
    final, sides = network(x)
    assert final.shape == (2, 3, 64, 96)
    assert len(sides) == network.depth == 4
    assert all(side.shape == (2, 3, 64, 96) for side in sides)
    # the final logits are the 1x1 fusion of the concatenated side logits
    fused = network.fuse(torch.cat(sides, dim=1))
    assert torch.allclose(final, fused)
    # a loss on the side outputs alone reaches every side head (deep supervision)
    sum(side.square().mean() for side in sides).backward()
    for head in network.side_heads:
        assert head.weight.grad is not None
        assert head.weight.grad.abs().sum() > 0
    assert network.eas.branch1x1[-1].conv.weight.grad.abs().sum() > 0
    assert network.encoder[0][0].depthwise.weight.grad.abs().sum() > 0


def test_side_heads_come_from_every_decoder_scale(network: LiverEASUNet) -> None:
    assert [head.in_channels for head in network.side_heads] == [256, 128, 64, 32]
    assert network.fuse.in_channels == 4 * 2
    assert network.fuse.out_channels == 2


def test_three_adjacent_slices_as_channels() -> None:
    network = create_model("liver_eas_unet", in_channels=3).eval()
    assert network.encoder[0][0].depthwise.in_channels == 3
    with torch.no_grad():
        assert network(torch.randn(1, 3, 64, 64)).shape == (1, 2, 64, 64)


def test_depth_and_width_are_arguments() -> None:
    network = LiverEASUNet(base_channels=16, depth=3).eval()
    assert network.eas.project[0].out_channels == 128
    assert len(network.side_heads) == 3
    with torch.no_grad():
        assert network(torch.randn(1, 1, 40, 24)).shape == (1, 2, 40, 24)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"in_channels": 0}, "in_channels: expected"),
        ({"num_classes": 1}, "num_classes: expected"),
        ({"num_classes": 2.0}, "num_classes: expected"),
        ({"base_channels": 31}, "base_channels: expected an even"),
        ({"depth": 0}, "depth: expected"),
        ({"depth": True}, "depth: expected"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LiverEASUNet(**kwargs)


def test_input_not_divisible_by_the_depth_is_rejected(network: LiverEASUNet) -> None:
    network.eval()
    with pytest.raises(ValueError, match="divisible by 16"):
        network(torch.randn(1, 1, 100, 256))
