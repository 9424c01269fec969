"""The ``lit-prune`` command: LightningCLI over ``ImageClassifier`` and any LightningDataModule.

``lit-prune fit|validate|test|predict`` go to :class:`LitPruneCLI`; ``report``, ``sweep``,
``export``, ``models`` and ``callbacks`` are lit-prune's own tools. The exit status is 0 when the command
did its job, 2 for a user error (printed in a few lines that name the problem) and 1 for any
other failure; ``--debug`` (or ``LIT_PRUNE_DEBUG=1``) prints the full traceback as well.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentError
from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lit_prune import console
from lit_prune.cli_errors import CommandProgress, PhaseTracker, condense_parser_message, report_failure
from lit_prune.cli_help import SHORT_HELP_FORMATTER, describe_for_help, remember_parser
from lit_prune.config_bases import expand_config_arguments
from lit_prune.module import ImageClassifier
from lit_prune.renamed_options import renamed_option_error
from lit_prune.run_directory import point_logger_at_run, remove_if_unfinished, run_of_checkpoint
from lit_prune.torch_files import load_torch_file

__all__ = ["LitPruneCLI", "main", "run_cli"]

_DEFAULT_LOGGER = {
    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
    "init_args": {"save_dir": "lightning_logs", "name": "default"},
}
_TRAINER_SUBCOMMANDS = ("fit", "validate", "test", "predict")
_DEBUG_FLAG = "--debug"
_SPECIAL_CKPT_PATHS = ("last", "best", "hpc", "registry")
_DEBUG_ENV = "LIT_PRUNE_DEBUG"


class LitPruneCLI(LightningCLI):
    """LightningCLI with the links, defaults and run-directory rules every lit-prune run relies on.

    - ``num_classes`` of the model is taken from the data module.
    - ``checkpoints/last.ckpt`` is written at the end of every epoch, and the best epoch of each
      pruning stage by ``--checkpoint.monitor`` (default ``val/top1``) is kept as
      ``best-<stage>-epoch<NNN>.ckpt`` (:mod:`callbacks.checkpoints`).
    - The learning rate is logged (``lr-<optimizer>``) beside the loss and accuracy curves.
    - Runs log to TensorBoard under ``lightning_logs/<name>/version_<n>/``, where the resolved
      ``config.yaml`` is saved too; ``fit --ckpt_path`` of a run's checkpoint continues that run's
      directory, and ``test``/``validate --ckpt_path`` write into its ``test/``/``validate/`` folder.

    Args:
        progress: Where the command records how far it got, for the error report.
        *args: Passed to ``LightningCLI``.
        **kwargs: Passed to ``LightningCLI``.
    """

    def __init__(self, *args: Any, progress: CommandProgress | None = None, **kwargs: Any) -> None:
        self.progress = progress or CommandProgress()
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        from callbacks.checkpoints import StageBestCheckpoint

        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.add_lightning_class_args(StageBestCheckpoint, "checkpoint")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parses the command line; an option under a name lit-prune renamed is refused with its new name."""
        try:
            super().parse_arguments(parser, args)
            return
        except ArgumentError as error:
            renamed = renamed_option_error(condense_parser_message(str(error)))
            if renamed is None:
                raise
        raise renamed  # outside the handler, so the parser's error is not its context

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        remember_parser(subcommand, parser)
        return parser

    def _parse_ckpt_path(self) -> None:
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and ckpt_path not in _SPECIAL_CKPT_PATHS:
            load_torch_file(ckpt_path, what="--ckpt_path")
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        self.progress.phase = "instantiate"
        subcommand = self.config.get("subcommand")
        if subcommand not in _TRAINER_SUBCOMMANDS:
            return
        config = self.config[subcommand]
        run = run_of_checkpoint(config.get("ckpt_path"))
        if run is not None:
            sub_dir = None if subcommand == "fit" else subcommand
            point_logger_at_run(config.trainer.get("logger"), run, sub_dir)

    def after_instantiate_classes(self) -> None:
        log_dir = self.trainer.log_dir
        self.progress.log_dir = None if log_dir is None else Path(log_dir)
        self.progress.log_dir_existed = self.progress.log_dir is not None and self.progress.log_dir.exists()
        self.progress.phase = "setup"


def _parser_kwargs() -> dict[str, Any]:
    common = {"exit_on_error": False, "formatter_class": SHORT_HELP_FORMATTER}
    kwargs: dict[str, Any] = {**common, "description": describe_for_help()}
    for subcommand in _TRAINER_SUBCOMMANDS:
        kwargs[subcommand] = dict(common)
    kwargs["fit"]["description"] = describe_for_help("fit")
    return kwargs


def _trainer_defaults(progress: CommandProgress) -> dict[str, Any]:
    from callbacks.checkpoints import LastCheckpoint
    from callbacks.learning_rate import LearningRateLogger

    return {"logger": _DEFAULT_LOGGER, "callbacks": [LastCheckpoint(), LearningRateLogger(), PhaseTracker(progress)]}


def run_cli(args: Sequence[str], progress: CommandProgress | None = None) -> LitPruneCLI:
    """Runs a LightningCLI subcommand in this process and returns the CLI object.

    Args:
        args: The command line after ``lit-prune``, e.g. ``["fit", "--config", "X.yaml"]``.
        progress: Records how far the command got (phase, run directory).

    Returns:
        The CLI, with ``trainer``, ``model`` and ``datamodule`` for programmatic use.

    Raises:
        Exception: Whatever the command raised; :func:`main` turns it into an exit status.
    """
    progress = progress or CommandProgress()
    args = expand_config_arguments(args)
    with warnings.catch_warnings():
        # Passing the command line as ``args`` is how this entry point works, not a mistake.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        return LitPruneCLI(
            ImageClassifier,
            LightningDataModule,
            subclass_mode_data=True,
            trainer_defaults=_trainer_defaults(progress),
            save_config_kwargs={"overwrite": True},
            parser_kwargs=_parser_kwargs(),
            args=list(args),
            progress=progress,
        )


def _final_metric(cli: LightningCLI, key: str) -> str:
    value = cli.trainer.callback_metrics.get(key)
    return "n/a" if value is None else f"{float(value):.4f}"


def _summary(cli: LitPruneCLI) -> str | None:
    """The last line of a trainer subcommand: run directory, final accuracy, report."""
    if cli.subcommand not in ("fit", "validate", "test"):
        return None
    run_dir = cli.trainer.log_dir
    key = {"fit": "val/top1", "validate": "val/top1", "test": "test/top1"}[cli.subcommand]
    label = f"final {key}" if cli.subcommand == "fit" else key
    line = f"run directory {run_dir} | {label} {_final_metric(cli, key)}"
    report = Path(run_dir) / "report.json" if run_dir else None
    if report is not None and report.is_file():
        line += f" | report {report}"
    return line


def _tools() -> dict[str, Callable[[list[str]], int]]:
    from lit_prune.cli_listings import list_callbacks_command, list_models_command
    from lit_prune.report.comparison import main as report_main

    def report(args: list[str]) -> int:
        report_main(args)
        return 0

    def sweep(args: list[str]) -> int:
        from lit_prune.sweep import main as sweep_main

        return sweep_main(args)

    def export(args: list[str]) -> int:
        from lit_prune.export import main as export_main

        return export_main(args)

    return {
        "report": report,
        "sweep": sweep,
        "export": export,
        "models": list_models_command,
        "callbacks": list_callbacks_command,
    }


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of the ``lit-prune`` console script (and of ``python -m lit_prune``).

    Args:
        args: Command-line arguments; ``sys.argv[1:]`` when None.

    Returns:
        The exit status: 0 success, 2 user error, 1 any other failure (130 on Ctrl-C).
    """
    command = list(sys.argv[1:] if args is None else args)
    debug = _DEBUG_FLAG in command or os.environ.get(_DEBUG_ENV, "") not in ("", "0")
    command = [word for word in command if word != _DEBUG_FLAG]
    console.silence_known_noise()
    progress = CommandProgress()
    try:
        tools = _tools()
        if command and command[0] in tools:
            progress.phase = "instantiate"
            return tools[command[0]](command[1:])
        cli = run_cli(command, progress)
    except SystemExit as stop:
        return _exit_code(stop)
    except BaseException as error:  # noqa: BLE001 - every failure becomes an exit status
        if progress.log_dir is not None and not progress.log_dir_existed:
            remove_if_unfinished(progress.log_dir)
        return report_failure(error, progress, debug=debug, command=command)
    line = _summary(cli) if cli.subcommand is not None else None
    if line is not None:
        console.announce(line)
    return 0


def _exit_code(stop: SystemExit) -> int:
    if stop.code is None:
        return 0
    if isinstance(stop.code, int):
        return stop.code
    print(stop.code, file=sys.stderr)
    return 1
