"""The shared base stage: a dense run that keeps the states its branches start from.

The base run is the branches' config without their pruning callbacks, plus
:class:`BaseCheckpoints`, which keeps

- ``checkpoints/init.ckpt``: the weights at the start of epoch 0 (the initialisation, taken at
  the same hook as ``LotteryTicket``'s own rewind snapshot, so a branch can rewind to it);
- ``checkpoints/start_epoch_<k>.ckpt``: the full training state at the start of epoch ``k``
  (saved at the end of epoch ``k - 1``, like Lightning's own end-of-epoch checkpoints), for every
  epoch a branch starts at;

and stops training after the last of them. The base keeps the branches' ``max_epochs``, so an LR
schedule that depends on it is the same. A branch resumes ``start_epoch_<k>.ckpt`` with
``fit --ckpt_path`` into its own directory: its epoch counter, optimizer and LR schedule continue
from there, and its pruning callback acts at its own epochs, exactly as in a run that trained
the dense network itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Checkpoint

from lit_prune.atomic_files import atomic_checkpoint

__all__ = ["BaseCheckpoints", "init_checkpoint", "start_checkpoint"]

CHECKPOINT_DIR = "checkpoints"


def init_checkpoint(run_dir: str | Path) -> Path:
    """The base run's checkpoint of its initial weights."""
    return Path(run_dir) / CHECKPOINT_DIR / "init.ckpt"


def start_checkpoint(run_dir: str | Path, epoch: int) -> Path:
    """The base run's checkpoint of the state at the start of ``epoch``."""
    return Path(run_dir) / CHECKPOINT_DIR / f"start_epoch_{epoch:03d}.ckpt"


class BaseCheckpoints(Checkpoint):
    """Keeps the initial weights and the states at the start of the given epochs, then stops.

    A ``Checkpoint`` callback, so Lightning runs its epoch-end hook after the other callbacks',
    like its own checkpointing; files are written through a temporary name and renamed, so a
    run killed while saving never leaves a half-written start state behind.

    Args:
        epochs: Epochs (>= 1) at whose start branches resume this run.
        stop: Stop training once the state of the last epoch is saved.

    Raises:
        ValueError: If an epoch is not an integer >= 1 or the list is empty.
    """

    def __init__(self, epochs: Sequence[int], stop: bool = True) -> None:
        if not epochs or any(isinstance(e, bool) or not isinstance(e, int) or e < 1 for e in epochs):
            raise ValueError(f"epochs must be a non-empty list of integers >= 1, got {list(epochs)!r}")
        self.epochs = sorted(set(epochs))
        self.stop = stop

    @property
    def state_key(self) -> str:
        return self._generate_state_key(epochs=tuple(self.epochs))

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.stop and trainer.current_epoch >= self.epochs[-1]:
            trainer.should_stop = True

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.current_epoch == 0:
            _save(trainer, init_checkpoint(self._run_dir(trainer)))

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        next_epoch = trainer.current_epoch + 1
        if next_epoch in self.epochs:
            _save(trainer, start_checkpoint(self._run_dir(trainer), next_epoch))
        if self.stop and next_epoch >= self.epochs[-1]:
            trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": list(self.epochs)}

    @staticmethod
    def _run_dir(trainer: Trainer) -> str:
        logger = trainer.loggers[0] if trainer.loggers else None
        directory = getattr(logger, "log_dir", None)
        return str(directory) if directory is not None else str(trainer.default_root_dir)


def _save(trainer: Trainer, path: Path) -> None:
    """Saves the trainer's checkpoint to ``path`` through a temporary file (renamed on rank 0)."""
    atomic_checkpoint(trainer, path, barrier="lit_prune_base_checkpoint")
