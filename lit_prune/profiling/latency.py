"""Inference latency per batch: warm-up, then the median of several timed forward passes."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lit_prune.profiling._inputs import check_model, eval_mode, prepare_input, synchronize

__all__ = ["LatencyResult", "measure_latency"]


@dataclass(frozen=True)
class LatencyResult:
    """Wall-clock time of one forward pass over a batch.

    Attributes:
        median_ms: Median time per batch in milliseconds (the reported latency).
        mean_ms: Mean time per batch in milliseconds.
        min_ms: Fastest timed batch in milliseconds.
        max_ms: Slowest timed batch in milliseconds.
        batch_size: Number of samples in the timed batch.
        device: Device the model ran on (``"cpu"``, ``"cuda:0"``).
        repeats: Number of timed batches.
    """

    median_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    batch_size: int
    device: str
    repeats: int

    @classmethod
    def from_times(cls, times_ms: Sequence[float], batch_size: int, device: str) -> LatencyResult:
        """The summary of timed calls: milliseconds per batch, one entry per call."""
        return cls(
            median_ms=statistics.median(times_ms),
            mean_ms=statistics.fmean(times_ms),
            min_ms=min(times_ms),
            max_ms=max(times_ms),
            batch_size=batch_size,
            device=device,
            repeats=len(times_ms),
        )

    def to_dict(self) -> dict[str, Any]:
        """Returns the fields as a JSON-serialisable dictionary."""
        return asdict(self)


def measure_latency(
    model: nn.Module,
    example_batch: Tensor | Sequence[Any],
    warmup: int = 3,
    repeats: int = 10,
) -> LatencyResult:
    """Times the forward pass of ``model`` on one batch.

    The model runs in evaluation mode under ``torch.inference_mode`` (its previous train/eval
    modes are restored afterwards). ``warmup`` untimed passes come first (allocator warm-up,
    kernel selection, lazy initialisation), then ``repeats`` passes are timed one by one. On
    CUDA each pass is bracketed by CUDA events and the device is synchronised before reading
    them, so the time is the GPU execution time of the batch; on CPU each pass is timed with
    ``time.perf_counter``. The median is robust to the occasional slow pass caused by other
    processes.

    Args:
        model: The network; it is run on the device of its parameters.
        example_batch: An input tensor, or an ``(inputs, targets)`` sequence whose inputs are used.
            The inputs are moved to the model's device before timing.
        warmup: Untimed passes before the measurement, at least 0.
        repeats: Timed passes, at least 1.

    Returns:
        The median, mean, minimum and maximum time per batch in milliseconds.

    Raises:
        TypeError: If ``model`` is not a module or the batch holds no input tensor.
        ValueError: If ``warmup`` is negative or ``repeats`` is below 1.
    """
    check_model(model)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an integer >= 0, got {warmup!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
    inputs = prepare_input(model, example_batch)
    device = inputs.device
    with eval_mode(model), torch.inference_mode():
        for _ in range(warmup):
            model(inputs)
        synchronize(device)
        if device.type == "cuda":
            with torch.cuda.device(device):
                times_ms = [_time_cuda(model, inputs) for _ in range(repeats)]
        else:
            times_ms = [_time_cpu(model, inputs) for _ in range(repeats)]
    return LatencyResult.from_times(times_ms, int(inputs.shape[0]), str(device))


def _time_cpu(model: nn.Module, inputs: Tensor) -> float:
    start = time.perf_counter()
    model(inputs)
    return (time.perf_counter() - start) * 1000.0


def _time_cuda(model: nn.Module, inputs: Tensor) -> float:
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    model(inputs)
    end.record()
    end.synchronize()
    return float(start.elapsed_time(end))
