"""``LotteryTicket``: iterative magnitude pruning with rewinding, all rounds in one ``fit``."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor, nn
from typing_extensions import override

from callbacks.mask_pruning import MaskPruningCallback
from lit_prune.models import create_model
from lit_prune.models.checkpoint import read_state_dict
from lit_prune.module import ImageClassifier
from lit_prune.pruning import PruningMask, fixed_steps, geometric
from lit_prune.pruning.nm_sparsity import pattern_sparsity
from lit_prune.validation import check_choice, check_int, check_sparsity

__all__ = ["CONTROLS", "LotteryTicket"]

CONTROLS = ("none", "reinit", "random_prune")


class LotteryTicket(MaskPruningCallback):
    """Finds lottery tickets by iterative magnitude pruning (IMP) with rewinding.

    Frankle & Carbin 2019, "The Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural
    Networks"; late rewinding from Frankle et al. 2020, "Linear Mode Connectivity and the Lottery
    Ticket Hypothesis". One ``fit`` runs every round:

    1. round 0 trains the dense network for ``epochs_per_round`` epochs;
    2. at the start of each following round, the smallest-magnitude surviving weights are pruned
       (``fraction_of_remaining`` of the remaining, or the per-round rate that reaches
       ``target_sparsity``), the survivors are rewound to the snapshot taken at initialisation
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
    recorded. ``score`` ranks the survivors by another data-free weight score instead of
    magnitude (LAMP's paper runs IMP with LAMP scores); ``pattern: "N:M"`` makes the final
    ticket exactly N:M (its sparsity, ``1 - N/M``, is then the final sparsity).

    Args:
        epochs_per_round: Epochs of training in round 0 (and, less ``rewind_epoch``, later rounds).
        rounds: Number of pruning rounds (required unless ``target_sparsity`` is given).
        fraction_of_remaining: Fraction of the remaining weights pruned per round, in (0, 1).
        target_sparsity: Sparsity after the last round, in [0, 1); with ``rounds`` the per-round
            fraction is derived from it, without it the rounds continue at
            ``fraction_of_remaining`` until it is reached.
        rewind_epoch: Rewind to the weights at the start of this epoch (0 = initialisation).
        rewind_step: Rewind to the weights before this optimizer step instead (late rewinding
            by iteration); rounds after the first then train ``epochs_per_round`` epochs.
        control: ``"none"``, ``"reinit"`` or ``"random_prune"``.
        rewind_weights: A checkpoint (Lightning's or a plain state dict) whose network weights
            are the rewind snapshot, instead of the weights this run has at the rewind point.
            A branch that resumes a shared dense run past that point (``lit-prune sweep`` with
            a base stage) rewinds to the dense run's initial weights this way. Read when
            training starts, unless the snapshot is already in the resumed callback state.
        **kwargs: Options of ``MaskPruningCallback`` (scope, score, pattern, layer_sparsity,
            include, exclude, include_bias, include_norm, seed, log_layers, eval_batches).

    Raises:
        ValueError: If an option is out of range (no rounds, rewind point past the round length).
    """

    state_key_fields: ClassVar[tuple[str, ...]] = ("epochs_per_round", "levels", "control")
    state_defaults: ClassVar[dict[str, Any]] = {"rounds_done": 0, "snapshot": None}

    def __init__(
        self,
        epochs_per_round: int,
        rounds: int | None = None,
        fraction_of_remaining: float = 0.2,
        target_sparsity: float | None = None,
        rewind_epoch: int = 0,
        rewind_step: int | None = None,
        control: str = "none",
        rewind_weights: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_int(epochs_per_round, "epochs_per_round", 1)
        check_choice(control, "control", CONTROLS)
        if not 0 <= rewind_epoch < epochs_per_round:
            raise ValueError(
                f"rewind_epoch must be in [0, epochs_per_round) = [0, {epochs_per_round}), got {rewind_epoch}: "
                "the rewind point must lie inside the first round"
            )
        if rewind_step is not None and (rewind_step < 0 or rewind_epoch != 0):
            raise ValueError(f"rewind_step must be >= 0 and is used instead of rewind_epoch, got {rewind_step}")
        if rewind_weights is not None and (not isinstance(rewind_weights, str) or not rewind_weights):
            raise ValueError(f"rewind_weights must be the path of a checkpoint file or null, got {rewind_weights!r}")
        if self.pruner.nm_pattern is not None:
            target_sparsity = pattern_sparsity(self.pruner.nm_pattern, target_sparsity, "target_sparsity")
        self.levels = _round_levels(rounds, fraction_of_remaining, target_sparsity)
        self.epochs_per_round = epochs_per_round
        self.rewind_epoch = rewind_epoch
        self.rewind_step = rewind_step
        self.control = control
        self.rewind_weights = rewind_weights
        retrain = epochs_per_round - rewind_epoch
        self.prune_epochs = [epochs_per_round + r * retrain for r in range(len(self.levels))]
        self.total_epochs = epochs_per_round + len(self.levels) * retrain

    @override
    def describe_method(self) -> str:
        """A short description of the method for reports."""
        if self.rewind_step is not None:
            rewind = f"step {self.rewind_step}"
        else:
            rewind = "init" if self.rewind_epoch == 0 else f"epoch {self.rewind_epoch}"
        control = "" if self.control == "none" else f", control {self.control}"
        pattern = "" if self.pruner.nm_pattern is None else f" {self.pruner.nm_pattern} pattern"
        score = "" if self.pruner.score == "magnitude" else f" ({self.pruner.score} scores)"
        rounds = f"{len(self.levels)} rounds to {self.levels[-1]:.0%}{pattern}"
        return f"lottery ticket IMP {rounds}, rewind to {rewind}{control}{score}"

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit" and trainer.max_epochs != self.total_epochs:
            raise ValueError(
                f"LotteryTicket with {len(self.levels)} rounds of {self.epochs_per_round} epochs "
                f"(rewind_epoch {self.rewind_epoch}) needs trainer.max_epochs = {self.total_epochs}, "
                f"got {trainer.max_epochs}"
            )

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.snapshot is None and self.rewind_weights is not None:
            self.snapshot = _read_snapshot(self.rewind_weights, self.classifier(pl_module))
        if self.rewind_step is not None and self.rewind_step >= trainer.num_training_batches * self.epochs_per_round:
            raise ValueError(
                f"rewind_step {self.rewind_step} lies past the first round "
                f"({trainer.num_training_batches * self.epochs_per_round} steps)"
            )

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        module = self.classifier(pl_module)
        if self.snapshot is None and self.rewind_step is None and trainer.current_epoch == self.rewind_epoch:
            self.snapshot = _cpu_copy(module.network.state_dict())
        if self.rounds_done < len(self.levels) and trainer.current_epoch == self.prune_epochs[self.rounds_done]:
            self._next_round(trainer, module)

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self.snapshot is None and self.rewind_step is not None and trainer.global_step == self.rewind_step:
            self.snapshot = _cpu_copy(self.classifier(pl_module).network.state_dict())

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self.log_metrics(trainer, {"prune/round": float(self.rounds_done)})
        round_start = 0 if self.rounds_done == 0 else self.prune_epochs[self.rounds_done - 1]
        metrics = {
            f"lth/round_{self.rounds_done}/{key.replace('/', '_')}": float(trainer.callback_metrics[key])
            for key in ("val/top1", "val/top5", "val/loss", "train/loss_epoch")
            if key in trainer.callback_metrics
        }
        if metrics:
            self.log_metrics(trainer, metrics, step=trainer.current_epoch - round_start)

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        name = "baseline" if self.rounds_done == 0 else f"round{self.rounds_done}/trained"
        self.record(trainer, self.classifier(pl_module), name)

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
        network = pl_module.network
        self.install_mask(trainer, pl_module, lambda: self._round_mask(network, pl_module.pruning_mask, round_index))
        self.record(trainer, pl_module, f"round{round_index}/pruned", round=round_index, action=self._rewind_action())
        if self.control == "reinit":
            network.load_state_dict(_fresh_state(pl_module, seed=self.pruner.seed + round_index))
        else:
            network.load_state_dict(self.snapshot)
        pl_module.set_pruning_mask(pl_module.pruning_mask)
        self.rounds_done = round_index
        _restart_optimization(trainer, self._scheduler_steps_to_rewind_point(trainer))

    def _round_mask(self, network: nn.Module, current: PruningMask | None, round_index: int) -> PruningMask:
        """The mask of round ``round_index`` (1-based): magnitude, or random with the same layer sparsity."""
        mask = self.pruner.mask(network, self.levels[round_index - 1], round_index / len(self.levels), current)
        if self.control == "random_prune":
            mask = self.pruner.random_mask_like(network, mask, current, seed_offset=round_index)
        return mask

    def _scheduler_steps_to_rewind_point(self, trainer: Trainer) -> int:
        interval = trainer.lr_scheduler_configs[0].interval if trainer.lr_scheduler_configs else "epoch"
        if self.rewind_step is not None:
            return self.rewind_step if interval == "step" else 0
        return self.rewind_epoch * (trainer.num_training_batches if interval == "step" else 1)


def _round_levels(rounds: int | None, fraction_of_remaining: float, target_sparsity: float | None) -> list[float]:
    """The sparsity after each pruning round."""
    if rounds is not None and rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if target_sparsity is None:
        if rounds is None:
            raise ValueError("LotteryTicket needs rounds, target_sparsity, or both")
        return geometric(fraction_of_remaining, rounds)
    target_sparsity = check_sparsity(target_sparsity, "target_sparsity")
    if target_sparsity == 0.0:
        raise ValueError("target_sparsity must be > 0: a lottery ticket prunes something")
    if rounds is None:
        return fixed_steps(target_sparsity, fraction_of_remaining)
    return [1.0 - (1.0 - target_sparsity) ** (r / rounds) for r in range(1, rounds + 1)]


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
