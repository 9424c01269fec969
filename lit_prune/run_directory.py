"""Where a command writes: the run a checkpoint belongs to, and no empty run left by a failure.

A run directory is ``<save_dir>/<name>/version_<n>/`` (TensorBoard's layout) with the run's
checkpoints in ``checkpoints/``. ``fit --ckpt_path RUN/checkpoints/X.ckpt`` resumes *that* run:
its curves continue in the same directory. ``test``/``validate --ckpt_path`` of a run's checkpoint
write their logs and report into ``RUN/test/`` (``RUN/validate/``) beside the run they evaluate.
Both apply only when the config does not name a logger version itself.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

__all__ = ["RunLocation", "point_logger_at_run", "remove_if_unfinished", "run_of_checkpoint"]

_TENSORBOARD = "lightning.pytorch.loggers.TensorBoardLogger"
_RUN_FILES = ("config.yaml", "hparams.yaml")


class RunLocation:
    """A run directory split the way ``TensorBoardLogger`` composes it.

    Args:
        run_dir: The ``version_<n>`` directory.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.save_dir = str(run_dir.parent.parent)
        self.name = run_dir.parent.name
        self.version = run_dir.name


def run_of_checkpoint(ckpt_path: str | Path | None) -> RunLocation | None:
    """The run directory a checkpoint file was written into, or None for a file kept elsewhere."""
    if not ckpt_path:
        return None
    path = Path(ckpt_path).resolve()
    if path.parent.name != "checkpoints":
        return None
    run_dir = path.parent.parent
    if not any((run_dir / name).is_file() for name in _RUN_FILES) and not any(run_dir.glob("events.out.tfevents.*")):
        return None
    return RunLocation(run_dir)


def point_logger_at_run(logger_config: Any, run: RunLocation, sub_dir: str | None) -> bool:
    """Makes a TensorBoard logger config write into ``run`` (and ``sub_dir`` inside it).

    Args:
        logger_config: The ``trainer.logger`` entry of the parsed config (a namespace with
            ``class_path`` and ``init_args``), or anything else, which is left alone.
        run: The run to write into.
        sub_dir: A folder inside the run (``test``), or None for the run directory itself.

    Returns:
        Whether the config was changed: not when the logger is not TensorBoard's or the config
        names a version of its own.
    """
    if getattr(logger_config, "class_path", None) != _TENSORBOARD:
        return False
    init_args = logger_config.init_args
    if init_args.get("version") is not None:
        return False
    init_args["save_dir"] = run.save_dir
    init_args["name"] = run.name
    init_args["version"] = run.version
    if sub_dir is not None:
        init_args["sub_dir"] = sub_dir
    return True


def remove_if_unfinished(log_dir: Path) -> bool:
    """Removes a directory a failed command created, unless it holds a checkpoint to resume from.

    Args:
        log_dir: The directory the command's logger wrote into; it must not have existed
            before the command started (the caller checks).

    Returns:
        Whether the directory was removed (its parent, the run name's folder, goes too if that
        leaves it empty).
    """
    if not log_dir.is_dir() or any(log_dir.glob("checkpoints/*.ckpt")):
        return False
    shutil.rmtree(log_dir, ignore_errors=True)
    with contextlib.suppress(OSError):
        log_dir.parent.rmdir()
    return True
