"""Config files that name their bases: ``bases: [base/trainer.yaml, base/data/cifar10.yaml]``.

An experiment's YAML holds only what differs from the shared blocks in ``configs/base/``; its
``bases`` key lists them, as paths relative to the file that names them, each of which may name
bases of its own. The file is composed in order, each base under the next and the experiment
last, with the rules LightningCLI applies to several ``--config`` files:

- mappings merge key by key, recursively;
- a mapping with a ``class_path`` replaces one with a different ``class_path`` entirely (the
  ``init_args`` of another class do not carry over), and merges into one with the same class
  or into a mapping given without ``class_path``;
- anything else (a number, a string, a list such as ``trainer.callbacks``, ``null``) replaces.

:func:`expand_config_arguments` turns ``--config FILE`` of such a file into ``--config`` with the
composed YAML, so ``lit-prune fit --config configs/e1_oneshot_resnet20_cifar10.yaml`` runs the
whole experiment; :func:`compose_config` gives the composed mapping to code that reads configs.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from lit_prune.errors import UserError

__all__ = ["BASES_KEY", "compose_config", "expand_config_arguments", "merge_config"]

BASES_KEY = "bases"
"""The top-level key of a config file that lists the files it is composed on."""

_CONFIG_FLAGS = ("--config", "-c")


def merge_config(base: Any, override: Any) -> Any:
    """The config ``override`` laid over ``base``, by the rules in the module docstring.

    Neither argument is modified.
    """
    if not (isinstance(base, Mapping) and isinstance(override, Mapping)):
        return copy.deepcopy(override)
    if "class_path" in base and "class_path" in override and base["class_path"] != override["class_path"]:
        return copy.deepcopy(dict(override))
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        merged[key] = merge_config(merged[key], value) if key in merged else copy.deepcopy(value)
    return merged


def compose_config(path: str | Path) -> dict[str, Any]:
    """The content of a config file with its bases composed under it, without the ``bases`` key.

    Args:
        path: The config file.

    Returns:
        The composed config (the file's own content when it names no bases).

    Raises:
        UserError: If the file or a base is missing or not a YAML mapping, ``bases`` is not a
            list of paths, or the bases name each other in a cycle.
    """
    return _compose(Path(path), ())


def expand_config_arguments(args: Sequence[str]) -> list[str]:
    """The command line with each ``--config FILE`` that names bases given as its composed YAML.

    ``--config FILE``, ``--config=FILE`` and ``-c FILE`` are recognised; a file without ``bases``,
    a config given as YAML text and every other argument pass through unchanged.

    Raises:
        UserError: As :func:`compose_config`, for a file that names bases.
    """
    expanded: list[str] = []
    index = 0
    while index < len(args):
        word = args[index]
        flag, value = _config_flag(word)
        if flag is not None and value is None and index + 1 < len(args):
            index += 1
            value = args[index]
        if flag is not None and value is not None:
            expanded.extend([flag, _composed_text(value)])
        else:
            expanded.append(word)
        index += 1
    return expanded


def _config_flag(word: str) -> tuple[str | None, str | None]:
    """(``--config``, the value when given as ``--config=VALUE``) for a config flag, else (None, None)."""
    for flag in _CONFIG_FLAGS:
        if word == flag:
            return flag, None
        if word.startswith(flag + "="):
            return flag, word[len(flag) + 1 :]
    return None, None


def _composed_text(value: str) -> str:
    """The composed YAML of a config file that names bases; the value itself otherwise."""
    path = Path(value)
    if "\n" in value or not path.is_file():
        return value
    content = _read_mapping(path, path)
    if BASES_KEY not in content:
        return value
    return yaml.safe_dump(compose_config(path), sort_keys=False, default_flow_style=False)


def _compose(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain, resolved))
        raise UserError(f"config bases form a cycle: {cycle}; a base must not name a file that names it")
    content = _read_mapping(path, chain[-1] if chain else path)
    bases = content.pop(BASES_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(base, str) for base in bases):
        raise UserError(
            f"{path}: '{BASES_KEY}' must be a list of config files (paths relative to {path.parent}), got {bases!r}"
        )
    composed: dict[str, Any] = {}
    for base in bases:
        base_path = path.parent / base
        if not base_path.is_file():
            raise UserError(
                f"{path} names the base '{base}', which does not exist (looked for {base_path}); "
                f"bases are paths relative to the file that names them"
            )
        composed = merge_config(composed, _compose(base_path, (*chain, resolved)))
    return merge_config(composed, content)


def _read_mapping(path: Path, named_by: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise UserError(f"{path} is not valid YAML: {error}") from None
    if content is None:
        content = {}
    if not isinstance(content, dict):
        origin = "" if named_by == path else f" (a base of {named_by})"
        raise UserError(f"{path}{origin} must hold a YAML mapping of options, got {type(content).__name__}")
    return content
