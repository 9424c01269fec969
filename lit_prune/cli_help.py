"""A ``--help`` a user can read: models and callbacks named at its top, no lists of every torch module."""

from __future__ import annotations

import re
from typing import Any

from jsonargparse import DefaultHelpFormatter

__all__ = [
    "SHORT_HELP_FORMATTER",
    "ShortHelpFormatter",
    "accepted_options",
    "callback_summaries",
    "describe_for_help",
    "remember_parser",
]

_MAX_LISTED_SUBCLASSES = 8
_SUBCLASS_LIST = re.compile(r", known subclasses: ([^)]*)")

# The parsers of the command being run, by subcommand, for the error report's suggestions.
_PARSERS: dict[str, Any] = {}


class ShortHelpFormatter(DefaultHelpFormatter):
    """jsonargparse's formatter, with long "known subclasses" lists replaced by their count.

    ``--model.network`` accepts any ``torch.nn.Module``, and the stock help lists all 1,300 of
    them that torch, torchvision and timm define; the options themselves are kept.
    """

    def _get_help_string(self, action: Any) -> str:
        text = super()._get_help_string(action)
        match = _SUBCLASS_LIST.search(text)
        if match is None:
            return text
        names = [name.strip() for name in match.group(1).split(",") if name.strip()]
        if len(names) <= _MAX_LISTED_SUBCLASSES:
            return text
        option = action.option_strings[-1] if action.option_strings else action.dest
        summary = f", {len(names)} known subclasses: see {option}.help CLASS_PATH"
        return text[: match.start()] + summary + text[match.end() :]


SHORT_HELP_FORMATTER = ShortHelpFormatter


def callback_summaries() -> dict[str, str]:
    """The callbacks a config can name (``callbacks.<Name>``) with the first line of their docstrings."""
    import callbacks

    summaries = {}
    for name in callbacks.__all__:
        doc = (getattr(callbacks, name).__doc__ or "").strip()
        summaries[name] = doc.splitlines()[0] if doc else ""
    return summaries


def describe_for_help(subcommand: str | None = None) -> str:
    """The description at the top of ``lit-prune --help`` and ``lit-prune fit --help``."""
    from lit_prune.models import list_models

    callbacks = ", ".join(f"callbacks.{name}" for name in callback_summaries())
    intro = (
        "Train, prune, fine-tune and profile image classifiers from one YAML file "
        "(lit-prune fit --config configs/X.yaml)."
        if subcommand is None
        else "Train, prune and fine-tune from one YAML file; the report is written at the end."
    )
    return (
        f"{intro} Models (--model.network NAME; `lit-prune models` lists them with sizes): "
        f"{', '.join(list_models())}; any torch.nn.Module through class_path, timm models as timm:NAME. "
        f"Pruning and profiling callbacks (trainer.callbacks, `lit-prune callbacks` for what each does): {callbacks}. "
        "Other commands: lit-prune report RUN_DIR... [--output DIR]; lit-prune sweep; "
        "lit-prune export --ckpt_path CKPT --format onnx|exported_program --output FILE; lit-prune models; "
        "lit-prune callbacks. Add --debug for full tracebacks."
    )


def remember_parser(subcommand: str, parser: Any) -> None:
    """Keeps a subcommand's parser so an error report can list the options it accepts."""
    _PARSERS[subcommand] = parser


def accepted_options(subcommand: str) -> list[str]:
    """The long options of ``subcommand``'s parser, if the command built it."""
    parser = _PARSERS.get(subcommand)
    if parser is None:
        return []
    options = []
    for action in parser._actions:
        options.extend(option for option in action.option_strings if option.startswith("--"))
    return sorted(set(options))
