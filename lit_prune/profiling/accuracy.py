"""Top-k classification accuracy of a model over a stream of batches."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from lit_prune.profiling._inputs import check_model, eval_mode, model_device

__all__ = ["evaluate_topk"]


def evaluate_topk(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    topk: Sequence[int] = (1, 5),
    device: torch.device | str | None = None,
) -> dict[str, float | None]:
    """Computes top-k accuracies: the fraction of samples whose target is among the k best logits.

    The model runs in evaluation mode under ``torch.inference_mode`` (its previous modes are
    restored afterwards). Ties between logits are broken by ``torch.topk``.

    Args:
        model: A classifier returning logits of shape ``(batch, num_classes)``.
        batches: ``(inputs, targets)`` pairs, e.g. a ``DataLoader``; targets are class indices.
        topk: The values of k, each at least 1.
        device: Where to run; ``None`` uses the device of the model's parameters. The model is
            not moved: give the device it is on, or ``None``.

    Returns:
        ``{"top1": 0.93, "top5": 0.998}``: fractions in [0, 1]; ``None`` for a k larger than the
        number of classes (e.g. top-5 with 3 classes).

    Raises:
        TypeError: If ``model`` is not a module or a batch is not an ``(inputs, targets)`` pair.
        ValueError: If ``topk`` is empty or holds a k below 1, if ``batches`` yields no sample, or
            if the logits or targets have the wrong shape.
    """
    check_model(model)
    ks = tuple(topk)
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"topk must be a non-empty sequence of integers >= 1, got {topk!r}")
    target_device = torch.device(device) if device is not None else model_device(model)
    correct = dict.fromkeys(ks, 0)
    total = 0
    num_classes = None
    with eval_mode(model), torch.inference_mode():
        for batch in batches:
            if not isinstance(batch, Sequence) or len(batch) < 2 or not all(isinstance(t, Tensor) for t in batch[:2]):
                raise TypeError(f"each batch must be an (inputs, targets) pair of tensors, got {type(batch).__name__}")
            inputs, targets = batch[0].to(target_device), batch[1].to(target_device)
            logits = model(inputs)
            if logits.dim() != 2 or targets.shape != (logits.shape[0],):
                raise ValueError(
                    "expected logits of shape (batch, num_classes) and targets of shape (batch,), "
                    f"got {tuple(logits.shape)} and {tuple(targets.shape)}"
                )
            num_classes = logits.shape[1]
            usable = [k for k in ks if k <= num_classes]
            if usable:
                ranked = logits.topk(max(usable), dim=1).indices
                hits = ranked == targets.unsqueeze(1)
                for k in usable:
                    correct[k] += int(hits[:, :k].any(dim=1).sum())
            total += targets.shape[0]
    if total == 0:
        raise ValueError("batches yielded no samples; give at least one non-empty (inputs, targets) batch")
    return {f"top{k}": (correct[k] / total if k <= num_classes else None) for k in ks}
