"""2:4 semi-structured sparse inference: linear layers through ``torch.sparse.to_sparse_semi_structured``.

NVIDIA's sparse tensor cores (Ampere and newer) multiply a weight that keeps at most 2 of every 4
consecutive entries along its input dimension at up to twice the dense rate (Mishra et al., 2021,
"Accelerating Sparse Deep Neural Networks", arXiv:2104.08378). PyTorch exposes them through
``torch.sparse.to_sparse_semi_structured``, which compresses a 2-d half-precision CUDA weight
(cuSPARSELt, or CUTLASS where cuSPARSELt is missing) for ``F.linear``. The groups of 4 run along
the rows of a linear layer's ``(out, in)`` weight, which is the layout the N:M masks of
:mod:`lit_prune.pruning.nm_sparsity` use (``pattern: "2:4"``), so such a mask converts as it is.

:func:`semi_structured_plan` says which linear layers of a network are eligible and why the others
are not (no 2:4 zeros, a shape the kernels do not take); it needs no GPU, so the choice can be
checked anywhere. :func:`to_semi_structured` builds the converted copy, on CUDA only;
:func:`semi_structured_unsupported` says why a device cannot run it. Convolutions are never
converted (the kernels are matrix multiplications of 2-d weights).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lit_prune.pruning.nm_sparsity import NMPattern
from lit_prune.pruning.sparse_export import check_mask

__all__ = [
    "SEMI_STRUCTURED_DTYPES",
    "SEMI_STRUCTURED_PATTERN",
    "SemiStructuredPlan",
    "masked_copy",
    "semi_structured_backend",
    "semi_structured_plan",
    "semi_structured_unsupported",
    "to_semi_structured",
]

SEMI_STRUCTURED_PATTERN = NMPattern(2, 4)
"""The only pattern the sparse tensor cores take for 16-bit weights: at most 2 of every 4 kept."""

SEMI_STRUCTURED_DTYPES = (torch.float16, torch.bfloat16)
"""Weight dtypes both of PyTorch's semi-structured backends accept."""

_MIN_CAPABILITY = (8, 0)


@dataclass(frozen=True)
class SemiStructuredPlan:
    """Which linear layers a conversion takes, and why it leaves the others out.

    Attributes:
        eligible: Module names of the linear layers that are converted.
        left_out: Module name of every other linear layer to the reason.
        backend: ``"cusparselt"`` or ``"cutlass"``: the kernels whose shape limits were applied.
        dtype: The weight dtype of the conversion.
        min_shape: The ``(rows, columns)`` both dimensions of a weight must be multiples of.
    """

    eligible: tuple[str, ...]
    left_out: dict[str, str] = field(default_factory=dict)
    backend: str = "cusparselt"
    dtype: str = "float16"
    min_shape: tuple[int, int] = (16, 16)

    def to_dict(self) -> dict[str, Any]:
        """The plan as a JSON-serialisable dictionary."""
        return {
            "eligible": list(self.eligible),
            "left_out": dict(self.left_out),
            "backend": self.backend,
            "dtype": self.dtype,
            "min_shape": list(self.min_shape),
        }


def semi_structured_backend() -> str:
    """The backend ``to_sparse_semi_structured`` picks: cuSPARSELt when this PyTorch has it, else CUTLASS."""
    forced = torch.sparse.SparseSemiStructuredTensor._FORCE_CUTLASS
    return "cutlass" if forced or not torch.backends.cusparselt.is_available() else "cusparselt"


def semi_structured_unsupported(device: torch.device | str) -> str | None:
    """Why ``device`` cannot run semi-structured kernels, or None when it can.

    Args:
        device: The device the model would run on.

    Returns:
        A sentence starting with "needs CUDA" or naming the GPU's missing capability, or None.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return (
            f"needs CUDA: torch.sparse.to_sparse_semi_structured runs only on NVIDIA GPUs of compute capability "
            f"{_MIN_CAPABILITY[0]}.{_MIN_CAPABILITY[1]} or newer (the model is on {device}); no figure is reported"
        )
    if not torch.cuda.is_available():
        return "needs CUDA: no CUDA device is available to this process; no figure is reported"
    capability = torch.cuda.get_device_capability(device)
    if capability < _MIN_CAPABILITY:
        return (
            f"needs a GPU with sparse tensor cores (compute capability {_MIN_CAPABILITY[0]}.{_MIN_CAPABILITY[1]}+); "
            f"{torch.cuda.get_device_name(device)} has {capability[0]}.{capability[1]}; no figure is reported"
        )
    return None


def semi_structured_plan(
    network: nn.Module,
    mask: Mapping[str, Tensor] | None = None,
    dtype: torch.dtype = torch.float16,
    backend: str | None = None,
) -> SemiStructuredPlan:
    """Chooses the linear layers whose weights can be stored 2:4 semi-structured.

    A linear layer is eligible when its weight, with the mask applied, keeps at most 2 of every 4
    consecutive inputs, and both of its dimensions are multiples of the backend's minimum shape
    for ``dtype`` (PyTorch's ``_DTYPE_SHAPE_CONSTRAINTS``: 16 x 16 for cuSPARSELt, 32 x 64 for
    CUTLASS at 16 bits). Runs on any device.

    Args:
        network: The network.
        mask: Parameter name to bool keep-mask, or None to go by the weights' zeros.
        dtype: ``torch.float16`` or ``torch.bfloat16``.
        backend: ``"cusparselt"`` or ``"cutlass"``; :func:`semi_structured_backend` when None.

    Returns:
        The plan.

    Raises:
        ValueError: If ``dtype`` or ``backend`` is not supported, or the mask does not fit.
    """
    if dtype not in SEMI_STRUCTURED_DTYPES:
        raise ValueError(f"dtype must be one of {SEMI_STRUCTURED_DTYPES}, got {dtype}")
    backend = backend or semi_structured_backend()
    classes = {
        "cusparselt": torch.sparse.SparseSemiStructuredTensorCUSPARSELT,
        "cutlass": torch.sparse.SparseSemiStructuredTensorCUTLASS,
    }
    if backend not in classes:
        raise ValueError(f"backend must be one of {tuple(classes)}, got {backend!r}")
    limits = classes[backend]._DTYPE_SHAPE_CONSTRAINTS[dtype]
    rows, columns = limits.sparse_min_rows, limits.sparse_min_cols
    checked = check_mask(dict(network.named_parameters()), mask or {})
    eligible: list[str] = []
    left_out: dict[str, str] = {}
    for name, module in network.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        weight = module.weight.detach()
        keep = checked.get(f"{name}.weight" if name else "weight")
        if keep is not None:
            weight = weight.masked_fill(~keep, 0)
        out_features, in_features = weight.shape
        if in_features % SEMI_STRUCTURED_PATTERN.m:
            left_out[name] = f"input size {in_features} is not a multiple of 4"
        elif not SEMI_STRUCTURED_PATTERN.holds(weight):
            left_out[name] = "weights are not 2:4 sparse (some group of 4 inputs keeps more than 2)"
        elif out_features % rows or in_features % columns:
            left_out[name] = (
                f"shape ({out_features}, {in_features}) is not a multiple of ({rows}, {columns}), "
                f"which {backend} needs for {dtype}"
            )
        else:
            eligible.append(name)
    return SemiStructuredPlan(tuple(eligible), left_out, backend, str(dtype).removeprefix("torch."), (rows, columns))


def to_semi_structured(
    network: nn.Module, mask: Mapping[str, Tensor] | None = None, dtype: torch.dtype = torch.float16
) -> tuple[nn.Module, SemiStructuredPlan]:
    """A copy of ``network`` in ``dtype`` whose eligible linear weights are 2:4 semi-structured.

    The copy is in evaluation mode, has the mask applied (pruned entries exactly zero) and every
    other layer dense in ``dtype``; the original is not changed. Compare it against the dense
    copy in the same dtype (``copy.deepcopy(network).to(dtype)``), not against float32.

    Args:
        network: The pruned network, on a CUDA device.
        mask: Parameter name to bool keep-mask, or None to go by the weights' zeros.
        dtype: ``torch.float16`` or ``torch.bfloat16``.

    Returns:
        ``(copy, plan)``.

    Raises:
        RuntimeError: If the network's device cannot run semi-structured kernels (the message
            starts with "needs CUDA" on a CPU).
        ValueError: If ``dtype`` is not supported or the mask does not fit.
    """
    device = next((param.device for param in network.parameters()), torch.device("cpu"))
    reason = semi_structured_unsupported(device)
    if reason is not None:
        raise RuntimeError(reason)
    plan = semi_structured_plan(network, mask, dtype)
    converted = masked_copy(network, mask, dtype)
    for name in plan.eligible:
        linear = converted.get_submodule(name)
        sparse = torch.sparse.to_sparse_semi_structured(linear.weight.detach().contiguous())
        linear.weight = nn.Parameter(sparse, requires_grad=False)
    return converted, plan


def masked_copy(network: nn.Module, mask: Mapping[str, Tensor] | None, dtype: torch.dtype) -> nn.Module:
    """A dense copy of ``network`` in evaluation mode and ``dtype`` with the mask applied: the reference
    a semi-structured copy is compared with.

    Args:
        network: The network (not changed).
        mask: Parameter name to bool keep-mask, or None.
        dtype: The floating-point dtype of the copy.

    Returns:
        The copy.
    """
    converted = copy.deepcopy(network).eval().to(dtype)
    parameters = dict(converted.named_parameters())
    with torch.no_grad():
        for name, keep in check_mask(parameters, mask or {}).items():
            parameters[name].masked_fill_(~keep, 0)
    return converted
