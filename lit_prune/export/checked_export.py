"""Exporting a network to a file and proving the file computes what the network computes.

:func:`export_checked` exports (:mod:`~lit_prune.export.onnx` or
:mod:`~lit_prune.export.exported_program`) into a temporary file beside the output, runs the
exported model (onnxruntime for ONNX, the reloaded program for ``torch.export``) on random
batches of two sizes (the batch size is dynamic) and compares it with the eager network
(:mod:`~lit_prune.export.parity`). Only when every comparison passes is the file renamed into
place and ``FILE.json`` written beside it with the parity figures, the file size and the latency
of PyTorch eager against the exported model; a failed check leaves nothing behind (a previous
export at the same path stays as it was, with its own JSON).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lit_prune.atomic_files import atomic_write
from lit_prune.errors import UserError
from lit_prune.export.exported_program import export_program, load_program
from lit_prune.export.onnx import OnnxRunner, export_onnx, onnxruntime_providers
from lit_prune.export.parity import DEFAULT_TOLERANCE, ParityResult, compare_outputs
from lit_prune.export.timing import time_calls
from lit_prune.profiling import measure_latency
from lit_prune.validation import check_choice, check_int, check_number

__all__ = ["EXPORT_FORMATS", "ExportRequest", "ParityError", "check_destination", "export_checked", "report_path"]

EXPORT_FORMATS = {"onnx": ".onnx", "exported_program": ".pt2"}
"""The formats ``lit-prune export`` writes, with the file suffix each takes."""

_EXAMPLE_BATCH = 2
_TOLERANCE_RULE = "|y - y_eager| <= tolerance * (1 + |y_eager|) for every output"
_VERSIONED = ("torch", "onnx", "onnxruntime", "onnxscript", "lit-prune")


class ParityError(RuntimeError):
    """The exported model's outputs differ from PyTorch's by more than the tolerance.

    Attributes:
        summary: What was measured (the figures the JSON would have held).
    """

    def __init__(self, message: str, summary: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.summary = dict(summary)


@dataclass
class ExportRequest:
    """What to export and how to check it.

    Attributes:
        format: ``"onnx"`` or ``"exported_program"``.
        output: The file to write (``.onnx`` or ``.pt2``).
        input_shape: One image's shape ``(channels, height, width)``.
        batch_size: Batch of the latency measurement and of the larger parity batch.
        tolerance: Parity tolerance (see :mod:`lit_prune.export.parity`).
        device: Where PyTorch eager (and the reloaded program) run for the latency: ``cpu`` or ``cuda``.
        latency_repeats: Timed batches per latency; the median is reported.
        seed: Seed of the random parity and latency inputs.
        about: Facts about the network to record in the JSON (its checkpoint, epoch, ...).
    """

    format: str
    output: Path
    input_shape: tuple[int, ...]
    batch_size: int = 32
    tolerance: float = DEFAULT_TOLERANCE
    device: str = "cpu"
    latency_repeats: int = 10
    seed: int = 0
    about: dict[str, Any] = field(default_factory=dict)


def report_path(output: Path) -> Path:
    """The JSON written beside an exported file: its name with ``.json`` appended (``model.onnx.json``)."""
    return output.with_name(output.name + ".json")


def export_checked(network: nn.Module, request: ExportRequest, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Exports ``network``, checks parity at two batch sizes and measures latency; writes the file and its JSON.

    Args:
        network: The network; it is not modified (a CPU copy in evaluation mode is exported).
        request: What to export and how to check it.
        echo: Where the progress lines go (tolerance and differences included).

    Returns:
        The content of the JSON written beside the file.

    Raises:
        UserError: If the request is invalid (format, output path, counts), or the network
            cannot be exported (the message names the layer and operator).
        ParityError: If an output differs by more than the tolerance; nothing is written.
    """
    output = _check_request(request)
    model = copy.deepcopy(network).to("cpu").eval()
    generator = torch.Generator().manual_seed(request.seed)
    example = torch.randn(_EXAMPLE_BATCH, *request.input_shape, generator=generator)
    sizes = sorted({1, request.batch_size} if request.batch_size > 1 else {1, _EXAMPLE_BATCH})
    batches = {size: torch.randn(size, *request.input_shape, generator=generator) for size in sizes}
    summary: dict[str, Any] = {}

    def write(temporary: Path) -> None:
        summary.update(_export(model, example, temporary, request.format))
        echo(f"exported with {summary['exporter']}" + (f" (opset {summary['opset']})" if summary["opset"] else ""))
        if summary.get("dynamo_failure"):
            echo(f"the dynamo exporter failed, so the TorchScript exporter was used: {summary['dynamo_failure']}")
        runner = _runner(temporary, request.format)
        with torch.inference_mode():
            results = [compare_outputs(runner(batch), model(batch), request.tolerance) for batch in batches.values()]
        for result in results:
            echo(_parity_line(result))
        summary["parity"] = [result.to_dict() for result in results]
        summary["passed"] = all(result.passed for result in results)
        if not summary["passed"]:
            raise ParityError(
                f"the exported model's outputs differ from PyTorch's by more than the tolerance {request.tolerance:g} "
                f"({_TOLERANCE_RULE}); nothing was written",
                summary,
            )
        summary["latency"] = _latency(model, temporary, request, batches[max(batches)], generator)
        summary["file_size_bytes"] = temporary.stat().st_size

    created = [folder for folder in output.parents if not folder.exists()]
    try:
        _make_folder(output)
        atomic_write(output, write)
    except BaseException:
        _remove_empty(created)
        raise
    content = {
        "format": request.format,
        "file": str(output),
        **summary,
        "input_shape": list(request.input_shape),
        "inputs": f"standard normal random images, seed {request.seed}",
        "dynamic_batch": True,
        "batch_sizes_checked": sizes,
        "tolerance": request.tolerance,
        "tolerance_rule": _TOLERANCE_RULE,
        **request.about,
        "versions": _versions(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        atomic_write(report_path(output), lambda path: path.write_text(json.dumps(content, indent=2) + "\n"))
    except BaseException:
        output.unlink(missing_ok=True)
        raise
    return content


def check_destination(format: str, output: str | os.PathLike[str]) -> Path:
    """Checks the format and the output path before anything is built; creates nothing.

    Args:
        format: ``"onnx"`` or ``"exported_program"``.
        output: The file to write.

    Returns:
        The output path.

    Raises:
        UserError: If the format is unknown, the suffix does not fit it, or the path cannot be written
            (a directory, under a file, in a folder that is not writable).
    """
    check_choice(format, "--format", list(EXPORT_FORMATS))
    output = Path(output)
    suffix = EXPORT_FORMATS[format]
    if output.suffix != suffix:
        raise UserError(
            f"--output {str(output)!r}: --format {format} writes a {suffix} file; give a name ending in {suffix}"
        )
    if output.is_dir():
        raise UserError(f"--output {str(output)!r} is a directory; give the path of the file to write")
    existing = next(parent for parent in output.parents if parent.exists())
    if not existing.is_dir():
        raise UserError(f"--output {str(output)!r} cannot be written: {str(existing)!r} is a file, not a folder")
    if not os.access(existing, os.W_OK):
        raise UserError(f"--output {str(output)!r} cannot be written: {str(existing)!r} is not writable")
    return output


def _check_request(request: ExportRequest) -> Path:
    """Checks the request and returns the output path."""
    check_int(request.batch_size, "--batch_size", 1)
    check_int(request.latency_repeats, "--latency_repeats", 1)
    check_number(request.tolerance, "--tolerance", 0.0)
    try:
        device = torch.device(request.device)
    except (RuntimeError, TypeError):
        raise UserError(f"--device must be cpu or cuda (or cuda:N), got {request.device!r}") from None
    check_choice(device.type, "--device", ["cpu", "cuda"])
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {request.device}: no CUDA device is available here; use --device cpu")
    return check_destination(request.format, request.output)


def _make_folder(output: Path) -> None:
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"--output {str(output)!r}: cannot create its folder: {error.strerror or error}") from error


def _remove_empty(folders: list[Path]) -> None:
    """Removes the folders this export created (innermost first), where they stayed empty."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _export(model: nn.Module, example: Tensor, path: Path, format: str) -> dict[str, Any]:
    if format == "onnx":
        return export_onnx(model, example, path)
    return export_program(model, example, path)


def _runner(path: Path, format: str) -> Callable[[Tensor], Tensor]:
    return OnnxRunner(path) if format == "onnx" else load_program(path)


def _parity_line(result: ParityResult) -> str:
    verdict = "ok" if result.passed else "FAILED"
    relation = "<=" if result.passed else ">"
    return (
        f"parity at batch {result.batch_size}: max |diff| {result.max_abs_diff:.3g}, relative "
        f"{result.max_rel_diff:.3g}, scaled {result.max_scaled_diff:.3g} {relation} tolerance {result.tolerance:g}; "
        f"top-1 agreement {result.top1_agreement:.0%}: {verdict}"
    )


def _latency(
    model: nn.Module, path: Path, request: ExportRequest, inputs: Tensor, generator: torch.Generator
) -> dict[str, Any]:
    """Median latency per batch of PyTorch eager against the exported model, at ``request.batch_size``."""
    if inputs.shape[0] != request.batch_size:
        inputs = torch.randn(request.batch_size, *request.input_shape, generator=generator)
    device = torch.device(request.device)
    eager = measure_latency(copy.deepcopy(model).to(device), inputs, repeats=request.latency_repeats)
    figures: dict[str, Any] = {
        "batch_size": request.batch_size,
        "repeats": request.latency_repeats,
        "statistic": "median",
        "threads": torch.get_num_threads(),
        "pytorch_eager_ms": eager.median_ms,
        "pytorch_device": str(device),
    }
    if request.format == "exported_program":
        program = load_program(path).to(device)
        timed = time_calls(program, inputs.to(device), str(device), repeats=request.latency_repeats)
        figures["exported_program_ms"] = timed.median_ms
        figures["eager_over_exported_program"] = eager.median_ms / timed.median_ms
        return figures
    onnxruntime_ms = {}
    for provider in onnxruntime_providers():
        onnxruntime_ms[provider] = OnnxRunner(path, provider).latency(inputs, repeats=request.latency_repeats).median_ms
    figures["onnxruntime_ms"] = onnxruntime_ms
    cpu = onnxruntime_ms.get("CPUExecutionProvider")
    figures["eager_over_onnxruntime_cpu"] = eager.median_ms / cpu if cpu else None
    return figures


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for package in _VERSIONED:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions
