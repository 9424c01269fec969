"""One vocabulary for "how much was pruned", whatever the method: the ``reduction`` report section.

Every figure is taken against the **unpruned architecture**: the same network definition at its
full width (built afresh from the model registry with the run's architecture options; its weights
do not matter, only its shapes). With

* ``P_ref`` parameters of the unpruned architecture, ``P`` parameters of the final network
  (after any physical removal of channels, heads or units) and ``P_nz`` of those that are not
  exactly zero (masked weights, and any weight that happens to be zero);
* ``M_ref``, ``M`` and ``M_nz`` the MACs per image of the unpruned architecture, of the final
  network with dense kernels, and of the final network skipping zero weights
  (:func:`lit_prune.profiling.count_macs`);
* ``L_ref`` and ``L`` the latency per batch of the unpruned architecture and of the final network,
  measured one after the other in the same process on the same batch,

the section holds::

    removed_fraction    = (P_ref - P) / P_ref        physically removed (structured pruning)
    zeroed_fraction     = (P - P_nz) / P_ref         zero but still stored (unstructured pruning)
    overall_reduction   = (P_ref - P_nz) / P_ref     = removed_fraction + zeroed_fraction
    compression_ratio   = P_ref / P_nz
    macs_reduction      = (M_ref - M_nz) / M_ref
    theoretical_speedup = M_ref / M_nz               a kernel that skips every zero weight
    dense_kernel_speedup = M_ref / M                 stock dense kernels (only removal counts)
    measured_speedup    = L_ref / L                  what this device actually gained

Both pruned fractions share the denominator ``P_ref``, so they add up to the overall reduction.
They count every parameter (biases and normalisation too); the ``sparsity`` section keeps the
fraction of the *masked* weights that are pruned, which is what an unstructured method targets.
A value that cannot be measured is ``None`` with a note in ``notes``, never 0. Nothing here
imports Lightning.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from lit_prune.profiling import count_macs, measure_latency, measure_size
from lit_prune.pruning.parameters import parameter_count

__all__ = [
    "REDUCTION_KEYS",
    "masked_entry_count",
    "reduction_section",
    "stage_reduction",
]

REDUCTION_KEYS = (
    "params_unpruned",
    "params_total",
    "params_nonzero",
    "removed_fraction",
    "zeroed_fraction",
    "overall_reduction",
    "compression_ratio",
    "macs_unpruned",
    "macs",
    "nonzero_macs",
    "macs_reduction",
    "theoretical_speedup",
    "dense_kernel_speedup",
    "size_unpruned_mb",
    "size_mb",
    "sparse_size_mb",
    "reference_latency_ms",
    "latency_ms",
    "measured_speedup",
)
"""Entries of the ``reduction`` section: numbers, or ``None`` with a note."""


def reduction_section(
    network: nn.Module,
    reference: nn.Module | None,
    inputs: Tensor,
    profile: Mapping[str, Any],
    *,
    reference_description: str,
    reference_note: str = "",
    latency_warmup: int = 3,
    latency_repeats: int = 10,
) -> dict[str, Any]:
    """Measures the unpruned architecture and puts the final network's figures against it.

    Args:
        network: The final network, on the device ``profile`` was measured on.
        reference: The unpruned architecture on the same device, or ``None`` when it cannot be
            built (then every figure against it is ``None`` with ``reference_note``).
        inputs: The batch the profile was measured with.
        profile: The final network's ``profile`` section (``macs``, ``nonzero_macs``, ``size_mb``,
            ``sparse_size_mb``, ``latency_ms``); values it lacks are ``None`` here too.
        reference_description: What the reference is, for the report.
        reference_note: Why there is no reference, when ``reference`` is ``None``.
        latency_warmup: Untimed batches before the reference latency is measured.
        latency_repeats: Timed batches of the reference latency (median), as for the profile.

    Returns:
        The section: :data:`REDUCTION_KEYS`, ``reference`` (the description) and ``notes``.
    """
    notes: dict[str, str] = {}
    total, nonzero = parameter_count(network), parameter_count(network, nonzero=True)
    measured: dict[str, Any] = {"params_unpruned": None, "macs_unpruned": None, "size_unpruned_mb": None}
    measured["reference_latency_ms"] = None
    if reference is None:
        for key in measured:
            notes[key] = reference_note or "the unpruned architecture could not be built"
    else:
        measured["params_unpruned"] = parameter_count(reference)
        measured["macs_unpruned"] = _attempt(notes, "macs_unpruned", lambda: count_macs(reference, inputs).macs)
        measured["size_unpruned_mb"] = _attempt(notes, "size_unpruned_mb", lambda: measure_size(reference).dense_mb)
        measured["reference_latency_ms"] = _attempt(
            notes,
            "reference_latency_ms",
            lambda: measure_latency(reference, inputs, latency_warmup, latency_repeats).median_ms,
        )
    section: dict[str, Any] = {
        "reference": reference_description if reference is not None else None,
        **measured,
        "params_total": total,
        "params_nonzero": nonzero,
        "macs": profile.get("macs"),
        "nonzero_macs": profile.get("nonzero_macs"),
        "size_mb": profile.get("size_mb"),
        "sparse_size_mb": profile.get("sparse_size_mb"),
        "latency_ms": profile.get("latency_ms"),
    }
    p_ref = section["params_unpruned"]
    section["removed_fraction"] = _fraction(None if p_ref is None else p_ref - total, p_ref)
    section["zeroed_fraction"] = _fraction(total - nonzero, p_ref)
    section["overall_reduction"] = _fraction(None if p_ref is None else p_ref - nonzero, p_ref)
    section["compression_ratio"] = _ratio(p_ref, nonzero)
    m_ref, m_dense, m_nonzero = section["macs_unpruned"], section["macs"], section["nonzero_macs"]
    section["macs_reduction"] = _fraction(None if m_ref is None or m_nonzero is None else m_ref - m_nonzero, m_ref)
    section["theoretical_speedup"] = _ratio(m_ref, m_nonzero)
    section["dense_kernel_speedup"] = _ratio(m_ref, m_dense)
    section["measured_speedup"] = _ratio(section["reference_latency_ms"], section["latency_ms"])
    known_notes = {**(profile.get("notes") or {}), **notes}
    for key in REDUCTION_KEYS:
        if section[key] is None and key not in notes:
            notes[key] = _missing_reason(key, section, known_notes)
    section["notes"] = notes
    return section


def stage_reduction(
    stage: Mapping[str, Any], params_unpruned: int | None, masked_entries: int, surgery: bool
) -> float | None:
    """The overall parameter reduction at a recorded pruning stage, in the same vocabulary.

    A stage records the mask sparsity at that moment (``sparsity``, a fraction of the masked
    entries) and, for structured methods, the parameter count after surgery (``params``). The
    zeroed part is ``sparsity * masked_entries / P_ref`` (the mask covers the same entries at
    every stage), the removed part ``(P_ref - params) / P_ref``.

    Args:
        stage: One recorded stage.
        params_unpruned: ``P_ref``, or ``None`` when unknown.
        masked_entries: Number of entries the run's final mask covers (0 without a mask).
        surgery: Whether the run removed anything physically.

    Returns:
        The fraction, or ``None`` when the stage does not say enough (no ``P_ref``, or a
        structured run's stage without a parameter count).
    """
    if not params_unpruned:
        return None
    params = stage.get("params")
    if isinstance(params, int) and not isinstance(params, bool):
        removed = (params_unpruned - params) / params_unpruned
    elif surgery:
        return None
    else:
        removed = 0.0
    sparsity = stage.get("sparsity") or 0.0
    return removed + float(sparsity) * masked_entries / params_unpruned


def _fraction(part: float | None, whole: float | None) -> float | None:
    if part is None or not whole:
        return None
    return part / whole


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


_OPERANDS = {
    "removed_fraction": ("params_unpruned",),
    "zeroed_fraction": ("params_unpruned",),
    "overall_reduction": ("params_unpruned",),
    "compression_ratio": ("params_unpruned", "params_nonzero"),
    "macs_reduction": ("macs_unpruned", "nonzero_macs"),
    "theoretical_speedup": ("macs_unpruned", "nonzero_macs"),
    "dense_kernel_speedup": ("macs_unpruned", "macs"),
    "measured_speedup": ("reference_latency_ms", "latency_ms"),
}


def _missing_reason(key: str, section: Mapping[str, Any], notes: Mapping[str, str]) -> str:
    """Why ``section[key]`` is ``None``: the note of the first missing operand, or a zero one."""
    for operand in _OPERANDS.get(key, (key,)):
        if section.get(operand) is None:
            return notes.get(operand) or f"{operand} was not measured"
    return f"{' / '.join(_OPERANDS.get(key, (key,)))}: a zero denominator"


def _attempt(notes: dict[str, str], key: str, measure: Any) -> Any:
    try:
        return measure()
    except Exception as error:  # noqa: BLE001 - the other figures stay useful
        notes[key] = f"measurement failed: {type(error).__name__}: {error}"
        return None


def masked_entry_count(mask: Mapping[str, Tensor] | None) -> int:
    """Number of entries a pruning mask covers (0 without one)."""
    return 0 if mask is None else sum(int(keep.numel()) for keep in mask.values())
