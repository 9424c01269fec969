"""Checks of user options, shared by the callbacks, data modules and the pruning core.

Each check returns the value it accepted (a fraction as a ``float``) and otherwise raises with
a message that names the option, says what is wrong with the value and what is allowed. A value
of the wrong type raises :class:`~lit_prune.errors.UserTypeError` (also a ``TypeError``), a value
out of range :class:`~lit_prune.errors.UserError` (also a ``ValueError``): the ``lit-prune``
command reports both as user errors (exit status 2). A missing file raises
``FileNotFoundError``, which the command reports the same way.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from lit_prune.errors import UserError, UserTypeError

__all__ = [
    "check_bool",
    "check_choice",
    "check_file",
    "check_fraction",
    "check_fraction_levels",
    "check_int",
    "check_number",
    "check_pattern_fractions",
]


def check_bool(value: object, name: str) -> bool:
    """Accepts ``True`` or ``False`` only (not 0, 1 or ``"yes"``).

    Raises:
        UserTypeError: If ``value`` is not a bool.
    """
    if not isinstance(value, bool):
        raise UserTypeError(f"{name} must be true or false, got {value!r}")
    return value


def check_int(
    value: object, name: str, minimum: int | None = 0, *, optional: bool = False, meaning: str = ""
) -> int | None:
    """Accepts an integer of at least ``minimum`` (not a bool, not a float such as ``2.0``).

    Args:
        value: The option's value.
        name: The option's name, as the user writes it.
        minimum: The smallest allowed value; None allows any integer.
        optional: Also accept None (the option not given).
        meaning: What the option means, added to the message in parentheses.

    Returns:
        ``value``.

    Raises:
        UserTypeError: If ``value`` is not an integer.
        UserError: If it is below ``minimum``.
    """
    if optional and value is None:
        return None
    allowed = "an integer" + ("" if minimum is None else f" >= {minimum}") + (" or null" if optional else "")
    message = f"{name} must be {allowed}{_meaning(meaning)}, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserTypeError(message)
    if minimum is not None and value < minimum:
        raise UserError(message)
    return value


def check_number(
    value: object, name: str, minimum: float | None = None, *, positive: bool = False, meaning: str = ""
) -> float:
    """Accepts a finite real number, at least ``minimum`` or, with ``positive``, above 0.

    Raises:
        UserTypeError: If ``value`` is not a real number.
        UserError: If it is not finite or out of range.
    """
    if positive:
        allowed = "a positive number"
    else:
        allowed = "a number" + ("" if minimum is None else f" >= {minimum:g}")
    message = f"{name} must be {allowed}{_meaning(meaning)}, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserTypeError(message)
    if not math.isfinite(value) or (positive and value <= 0) or (minimum is not None and value < minimum):
        raise UserError(message)
    return float(value)


def check_fraction(value: object, name: str, *, zero: bool = True, one: bool = False, meaning: str = "") -> float:
    """Accepts a number between 0 and 1; whether each end is allowed is up to the option.

    Args:
        value: The option's value.
        name: The option's name.
        zero: Allow 0 (the interval starts ``[0``, else ``(0``).
        one: Allow 1 (the interval ends ``1]``, else ``1)``).
        meaning: What the fraction is of, added to the message in parentheses.

    Returns:
        ``value`` as a float.

    Raises:
        UserTypeError: If ``value`` is not a real number.
        UserError: If it lies outside the interval.
    """
    interval = f"{'[' if zero else '('}0, 1{']' if one else ')'}"
    message = f"{name} must be a number in {interval}{_meaning(meaning)}, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserTypeError(message)
    if not ((0.0 <= value if zero else 0.0 < value) and (value <= 1.0 if one else value < 1.0)):
        raise UserError(message)
    return float(value)


def check_sparsity(value: object, name: str = "sparsity") -> float:
    """Accepts a sparsity a pruning step may request: the fraction of weights that are zero, in [0, 1).

    Raises:
        UserTypeError: If ``value`` is not a real number.
        UserError: If it lies outside ``[0, 1)`` (1 would remove every weight).
    """
    return check_fraction(value, name, meaning="the fraction of weights set to zero; 1 would remove every weight")


def check_fraction_levels(values: object, name: str, example: Sequence[float]) -> list[float]:
    """Accepts a non-empty list of distinct fractions in ``[0, 1)``, such as probed sparsities.

    Args:
        values: The option's value.
        name: The option's name.
        example: A valid value, shown in the message.

    Returns:
        The fractions, sorted increasingly.

    Raises:
        UserError: If ``values`` is not a non-empty list, or repeats a value.
        UserTypeError: If an entry is not a number.
    """
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise UserError(f"{name} must be a non-empty list of fractions in [0, 1), e.g. {list(example)}, got {values!r}")
    levels = sorted(check_fraction(value, f"each of {name}") for value in values)
    if len(set(levels)) != len(levels):
        raise UserError(f"{name} must not repeat a value, got {list(values)}")
    return levels


def check_pattern_fractions(
    value: object, name: str, example: str, *, one: bool = False, meaning: str = ""
) -> dict[str, float]:
    """Accepts a non-empty mapping of name pattern to a fraction in ``[0, 1)`` (``[0, 1]`` with ``one``).

    Args:
        value: The option's value.
        name: The option's name.
        example: A valid value as the user would write it, shown in the message.
        one: Allow a fraction of 1.
        meaning: What each fraction is of.

    Returns:
        The mapping, with float fractions, in the user's order.

    Raises:
        UserError: If ``value`` is not a non-empty mapping, or a fraction is out of range.
        UserTypeError: If a pattern is not a string or a fraction not a number.
    """
    if not isinstance(value, Mapping) or not value:
        raise UserError(
            f"{name} must be a non-empty mapping of name pattern to fraction, e.g. {example}, got {value!r}"
        )
    checked = {}
    for pattern, fraction in value.items():
        if not isinstance(pattern, str):
            raise UserTypeError(f"the patterns of {name} must be strings, got {pattern!r}")
        checked[pattern] = check_fraction(fraction, f"{name}[{pattern!r}]", one=one, meaning=meaning)
    return checked


def check_choice(value: object, name: str, choices: Collection[str]) -> str:
    """Accepts one of ``choices``.

    Raises:
        UserError: If ``value`` is not one of them.
    """
    if not isinstance(value, str) or value not in choices:
        raise UserError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_file(value: object, name: str, hint: str) -> Path:
    """Accepts the path of a file that exists.

    Args:
        value: The option's value.
        name: The option's name.
        hint: How to get the file, or what to give instead.

    Returns:
        The path.

    Raises:
        UserTypeError: If ``value`` is not a path.
        FileNotFoundError: If there is no file at the path.
    """
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise UserTypeError(f"{name} must be the path of a file, got {value!r}")
    path = Path(value)
    if not path.is_file():
        raise FileNotFoundError(f"{name} {str(path)!r} does not exist; {hint}")
    return path


def _meaning(meaning: str) -> str:
    return f" ({meaning})" if meaning else ""
