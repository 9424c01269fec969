"""Turning one run's config file and options into its full config, with the run command's parser.

Every combination of a sweep is parsed here, in this process, before any run starts: a value the
run's parser rejects (a wrong type, an unknown option) and a value a callback refuses when it is
built (``ratio: 1.5``) are found up front, with the run's name in the message. The result is
the complete config as YAML (every option spelled out), which the run is then started with
(``lit-prune fit --config RUN.yaml``): what is run is exactly what was checked, and it is what
the sweep's fingerprint is computed from.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import warnings
from collections.abc import Sequence
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningArgumentParser, instantiate_class

from lit_prune.config_bases import expand_config_arguments
from lit_prune.errors import UserError

__all__ = [
    "ConfigResolver",
    "add_callback",
    "callback_classes",
    "drop_callbacks",
    "ensure_profiling",
    "import_class",
    "set_run_directory",
]

_PROFILING = "callbacks.profiling.ProfilingCallback"
_LOGGER_TYPES = ("TensorBoardLogger", "CSVLogger")
_ERROR_LINES = 12


class ConfigResolver:
    """Parses run configs with the parser ``lit-prune fit`` uses, without building anything heavy.

    The parser is built once (about a second) and reused: parsing one combination then takes about
    a tenth of a second.
    """

    def __init__(self) -> None:
        self._parser: LightningArgumentParser | None = None

    @property
    def parser(self) -> LightningArgumentParser:
        """The parser of ``lit-prune fit``'s options (built on first use)."""
        if self._parser is None:
            self._parser = _build_parser()
        return self._parser

    def resolve(self, run: str, config: str, args: Sequence[str]) -> Namespace:
        """Parses a config file with options, as ``lit-prune fit --config CONFIG ARGS`` would.

        Args:
            run: The run's name, for messages.
            config: The config file.
            args: Options after it.

        Returns:
            The parsed config.

        Raises:
            UserError: If the parser rejects an option or value (the message names the run and
                quotes the parser's reason).
        """
        return self._parse(run, expand_config_arguments(["--config", config, *args]))

    def check(self, run: str, cfg: Namespace) -> None:
        """Builds every callback of a parsed config once, so values a callback refuses surface now.

        Raises:
            UserError: If a callback's constructor rejects its arguments.
        """
        for index, callback in enumerate(_callbacks(cfg)):
            try:
                instantiate_class((), callback.as_dict())
            except (ValueError, TypeError, KeyError) as error:
                raise UserError(
                    f"run {run}: trainer.callbacks[{index}] ({callback.class_path}) refuses its arguments: {error}"
                ) from None

    def dump(self, run: str, cfg: Namespace) -> str:
        """The complete config as YAML; parsed back once to be sure it runs as written.

        Raises:
            UserError: If the config does not survive the round trip.
        """
        text = self.parser.dump(cfg, skip_unset=False)
        self._parse(run, ["--config", text])
        return text

    def _parse(self, run: str, args: list[str]) -> Namespace:
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                return self.parser.parse_args(args)
        except argparse.ArgumentError as error:
            reason = _error_text(f"error: {error}")
        except SystemExit:
            reason = _error_text(stderr.getvalue())
        raise UserError(f"run {run}: the run's parser rejects its options:\n{reason}")


def set_run_directory(cfg: Namespace, run: str, save_dir: str, name: str) -> None:
    """Points the run's logger at ``save_dir/name`` exactly (no ``version_<n>`` counter).

    Raises:
        UserError: If the run has no TensorBoard or CSV logger.
    """
    logger = cfg.trainer.logger
    if not isinstance(logger, Namespace) or not str(logger.class_path).endswith(_LOGGER_TYPES):
        raise UserError(
            f"run {run}: a sweep needs one TensorBoardLogger or CSVLogger as trainer.logger (it names the run "
            f"directory), got {logger!r}"
        )
    logger.init_args.save_dir = save_dir
    logger.init_args.name = ""
    logger.init_args.version = name


def ensure_profiling(cfg: Namespace) -> None:
    """Adds ``callbacks.profiling.ProfilingCallback`` when missing: its ``report.json`` marks a run done."""
    profiling = import_class(_PROFILING)
    if not any(issubclass(cls, profiling) for cls in callback_classes(cfg)):
        cfg.trainer.callbacks = [Namespace(class_path=_PROFILING, init_args=Namespace()), *_callbacks(cfg)]


def drop_callbacks(cfg: Namespace, class_paths: Sequence[str], run: str) -> None:
    """Removes the callbacks that are (subclasses of) the given classes.

    Raises:
        UserError: If a class path cannot be imported or matches no callback of the run.
    """
    callbacks = _callbacks(cfg)
    kept = list(callbacks)
    for class_path in class_paths:
        cls = import_class(class_path)
        remaining = [c for c in kept if not issubclass(import_class(c.class_path), cls)]
        if len(remaining) == len(kept):
            present = [c.class_path for c in callbacks]
            raise UserError(f"base run {run}: drop_callbacks {class_path!r} matches none of its callbacks {present}")
        kept = remaining
    cfg.trainer.callbacks = kept


def add_callback(cfg: Namespace, class_path: str, **init_args: Any) -> None:
    """Appends a callback to the run's ``trainer.callbacks``."""
    cfg.trainer.callbacks = [*_callbacks(cfg), Namespace(class_path=class_path, init_args=Namespace(**init_args))]


def callback_classes(cfg: Namespace) -> list[type]:
    """The classes of the run's callbacks, in order."""
    return [import_class(callback.class_path) for callback in _callbacks(cfg)]


def import_class(class_path: str) -> type:
    """Imports ``package.module.Class``.

    Raises:
        UserError: If it cannot be imported.
    """
    module_name, _, attribute = class_path.rpartition(".")
    try:
        module = __import__(module_name, fromlist=[attribute])
        return getattr(module, attribute)
    except (ImportError, AttributeError, ValueError):
        raise UserError(
            f"cannot import {class_path!r}; give a class path such as callbacks.early_bird.EarlyBird"
        ) from None


def _callbacks(cfg: Namespace) -> list[Namespace]:
    callbacks = cfg.trainer.callbacks
    if callbacks is None:
        return []
    return list(callbacks) if isinstance(callbacks, list) else [callbacks]


def _error_text(text: str) -> str:
    """The parser's reason without its usage block, in a few lines."""
    lines = [line for line in text.splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if line.startswith("error:")), 0)
    kept = lines[start : start + _ERROR_LINES]
    return "\n".join(f"  {line}" for line in kept) or "  (no reason given)"


def _build_parser() -> LightningArgumentParser:
    from lit_prune.cli import _DEFAULT_LOGGER, LitPruneCLI
    from lit_prune.module import ImageClassifier

    class _ParseOnly(LitPruneCLI):
        """``lit-prune fit``'s parser, without seeding, instantiating or running anything."""

        def _set_seed(self) -> None:
            return None

        def before_instantiate_classes(self) -> None:
            return None

        def instantiate_classes(self) -> None:
            return None

        def after_instantiate_classes(self) -> None:
            return None

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
            cli = _ParseOnly(
                ImageClassifier,
                LightningDataModule,
                subclass_mode_data=True,
                trainer_defaults={"logger": _DEFAULT_LOGGER},
                parser_kwargs={"exit_on_error": False},
                run=False,
                args=["--data", "datamodules.DigitsDataModule"],
            )
    except (SystemExit, argparse.ArgumentError) as error:
        raise RuntimeError(f"could not build the run parser: {error}\n{stderr.getvalue()}") from None
    return cli.parser
