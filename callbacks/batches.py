"""Batches as the model sees them: drawn from a loader of the run, on a device, through ``transform_batch``.

The one way lit-prune's callbacks draw data outside Lightning's loops: calibration batches of the
saliency, Taylor and regression scores, the validation batches that measure a pruning stage,
and the test and training batches the profiling report evaluates.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from lightning.pytorch import Trainer
from torch import Tensor

__all__ = ["SPLITS", "loader_of", "model_batches", "required_loader"]

SPLITS = ("train", "val", "test")
"""The splits a loader can be asked for."""


def loader_of(trainer: Trainer, split: str) -> Any | None:
    """The data module's loader of ``split``, else the trainer's own (the first of several), else None.

    Args:
        trainer: The running trainer.
        split: ``"train"``, ``"val"`` or ``"test"``.

    Returns:
        A fresh loader from the data module's ``<split>_dataloader()``, or the loader the trainer
        was given, or None when the run has none.

    Raises:
        ValueError: If ``split`` is not one of :data:`SPLITS`.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    datamodule = trainer.datamodule
    if datamodule is not None:
        return getattr(datamodule, f"{split}_dataloader")()
    loaders = getattr(trainer, "train_dataloader" if split == "train" else f"{split}_dataloaders", None)
    if isinstance(loaders, (list, tuple)):
        return loaders[0] if loaders else None
    return loaders


def required_loader(trainer: Trainer, split: str, who: str) -> Any:
    """:func:`loader_of`, with an error that says what to give when the run has no such loader.

    Args:
        trainer: The running trainer.
        split: ``"train"``, ``"val"`` or ``"test"``.
        who: What needs the data, for the message (``"SaliencyPruning"``, ``"pruning stages"``).

    Raises:
        RuntimeError: If the run has no loader of ``split``.
    """
    loader = loader_of(trainer, split)
    if loader is None:
        argument = "train_dataloaders" if split == "train" else f"{split}_dataloaders"
        data = {"train": "training", "val": "validation", "test": "test"}[split]
        raise RuntimeError(f"{who} needs {data} data: give the Trainer a datamodule or {argument}")
    return loader


def model_batches(
    trainer: Trainer,
    loader: Iterable[Any],
    device: torch.device | str,
    *,
    limit: int | None = None,
    epoch: int | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yields ``(inputs, targets)`` of ``loader`` on ``device``, as the model sees them at evaluation.

    Each batch goes through the data module's ``transform_batch(batch, train=False)`` when it has
    one (normalised, resized, never cropped or flipped, so what is drawn does not depend on
    augmentation draws), and is passed on unchanged otherwise.

    Args:
        trainer: The running trainer (its data module supplies the transform).
        loader: The loader to draw from (see :func:`loader_of`).
        device: Where the batches go.
        limit: Yield at most this many batches; all when None.
        epoch: Set the loader's sampler to this epoch first (a fresh draw per epoch, identical on
            every rank); None keeps the order the loader has.
    """
    sampler = getattr(loader, "sampler", None)
    if epoch is not None and callable(getattr(sampler, "set_epoch", None)):
        sampler.set_epoch(epoch)
    transform = getattr(trainer.datamodule, "transform_batch", None)
    for index, (images, labels) in enumerate(loader):
        if limit is not None and index >= limit:
            return
        batch = (images.to(device), labels.to(device))
        yield transform(batch, train=False) if transform is not None else batch
