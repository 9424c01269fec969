"""Latency of any callable on a batch, for exported models that ``measure_latency`` cannot put in eval mode.

An onnxruntime session is not a module, and a reloaded ``torch.export`` program refuses
``eval()``; both are already in inference form. :func:`time_calls` times them the way
:func:`lit_prune.profiling.measure_latency` times a network: untimed warm-up calls, then the
median of timed ones, the device synchronised around each call on CUDA.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from lit_prune.profiling import LatencyResult

__all__ = ["time_calls"]


def time_calls(
    call: Callable[[Any], Any], inputs: Any, device: str, warmup: int = 3, repeats: int = 10
) -> LatencyResult:
    """Times ``call(inputs)``: ``warmup`` untimed calls, then ``repeats`` timed ones.

    Args:
        call: The model, called on ``inputs``.
        inputs: The batch (a tensor or a NumPy array).
        device: Where it runs, recorded in the result (``cpu``, ``cuda:0``, an onnxruntime provider);
            a CUDA device is synchronised before and after each timed call.
        warmup: Untimed calls first.
        repeats: Timed calls, at least 1.

    Returns:
        Median, mean, minimum and maximum milliseconds per call.
    """
    cuda = device.startswith("cuda")
    with torch.inference_mode():
        for _ in range(warmup):
            call(inputs)
        times_ms = []
        for _ in range(repeats):
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            call(inputs)
            if cuda:
                torch.cuda.synchronize()
            times_ms.append((time.perf_counter() - start) * 1000.0)
    return LatencyResult.from_times(times_ms, int(inputs.shape[0]), device)
