"""The module modes a data-dependent score is computed in, so that the score is deterministic.

A score taken from calibration batches (SNIP, GraSP, Taylor) must not depend on the global
random state: for the same network, batches and seed it gives the same numbers. Training mode
breaks that, because dropout, drop-path (stochastic depth) and the attention dropout of fused
kernels draw random numbers whenever their module is in training mode. Batch norm is the only
layer whose training mode a scoring method may want: it then normalises with the statistics
of each calibration batch instead of its running statistics, which is deterministic.

:func:`scoring_mode` therefore puts *every* module in eval mode and, with ``bn_mode="train"``,
only the batch-norm layers back in training mode. Which ``bn_mode`` a method uses is a
documented option of its score function, defaulting to what the method's authors' code does
(eval for SNIP, train for GraSP and Taylor).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from lit_prune.errors import UserError

__all__ = ["BN_MODES", "check_bn_mode", "scoring_mode"]

BN_MODES: tuple[str, ...] = ("eval", "train")
"""``eval``: batch norm uses its running statistics; ``train``: the statistics of each batch."""


def check_bn_mode(bn_mode: str, option: str = "bn_mode") -> str:
    """Checks that ``bn_mode`` is one of :data:`BN_MODES`.

    Args:
        bn_mode: The value to check.
        option: How the option is called in the error message.

    Returns:
        ``bn_mode``.

    Raises:
        UserError: If ``bn_mode`` is not one of :data:`BN_MODES`.
    """
    if not isinstance(bn_mode, str) or bn_mode not in BN_MODES:
        raise UserError(
            f"{option} must be one of {list(BN_MODES)} ('eval': batch norm uses its running statistics; "
            f"'train': the statistics of each calibration batch; dropout is off either way), got {bn_mode!r}"
        )
    return bn_mode


@contextmanager
def scoring_mode(model: nn.Module, bn_mode: str) -> Iterator[None]:
    """Puts ``model`` in its scoring mode and restores every flag and buffer afterwards.

    Every module is set to eval mode, which switches off dropout, drop-path and any other
    train-only randomness; with ``bn_mode="train"`` the batch-norm layers (``BatchNorm1d/2d/3d``,
    ``SyncBatchNorm`` and their subclasses) are then set back to training mode, so they
    normalise with batch statistics. Batch norm in training mode updates its running
    statistics; those buffers, like every other buffer, are restored on exit, as is each
    module's own ``training`` flag (mixed states included).

    Args:
        model: The network.
        bn_mode: One of :data:`BN_MODES`.

    Yields:
        Nothing; the body runs with the model in its scoring mode.

    Raises:
        UserError: If ``bn_mode`` is not one of :data:`BN_MODES`.
    """
    bn_mode = check_bn_mode(bn_mode)
    flags = [(module, module.training) for module in model.modules()]
    buffers = [(buffer, buffer.detach().clone()) for buffer in model.buffers()]
    model.eval()
    if bn_mode == "train":
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.training = True
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
        for module, flag in flags:
            module.training = flag
