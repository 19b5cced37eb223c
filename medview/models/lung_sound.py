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
"""

from __future__ import annotations

import torch
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
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The 512-d embedding of each chunk (before the output layer)."""
        return self.embedding(self.pool(self.features(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x))
