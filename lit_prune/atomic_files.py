"""Writing files so that a reader never sees a half-written one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_checkpoint", "atomic_write"]


def atomic_write(path: Path, write: Callable[[Path], Any]) -> Path:
    """Writes a file through a temporary file in the same directory, synced, then renamed over ``path``.

    A failure (an exception in ``write``, a full disk, an interrupt) leaves any previous ``path``
    untouched and no temporary file behind. The temporary file keeps ``path``'s suffix, so writers
    that pick a format from it (``savefig``) behave the same. The file gets the mode the user's
    umask gives a new file (``mkstemp`` alone would leave it readable by its owner only).

    Args:
        path: The file to write.
        write: Called with the temporary path; writes the content there.

    Returns:
        ``path``.
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(handle)
    try:
        write(Path(temporary))
        _replace(Path(temporary), path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def atomic_checkpoint(trainer: Any, path: Path, barrier: str = "lit_prune_checkpoint_saved") -> Path:
    """Saves a Lightning trainer's checkpoint through a temporary file renamed over ``path``.

    Call it on every rank: ``trainer.save_checkpoint`` is collective (every rank takes part,
    global rank 0 writes). The temporary file has the same name on every rank, so rank 0 syncs
    and renames the file it wrote, and a barrier follows, so no rank goes on before the file is
    in place. A kill never leaves a torn checkpoint at ``path``.

    Args:
        trainer: The Lightning ``Trainer``.
        path: The checkpoint file.
        barrier: Name of the barrier after the rename (it shows in a hang's report).

    Returns:
        ``path``.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.partial")
    trainer.save_checkpoint(temporary, weights_only=False)
    if trainer.is_global_zero:
        _replace(temporary, path)
    trainer.strategy.barrier(barrier)
    return path


def _replace(temporary: Path, path: Path) -> None:
    """Syncs ``temporary``, gives it the umask's mode and renames it over ``path``."""
    with open(temporary, "rb+") as stream:
        os.fsync(stream.fileno())
    os.chmod(temporary, 0o666 & ~_current_umask())
    os.replace(temporary, path)


def _current_umask() -> int:
    """The process's umask (reading it requires setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
