"""Options that lit-prune renamed, refused under their old names with an error that names the new one.

The amount to prune has one name per concept (``docs/extending.md``, "Words"): ``target_sparsity``
for the fraction of weights that end up zero, ``fraction_of_remaining`` for the fraction of the
surviving weights one step or round removes, ``removed_fraction`` for the fraction of a model's
parameters structured pruning removes, ``channel_fraction`` for the fraction of channels, and a
stage's ``fraction_of_target`` for the share of ``target_sparsity`` it reaches.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from lit_prune.errors import UserError

__all__ = ["RENAMED_OPTIONS", "refuse_renamed_options", "renamed_option_error"]

RENAMED_OPTIONS: Mapping[str, str] = {
    "final_sparsity": "target_sparsity",
    "prune_fraction": "fraction_of_remaining",
    "fraction_per_step": "fraction_of_remaining",
    "param_fraction": "removed_fraction",
    "ratio": "channel_fraction",
    "ratios": "channel_fraction",
    "method": "score",
    "criterion": "score",
    "taylor_batches": "calibration_batches",
}
"""Old option name to the name that replaced it."""

_REJECTED = re.compile(r"(?:\(([\w.]+)\): )?Option '(\w+)' is not accepted")
"""jsonargparse's words for an option a class does not take, with the class when it names one."""


def _message(owner: str, old: str) -> str:
    """``LotteryTicket: final_sparsity was renamed target_sparsity ...``."""
    return f"{owner}: {old} was renamed {RENAMED_OPTIONS[old]} (docs/extending.md lists the names of the options)"


def refuse_renamed_options(owner: str, given: Mapping[str, Any]) -> None:
    """Refuses options that a class no longer accepts, naming the new name of a renamed one.

    Args:
        owner: The class the options were given to.
        given: The keyword arguments it did not take.

    Raises:
        UserError: If one of them is a renamed option.
        TypeError: If one of them is unknown, as Python would say.
    """
    for name in given:
        if name in RENAMED_OPTIONS:
            raise UserError(_message(owner, name))
    if given:
        raise TypeError(f"{owner}.__init__() got an unexpected keyword argument {next(iter(given))!r}")


def renamed_option_error(parser_message: str) -> UserError | None:
    """The error naming the new option when a parser rejected an option under its old name.

    Args:
        parser_message: jsonargparse's message for a rejected option (``Option 'ratio' is not
            accepted``, after the class it was given to when the message names one).

    Returns:
        A :class:`UserError` to raise instead, or None when the rejected option was not renamed.
    """
    match = _REJECTED.search(parser_message)
    if match is None or match.group(2) not in RENAMED_OPTIONS:
        return None
    owner = (match.group(1) or "lit-prune").rsplit(".", 1)[-1]
    return UserError(_message(owner, match.group(2)))
