"""Shared base of the structured pruning callbacks: one physical surgery, its stages and logging."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn

from callbacks.evaluation import evaluate_on_validation
from lit_prune.module import ImageClassifier
from lit_prune.pruning.channel_groups import StructuredGroup, prunable_groups
from lit_prune.pruning.structured_importance import (
    IMPORTANCE_CRITERIA,
    SELECTION_SCOPES,
    select_channels_for_param_fraction,
    structured_importance,
    taylor_importance,
)

__all__ = ["ParameterFractionPruning", "StructuredPruningCallback", "parameter_count"]


def parameter_count(network: nn.Module) -> int:
    """Number of parameters of ``network`` (shared parameters counted once)."""
    return sum(parameter.numel() for parameter in {id(p): p for p in network.parameters()}.values())


class StructuredPruningCallback(Callback):
    """Base class: removes structured units once during ``fit`` and records the stages around it.

    The surgery itself is :meth:`ImageClassifier.apply_surgery`, which records the history (so
    checkpoints reload strictly and a resumed run replays it), rebuilds the optimizer (and the
    DDP wrapper) and keeps or restarts the LR schedule. Subclasses decide *what* to keep and
    *when*; this class broadcasts the decision from rank 0 (so every DDP rank removes the same
    units), records the stages ``baseline`` (just before the surgery), ``pruned`` (just after,
    no fine-tuning yet) and ``fine_tuned`` (end of training), each with validation accuracy and
    ``params`` (the parameter count), logs ``prune/params`` every epoch, and saves the epoch of
    the surgery in its state so a resumed run does not prune again.

    Args:
        restart_lr_schedule: Start the LR schedule from its beginning after the surgery;
            otherwise it continues where it was.
        eval_batches: Validation batches used to measure a stage (the trainer's integer
            ``limit_val_batches``, or all, when None).

    Raises:
        TypeError: If ``restart_lr_schedule`` is not a bool.
        ValueError: If ``eval_batches`` is below 1.
    """

    def __init__(self, restart_lr_schedule: bool = False, eval_batches: int | None = None) -> None:
        if not isinstance(restart_lr_schedule, bool):
            raise TypeError(f"restart_lr_schedule must be true or false, got {restart_lr_schedule!r}")
        _check_int("eval_batches", eval_batches, 1)
        self.restart_lr_schedule = restart_lr_schedule
        self.eval_batches = eval_batches
        self.pruned_epoch: int | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not isinstance(pl_module, ImageClassifier):
            raise TypeError(
                f"{type(self).__name__} works with lit_prune's ImageClassifier, got {type(pl_module).__name__}"
            )

    def record(self, trainer: Trainer, pl_module: ImageClassifier, name: str, **values: Any) -> dict[str, Any]:
        """Measures validation accuracy and the parameter count now and records them as a stage."""
        metrics = evaluate_on_validation(trainer, pl_module, self.eval_batches)
        return pl_module.record_stage(name, params=parameter_count(pl_module.network), **metrics, **values)

    def prune(
        self,
        trainer: Trainer,
        pl_module: ImageClassifier,
        keep: Mapping[str, Sequence[int]],
        kinds: Sequence[str],
        **stage_values: Any,
    ) -> list[dict[str, Any]]:
        """Records ``baseline``, applies rank 0's ``keep`` on every rank, records ``pruned``.

        Args:
            trainer: The running trainer.
            pl_module: The module to shrink.
            keep: Group name to the indices of the units to keep (rank 0's value is used).
            kinds: Group kinds the surgery may touch.
            **stage_values: Extra values for the ``pruned`` stage.

        Returns:
            The surgery records.
        """
        before = parameter_count(pl_module.network)
        self.record(trainer, pl_module, "baseline")
        keep = trainer.strategy.broadcast({name: list(indices) for name, indices in keep.items()}, src=0)
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

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        assert isinstance(pl_module, ImageClassifier)
        pl_module.log("prune/params", float(parameter_count(pl_module.network)), on_epoch=True, sync_dist=False)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        assert isinstance(pl_module, ImageClassifier)
        if self.pruned_epoch is not None:
            self.record(trainer, pl_module, "fine_tuned")

    def state_dict(self) -> dict[str, Any]:
        return {"pruned_epoch": self.pruned_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pruned_epoch = state_dict["pruned_epoch"]


class ParameterFractionPruning(StructuredPruningCallback):
    """Base of ``ChannelPruning`` and ``HeadPruning``: remove units until a fraction of the parameters is gone.

    At the start of one epoch the units of the groups of ``kinds`` (see
    ``lit_prune.pruning.channel_groups.prunable_groups``) are scored by ``criterion`` and the
    lowest-scoring ones are removed until at least ``param_fraction`` of the model's parameters
    are gone (``select_channels_for_param_fraction``: the count is exact, over every parameter of
    the network, including those no group touches). The epoch is either ``prune_epoch`` (prune at
    its start, after ``prune_epoch`` epochs of training) or ``trainer.max_epochs -
    fine_tune_epochs`` (train, prune, then fine-tune for the last ``fine_tune_epochs`` epochs).

    Criteria (``lit_prune.pruning.structured_importance``): ``l1``/``l2`` norms of a unit's
    producing weights (Li et al. 2017), ``bn_scale`` (``|gamma|``, Liu et al. 2017), and
    ``taylor``, the first-order Taylor estimate ``|sum(g * w)|`` of Molchanov et al. 2019. For
    ``taylor`` the callback accumulates gradients over ``taylor_batches`` training batches (the
    data module's loader in its fixed first-epoch order, without augmentation) on a copy of the
    network (``taylor_importance``: dropout and drop-path off, batch norm on batch statistics as
    in Molchanov et al.'s code), so the model being trained, its ``.grad`` and batch-norm
    statistics are untouched and no DDP hook fires; rank 0's decision is broadcast.

    Args:
        param_fraction: Fraction of the model's parameters to remove, in (0, 1).
        kinds: Group kinds to prune.
        criterion: One of ``l1``, ``l2``, ``bn_scale``, ``taylor``.
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
        restart_lr_schedule: Restart the LR schedule after the surgery.
        taylor_batches: Training batches whose gradients the ``taylor`` criterion accumulates.
        eval_batches: Validation batches used to measure a stage.

    Raises:
        ValueError: If an option is out of range, or neither or both of ``prune_epoch`` and
            ``fine_tune_epochs`` are given.
        TypeError: If an option has the wrong type.
    """

    def __init__(
        self,
        param_fraction: float,
        kinds: Sequence[str],
        criterion: str = "l1",
        scope: str = "global",
        normalize: bool = True,
        max_group_fraction: float = 0.9,
        include_residual: bool = True,
        prune_epoch: int | None = None,
        fine_tune_epochs: int | None = None,
        restart_lr_schedule: bool = False,
        taylor_batches: int = 8,
        eval_batches: int | None = None,
    ) -> None:
        super().__init__(restart_lr_schedule=restart_lr_schedule, eval_batches=eval_batches)
        if isinstance(param_fraction, bool) or not isinstance(param_fraction, (int, float)):
            raise TypeError(f"param_fraction must be a number in (0, 1), got {param_fraction!r}")
        if not 0.0 < param_fraction < 1.0:
            raise ValueError(
                "param_fraction must be in (0, 1) (the fraction of the model's parameters to remove), "
                f"got {param_fraction}"
            )
        if criterion not in IMPORTANCE_CRITERIA:
            raise ValueError(f"criterion must be one of {list(IMPORTANCE_CRITERIA)}, got {criterion!r}")
        if scope not in SELECTION_SCOPES:
            raise ValueError(f"scope must be one of {list(SELECTION_SCOPES)}, got {scope!r}")
        for name, flag in (("normalize", normalize), ("include_residual", include_residual)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be true or false, got {flag!r}")
        if isinstance(max_group_fraction, bool) or not isinstance(max_group_fraction, (int, float)):
            raise TypeError(f"max_group_fraction must be a number in (0, 1], got {max_group_fraction!r}")
        if not 0.0 < max_group_fraction <= 1.0:
            raise ValueError(f"max_group_fraction must be in (0, 1], got {max_group_fraction}")
        if (prune_epoch is None) == (fine_tune_epochs is None):
            raise ValueError(
                "give exactly one of prune_epoch (prune at the start of that epoch) and fine_tune_epochs "
                f"(prune that many epochs before the end); got prune_epoch={prune_epoch!r}, "
                f"fine_tune_epochs={fine_tune_epochs!r}"
            )
        _check_int("prune_epoch", prune_epoch, 0)
        _check_int("fine_tune_epochs", fine_tune_epochs, 1)
        _check_int("taylor_batches", taylor_batches, 1)
        self.param_fraction = float(param_fraction)
        self.kinds = tuple(kinds)
        self.criterion = criterion
        self.scope = scope
        self.normalize = normalize
        self.max_group_fraction = float(max_group_fraction)
        self.include_residual = include_residual
        self.prune_epoch = prune_epoch
        self.fine_tune_epochs = fine_tune_epochs
        self.taylor_batches = taylor_batches
        self._epoch: int | None = prune_epoch
        self._state_key = self._generate_state_key(
            param_fraction=self.param_fraction, criterion=criterion, kinds=self.kinds
        )

    @property
    def state_key(self) -> str:
        return self._state_key

    def describe_method(self) -> str:
        """A short description of the method for reports."""
        if self.prune_epoch is not None:
            when = f"at epoch {self.prune_epoch}"
        else:
            when = f"+{self.fine_tune_epochs} fine-tune epochs"
        scope = self.scope + (" normalised" if self.scope == "global" and self.normalize else "")
        units = "/".join(kind.replace("mlp_units", "MLP units") for kind in self.kinds)
        return f"structured {units} {self.param_fraction:.0%} params ({self.criterion}, {scope}) {when}"

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit":
            return
        assert isinstance(pl_module, ImageClassifier)
        groups = self.groups(pl_module.network)
        self._check_reachable(pl_module.network, groups)
        if self.criterion != "taylor":
            structured_importance(pl_module.network, groups, self.criterion)
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

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        assert isinstance(pl_module, ImageClassifier)
        if self.pruned_epoch is not None or self._epoch is None or trainer.current_epoch < self._epoch:
            return
        network = pl_module.network
        groups = self.groups(network)
        scores = self._scores(trainer, pl_module, groups)
        keep = self.select(network, groups, scores, self.param_fraction)
        self.prune(trainer, pl_module, keep, kinds=self.kinds, target_param_fraction=self.param_fraction)

    def _scores(
        self, trainer: Trainer, pl_module: ImageClassifier, groups: Mapping[str, StructuredGroup]
    ) -> dict[str, Tensor]:
        if self.criterion != "taylor":
            return structured_importance(pl_module.network, groups, self.criterion)
        batches = _training_batches(trainer, pl_module.device, self.taylor_batches)
        return taylor_importance(pl_module.network, groups, batches)

    def select(
        self,
        network: nn.Module,
        groups: Mapping[str, StructuredGroup],
        scores: Mapping[str, Tensor],
        param_fraction: float,
    ) -> dict[str, list[int]]:
        """Chooses the units to keep so that ``param_fraction`` of the parameters go.

        Args:
            network: The network at the widths of ``groups``.
            groups: The groups to prune.
            scores: Group name to unit scores.
            param_fraction: Fraction of all parameters of ``network`` to remove.

        Returns:
            Group name to the indices of the units to keep.

        Raises:
            ValueError: If the fraction cannot be reached within ``max_group_fraction``.
        """
        return select_channels_for_param_fraction(
            network,
            groups,
            scores,
            param_fraction,
            scope=self.scope,
            normalize=self.normalize,
            max_group_fraction=self.max_group_fraction,
        )

    def _check_reachable(self, network: nn.Module, groups: Mapping[str, StructuredGroup]) -> None:
        """Fails before training when the target cannot be reached within the cap."""
        uniform = {name: torch.ones(group.size) for name, group in groups.items()}
        self.select(network, groups, uniform, self.param_fraction)


def _training_batches(trainer: Trainer, device: torch.device, count: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Up to ``count`` training batches as model input, in the loader's first-epoch order, unaugmented."""
    datamodule = trainer.datamodule
    loader = datamodule.train_dataloader() if datamodule is not None else trainer.train_dataloader
    transform = getattr(datamodule, "transform_batch", None)
    for index, (images, labels) in enumerate(loader):
        if index >= count:
            return
        images, labels = images.to(device), labels.to(device)
        if transform is not None:
            images, labels = transform((images, labels), train=False)
        yield images, labels


def _check_int(name: str, value: int | None, minimum: int) -> None:
    """Accepts None (option not given) or an integer of at least ``minimum``."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
