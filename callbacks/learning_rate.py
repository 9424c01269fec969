"""Logging the learning rate beside the loss and accuracy curves, in every run."""

from __future__ import annotations

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import LearningRateMonitor
from typing_extensions import override

__all__ = ["LearningRateLogger"]


class LearningRateLogger(LearningRateMonitor):
    """Lightning's ``LearningRateMonitor`` (``lr-<optimizer>`` per epoch) that stays idle without a logger.

    The CLI adds it to every run; with ``trainer.logger: false`` there is nowhere to log to, which
    Lightning's monitor treats as an error.
    """

    def __init__(self) -> None:
        super().__init__(logging_interval="epoch")

    @override
    def on_train_start(self, trainer: Trainer, *args: object, **kwargs: object) -> None:
        if trainer.loggers:
            super().on_train_start(trainer, *args, **kwargs)

    @override
    def on_train_epoch_start(self, trainer: Trainer, *args: object, **kwargs: object) -> None:
        if trainer.loggers:
            super().on_train_epoch_start(trainer, *args, **kwargs)
