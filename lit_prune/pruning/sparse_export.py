"""Sparse export of pruned weights: COO/CSR conversion, verification, sparse inference.

Storing only the kept weights of an unstructured-pruned network (Han et al., 2016, "Deep
Compression: Compressing Deep Neural Networks with Pruning, Trained Quantization and Huffman
Coding") shrinks what has to be shipped; this module converts masked weights to PyTorch's
sparse COO and CSR layouts, checks an export against the masks it came from, and builds a copy
of a network that computes with the sparse weights.

A mask is any mapping of parameter name (as ``model.named_parameters()`` spells it) to a
boolean tensor of the parameter's shape, ``True`` = kept (e.g. a ``PruningMask``). The sparse
tensors hold exactly the *kept* positions of the mask, with the weight's value there (even a
kept weight that happens to be 0.0), so their indices can be compared with the mask one to one.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DensifyingConv",
    "SparseInferenceModel",
    "SparseLinear",
    "check_mask",
    "export_coo",
    "masked_coo",
    "masked_csr",
    "to_sparse_inference",
    "verify_coo_against_mask",
]

_CONV_FUNCTIONS = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}
_LINEAR_LAYOUTS = ("coo", "csr")


def check_mask(tensors: Mapping[str, Tensor], mask: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Checks that every mask entry names one of ``tensors`` and is a bool tensor of its shape.

    Args:
        tensors: Name to tensor, e.g. ``dict(model.named_parameters())`` or a state dict.
        mask: Name to boolean keep-mask (``True`` = kept).

    Returns:
        The mask entries, each moved to the device of its tensor.

    Raises:
        TypeError: If ``mask`` is not a mapping or an entry is not a bool tensor.
        ValueError: If a name is unknown or a shape differs.
    """
    if not isinstance(mask, Mapping):
        raise TypeError(f"mask must be a mapping of parameter name to bool tensor, got {type(mask).__name__}")
    checked: dict[str, Tensor] = {}
    for name, keep in mask.items():
        if name not in tensors:
            known = ", ".join(list(tensors)[:8])
            raise ValueError(f"mask names {name!r}, which the model does not have; names look like: {known}, ...")
        if not isinstance(keep, Tensor) or keep.dtype != torch.bool:
            kind = keep.dtype if isinstance(keep, Tensor) else type(keep).__name__
            raise TypeError(f"mask[{name!r}] must be a torch.bool tensor (True = kept), got {kind}")
        if keep.shape != tensors[name].shape:
            raise ValueError(
                f"mask[{name!r}] has shape {tuple(keep.shape)} but the tensor has shape {tuple(tensors[name].shape)}"
            )
        checked[name] = keep.to(tensors[name].device)
    return checked


def masked_coo(weight: Tensor, keep: Tensor) -> Tensor:
    """The kept entries of ``weight`` as a coalesced sparse COO tensor of the same shape.

    Args:
        weight: Dense tensor.
        keep: Bool tensor of the same shape, ``True`` = kept.

    Returns:
        A sparse COO tensor whose indices are exactly the ``True`` positions of ``keep`` (int64,
        in row-major order) and whose values are ``weight`` at those positions.
    """
    weight = weight.detach()
    indices = keep.nonzero().t()
    return torch.sparse_coo_tensor(indices, weight[keep], weight.shape, is_coalesced=True, check_invariants=True)


def masked_csr(weight: Tensor, keep: Tensor) -> Tensor:
    """The kept entries of ``weight`` as a sparse CSR matrix.

    A tensor with more than two dimensions (a convolution kernel) is stored as its 2-D view
    ``(shape[0], numel // shape[0])``; a 1-D tensor as a single row. The original shape is the
    parameter's, which the model definition fixes, so ``to_dense().reshape(shape)`` restores it.
    Indices are int32 when they fit (as cuSPARSE and MKL accept), halving their size.

    Args:
        weight: Dense tensor with at least one dimension.
        keep: Bool tensor of the same shape, ``True`` = kept.

    Returns:
        A sparse CSR tensor of the 2-D view holding exactly the kept entries.

    Raises:
        ValueError: If ``weight`` is a scalar.
    """
    if weight.dim() == 0:
        raise ValueError("a scalar cannot be stored as a CSR matrix; it needs at least one dimension")
    weight = weight.detach()
    rows = weight.shape[0] if weight.dim() > 1 else 1
    keep_2d = keep.reshape(rows, -1)
    index_dtype = torch.int32 if max(keep.numel(), keep_2d.shape[1]) < 2**31 else torch.int64
    crow = torch.zeros(rows + 1, dtype=index_dtype, device=weight.device)
    crow[1:] = torch.cumsum(keep_2d.sum(dim=1), dim=0)
    col = keep_2d.nonzero()[:, 1].to(index_dtype)
    values = weight.reshape(rows, -1)[keep_2d]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, values, keep_2d.shape, check_invariants=True)


def export_coo(model: nn.Module, mask: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Exports the pruned parameters of ``model`` as sparse COO tensors.

    Args:
        model: The pruned network.
        mask: Parameter name to bool keep-mask; one COO tensor is exported per entry.

    Returns:
        Parameter name to coalesced sparse COO tensor (the kept positions and their values).

    Raises:
        TypeError: If ``mask`` is not a mapping of bool tensors.
        ValueError: If the mask names an unknown parameter or has a wrong shape.
    """
    parameters = dict(model.named_parameters())
    checked = check_mask(parameters, mask)
    return {name: masked_coo(parameters[name], keep) for name, keep in checked.items()}


def verify_coo_against_mask(
    coo: Mapping[str, Tensor],
    mask: Mapping[str, Tensor],
    model: nn.Module | None = None,
) -> list[str]:
    """Checks an exported set of COO tensors against the masks (and weights) it should encode.

    For every layer the indices of the COO tensor must be exactly the kept positions of the mask;
    with ``model`` given, its values must also equal the model's weights at those positions
    (bit for bit, as :func:`export_coo` copies them).

    Args:
        coo: Parameter name to sparse COO tensor, e.g. the result of :func:`export_coo`.
        mask: Parameter name to bool keep-mask.
        model: The network the export was taken from, to compare values; ``None`` skips that check.

    Returns:
        One description per mismatch, naming the layer and how many indices or values differ;
        an empty list when the export matches.

    Raises:
        TypeError: If ``coo`` or ``mask`` is not a mapping.
    """
    if not isinstance(coo, Mapping) or not isinstance(mask, Mapping):
        raise TypeError(
            "coo and mask must both be mappings of parameter name to tensor, "
            f"got {type(coo).__name__} and {type(mask).__name__}"
        )
    parameters = dict(model.named_parameters()) if model is not None else {}
    problems = [f"{name}: kept in the mask but missing from the export" for name in mask if name not in coo]
    problems += [f"{name}: in the export but not in the mask" for name in coo if name not in mask]
    for name in (name for name in mask if name in coo):
        problems += _layer_mismatches(name, coo[name], mask[name], parameters.get(name))
    return problems


def _layer_mismatches(name: str, sparse: Tensor, keep: Tensor, weight: Tensor | None) -> list[str]:
    if not isinstance(sparse, Tensor) or sparse.layout != torch.sparse_coo:
        kind = sparse.layout if isinstance(sparse, Tensor) else type(sparse).__name__
        return [f"{name}: expected a sparse COO tensor, got {kind}"]
    if sparse.shape != keep.shape:
        return [f"{name}: the export has shape {tuple(sparse.shape)}, the mask {tuple(keep.shape)}"]
    # The raw indices and values (documented for uncoalesced tensors) are read without
    # coalescing, which would silently merge duplicates and misplace out-of-range indices.
    indices = sparse._indices().to(keep.device)
    values = sparse._values()
    bounds = torch.tensor(keep.shape, device=keep.device).unsqueeze(1)
    in_bounds = ((indices >= 0) & (indices < bounds)).all(dim=0)
    out_of_bounds = int((~in_bounds).sum())
    indices = indices[:, in_bounds]
    problems = []
    duplicates = indices.shape[1] - int(_flat_positions(indices, keep.shape).unique().numel())
    if duplicates:
        problems.append(f"{name}: {duplicates} duplicate indices")
    exported = torch.zeros_like(keep)
    exported[tuple(indices)] = True
    extra = int((exported & ~keep).sum()) + out_of_bounds
    missing = int((keep & ~exported).sum())
    if extra or missing:
        problems.append(
            f"{name}: {extra + missing} indices differ from the mask ({extra} exported but pruned or "
            f"outside the shape, {missing} kept in the mask but not exported)"
        )
    if weight is not None:
        exported_values = values[in_bounds.to(values.device)]
        expected = weight.detach()[tuple(indices.to(weight.device))].to(exported_values.device)
        differing = int((exported_values != expected).sum())
        if differing:
            problems.append(f"{name}: {differing} values differ from the model's weights at their indices")
    return problems


def _flat_positions(indices: Tensor, shape: torch.Size) -> Tensor:
    """Row-major flat position of each column of a ``(ndim, nnz)`` index tensor."""
    flat = torch.zeros(indices.shape[1], dtype=torch.int64, device=indices.device)
    for dim, size in enumerate(shape):
        flat = flat * size + indices[dim]
    return flat


class SparseLinear(nn.Module):
    """A linear layer that multiplies with a sparse weight through ``torch.sparse.mm``.

    ``y = W x + b`` is computed as ``sparse.mm(W, x^T)^T`` over all leading input dimensions.
    What it buys: the weight is held with its kept entries only, and the product skips the
    pruned ones, so memory for the weight scales with the number of kept weights. It is usually
    *not* faster than the dense layer: on CPU (MKL) and GPU (cuSPARSE) sparse-dense products beat
    dense GEMM only at very high sparsity (roughly above 90-99 %, depending on the shapes and
    the hardware), because irregular memory access costs more than the skipped multiplies.

    Args:
        weight: Sparse COO or CSR tensor of shape ``(out_features, in_features)``.
        bias: Dense bias of shape ``(out_features,)``, or ``None``.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", weight)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def forward(self, inputs: Tensor) -> Tensor:
        """Applies the layer to ``(..., in_features)`` inputs."""
        flat = inputs.reshape(-1, self.in_features)
        outputs = torch.sparse.mm(self.weight, flat.t()).t()
        if self.bias is not None:
            outputs = outputs + self.bias
        return outputs.reshape(*inputs.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, layout={self.weight.layout}"


class DensifyingConv(nn.Module):
    """A convolution that stores its weight as sparse COO and densifies it at every call.

    PyTorch has no sparse convolution kernel, so the dense kernel is rebuilt (``to_dense``) and
    the ordinary dense convolution runs. What it buys: the weight *at rest* (in memory between
    calls, and in a saved state dict) holds the kept entries only. What it does not buy: any
    speed-up — every call pays for the densification on top of the full dense convolution, and
    a dense copy of the kernel exists while the call runs.

    Args:
        conv: The ``nn.Conv1d``/``Conv2d``/``Conv3d`` whose hyper-parameters and bias are used.
        weight: Sparse COO tensor of the convolution's weight shape.
    """

    def __init__(self, conv: nn.Conv1d | nn.Conv2d | nn.Conv3d, weight: Tensor) -> None:
        super().__init__()
        self._conv_function = _CONV_FUNCTIONS[type(conv)]
        self.stride = conv.stride
        self.padding = conv.padding
        self.dilation = conv.dilation
        self.groups = conv.groups
        self.padding_mode = conv.padding_mode
        self._mode_padding = _mode_padding(conv)
        self.register_buffer("weight", weight)
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone())

    def forward(self, inputs: Tensor) -> Tensor:
        """Densifies the weight and applies the convolution."""
        padding: Any = self.padding
        if self.padding_mode != "zeros":
            inputs = F.pad(inputs, self._mode_padding, mode=self.padding_mode)
            padding = 0
        return self._conv_function(
            inputs, self.weight.to_dense(), self.bias, self.stride, padding, self.dilation, self.groups
        )

    def extra_repr(self) -> str:
        return (
            f"kernel={tuple(self.weight.shape)}, stride={self.stride}, padding={self.padding}, "
            f"padding_mode={self.padding_mode}, groups={self.groups}, layout={self.weight.layout}"
        )


def _mode_padding(conv: nn.Conv1d | nn.Conv2d | nn.Conv3d) -> list[int]:
    """``F.pad`` widths (last dimension first) equivalent to the convolution's own padding."""
    kernel = conv.kernel_size
    if conv.padding == "valid":
        pairs = [(0, 0) for _ in kernel]
    elif conv.padding == "same":
        totals = [d * (k - 1) for d, k in zip(conv.dilation, kernel)]
        pairs = [(total // 2, total - total // 2) for total in totals]
    else:
        pairs = [(p, p) for p in conv.padding]
    return [width for pair in reversed(pairs) for width in pair]


class SparseInferenceModel(nn.Module):
    """A copy of a pruned network that holds its pruned layers' weights in sparse form.

    Every masked parameter of the copy is multiplied by its mask (so pruned entries are exactly
    zero); then every ``nn.Linear`` whose weight is masked becomes a :class:`SparseLinear`
    (``torch.sparse.mm`` on a CSR or COO weight) and every ``nn.Conv1d/2d/3d`` whose weight is
    masked becomes a :class:`DensifyingConv`. Everything else is an unchanged copy, and the
    original model is not modified. The copy is in evaluation mode and meant for inference; its
    outputs equal those of the original (masked) model up to float rounding.

    What it buys: the pruned weights are held and saved with their kept entries only, and linear
    layers skip pruned multiplies. What it does not buy: faster convolutions (PyTorch has no
    sparse convolution; they densify at every call and are slower than dense), nor in general a
    faster linear layer except at very high sparsity (see :class:`SparseLinear`). Use the
    latency benchmarks to see the trade-off on a given machine.

    Args:
        model: The pruned network.
        mask: Parameter name to bool keep-mask.
        linear_layout: ``"csr"`` (default) or ``"coo"``: the sparse layout of linear weights.

    Raises:
        TypeError: If ``model`` is not a module or the mask is not a mapping of bool tensors.
        ValueError: If ``linear_layout`` is not allowed or the mask does not fit the model.
    """

    def __init__(self, model: nn.Module, mask: Mapping[str, Tensor], linear_layout: str = "csr") -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if linear_layout not in _LINEAR_LAYOUTS:
            raise ValueError(f"linear_layout must be one of {_LINEAR_LAYOUTS}, got {linear_layout!r}")
        network = copy.deepcopy(model).eval()
        parameters = dict(network.named_parameters())
        checked = check_mask(parameters, mask)
        with torch.no_grad():
            for name, keep in checked.items():
                parameters[name].mul_(keep)
        replaced = []
        for module_name, module in list(network.named_modules()):
            weight_name = f"{module_name}.weight" if module_name else "weight"
            if weight_name not in checked:
                continue
            if isinstance(module, nn.Linear):
                to_sparse = masked_csr if linear_layout == "csr" else masked_coo
                replacement: nn.Module = SparseLinear(to_sparse(module.weight, checked[weight_name]), module.bias)
            elif type(module) in _CONV_FUNCTIONS:
                replacement = DensifyingConv(module, masked_coo(module.weight, checked[weight_name]))
            else:
                continue
            if module_name:
                parent_name, _, child_name = module_name.rpartition(".")
                setattr(network.get_submodule(parent_name), child_name, replacement)
            else:
                network = replacement
            replaced.append(module_name)
        self.network = network
        self.sparse_layers: tuple[str, ...] = tuple(replaced)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Runs the sparse copy of the network."""
        return self.network(*args, **kwargs)


def to_sparse_inference(
    model: nn.Module, mask: Mapping[str, Tensor], linear_layout: str = "csr"
) -> SparseInferenceModel:
    """Builds a :class:`SparseInferenceModel`: a sparse-weight copy of a pruned network.

    Args:
        model: The pruned network (left unchanged).
        mask: Parameter name to bool keep-mask.
        linear_layout: ``"csr"`` or ``"coo"``: the sparse layout of linear weights.

    Returns:
        The copy, in evaluation mode; ``sparse_layers`` names the replaced modules.

    Raises:
        TypeError: If ``model`` is not a module or the mask is not a mapping of bool tensors.
        ValueError: If ``linear_layout`` is not allowed or the mask does not fit the model.
    """
    return SparseInferenceModel(model, mask, linear_layout)
