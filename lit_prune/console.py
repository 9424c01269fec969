"""What a run prints: one line per pruning event, and none of the known harmless noise.

The noise silenced here, each at its source and nothing more:

- Lightning's advertisement for ``litlogger``, printed by every run;
- the ``LeafSpec`` deprecation warning raised by Lightning's own ``_pytree`` helper with the
  pinned torch;
- the trace lines (``profiler_start``/``profiler_stop``) and the ``gpuGetDeviceCount failed``
  error that torch's native profiler library (Kineto) writes to the process's standard error
  on a machine without a GPU, each time memory is profiled (silenced around that call by
  :func:`lit_prune.profiling.native_output.native_stderr_silenced`).
"""

from __future__ import annotations

import logging
import os
import warnings

from lightning.pytorch.utilities import rank_zero_only

__all__ = ["announce", "silence_known_noise"]

_LITLOGGER_TIP = "litlogger"


class _DropMessages(logging.Filter):
    """Drops log records whose message contains a given text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def silence_known_noise() -> None:
    """Installs the filters for the known harmless messages (idempotent)."""
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=Warning)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(_LITLOGGER_TIP))


@rank_zero_only
def announce(message: str) -> None:
    """Prints one ``lit-prune:`` line on the console (rank 0 only under DDP)."""
    print(f"lit-prune: {message}", flush=True)
