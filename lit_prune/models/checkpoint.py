"""Reading weight files and loading them strictly, with errors that say what does not match.

``torch.nn.Module.load_state_dict`` reports shape mismatches as a long ``RuntimeError`` and
stops at the first kind of problem. :func:`load_state_dict_checked` compares keys and shapes
first and raises one ``ValueError`` naming every mismatched, missing and unexpected key, so a
checkpoint of the wrong model, the wrong number of classes or a pruned (shrunken) network is
diagnosed in one read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn

from lit_prune.torch_files import load_torch_file

__all__ = ["describe_state_dict_mismatch", "load_state_dict_checked", "read_state_dict"]

_WRAPPER_KEYS = ("state_dict", "model")
_WRAPPER_PREFIXES = ("network.", "model.", "module.")


def describe_state_dict_mismatch(model: nn.Module, state_dict: Mapping[str, Tensor]) -> str:
    """Describes how ``state_dict`` differs from ``model.state_dict()`` in keys and shapes.

    Args:
        model: The network the weights are meant for.
        state_dict: Parameter/buffer name to tensor, as read from a checkpoint.

    Returns:
        An empty string when every key is present on both sides with the same shape;
        otherwise one line per problem: shape mismatches (checkpoint vs model), missing keys
        (in the model, not in the checkpoint) and unexpected keys (in the checkpoint only).
    """
    expected = model.state_dict()
    lines = []
    for key in sorted(set(expected) & set(state_dict)):
        model_shape = _shape_of(expected[key])
        checkpoint_shape = _shape_of(state_dict[key])
        if model_shape != checkpoint_shape:
            lines.append(f"shape mismatch for {key}: checkpoint {checkpoint_shape} vs model {model_shape}")
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing:
        lines.append(f"missing keys (in the model, not in the checkpoint): {', '.join(missing)}")
    if unexpected:
        lines.append(f"unexpected keys (in the checkpoint, not in the model): {', '.join(unexpected)}")
    return "\n".join(lines)


def load_state_dict_checked(model: nn.Module, state_dict: Mapping[str, Tensor]) -> None:
    """Loads ``state_dict`` into ``model`` strictly, after checking every key and shape.

    Args:
        model: The network to load into (modified in place).
        state_dict: Parameter/buffer name to tensor with plain keys (``layer1.0.conv1.weight``).

    Raises:
        TypeError: If ``state_dict`` is not a mapping.
        ValueError: If any key is missing or unexpected or any shape differs; the message
            names every such key, with both shapes for a mismatch (checkpoint vs model).
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of name to tensor, got {type(state_dict).__name__}")
    mismatch = describe_state_dict_mismatch(model, state_dict)
    if mismatch:
        raise ValueError(
            f"checkpoint does not match {type(model).__name__}; strict loading needs the same keys "
            f"and shapes:\n{mismatch}"
        )
    model.load_state_dict(state_dict, strict=True)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Reads a state dict from a file written with ``torch.save``.

    Accepted layouts: a raw state dict; a dict holding it under ``"state_dict"`` (Lightning
    checkpoints) or ``"model"`` (timm/DeiT training checkpoints). Keys that all share one
    wrapper prefix (``network.``, ``model.`` or ``module.``, as a LightningModule attribute or
    DDP adds) have it removed, repeatedly, so the keys come back plain.

    Args:
        path: File to read. It is loaded with ``weights_only=True`` (no arbitrary code runs).

    Returns:
        Name to tensor with plain keys, on the CPU.

    Raises:
        TypeError: If ``path`` is not a string or path.
        FileNotFoundError: If ``path`` does not exist or is not a file.
        UserError: If the file cannot be read as tensors only (the message says why: empty,
            cut short, not written by ``torch.save``, pickled objects).
        ValueError: If the file holds no state dict.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"checkpoint path must be a string or os.PathLike, got {type(path).__name__}")
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"checkpoint file not found: {str(file)!r}; pass the path of a file written with "
            "torch.save(model.state_dict(), PATH) or a Lightning checkpoint"
        )
    content = load_torch_file(file, what="checkpoint_path")
    return _strip_wrapper_prefixes(_unwrap(content, file))


def _unwrap(content: object, file: Path) -> dict[str, Tensor]:
    if not isinstance(content, Mapping):
        raise ValueError(
            f"{str(file)!r} holds a {type(content).__name__}, not a state dict; expected a mapping "
            f"of name to tensor or a dict with one of the keys {list(_WRAPPER_KEYS)}"
        )
    for wrapper_key in _WRAPPER_KEYS:
        if isinstance(content.get(wrapper_key), Mapping):
            content = content[wrapper_key]
            break
    not_tensors = sorted(str(key) for key, value in content.items() if not isinstance(value, Tensor))
    if not content or not_tensors:
        raise ValueError(
            f"{str(file)!r} holds no state dict: expected a non-empty mapping of name to tensor, "
            f"or a dict with one of the keys {list(_WRAPPER_KEYS)}; entries that are not tensors: "
            f"{not_tensors}"
        )
    return dict(content)


def _strip_wrapper_prefixes(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if all(key.startswith(prefix) and len(key) > len(prefix) for key in state_dict):
                state_dict = {key[len(prefix) :]: value for key, value in state_dict.items()}
                stripped = True
    return state_dict


def _shape_of(value: object) -> tuple[int, ...] | str:
    if isinstance(value, Tensor):
        return tuple(value.shape)
    return type(value).__name__
