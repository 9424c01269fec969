"""Learning-rate schedules with linear warm-up, configurable from YAML.

PyTorch's own schedulers cover step and cosine decay, but chaining a warm-up in front of them needs
``SequentialLR`` with scheduler *instances*, which a YAML file cannot express. These two classes take
plain numbers, and their value at every epoch has a closed form, so a resumed run continues exactly.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from lit_prune.validation import check_int

__all__ = ["WarmupCosineLR", "WarmupMultiStepLR"]


class _WarmupScheduler(LRScheduler):
    """Base class: a linear ramp from ``warmup_start_factor * base_lr`` to ``base_lr``, then a decay."""

    def __init__(self, optimizer: Optimizer, warmup_epochs: int, warmup_start_factor: float, last_epoch: int) -> None:
        check_int(warmup_epochs, "warmup_epochs", 0)
        if not 0.0 < warmup_start_factor <= 1.0:
            raise ValueError(f"warmup_start_factor must be in (0, 1], got {warmup_start_factor!r}")
        self.warmup_epochs = warmup_epochs
        self.warmup_start_factor = warmup_start_factor
        super().__init__(optimizer, last_epoch)

    def _decay_factor(self, epoch: int) -> float:
        raise NotImplementedError

    def _factor(self, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            progress = epoch / self.warmup_epochs
            return self.warmup_start_factor + (1.0 - self.warmup_start_factor) * progress
        return self._decay_factor(epoch)

    def get_lr(self) -> list[float]:
        factor = self._factor(self.last_epoch)
        return [base_lr * factor for base_lr in self.base_lrs]


class WarmupMultiStepLR(_WarmupScheduler):
    """Linear warm-up, then the learning rate is multiplied by ``gamma`` at every milestone epoch.

    This is the step schedule of the CIFAR ResNet recipe (He et al. 2016, "Deep Residual Learning for
    Image Recognition": LR 0.1, divided by 10 at epochs 80 and 120 of 160), with an optional warm-up
    (Goyal et al. 2017, "Accurate, Large Minibatch SGD").

    Args:
        optimizer: The optimizer whose learning rate is scheduled.
        milestones: Epochs at which the learning rate is multiplied by ``gamma``, increasing.
        gamma: Multiplicative factor at each milestone.
        warmup_epochs: Number of epochs of linear warm-up (0 for none).
        warmup_start_factor: Fraction of the base learning rate at epoch 0 of the warm-up.
        last_epoch: Index of the last epoch when resuming (-1 to start).

    Raises:
        ValueError: If milestones are not increasing or an argument is out of range.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        milestones: Sequence[int],
        gamma: float = 0.1,
        warmup_epochs: int = 0,
        warmup_start_factor: float = 0.1,
        last_epoch: int = -1,
    ) -> None:
        milestones = list(milestones)
        if any(b <= a for a, b in zip(milestones, milestones[1:])):
            raise ValueError(f"milestones must be strictly increasing epochs, got {milestones}")
        if gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma!r}")
        self.milestones = milestones
        self.gamma = gamma
        super().__init__(optimizer, warmup_epochs, warmup_start_factor, last_epoch)

    def _decay_factor(self, epoch: int) -> float:
        return self.gamma ** bisect.bisect_right(self.milestones, epoch)


class WarmupCosineLR(_WarmupScheduler):
    """Linear warm-up, then cosine annealing to ``min_lr_factor * base_lr`` at ``max_epochs``.

    Cosine annealing follows Loshchilov & Hutter 2017, "SGDR: Stochastic Gradient Descent with Warm
    Restarts" (without restarts); warm-up follows Goyal et al. 2017.

    Args:
        optimizer: The optimizer whose learning rate is scheduled.
        max_epochs: Epoch at which the cosine reaches its minimum; later epochs stay there.
        warmup_epochs: Number of epochs of linear warm-up (0 for none), less than ``max_epochs``.
        warmup_start_factor: Fraction of the base learning rate at epoch 0 of the warm-up.
        min_lr_factor: Final learning rate as a fraction of the base learning rate, in [0, 1].
        last_epoch: Index of the last epoch when resuming (-1 to start).

    Raises:
        ValueError: If an argument is out of range.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        max_epochs: int,
        warmup_epochs: int = 0,
        warmup_start_factor: float = 0.1,
        min_lr_factor: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        check_int(max_epochs, "max_epochs", 0)
        if warmup_epochs >= max_epochs:
            raise ValueError(f"warmup_epochs ({warmup_epochs}) must be less than max_epochs ({max_epochs})")
        if not 0.0 <= min_lr_factor <= 1.0:
            raise ValueError(f"min_lr_factor must be in [0, 1], got {min_lr_factor!r}")
        self.max_epochs = max_epochs
        self.min_lr_factor = min_lr_factor
        super().__init__(optimizer, warmup_epochs, warmup_start_factor, last_epoch)

    def _decay_factor(self, epoch: int) -> float:
        progress = min(1.0, (epoch - self.warmup_epochs) / (self.max_epochs - self.warmup_epochs))
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr_factor + (1.0 - self.min_lr_factor) * cosine
