"""onnxruntime latency of a network for the run report (``ProfilingCallback(onnxruntime=True)``).

The network is exported to a temporary ONNX file (:func:`~lit_prune.export.onnx.export_onnx`,
dynamic batch size), run with onnxruntime on the profiling batch, compared with the eager network
on that batch, and timed like the eager latency (warm-up, then the median of timed batches).
onnxruntime runs on the CUDA provider when the batch is on a GPU and the provider is installed,
otherwise on the CPU provider; the result says which.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import onnxruntime
import torch
from torch import Tensor, nn

from lit_prune.export.onnx import OnnxRunner, export_onnx, onnxruntime_providers
from lit_prune.export.parity import compare_outputs

__all__ = ["profile_onnxruntime"]

_EXAMPLE_BATCH = 2


def profile_onnxruntime(network: nn.Module, inputs: Tensor, warmup: int = 3, repeats: int = 10) -> dict[str, Any]:
    """Exports ``network`` to ONNX and measures onnxruntime's latency on ``inputs``.

    Args:
        network: The network (not modified: a CPU copy in evaluation mode is exported).
        inputs: The profiling batch.
        warmup: Untimed batches first.
        repeats: Timed batches; the median is reported.

    Returns:
        ``latency_ms`` (median), ``latency_min_ms``, ``latency_max_ms``, ``provider``, ``exporter``,
        ``opset``, ``max_abs_logit_difference`` (against the eager network on the batch) and ``note``.

    Raises:
        UserError: If the network cannot be exported to ONNX (the message names the layer and operator).
    """
    model = copy.deepcopy(network).to("cpu").eval()
    batch = inputs.detach().to("cpu", torch.float32)
    provider = "CPUExecutionProvider"
    if inputs.device.type == "cuda" and "CUDAExecutionProvider" in onnxruntime_providers():
        provider = "CUDAExecutionProvider"
    with tempfile.TemporaryDirectory(prefix="lit_prune_onnx_") as directory:
        path = Path(directory) / "model.onnx"
        example = batch[:1].repeat(_EXAMPLE_BATCH, *([1] * (batch.dim() - 1)))
        exported = export_onnx(model, example, path)
        runner = OnnxRunner(path, provider)
        with torch.inference_mode():
            parity = compare_outputs(runner(batch), model(batch))
        latency = runner.latency(batch, warmup, repeats)
    note = f"onnxruntime {onnxruntime.__version__} with {provider} ({runner.threads} threads) on the profiling batch"
    if inputs.device.type == "cuda" and provider == "CPUExecutionProvider":
        note += "; the eager latency was measured on the GPU (onnxruntime here has no CUDA provider)"
    return {
        "latency_ms": latency.median_ms,
        "latency_min_ms": latency.min_ms,
        "latency_max_ms": latency.max_ms,
        "provider": provider,
        "exporter": exported["exporter"],
        "opset": exported["opset"],
        "max_abs_logit_difference": parity.max_abs_diff,
        "note": note,
    }
