"""Rebuilding the network of a lit-prune checkpoint, in plain PyTorch, for export.

A checkpoint that ``ImageClassifier`` wrote holds the recipe of its network (``hyper_parameters``:
``network``, ``num_classes``, ``network_kwargs``), its weights (``state_dict`` under the
``network.`` prefix) and its pruning state (``pruning``: mask, surgery history, stages). The
network is built afresh from the model registry, the surgery history is replayed so a shrunken
network gets its small shapes (:func:`lit_prune.pruning.surgery_history.replay_history`), the
weights load strictly, and a mask is applied once more, so a masked network is dense with exact
zeros. This is the same order ``ImageClassifier.on_load_checkpoint`` follows; it needs no Lightning.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from torch import Tensor, nn

from lit_prune.errors import UserError
from lit_prune.models import create_model
from lit_prune.models.checkpoint import load_state_dict_checked
from lit_prune.pruning import PruningMask
from lit_prune.pruning.surgery_history import check_history, replay_history
from lit_prune.torch_files import load_torch_file

__all__ = ["RebuiltNetwork", "rebuild_network"]

_PREFIX = "network."
_CHANNELS = 3
_DEFAULT_IMAGE_SIZE = 32
_RUN_CONFIG = "config.yaml"


@dataclass
class RebuiltNetwork:
    """A checkpoint's network, rebuilt, in evaluation mode, with what the export records of it.

    Attributes:
        network: The network with the checkpoint's shapes and weights (masked weights exactly zero).
        model: The registry name it was built from.
        num_classes: Classes of its output.
        network_kwargs: The architecture options it was built with.
        epoch: The checkpoint's epoch (``None`` when it records none).
        global_step: The checkpoint's global step.
        surgery_records: How many structured surgeries were replayed.
        mask_sparsity: The pruned fraction of the masked weights, ``None`` without a mask.
        input_shape: One input image's shape, ``(channels, height, width)``.
        input_source: Where ``input_shape`` came from.
    """

    network: nn.Module
    model: str
    num_classes: int
    network_kwargs: dict[str, Any] = field(default_factory=dict)
    epoch: int | None = None
    global_step: int | None = None
    surgery_records: int = 0
    mask_sparsity: float | None = None
    input_shape: tuple[int, int, int] = (_CHANNELS, _DEFAULT_IMAGE_SIZE, _DEFAULT_IMAGE_SIZE)
    input_source: str = ""


def rebuild_network(checkpoint_path: str | os.PathLike[str]) -> RebuiltNetwork:
    """Rebuilds the network of a checkpoint written by ``ImageClassifier`` (any lit-prune run).

    The input shape is taken, in this order, from the architecture options (``image_size`` of
    ``network_kwargs``, which a ViT is built for), from the run's ``config.yaml`` beside the
    ``checkpoints/`` folder (``data.init_args.image_size``), and otherwise is the CIFAR shape
    3 x 32 x 32 that every registry model takes by default.

    Args:
        checkpoint_path: The ``.ckpt`` file.

    Returns:
        The network in evaluation mode on the CPU, with its description.

    Raises:
        UserError: If the file is missing or unreadable, is not a lit-prune checkpoint (the
            message names what is missing), or its weights do not fit the rebuilt network.
    """
    what = "--ckpt_path"
    checkpoint = load_torch_file(checkpoint_path, what=what)
    hparams = _lit_prune_parts(checkpoint, str(checkpoint_path))
    name, num_classes = hparams["network"], int(hparams.get("num_classes", 10))
    options = dict(hparams.get("network_kwargs") or {})
    state = checkpoint["pruning"] or {}
    try:
        network = create_model(name, num_classes=num_classes, **options)
        history = check_history(state.get("surgery") or [])
        replay_history(network, history)
        load_state_dict_checked(network, _network_weights(checkpoint["state_dict"]))
        mask = None if state.get("mask") is None else PruningMask.from_state_dict(state["mask"])
        if mask is not None:
            mask.validate(network)
            mask.apply_(network)
    except UserError:
        raise
    except (TypeError, ValueError) as error:
        raise UserError(f"{what}: {str(checkpoint_path)!r} does not rebuild into {name}: {error}") from error
    shape, source = _input_shape(Path(checkpoint_path), options)
    return RebuiltNetwork(
        network=network.eval(),
        model=name,
        num_classes=num_classes,
        network_kwargs=options,
        epoch=checkpoint.get("epoch"),
        global_step=checkpoint.get("global_step"),
        surgery_records=len(history),
        mask_sparsity=None if mask is None else mask.sparsity(),
        input_shape=shape,
        input_source=source,
    )


def _lit_prune_parts(checkpoint: Any, path: str) -> Mapping[str, Any]:
    """The module's hyperparameters, after checking that the file is a lit-prune checkpoint."""
    intro = f"--ckpt_path: {path!r} is not a lit-prune checkpoint"
    if not isinstance(checkpoint, Mapping):
        raise UserError(f"{intro}: it holds a {type(checkpoint).__name__}, not a Lightning checkpoint")
    missing = [key for key in ("state_dict", "hyper_parameters", "pruning") if key not in checkpoint]
    if missing:
        raise UserError(
            f"{intro}: it lacks {', '.join(repr(key) for key in missing)}; export a checkpoint that "
            "lit-prune fit wrote (lightning_logs/<name>/version_<n>/checkpoints/*.ckpt)"
        )
    hparams = checkpoint["hyper_parameters"]
    network = hparams.get("network") if isinstance(hparams, Mapping) else None
    if not isinstance(network, str):
        raise UserError(
            f"{intro} of a registry model: hyper_parameters has no model name under 'network' (a network "
            "given as a module through class_path has no recipe to rebuild it from)"
        )
    return hparams


def _network_weights(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The network's entries of the module's state dict, with plain names."""
    return {key.removeprefix(_PREFIX): value for key, value in state_dict.items() if key.startswith(_PREFIX)}


def _input_shape(checkpoint_path: Path, options: Mapping[str, Any]) -> tuple[tuple[int, int, int], str]:
    """One input image's shape and where it came from."""
    if isinstance(options.get("image_size"), int):
        size = options["image_size"]
        return (_CHANNELS, size, size), "network_kwargs.image_size of the checkpoint"
    config = checkpoint_path.resolve().parent.parent / _RUN_CONFIG
    size = _configured_image_size(config) if checkpoint_path.resolve().parent.name == "checkpoints" else None
    if size is not None:
        return (_CHANNELS, size, size), f"data image_size in the run's {config}"
    return (_CHANNELS, _DEFAULT_IMAGE_SIZE, _DEFAULT_IMAGE_SIZE), "the registry models' default CIFAR input"


def _configured_image_size(config: Path) -> int | None:
    """``image_size`` of the data module in a run's ``config.yaml``, if it names one."""
    if not config.is_file():
        return None
    try:
        content = yaml.safe_load(config.read_text())
    except (OSError, yaml.YAMLError):
        return None
    data = content.get("data") if isinstance(content, Mapping) else None
    if not isinstance(data, Mapping):
        return None
    arguments = data.get("init_args") if isinstance(data.get("init_args"), Mapping) else data
    size = arguments.get("image_size")
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None
