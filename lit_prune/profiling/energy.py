"""Energy per inference batch from hardware counters, read through pyJoules.

Two kinds of counter are supported, both cumulative:

* **RAPL** (Intel/AMD Running Average Power Limit) through
  ``pyJoules.device.rapl_device.RaplDevice``: the ``package`` and ``dram`` domains of every CPU
  socket, read from ``/sys/class/powercap/intel-rapl/.../energy_uj`` in **microjoules**. The
  ``core`` and ``uncore`` domains are not used because they are part of ``package`` (summing
  them would count the same energy twice). Since Linux 5.10 these files are readable by root
  only, so a machine can have RAPL and still not expose it to the user.
* **NVML** (NVIDIA Management Library) through
  ``pyJoules.device.nvidia_device.NvidiaGPUDevice``: every GPU's
  ``nvmlDeviceGetTotalEnergyConsumption``, in **millijoules** (Volta or newer; needs the
  ``pynvml`` package and an NVIDIA driver).

Each counter is read once before and once after ``repeats`` forward passes; the difference,
converted to millijoules and divided by ``repeats``, is the energy per batch of each domain.
``energy_mj`` is the sum over all measured domains. It is the energy the *whole device* drew in
that time — including its idle draw and anything else running on the machine — not an amount
attributable to the model alone; compare runs on an otherwise idle machine. The counters update
about every millisecond (RAPL) to every few tens of milliseconds (NVML), so use enough repeats
for the window to span many updates. When no counter can be read, ``energy_mj`` is ``None`` and
the note says why for each kind; the result never contains a made-up number.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from lit_prune.profiling._inputs import check_model, eval_mode, prepare_input, synchronize

__all__ = [
    "NVML_MJ_PER_UNIT",
    "RAPL_MJ_PER_UNIT",
    "EnergyCounter",
    "EnergyDevice",
    "EnergyResult",
    "discover_energy_counters",
    "measure_energy",
]

RAPL_MJ_PER_UNIT = 1e-3
"""RAPL counters (``energy_uj``) count microjoules."""

NVML_MJ_PER_UNIT = 1.0
"""NVML's ``nvmlDeviceGetTotalEnergyConsumption`` counts millijoules."""


class EnergyDevice(Protocol):
    """The part of ``pyJoules.device.Device`` that is used: a configured, cumulative counter."""

    def get_energy(self) -> list[float]:
        """Cumulative energy of each configured domain, in the device's unit."""

    def get_configured_domains(self) -> list[Any]:
        """The configured domains, in the order of :meth:`get_energy`."""


@dataclass(frozen=True)
class EnergyCounter:
    """A configured pyJoules device and the unit its readings are in.

    Attributes:
        name: The kind of counter, ``"RAPL"`` or ``"NVML"``.
        device: A configured pyJoules device.
        mj_per_unit: Millijoules per unit of the device's readings.
    """

    name: str
    device: EnergyDevice
    mj_per_unit: float

    def domain_names(self) -> list[str]:
        """Names of the configured domains (``package_0``, ``dram_0``, ``nvidia_gpu_0``)."""
        return [str(domain) for domain in self.device.get_configured_domains()]

    def read_mj(self) -> list[float]:
        """Current cumulative reading of each domain, in millijoules."""
        return [float(value) * self.mj_per_unit for value in self.device.get_energy()]


@dataclass(frozen=True)
class EnergyResult:
    """Energy drawn per forward batch.

    Attributes:
        energy_mj: Sum over ``domains`` of the energy per batch in millijoules, or ``None`` when
            it could not be measured.
        per_domain_mj: Energy per batch of each measured domain, in millijoules.
        note: How the value was obtained, or why it is missing.
        domains: Names of the measured domains.
    """

    energy_mj: float | None
    per_domain_mj: dict[str, float] = field(default_factory=dict)
    note: str = ""
    domains: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Returns the fields as a JSON-serialisable dictionary."""
        result = asdict(self)
        result["domains"] = list(self.domains)
        return result


def discover_energy_counters() -> tuple[list[EnergyCounter], list[str]]:
    """Finds the energy counters this machine exposes to the current user.

    A counter is only returned after one successful trial read, so a RAPL tree that exists but
    is readable by root only is reported as unavailable.

    Returns:
        The usable counters, and one line per unusable kind saying why it is unusable.
    """
    counters: list[EnergyCounter] = []
    reasons: list[str] = []
    for probe in (_probe_rapl, _probe_nvml):
        counter, reason = probe()
        if counter is not None:
            counters.append(counter)
        else:
            reasons.append(reason)
    return counters, reasons


def measure_energy(
    model: nn.Module,
    example_batch: Tensor | Sequence[Any],
    repeats: int = 10,
    discover: Callable[[], tuple[list[EnergyCounter], list[str]]] = discover_energy_counters,
) -> EnergyResult:
    """Measures the average energy per forward batch with RAPL and NVML counters.

    The model runs in evaluation mode under ``torch.inference_mode``; one untimed pass comes
    first, then the counters are read, ``repeats`` passes run back to back (the device is
    synchronised at the end), and the counters are read again. See the module docstring for
    the units, the domains and what the number includes.

    Args:
        model: The network; it is run on the device of its parameters.
        example_batch: An input tensor, or an ``(inputs, targets)`` sequence whose inputs are used.
        repeats: Forward passes inside the measured window, at least 1.
        discover: Returns the usable counters and the reasons the others are unusable;
            :func:`discover_energy_counters` by default (replaceable, e.g. by tests).

    Returns:
        The energy per batch in millijoules, or ``None`` with a note saying why not.

    Raises:
        TypeError: If ``model`` is not a module or the batch holds no input tensor.
        ValueError: If ``repeats`` is below 1.
    """
    check_model(model)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
    inputs = prepare_input(model, example_batch)
    counters, reasons = discover()
    if not counters:
        return EnergyResult(energy_mj=None, note="unavailable: " + "; ".join(reasons))

    with eval_mode(model), torch.inference_mode():
        model(inputs)
        synchronize(inputs.device)
        before = [counter.read_mj() for counter in counters]
        start = time.perf_counter()
        for _ in range(repeats):
            model(inputs)
        synchronize(inputs.device)
        window_ms = (time.perf_counter() - start) * 1000.0
        after = [counter.read_mj() for counter in counters]

    per_domain: dict[str, float] = {}
    wrapped: list[str] = []
    for counter, first, last in zip(counters, before, after):
        for name, begin, end in zip(counter.domain_names(), first, last):
            if end < begin:
                wrapped.append(name)
            per_domain[name] = (end - begin) / repeats
    if wrapped:
        return EnergyResult(
            energy_mj=None,
            note=f"unavailable: the counter of {', '.join(wrapped)} wrapped around during the "
            f"{window_ms:.1f} ms window; measure again",
        )
    if not any(per_domain.values()):
        return EnergyResult(
            energy_mj=None,
            note=f"unavailable: the counters of {', '.join(per_domain)} did not advance during the "
            f"{window_ms:.1f} ms window; use more repeats or a larger batch",
        )
    sources = ", ".join(f"{counter.name} ({', '.join(counter.domain_names())})" for counter in counters)
    note = f"measured with {sources} over {repeats} batches in {window_ms:.1f} ms; whole-device energy"
    if reasons:
        note += "; not measured: " + "; ".join(reasons)
    return EnergyResult(
        energy_mj=sum(per_domain.values()),
        per_domain_mj=per_domain,
        note=note,
        domains=tuple(per_domain),
    )


class _DropPynvmlWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pynvml" not in record.getMessage()


def _import_rapl_device() -> ModuleType:
    """Imports pyJoules' RAPL module without its import-time "pynvml not found" log line.

    ``pyJoules.device`` logs that warning on the root logger whenever ``pynvml`` is missing;
    :func:`_probe_nvml` reports the same fact in the result's note instead.
    """
    root = logging.getLogger()
    drop_pynvml_warning = _DropPynvmlWarning()
    root.addFilter(drop_pynvml_warning)
    try:
        return importlib.import_module("pyJoules.device.rapl_device")
    finally:
        root.removeFilter(drop_pynvml_warning)


def _probe_rapl() -> tuple[EnergyCounter | None, str]:
    rapl_device = _import_rapl_device()
    from pyJoules.exception import NoSuchDeviceError

    api_dir = rapl_device.RAPL_API_DIR
    try:
        available = rapl_device.RaplDevice.available_domains()
    except NoSuchDeviceError:
        return None, f"RAPL: {api_dir} does not exist (no RAPL interface, e.g. a VM, a container or a non-x86 CPU)"
    except OSError as error:
        return None, f"RAPL: {api_dir} is not readable ({error})"
    domains = [
        domain
        for domain in available
        if isinstance(domain, (rapl_device.RaplPackageDomain, rapl_device.RaplDramDomain))
    ]
    if not domains:
        return None, f"RAPL: no package or dram domain under {api_dir}"
    try:
        device = rapl_device.RaplDevice()
        device.configure(domains)
        device.get_energy()
    except OSError as error:
        return None, f"RAPL: energy counters under {api_dir} are not readable ({error}; root only since Linux 5.10)"
    return EnergyCounter(name="RAPL", device=device, mj_per_unit=RAPL_MJ_PER_UNIT), ""


def _probe_nvml() -> tuple[EnergyCounter | None, str]:
    try:
        import pynvml
    except ImportError:
        return None, "NVML: the pynvml package (nvidia-ml-py) is not installed"
    from pyJoules.device.nvidia_device import NvidiaGPUDevice
    from pyJoules.exception import NoSuchDeviceError

    try:
        domains = NvidiaGPUDevice.available_domains()
    except NoSuchDeviceError:
        return None, "NVML: no NVIDIA driver (nvmlInit failed)"
    if not domains:
        return None, "NVML: the NVIDIA driver reports no GPU"
    try:
        device = NvidiaGPUDevice()
        device.configure(domains)
        device.get_energy()
    except pynvml.NVMLError as error:
        return None, f"NVML: the GPU does not report its energy ({error}; needs Volta or newer)"
    return EnergyCounter(name="NVML", device=device, mj_per_unit=NVML_MJ_PER_UNIT), ""
