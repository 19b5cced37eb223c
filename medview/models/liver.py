"""The liver EAS U-Net of paper 001 (ECA-Attention and Separable convolution U-Net), one definition.

What the paper fixes (section II.B; its Figures 1-6 are not in the text we have,
only their captions and the prose around them):
- A U-Net (Figure 1: encoder of two 3x3 convolutions per stage and 2x2 max
  pooling, channels doubling per stage; decoder of 2x2 up-convolutions that
  double the size and halve the channels, skip connections by concatenation,
  a final 1x1 convolution).  Two convolution units per stage, as in U-Net.
- Every standard convolution module replaced by the "optimised" depth-wise
  separable module (Figure 4): depth-wise 3x3 conv, BN, LeakyReLU, point-wise
  1x1 conv, BN, h-swish (``nn.Hardswish``).
- The EAS (ECA-ASPP) module embedded on the encoder side: ASPP with a 1x1
  branch, 3x3 atrous branches with dilation 6, 12 and 18 and an image-pooling
  branch, combined with ECA channel attention (ECA-Net).
- Deep supervision with multi-scale output fusion (Figure 6): outputs of
  several scales fused by concatenation (the paper prefers it to addition);
  every output gets the loss (cross-entropy + Dice) in training.
- The paper states no parameter count, base width or depth, so
  ``paper_parameters`` is None.

Decisions where the paper is silent (MedView's, see docs/MODELS.md section 2):
- Widths 32, 64, 128, 256, 512 (base 32, doubling) over five stages, i.e. four
  poolings as in the paper's Figure 1 U-Net; ``depth`` is the number of poolings.
  A 256x256 slice reaches the bottleneck at 16x16.
- ECA placement: inside ASPP, on its first (1x1) branch.  The paper motivates
  the combination by exactly that branch: it "does not utilize atrous
  convolutions ... it adjusts the channel number ... using a 1x1 convolutional
  kernel, which cannot effectively filter the features", and the channel
  attention is what filters them.  The 1x1 branch is 1x1 conv, BN, h-swish, ECA.
- EAS placement: after the two separable units of the bottleneck (deepest
  encoder stage), keeping the bottleneck width (512 in, 512 out); each ASPP
  branch has half the bottleneck width (256, DeepLab's branch width), the five
  branches are concatenated and projected by 1x1 conv, BN, h-swish.
- The atrous branches are themselves optimised separable units with a dilated
  depth-wise conv, as in the paper's reference [13] (DeepLabv3+, "atrous
  separable convolution"), so the module keeps the paper's aim of fewer
  parameters (dense 3x3 atrous convs at 512 -> 256 would add 3.5M parameters).
  At 16x16 the taps of dilation 18 fall on the zero padding, so that branch
  sees mostly its centre tap; this is DeepLab's known degenerate case and is kept
  as the paper fixes the rates.
- The image-pooling branch is global average pooling, 1x1 conv with bias,
  h-swish (no BN: a 1x1 map would break BN with batch 1 in training), then
  broadcast back to the map size.
- ECA kernel size as ECA-Net's code: t = int(|log2(C) + 1| / 2), k = t if odd
  else t + 1 (C = 256 gives k = 5); 1-D conv without bias, sigmoid gate.
- The first depth-wise conv of the network (on the input image) has a depth
  multiplier of ceil(base / in_channels): a depth-wise conv on a one-channel
  slice would otherwise be a single 3x3 filter, so every channel of the first
  stage would be a scaled copy of one filtered image.  With one input channel
  this is exactly the full 3x3 conv that MobileNet keeps as its first layer,
  while still being depth-wise (``groups == in_channels``).
- Up-sampling by 2x2 transposed conv halving the channels (U-Net's up-conv);
  it is not one of the paper's "convolution modules" and stays a plain layer.
- Deep supervision: every decoder stage (scales 1/8, 1/4, 1/2, 1 with depth 4)
  has a side head, a 1x1 conv to ``num_classes``, bilinearly up-sampled to the
  input size; the side logits are concatenated and fused by a 1x1 conv into the
  final logits.  In training ``forward`` returns ``(final, [side, ...])`` so the
  loss reaches every side output; in eval only the final logits.
- LeakyReLU slope 0.01 (PyTorch's default and Maas et al.'s value); PyTorch's
  default initialisation (the paper states none); no dropout.
- Output: logits (batch, num_classes, H, W); softmax belongs to the pipeline
  and the loss.  H and W must be divisible by 2**depth.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from medview.models.registry import register_model

INPUT_SIZE = 256  # MedView resamples slices to 256x256
ASPP_DILATIONS = (6, 12, 18)
LEAKY_SLOPE = 0.01


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA-Net's adaptive 1-D kernel size for ``channels``: |log2(C) + b| / gamma, made odd."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class ECA(nn.Module):
    """Efficient channel attention: global average pool, 1-D conv across channels, sigmoid gate."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.kernel_size = eca_kernel_size(channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, self.kernel_size, padding=self.kernel_size // 2, bias=False)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.pool(x).squeeze(-1).transpose(-1, -2)  # (B, 1, C)
        weights = self.gate(self.conv(weights)).transpose(-1, -2).unsqueeze(-1)  # (B, C, 1, 1)
        return x * weights


class SeparableConv(nn.Sequential):
    """The paper's optimised depth-wise separable unit (Figure 4).

    Depth-wise 3x3 conv, BN, LeakyReLU, point-wise 1x1 conv, BN, h-swish.
    """

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1, depth_multiplier: int = 1) -> None:
        middle = in_channels * depth_multiplier
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_channels, middle, 3, padding=dilation, dilation=dilation, groups=in_channels, bias=False
        )
        self.bn1 = nn.BatchNorm2d(middle)
        self.act1 = nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
        self.pointwise = nn.Conv2d(middle, out_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.act2 = nn.Hardswish(inplace=True)


class SeparableBlock(nn.Sequential):
    """Two optimised separable units, one U-Net stage's convolution block."""

    def __init__(self, in_channels: int, out_channels: int, depth_multiplier: int = 1) -> None:
        super().__init__(
            SeparableConv(in_channels, out_channels, depth_multiplier=depth_multiplier),
            SeparableConv(out_channels, out_channels),
        )


class ImagePooling(nn.Module):
    """ASPP's image-level branch: global average pool, 1x1 conv, h-swish, broadcast to the map size."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv2d(in_channels, out_channels, 1)
        self.act = nn.Hardswish(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(self.pool(x))).expand(-1, -1, x.shape[-2], x.shape[-1])


class EAS(nn.Module):
    """The EAS (ECA-ASPP) module: ASPP whose 1x1 branch is filtered by ECA channel attention."""

    def __init__(self, in_channels: int, branch_channels: int, out_channels: int) -> None:
        super().__init__()
        self.branch1x1 = nn.Sequential(
            nn.Conv2d(in_channels, branch_channels, 1, bias=False),
            nn.BatchNorm2d(branch_channels),
            nn.Hardswish(inplace=True),
            ECA(branch_channels),
        )
        self.atrous = nn.ModuleList(SeparableConv(in_channels, branch_channels, dilation=d) for d in ASPP_DILATIONS)
        self.image_pool = ImagePooling(in_channels, branch_channels)
        self.project = nn.Sequential(
            nn.Conv2d(branch_channels * (2 + len(ASPP_DILATIONS)), out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.Hardswish(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.branch1x1(x), *(branch(x) for branch in self.atrous), self.image_pool(x)]
        return self.project(torch.cat(branches, dim=1))


class DecoderStage(nn.Module):
    """2x2 up-conv halving the channels, concatenation with the skip, one separable block."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.block = SeparableBlock(2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([skip, self.up(x)], dim=1))


def _check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        expected = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return value


@register_model(
    "liver_eas_unet",
    example_input=(1, INPUT_SIZE, INPUT_SIZE),
    output_shape=(2, INPUT_SIZE, INPUT_SIZE),
    target_layer="decoder.3",
    paper_parameters=None,  # the paper states no parameter count
)
class LiverEASUNet(nn.Module):
    """Segments one CT slice (batch, in_channels, H, W) into ``num_classes`` logits per pixel
    (2: background, liver).

    ``in_channels`` is 1, or 3 for adjacent slices as channels; H and W must be
    divisible by ``2 ** depth``.  Eval: final logits (batch, num_classes, H, W).
    Training: ``(final, [side logits of each decoder stage, deepest first])``,
    all at the input resolution.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, base_channels: int = 32, depth: int = 4) -> None:
        super().__init__()
        _check_int("in_channels", in_channels, 1)
        _check_int("num_classes", num_classes, 2)
        _check_int("base_channels", base_channels, 2)
        _check_int("depth", depth, 1, 6)
        if base_channels % 2:
            raise ValueError(f"base_channels: expected an even integer, got {base_channels}")
        self.depth = depth
        widths = [base_channels * 2**i for i in range(depth + 1)]
        stem_multiplier = math.ceil(base_channels / in_channels)
        self.encoder = nn.ModuleList(
            SeparableBlock(in_channels if i == 0 else widths[i - 1], widths[i], stem_multiplier if i == 0 else 1)
            for i in range(depth)
        )
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = SeparableBlock(widths[depth - 1], widths[depth])
        self.eas = EAS(widths[depth], widths[depth] // 2, widths[depth])
        self.decoder = nn.ModuleList(DecoderStage(widths[i + 1], widths[i]) for i in reversed(range(depth)))
        self.side_heads = nn.ModuleList(nn.Conv2d(widths[i], num_classes, 1) for i in reversed(range(depth)))
        self.fuse = nn.Conv2d(depth * num_classes, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        size = x.shape[-2:]
        factor = 2**self.depth
        if size[0] % factor or size[1] % factor:
            raise ValueError(f"input size: expected H and W divisible by {factor}, got {tuple(size)}")
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
            x = self.pool(x)
        x = self.eas(self.bottleneck(x))
        sides = []
        for stage, head, skip in zip(self.decoder, self.side_heads, reversed(skips), strict=True):
            x = stage(x, skip)
            side = head(x)
            if side.shape[-2:] != size:
                side = F.interpolate(side, size=size, mode="bilinear", align_corners=False)
            sides.append(side)
        final = self.fuse(torch.cat(sides, dim=1))
        if self.training:
            return final, sides
        return final
