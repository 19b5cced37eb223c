"""The kidney-stone networks of paper 000: the hybrid CNN and its transfer-learning baseline.

Hybrid (``kidney_hybrid``, the paper's Fig. 1).  Fixed by the paper:
- Two parallel branches on one ROI image, fused by depth-wise (channel)
  concatenation of their 7x7 feature maps; in each branch, layers producing
  smaller maps are removed.
- Branch (a): an ImageNet network with completely frozen weights (SqueezeNet,
  ResNet18, EfficientNetV2-S or MobileNetV4-small in the paper), truncated at
  its last 7x7 layer (:func:`medview.models.backbones.truncated_backbone`).
- Branch (b): a custom CNN trained from scratch, found by Bayesian optimisation:
  the core block (2D convolution, batch normalisation, ReLU, twice, and pooling)
  repeated 6 times, 12 convolutions with 128, 32, 96, 64, 256 and 224 filters
  (one count per block, both convolutions of a block alike).
- Head after the concatenation, in this order: BatchNorm, ReLU, Dropout,
  adaptive average pooling, Dense(90), Dense(2).
- Gradients reach only the custom branch and the head.

Decisions where the paper is silent:
- Input 3x224x224 (the CT window replicated), normalised with the backbone's
  ImageNet statistics (``mean``/``std`` attributes) by the pipeline; both
  branches see the same tensor.
- Convolutions are 3x3 with padding 1 (sizes are kept; pooling alone shrinks),
  without bias (each is followed by BatchNorm, which makes a bias redundant).
- Pooling is a 2x2 max-pool, once per core block after its two
  Conv-BN-ReLU repetitions.  The paper's sentence ("two sequential repetitions
  of 2D convolution, batch normalization, ReLU, and pooling layers") could also
  put a pool inside each repetition, but 12 stride-2 pools cannot leave a 7x7
  map of a 224 input, and removing every layer that produces a map smaller than
  7x7 (the paper's rule) from 12 conv-pool pairs would leave 6 convolutions,
  not the 12 the paper reports; one pool per block leaves all 12.
- The custom branch must end at 7x7 for a 224 input: 224 / 2^5 = 7, so the
  first 5 blocks pool and the 6th does not (its pool would give 3x3; removed).
  With another number of blocks, the first 5 pool.
- No activation between Dense(90) and Dense(2): the paper lists the head layer
  by layer and names none there.  Dropout rate 0.5 (PyTorch's default; the
  paper gives none), on the fused 7x7 maps as the layer order says.
- Logits out; softmax is the pipeline's.  The frozen branch stays in eval mode
  even when the model is put in training mode, so its BatchNorm layers keep
  ImageNet's running statistics.
- Grad-CAM target: ``custom``, the custom branch, whose output is its last core
  block's 7x7 map (the same path whatever the number of blocks).
- Any allow-listed backbone may be chosen; the default is EfficientNet-Lite0,
  the one with ImageNet weights available offline (a documented deviation from
  the paper's four).  Its weights are loaded with :meth:`load_backbone_weights`
  at training time and then travel in the bundle with the rest.

Baseline (``kidney_transfer``): the whole ImageNet network with its last layer
replaced by a 2-class layer; the paper trains that layer at 10x the global
learning rate and fine-tunes the rest (:meth:`KidneyTransfer.head_parameters`,
:meth:`KidneyTransfer.base_parameters`).  SqueezeNet's and Darknet-19's last
layers are 1x1 convolutions to the classes (a dense layer applied at every
position) and are replaced by a 2-class 1x1 convolution, as torchvision's and
MATLAB's fine-tuning recipes do; SqueezeNet keeps its ReLU and average pool.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from medview.errors import ModelError
from medview.models.backbones import ImageNetBackbone, backbone_spec, build_backbone, load_imagenet_weights
from medview.models.backbones import truncated_backbone as _truncated_backbone
from medview.models.registry import register_model

FILTERS = (128, 32, 96, 64, 256, 224)  # paper 000, one count per core block (two convolutions each)
POOLED_BLOCKS = 5  # 224 -> 7: 2x2 max-pool in the first 5 blocks only (MODELS.md decision, see above)
DENSE_UNITS = 90
DROPOUT = 0.5
INPUT_SIZE = 224
DEFAULT_BACKBONE = "efficientnet_lite0"


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return value


def _check_filters(filters: object) -> tuple[int, ...]:
    if not isinstance(filters, (list, tuple)) or len(filters) < POOLED_BLOCKS:
        raise ValueError(
            f"filters: expected a list of at least {POOLED_BLOCKS} filter counts (224 -> 7 needs 5 pools), "
            f"got {filters!r}"
        )
    return tuple(_check_int("filters", count, 1) for count in filters)


def _check_dropout(dropout: object) -> float:
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"dropout: expected a number in [0, 1), got {dropout!r}")
    return float(dropout)


class CoreBlock(nn.Sequential):
    """The paper's core block: (Conv2d 3x3, BatchNorm, ReLU) twice, then a 2x2 max-pool if ``pool``."""

    def __init__(self, in_channels: int, filters: int, *, pool: bool) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i, channels in enumerate((in_channels, filters), start=1):
            layers[f"conv{i}"] = nn.Conv2d(channels, filters, kernel_size=3, padding=1, bias=False)
            layers[f"bn{i}"] = nn.BatchNorm2d(filters)
            layers[f"relu{i}"] = nn.ReLU(inplace=True)
        if pool:
            layers["pool"] = nn.MaxPool2d(kernel_size=2, stride=2)
        super().__init__(layers)


class CustomBranch(nn.Sequential):
    """The custom CNN of paper 000: one core block per filter count, pooled in the first 5 (224 -> 7)."""

    def __init__(self, filters: Sequence[int] = FILTERS, in_channels: int = 3) -> None:
        blocks, channels = [], in_channels
        for index, count in enumerate(filters):
            blocks.append(CoreBlock(channels, count, pool=index < POOLED_BLOCKS))
            channels = count
        super().__init__(*blocks)
        self.out_channels = channels


@register_model(
    "kidney_hybrid",
    example_input=(3, INPUT_SIZE, INPUT_SIZE),
    output_shape=(2,),
    target_layer="custom",
    paper_parameters=None,  # the paper states no parameter count
)
class KidneyHybrid(nn.Module):
    """Frozen truncated ImageNet backbone + custom CNN, concatenated at 7x7, then the paper's head.

    Input ``(batch, 3, 224, 224)`` (normalised with ``mean``/``std``); output
    ``(batch, num_classes)`` logits (0: no stone, 1: stone).
    """

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        filters: Sequence[int] = FILTERS,
        dense_units: int = DENSE_UNITS,
        dropout: float = DROPOUT,
        num_classes: int = 2,
    ) -> None:
        super().__init__()
        backbone_spec(backbone)  # ValueError for a name that is not allow-listed
        filters = _check_filters(filters)
        dense_units = _check_int("dense_units", dense_units, 1)
        dropout = _check_dropout(dropout)
        num_classes = _check_int("num_classes", num_classes, 2)
        self.backbone_name = backbone
        self.input_size = INPUT_SIZE
        self.backbone, backbone_channels = _truncated_backbone(backbone)
        self.mean, self.std = self.backbone.mean, self.backbone.std
        for parameter in self.backbone.parameters():
            parameter.requires_grad_(False)
        self.custom = CustomBranch(filters)
        channels = backbone_channels + self.custom.out_channels
        self.head = nn.Sequential(
            OrderedDict(
                bn=nn.BatchNorm2d(channels),
                relu=nn.ReLU(inplace=True),
                dropout=nn.Dropout(dropout),
                pool=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(1),
                dense=nn.Linear(channels, dense_units),
                output=nn.Linear(dense_units, num_classes),
            )
        )
        self.backbone.eval()

    def train(self, mode: bool = True) -> KidneyHybrid:
        """Set training mode on the custom branch and head; the frozen backbone always stays in eval mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters training updates: the custom branch's and the head's."""
        yield from self.custom.parameters()
        yield from self.head.parameters()

    def load_backbone_weights(self, checkpoint: Path) -> int:
        """Load ImageNet weights into the frozen branch (``load_imagenet_weights``); returns the tensor count."""
        return load_imagenet_weights(self.backbone, self.backbone_name, checkpoint)

    def forward(self, x: torch.Tensor, frozen: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of ``x``; ``frozen``: the frozen branch's maps of ``x`` when already computed.

        Training passes ``frozen`` from a cache: the branch never changes, so
        running it every epoch would only repeat the same numbers.
        """
        pretrained = self.backbone(x) if frozen is None else frozen.to(dtype=x.dtype)
        custom = self.custom(x)
        if pretrained.shape[-2:] != custom.shape[-2:]:
            raise ValueError(
                f"input: expected {INPUT_SIZE}x{INPUT_SIZE} (both branches at 7x7), got {tuple(x.shape[-2:])} "
                f"(maps {tuple(pretrained.shape[-2:])} and {tuple(custom.shape[-2:])})"
            )
        return self.head(torch.cat((pretrained, custom), dim=1))


@register_model(
    "kidney_transfer",
    example_input=(3, INPUT_SIZE, INPUT_SIZE),
    output_shape=(2,),
    target_layer="backbone.features",
    paper_parameters=None,
)
class KidneyTransfer(nn.Module):
    """Paper 000's baseline: the whole ImageNet network, last layer replaced by a ``num_classes`` layer."""

    def __init__(self, backbone: str = DEFAULT_BACKBONE, num_classes: int = 2) -> None:
        super().__init__()
        num_classes = _check_int("num_classes", num_classes, 2)
        self.backbone_name = backbone
        self.backbone: ImageNetBackbone = build_backbone(backbone)  # ValueError for a name not allow-listed
        self.input_size = INPUT_SIZE
        self.mean, self.std = self.backbone.mean, self.backbone.std
        self._classifier_path = self.backbone.classifier_path
        parent_path, _, leaf = self._classifier_path.rpartition(".")
        parent = self.backbone.get_submodule(parent_path)
        old = getattr(parent, leaf)
        if isinstance(old, nn.Linear):
            new: nn.Module = nn.Linear(old.in_features, num_classes)
        elif isinstance(old, nn.Conv2d) and old.kernel_size == (1, 1):
            new = nn.Conv2d(old.in_channels, num_classes, kernel_size=1)
        else:  # every allow-listed backbone ends in one of the two
            raise TypeError(f"backbone {backbone!r}: unexpected last layer {type(old).__name__}")
        setattr(parent, leaf, new)

    @property
    def classifier(self) -> nn.Module:
        """The replaced last layer."""
        return self.backbone.get_submodule(self._classifier_path)

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """The new last layer's parameters (trained at 10x the global learning rate in the paper)."""
        yield from self.classifier.parameters()

    def base_parameters(self) -> Iterator[nn.Parameter]:
        """Every other parameter (fine-tuned at the global learning rate)."""
        head = {id(p) for p in self.head_parameters()}
        yield from (p for p in self.parameters() if id(p) not in head)

    def load_backbone_weights(self, checkpoint: Path) -> int:
        """Load ImageNet weights into everything but the replaced layer; returns the tensor count."""
        imagenet = build_backbone(self.backbone_name, checkpoint)  # checks the file against the whole network
        replaced = self._classifier_path + "."
        state = {k: v for k, v in imagenet.state_dict().items() if not k.startswith(replaced)}
        result = self.backbone.load_state_dict(state, strict=False)
        if result.unexpected_keys or any(not k.startswith(replaced) for k in result.missing_keys):
            raise ModelError(f"ImageNet weights for backbone {self.backbone_name!r} did not load", path=checkpoint)
        return sum(not k.endswith("num_batches_tracked") for k in state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)
