"""CIFAR ResNets (He et al., 2016): ResNet-20, ResNet-32, ResNet-44 and ResNet-56.

The CIFAR variant of "Deep Residual Learning for Image Recognition" (He, Zhang, Ren, Sun,
CVPR 2016, section 4.2): a 3x3 stem with 16 channels, then three stages of ``n`` basic blocks
with 16, 32 and 64 channels (the second and third start with stride 2), global average pooling
and a linear classifier; depth ``6n + 2``. The shortcut that changes shape is a 1x1 convolution
with batch norm (option B), so the state-dict layout is the one of the widely used pretrained
CIFAR checkpoints (``conv1``, ``bn1``, ``layerK.I.conv1/bn1/conv2/bn2``,
``layerK.0.downsample.0/1``, ``fc``) and those files load strictly; ``pretrained=True`` loads the
published CIFAR-10/100 weights (:mod:`lit_prune.models.pretrained`).

Blocks are plain modules with the attributes ``conv1, bn1, relu, conv2, bn2, downsample`` so
structured pruning can walk and shrink them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lit_prune.errors import UserError
from lit_prune.models.pretrained import load_pretrained_
from lit_prune.models.registry import register_model

__all__ = ["BasicBlock", "CifarResNet", "resnet20", "resnet32", "resnet44", "resnet56"]

_STAGE_WIDTHS = (16, 32, 64)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection (He et al., 2016).

    Args:
        in_channels: Channels of the block input.
        out_channels: Channels of both convolutions and of the output.
        stride: Stride of the first convolution (and of the shortcut projection).

    Attributes:
        downsample: ``None`` for an identity shortcut; otherwise ``Sequential(conv1x1, BN)``
            projecting the input to the output shape.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        """Returns ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs (He et al., 2016, section 4.2).

    Args:
        blocks_per_stage: ``n``, the number of basic blocks in each of the three stages.
        num_classes: Output size of the classifier ``fc``.

    Raises:
        ValueError: If ``blocks_per_stage`` or ``num_classes`` is below 1.
    """

    def __init__(self, blocks_per_stage: int, num_classes: int = 10) -> None:
        super().__init__()
        if blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage must be >= 1, got {blocks_per_stage}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.conv1 = nn.Conv2d(3, _STAGE_WIDTHS[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(_STAGE_WIDTHS[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _make_stage(_STAGE_WIDTHS[0], _STAGE_WIDTHS[0], blocks_per_stage, stride=1)
        self.layer2 = _make_stage(_STAGE_WIDTHS[0], _STAGE_WIDTHS[1], blocks_per_stage, stride=2)
        self.layer3 = _make_stage(_STAGE_WIDTHS[1], _STAGE_WIDTHS[2], blocks_per_stage, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(_STAGE_WIDTHS[2], num_classes)
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        """Maps images ``(B, 3, H, W)`` to logits ``(B, num_classes)``."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _make_stage(in_channels: int, out_channels: int, num_blocks: int, stride: int) -> nn.Sequential:
    blocks = [BasicBlock(in_channels, out_channels, stride)]
    blocks += [BasicBlock(out_channels, out_channels) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


def _init_weights(model: nn.Module) -> None:
    """Kaiming-normal (fan_out, ReLU) convolutions (He et al., 2015); BN scale 1, shift 0."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def _build(name: str, blocks_per_stage: int, num_classes: int, pretrained: bool) -> CifarResNet:
    if not isinstance(pretrained, bool):
        raise UserError(f"pretrained of {name} must be true or false, got {pretrained!r}")
    model = CifarResNet(blocks_per_stage=blocks_per_stage, num_classes=num_classes)
    if pretrained:
        load_pretrained_(model, name, num_classes)
    return model


@register_model("resnet20")
def resnet20(num_classes: int = 10, pretrained: bool = False) -> CifarResNet:
    """ResNet-20 for CIFAR (n=3, 0.27M parameters with 10 classes); ``pretrained`` loads published weights."""
    return _build("resnet20", 3, num_classes, pretrained)


@register_model("resnet32")
def resnet32(num_classes: int = 10, pretrained: bool = False) -> CifarResNet:
    """ResNet-32 for CIFAR (n=5, 0.46M parameters with 10 classes); ``pretrained`` loads published weights."""
    return _build("resnet32", 5, num_classes, pretrained)


@register_model("resnet44")
def resnet44(num_classes: int = 10, pretrained: bool = False) -> CifarResNet:
    """ResNet-44 for CIFAR (n=7, 0.66M parameters with 10 classes); ``pretrained`` loads published weights."""
    return _build("resnet44", 7, num_classes, pretrained)


@register_model("resnet56")
def resnet56(num_classes: int = 10, pretrained: bool = False) -> CifarResNet:
    """ResNet-56 for CIFAR (n=9, 0.85M parameters with 10 classes); ``pretrained`` loads published weights."""
    return _build("resnet56", 9, num_classes, pretrained)
