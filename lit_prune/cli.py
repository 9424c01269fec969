"""The ``lit-prune`` command: LightningCLI over ``ImageClassifier`` and any LightningDataModule."""

from __future__ import annotations

import sys
from typing import Any

from lightning.pytorch import LightningDataModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_only

from lit_prune.module import ImageClassifier

__all__ = ["LitPruneCLI", "main"]

_DEFAULT_LOGGER = {
    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
    "init_args": {"save_dir": "lightning_logs", "name": "default"},
}


_DESCRIPTION = (
    "Train, prune, fine-tune and profile image classifiers from one YAML file "
    "(lit-prune fit --config configs/X.yaml). To compare finished runs: "
    "lit-prune report RUN_DIR [RUN_DIR ...] [--output DIR]."
)


class LitPruneCLI(LightningCLI):
    """LightningCLI with the links and defaults every lit-prune run relies on.

    - ``num_classes`` of the model is taken from the data module.
    - A ``ModelCheckpoint`` (``--checkpoint.*``) keeps ``last.ckpt`` and the best ``val/top1``.
    - Runs log to TensorBoard under ``lightning_logs/<name>/version_<n>/``, where the resolved
      ``config.yaml`` is saved too.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/top1",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-epoch{epoch:03d}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )


def _final_metric(cli: LightningCLI, key: str) -> str:
    value = cli.trainer.callback_metrics.get(key)
    return "n/a" if value is None else f"{float(value):.4f}"


@rank_zero_only
def _print_summary(cli: LightningCLI) -> None:
    """Prints the line that names the run directory and the final accuracy of the subcommand."""
    run_dir = cli.trainer.log_dir
    if cli.subcommand == "fit":
        print(f"lit-prune: run directory {run_dir} | final val/top1 {_final_metric(cli, 'val/top1')}")
    elif cli.subcommand in ("validate", "test"):
        stage = "val" if cli.subcommand == "validate" else "test"
        print(f"lit-prune: run directory {run_dir} | {stage}/top1 {_final_metric(cli, f'{stage}/top1')}")


def main(args: list[str] | None = None) -> Any:
    """Entry point of the ``lit-prune`` console script.

    ``lit-prune report RUN_DIR [RUN_DIR ...]`` compares finished runs (see
    ``lit_prune.report_compare``); every other subcommand goes to LightningCLI.

    Args:
        args: Command-line arguments; ``sys.argv[1:]`` when None (LightningCLI then reads them).

    Returns:
        The LightningCLI object, for programmatic use; for ``report``, the paths it wrote.
    """
    command = sys.argv[1:] if args is None else args
    if command and command[0] == "report":
        from lit_prune.report_compare import main as report_main

        return report_main(command[1:])
    cli = LitPruneCLI(
        ImageClassifier,
        LightningDataModule,
        subclass_mode_data=True,
        trainer_defaults={"logger": _DEFAULT_LOGGER},
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"description": _DESCRIPTION},
        args=args,
    )
    if cli.subcommand is not None:
        _print_summary(cli)
    return cli
