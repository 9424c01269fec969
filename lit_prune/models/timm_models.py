"""Any timm model by name (``network: timm:resnet10t``), built with the class count of the data.

timm builds its models with factory functions (``timm.create_model``), which a YAML
``class_path`` cannot call with ``num_classes``; the ``timm:`` prefix of
:func:`lit_prune.models.create_model` is that route. Pretrained weights come from timm's hub
(``pretrained: true``, needs the network) or a local file (``checkpoint_path``).
"""

from __future__ import annotations

import timm
from torch import nn

from lit_prune.errors import UserError

__all__ = ["TIMM_PREFIX", "create_timm_model"]

TIMM_PREFIX = "timm:"


def create_timm_model(name: str, num_classes: int, **kwargs: object) -> nn.Module:
    """Builds ``timm.create_model(name, num_classes=num_classes, **kwargs)``.

    Args:
        name: A timm model name, e.g. ``resnet10t`` (see ``timm.list_models()``).
        num_classes: Size of the classifier output.
        **kwargs: Further options of the timm model (``pretrained``, ``drop_rate``, ``img_size`` ...).

    Returns:
        The network.

    Raises:
        UserError: If timm has no model of that name (the message lists close names).
    """
    if not timm.is_model(name):
        close = timm.list_models(f"*{name[:6]}*")[:8] if name else []
        hint = f"; close names: {', '.join(close)}" if close else ""
        raise UserError(
            f"timm has no model {name!r}{hint} (all names: python -c 'import timm; print(timm.list_models())')"
        )
    return timm.create_model(name, num_classes=num_classes, **kwargs)
