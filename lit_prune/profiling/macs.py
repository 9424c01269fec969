"""Multiply-accumulate operations (MACs) per image: dense, and skipping pruned weights.

Dense MACs come from torchprofile's ``profile_macs``, which traces the model with
``torch.jit`` and counts every recognised operator (convolutions, matrix products, attention,
normalisation, pooling; operators it has no handler for count as 0 and make it warn).

Non-zero MACs are what a sparse kernel that skips every zero weight would execute. Each call of
an ``nn.Conv1d/2d/3d`` or ``nn.Linear`` module is recorded with a forward hook:

* convolution: ``dense = output elements * (in_channels / groups) * prod(kernel_size)``, which is
  ``output positions * weight.numel()`` (an output position is one sample and one spatial
  location), and ``non-zero = output positions * count_nonzero(weight)``: every non-zero weight
  is multiplied once at each output position of its output channel;
* linear: ``dense = output elements * in_features`` = ``rows * weight.numel()`` and
  ``non-zero = rows * count_nonzero(weight)``, with ``rows`` the product of all input
  dimensions but the last.

These are exactly the numbers torchprofile counts for the same operators, so
``nonzero_macs = macs - sum over hooked calls of (dense - non-zero)``: the MACs of all other
operators (attention products, normalisation, pooling) are kept unchanged. Biases are not
counted (torchprofile does not count them either). Transposed convolutions, and layers that are
called functionally rather than through their module's ``forward`` (e.g. the output projection
inside ``nn.MultiheadAttention``), are not hooked and therefore counted dense.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from torchprofile import profile_macs

from lit_prune.profiling._inputs import check_model, eval_mode, prepare_input
from lit_prune.pruning.parameters import parameter_count

__all__ = ["MacsResult", "count_macs"]

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class MacsResult:
    """MACs per image and parameter counts.

    Attributes:
        macs: Dense multiply-accumulates of one forward pass of a single image (torchprofile).
        nonzero_macs: The same with the MACs of zero conv/linear weights left out.
        params_total: Number of parameters (shared parameters counted once).
        params_nonzero: Number of non-zero parameters.
    """

    macs: int
    nonzero_macs: int
    params_total: int
    params_nonzero: int

    def to_dict(self) -> dict[str, Any]:
        """Returns the fields as a JSON-serialisable dictionary."""
        return asdict(self)


def count_macs(model: nn.Module, example_input: Tensor | Sequence[Any]) -> MacsResult:
    """Counts dense and non-zero MACs of one image, and dense and non-zero parameters.

    Only the first sample of ``example_input`` is used, so the counts are per image. The model
    is traced in evaluation mode without gradients (batch-norm statistics are not updated); its
    previous train/eval modes are restored afterwards. The module docstring explains the method.

    Args:
        model: The network (CNN or ViT); it is run on the device of its parameters.
        example_input: An input tensor with a batch dimension, or an ``(inputs, targets)`` sequence.

    Returns:
        Dense MACs, non-zero MACs, total and non-zero parameter counts.

    Raises:
        TypeError: If ``model`` is not a module or the input is not a tensor.
    """
    check_model(model)
    single = prepare_input(model, example_input)[:1]
    with eval_mode(model), torch.no_grad():
        macs = int(profile_macs(model, single))
        skipped = _zero_weight_macs(model, single)
    return MacsResult(
        macs=macs,
        nonzero_macs=macs - skipped,
        params_total=parameter_count(model),
        params_nonzero=parameter_count(model, nonzero=True),
    )


def _zero_weight_macs(model: nn.Module, single: Tensor) -> int:
    """Runs one forward pass and sums, over every conv/linear call, dense minus non-zero MACs."""
    zero_macs = 0
    zeros = {
        module: module.weight.numel() - int(torch.count_nonzero(module.weight))
        for module in model.modules()
        if isinstance(module, (*_CONV_TYPES, nn.Linear))
    }

    def record(module: nn.Module, _inputs: Any, output: Tensor) -> None:
        nonlocal zero_macs
        zero_macs += _output_positions(module, output) * zeros[module]

    handles: list[RemovableHandle] = [module.register_forward_hook(record) for module in zeros]
    try:
        model(single)
    finally:
        for handle in handles:
            handle.remove()
    return zero_macs


def _output_positions(module: nn.Module, output: Tensor) -> int:
    """How often each weight of ``module`` is used: output elements per output channel/feature."""
    if isinstance(module, nn.Linear):
        return output.numel() // module.out_features
    batched = output.dim() == module.weight.dim()
    channels = output.shape[1] if batched else output.shape[0]
    return output.numel() // channels
