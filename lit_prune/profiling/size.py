"""Serialised size of a model: dense, and with its pruned tensors stored sparse.

Both sizes are the number of bytes ``torch.save`` writes for a state dict (into memory), i.e.
the size of the file a user would ship, container overhead included:

* **dense**: ``model.state_dict()`` as it is (parameters and buffers).
* **sparse**: the same state dict in which every candidate tensor is replaced by the smallest
  of three encodings, each measured by serialising it:

  - the dense tensor itself,
  - sparse COO (int64 indices, one row per dimension, plus the values),
  - sparse CSR of the tensor's 2-D view ``(shape[0], numel // shape[0])`` with int32 indices
    where they fit (a kernel is restored by ``to_dense().reshape(shape)``; its shape is the
    parameter's, which the model definition fixes).

  Candidates are the tensors named in ``mask`` (encoded with exactly the mask's kept entries),
  or, without a mask, every floating-point tensor that contains zeros (encoded with its
  non-zeros). A tensor for which no sparse encoding is smaller stays dense, so the sparse size
  is never above the dense size by more than noise in the container layout.

For COO each kept weight costs ``8 * ndim`` bytes of indices plus the value, for CSR about 4
bytes of column index plus the value (plus one row pointer per row), so a float32 layer only
gets smaller beyond roughly 50 % sparsity (CSR) or 67-89 % (COO of a 2-D or 4-D tensor).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lit_prune.profiling._inputs import check_model
from lit_prune.pruning.sparse_export import check_mask, masked_coo, masked_csr

__all__ = ["SizeResult", "measure_size"]

_BYTES_PER_MB = 2**20


@dataclass(frozen=True)
class SizeResult:
    """Serialised size of the model's state dict.

    Attributes:
        dense_bytes: Bytes of the dense state dict.
        sparse_bytes: Bytes of the state dict with pruned tensors in their smallest sparse form.
        dense_mb: ``dense_bytes`` in MiB (2**20 bytes).
        sparse_mb: ``sparse_bytes`` in MiB.
    """

    dense_bytes: int
    sparse_bytes: int
    dense_mb: float
    sparse_mb: float

    def to_dict(self) -> dict[str, Any]:
        """Returns the fields as a JSON-serialisable dictionary."""
        return asdict(self)


def measure_size(model: nn.Module, mask: Mapping[str, Tensor] | None = None) -> SizeResult:
    """Measures the serialised size of ``model`` dense and with sparse pruned tensors.

    Args:
        model: The network.
        mask: Parameter name to bool keep-mask (``True`` = kept); the named tensors are stored
            sparse with exactly their kept entries. ``None`` stores every floating-point tensor
            that has zeros sparse, by its non-zeros.

    Returns:
        Dense and sparse sizes in bytes and MiB.

    Raises:
        TypeError: If ``model`` is not a module or the mask is not a mapping of bool tensors.
        ValueError: If the mask names a tensor the state dict lacks or has a wrong shape.
    """
    check_model(model)
    state = {name: tensor.detach() for name, tensor in model.state_dict().items()}
    if mask is None:
        keeps = {
            name: tensor != 0
            for name, tensor in state.items()
            if tensor.is_floating_point() and tensor.dim() > 0 and bool((tensor == 0).any())
        }
    else:
        keeps = check_mask(state, mask)
    sparse_state = dict(state)
    for name, keep in keeps.items():
        sparse_state[name] = _smallest_encoding(state[name], keep)
    dense_bytes = _serialised_bytes(state)
    sparse_bytes = _serialised_bytes(sparse_state)
    return SizeResult(
        dense_bytes=dense_bytes,
        sparse_bytes=sparse_bytes,
        dense_mb=dense_bytes / _BYTES_PER_MB,
        sparse_mb=sparse_bytes / _BYTES_PER_MB,
    )


def _smallest_encoding(tensor: Tensor, keep: Tensor) -> Tensor:
    candidates = [tensor, masked_coo(tensor, keep)]
    if tensor.dim() > 0:
        candidates.append(masked_csr(tensor, keep))
    return min(candidates, key=_serialised_bytes)


def _serialised_bytes(obj: Any) -> int:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getbuffer().nbytes
