"""Export of a lit-prune network to ONNX or a ``torch.export`` program, with a parity check.

The package is split by job: :mod:`~lit_prune.export.rebuild` (a checkpoint's network rebuilt,
surgery replayed, masks applied), :mod:`~lit_prune.export.onnx` (the dynamo exporter with a
TorchScript fallback, onnxruntime sessions and their latency),
:mod:`~lit_prune.export.exported_program` (``torch.export`` save and load),
:mod:`~lit_prune.export.parity` (outputs compared against a tolerance),
:mod:`~lit_prune.export.failures` (the layer and operator an export failed at),
:mod:`~lit_prune.export.checked_export` (export, check, measure, write atomically) and
:mod:`~lit_prune.export.command` (``lit-prune export``). Nothing here imports Lightning.
"""

from lit_prune.export.checked_export import EXPORT_FORMATS, ExportRequest, ParityError, export_checked, report_path
from lit_prune.export.command import main
from lit_prune.export.onnx import OnnxRunner, export_onnx, onnxruntime_providers
from lit_prune.export.parity import DEFAULT_TOLERANCE, ParityResult, compare_outputs
from lit_prune.export.rebuild import RebuiltNetwork, rebuild_network

__all__ = [
    "DEFAULT_TOLERANCE",
    "EXPORT_FORMATS",
    "ExportRequest",
    "OnnxRunner",
    "ParityError",
    "ParityResult",
    "RebuiltNetwork",
    "compare_outputs",
    "export_checked",
    "export_onnx",
    "main",
    "onnxruntime_providers",
    "rebuild_network",
    "report_path",
]
