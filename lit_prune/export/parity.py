"""Parity of an exported model with PyTorch: how far its outputs are from the eager network's.

The check is elementwise, as ``numpy.allclose`` with one tolerance for both terms: every output
``y`` of the exported model must satisfy ``|y - y_eager| <= tolerance * (1 + |y_eager|)``, an
absolute bound for small logits and a relative one for large. The figures say how close it came.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["DEFAULT_TOLERANCE", "ParityResult", "compare_outputs"]

DEFAULT_TOLERANCE = 1e-4
"""Default tolerance: float32 exporters reorder sums, which moves ResNet/ViT logits by about 1e-6."""


@dataclass(frozen=True)
class ParityResult:
    """How the exported model's outputs compare with the eager network's on one batch.

    Attributes:
        batch_size: Images in the batch.
        max_abs_diff: Largest ``|y - y_eager|``.
        max_rel_diff: ``max_abs_diff`` over the largest ``|y_eager|``.
        max_scaled_diff: Largest ``|y - y_eager| / (1 + |y_eager|)``, the figure held against the tolerance.
        top1_agreement: Fraction of images whose arg-max class is the same.
        tolerance: The tolerance.
        passed: ``max_scaled_diff <= tolerance`` and the output shapes agree.
    """

    batch_size: int
    max_abs_diff: float
    max_rel_diff: float
    max_scaled_diff: float
    top1_agreement: float
    tolerance: float
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-serialisable dictionary."""
        return asdict(self)


def compare_outputs(exported: Tensor, eager: Tensor, tolerance: float = DEFAULT_TOLERANCE) -> ParityResult:
    """Compares the exported model's outputs with the eager network's.

    Args:
        exported: Outputs of the exported model, ``(batch, classes)``.
        eager: Outputs of the PyTorch network on the same inputs.
        tolerance: The tolerance, >= 0.

    Returns:
        The figures and whether they pass. Outputs of different shapes, or not finite, fail with
        infinite differences.
    """
    exported, eager = exported.detach().double().cpu(), eager.detach().double().cpu()
    if exported.shape != eager.shape or not bool(torch.isfinite(exported).all()):
        infinite = float("inf")
        return ParityResult(int(eager.shape[0]), infinite, infinite, infinite, 0.0, tolerance, False)
    difference = (exported - eager).abs()
    scale = float(eager.abs().max()) if eager.numel() else 0.0
    max_abs = float(difference.max()) if difference.numel() else 0.0
    scaled = float((difference / (1.0 + eager.abs())).max()) if difference.numel() else 0.0
    agreement = float((exported.argmax(dim=1) == eager.argmax(dim=1)).double().mean()) if eager.dim() == 2 else 1.0
    return ParityResult(
        batch_size=int(eager.shape[0]),
        max_abs_diff=max_abs,
        max_rel_diff=max_abs / scale if scale else max_abs,
        max_scaled_diff=scaled,
        top1_agreement=agreement,
        tolerance=tolerance,
        passed=scaled <= tolerance,
    )
