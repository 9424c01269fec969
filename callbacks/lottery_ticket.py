"""``LotteryTicket``: iterative magnitude pruning with rewinding, all rounds in one ``fit``."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor

from callbacks.mask_pruning import MaskPruningCallback
from lit_prune.models import create_model
from lit_prune.models.checkpoint import read_state_dict
from lit_prune.module import ImageClassifier
from lit_prune.pruning import fixed_steps, geometric, validate_sparsity

__all__ = ["CONTROLS", "LotteryTicket"]

CONTROLS = ("none", "reinit", "random_prune")


class LotteryTicket(MaskPruningCallback):
    """Finds lottery tickets by iterative magnitude pruning (IMP) with rewinding.

    Frankle & Carbin 2019, "The Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural
    Networks"; late rewinding from Frankle et al. 2020, "Linear Mode Connectivity and the Lottery
    Ticket Hypothesis". One ``fit`` runs every round:

    1. round 0 trains the dense network for ``epochs_per_round`` epochs;
    2. at the start of each following round, the smallest-magnitude surviving weights are pruned
       (``prune_fraction`` of the remaining, or the per-round rate that reaches
       ``final_sparsity``), the survivors are rewound to the snapshot taken at initialisation
       (``rewind_epoch: 0``), at the start of epoch ``rewind_epoch`` or at optimizer step
       ``rewind_step``, the optimizer state is discarded and the LR schedule restarts from the
       rewind point, and training runs for ``epochs_per_round - rewind_epoch`` epochs.

    ``trainer.max_epochs`` must equal ``epochs_per_round + rounds * (epochs_per_round -
    rewind_epoch)``. The controls of the paper: ``control: reinit`` re-initialises the survivors
    randomly instead of rewinding; ``control: random_prune`` prunes random weights with the same
    per-layer sparsity as magnitude pruning would. The rewind snapshot and the round reached are
    saved in this callback's checkpoint state, so a run resumed from any epoch ends identically.
    Each round's validation accuracy and loss are logged under ``lth/round_<r>/`` against the epoch
    within the round, and stages ``baseline``, ``round<r>/pruned`` and ``round<r>/trained`` are
    recorded.

    Args:
        epochs_per_round: Epochs of training in round 0 (and, less ``rewind_epoch``, later rounds).
        rounds: Number of pruning rounds (required unless ``final_sparsity`` is given).
        prune_fraction: Fraction of the remaining weights pruned per round, in (0, 1).
        final_sparsity: Sparsity after the last round, in [0, 1); with ``rounds`` the per-round
            fraction is derived from it, without it the rounds continue at ``prune_fraction``
            until it is reached.
        rewind_epoch: Rewind to the weights at the start of this epoch (0 = initialisation).
        rewind_step: Rewind to the weights before this optimizer step instead (late rewinding
            by iteration); rounds after the first then train ``epochs_per_round`` epochs.
        control: ``"none"``, ``"reinit"`` or ``"random_prune"``.
        rewind_weights: A checkpoint (Lightning's or a plain state dict) whose network weights
            are the rewind snapshot, instead of the weights this run has at the rewind point.
            A branch that resumes a shared dense run past that point (``lit-prune sweep`` with
            a base stage) rewinds to the dense run's initial weights this way. Read when
            training starts, unless the snapshot is already in the resumed callback state.
        **kwargs: Options of ``MaskPruningCallback`` (scope, layer_sparsity, include, exclude,
            include_bias, include_norm, seed, eval_batches, log_layers).

    Raises:
        ValueError: If an option is out of range (no rounds, rewind point past the round length).
    """

    def __init__(
        self,
        epochs_per_round: int,
        rounds: int | None = None,
        prune_fraction: float = 0.2,
        final_sparsity: float | None = None,
        rewind_epoch: int = 0,
        rewind_step: int | None = None,
        control: str = "none",
        rewind_weights: str | None = None,
        scope: str = "global",
        layer_sparsity: Mapping[str, float] | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        include_bias: bool = False,
        include_norm: bool = False,
        seed: int = 0,
        eval_batches: int | None = None,
        log_layers: bool = True,
    ) -> None:
        super().__init__(
            scope=scope,
            score="magnitude",
            layer_sparsity=layer_sparsity,
            include=include,
            exclude=exclude,
            include_bias=include_bias,
            include_norm=include_norm,
            seed=seed,
            eval_batches=eval_batches,
            log_layers=log_layers,
        )
        if epochs_per_round < 1:
            raise ValueError(f"epochs_per_round must be >= 1, got {epochs_per_round}")
        if control not in CONTROLS:
            raise ValueError(f"control must be one of {CONTROLS}, got {control!r}")
        if not 0 <= rewind_epoch < epochs_per_round:
            raise ValueError(
                f"rewind_epoch must be in [0, epochs_per_round) = [0, {epochs_per_round}), got {rewind_epoch}: "
                "the rewind point must lie inside the first round"
            )
        if rewind_step is not None and (rewind_step < 0 or rewind_epoch != 0):
            raise ValueError(f"rewind_step must be >= 0 and is used instead of rewind_epoch, got {rewind_step}")
        if rewind_weights is not None and (not isinstance(rewind_weights, str) or not rewind_weights):
            raise ValueError(f"rewind_weights must be the path of a checkpoint file or null, got {rewind_weights!r}")
        self.levels = _round_levels(rounds, prune_fraction, final_sparsity)
        self.epochs_per_round = epochs_per_round
        self.rewind_epoch = rewind_epoch
        self.rewind_step = rewind_step
        self.control = control
        self.rewind_weights = rewind_weights
        retrain = epochs_per_round - rewind_epoch
        self.prune_epochs = [epochs_per_round + r * retrain for r in range(len(self.levels))]
        self.total_epochs = epochs_per_round + len(self.levels) * retrain
        self.rounds_done = 0
        self.snapshot: dict[str, Tensor] | None = None
        self._state_key = self._generate_state_key(
            epochs_per_round=epochs_per_round, levels=tuple(round(x, 6) for x in self.levels), control=control
        )

    @property
    def state_key(self) -> str:
        return self._state_key

    def describe_method(self) -> str:
        """A short description of the method for reports."""
        if self.rewind_step is not None:
            rewind = f"step {self.rewind_step}"
        else:
            rewind = "init" if self.rewind_epoch == 0 else f"epoch {self.rewind_epoch}"
        control = "" if self.control == "none" else f", control {self.control}"
        return f"lottery ticket IMP {len(self.levels)} rounds to {self.levels[-1]:.0%}, rewind to {rewind}{control}"

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit" and trainer.max_epochs != self.total_epochs:
            raise ValueError(
                f"LotteryTicket with {len(self.levels)} rounds of {self.epochs_per_round} epochs "
                f"(rewind_epoch {self.rewind_epoch}) needs trainer.max_epochs = {self.total_epochs}, "
                f"got {trainer.max_epochs}"
            )

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.snapshot is None and self.rewind_weights is not None:
            assert isinstance(pl_module, ImageClassifier)
            self.snapshot = _read_snapshot(self.rewind_weights, pl_module)
        if self.rewind_step is not None and self.rewind_step >= trainer.num_training_batches * self.epochs_per_round:
            raise ValueError(
                f"rewind_step {self.rewind_step} lies past the first round "
                f"({trainer.num_training_batches * self.epochs_per_round} steps)"
            )

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        assert isinstance(pl_module, ImageClassifier)
        if self.snapshot is None and self.rewind_step is None and trainer.current_epoch == self.rewind_epoch:
            self.snapshot = _cpu_copy(pl_module.network.state_dict())
        if self.rounds_done < len(self.levels) and trainer.current_epoch == self.prune_epochs[self.rounds_done]:
            self._next_round(trainer, pl_module)
        pl_module.log("prune/round", float(self.rounds_done), on_epoch=True)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self.snapshot is None and self.rewind_step is not None and trainer.global_step == self.rewind_step:
            assert isinstance(pl_module, ImageClassifier)
            self.snapshot = _cpu_copy(pl_module.network.state_dict())

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        round_start = 0 if self.rounds_done == 0 else self.prune_epochs[self.rounds_done - 1]
        metrics = {
            f"lth/round_{self.rounds_done}/{key.replace('/', '_')}": float(trainer.callback_metrics[key])
            for key in ("val/top1", "val/top5", "val/loss", "train/loss_epoch")
            if key in trainer.callback_metrics
        }
        if metrics and trainer.logger is not None:
            trainer.logger.log_metrics(metrics, step=trainer.current_epoch - round_start)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        assert isinstance(pl_module, ImageClassifier)
        name = "baseline" if self.rounds_done == 0 else f"round{self.rounds_done}/trained"
        self.record(trainer, pl_module, name)

    def _rewind_action(self) -> str:
        """What happens to the surviving weights after a prune, in words for the console and report."""
        if self.control == "reinit":
            return "survivors re-initialised (control)"
        point = f"step {self.rewind_step}" if self.rewind_step is not None else f"epoch {self.rewind_epoch}"
        return f"weights rewound to {point}"

    def _next_round(self, trainer: Trainer, pl_module: ImageClassifier) -> None:
        if self.snapshot is None:
            raise RuntimeError("LotteryTicket has no rewind snapshot: the rewind point was never reached")
        round_index = self.rounds_done + 1
        self.record(trainer, pl_module, "baseline" if round_index == 1 else f"round{self.rounds_done}/trained")
        level = self.levels[self.rounds_done]
        progress = (self.rounds_done + 1) / len(self.levels)
        network = pl_module.network
        mask = self.pruner.mask(network, level, progress, pl_module.pruning_mask)
        if self.control == "random_prune":
            mask = self.pruner.random_mask_like(network, mask, pl_module.pruning_mask, seed_offset=round_index)
        self.install_mask(trainer, pl_module, mask)
        self.record(trainer, pl_module, f"round{round_index}/pruned", round=round_index, action=self._rewind_action())
        if self.control == "reinit":
            network.load_state_dict(_fresh_state(pl_module, seed=self.pruner.seed + round_index))
        else:
            network.load_state_dict(self.snapshot)
        pl_module.set_pruning_mask(pl_module.pruning_mask)
        self.rounds_done = round_index
        _restart_optimization(trainer, self._scheduler_steps_to_rewind_point(trainer))

    def _scheduler_steps_to_rewind_point(self, trainer: Trainer) -> int:
        interval = trainer.lr_scheduler_configs[0].interval if trainer.lr_scheduler_configs else "epoch"
        if self.rewind_step is not None:
            return self.rewind_step if interval == "step" else 0
        return self.rewind_epoch * (trainer.num_training_batches if interval == "step" else 1)

    def state_dict(self) -> dict[str, Any]:
        return {"rounds_done": self.rounds_done, "snapshot": self.snapshot}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rounds_done = int(state_dict["rounds_done"])
        self.snapshot = state_dict["snapshot"]


def _round_levels(rounds: int | None, prune_fraction: float, final_sparsity: float | None) -> list[float]:
    """The sparsity after each pruning round."""
    if rounds is not None and rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if final_sparsity is None:
        if rounds is None:
            raise ValueError("LotteryTicket needs rounds, final_sparsity, or both")
        return geometric(prune_fraction, rounds)
    final_sparsity = validate_sparsity(final_sparsity, "final_sparsity")
    if final_sparsity == 0.0:
        raise ValueError("final_sparsity must be > 0: a lottery ticket prunes something")
    if rounds is None:
        return fixed_steps(final_sparsity, prune_fraction)
    return [1.0 - (1.0 - final_sparsity) ** (r / rounds) for r in range(1, rounds + 1)]


def _read_snapshot(path: str, pl_module: ImageClassifier) -> dict[str, Tensor]:
    """The network weights in ``path``, checked against the network's own state-dict keys."""
    snapshot = read_state_dict(path)
    expected = set(pl_module.network.state_dict())
    if set(snapshot) != expected:
        missing, extra = sorted(expected - set(snapshot)), sorted(set(snapshot) - expected)
        raise ValueError(
            f"rewind_weights {path!r} does not hold this network's weights: missing {missing[:5]}, "
            f"unexpected {extra[:5]}; give a checkpoint of the same (unpruned) architecture"
        )
    return snapshot


def _cpu_copy(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in state.items()}


def _fresh_state(pl_module: ImageClassifier, seed: int) -> dict[str, Tensor]:
    """A newly initialised state of the same network, drawn with ``seed`` (the reinit control)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        name = pl_module.hparams.get("network")
        if isinstance(name, str):
            kwargs = dict(pl_module.hparams.get("network_kwargs") or {})
            return create_model(name, num_classes=pl_module.num_classes, **kwargs).state_dict()
        donor = copy.deepcopy(pl_module.network).cpu()
        for module in donor.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        return donor.state_dict()


def _restart_optimization(trainer: Trainer, scheduler_steps: int) -> None:
    """Builds a fresh optimizer and LR scheduler, advanced ``scheduler_steps`` to the rewind point."""
    trainer.strategy.setup_optimizers(trainer)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*")
        for config in trainer.lr_scheduler_configs:
            for _ in range(scheduler_steps):
                config.scheduler.step()
