"""Shared base of the structured pruning callbacks: one physical surgery, its stages and logging."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor, nn
from typing_extensions import override

from callbacks.base import PruningCallback
from lit_prune.module import ImageClassifier
from lit_prune.pruning.channel_groups import StructuredGroup, prunable_groups
from lit_prune.pruning.parameters import parameter_count
from lit_prune.pruning.score_registry import get_score
from lit_prune.pruning.structured_importance import (
    select_channels_for_removed_fraction,
    structured_importance,
)
from lit_prune.pruning.unstructured import check_scope
from lit_prune.validation import check_bool, check_fraction, check_int

__all__ = ["ParameterFractionPruning", "StructuredPruningCallback"]


class StructuredPruningCallback(PruningCallback):
    """Base class: removes structured units once during ``fit`` and records the stages around it.

    The surgery itself is :meth:`ImageClassifier.apply_surgery`, which records the history (so
    checkpoints reload strictly and a resumed run replays it), rebuilds the optimizer (and the
    DDP wrapper) and keeps or restarts the LR schedule. Subclasses decide *what* to keep and
    *when* (deciding on global rank 0, :meth:`decide_on_rank_zero`, so every DDP rank removes
    the same units); this class records the stages ``baseline`` (just before the surgery), ``pruned`` (just after,
    no fine-tuning yet) and ``fine_tuned`` (end of training), each with validation accuracy and
    ``params`` (the parameter count), logs ``prune/params`` every epoch, and saves the epoch of
    the surgery in its state so a resumed run does not prune again.

    Args:
        restart_lr_schedule: Start the LR schedule from its beginning after the surgery;
            otherwise it continues where it was.
        **kwargs: Options of ``PruningCallback`` (eval_batches).

    Raises:
        TypeError: If ``restart_lr_schedule`` is not a bool.
        ValueError: If ``eval_batches`` is below 1.
    """

    state_defaults: ClassVar[dict[str, Any]] = {"pruned_epoch": None}

    def __init__(self, restart_lr_schedule: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.restart_lr_schedule = check_bool(restart_lr_schedule, "restart_lr_schedule")

    @override
    def has_pruned(self) -> bool:
        return self.pruned_epoch is not None

    @override
    def measure_stage(self, trainer: Trainer, pl_module: ImageClassifier) -> dict[str, Any]:
        return {"params": parameter_count(pl_module.network), **super().measure_stage(trainer, pl_module)}

    def prune(
        self,
        trainer: Trainer,
        pl_module: ImageClassifier,
        keep: Mapping[str, Sequence[int]],
        kinds: Sequence[str],
        **stage_values: Any,
    ) -> list[dict[str, Any]]:
        """Records ``baseline``, applies ``keep`` on every rank, records ``pruned``.

        Args:
            trainer: The running trainer.
            pl_module: The module to shrink.
            keep: Group name to the indices of the units to keep, the same on every rank
                (decided on rank 0, :meth:`decide_on_rank_zero`).
            kinds: Group kinds the surgery may touch.
            **stage_values: Extra values for the ``pruned`` stage.

        Returns:
            The surgery records.
        """
        before = parameter_count(pl_module.network)
        self.record(trainer, pl_module, "baseline")
        keep = {name: list(indices) for name, indices in keep.items()}
        records = pl_module.apply_surgery(keep, kinds=kinds, restart_lr_schedule=self.restart_lr_schedule)
        self.pruned_epoch = trainer.current_epoch
        after = parameter_count(pl_module.network)
        self.record(
            trainer,
            pl_module,
            "pruned",
            params_before=before,
            params_removed_fraction=1.0 - after / before,
            groups_shrunk=len(records),
            **stage_values,
        )
        return records

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.log_metrics(trainer, {"prune/params": float(parameter_count(self.classifier(pl_module).network))})


class ParameterFractionPruning(StructuredPruningCallback):
    """Base of ``ChannelPruning`` and ``HeadPruning``: remove units until a fraction of the parameters is gone.

    At the start of one epoch the units of the groups of ``kinds`` (see
    ``lit_prune.pruning.channel_groups.prunable_groups``) are scored by ``score`` and the
    lowest-scoring ones are removed until at least ``removed_fraction`` of the model's parameters
    are gone (``select_channels_for_removed_fraction``: the count is exact, over every parameter of
    the network, including those no group touches). The epoch is either ``prune_epoch`` (prune at
    its start, after ``prune_epoch`` epochs of training) or ``trainer.max_epochs -
    fine_tune_epochs`` (train, prune, then fine-tune for the last ``fine_tune_epochs`` epochs).

    Scores (any registered group score, ``lit_prune.pruning.list_scores("groups")``, or the
    import path of a user's own): ``l1``/``l2`` norms of a unit's producing weights (Li et al.
    2017), ``bn_scale`` (``|gamma|``, Liu et al. 2017), ``taylor``, the first-order Taylor
    estimate ``|sum(g * w)|`` of Molchanov et al. 2019, and ``fpgm``, the distance to the other
    filters of the layer (He et al. 2019). For a score that needs calibration batches
    (``taylor``) the callback draws ``calibration_batches`` training batches (the data module's
    loader in its fixed first-epoch order, without augmentation); ``taylor`` accumulates their
    gradients on a copy of the network (``taylor_importance``: dropout and drop-path off, batch
    norm on batch statistics as in Molchanov et al.'s code), so the model being trained, its
    ``.grad`` and batch-norm statistics are untouched and no DDP hook fires; rank 0's decision
    is broadcast.

    Args:
        removed_fraction: Fraction of the model's parameters to remove, in (0, 1).
        kinds: Group kinds to prune.
        score: ``l1``, ``l2``, ``bn_scale``, ``taylor``, ``fpgm``, or an import path.
        scope: ``global`` (one ranking over all groups) or ``layer`` (the same fraction of
            units from every group).
        normalize: With ``scope: global``, divide each group's scores by their mean first, so
            groups of different scale compete on relative importance.
        max_group_fraction: Largest fraction of one group's units that may go, in (0, 1];
            every group keeps at least one unit.
        include_residual: ResNets only: also prune the channels of the residual streams
            (coupled across every block of a stage); ``False`` prunes block-internal channels.
        prune_epoch: Prune at the start of this epoch.
        fine_tune_epochs: Instead of ``prune_epoch``: prune this many epochs before the end.
        calibration_batches: Training batches drawn for a score that needs them (``taylor``).
        **kwargs: Options of ``StructuredPruningCallback`` (restart_lr_schedule, eval_batches).

    Raises:
        ValueError: If an option is out of range, or neither or both of ``prune_epoch`` and
            ``fine_tune_epochs`` are given.
        TypeError: If an option has the wrong type.
    """

    state_key_fields: ClassVar[tuple[str, ...]] = ("removed_fraction", "score", "kinds")

    def __init__(
        self,
        removed_fraction: float,
        kinds: Sequence[str],
        score: str = "l1",
        scope: str = "global",
        normalize: bool = True,
        max_group_fraction: float = 0.9,
        include_residual: bool = True,
        prune_epoch: int | None = None,
        fine_tune_epochs: int | None = None,
        calibration_batches: int = 8,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.removed_fraction = check_fraction(
            removed_fraction, "removed_fraction", zero=False, meaning="the fraction of the model's parameters to remove"
        )
        self.scorer = get_score(score, kind="groups")
        self.scope = check_scope(scope, self.scorer)
        self.normalize = check_bool(normalize, "normalize")
        self.include_residual = check_bool(include_residual, "include_residual")
        self.max_group_fraction = check_fraction(max_group_fraction, "max_group_fraction", zero=False, one=True)
        if (prune_epoch is None) == (fine_tune_epochs is None):
            raise ValueError(
                "give exactly one of prune_epoch (prune at the start of that epoch) and fine_tune_epochs "
                f"(prune that many epochs before the end); got prune_epoch={prune_epoch!r}, "
                f"fine_tune_epochs={fine_tune_epochs!r}"
            )
        self.prune_epoch = check_int(prune_epoch, "prune_epoch", 0, optional=True)
        self.fine_tune_epochs = check_int(fine_tune_epochs, "fine_tune_epochs", 1, optional=True)
        self.calibration_batches = check_int(calibration_batches, "calibration_batches", 1)
        self.kinds = tuple(kinds)
        self.score = score
        self._epoch: int | None = prune_epoch

    @override
    def describe_method(self) -> str:
        """A short description of the method for reports."""
        if self.prune_epoch is not None:
            when = f"at epoch {self.prune_epoch}"
        else:
            when = f"+{self.fine_tune_epochs} fine-tune epochs"
        scope = self.scope + (" normalised" if self.scope == "global" and self.normalize else "")
        units = "/".join(kind.replace("mlp_units", "MLP units") for kind in self.kinds)
        return f"structured {units} {self.removed_fraction:.0%} params ({self.score}, {scope}) {when}"

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit":
            return
        network = self.classifier(pl_module).network
        groups = self.groups(network)
        self._check_reachable(network, groups)
        if "batches" not in self.scorer.needs:
            structured_importance(network, groups, self.score)
        max_epochs = trainer.max_epochs
        if max_epochs is None or max_epochs < 0:
            raise ValueError(f"{type(self).__name__} needs a finite trainer.max_epochs to know when to prune")
        if self.fine_tune_epochs is not None:
            self._epoch = max_epochs - self.fine_tune_epochs
            if self._epoch < 0:
                raise ValueError(
                    f"fine_tune_epochs={self.fine_tune_epochs} exceeds trainer.max_epochs={max_epochs}: "
                    "pruning happens fine_tune_epochs before the end of training"
                )
        elif self.prune_epoch >= max_epochs:
            raise ValueError(
                f"prune_epoch={self.prune_epoch} must be < trainer.max_epochs={max_epochs}: pruning happens at the "
                "start of an epoch"
            )

    def groups(self, network: nn.Module) -> dict[str, StructuredGroup]:
        """The groups this callback prunes in ``network`` at its current widths.

        Raises:
            TypeError: If the network is not supported by the structured surgery.
            ValueError: If it has no group of the callback's kinds.
        """
        groups = prunable_groups(network, include_residual=self.include_residual, kinds=self.kinds)
        if not groups:
            hint = (
                "use HeadPruning for Vision Transformers"
                if "channels" in self.kinds
                else "use ChannelPruning for CNNs (ResNet, VGG)"
            )
            raise ValueError(
                f"{type(self).__name__} prunes {list(self.kinds)}, but {type(network).__name__} has no such "
                f"units; {hint}"
            )
        return groups

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        module = self.classifier(pl_module)
        if self.pruned_epoch is not None or self._epoch is None or trainer.current_epoch < self._epoch:
            return
        network = module.network
        groups = self.groups(network)
        scores = self._scores(trainer, module, groups)
        keep = self.decide_on_rank_zero(trainer, lambda: self.select(network, groups, scores, self.removed_fraction))
        self.prune(trainer, module, keep, kinds=self.kinds, target_removed_fraction=self.removed_fraction)

    def _scores(
        self, trainer: Trainer, pl_module: ImageClassifier, groups: Mapping[str, StructuredGroup]
    ) -> dict[str, Tensor]:
        """The units' scores, computed on every rank (a score may run the network on calibration batches)."""
        if "batches" not in self.scorer.needs:
            return structured_importance(pl_module.network, groups, self.score)
        batches = self.training_batches(trainer, pl_module, limit=self.calibration_batches)
        return structured_importance(pl_module.network, groups, self.score, batches=batches)

    def select(
        self,
        network: nn.Module,
        groups: Mapping[str, StructuredGroup],
        scores: Mapping[str, Tensor],
        removed_fraction: float,
    ) -> dict[str, list[int]]:
        """Chooses the units to keep so that ``removed_fraction`` of the parameters go.

        Args:
            network: The network at the widths of ``groups``.
            groups: The groups to prune.
            scores: Group name to unit scores.
            removed_fraction: Fraction of all parameters of ``network`` to remove.

        Returns:
            Group name to the indices of the units to keep.

        Raises:
            ValueError: If the fraction cannot be reached within ``max_group_fraction``.
        """
        return select_channels_for_removed_fraction(
            network,
            groups,
            scores,
            removed_fraction,
            scope=self.scope,
            normalize=self.normalize,
            max_group_fraction=self.max_group_fraction,
        )

    def _check_reachable(self, network: nn.Module, groups: Mapping[str, StructuredGroup]) -> None:
        """Fails before training when the target cannot be reached within the cap."""
        uniform = {name: torch.ones(group.size) for name, group in groups.items()}
        self.select(network, groups, uniform, self.removed_fraction)
