"""Validation accuracy measured from inside a training hook (before/after a pruning step)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer

from callbacks.batches import model_batches, required_loader

__all__ = ["evaluate_on_validation"]


def _max_batches(trainer: Trainer, max_batches: int | None) -> int | None:
    if max_batches is not None:
        return max_batches
    limit = trainer.limit_val_batches
    return limit if isinstance(limit, int) else None


@torch.no_grad()
def evaluate_on_validation(
    trainer: Trainer, pl_module: LightningModule, max_batches: int | None = None
) -> dict[str, float]:
    """Returns ``val_loss``, ``val_top1`` and ``val_top5`` of the module as it is now.

    Every rank evaluates the same (unsharded) validation batches, and rank 0's numbers are
    broadcast, so a decision taken from them is identical on every DDP rank.

    Args:
        trainer: The running trainer (its datamodule supplies the data and its eval transform).
        pl_module: The module to evaluate; its train/eval mode is restored afterwards.
        max_batches: Number of validation batches (the trainer's integer ``limit_val_batches``,
            or all of them, when None).

    Returns:
        Fractions in [0, 1] for the accuracies (``val_top5`` only with five or more classes).
    """
    loader = required_loader(trainer, "val", "pruning stages")
    batches = model_batches(trainer, loader, pl_module.device, limit=_max_batches(trainer, max_batches))
    was_training = pl_module.training
    pl_module.eval()
    correct = {1: 0, 5: 0}
    loss_sum, count = 0.0, 0
    for images, labels in batches:
        logits = pl_module(images)
        loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = ranked == labels[:, None]
        correct[1] += int(hits[:, :1].any(dim=1).sum())
        correct[5] += int(hits.any(dim=1).sum())
        count += labels.numel()
    pl_module.train(was_training)
    if count == 0:
        raise RuntimeError("the validation data yielded no batch to evaluate the pruned model on")
    result = {"val_loss": loss_sum / count, "val_top1": correct[1] / count}
    if logits.shape[1] >= 5:
        result["val_top5"] = correct[5] / count
    return trainer.strategy.broadcast(result, src=0)
