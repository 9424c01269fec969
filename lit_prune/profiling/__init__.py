"""Pure measurement functions; each returns a frozen dataclass with ``to_dict()`` for reports.

* :func:`evaluate_topk`: top-1/top-5 accuracy over batches.
* :func:`measure_latency`: median time per batch (CUDA events on GPU).
* :func:`measure_memory`: peak and time-averaged memory of a forward pass.
* :func:`measure_energy`: energy per batch from RAPL/NVML counters via pyJoules, or ``None``
  with a note saying why the machine exposes none.
* :func:`count_macs`: dense MACs (torchprofile) and non-zero MACs per image.
* :func:`measure_size`: serialised size of the state dict, dense and sparse.

Nothing here imports Lightning.
"""

from lit_prune.profiling.accuracy import evaluate_topk
from lit_prune.profiling.energy import EnergyCounter, EnergyResult, discover_energy_counters, measure_energy
from lit_prune.profiling.latency import LatencyResult, measure_latency
from lit_prune.profiling.macs import MacsResult, count_macs
from lit_prune.profiling.memory import MemoryResult, measure_memory
from lit_prune.profiling.size import SizeResult, measure_size

__all__ = [
    "EnergyCounter",
    "EnergyResult",
    "LatencyResult",
    "MacsResult",
    "MemoryResult",
    "SizeResult",
    "count_macs",
    "discover_energy_counters",
    "evaluate_topk",
    "measure_energy",
    "measure_latency",
    "measure_memory",
    "measure_size",
]
