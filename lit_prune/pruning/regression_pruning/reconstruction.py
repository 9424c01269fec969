"""Least-squares reconstruction of a thinned convolution, and the error it leaves (He et al., 2017, Eq. 3, W-step).

The kept channels' weights (and the bias) are refitted so that the layer's output on the
calibration pairs matches the original network's: ``min ‖Y − X′W′ᵀ − b′‖`` with
``torch.linalg.lstsq`` (float64, rank-revealing ``gelsy`` driver on the CPU). He, Zhang & Sun,
2017, "Channel Pruning for Accelerating Very Deep Neural Networks" (ICCV).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from lit_prune.pruning.regression_pruning.calibration import (
    CalibrationData,
    check_layer_data,
    kept_columns,
    kernel_size,
)

__all__ = ["least_squares_reconstruction", "reconstruction_error"]


def least_squares_reconstruction(
    data: CalibrationData, weight: Tensor, bias: Tensor | None, keep: Sequence[int]
) -> tuple[Tensor, Tensor | None]:
    """Refits the kept input channels' weights (and the bias) to the targets by least squares.

    Minimises ``‖Y − X′W′ᵀ − b′‖_F`` over ``W′`` (and ``b′`` when the layer has a bias) with
    ``torch.linalg.lstsq`` in float64 on the CPU (driver ``gelsy``, which handles rank-deficient
    inputs such as channels that are always zero after a ReLU, and returns the minimum-norm
    solution when there are fewer samples than unknowns). He et al., 2017, Eq. 3, ``W``-step.

    Args:
        data: Calibration pairs of the layer.
        weight: The layer's weight ``(n, c, kh, kw)`` (its shape is used).
        bias: The layer's bias or ``None`` (then no bias is fitted).
        keep: Indices of the kept input channels.

    Returns:
        The new weight ``(n, len(keep), kh, kw)`` and bias, in the dtype and on the device of
        ``weight``.

    Raises:
        ValueError: If shapes disagree or ``keep`` is invalid.
    """
    channels = check_layer_data(data, weight, bias)
    kept = _check_channel_indices(keep, channels)
    design = kept_columns(data.inputs, kept, kernel_size(weight)).cpu().double()
    if bias is not None:
        design = torch.cat([design, torch.ones(design.shape[0], 1, dtype=design.dtype)], dim=1)
    solution = torch.linalg.lstsq(design, data.targets.cpu().double(), driver="gelsy").solution
    columns = len(kept) * kernel_size(weight)
    new_weight = solution[:columns].T.reshape(weight.shape[0], len(kept), *weight.shape[2:])
    new_bias = None if bias is None else solution[columns].to(dtype=bias.dtype, device=bias.device)
    return new_weight.to(dtype=weight.dtype, device=weight.device), new_bias


def reconstruction_error(
    data: CalibrationData, weight: Tensor, bias: Tensor | None, keep: Sequence[int] | None = None
) -> float:
    """Relative squared error ``‖Y − X_keep Wᵀ − b‖² / ‖Y‖²`` of a layer on calibration pairs.

    Args:
        data: Calibration pairs.
        weight: Weight over the channels used: ``(n, len(keep), kh, kw)``, or ``(n, c, kh, kw)``
            when ``keep`` is ``None``.
        bias: Bias or ``None``.
        keep: Input channels of ``data`` that ``weight`` reads; ``None`` for all.

    Returns:
        The relative error (``0`` for a perfect fit; ``inf`` if the targets are all zero and
        the fit is not).
    """
    kernel = kernel_size(weight)
    inputs = data.inputs if keep is None else kept_columns(data.inputs, list(keep), kernel)
    if inputs.shape[1] != weight[0].numel():
        raise ValueError(
            f"weight reads {weight.shape[1]} channels of kernel {tuple(weight.shape[2:])} but the inputs "
            f"provide {inputs.shape[1] // kernel} channels"
        )
    targets = data.targets
    prediction = inputs @ weight.reshape(weight.shape[0], -1).to(inputs).T
    if bias is not None:
        prediction = prediction + bias.to(prediction)
    residual = float((targets.double() - prediction.double()).square().sum())
    scale = float(targets.double().square().sum())
    if scale == 0.0:
        return 0.0 if residual == 0.0 else math.inf
    return residual / scale


def _check_channel_indices(keep: Sequence[int], channels: int) -> list[int]:
    kept = [int(index) for index in keep]
    if not kept or len(set(kept)) != len(kept) or min(kept) < 0 or max(kept) >= channels:
        raise ValueError(f"keep must hold distinct channel indices in [0, {channels}), at least one; got {list(keep)}")
    return kept
