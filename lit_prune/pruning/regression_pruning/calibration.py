"""Calibration pairs of one convolution: its input patches in the pruned network, its output in the original.

Images are passed through the network pruned so far and through the original, unpruned network.
The input of a convolution ``L`` in the pruned network is unfolded into patches
(``torch.nn.functional.unfold``) at a few randomly sampled output positions per image, giving
``X`` (``N x c·kh·kw``); the output of ``L`` in the original network at the same positions gives
the target ``Y`` (``N x n``). Errors of earlier layers are therefore compensated, as in He,
Zhang & Sun, 2017, "Channel Pruning for Accelerating Very Deep Neural Networks" (ICCV).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_prune.pruning.regression_pruning.layers import regression_conv
from lit_prune.validation import check_int

__all__ = ["CalibrationData", "check_layer_data", "collect_calibration_data", "kept_columns", "kernel_size"]


@dataclass(frozen=True)
class CalibrationData:
    """Input patches and target outputs of one convolution at sampled output positions.

    Attributes:
        inputs: ``X``, shape ``(N, c·kh·kw)``: the unfolded input of the layer in the network
            pruned so far, channel-major like ``weight.reshape(n, -1)``.
        targets: ``Y``, shape ``(N, n)``: the layer's output (with its bias) in the original
            network at the same positions.
    """

    inputs: Tensor
    targets: Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.inputs, Tensor) or not isinstance(self.targets, Tensor):
            raise TypeError("inputs and targets must be tensors")
        if self.inputs.dim() != 2 or self.targets.dim() != 2 or self.inputs.shape[0] != self.targets.shape[0]:
            raise ValueError(
                f"inputs (N, c·kh·kw) and targets (N, n) must be matrices with the same number of rows, got "
                f"{tuple(self.inputs.shape)} and {tuple(self.targets.shape)}"
            )
        if self.inputs.shape[0] == 0:
            raise ValueError("calibration data must hold at least one sample")
        object.__setattr__(self, "inputs", self.inputs.detach())
        object.__setattr__(self, "targets", self.targets.detach())

    @property
    def samples(self) -> int:
        """The number of sampled positions ``N``."""
        return int(self.inputs.shape[0])


def collect_calibration_data(
    network: nn.Module,
    reference: nn.Module,
    layer: str,
    batches: Iterable[Tensor | Sequence[Tensor]],
    positions_per_image: int = 10,
    seed: int = 0,
) -> CalibrationData:
    """Gathers ``X`` (inputs of ``layer`` in ``network``) and ``Y`` (its outputs in ``reference``).

    Both networks run in evaluation mode without gradients (their modes are restored); a
    forward hook captures the tensor and stops the pass at ``layer``. For every image,
    ``positions_per_image`` output positions are drawn without replacement (all of them when
    the feature map has fewer), the same for ``X`` and ``Y``, from a generator seeded by ``seed``.

    Args:
        network: The network pruned so far.
        reference: The original network (same architecture and output channels at ``layer``).
        layer: Name of a ``Conv2d`` with zero padding present in both.
        batches: Images ``(B, C, H, W)`` or ``(images, labels)`` pairs, ready for the model.
        positions_per_image: Output positions sampled per image, at least 1.
        seed: Seed of the position sampling.

    Returns:
        ``X`` ``(N, c·kh·kw)`` and ``Y`` ``(N, n)`` in float32 on the device of ``network``.

    Raises:
        TypeError: If ``layer`` is not a ``Conv2d`` or a batch holds no tensor.
        ValueError: If the layer shapes disagree, the padding is not zeros, ``positions_per_image``
            is below 1, or ``batches`` is empty.
    """
    positions_per_image = check_int(positions_per_image, "positions_per_image", 1)
    conv = regression_conv(network, layer)
    reference_conv = regression_conv(reference, layer)
    if reference_conv.out_channels != conv.out_channels or reference_conv.kernel_size != conv.kernel_size:
        raise ValueError(
            f"{layer!r} has {conv.out_channels} output channels and kernel {conv.kernel_size} in the network but "
            f"{reference_conv.out_channels} and {reference_conv.kernel_size} in the reference; the reference must be "
            "the original network, pruned no further than this layer's outputs"
        )
    device = conv.weight.device
    generator = torch.Generator().manual_seed(seed)
    inputs, targets = [], []
    with _evaluating(network), _evaluating(reference), torch.no_grad():
        for index, batch in enumerate(batches):
            images = _images(batch, index).to(device)
            patches = F.unfold(
                _captured(network, layer, images, "input"),
                kernel_size=conv.kernel_size,
                dilation=conv.dilation,
                padding=conv.padding,
                stride=conv.stride,
            )
            outputs = _captured(reference, layer, images.to(reference_conv.weight.device), "output").to(device)
            outputs = outputs.flatten(2)
            if outputs.shape[2] != patches.shape[2]:
                raise ValueError(
                    f"{layer!r} gives {outputs.shape[2]} output positions in the reference but "
                    f"{patches.shape[2]} in the network; both must see the same image size"
                )
            count = min(positions_per_image, patches.shape[2])
            chosen = torch.rand(patches.shape[0], patches.shape[2], generator=generator).argsort(dim=1)[:, :count]
            chosen = chosen.to(device)
            inputs.append(patches.gather(2, chosen[:, None, :].expand(-1, patches.shape[1], -1)).transpose(1, 2))
            targets.append(outputs.gather(2, chosen[:, None, :].expand(-1, outputs.shape[1], -1)).transpose(1, 2))
    if not inputs:
        raise ValueError("batches is empty: regression pruning needs at least one calibration batch")
    return CalibrationData(
        inputs=torch.cat(inputs).reshape(-1, inputs[0].shape[2]).float(),
        targets=torch.cat(targets).reshape(-1, targets[0].shape[2]).float(),
    )


def check_layer_data(data: CalibrationData, weight: Tensor, bias: Tensor | None) -> int:
    """Checks that calibration pairs fit a convolution's weight and bias.

    Returns:
        The layer's input channels ``c``.

    Raises:
        TypeError: If ``data`` is not :class:`CalibrationData`.
        ValueError: If the shapes disagree.
    """
    if not isinstance(data, CalibrationData):
        raise TypeError(f"data must be CalibrationData, got {type(data).__name__}")
    if weight.dim() != 4:
        raise ValueError(f"weight must be a Conv2d weight (n, c, kh, kw), got shape {tuple(weight.shape)}")
    if data.inputs.shape[1] != weight[0].numel() or data.targets.shape[1] != weight.shape[0]:
        raise ValueError(
            f"calibration data with inputs {tuple(data.inputs.shape)} and targets {tuple(data.targets.shape)} does "
            f"not fit a weight of shape {tuple(weight.shape)} (inputs need {weight[0].numel()} columns, targets "
            f"{weight.shape[0]})"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    return int(weight.shape[1])


def kept_columns(inputs: Tensor, keep: list[int], kernel: int) -> Tensor:
    """The columns of ``X`` that belong to the input channels ``keep`` (``kernel`` columns each)."""
    index = (torch.tensor(keep, dtype=torch.long)[:, None] * kernel + torch.arange(kernel)).reshape(-1)
    return inputs.index_select(1, index.to(inputs.device))


def kernel_size(weight: Tensor) -> int:
    """Entries of one input channel's kernel, ``kh·kw``."""
    return math.prod(weight.shape[2:])


def _images(batch: Tensor | Sequence[Tensor], index: int) -> Tensor:
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, Sequence) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    raise TypeError(
        f"calibration batch {index} must be an image tensor or an (images, labels) pair, got {type(batch).__name__}"
    )


class _StopForward(Exception):
    """Raised by a capture hook to end a forward pass once the wanted tensor is seen."""


def _captured(model: nn.Module, layer: str, images: Tensor, which: str) -> Tensor:
    captured: list[Tensor] = []

    def hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
        captured.append(args[0] if which == "input" else output)
        raise _StopForward

    handle = model.get_submodule(layer).register_forward_hook(hook)
    try:
        model(images)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if not captured:
        raise ValueError(f"{layer!r} was not called in the forward pass of {type(model).__name__}")
    return captured[0]


class _evaluating:
    """Puts a model in evaluation mode and restores every submodule's mode afterwards."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modes: list[tuple[nn.Module, bool]] = []

    def __enter__(self) -> nn.Module:
        self.modes = [(module, module.training) for module in self.model.modules()]
        self.model.eval()
        return self.model

    def __exit__(self, *exc: object) -> None:
        for module, mode in self.modes:
            module.training = mode
