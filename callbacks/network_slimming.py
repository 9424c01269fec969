"""``NetworkSlimming``: an L1 penalty on batch-norm scales that drives unimportant channels to zero."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import nn
from typing_extensions import override

from callbacks.base import PruningCallback
from lit_prune.module import ImageClassifier
from lit_prune.validation import check_bool, check_number

__all__ = ["NetworkSlimming"]


class NetworkSlimming(PruningCallback):
    """Sparsity training of Liu et al. 2017, "Learning Efficient Convolutional Networks through Network Slimming".

    The loss gets ``penalty * sum(|gamma|)`` over the scale of every affine batch norm of the
    network. Rather than adding it to the loss, its sub-gradient ``penalty * sign(gamma)`` is added
    to each scale's ``.grad`` in ``on_before_optimizer_step``, which Lightning calls once per
    optimizer step after the gradients are accumulated, all-reduced across DDP ranks and, with
    mixed precision, unscaled, so the penalty is neither scaled by the AMP loss scale nor divided
    by the number of accumulated batches. A scale that is exactly zero gets no push
    (``sign(0) = 0``), like the paper's implementation.

    The channels whose scales shrink are then removed by ``ChannelPruning`` with
    ``score: bn_scale`` or ``EarlyBird``. Fine-tuning after that surgery runs without the
    penalty, as in the paper (``stop_after_surgery: true``); the module's surgery history tells
    whether the network was pruned, so this also holds after a resume.

    Logs ``slimming/bn_scale_l1`` (the sum of ``|gamma|``) every epoch.

    Args:
        penalty: The L1 coefficient lambda (1e-4 in the paper for CIFAR), >= 0.
        stop_after_surgery: Stop the penalty once the network has been structurally pruned.

    Raises:
        ValueError: If ``penalty`` is negative.
        TypeError: If an argument has the wrong type.
    """

    def __init__(self, penalty: float = 1e-4, stop_after_surgery: bool = True) -> None:
        super().__init__()
        self.penalty = check_number(
            penalty, "penalty", 0.0, meaning="the L1 coefficient lambda, 1e-4 in Liu et al. 2017"
        )
        self.stop_after_surgery = check_bool(stop_after_surgery, "stop_after_surgery")

    @override
    def describe_method(self) -> str:
        """A short description of the method for reports."""
        return f"network slimming L1 {self.penalty:g} on BN scales"

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        network = self.classifier(pl_module).network
        if not _batch_norm_scales(network):
            raise ValueError(
                f"NetworkSlimming penalises batch-norm scales, but {type(network).__name__} has no affine "
                "batch norm; use it with a CNN such as resnet20, resnet18 or vgg16_bn"
            )

    def active(self, pl_module: ImageClassifier) -> bool:
        """Whether the penalty applies now (not after a surgery when ``stop_after_surgery``)."""
        return self.penalty > 0 and not (self.stop_after_surgery and pl_module.surgery_history)

    @override
    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        module = self.classifier(pl_module)
        if not self.active(module):
            return
        with torch.no_grad():
            for scale in _batch_norm_scales(module.network):
                if scale.grad is not None:
                    scale.grad.add_(torch.sign(scale), alpha=self.penalty)

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        with torch.no_grad():
            total = sum(float(scale.abs().sum()) for scale in _batch_norm_scales(self.classifier(pl_module).network))
        self.log_metrics(trainer, {"slimming/bn_scale_l1": total})


def _batch_norm_scales(network: nn.Module) -> list[nn.Parameter]:
    return [
        module.weight
        for module in network.modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight is not None
    ]
