"""How the ``lit-prune`` command reports a failure: a few lines and an exit status.

Exit status 2 is a user error: an option value the parser or a class rejects, a file that is
missing or unreadable, an unknown name, data that is not there. Status 1 is anything else, a
failure of the program. The message is the one the code raised (the innermost lit-prune message
when errors are chained), cut to a few lines; ``--debug`` or ``LIT_PRUNE_DEBUG=1`` adds the
traceback.
"""

from __future__ import annotations

import difflib
import importlib
import re
import sys
import textwrap
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from jsonargparse import ArgumentError, ArgumentParser
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback

from lit_prune.errors import UserError

__all__ = [
    "CommandProgress",
    "PhaseTracker",
    "class_options",
    "condense_parser_message",
    "exit_status",
    "report_failure",
]

USER_ERROR = 2
FAILURE = 1
INTERRUPTED = 130
_MAX_MESSAGE_LINES = 8
_WIDTH = 120
_MAX_SUGGESTIONS = 12

# Problems in what the user gave, whenever they surface.
_USER_ERRORS = (
    UserError,
    ArgumentError,
    MisconfigurationException,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    ConnectionError,
)
# Raised while the config is parsed and its classes are built (the argument checks of the
# model, data module and callbacks), or by lit-prune's own checks while the run is set up
# (a callback that finds trainer settings it cannot work with).
_CONFIG_ERRORS = (ValueError, TypeError, KeyError, ImportError, AttributeError)


@dataclass
class CommandProgress:
    """How far a command got: ``parse``, ``instantiate`` (classes being built), ``setup`` (the
    trainer prepares data, callbacks and model) or ``run`` (the first batch has started).

    Attributes:
        phase: The current phase.
        log_dir: The run directory the command's logger writes into, once known.
        log_dir_existed: Whether that directory existed before the command (a resumed run).
    """

    phase: str = "parse"
    log_dir: Path | None = None
    log_dir_existed: bool = False


def exit_status(error: BaseException, phase: str) -> int:
    """2 for a user error, 130 for Ctrl-C, 1 for anything else (see the module docstring)."""
    if isinstance(error, KeyboardInterrupt):
        return INTERRUPTED
    chain = list(_chain(error))
    if any(isinstance(link, _USER_ERRORS) for link in chain):
        return USER_ERROR
    if phase in ("parse", "instantiate") and isinstance(error, _CONFIG_ERRORS):
        return USER_ERROR
    relevant = _most_relevant(error)
    if phase == "setup" and isinstance(relevant, _CONFIG_ERRORS) and _raised_in_project(relevant):
        return USER_ERROR
    return FAILURE


def report_failure(error: BaseException, progress: CommandProgress, debug: bool, command: Sequence[str]) -> int:
    """Prints the failure on standard error and returns the exit status.

    Args:
        error: What the command raised.
        progress: How far it got.
        debug: Print the full traceback too.
        command: The command line, to suggest accepted options for an unknown one.

    Returns:
        The exit status.
    """
    status = exit_status(error, progress.phase)
    if debug:
        traceback.print_exception(error, file=sys.stderr)
    if status == INTERRUPTED:
        print("lit-prune: interrupted", file=sys.stderr)
        return status
    kind = "error" if status == USER_ERROR else f"failed ({type(_most_relevant(error)).__name__})"
    lines = _message_lines(error)
    print(f"lit-prune: {kind}: {lines[0]}", file=sys.stderr)
    for line in lines[1:]:
        print(f"  {line}", file=sys.stderr)
    hint = _unknown_option_hint(error, command)
    if hint:
        print(f"  {hint}", file=sys.stderr)
    if not debug:
        print(
            "  (full traceback: add --debug or set LIT_PRUNE_DEBUG=1; "
            f"options: lit-prune {_subcommand(command)} --help)",
            file=sys.stderr,
        )
    return status


def _chain(error: BaseException) -> list[BaseException]:
    """The error and its causes, outermost first (each error once)."""
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _most_relevant(error: BaseException) -> BaseException:
    """The link of the chain whose message to show.

    A parse error (``ArgumentError``) is shown condensed; otherwise the innermost error, which is
    the check that failed (jsonargparse wraps a class's own ``ValueError`` in a generic one).
    """
    chain = _chain(error)
    for link in chain:
        if isinstance(link, ArgumentError):
            return link
    for link in reversed(chain):
        if isinstance(link, UserError) or _raised_in_project(link):
            return link
    return chain[0]


_PROJECT_ROOT = Path(__file__).resolve().parent.parent
_PROJECT_PACKAGES = ("lit_prune", "callbacks", "datamodules")


def _raised_in_project(error: BaseException) -> bool:
    """Whether ``error`` was raised by lit-prune's own code (its message is written for users)."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return False
    try:
        relative = Path(frames[-1].filename).resolve().relative_to(_PROJECT_ROOT)
    except ValueError:
        return False
    return relative.parts[0] in _PROJECT_PACKAGES


def _message_lines(error: BaseException) -> list[str]:
    relevant = _most_relevant(error)
    text = str(relevant).strip() or type(relevant).__name__
    if isinstance(relevant, ArgumentError) or _UNION_FAILURE in text:
        text = condense_parser_message(text)
    lines = [wrapped for line in text.splitlines() if line.strip() for wrapped in _wrap(line)]
    if len(lines) > _MAX_MESSAGE_LINES:
        lines = [
            *lines[: _MAX_MESSAGE_LINES - 1],
            f"... ({len(lines) - _MAX_MESSAGE_LINES + 1} more lines with --debug)",
        ]
    return lines or [type(relevant).__name__]


def _wrap(line: str) -> list[str]:
    """One message line wrapped for the terminal; URLs and paths are never split."""
    return textwrap.wrap(line.strip(), _WIDTH, break_on_hyphens=False, break_long_words=False)


_UNION_FAILURE = "Does not validate against any of the Union subtypes"
_PARSER_KEY = re.compile(r'^Parser key "([^"]+)":$')
_CLASS_PROBLEM = re.compile(r"^- Problem with given class_path '([^']+)':$")
_NOISE = (
    _UNION_FAILURE,
    "Subtypes:",
    "Errors:",
    "Given value type:",
    "Given value:",
    "- Expected a <class 'NoneType'>",
    "- Not a valid subclass of",
)
_GENERIC_CLASSES = (
    "lightning.Callback",
    "lightning.LightningDataModule",
    "lightning.LightningModule",
    "torch.nn.Module",
)


def condense_parser_message(text: str) -> str:
    """jsonargparse's nested report of a rejected value, as one line: option, class, problem.

    ``Parser key "data": ... Problem with given class_path 'datamodules.DigitsDataModule':
    Parser key "batch_size": Expected a <class 'int'>. Got value: abc`` becomes
    ``--data.batch_size (datamodules.DigitsDataModule): Expected a <class 'int'>. Got value: abc``.
    The alternatives every union lists (None, the generic base class) and the echo of the given
    value are dropped.
    """
    keys: list[str] = []
    classes: list[str] = []
    problems: list[str] = []
    skip_depth: int | None = None
    for raw in text.splitlines():
        line = raw.strip()
        depth = len(raw) - len(raw.lstrip())
        if skip_depth is not None:
            if depth > skip_depth:
                continue
            skip_depth = None
        if not line or line.startswith(_NOISE):
            continue
        key = _PARSER_KEY.match(line)
        if key:
            keys.append(key.group(1))
            continue
        problem_class = _CLASS_PROBLEM.match(line)
        if problem_class:
            if problem_class.group(1) in _GENERIC_CLASSES:
                skip_depth = depth
            else:
                classes.append(problem_class.group(1))
            continue
        problems.append(line.removeprefix("- "))
    if not problems:
        return text
    option = "--" + ".".join(dict.fromkeys(keys)) if keys else ""
    where = f" ({classes[0]})" if classes else ""
    head = f"{option}{where}: " if option or where else ""
    return "\n".join([head + problems[0], *dict.fromkeys(problems[1:])])


def _unknown_option_hint(error: BaseException, command: Sequence[str]) -> str | None:
    """For an unrecognised option: the accepted options that come closest (same group first)."""
    text = str(error)
    rejected = _REJECTED_CLASS_OPTION.search("\n".join(_message_lines(error)))
    if rejected:
        return _class_options_hint(rejected.group(1), rejected.group(2))
    match = re.search(r"unrecognized arguments?:\s*(\S+)", text, flags=re.IGNORECASE)
    if not match:
        return None
    unknown = match.group(1).split("=", 1)[0]
    accepted = [option for option in _accepted_options(command) if not option.endswith(".help")]
    if not accepted:
        return None
    group = unknown.rsplit(".", 1)[0] + "." if "." in unknown else "--"
    siblings = [option for option in accepted if option.startswith(group) and option.count(".") == unknown.count(".")]
    close = difflib.get_close_matches(unknown, accepted, n=5, cutoff=0.6)
    ordered = list(dict.fromkeys([*close, *siblings]))
    if not ordered:
        return None
    shown = ", ".join(ordered[:_MAX_SUGGESTIONS])
    more = f" (and {len(ordered) - _MAX_SUGGESTIONS} more)" if len(ordered) > _MAX_SUGGESTIONS else ""
    return f"accepted options near {unknown}: {shown}{more}"


_REJECTED_CLASS_OPTION = re.compile(r"\(([\w.]+)\): Option '(\w+)' is not accepted")


def _class_options_hint(class_path: str, option: str) -> str | None:
    """The options a class's ``__init__`` accepts, closest to the rejected one first."""
    module_name, _, class_name = class_path.rpartition(".")
    try:
        parameters = class_options(getattr(importlib.import_module(module_name), class_name))
    except (ImportError, AttributeError, TypeError, ValueError):
        return None
    close = difflib.get_close_matches(option, parameters, n=3, cutoff=0.6)
    ordered = list(dict.fromkeys([*close, *parameters]))
    return f"{class_name} accepts: {', '.join(ordered)}"


def class_options(cls: type) -> list[str]:
    """The options of a class as the parser sees them, including those it forwards to a base as ``**kwargs``.

    Args:
        cls: A class a config can name (a callback, a data module).

    Returns:
        The option names, in the order ``--help`` lists them.
    """
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "options")
    return [action.dest.removeprefix("options.") for action in parser._actions if action.dest.startswith("options.")]


def _accepted_options(command: Sequence[str]) -> list[str]:
    """The long options the subcommand's parser accepts."""
    from lit_prune.cli_help import accepted_options

    return accepted_options(_subcommand(command))


def _subcommand(command: Sequence[str]) -> str:
    for word in command:
        if not word.startswith("-"):
            return word
    return "fit"


class PhaseTracker(Callback):
    """Marks the command's progress as ``run`` when the first batch of any loop starts.

    Args:
        progress: The command's progress record.
    """

    def __init__(self, progress: CommandProgress) -> None:
        self.progress = progress

    def _started(self, *args: object, **kwargs: object) -> None:
        self.progress.phase = "run"

    on_train_batch_start = _started
    on_validation_batch_start = _started
    on_test_batch_start = _started
    on_predict_batch_start = _started
