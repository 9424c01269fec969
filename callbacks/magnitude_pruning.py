"""``MagnitudePruning``: one-shot, iterative or gradual unstructured pruning at epoch starts."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from lightning.pytorch import LightningModule, Trainer

from callbacks.mask_pruning import MaskPruningCallback
from lit_prune.module import ImageClassifier
from lit_prune.pruning import cubic_sparsity, fixed_steps, linear_steps, validate_sparsity

__all__ = ["SCHEDULES", "MagnitudePruning"]

SCHEDULES = ("one_shot", "iterative", "gradual")


class MagnitudePruning(MaskPruningCallback):
    """Prunes the smallest-magnitude weights on a schedule, at the start of training epochs.

    Schedules:

    - ``one_shot``: prune to ``target_sparsity`` once, at the start of ``start_epoch`` (after
      ``start_epoch`` epochs of training); the remaining epochs retrain (Han et al. 2015,
      "Learning both Weights and Connections for Efficient Neural Networks").
    - ``iterative``: from ``start_epoch`` every ``every_n_epochs`` epochs (or at the listed
      ``epochs``), prune ``fraction_per_step`` of the *remaining* weights until the target, with
      retraining in between (Han et al. 2015). With ``epochs`` the steps are equal fractions of
      the remaining weights, as many as there are epochs.
    - ``gradual``: the cubic schedule of Zhu & Gupta 2017 ("To prune, or not to prune"), from 0
      at ``start_epoch`` to the target at ``end_epoch``, pruning every ``every_n_epochs``.

    Every pruning step records the stages ``baseline`` (first step only), ``step<k>/before`` and
    ``step<k>/pruned`` with validation accuracy, and the end of training records ``fine_tuned``.
    Unlike Lightning's ``ModelPruning``, the amount is the cumulative target (never compounded),
    biases and normalisation layers are left alone unless asked, the mask is checkpointed by the
    module, and the schedule position by this callback.

    Args:
        target_sparsity: Final fraction of the selected weights that are zero, in [0, 1).
        schedule: ``"one_shot"``, ``"iterative"`` or ``"gradual"``.
        start_epoch: Epoch at whose start the first pruning step happens.
        end_epoch: ``gradual`` only: epoch at whose start the target is reached.
        every_n_epochs: Epochs between pruning steps (``iterative``, ``gradual``).
        epochs: ``iterative`` only: explicit epochs of the pruning steps, increasing.
        fraction_per_step: ``iterative`` only: fraction of the remaining weights per step, in (0, 1).
        sparsity_step: ``iterative`` only: sparsity added per step instead, in (0, 1).
        **kwargs: Options of ``MaskPruningCallback`` (scope, score, layer_sparsity, include,
            exclude, include_bias, include_norm, seed, eval_batches, log_layers).

    Raises:
        ValueError: If an option is out of range or does not apply to the schedule.
    """

    def __init__(
        self,
        target_sparsity: float,
        schedule: str = "one_shot",
        start_epoch: int = 0,
        end_epoch: int | None = None,
        every_n_epochs: int = 1,
        epochs: Sequence[int] | None = None,
        fraction_per_step: float = 0.2,
        sparsity_step: float | None = None,
        scope: str = "global",
        score: str = "magnitude",
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
            score=score,
            layer_sparsity=layer_sparsity,
            include=include,
            exclude=exclude,
            include_bias=include_bias,
            include_norm=include_norm,
            seed=seed,
            eval_batches=eval_batches,
            log_layers=log_layers,
        )
        self.target_sparsity = validate_sparsity(target_sparsity, "target_sparsity")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        if start_epoch < 0:
            raise ValueError(f"start_epoch must be >= 0, got {start_epoch}")
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        if epochs is not None and schedule != "iterative":
            raise ValueError("epochs lists the steps of the 'iterative' schedule only")
        if sparsity_step is not None and (schedule != "iterative" or epochs is not None):
            raise ValueError("sparsity_step applies to the 'iterative' schedule without an epochs list only")
        if end_epoch is not None and schedule != "gradual":
            raise ValueError("end_epoch applies to the 'gradual' schedule only")
        self.schedule = schedule
        self.plan = _build_plan(
            schedule, self.target_sparsity, start_epoch, end_epoch, every_n_epochs, epochs, fraction_per_step, sparsity_step
        )
        self.steps_done = 0
        self._state_key = self._generate_state_key(
            target_sparsity=self.target_sparsity, schedule=schedule, start_epoch=start_epoch
        )

    @property
    def state_key(self) -> str:
        return self._state_key

    def describe_method(self) -> str:
        """A short description of the method for reports."""
        score = "" if self.pruner.score == "magnitude" else f" ({self.pruner.score} scores)"
        return f"magnitude {self.schedule.replace('_', '-')} {self.pruner.scope} {self.target_sparsity:.0%}{score}"

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit" or trainer.max_epochs is None or trainer.max_epochs < 0:
            return
        late = [epoch for epoch, _, _ in self.plan if epoch >= trainer.max_epochs]
        if late:
            raise ValueError(
                f"MagnitudePruning would prune at epochs {late}, but trainer.max_epochs is {trainer.max_epochs}: "
                f"pruning happens at the start of an epoch, so every step must be < max_epochs "
                f"(planned epochs: {[epoch for epoch, _, _ in self.plan]})"
            )

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        assert isinstance(pl_module, ImageClassifier)
        while self.steps_done < len(self.plan) and self.plan[self.steps_done][0] <= trainer.current_epoch:
            _, sparsity, progress = self.plan[self.steps_done]
            self._prune(trainer, pl_module, sparsity, progress)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        assert isinstance(pl_module, ImageClassifier)
        if self.steps_done:
            self.record(trainer, pl_module, "fine_tuned")

    def _prune(self, trainer: Trainer, pl_module: ImageClassifier, sparsity: float, progress: float) -> None:
        step = self.steps_done + 1
        if step == 1:
            self.record(trainer, pl_module, "baseline")
        elif len(self.plan) > 1:
            self.record(trainer, pl_module, f"step{step}/before")
        mask = self.pruner.mask(pl_module.network, sparsity, progress, pl_module.pruning_mask, seed_offset=step)
        self.install_mask(trainer, pl_module, mask)
        self.steps_done = step
        name = "pruned" if len(self.plan) == 1 else f"step{step}/pruned"
        self.record(trainer, pl_module, name, target_sparsity=sparsity)

    def state_dict(self) -> dict[str, Any]:
        return {"steps_done": self.steps_done}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.steps_done = int(state_dict["steps_done"])


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
    fraction_per_step: float,
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
            levels = fixed_steps(target, fraction_per_step) if sparsity_step is None else linear_steps(target, sparsity_step)
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
