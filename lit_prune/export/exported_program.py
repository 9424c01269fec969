"""Export to a ``torch.export`` program (``.pt2``) with a dynamic batch size, and loading it back.

``torch.export.export`` traces the network into an ``ExportedProgram`` (an ATen graph with its
weights) whose batch dimension is a symbolic ``Dim``; ``torch.export.save`` writes it, and
``torch.export.load`` reads it back into a callable module, which is what the parity check runs.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn
from torch.export import Dim

from lit_prune.errors import UserError
from lit_prune.export.failures import LayerTracker, describe_failure, operator_of, partial_graph_withheld

__all__ = ["export_program", "load_program"]


def export_program(network: nn.Module, example: Tensor, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Exports ``network`` with a dynamic batch size and saves the program to ``path``.

    Args:
        network: The network, in evaluation mode, on the CPU.
        example: An example batch (at least 2 images, so the batch size is not specialised to 1).
        path: Where to write the ``.pt2`` file.

    Returns:
        ``exporter`` (``"torch.export"``) and ``opset`` (``None``: a program has no opset).

    Raises:
        UserError: If the network cannot be traced; the message names the layer and operator.
    """
    tracker = LayerTracker(network)
    try:
        with tracker.tracking(), partial_graph_withheld():
            program = torch.export.export(network, (example,), dynamic_shapes=({0: Dim("batch")},))
    except Exception as error:  # noqa: BLE001 - every tracing failure is reported with its layer
        lines = describe_failure("torch.export", error, tracker.innermost(), operator_of(error))
        raise UserError("\n".join(lines)) from error
    torch.export.save(program, path)
    return {"exporter": "torch.export", "opset": None}


def load_program(path: str | os.PathLike[str]) -> nn.Module:
    """Loads a saved program as a callable module.

    Args:
        path: A ``.pt2`` file written by :func:`export_program`.

    Returns:
        The program's module.
    """
    return torch.export.load(path).module()
