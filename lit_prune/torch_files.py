"""Reading files written by ``torch.save``, with an error that says what is wrong with a bad one.

``torch.load`` fails on a text file with ``IndexError: pop from empty list``, on a truncated file
with a zip error, and on a file holding pickled objects with an ``UnpicklingError``; none of them
names the file. :func:`load_torch_file` names it and tells which of these it is.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from lit_prune.errors import UserError

__all__ = ["describe_unreadable", "load_torch_file"]

_LEGACY_PICKLE_START = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def load_torch_file(path: str | os.PathLike[str], what: str, weights_only: bool = True) -> Any:
    """Loads ``path`` with ``torch.load`` on the CPU, or raises a :class:`UserError` naming it.

    Args:
        path: The file.
        what: How the user gave it, for the message (``--ckpt_path``, ``checkpoint_path``).
        weights_only: Load tensors and plain containers only (no code from the file runs).

    Returns:
        What the file holds.

    Raises:
        UserError: If the file is missing, not a file, or cannot be read; the message says why.
    """
    file = Path(path)
    if not file.exists():
        raise UserError(f"{what}: {str(file)!r} does not exist")
    if not file.is_file():
        raise UserError(f"{what}: {str(file)!r} is not a file")
    try:
        return torch.load(file, map_location="cpu", weights_only=weights_only)
    except Exception as error:  # noqa: BLE001 - every way of failing gets a diagnosis
        raise UserError(f"{what}: cannot read {str(file)!r}: {describe_unreadable(file, error)}") from error


def describe_unreadable(file: Path, error: BaseException) -> str:
    """Why ``torch.load`` could not read ``file``, in words a user can act on."""
    size = file.stat().st_size
    if size == 0:
        return "the file is empty"
    with open(file, "rb") as stream:
        head = stream.read(4)
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(file) as archive:
                damaged = archive.testzip()
        except zipfile.BadZipFile:
            return f"the file is cut short or damaged ({size:,} bytes): copy or save it again"
        if damaged is not None:
            return f"the file is damaged (entry {damaged} fails its checksum): copy or save it again"
        if "weights only" in str(error).lower() or "weights_only" in str(error):
            return (
                "it holds pickled Python objects, not only tensors; save the weights with "
                "torch.save(model.state_dict(), PATH) or use a Lightning checkpoint"
            )
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".rstrip(": ")
    if head[:2] in _LEGACY_PICKLE_START:
        return f"the file is cut short or damaged ({size:,} bytes), or holds pickled objects: {error}"
    return f"it is not a file written by torch.save ({size:,} bytes; starts with {head!r})"
