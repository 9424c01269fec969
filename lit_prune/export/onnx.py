"""ONNX export with a dynamic batch size, and running the file with onnxruntime.

The network is exported with the dynamo exporter (``torch.onnx.export(..., dynamo=True)``, which
traces with ``torch.export`` and translates the graph with onnxscript); where that fails it falls
back to the TorchScript exporter (``dynamo=False``), and the result records which one was used
and why. The batch dimension is dynamic in both (``torch.export.Dim`` for dynamo, ``dynamic_axes``
for TorchScript). onnxruntime runs the file with as many threads as PyTorch uses, so the
latencies of the two are comparable.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch
from torch import Tensor, nn
from torch.export import Dim

from lit_prune.errors import UserError
from lit_prune.export.failures import (
    LayerTracker,
    describe_failure,
    layer_of_operator,
    operator_of,
    partial_graph_withheld,
)
from lit_prune.export.timing import time_calls
from lit_prune.profiling import LatencyResult

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "OnnxRunner", "export_onnx", "onnxruntime_providers"]

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
_TORCHSCRIPT_OPSET = 18


def export_onnx(network: nn.Module, example: Tensor, path: Path) -> dict[str, Any]:
    """Exports ``network`` to an ONNX file whose batch size is dynamic.

    Args:
        network: The network, in evaluation mode, on the CPU.
        example: An example batch (at least 2 images, so the batch size is not specialised to 1).
        path: Where to write the file.

    Returns:
        ``exporter`` (``"dynamo"`` or ``"torchscript"``), ``opset``, and ``dynamo_failure`` (why
        the dynamo exporter was not used, or ``None``).

    Raises:
        UserError: If neither exporter can export the network; the message names the layer and
            the operator where they are known.
    """
    tracker = LayerTracker(network)
    try:
        with tracker.tracking(), partial_graph_withheld():
            program = torch.onnx.export(
                network,
                (example,),
                dynamo=True,
                dynamic_shapes=({0: Dim("batch")},),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                verbose=False,
            )
        program.save(str(path), external_data=False)
        return {"exporter": "dynamo", "opset": _opset(path), "dynamo_failure": None}
    except Exception as error:  # noqa: BLE001 - any exporter failure is diagnosed, then TorchScript is tried
        dynamo_error = error
        dynamo_lines = describe_failure("ONNX export (dynamo)", error, *_where(network, example, error, tracker))
    try:
        with partial_graph_withheld():
            _export_torchscript(network, example, path)
    except Exception as error:  # noqa: BLE001 - both exporters failed: the user gets both reasons
        fallback = describe_failure("the TorchScript exporter", error, None, operator_of(error))[0]
        raise UserError("\n".join([*dynamo_lines, f"{fallback} too"])) from dynamo_error
    return {"exporter": "torchscript", "opset": _opset(path), "dynamo_failure": " ".join(dynamo_lines)}


def onnxruntime_providers() -> list[str]:
    """The onnxruntime execution providers this machine offers, of those lit-prune measures."""
    available = onnxruntime.get_available_providers()
    return [name for name in ("CUDAExecutionProvider", "CPUExecutionProvider") if name in available]


class OnnxRunner:
    """An onnxruntime session over an ONNX file, called like a network on a tensor.

    Args:
        path: The ONNX file.
        provider: The execution provider, e.g. ``"CPUExecutionProvider"``.
        threads: Intra-op threads; PyTorch's thread count by default, so latencies compare fairly.
    """

    def __init__(self, path: str | os.PathLike[str], provider: str = "CPUExecutionProvider", threads: int = 0) -> None:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3
        self.provider = provider
        self.threads = options.intra_op_num_threads
        self.session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=[provider])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, inputs: Tensor) -> Tensor:
        """The model's outputs for a batch, as a CPU tensor."""
        return torch.from_numpy(self.run(_as_numpy(inputs)))

    def run(self, inputs: np.ndarray) -> np.ndarray:
        """The model's outputs for a batch given as a NumPy array."""
        return self.session.run(None, {self.input_name: inputs})[0]

    def latency(self, inputs: Tensor, warmup: int = 3, repeats: int = 10) -> LatencyResult:
        """Time per batch of ``session.run``: ``warmup`` untimed runs, then the median of ``repeats``.

        Args:
            inputs: The batch.
            warmup: Untimed runs first.
            repeats: Timed runs, at least 1.

        Returns:
            The latency figures, with the provider as the device.
        """
        return time_calls(self.run, _as_numpy(inputs), self.provider, warmup, repeats)


def _export_torchscript(network: nn.Module, example: Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network,
            (example,),
            str(path),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=_TORCHSCRIPT_OPSET,
        )


def _where(
    network: nn.Module, example: Tensor, error: BaseException, tracker: LayerTracker
) -> tuple[tuple[str, str] | None, str | None]:
    """The layer and operator of a dynamo export failure: from the trace if it failed there, else from the graph."""
    operator = operator_of(error)
    layer = tracker.innermost()
    if layer is None and operator is not None:
        try:
            with partial_graph_withheld():
                program = torch.export.export(network, (example,), dynamic_shapes=({0: Dim("batch")},))
        except Exception:  # noqa: BLE001 - without a graph the layer stays unknown
            return None, operator
        layer = layer_of_operator(program, operator)
    return layer, operator


def _opset(path: Path) -> int | None:
    model = onnx.load(str(path), load_external_data=False)
    return next((int(entry.version) for entry in model.opset_import if entry.domain in ("", "ai.onnx")), None)


def _as_numpy(inputs: Tensor) -> np.ndarray:
    return inputs.detach().to("cpu", torch.float32).contiguous().numpy()
