"""``EarlyBird``: draws an early-bird ticket from batch-norm scales and removes its channels."""

from __future__ import annotations

from typing import Any, ClassVar

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from callbacks.structured_pruning import StructuredPruningCallback
from lit_prune.module import ImageClassifier
from lit_prune.pruning.early_bird import EarlyBirdDetector, bn_scale_channel_mask, keep_indices
from lit_prune.validation import check_bool, check_fraction, check_int

__all__ = ["EarlyBird"]


class EarlyBird(StructuredPruningCallback):
    """Early-bird tickets (You et al. 2020, "Drawing Early-Bird Tickets", ICLR).

    Train with ``NetworkSlimming`` (L1 on batch-norm scales, listed before this callback). At
    the start of every epoch from epoch 1 on, i.e. on the scales reached after each finished
    epoch, the channel mask at ``channel_fraction`` is drawn (``lit_prune.pruning.early_bird``: one global
    threshold over all batch-norm scales of the prunable channel groups, as in the paper; a
    residual-stream channel of a ResNet is removed only when the scales of every layer writing to
    it are below the threshold). Two modes:

    - **detected** (``draw_epoch: null``): the last ``window`` masks are kept, and when the
      largest normalised Hamming distance between the newest mask and the others is below
      ``threshold`` the ticket has emerged;
    - **fixed** (``draw_epoch: k``): the ticket is drawn at the start of epoch ``k`` (the paper
      compares epochs 10, 30, 50 and 100 of 160).

    The ticket's channels are then physically removed (``ImageClassifier.apply_surgery``) and the
    remaining epochs retrain the small network. The paper retrains the ticket with the full
    schedule, so by default the LR schedule restarts at the draw (``restart_lr_schedule: true``);
    for exactly the paper's protocol in fixed mode set ``max_epochs`` to ``draw_epoch`` plus
    the schedule's length. ``NetworkSlimming`` stops its penalty after the surgery.

    The distance is logged as ``earlybird/mask_distance`` every epoch. The stages ``baseline``
    (the dense network at the draw), ``pruned`` (the ticket, before retraining; with
    ``earlybird_epoch``, ``channels_removed_fraction``, ``mask_distance`` and the
    ``mask_distance_curve`` as ``[epoch, distance]`` pairs) and ``fine_tuned`` (end of training)
    go to the report. Decisions are taken on rank 0's mask, broadcast to every DDP rank (the
    scales are identical on every rank anyway: they are parameters that DDP keeps in sync). The
    mask window and the draw epoch are saved in the callback state; a run resumed after the draw
    does not prune again (the module replays its surgery when the checkpoint loads).

    Args:
        channel_fraction: Fraction of the batch-norm channels below the threshold, in (0, 1)
            (30 % and 50 % in the paper).
        draw_epoch: Fixed mode: draw the ticket at the start of this epoch (>= 1); ``None``
            detects it.
        window: Masks compared by the detector (5 in the paper), >= 2.
        threshold: Distance below which the ticket has emerged (0.1 in the paper), in (0, 1].
        include_residual: ResNets: also prune residual-stream channels; ``False`` prunes only
            block-internal channels.
        max_group_fraction: Largest fraction of one group's channels that may go, in (0, 1].
        restart_lr_schedule: Restart the LR schedule when the ticket is drawn.
        **kwargs: Options of ``PruningCallback`` (eval_batches).

    Raises:
        ValueError: If an option is out of range; when ``fit`` starts, if the network has no
            batch-normalised channels (a ViT) or ``draw_epoch`` is not below ``max_epochs``.
        TypeError: If an option has the wrong type.
    """

    state_key_fields: ClassVar[tuple[str, ...]] = ("channel_fraction", "draw_epoch")
    state_defaults: ClassVar[dict[str, Any]] = {**StructuredPruningCallback.state_defaults, "distances": []}

    def __init__(
        self,
        channel_fraction: float = 0.3,
        draw_epoch: int | None = None,
        window: int = 5,
        threshold: float = 0.1,
        include_residual: bool = True,
        max_group_fraction: float = 0.9,
        restart_lr_schedule: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(restart_lr_schedule=restart_lr_schedule, **kwargs)
        self.channel_fraction = check_fraction(
            channel_fraction, "channel_fraction", zero=False, meaning="the fraction of channels to prune"
        )
        self.draw_epoch = check_int(
            draw_epoch, "draw_epoch", 1, optional=True, meaning="the ticket comes from trained scales; null detects it"
        )
        self.include_residual = check_bool(include_residual, "include_residual")
        self.max_group_fraction = check_fraction(max_group_fraction, "max_group_fraction", zero=False, one=True)
        self.detector = EarlyBirdDetector(window=window, threshold=threshold)

    @override
    def describe_method(self) -> str:
        """A short description of the method for reports."""
        if self.draw_epoch is None:
            when = f"detected (W={self.detector.window}, eps={self.detector.threshold:g})"
        else:
            when = f"drawn at epoch {self.draw_epoch}"
        return f"early-bird ticket {self.channel_fraction:.0%} channels, {when}"

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit":
            return
        self._mask(self.classifier(pl_module))
        max_epochs = trainer.max_epochs
        if self.draw_epoch is not None and (max_epochs is None or not 0 <= self.draw_epoch < max_epochs):
            raise ValueError(
                f"draw_epoch={self.draw_epoch} must be < trainer.max_epochs={max_epochs}: the ticket is drawn at the "
                "start of that epoch and retrained for the remaining ones"
            )

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        module = self.classifier(pl_module)
        epoch = trainer.current_epoch
        if self.pruned_epoch is not None or epoch == 0:
            return
        mask = self.decide_on_rank_zero(trainer, lambda: self._mask(module))
        distance = self.detector.update(mask)
        if distance is not None:
            self.distances.append([epoch, distance])
            self.log_metrics(trainer, {"earlybird/mask_distance": distance})
        draw = self.detector.found if self.draw_epoch is None else epoch >= self.draw_epoch
        if not draw:
            return
        kept = sum(int(keep.sum()) for keep in mask.values())
        total = sum(keep.numel() for keep in mask.values())
        self.prune(
            trainer,
            module,
            keep_indices(mask),
            kinds=("channels",),
            earlybird_epoch=epoch,
            earlybird_mode="detected" if self.draw_epoch is None else "fixed",
            channel_fraction=self.channel_fraction,
            channels_removed_fraction=1.0 - kept / total,
            mask_distance=distance,
            mask_distance_curve=[list(point) for point in self.distances],
        )

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if self.pruned_epoch is not None:
            return
        latest = self.detector.max_distance()
        rank_zero_warn(
            f"EarlyBird: no ticket emerged in {trainer.current_epoch} epochs (latest mask distance {latest}, "
            f"threshold {self.detector.threshold}); the network was not pruned. Train longer, raise threshold, "
            "or draw at a fixed epoch with draw_epoch"
        )
        self.record(
            trainer,
            self.classifier(pl_module),
            "baseline",
            earlybird_epoch=None,
            mask_distance_curve=list(self.distances),
        )

    def _mask(self, pl_module: ImageClassifier) -> dict[str, Tensor]:
        return bn_scale_channel_mask(
            pl_module.network,
            self.channel_fraction,
            include_residual=self.include_residual,
            max_group_fraction=self.max_group_fraction,
        )

    @override
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "detector": self.detector.state_dict()}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if "detector" in state_dict:
            self.detector.load_state_dict(state_dict["detector"])
