"""Peak and time-averaged memory of one inference forward pass.

What is counted
---------------
The *live* memory during the forward pass is a step function of time:

``live(t) = baseline + sum of the sizes of all allocations minus all frees made since the pass began``

* **baseline** (memory that is live before the pass starts):

  - on CPU: the bytes of the model's parameters and buffers plus the input batch (each
    underlying storage counted once, so tied weights and views are not double counted);
  - on CUDA: ``torch.cuda.memory_allocated`` of the model's device, i.e. every tensor the
    process holds on that GPU (the model's weights and buffers and the input among them).

* **allocations and frees** during the pass are the allocator's ``[memory]`` records that
  ``torch.profiler`` collects with ``profile_memory=True``: every activation, temporary buffer,
  convolution workspace and the output, each with its exact size (positive for an allocation,
  negative for a free) and timestamp. The records are read, in time order, from the raw
  profiler result (``prof.profiler.kineto_results``) rather than from the per-operator
  ``cpu_memory_usage`` of ``prof.events()``, because the per-operator values are *net* sums
  that hide allocations an operator frees before it returns (e.g. a convolution's workspace).
  Only the records inside a ``record_function`` range wrapped around the forward call are
  used, so the profiler's own start-up and tear-down are excluded.

From that step function:

* **peak** = its maximum. On CUDA the peak is taken from the caching allocator itself
  (``torch.cuda.reset_peak_memory_stats`` before the pass, ``torch.cuda.max_memory_allocated``
  after it), which is authoritative for the device.
* **average** = its time integral divided by the duration of the pass: the memory a batch
  holds on average while it is processed. On CUDA the record timestamps are host-side (when
  the allocation was requested); the pass ends with a synchronisation, so the window covers
  the GPU's execution, but the weighting inside it follows host time.

Not counted: the Python interpreter and library code, memory that an allocator caches but has
not handed out (``torch.cuda.memory_reserved`` minus allocated, glibc free lists), the CUDA
context, and on CPU any tensor the process holds besides the model and the batch.

One untimed forward pass runs first so one-off allocations (lazy initialisation, cuDNN/oneDNN
plans) do not inflate the measurement.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

from lit_prune.profiling._inputs import check_model, eval_mode, prepare_input, synchronize
from lit_prune.profiling.native_output import native_stderr_silenced

__all__ = ["MemoryResult", "measure_memory"]

_BYTES_PER_MB = 2**20
_FORWARD_RANGE = "lit_prune.profiling.memory.forward"
_CPU_DEVICE_TYPES = (DeviceType.CPU, DeviceType.MKLDNN, DeviceType.IDEEP)


@dataclass(frozen=True)
class MemoryResult:
    """Memory held while the model processes one batch (see the module docstring).

    Attributes:
        peak_mb: Highest live memory during the forward pass, in MiB (2**20 bytes).
        avg_mb: Time-averaged live memory during the forward pass, in MiB.
        device: Device the model ran on.
        method: How the numbers were obtained.
    """

    peak_mb: float
    avg_mb: float
    device: str
    method: str

    def to_dict(self) -> dict[str, Any]:
        """Returns the fields as a JSON-serialisable dictionary."""
        return asdict(self)


def measure_memory(model: nn.Module, example_batch: Tensor | Sequence[Any]) -> MemoryResult:
    """Measures the peak and the time-averaged memory of one forward pass.

    The model runs in evaluation mode under ``torch.inference_mode`` (its previous modes are
    restored afterwards), so no autograd graph is kept. The module docstring states exactly what
    is counted.

    Args:
        model: The network; it is run on the device of its parameters.
        example_batch: An input tensor, or an ``(inputs, targets)`` sequence whose inputs are used.

    Returns:
        Peak and average live memory in MiB, including the model's weights and the input.

    Raises:
        TypeError: If ``model`` is not a module or the batch holds no input tensor.
        ValueError: If the model runs on a device other than CPU or CUDA.
    """
    check_model(model)
    inputs = prepare_input(model, example_batch)
    device = inputs.device
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"memory can be measured on 'cpu' or 'cuda' devices, the model is on {device}")
    with eval_mode(model), torch.inference_mode():
        model(inputs)
        synchronize(device)
        if device.type == "cuda":
            return _measure_cuda(model, inputs)
        return _measure_cpu(model, inputs)


def _measure_cpu(model: nn.Module, inputs: Tensor) -> MemoryResult:
    tensors = [*model.parameters(), *model.buffers(), inputs]
    baseline = _unique_storage_bytes(t for t in tensors if t.device.type == "cpu")
    records, start_ns, end_ns = _profile_forward(model, inputs)
    cpu_records = [(t, nbytes) for t, nbytes, device_type, _ in records if device_type in _CPU_DEVICE_TYPES]
    peak, average = _peak_and_average(baseline, cpu_records, start_ns, end_ns)
    return MemoryResult(
        peak_mb=peak / _BYTES_PER_MB,
        avg_mb=average / _BYTES_PER_MB,
        device="cpu",
        method="torch.profiler allocation records over one forward pass + parameter, buffer and input bytes",
    )


def _measure_cuda(model: nn.Module, inputs: Tensor) -> MemoryResult:
    device = inputs.device
    index = device.index if device.index is not None else torch.cuda.current_device()
    baseline = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    records, start_ns, end_ns = _profile_forward(model, inputs)
    peak = torch.cuda.max_memory_allocated(device)
    cuda_records = [
        (t, nbytes)
        for t, nbytes, device_type, device_index in records
        if device_type == DeviceType.CUDA and device_index == index
    ]
    _, average = _peak_and_average(baseline, cuda_records, start_ns, end_ns)
    return MemoryResult(
        peak_mb=peak / _BYTES_PER_MB,
        avg_mb=average / _BYTES_PER_MB,
        device=str(device),
        method="CUDA allocator peak (max_memory_allocated) + torch.profiler time-weighted average",
    )


def _profile_forward(model: nn.Module, inputs: Tensor) -> tuple[list[tuple[int, int, Any, int]], int, int]:
    """Runs one forward pass under the profiler.

    Returns:
        The memory records ``(time_ns, nbytes, device_type, device_index)`` inside the forward
        range, in time order, and the range's start and end in nanoseconds.
    """
    with (
        native_stderr_silenced(),
        profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True) as prof,
    ):
        with record_function(_FORWARD_RANGE):
            outputs = model(inputs)
            synchronize(inputs.device)
    del outputs
    events = prof.profiler.kineto_results.events()
    ranges = [event for event in events if event.name() == _FORWARD_RANGE]
    if len(ranges) != 1:
        raise RuntimeError(f"expected one profiler range named {_FORWARD_RANGE!r}, found {len(ranges)}")
    start_ns, end_ns = ranges[0].start_ns(), ranges[0].end_ns()
    records = sorted(
        (event.start_ns(), event.nbytes(), event.device_type(), event.device_index())
        for event in events
        if event.name() == "[memory]" and start_ns <= event.start_ns() <= end_ns
    )
    return records, start_ns, end_ns


def _peak_and_average(
    baseline: int, records: Sequence[tuple[int, int]], start_ns: int, end_ns: int
) -> tuple[float, float]:
    """Peak and time-weighted mean of ``baseline`` plus the running sum of ``records``.

    Args:
        baseline: Bytes live when the window opens.
        records: ``(time_ns, nbytes)`` allocations (positive) and frees (negative), in time order.
        start_ns: Start of the window.
        end_ns: End of the window.

    Returns:
        The maximum live bytes and the average live bytes over the window.
    """
    live = baseline
    peak = baseline
    area = 0.0
    previous = start_ns
    for time_ns, nbytes in records:
        area += live * (time_ns - previous)
        live += nbytes
        peak = max(peak, live)
        previous = time_ns
    area += live * (end_ns - previous)
    duration = end_ns - start_ns
    average = area / duration if duration > 0 else float(live)
    return float(peak), average


def _unique_storage_bytes(tensors: Iterable[Tensor]) -> int:
    seen: set[int] = set()
    total = 0
    for tensor in _dense_parts(tensors):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


def _dense_parts(tensors: Iterable[Tensor]) -> Iterator[Tensor]:
    """The strided tensors holding the data: a sparse tensor's indices and values (COO) or its
    compressed indices, plain indices and values (CSR/CSC/BSR/BSC)."""
    for tensor in tensors:
        if tensor.layout == torch.sparse_coo:
            yield from (tensor._indices(), tensor._values())
        elif tensor.layout in (torch.sparse_csr, torch.sparse_bsr):
            yield from (tensor.crow_indices(), tensor.col_indices(), tensor.values())
        elif tensor.layout in (torch.sparse_csc, torch.sparse_bsc):
            yield from (tensor.ccol_indices(), tensor.row_indices(), tensor.values())
        else:
            yield tensor
