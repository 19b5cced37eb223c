"""The CNN half of paper 003's skin-lesion classifier: frozen ImageNet features for a random forest.

Fixed by the paper:
- Features are a pre-trained ImageNet CNN's last 1000-d layer: ResNet18's
  'fc1000', MobileNetV2's 'Logits', Darknet19's 'conv19' (MATLAB's layer names),
  i.e. the class scores before softmax, a 1x1000 vector per image.
- Input 224x224x3 for ResNet18 and MobileNetV2, 256x256x3 for Darknet19, after
  min-max normalisation.
- A random forest of 50 trees classifies the 1000-d vector.

Decisions:
- The forest is not part of this module: it is scikit-learn, stored by the
  bundle as a skops file (no code runs on load) and applied by the pipeline to
  this module's output.
- Backbones (``medview.models.backbones``): ``resnet18`` (timm ``resnet18``),
  ``mobilenetv2`` (timm ``mobilenetv2_100``), ``darknet19`` (Darknet-19 defined
  in MedView; its 'conv19' map is averaged over space, Darknet's own next layer,
  which is the only way it is 1x1000), and the default ``efficientnet_lite0``
  (timm ``tf_efficientnet_lite0``), the one backbone whose ImageNet weights are
  installable offline: the demo bundle uses it and says so in its manifest.
- The network is frozen (no parameter requires a gradient) and always in eval
  mode, even after ``.train()``: it is a fixed feature extractor.
- ``input_size`` (224, or 256 for Darknet-19) and ``mean``/``std`` (the
  backbone's ImageNet normalisation, applied after scaling to [0, 1]) tell the
  pipeline how to prepare a photo; the example input of the registry is the
  default backbone's 3x224x224.
- Grad-CAM target (the saliency of the CNN part): ``backbone.features``, the
  backbone's last spatial conv stage; the score is a function of the 1000
  features (the pipeline weights them by the forest's feature importances).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from medview.models.backbones import ImageNetBackbone, build_backbone, load_imagenet_weights
from medview.models.registry import register_model

DEFAULT_BACKBONE = "efficientnet_lite0"
FEATURES = 1000
FOREST_TREES = 50  # paper 003: the random forest's size (built by training, not here)


@register_model(
    "skin_cnn_features",
    example_input=(3, 224, 224),
    output_shape=(FEATURES,),
    target_layer="backbone.features",
    paper_parameters=None,
)
class SkinCNNFeatures(nn.Module):
    """Frozen ImageNet CNN: ``(batch, 3, input_size, input_size)`` -> ``(batch, 1000)`` logit features."""

    def __init__(self, backbone: str = DEFAULT_BACKBONE) -> None:
        super().__init__()
        self.backbone_name = backbone
        self.backbone: ImageNetBackbone = build_backbone(backbone)  # ValueError for a name not allow-listed
        self.input_size = self.backbone.input_size
        self.mean, self.std = self.backbone.mean, self.backbone.std
        for parameter in self.backbone.parameters():
            parameter.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> SkinCNNFeatures:
        """A fixed feature extractor: stays in eval mode whatever ``mode`` is."""
        return super().train(False)

    def load_backbone_weights(self, checkpoint: Path) -> int:
        """Load ImageNet weights (``load_imagenet_weights``); returns the number of tensors loaded."""
        return load_imagenet_weights(self.backbone, self.backbone_name, checkpoint)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)
