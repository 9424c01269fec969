"""VGG with batch norm for 32x32 inputs (Simonyan & Zisserman, 2015; Ioffe & Szegedy, 2015).

VGG16-BN is configuration "D" of "Very Deep Convolutional Networks for Large-Scale Image Recognition"
(13 3x3 convolutions in five blocks separated by 2x2 max pooling), each convolution followed
by batch norm and ReLU, and a 512-512-``num_classes`` classifier with dropout: the CIFAR layout
of the widely used pretrained CIFAR checkpoints. Five poolings take a 32-pixel image to 1x1, so
the classifier sees 512 features. State-dict keys are ``features.N`` (convolutions at
0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40, each with its batch norm at N+1) and
``classifier.0/3/6``. Configurations "A", "B" and "E" give VGG11-BN, VGG13-BN and VGG19-BN.
``pretrained=True`` loads the published CIFAR-10/100 weights (:mod:`lit_prune.models.pretrained`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lit_prune.errors import UserError
from lit_prune.models.pretrained import load_pretrained_
from lit_prune.models.registry import register_model

__all__ = [
    "VGG11_CONFIG",
    "VGG13_CONFIG",
    "VGG16_CONFIG",
    "VGG19_CONFIG",
    "CifarVGG",
    "vgg11_bn",
    "vgg13_bn",
    "vgg16_bn",
    "vgg19_bn",
]

VGG11_CONFIG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
VGG13_CONFIG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
VGG16_CONFIG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip
VGG19_CONFIG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
)  # fmt: skip
_POOL = "M"
_HIDDEN_FEATURES = 512


class CifarVGG(nn.Module):
    """VGG with batch norm for CIFAR-sized images.

    Args:
        config: Output channels of each 3x3 convolution, with ``"M"`` for a 2x2 max pooling.
            The last convolution must have 512 channels (the classifier input).
        num_classes: Output size of the last classifier layer.

    Raises:
        ValueError: If ``config`` is empty, holds an entry that is neither a positive int nor
            ``"M"``, or does not end its convolutions with 512 channels.
    """

    def __init__(self, config: Sequence[int | str], num_classes: int = 10) -> None:
        super().__init__()
        _check_config(config)
        self.features = _make_features(config)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Sequential(
            nn.Linear(_HIDDEN_FEATURES, _HIDDEN_FEATURES),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(_HIDDEN_FEATURES, _HIDDEN_FEATURES),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(_HIDDEN_FEATURES, num_classes),
        )
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        """Maps images ``(B, 3, H, W)`` to logits ``(B, num_classes)``.

        At 32 pixels the feature map is already 1x1 and the average pooling changes nothing;
        it lets larger inputs through as well.
        """
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _check_config(config: Sequence[int | str]) -> None:
    if isinstance(config, str) or not isinstance(config, Sequence) or len(config) == 0:
        raise ValueError(f"config must be a non-empty sequence of channel counts and 'M', got {config!r}")
    for entry in config:
        if entry != _POOL and (isinstance(entry, bool) or not isinstance(entry, int) or entry < 1):
            raise ValueError(f"config entries must be positive ints or 'M', got {entry!r} in {list(config)}")
    channels = [entry for entry in config if entry != _POOL]
    if not channels or channels[-1] != _HIDDEN_FEATURES:
        raise ValueError(f"the last convolution must have {_HIDDEN_FEATURES} channels, config is {list(config)}")


def _make_features(config: Sequence[int | str]) -> nn.Sequential:
    layers: list[nn.Module] = []
    in_channels = 3
    for entry in config:
        if entry == _POOL:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        out_channels = int(entry)
        layers += [
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ]
        in_channels = out_channels
    return nn.Sequential(*layers)


def _init_weights(model: nn.Module) -> None:
    """Kaiming-normal (fan_out, ReLU) convolutions, BN scale 1, linear N(0, 0.01), zero biases."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.01)
            nn.init.zeros_(module.bias)


def _build(name: str, config: Sequence[int | str], num_classes: int, pretrained: bool) -> CifarVGG:
    if not isinstance(pretrained, bool):
        raise UserError(f"pretrained of {name} must be true or false, got {pretrained!r}")
    model = CifarVGG(config, num_classes=num_classes)
    if pretrained:
        load_pretrained_(model, name, num_classes)
    return model


@register_model("vgg11_bn")
def vgg11_bn(num_classes: int = 10, pretrained: bool = False) -> CifarVGG:
    """VGG11-BN for CIFAR (configuration A, 9.76M parameters with 10 classes)."""
    return _build("vgg11_bn", VGG11_CONFIG, num_classes, pretrained)


@register_model("vgg13_bn")
def vgg13_bn(num_classes: int = 10, pretrained: bool = False) -> CifarVGG:
    """VGG13-BN for CIFAR (configuration B, 9.94M parameters with 10 classes)."""
    return _build("vgg13_bn", VGG13_CONFIG, num_classes, pretrained)


@register_model("vgg16_bn")
def vgg16_bn(num_classes: int = 10, pretrained: bool = False) -> CifarVGG:
    """VGG16-BN for CIFAR (configuration D, 15.25M parameters with 10 classes)."""
    return _build("vgg16_bn", VGG16_CONFIG, num_classes, pretrained)


@register_model("vgg19_bn")
def vgg19_bn(num_classes: int = 10, pretrained: bool = False) -> CifarVGG:
    """VGG19-BN for CIFAR (configuration E, 20.57M parameters with 10 classes)."""
    return _build("vgg19_bn", VGG19_CONFIG, num_classes, pretrained)
