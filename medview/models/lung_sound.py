"""The lung-sound CNN of paper 004 (snapshot ensemble of 7-layer BN-Conv-ReLU CNNs), one definition.

Table I of the paper: 7 x (BatchNorm, Conv2D 3x3, ReLU) with 64, 128, 128, 256,
256, 512, 512 filters and strides 1, 2, 1, 2, 1, 2, 1, then BatchNorm + global
average pooling, Dense(512) + ReLU + BatchNorm, Dense(4 or 2).  Input: one
log-mel chunk, 50 mel bins x N frames (N = 193 for a 4.5 s chunk).

Decisions where the paper is silent or garbled:
- Padding is "valid" (the Keras default): the table's frequency sizes 50, 48,
  23, 21, 10, 8, 3 are exactly what valid 3x3 convolutions with those strides
  give when the "Output" column is read as each layer's input (the column is
  shifted by one row in the paper).  Padding does not change the parameter count.
- The forward pass returns logits; softmax is applied by the pipeline (and by
  the focal loss in training), so the snapshot ensemble averages probabilities.
- Glorot (Xavier) uniform initialisation of conv and dense weights, zero biases,
  as the paper states; the L2 weight decay 0.001 belongs to the optimiser.

For inference ``LungSoundCNN.folded`` gives the same function with every
BatchNorm folded into the layer after it (exact because the convolutions do not
pad: a per-channel affine map of the input moves into the kernel and the bias).
It saves the eight BatchNorm passes over the feature maps at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from medview.models.registry import register_model
from medview.preprocess.audio import CHUNK_FRAMES, N_MELS  # one 4.5 s chunk: 50 x 193, as the paper counts

FILTERS = (64, 128, 128, 256, 256, 512, 512)
STRIDES = (1, 2, 1, 2, 1, 2, 1)


class ConvComposition(nn.Sequential):
    """BN -> Conv2D 3x3 -> ReLU, the paper's "convolutional composition"."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride),
            nn.ReLU(inplace=True),
        )


@register_model(
    "lung_sound_cnn",
    example_input=(1, N_MELS, CHUNK_FRAMES),
    output_shape=(4,),
    target_layer="features.6",
    paper_parameters=4_900_000,
)
class LungSoundCNN(nn.Module):
    """Classifies one log-mel chunk (batch, 1, 50, frames) into ``num_classes`` logits (4: normal,
    crackle, wheeze, both; or 2: normal, abnormal)."""

    def __init__(self, num_classes: int = 4, in_channels: int = 1) -> None:
        super().__init__()
        if num_classes not in (2, 4):
            raise ValueError(f"num_classes: expected 2 or 4 (the paper's two tasks), got {num_classes}")
        layers, channels = [], in_channels
        for filters, stride in zip(FILTERS, STRIDES, strict=True):
            layers.append(ConvComposition(channels, filters, stride))
            channels = filters
        self.features = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.BatchNorm2d(channels), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.embedding = nn.Sequential(nn.Linear(channels, 512), nn.ReLU(inplace=True), nn.BatchNorm1d(512))
        self.classifier = nn.Linear(512, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The 512-d embedding of each chunk (before the output layer)."""
        return self.embedding(self.pool(self.features(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x))

    @torch.no_grad()
    def folded(self) -> FoldedLungSoundCNN:
        """This network in eval mode as convolutions + ReLU and two dense layers, every BatchNorm folded in.

        A new module (this one is untouched) that gives the same logits as
        ``self.eval()`` up to float rounding (the biases are folded in float64).
        """
        convs = []
        for block in self.features:
            norm, conv = block[0], block[1]  # type: ignore[index]  # each block is a ConvComposition
            if tuple(conv.padding) != (0, 0):  # the kernel of a padded convolution also sees the zeros
                raise ValueError(f"folding a BatchNorm into a padded convolution changes it, got {conv.padding}")
            scale, shift = _batch_norm_affine(norm)
            weight = conv.weight * scale.to(conv.weight.dtype)[None, :, None, None]
            bias = conv.bias.double() + conv.weight.sum(dim=(2, 3), dtype=torch.float64) @ shift
            convs.append((weight, bias.to(conv.bias.dtype), conv.stride[0]))
        # BatchNorm -> mean over the map -> Linear: the mean of an affine map is the affine map of the mean
        # the layout __init__ builds: Sequential indexing is typed as any Module
        hidden_layer = cast(nn.Linear, self.embedding[0])
        pool_norm = cast(nn.BatchNorm2d, self.pool[0])
        embedding_norm = cast(nn.BatchNorm1d, self.embedding[2])
        hidden = _fold_into_linear(hidden_layer, *_batch_norm_affine(pool_norm))
        output = _fold_into_linear(self.classifier, *_batch_norm_affine(embedding_norm))
        return FoldedLungSoundCNN(convs, hidden, output)


class FoldedLungSoundCNN(nn.Module):
    """``LungSoundCNN`` for inference only, BatchNorms folded into the layers after them (``LungSoundCNN.folded``)."""

    def __init__(
        self,
        convs: Sequence[tuple[torch.Tensor, torch.Tensor, int]],
        hidden: tuple[torch.Tensor, torch.Tensor],
        output: tuple[torch.Tensor, torch.Tensor],
    ) -> None:
        super().__init__()
        self.strides = [stride for _weight, _bias, stride in convs]
        for index, (weight, bias, _stride) in enumerate(convs):
            self.register_buffer(f"conv{index}_weight", weight)
            self.register_buffer(f"conv{index}_bias", bias)
        for name, (weight, bias) in (("hidden", hidden), ("output", output)):
            self.register_buffer(f"{name}_weight", weight)
            self.register_buffer(f"{name}_bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, stride in enumerate(self.strides):
            # in place: a second buffer of the size of the feature map per layer costs more than the ReLU
            x = F.relu_(F.conv2d(x, getattr(self, f"conv{index}_weight"), getattr(self, f"conv{index}_bias"), stride))
        x = F.relu_(F.linear(x.mean(dim=(2, 3)), self.hidden_weight, self.hidden_bias))  # type: ignore[arg-type]
        return F.linear(x, self.output_weight, self.output_bias)  # type: ignore[arg-type]


def _batch_norm_affine(norm: nn.BatchNorm1d | nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) per channel, float64: what ``norm`` computes in eval mode is ``x * scale + shift``."""
    if norm.running_mean is None or norm.running_var is None:
        raise ValueError("folding needs a BatchNorm with running statistics")
    scale = torch.rsqrt(norm.running_var.double() + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight.double()
    shift = -norm.running_mean.double() * scale
    if norm.bias is not None:
        shift = shift + norm.bias.double()
    return scale, shift


def _fold_into_linear(linear: nn.Linear, scale: torch.Tensor, shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``linear(x * scale + shift)`` as one linear layer (computed in float64: 512 x 512 only)."""
    weight = linear.weight.double()
    bias = linear.bias.double() if linear.bias is not None else torch.zeros_like(weight[:, 0])
    return (weight * scale[None, :]).to(linear.weight.dtype), (bias + weight @ shift).to(linear.weight.dtype)
