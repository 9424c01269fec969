"""Model registry: build any supported network by name, optionally from a weight file.

A builder is a function ``builder(num_classes: int, **options) -> nn.Module`` registered with
:func:`register_model`. :func:`create_model` validates the name, the class count and the
options against the builder's signature, builds the network and, given ``checkpoint_path``,
loads it strictly through :func:`~lit_prune.models.checkpoint.load_state_dict_checked`. A
builder that declares its own ``checkpoint_path`` parameter (ViT-Tiny, whose files may be
ImageNet-pretrained backbones) receives the path and handles the loading itself. A
``checkpoint_path`` takes precedence over a builder's ``pretrained=True`` (nothing is downloaded).
The network records where its weights came from (:mod:`lit_prune.models.provenance`).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import TypeVar

from torch import nn

from lit_prune.errors import UserError
from lit_prune.models.checkpoint import load_state_dict_checked, read_state_dict
from lit_prune.models.provenance import set_weights_source
from lit_prune.models.timm_models import TIMM_PREFIX, create_timm_model

__all__ = ["ModelBuilder", "create_model", "list_models", "register_model"]

ModelBuilder = Callable[..., nn.Module]
_BuilderT = TypeVar("_BuilderT", bound=ModelBuilder)

_REGISTRY: dict[str, ModelBuilder] = {}
_RESERVED_OPTIONS = ("num_classes", "checkpoint_path")


def register_model(name: str) -> Callable[[_BuilderT], _BuilderT]:
    """Registers a model builder under ``name`` (decorator).

    Args:
        name: Registry name, e.g. ``"resnet20"``.

    Returns:
        A decorator that records the builder and returns it unchanged.

    Raises:
        TypeError: If ``name`` is not a string or the decorated object is not callable.
        ValueError: If ``name`` is empty or already registered.
    """
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    if not name:
        raise ValueError("model name must be a non-empty string")
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered; registered names: {list_models()}")

    def decorator(builder: _BuilderT) -> _BuilderT:
        if not callable(builder):
            raise TypeError(f"register_model({name!r}) needs a callable builder, got {type(builder).__name__}")
        if "num_classes" not in inspect.signature(builder).parameters:
            raise TypeError(f"builder for {name!r} must take a 'num_classes' argument")
        _REGISTRY[name] = builder
        return builder

    return decorator


def list_models() -> list[str]:
    """Returns the registered model names, sorted."""
    return sorted(_REGISTRY)


def create_model(
    name: str,
    num_classes: int = 10,
    checkpoint_path: str | os.PathLike[str] | None = None,
    **kwargs: object,
) -> nn.Module:
    """Builds the registered network ``name``.

    Args:
        name: A name from :func:`list_models`, or ``timm:NAME`` for any timm model
            (:mod:`lit_prune.models.timm_models`).
        num_classes: Size of the classifier output; at least 1.
        checkpoint_path: Optional weight file (a raw state dict, or a dict with a
            ``"state_dict"`` entry whose keys may carry a ``network.``/``model.`` prefix),
            loaded with strict key and shape checking. For ``vit_tiny`` the file may also be an
            ImageNet-pretrained timm backbone (see :func:`lit_prune.models.vit.vit_tiny`).
        **kwargs: Model-specific options, e.g. ``image_size`` for ``vit_tiny``, or
            ``pretrained=True`` for the published CIFAR weights of the CIFAR ResNets and VGG-BNs
            (:mod:`lit_prune.models.pretrained`).

    Returns:
        The network, in training mode.

    Raises:
        UserError: If ``name`` is unknown (the message lists the registered names and the routes
            for other modules).
        ValueError: If ``num_classes < 1``, or if the checkpoint does not match the network.
        TypeError: If ``num_classes`` is not an int or an option is not accepted by the model.
        FileNotFoundError: If ``checkpoint_path`` does not exist.
    """
    if isinstance(name, str) and name.startswith(TIMM_PREFIX):
        return _create_timm(name.removeprefix(TIMM_PREFIX), num_classes, checkpoint_path, kwargs)
    if name not in _REGISTRY:
        raise UserError(
            f"unknown model {name!r}; registered models: {', '.join(list_models())}.\n"
            "Any torch.nn.Module works through class_path, e.g. network: {class_path: "
            "torchvision.models.mobilenet_v3_small, init_args: {num_classes: 10}};\n"
            "timm models by name: network: timm:NAME (e.g. timm:resnet10t)."
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise TypeError(f"num_classes must be an int >= 1, got {type(num_classes).__name__}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    builder = _REGISTRY[name]
    _check_options(name, builder, kwargs)
    if _takes_checkpoint_path(builder):
        model = builder(num_classes=num_classes, checkpoint_path=checkpoint_path, **kwargs)
    else:
        if checkpoint_path is not None and kwargs.get("pretrained"):
            kwargs = {**kwargs, "pretrained": False}
        model = builder(num_classes=num_classes, **kwargs)
        if checkpoint_path is not None:
            load_state_dict_checked(model, read_state_dict(checkpoint_path))
    if checkpoint_path is not None:
        set_weights_source(
            model, {"kind": "checkpoint", "description": f"checkpoint {checkpoint_path}", "path": str(checkpoint_path)}
        )
    return model


def _create_timm(
    name: str, num_classes: int, checkpoint_path: str | os.PathLike[str] | None, options: dict[str, object]
) -> nn.Module:
    model = create_timm_model(name, num_classes=num_classes, **options)
    if checkpoint_path is not None:
        load_state_dict_checked(model, read_state_dict(checkpoint_path))
        set_weights_source(
            model, {"kind": "checkpoint", "description": f"checkpoint {checkpoint_path}", "path": str(checkpoint_path)}
        )
    return model


def _takes_checkpoint_path(builder: ModelBuilder) -> bool:
    return "checkpoint_path" in inspect.signature(builder).parameters


def _check_options(name: str, builder: ModelBuilder, options: dict[str, object]) -> None:
    parameters = inspect.signature(builder).parameters.values()
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
        return
    accepted = [
        parameter.name
        for parameter in parameters
        if parameter.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and parameter.name not in _RESERVED_OPTIONS
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(
            f"model {name!r} does not accept the option(s) {unknown}; "
            f"accepted options: {accepted if accepted else 'none'}"
        )
