"""The paper-002 networks: lung U-Net, slice CNN (stage 1) and frozen CNN + biLSTM (stage 2)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medview.explain import grad_cam
from medview.models import create_model, model_entry
from medview.models.covid import CLASS_NAMES, CovidCNNBiLSTM, CovidSliceCNN, LungUNet

SMALL_CNN = {"filters": [4, 8, 12, 16]}  # 40-value slice feature, keeps the stage-2 tests fast


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --------------------------------------------------------------------------- lung U-Net


def test_lung_unet_gives_two_logits_per_pixel() -> None:
    network = create_model("lung_unet").eval()
    assert isinstance(network, LungUNet)
    with torch.no_grad():
        output = network(torch.randn(1, 1, 256, 256))
    assert output.shape == (1, 2, 256, 256)
    assert model_entry("lung_unet").target_layer is None
    # four poolings: the bottleneck sees 16 x 16 and 16 * 2**4 = 256 channels
    assert network.bottleneck[0].out_channels == 256
    assert sum(isinstance(m, nn.MaxPool2d) for m in network.modules()) == 1  # one pool module, used 4 times
    assert len(network.down) == 4


def test_lung_unet_refuses_sizes_the_poolings_cannot_halve() -> None:
    network = create_model("lung_unet", base_filters=4).eval()
    with pytest.raises(ValueError, match="expected multiples of 16"):
        network(torch.randn(1, 1, 250, 256))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_filters": 0}, "base_filters: expected an integer >= 1, got 0"),
        ({"depth": 7}, "depth: expected an integer from 1 to 6"),
        ({"num_classes": 1}, "num_classes: expected an integer >= 2, got 1"),
        ({"in_channels": 1.5}, "in_channels: expected an integer >= 1, got 1.5"),
    ],
)
def test_lung_unet_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        LungUNet(**kwargs)


# --------------------------------------------------------------------------- stage 1: slice CNN


def test_slice_cnn_has_four_3x3_stride_2_convolutions_with_the_decided_filters() -> None:
    network = create_model("covid_slice_cnn")
    convs = [m for m in network.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 256]
    assert all(c.kernel_size == (3, 3) and c.stride == (2, 2) for c in convs)
    assert sum(isinstance(m, nn.ReLU) for m in network.modules()) == 4
    assert network.get_submodule(model_entry("covid_slice_cnn").target_layer) is network.blocks[3]


def test_slice_feature_is_the_concatenated_global_max_pools() -> None:
    network = create_model("covid_slice_cnn").eval()
    x = torch.randn(2, 1, 256, 256)
    outputs: list[torch.Tensor] = []
    for block in network.blocks:
        block.register_forward_hook(lambda _m, _i, output: outputs.append(output))
    with torch.no_grad():
        feature = network.forward_features(x)
        logits = network(x)
    assert feature.shape == (2, 32 + 64 + 128 + 256) == (2, network.feature_size)
    assert logits.shape == (2, len(CLASS_NAMES))
    # max (not mean) over each layer's whole map, in layer order
    expected = torch.cat([o.amax(dim=(2, 3)) for o in outputs[:4]], dim=1)
    torch.testing.assert_close(feature, expected)
    assert [o.shape[-1] for o in outputs[:4]] == [128, 64, 32, 16]
    custom = CovidSliceCNN(filters=[8, 16, 24, 40]).eval()
    assert custom.forward_features(torch.randn(1, 1, 64, 64)).shape == (1, 88)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"filters": [32, 64, 128]}, "filters: expected 4 positive integers"),
        ({"filters": [32, 64, 128, 0]}, "filters: expected 4 positive integers"),
        ({"filters": "abcd"}, "filters: expected 4 positive integers"),
        ({"num_classes": 1}, "num_classes: expected an integer >= 2"),
        ({"dropout": 1.0}, r"dropout: expected a number in \[0, 1\), got 1.0"),
        ({"batch_norm": "yes"}, "batch_norm: expected true or false, got 'yes'"),
    ],
)
def test_slice_cnn_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CovidSliceCNN(**kwargs)


# --------------------------------------------------------------------------- stage 2: CNN + biLSTM


def test_bilstm_default_shape_and_layout() -> None:
    network = create_model("covid_cnn_bilstm")
    assert isinstance(network, CovidCNNBiLSTM)
    assert isinstance(network.cnn, CovidSliceCNN)
    assert network.lstm.bidirectional
    assert network.lstm.batch_first
    assert network.lstm.input_size == 480
    assert network.lstm.hidden_size == 64
    head = network.head[-1]
    assert isinstance(head, nn.Linear)
    assert (head.in_features, head.out_features) == (50 * 128, 3)
    assert model_entry("covid_cnn_bilstm").example_input == (50, 1, 256, 256)
    assert network.get_submodule(model_entry("covid_cnn_bilstm").target_layer) is network.cnn.blocks[3]


def test_bilstm_keeps_every_time_step() -> None:
    network = CovidCNNBiLSTM(group_slices=5, lstm_hidden=6, **SMALL_CNN).eval()
    sequence = network.forward_features(torch.randn(2, 5, 1, 64, 64))
    assert sequence.shape == (2, 5, 12)
    with pytest.raises(ValueError, match=r"expected \(batch, 5, channels, height, width\)"):
        network(torch.randn(2, 4, 1, 64, 64))


def test_frozen_cnn_stays_in_eval_mode_and_keeps_its_batchnorm_statistics() -> None:
    network = CovidCNNBiLSTM(group_slices=3, batch_norm=True, **SMALL_CNN)
    network.train()
    assert network.training
    assert network.lstm.training
    assert network.head.training
    assert not any(m.training for m in network.cnn.modules())
    assert not any(p.requires_grad for p in network.cnn.parameters())
    batchnorms = [m for m in network.cnn.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(batchnorms) == 4
    before = [(m.running_mean.clone(), m.running_var.clone(), int(m.num_batches_tracked)) for m in batchnorms]
    network(torch.randn(2, 3, 1, 32, 32) * 5 + 3).sum().backward()
    for module, (mean, var, tracked) in zip(batchnorms, before, strict=True):
        torch.testing.assert_close(module.running_mean, mean)
        torch.testing.assert_close(module.running_var, var)
        assert int(module.num_batches_tracked) == tracked
    network.eval().train()
    assert not network.cnn.training


def test_gradients_reach_the_lstm_and_the_head_but_not_the_cnn() -> None:
    network = CovidCNNBiLSTM(group_slices=4, **SMALL_CNN).train()
    loss = nn.functional.cross_entropy(network(torch.randn(3, 4, 1, 32, 32)), torch.tensor([0, 1, 2]))
    loss.backward()
    for name, parameter in network.named_parameters():
        if name.startswith("cnn."):
            assert parameter.grad is None, name
        else:
            assert parameter.grad is not None, name
            assert parameter.grad.abs().sum() > 0, name
    trainable = {name.split(".")[0] for name, p in network.named_parameters() if p.requires_grad}
    assert trainable == {"lstm", "head"}


def test_stage_one_weights_load_into_stage_two() -> None:
    stage_one = CovidSliceCNN(**SMALL_CNN).eval()
    stage_two = CovidCNNBiLSTM(group_slices=2, **SMALL_CNN)
    x = torch.randn(2, 1, 32, 32)
    assert not torch.allclose(stage_two.cnn.forward_features(x), stage_one.forward_features(x))
    stage_two.load_slice_cnn(stage_one.state_dict())
    torch.testing.assert_close(stage_two.cnn.forward_features(x), stage_one.forward_features(x))
    assert not any(p.requires_grad for p in stage_two.cnn.parameters())
    assert not stage_two.train().cnn.training
    with pytest.raises(RuntimeError, match="size mismatch"):
        stage_two.load_slice_cnn(CovidSliceCNN().state_dict())


def test_grad_cam_per_slice_runs_through_the_frozen_cnn_and_the_lstm() -> None:
    network = CovidCNNBiLSTM(group_slices=3, **SMALL_CNN).eval()
    maps = grad_cam(network, torch.rand(1, 3, 1, 64, 64), "cnn.blocks.3", score=0)
    assert maps.shape == (3, 64, 64)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"group_slices": 0}, "group_slices: expected an integer >= 1, got 0"),
        ({"lstm_hidden": 64.0}, "lstm_hidden: expected an integer >= 1, got 64.0"),
        ({"dropout": -0.1}, "dropout: expected a number in"),
        ({"filters": [1, 2]}, "filters: expected 4 positive integers"),
    ],
)
def test_bilstm_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CovidCNNBiLSTM(**kwargs)
