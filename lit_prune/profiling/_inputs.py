"""Helpers shared by the measurement functions: input handling and evaluation mode."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["check_model", "eval_mode", "model_device", "prepare_input", "synchronize"]


def check_model(model: Any) -> nn.Module:
    """Checks that ``model`` is a ``torch.nn.Module``.

    Args:
        model: The object to check.

    Returns:
        ``model`` unchanged.

    Raises:
        TypeError: If ``model`` is not an ``nn.Module``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a stateless model.

    Args:
        model: The network.

    Returns:
        The device the model computes on.
    """
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def prepare_input(model: nn.Module, example_batch: Tensor | Sequence[Any]) -> Tensor:
    """Extracts the input tensor of a batch and moves it to the model's device.

    Args:
        model: The network the input is for.
        example_batch: An input tensor, or a ``(inputs, targets, ...)`` sequence as a data loader
            yields it (only the first element is used).

    Returns:
        The input tensor on the model's device.

    Raises:
        TypeError: If the batch is neither a tensor nor a non-empty sequence starting with one.
        ValueError: If the input tensor has no batch dimension or an empty one.
    """
    inputs = example_batch
    if isinstance(example_batch, Sequence) and not isinstance(example_batch, (str, bytes)):
        if len(example_batch) == 0:
            raise TypeError("example_batch must be a tensor or an (inputs, targets) sequence; got an empty sequence")
        inputs = example_batch[0]
    if not isinstance(inputs, Tensor):
        raise TypeError(
            "example_batch must be an input tensor or a sequence whose first element is the input tensor, "
            f"got {type(inputs).__name__}"
        )
    if inputs.dim() == 0 or inputs.shape[0] == 0:
        raise ValueError(f"the input tensor needs a non-empty batch dimension, got shape {tuple(inputs.shape)}")
    return inputs.to(model_device(model))


def synchronize(device: torch.device) -> None:
    """Waits for all queued work on ``device`` (a no-op on CPU).

    Args:
        device: The device to wait for.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Puts ``model`` in evaluation mode and restores every submodule's own mode afterwards.

    Args:
        model: The network.

    Yields:
        The model, in evaluation mode.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training
