"""Checkpoints that mean what their names say: the newest state, and the best state of each pruning stage.

Lightning's ``ModelCheckpoint(save_last=True)`` writes ``last.ckpt`` only when a top-k checkpoint
is written, so in a pruning run (where accuracy drops after every prune) ``last.ckpt`` lags
behind, and "best ``val/top1``" across stages of different sparsity compares unlike models.
:class:`LastCheckpoint` writes ``last.ckpt`` at the end of every training epoch and when fit
ends; :class:`StageBestCheckpoint` keeps the best checkpoint *within* each pruning stage (the
epochs between two changes of the network's mask or shape), named after that stage.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Checkpoint
from typing_extensions import override

from lit_prune.atomic_files import atomic_checkpoint
from lit_prune.errors import UserError

__all__ = ["LastCheckpoint", "StageBestCheckpoint", "checkpoint_dir", "pruning_state"]

_MODES = ("max", "min")


def checkpoint_dir(trainer: Trainer) -> Path:
    """The run's ``checkpoints/`` folder: beside the logger's files, else under ``default_root_dir``."""
    root = trainer.log_dir if trainer.loggers else None
    return Path(root or trainer.default_root_dir) / "checkpoints"


def pruning_state(pl_module: LightningModule) -> tuple[float, int]:
    """What identifies a pruning stage: the mask's sparsity and the number of surgery records."""
    mask = getattr(pl_module, "pruning_mask", None)
    sparsity = 0.0 if mask is None else round(float(mask.sparsity()), 9)
    return sparsity, len(getattr(pl_module, "surgery_history", []))


class LastCheckpoint(Checkpoint):
    """Writes ``checkpoints/last.ckpt`` at the end of every training epoch and when fit ends.

    It runs after every other callback of the epoch (Lightning orders checkpoint callbacks
    last), so the file holds the state a resumed run continues from, including a pruning step
    or a stage recorded in that epoch's hooks, and the final stages recorded in ``on_train_end``.
    Its ``epoch`` entry is always the index of the last completed epoch.
    """

    FILE_NAME = "last.ckpt"

    def __init__(self) -> None:
        self._saving_after_fit = False

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._save(trainer)

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._saving_after_fit = True
        try:
            self._save(trainer)
        finally:
            self._saving_after_fit = False

    @override
    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if self._saving_after_fit and trainer.current_epoch > 0:
            # Lightning counts the epoch after the last one once fit has ended; the loop state
            # that resuming uses is untouched.
            checkpoint["epoch"] = trainer.current_epoch - 1

    def _save(self, trainer: Trainer) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run:
            return
        directory = checkpoint_dir(trainer)
        if trainer.is_global_zero:
            directory.mkdir(parents=True, exist_ok=True)
        atomic_checkpoint(trainer, directory / self.FILE_NAME)


class StageBestCheckpoint(Checkpoint):
    """Keeps, for every pruning stage, the checkpoint of the epoch where ``monitor`` was best.

    A stage is the run of epochs in which the network's mask and shape stay the same (see
    :func:`pruning_state`); its label is ``dense`` before any pruning and otherwise the name of
    the stage the pruning callback recorded when it changed the network (``round2/pruned`` gives
    ``best-round2-pruned-epoch014.ckpt``). The best of a stage replaces the previous best of the
    same stage; earlier stages keep theirs, so the last ``best-*`` file written is the best of the
    final stage, the one to evaluate.

    Args:
        monitor: The logged metric to compare, e.g. ``val/top1``.
        mode: ``max`` or ``min``: whether a larger value is better.
    """

    def __init__(self, monitor: str = "val/top1", mode: str = "max") -> None:
        if not isinstance(monitor, str) or not monitor:
            raise UserError(f"checkpoint.monitor must be the name of a logged metric, e.g. val/top1; got {monitor!r}")
        if mode not in _MODES:
            raise UserError(f"checkpoint.mode must be one of {', '.join(_MODES)}; got {mode!r}")
        self.monitor = monitor
        self.mode = mode
        self.stage_state: tuple[float, int] | None = None
        self.stage_label = "dense"
        self.best_score: float | None = None
        self.best_path: str | None = None

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, mode=self.mode)

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        state = pruning_state(pl_module)
        if state != self.stage_state:
            self._start_stage(state, pl_module)
        score = float(value)
        if self.best_score is not None and not self._better(score, self.best_score):
            return
        directory = checkpoint_dir(trainer)
        if trainer.is_global_zero:
            directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"best-{self.stage_label}-epoch{trainer.current_epoch:03d}.ckpt"
        previous, self.best_path, self.best_score = self.best_path, str(path), score
        atomic_checkpoint(trainer, path)
        if previous and previous != str(path) and trainer.is_global_zero:
            Path(previous).unlink(missing_ok=True)

    def _start_stage(self, state: tuple[float, int], pl_module: LightningModule) -> None:
        stages = getattr(pl_module, "pruning_stages", [])
        changed = state != (0.0, 0)
        name = stages[-1]["name"] if changed and stages else ("pruned" if changed else "dense")
        self.stage_state, self.stage_label = state, _slug(name)
        self.best_score, self.best_path = None, None

    def _better(self, score: float, best: float) -> bool:
        return score > best if self.mode == "max" else score < best

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "stage_state": self.stage_state,
            "stage_label": self.stage_label,
            "best_score": self.best_score,
            "best_path": self.best_path,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        stage_state = state_dict.get("stage_state")
        self.stage_state = None if stage_state is None else (float(stage_state[0]), int(stage_state[1]))
        self.stage_label = state_dict.get("stage_label", "dense")
        self.best_score = state_dict.get("best_score")
        self.best_path = state_dict.get("best_path")


def _slug(name: str) -> str:
    """A stage name as a file-name part: ``round2/pruned`` -> ``round2-pruned``."""
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower() or "stage"
