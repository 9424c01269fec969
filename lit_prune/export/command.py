"""``lit-prune export``: a checkpoint's network as an ONNX file or a ``torch.export`` program, checked.

``lit-prune export --ckpt_path CKPT --format onnx|exported_program --output FILE`` rebuilds the
network of any lit-prune checkpoint (:mod:`~lit_prune.export.rebuild`), exports it with a dynamic
batch size, proves parity of the file against PyTorch and writes ``FILE`` and ``FILE.json``
(:mod:`~lit_prune.export.checked_export`). Exit status: 0 when the file was written and passed,
1 when parity failed (nothing is written), 2 for bad input (not a lit-prune checkpoint, an unknown
format, an output that cannot be written, a network that cannot be exported).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lit_prune.export.checked_export import (
    EXPORT_FORMATS,
    ExportRequest,
    ParityError,
    check_destination,
    export_checked,
    report_path,
)
from lit_prune.export.parity import DEFAULT_TOLERANCE
from lit_prune.export.rebuild import RebuiltNetwork, rebuild_network
from lit_prune.validation import check_int

__all__ = ["main"]

_PROG = "lit-prune export"


def main(args: Sequence[str]) -> int:
    """Runs ``lit-prune export`` with the arguments after ``export``.

    Args:
        args: Command-line arguments.

    Returns:
        0 when the export passed its parity check, 1 when it did not.

    Raises:
        UserError: For bad input; the ``lit-prune`` command prints it and exits with status 2.
    """
    options = _parser().parse_args(list(args))
    check_destination(options.format, options.output)
    rebuilt = rebuild_network(options.ckpt_path)
    shape = rebuilt.input_shape
    source = rebuilt.input_source
    if options.image_size is not None:
        size = check_int(options.image_size, "--image_size", 1)
        shape, source = (shape[0], size, size), "--image_size"
    _echo(f"rebuilt {rebuilt.model} ({rebuilt.num_classes} classes) from {options.ckpt_path}: {_describe(rebuilt)}")
    _echo(f"input {'x'.join(map(str, shape))} ({source}); tolerance {options.tolerance:g}")
    request = ExportRequest(
        format=options.format,
        output=options.output,
        input_shape=shape,
        batch_size=options.batch_size,
        tolerance=options.tolerance,
        device=options.device,
        latency_repeats=options.latency_repeats,
        about={
            "checkpoint": str(options.ckpt_path),
            "epoch": rebuilt.epoch,
            "global_step": rebuilt.global_step,
            "model": rebuilt.model,
            "num_classes": rebuilt.num_classes,
            "network_kwargs": rebuilt.network_kwargs,
            "surgery_records": rebuilt.surgery_records,
            "mask_sparsity": rebuilt.mask_sparsity,
            "input_shape_source": source,
        },
    )
    try:
        content = export_checked(rebuilt.network, request, echo=_echo)
    except ParityError as error:
        print(f"{_PROG}: failed: {error}", file=sys.stderr, flush=True)
        return 1
    _echo(_latency_line(content["latency"]))
    _echo(f"wrote {content['file']} ({content['file_size_bytes']:,} bytes) and {report_path(options.output)}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description=(
            "Export a lit-prune checkpoint's network (shrunk networks at their small shapes, masked ones dense with "
            "their zeros) with a dynamic batch size, run the exported file (onnxruntime for ONNX) against PyTorch, and "
            "write FILE and FILE.json (parity, size, latency). Exit status 0: written and checked; 1: the outputs "
            "differ by more than the tolerance (nothing written); 2: bad input."
        ),
    )
    parser.add_argument("--ckpt_path", required=True, metavar="CKPT", help="a checkpoint written by lit-prune fit")
    parser.add_argument("--format", required=True, help=f"one of: {', '.join(EXPORT_FORMATS)}")
    parser.add_argument(
        "--output", required=True, type=Path, metavar="FILE", help="the file to write (.onnx or .pt2); folders made"
    )
    parser.add_argument("--batch_size", type=int, default=32, help="batch of the latency and parity (default 32)")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help=f"parity: |y - y_eager| <= tolerance * (1 + |y_eager|) (default {DEFAULT_TOLERANCE:g})",
    )
    parser.add_argument("--device", default="cpu", help="where PyTorch eager runs for the latency (default cpu)")
    parser.add_argument("--latency_repeats", type=int, default=10, help="timed batches, median reported (default 10)")
    parser.add_argument("--image_size", type=int, help="side of the random input images (default: from the run)")
    return parser


def _describe(rebuilt: RebuiltNetwork) -> str:
    sparsity = rebuilt.mask_sparsity
    mask = "no mask" if sparsity is None else f"mask sparsity {sparsity:.1%} (exported dense with its zeros)"
    return f"epoch {rebuilt.epoch}, {mask}, {rebuilt.surgery_records} surgery records replayed"


def _latency_line(latency: Mapping[str, Any]) -> str:
    figures = [f"PyTorch eager {latency['pytorch_eager_ms']:.2f} ms"]
    if "exported_program_ms" in latency:
        figures.append(f"exported program {latency['exported_program_ms']:.2f} ms")
    for provider, value in dict(latency.get("onnxruntime_ms") or {}).items():
        figures.append(f"onnxruntime {provider} {value:.2f} ms")
    return f"latency per batch of {latency['batch_size']} (median of {latency['repeats']}): {', '.join(figures)}"


def _echo(line: str) -> None:
    print(f"{_PROG}: {line}", flush=True)
