"""Keeping what native libraries print to standard error off the console while they run."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

__all__ = ["native_stderr_silenced"]


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Sends what native code writes to file descriptor 2 to the null device while the block runs.

    Python-level ``sys.stderr`` writes are not affected when ``sys.stderr`` is not descriptor 2
    (e.g. under pytest's capture); where it is, it is flushed first so nothing is lost or reordered.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
