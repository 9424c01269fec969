"""Small Lightning runs on the digits data shared by the pruning-callback tests."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch

from datamodules import DigitsDataModule
from lit_prune.module import ImageClassifier


def make_module(lr: float = 0.05, optimizer: Any = None, **kwargs: Any) -> ImageClassifier:
    """ResNet-20 for 10 digit classes with SGD (momentum, Nesterov, weight decay) by default."""
    optimizer = optimizer or partial(torch.optim.SGD, lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    return ImageClassifier("resnet20", num_classes=10, optimizer=optimizer, **kwargs)


def make_trainer(root: Path | None, max_epochs: int, callbacks: list[Any], **kwargs: Any) -> L.Trainer:
    """A CPU trainer with three training and two validation batches per epoch."""
    options: dict[str, Any] = {
        "max_epochs": max_epochs,
        "limit_train_batches": 3,
        "limit_val_batches": 2,
        "accelerator": "cpu",
        "devices": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "deterministic": True,
    }
    options.update(kwargs)
    if root is None:
        options.setdefault("logger", False)
        options.setdefault("enable_checkpointing", False)
    else:
        options.setdefault("default_root_dir", str(root))
    return L.Trainer(callbacks=callbacks, **options)


def randomize_batch_norms(model: torch.nn.Module) -> None:
    """Gives every batch norm non-trivial affine parameters and running statistics."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)


def digits(batch_size: int = 32) -> DigitsDataModule:
    """The digits data module used by the callback tests."""
    return DigitsDataModule(batch_size=batch_size, seed=0)
