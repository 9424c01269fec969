"""ResNet-18 (He et al., 2016) with a CIFAR stem.

torchvision's ImageNet ResNet-18 shrinks a 224-pixel input 4x in its stem (7x7 stride-2 conv,
then 3x3 stride-2 max pooling), which would leave a 32-pixel CIFAR image 1x1 by the last stage.
The usual CIFAR adaptation keeps everything else and replaces the stem by a 3x3 stride-1 conv
without max pooling, so the four stages see 32, 16, 8 and 4 pixels. Keys stay torchvision's
(``conv1``, ``layer1.0.conv1``, ``layer2.0.downsample.0``, ``fc``).
"""

from __future__ import annotations

from torch import nn
from torchvision.models import ResNet
from torchvision.models import resnet18 as torchvision_resnet18

from lit_prune.models.registry import register_model

__all__ = ["resnet18"]

_STEM_CHANNELS = 64


@register_model("resnet18")
def resnet18(num_classes: int = 10) -> ResNet:
    """torchvision ResNet-18 with a 3x3 stride-1 stem and no max pooling (11.2M parameters).

    Args:
        num_classes: Output size of the classifier ``fc``.

    Returns:
        A randomly initialised ``torchvision.models.ResNet``.
    """
    model = torchvision_resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, _STEM_CHANNELS, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model
