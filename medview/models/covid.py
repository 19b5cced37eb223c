"""The three networks of paper 002 (COVID-19 / non-COVID pneumonia / healthy from chest CT), one definition.

The paper's pipeline, and what each registered id is:

- ``lung_unet`` (stage 0, section 2.2.1): a U-Net [Ronneberger 2015] trained from
  scratch to segment the lungs on CT slices scaled to 256 x 256 (Dice 0.968).
- ``covid_slice_cnn`` (stage 1, section 2.3.1): "4 convolutional layers with ReLU
  activation function whose outputs were concatenated after applying Global Max
  Pooling operations", trained alone as a 3-class slice classifier (categorical
  cross-entropy, lr 1e-4, 100 epochs, early stopping 25; random weights).
- ``covid_cnn_bilstm`` (stage 2, section 2.3.2): the stage-1 CNN, initialised with
  its trained weights and frozen, turns each slice of a 50-slice group into its
  feature; a bidirectional LSTM reads the 50 features in slice order; "the output of
  each bidirectional LSTM cell was preserved and flattened" and "transferred to a
  dense layer with dropout"; softmax over 3 classes per group.

Classes, in the order of the paper's Tables 1 and 2: COVID pneumonia (CP), non-COVID
pneumonia (NCP), healthy (``CLASS_NAMES``).  Every forward returns logits; softmax
belongs to the loss and to the pipeline (the patient vote of section 2.4 is
``medview.preprocess.chest.patient_vote``).

Decisions where the paper is silent (its Figures 2 and 3 give no sizes):

- U-Net: the original's layout (two 3x3 convolutions per level, 2x2 max pooling,
  2x2 transposed-convolution upsampling, skip concatenation, 1x1 output
  convolution) with 4 poolings, but "same" padding so that the 256 x 256 output
  matches the input pixel for pixel, BatchNorm after every convolution (trained
  from scratch on classical pseudo-label masks, see MODELS.md), and a base width
  of 16 (16 ... 256 channels, 1.9 M parameters) instead of the original's 64:
  0.12 to 0.3 s per 256 x 256 slice on 2 shared CPU cores (base 32: 7.8 M
  parameters, 3 to 4 times slower); lung segmentation is an easy task for a
  network this size.  Two output logits: background, lung.
- Slice CNN: 32, 64, 128 and 256 filters of 3 x 3 (MODELS.md), each convolution
  with stride 2 and padding 1, so a 256 x 256 slice gives 128, 64, 32 and 16
  pixel maps.  Measured against stride 1 with 2x2 max pooling between the
  layers, which costs 4 times more (0.9 instead of 0.23 GMAC per slice; the CNN
  over 50 slices took 4.4 s instead of 0.7 s on 2 CPU cores): the paper's point
  is a network cheap enough for hospital CPUs (0.409 s per group on an
  i7-9750H).  No BatchNorm (the paper names convolution and ReLU only);
  ``batch_norm=True`` adds one after each convolution for training experiments.
  The slice feature is the concatenation of the 4 global-max-pooled layer
  outputs, 32 + 64 + 128 + 256 = 480 values; the stage-1 head is Dropout(0.5)
  and one Dense layer to the 3 logits.
- biLSTM: one bidirectional layer, 64 hidden units per direction (MODELS.md),
  every one of the 50 time steps kept, flattened to 50 x 128 = 6400 values,
  Dropout(0.5), Dense(3); 0.7 to 1.0 s per 50-slice group on 2 shared CPU cores.
  The frozen CNN stays in eval mode even while the stage-2 model trains (its
  dropout and any BatchNorm statistics never change) and its parameters have
  ``requires_grad`` False.  It runs outside ``torch.no_grad`` so that Grad-CAM
  (``medview.explain``, which makes a frozen layer's activation a leaf) can
  take the gradient of a group's logit back through the LSTM to
  ``cnn.blocks.3``, one map per slice of the group.
- Grad-CAM target: the 4th convolution layer with its ReLU (``blocks.3``, a
  16 x 16 map for a 256 x 256 slice), the paper's "last class activation map".

Parameters with the default arguments (the paper states none): ``lung_unet``
1,942,306; ``covid_slice_cnn`` 389,283 (387,840 in the convolutions);
``covid_cnn_bilstm`` 688,038, of which 298,755 train in stage 2 (LSTM 279,552,
head 19,203).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from medview.models.registry import register_model

CLASS_NAMES = ("covid_pneumonia", "non_covid_pneumonia", "healthy")  # the paper's order (CP, NCP, healthy)
LUNG_CLASSES = ("background", "lung")
SLICE_SIZE = 256  # "CT images were scaled to 256 x 256 pixels"
GROUP_SLICES = 50  # "We set the group size to be 50 CT slices"
CNN_FILTERS = (32, 64, 128, 256)


def _positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return value


def _probability(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name}: expected a number in [0, 1), got {value!r}")
    return float(value)


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name}: expected true or false, got {value!r}")
    return value


# --------------------------------------------------------------------------- stage 0: lung U-Net


class DoubleConv(nn.Sequential):
    """(Conv 3x3 "same" -> BatchNorm -> ReLU) twice, one U-Net level."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


@register_model(
    "lung_unet",
    example_input=(1, SLICE_SIZE, SLICE_SIZE),
    output_shape=(len(LUNG_CLASSES), SLICE_SIZE, SLICE_SIZE),
    target_layer=None,
)
class LungUNet(nn.Module):
    """Segments the lungs of CT slices (batch, 1, H, W) into (batch, 2, H, W) logits (background, lung).

    H and W must be multiples of ``2 ** depth`` (16 for the default depth 4); the
    pipeline feeds 256 x 256 slices.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, base_filters: int = 16, depth: int = 4) -> None:
        super().__init__()
        _positive_int("in_channels", in_channels)
        _positive_int("num_classes", num_classes, minimum=2)
        _positive_int("base_filters", base_filters)
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= 6:
            raise ValueError(f"depth: expected an integer from 1 to 6 (number of poolings), got {depth!r}")
        self.depth = depth
        widths = [base_filters * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList()
        channels = in_channels
        for width in widths[:-1]:
            self.down.append(DoubleConv(channels, width))
            channels = width
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = DoubleConv(widths[-2], widths[-1])
        self.upsample = nn.ModuleList()
        self.up = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.upsample.append(nn.ConvTranspose2d(width * 2, width, kernel_size=2, stride=2))
            self.up.append(DoubleConv(width * 2, width))
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        multiple = 2**self.depth
        if x.shape[-1] % multiple or x.shape[-2] % multiple:
            raise ValueError(f"input size: expected multiples of {multiple}, got {tuple(x.shape[-2:])}")
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for upsample, block, skip in zip(self.upsample, self.up, reversed(skips), strict=True):
            x = block(torch.cat([skip, upsample(x)], dim=1))
        return self.head(x)


# --------------------------------------------------------------------------- stage 1: slice CNN


class ConvLayer(nn.Sequential):
    """Conv 3x3 stride 2 -> (BatchNorm) -> ReLU, one of the paper's 4 convolutional layers."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1, bias=not batch_norm)
        ]
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU())  # not in place: Grad-CAM hooks the block output
        super().__init__(*layers)


@register_model(
    "covid_slice_cnn",
    example_input=(1, SLICE_SIZE, SLICE_SIZE),
    output_shape=(len(CLASS_NAMES),),
    target_layer="blocks.3",
)
class CovidSliceCNN(nn.Module):
    """Stage 1: classifies masked CT slices (batch, 1, 256, 256) into 3 logits; ``forward_features``
    gives the slice feature, the 4 global-max-pooled layer outputs concatenated (480 values by default)."""

    def __init__(
        self,
        num_classes: int = 3,
        in_channels: int = 1,
        filters: Sequence[int] = CNN_FILTERS,
        batch_norm: bool = False,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        _positive_int("num_classes", num_classes, minimum=2)
        _positive_int("in_channels", in_channels)
        if (
            not isinstance(filters, (list, tuple))
            or len(filters) != 4
            or not all(isinstance(f, int) and not isinstance(f, bool) and f > 0 for f in filters)
        ):
            raise ValueError(f"filters: expected 4 positive integers (the paper's 4 conv layers), got {filters!r}")
        _flag("batch_norm", batch_norm)
        _probability("dropout", dropout)
        self.filters = tuple(filters)
        layers, channels = [], in_channels
        for width in self.filters:
            layers.append(ConvLayer(channels, width, batch_norm))
            channels = width
        self.blocks = nn.Sequential(*layers)
        self.global_max_pool = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.feature_size, num_classes))

    @property
    def feature_size(self) -> int:
        """Length of the slice feature: the sum of the 4 filter counts."""
        return sum(self.filters)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The slice feature (batch, sum(filters)): every layer's output, global-max-pooled, concatenated."""
        pooled = []
        for block in self.blocks:
            x = block(x)
            pooled.append(self.global_max_pool(x))
        return torch.cat(pooled, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x))


# --------------------------------------------------------------------------- stage 2: CNN + biLSTM


@register_model(
    "covid_cnn_bilstm",
    example_input=(GROUP_SLICES, 1, SLICE_SIZE, SLICE_SIZE),
    output_shape=(len(CLASS_NAMES),),
    target_layer="cnn.blocks.3",
)
class CovidCNNBiLSTM(nn.Module):
    """Stage 2: classifies a group of slices (batch, 50, 1, 256, 256) into 3 logits.

    ``cnn`` is a frozen ``CovidSliceCNN``: put the trained stage-1 weights in with
    ``load_slice_cnn`` (its classifier head is carried along but not used).
    """

    def __init__(
        self,
        num_classes: int = 3,
        in_channels: int = 1,
        group_slices: int = GROUP_SLICES,
        filters: Sequence[int] = CNN_FILTERS,
        batch_norm: bool = False,
        lstm_hidden: int = 64,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        _positive_int("num_classes", num_classes, minimum=2)
        _positive_int("group_slices", group_slices)
        _positive_int("lstm_hidden", lstm_hidden)
        _probability("dropout", dropout)
        self.group_slices = group_slices
        self.cnn = CovidSliceCNN(num_classes, in_channels, filters, batch_norm)
        self.cnn.requires_grad_(False)
        self.cnn.eval()
        self.lstm = nn.LSTM(self.cnn.feature_size, lstm_hidden, batch_first=True, bidirectional=True)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(group_slices * 2 * lstm_hidden, num_classes)
        )

    def train(self, mode: bool = True) -> CovidCNNBiLSTM:
        """Switches the LSTM and head; the frozen CNN always stays in eval mode."""
        super().train(mode)
        self.cnn.eval()
        return self

    def load_slice_cnn(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Loads a trained stage-1 ``covid_slice_cnn`` state dict (strict) into the frozen ``cnn``."""
        self.cnn.load_state_dict(state_dict, strict=True)
        self.cnn.requires_grad_(False)
        self.cnn.eval()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The biLSTM output of every time step, (batch, group_slices, 2 * lstm_hidden)."""
        if x.ndim != 5 or x.shape[1] != self.group_slices:
            raise ValueError(
                f"input: expected (batch, {self.group_slices}, channels, height, width), got {tuple(x.shape)}"
            )
        batch, slices = x.shape[:2]
        features = self.cnn.forward_features(x.flatten(0, 1)).unflatten(0, (batch, slices))
        sequence, _ = self.lstm(features)
        return sequence

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))
