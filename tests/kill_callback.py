"""A callback that kills its own process, as an out-of-memory kill or a lost node would."""

from __future__ import annotations

import os
import signal

from lightning.pytorch import Callback, LightningModule, Trainer


class KillAtEpoch(Callback):
    """Sends SIGKILL to the process at the start of training epoch ``epoch``, which never runs.

    Args:
        epoch: The epoch at whose start the process dies.
    """

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)
