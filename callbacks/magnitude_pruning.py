"""``MagnitudePruning``: one-shot, iterative or gradual unstructured pruning at epoch starts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from callbacks.mask_pruning import MaskPruningCallback
from lit_prune.errors import UserError
from lit_prune.module import ImageClassifier
from lit_prune.pruning import cubic_sparsity, fixed_steps, linear_steps
from lit_prune.pruning.nm_sparsity import pattern_sparsity
from lit_prune.validation import check_choice, check_int, check_sparsity

__all__ = ["SCHEDULES", "MagnitudePruning"]

SCHEDULES = ("one_shot", "iterative", "gradual")


class MagnitudePruning(MaskPruningCallback):
    """Prunes the lowest-scoring weights (by default the smallest magnitudes) on a schedule, at epoch starts.

    Schedules:

    - ``one_shot``: prune to ``target_sparsity`` once, at the start of ``start_epoch`` (after
      ``start_epoch`` epochs of training); the remaining epochs retrain (Han et al. 2015,
      "Learning both Weights and Connections for Efficient Neural Networks").
    - ``iterative``: from ``start_epoch`` every ``every_n_epochs`` epochs (or at the listed
      ``epochs``), prune ``fraction_of_remaining`` of the *remaining* weights until the target, with
      retraining in between (Han et al. 2015). With ``epochs`` the steps are equal fractions of
      the remaining weights, as many as there are epochs.
    - ``gradual``: the cubic schedule of Zhu & Gupta 2017 ("To prune, or not to prune"), from 0
      at ``start_epoch`` to the target at ``end_epoch``, pruning every ``every_n_epochs``.

    Every pruning step records the stages ``baseline`` (first step only), ``step<k>/before`` and
    ``step<k>/pruned`` with validation accuracy, and the end of training records ``fine_tuned``.
    Unlike Lightning's ``ModelPruning``, the amount is the cumulative target (never compounded),
    biases and normalisation layers are left alone unless asked, the mask is checkpointed by the
    module, and the schedule position by this callback.

    With ``pattern: "N:M"`` the target is the pattern's sparsity ``1 - N/M`` (0.5 for 2:4; give
    it or leave it out): every step keeps at most N of every M consecutive input weights and
    the last one leaves the pruned layers exactly N:M, as NVIDIA's ASP does in one shot.

    Args:
        target_sparsity: Final fraction of the selected weights that are zero, in [0, 1);
            required unless ``pattern`` gives it.
        schedule: ``"one_shot"``, ``"iterative"`` or ``"gradual"``.
        start_epoch: Epoch at whose start the first pruning step happens.
        end_epoch: ``gradual`` only: epoch at whose start the target is reached.
        every_n_epochs: Epochs between pruning steps (``iterative``, ``gradual``).
        epochs: ``iterative`` only: explicit epochs of the pruning steps, increasing.
        fraction_of_remaining: ``iterative`` only: fraction of the remaining weights per step, in (0, 1).
        sparsity_step: ``iterative`` only: sparsity added per step instead, in (0, 1).
        **kwargs: Options of ``MaskPruningCallback`` (scope, score, pattern, layer_sparsity,
            include, exclude, include_bias, include_norm, seed, log_layers, eval_batches).

    Raises:
        ValueError: If an option is out of range or does not apply to the schedule.
        UserError: If the score, scope or pattern is not allowed, or the target does not
            match the pattern.
    """

    state_key_fields: ClassVar[tuple[str, ...]] = ("target_sparsity", "schedule", "start_epoch")
    state_defaults: ClassVar[dict[str, Any]] = {"steps_done": 0}

    def __init__(
        self,
        target_sparsity: float | None = None,
        schedule: str = "one_shot",
        start_epoch: int = 0,
        end_epoch: int | None = None,
        every_n_epochs: int = 1,
        epochs: Sequence[int] | None = None,
        fraction_of_remaining: float = 0.2,
        sparsity_step: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if self.pruner.nm_pattern is not None:
            target_sparsity = pattern_sparsity(self.pruner.nm_pattern, target_sparsity, "target_sparsity")
        elif target_sparsity is None:
            raise UserError("MagnitudePruning needs target_sparsity (or a pattern such as '2:4', which sets it)")
        self.target_sparsity = check_sparsity(target_sparsity, "target_sparsity")
        check_choice(schedule, "schedule", SCHEDULES)
        check_int(start_epoch, "start_epoch", 0)
        check_int(every_n_epochs, "every_n_epochs", 1)
        if epochs is not None and schedule != "iterative":
            raise ValueError("epochs lists the steps of the 'iterative' schedule only")
        if sparsity_step is not None and (schedule != "iterative" or epochs is not None):
            raise ValueError("sparsity_step applies to the 'iterative' schedule without an epochs list only")
        if end_epoch is not None and schedule != "gradual":
            raise ValueError("end_epoch applies to the 'gradual' schedule only")
        self.schedule = schedule
        self.start_epoch = start_epoch
        self.plan = _build_plan(
            schedule,
            self.target_sparsity,
            start_epoch,
            end_epoch,
            every_n_epochs,
            epochs,
            fraction_of_remaining,
            sparsity_step,
        )

    @override
    def describe_method(self) -> str:
        """A short description of the method for reports."""
        score = "" if self.pruner.score == "magnitude" else f" ({self.pruner.score} scores)"
        pattern = "" if self.pruner.nm_pattern is None else f" {self.pruner.nm_pattern} pattern"
        schedule = self.schedule.replace("_", "-")
        return f"magnitude {schedule} {self.pruner.scope} {self.target_sparsity:.0%}{pattern}{score}"

    @override
    def has_pruned(self) -> bool:
        return self.steps_done > 0

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit":
            planned = [epoch for epoch, _, _ in self.plan]
            self.check_epochs_before_end(
                trainer, planned, "the schedule", f"pruning happens at the start of an epoch (planned: {planned})"
            )

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        module = self.classifier(pl_module)
        while self.steps_done < len(self.plan) and self.plan[self.steps_done][0] <= trainer.current_epoch:
            _, sparsity, progress = self.plan[self.steps_done]
            self._prune(trainer, module, sparsity, progress)

    def _prune(self, trainer: Trainer, pl_module: ImageClassifier, sparsity: float, progress: float) -> None:
        step = self.steps_done + 1
        if step == 1:
            self.record(trainer, pl_module, "baseline")
        elif len(self.plan) > 1:
            self.record(trainer, pl_module, f"step{step}/before")
        network, current = pl_module.network, pl_module.pruning_mask
        self.install_mask(
            trainer, pl_module, lambda: self.pruner.mask(network, sparsity, progress, current, seed_offset=step)
        )
        self.steps_done = step
        name = "pruned" if len(self.plan) == 1 else f"step{step}/pruned"
        self.record(trainer, pl_module, name, target_sparsity=sparsity)


def _progress(level: float, target: float) -> float:
    """Fraction of the way to ``target`` measured in pruning rate (see ``layer_targets_at_progress``)."""
    if target == 0.0:
        return 1.0
    return min(1.0, math.log(1.0 - level) / math.log(1.0 - target))


def _build_plan(
    schedule: str,
    target: float,
    start_epoch: int,
    end_epoch: int | None,
    every_n_epochs: int,
    epochs: Sequence[int] | None,
    fraction_of_remaining: float,
    sparsity_step: float | None = None,
) -> list[tuple[int, float, float]]:
    """Returns the pruning steps as ``(epoch, sparsity, progress)``, epochs increasing."""
    if schedule == "one_shot":
        return [(start_epoch, target, 1.0)]
    if schedule == "iterative":
        if epochs is not None:
            epochs = [int(e) for e in epochs]
            if not epochs or epochs[0] < 0 or any(b <= a for a, b in zip(epochs, epochs[1:])):
                raise ValueError(f"epochs must be a non-empty increasing list of epochs >= 0, got {epochs}")
            count = len(epochs)
            levels = [1.0 - (1.0 - target) ** ((k + 1) / count) for k in range(count)]
        else:
            if sparsity_step is None:
                levels = fixed_steps(target, fraction_of_remaining)
            else:
                levels = linear_steps(target, sparsity_step)
            epochs = [start_epoch + k * every_n_epochs for k in range(len(levels))]
        return [(epoch, level, _progress(level, target)) for epoch, level in zip(epochs, levels)]
    if end_epoch is None or end_epoch <= start_epoch:
        raise ValueError(f"the 'gradual' schedule needs end_epoch > start_epoch ({start_epoch}), got {end_epoch}")
    plan = []
    for epoch in range(start_epoch, end_epoch + 1, every_n_epochs):
        level = cubic_sparsity(epoch, start_epoch, end_epoch, 0.0, target)
        if level > 0.0:
            plan.append((epoch, level, _progress(level, target)))
    if plan[-1][0] != end_epoch:
        plan.append((end_epoch, target, 1.0))
    return plan
