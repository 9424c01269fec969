"""Where a network's weights came from: a plain attribute on the module, read by the run report.

``ImageClassifier`` keeps ``checkpoint_path`` and ``pretrained`` out of its saved hyperparameters
(a checkpoint holds its own weights), so the report cannot learn the start weights from them.
The builders that load weights record the source on the network itself instead; it is an
ordinary attribute (not in the state dict), survives ``copy.deepcopy`` and in-place surgery.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

__all__ = ["RANDOM_INITIALISATION", "set_weights_source", "weights_source"]

_ATTRIBUTE = "lit_prune_weights_source"

RANDOM_INITIALISATION: dict[str, Any] = {
    "kind": "random",
    "description": "random initialisation of the model definition (seeded by seed_everything)",
}
"""The source of a network no builder loaded weights into."""


def set_weights_source(model: nn.Module, source: Mapping[str, Any]) -> None:
    """Records where the weights of ``model`` came from.

    Args:
        model: The network.
        source: JSON-ready description with at least ``kind`` (``"pretrained"`` or
            ``"checkpoint"``) and ``description`` (one readable line).

    Raises:
        ValueError: If ``kind`` or ``description`` is missing.
    """
    if not isinstance(source.get("kind"), str) or not isinstance(source.get("description"), str):
        raise ValueError(f"a weights source needs string entries 'kind' and 'description', got {dict(source)!r}")
    setattr(model, _ATTRIBUTE, dict(source))


def weights_source(model: nn.Module) -> dict[str, Any]:
    """Where the weights of ``model`` came from.

    Args:
        model: The network.

    Returns:
        A copy of the recorded source, or :data:`RANDOM_INITIALISATION` when none was recorded.
    """
    return dict(getattr(model, _ATTRIBUTE, None) or RANDOM_INITIALISATION)
