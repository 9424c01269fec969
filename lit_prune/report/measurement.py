"""The measured sections of a run report: sparsity, accuracy and the profile.

Latency, memory, energy, MACs and serialised size come from :mod:`lit_prune.profiling`; with
sparse inference the same measurements run on the sparse-weight copy of a masked network
(:func:`lit_prune.pruning.sparse_export.to_sparse_inference`, CSR or COO linear layers) or, with
``semi_structured``, on a copy whose 2:4 linear layers use NVIDIA's sparse tensor cores
(:mod:`lit_prune.pruning.semi_structured`, CUDA only: elsewhere the section says "needs CUDA" and
has no figures). A measurement that fails is ``None`` with the error in the section's ``notes``,
so the others are not lost.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from lit_prune.errors import UserError
from lit_prune.profiling import (
    count_macs,
    measure_energy,
    measure_latency,
    measure_memory,
    measure_size,
)
from lit_prune.pruning.parameters import PRUNABLE_LAYER_TYPES
from lit_prune.pruning.semi_structured import (
    masked_copy,
    semi_structured_plan,
    semi_structured_unsupported,
    to_semi_structured,
)
from lit_prune.pruning.sparse_export import to_sparse_inference

__all__ = ["SPARSE_INFERENCE_MODES", "accuracy_section", "measure_profile", "sparse_inference_mode", "sparsity_summary"]

SPARSE_INFERENCE_MODES = ("csr", "coo", "semi_structured")
"""What ``sparse_inference`` may measure besides nothing (``false``); ``true`` means ``csr``."""

_SEMI_STRUCTURED_DTYPE = torch.float16
_SEMI_STRUCTURED_FIGURES = ("latency_ms", "peak_memory_mb", "avg_memory_mb", "energy_mj", "max_abs_logit_difference")


def sparse_inference_mode(value: bool | str | None) -> str | None:
    """Reads the ``sparse_inference`` option: None for no sparse measurement, else one of the modes.

    ``true`` keeps its old meaning, ``csr`` (linear layers multiply sparse CSR weights, convolutions
    densify theirs); ``coo`` is the same with COO linear weights; ``semi_structured`` converts the
    2:4-sparse linear layers for the sparse tensor cores of a CUDA GPU.

    Raises:
        UserError: If the value is none of ``false``, ``true``, ``csr``, ``coo``, ``semi_structured``.
    """
    if value is None or value is False:
        return None
    if value is True:
        return "csr"
    if isinstance(value, str) and value in SPARSE_INFERENCE_MODES:
        return value
    raise UserError(
        f"sparse_inference must be false, true (the same as csr), {', '.join(SPARSE_INFERENCE_MODES)}; got {value!r}"
    )


def sparsity_summary(network: nn.Module, mask: Mapping[str, Tensor] | None) -> dict[str, Any]:
    """Sparsity of a network: from its pruning mask, or from its zero conv/linear weights.

    Args:
        network: The network.
        mask: Parameter name to bool keep-mask (``True`` = kept), or ``None``.

    Returns:
        ``global`` (pruned fraction over all masked entries, or without a mask the zero fraction
        over all conv/linear weights), ``layers`` (the same per parameter), ``source``
        (``"mask"`` or ``"zero weights"``) and ``zero_weight_fraction`` (the fraction of all
        conv/linear weights that are exactly zero, whatever the source).
    """
    weights = _prunable_weights(network)
    zero_count = sum(int((w == 0).sum()) for w in weights.values())
    weight_count = sum(w.numel() for w in weights.values())
    zero_fraction = zero_count / weight_count if weight_count else 0.0
    if mask is None:
        return {
            "global": zero_fraction,
            "layers": {name: int((w == 0).sum()) / w.numel() for name, w in weights.items() if w.numel()},
            "source": "zero weights",
            "zero_weight_fraction": zero_fraction,
        }
    pruned = {name: int((~keep).sum()) for name, keep in mask.items()}
    total = sum(keep.numel() for keep in mask.values())
    return {
        "global": sum(pruned.values()) / total if total else 0.0,
        "layers": {name: pruned[name] / keep.numel() for name, keep in mask.items() if keep.numel()},
        "source": "mask",
        "zero_weight_fraction": zero_fraction,
    }


def accuracy_section(
    test: Mapping[str, float | None] | None,
    train: Mapping[str, float | None] | None,
    test_note: str = "",
    train_note: str = "",
    test_samples: int | None = None,
    train_samples: int | None = None,
    source: str = "",
) -> dict[str, Any]:
    """Assembles the ``accuracy`` section, with a note for every missing value.

    Args:
        test: ``{"top1": ..., "top5": ...}`` on the test set, or ``None`` when not measured.
        train: The same on the training set, or ``None``.
        test_note: Why ``test`` is ``None``.
        train_note: Why ``train`` is ``None``.
        test_samples: Number of test images evaluated, when known.
        train_samples: Number of training images evaluated, when known.
        source: How the numbers were obtained (e.g. which loop or evaluation).

    Returns:
        The section: ``test_top1``, ``test_top5``, ``train_top1``, ``train_top5``, ``notes``,
        ``test_samples``, ``train_samples``, ``source``.
    """
    section: dict[str, Any] = {}
    notes: dict[str, str] = {}
    for split, values, note in (("test", test, test_note), ("train", train, train_note)):
        for k in ("top1", "top5"):
            key = f"{split}_{k}"
            value = None if values is None else values.get(k)
            section[key] = None if value is None else float(value)
            if value is None:
                if values is None:
                    notes[key] = note or "not measured"
                else:
                    notes[key] = "not measured: top-5 needs at least 5 classes" if k == "top5" else "not measured"
    section.update(notes=notes, test_samples=test_samples, train_samples=train_samples, source=source)
    return section


def measure_profile(
    network: nn.Module,
    inputs: Tensor,
    mask: Mapping[str, Tensor] | None = None,
    *,
    warmup: int = 3,
    repeats: int = 10,
    energy_repeats: int = 10,
    sparse_inference: bool | str = False,
    onnxruntime: bool = False,
) -> dict[str, Any]:
    """Measures the ``profile`` section of a report on the network's own device.

    Latency is the median (and the mean) of ``repeats`` timed batches after ``warmup`` untimed ones; memory is
    the peak and time-averaged live memory of one forward pass; energy is read from RAPL/NVML
    counters over ``energy_repeats`` batches (see ``lit_prune.profiling``). MACs are per image;
    sizes are of the serialised state dict. With ``sparse_inference`` and a mask, the same
    latency, memory and energy are measured on ``to_sparse_inference(network, mask)`` (sparse
    CSR linear layers; convolutions densify their weight at each call because PyTorch has no
    sparse convolution), which shows what unstructured sparsity does and does not buy on stock
    kernels. ``sparse_inference="coo"`` uses COO linear weights instead of CSR;
    ``"semi_structured"`` measures the 2:4 linear layers on sparse tensor cores in float16 against
    the same network dense in float16 (see :func:`_measure_semi_structured`; on a CPU only the note
    "needs CUDA" and which layers would be converted). With ``onnxruntime`` the network is exported
    to ONNX and onnxruntime's latency on the same batch is added (``onnxruntime_latency_ms``, details
    under ``onnxruntime``; :func:`lit_prune.export.runtime_profile.profile_onnxruntime`).

    A measurement that raises is reported as ``None`` with the error in ``notes`` (and a
    warning), so a failing measurement at the end of a long run does not lose the others.

    Args:
        network: The network, on the device to profile on.
        inputs: A batch of model inputs on that device.
        mask: The pruning mask, if any (sparse size and sparse inference use it).
        warmup: Untimed batches before the latency measurement.
        repeats: Timed batches of the latency measurement.
        energy_repeats: Batches inside the energy window.
        sparse_inference: ``False``, ``True`` (= ``"csr"``), ``"csr"``, ``"coo"`` or
            ``"semi_structured"``: which sparse-inference copy to measure too.
        onnxruntime: Whether to measure onnxruntime's latency on an ONNX export too.

    Returns:
        The section (keys in :data:`lit_prune.report.schema.PROFILE_KEYS` plus ``energy_note``, ``device``,
        ``batch_size``, ``notes`` and details such as ``latency_min_ms``), with
        ``sparse_inference`` a dictionary of its measurements or ``None``.
    """
    mode = sparse_inference_mode(sparse_inference)
    notes: dict[str, str] = {}
    latency = _attempt(notes, "latency_ms", lambda: measure_latency(network, inputs, warmup, repeats))
    memory = _attempt(notes, "peak_memory_mb", lambda: measure_memory(network, inputs))
    energy = _attempt(notes, "energy_mj", lambda: measure_energy(network, inputs, energy_repeats))
    macs = _attempt(notes, "macs", lambda: count_macs(network, inputs))
    size = _attempt(notes, "size_mb", lambda: measure_size(network, mask))
    for key, source in (("avg_memory_mb", "peak_memory_mb"), ("nonzero_macs", "macs"), ("sparse_size_mb", "size_mb")):
        if source in notes:
            notes[key] = notes[source]
    energy_note = energy.note if energy is not None else notes["energy_mj"]
    if energy is not None and energy.energy_mj is None:
        notes["energy_mj"] = energy.note
    profile = {
        "latency_ms": None if latency is None else latency.median_ms,
        "latency_mean_ms": None if latency is None else latency.mean_ms,
        "latency_min_ms": None if latency is None else latency.min_ms,
        "latency_max_ms": None if latency is None else latency.max_ms,
        "latency_repeats": repeats,
        "peak_memory_mb": None if memory is None else memory.peak_mb,
        "avg_memory_mb": None if memory is None else memory.avg_mb,
        "memory_method": None if memory is None else memory.method,
        "energy_mj": None if energy is None else energy.energy_mj,
        "energy_note": energy_note,
        "energy_per_domain_mj": {} if energy is None else dict(energy.per_domain_mj),
        "macs": None if macs is None else macs.macs,
        "nonzero_macs": None if macs is None else macs.nonzero_macs,
        "size_mb": None if size is None else size.dense_mb,
        "sparse_size_mb": None if size is None else size.sparse_mb,
        "size_bytes": None if size is None else size.dense_bytes,
        "sparse_size_bytes": None if size is None else size.sparse_bytes,
        "device": str(inputs.device),
        "batch_size": int(inputs.shape[0]),
        "input_shape": list(inputs.shape[1:]),
        "notes": notes,
    }
    if mode is None:
        profile["sparse_inference"] = None
        notes["sparse_inference"] = "not requested (set sparse_inference: true, coo or semi_structured to measure it)"
    elif mode == "semi_structured":
        profile["sparse_inference"] = _measure_semi_structured(network, inputs, mask, warmup, repeats, energy_repeats)
        if profile["sparse_inference"]["latency_ms"] is None:
            notes["sparse_inference"] = profile["sparse_inference"]["note"]
    elif mask is None:
        profile["sparse_inference"] = None
        notes["sparse_inference"] = "requested, but the model has no pruning mask to run sparse"
    else:
        profile["sparse_inference"] = _measure_sparse_inference(
            network, inputs, mask, warmup, repeats, energy_repeats, profile["latency_ms"], mode
        )
    profile.update(_onnxruntime_figures(network, inputs, warmup, repeats, onnxruntime, profile["latency_ms"], notes))
    return profile


def _onnxruntime_figures(
    network: nn.Module,
    inputs: Tensor,
    warmup: int,
    repeats: int,
    requested: bool,
    eager_latency_ms: float | None,
    notes: dict[str, str],
) -> dict[str, Any]:
    """``onnxruntime_latency_ms`` and the ``onnxruntime`` details, or ``None`` with the reason in ``notes``."""
    details = None
    if requested:
        from lit_prune.export.runtime_profile import profile_onnxruntime

        details = _attempt(
            notes, "onnxruntime_latency_ms", lambda: profile_onnxruntime(network, inputs, warmup, repeats)
        )
    else:
        notes["onnxruntime_latency_ms"] = "not requested (set onnxruntime: true to measure it)"
    if details is not None and eager_latency_ms:
        details["latency_ratio_vs_eager"] = details["latency_ms"] / eager_latency_ms
    return {"onnxruntime_latency_ms": None if details is None else details["latency_ms"], "onnxruntime": details}


def _prunable_weights(network: nn.Module) -> dict[str, Tensor]:
    """Weights of conv and linear layers, by parameter name, shared ones once."""
    weights: dict[str, Tensor] = {}
    seen: set[int] = set()
    for module_name, module in network.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, PRUNABLE_LAYER_TYPES) and isinstance(weight, Tensor) and id(weight) not in seen:
            seen.add(id(weight))
            weights[f"{module_name}.weight" if module_name else "weight"] = weight.detach()
    return weights


def _attempt(notes: dict[str, str], key: str, measure: Callable[[], Any]) -> Any:
    """Runs one measurement; on an error records it under ``notes[key]`` and returns ``None``."""
    try:
        return measure()
    except Exception as error:  # noqa: BLE001 - one failed measurement must not lose the others
        notes[key] = f"measurement failed: {type(error).__name__}: {error}"
        warnings.warn(f"profiling: {key} could not be measured ({type(error).__name__}: {error})", stacklevel=3)
        return None


def _measure_sparse_inference(
    network: nn.Module,
    inputs: Tensor,
    mask: Mapping[str, Tensor],
    warmup: int,
    repeats: int,
    energy_repeats: int,
    dense_latency_ms: float | None,
    linear_layout: str = "csr",
) -> dict[str, Any] | None:
    notes: dict[str, str] = {}
    sparse_model = _attempt(notes, "model", lambda: to_sparse_inference(network, mask, linear_layout))
    if sparse_model is None:
        return {"note": "the sparse-inference copy could not be built", "notes": notes}
    latency = _attempt(notes, "latency_ms", lambda: measure_latency(sparse_model, inputs, warmup, repeats))
    memory = _attempt(notes, "peak_memory_mb", lambda: measure_memory(sparse_model, inputs))
    energy = _attempt(notes, "energy_mj", lambda: measure_energy(sparse_model, inputs, energy_repeats))
    difference = _attempt(notes, "max_abs_logit_difference", lambda: _max_difference(network, sparse_model, inputs))
    if "peak_memory_mb" in notes:
        notes["avg_memory_mb"] = notes["peak_memory_mb"]
    latency_ms = None if latency is None else latency.median_ms
    ratio = None if latency_ms is None or not dense_latency_ms else latency_ms / dense_latency_ms
    return {
        "latency_ms": latency_ms,
        "latency_min_ms": None if latency is None else latency.min_ms,
        "latency_max_ms": None if latency is None else latency.max_ms,
        "latency_ratio_vs_dense": ratio,
        "peak_memory_mb": None if memory is None else memory.peak_mb,
        "avg_memory_mb": None if memory is None else memory.avg_mb,
        "energy_mj": None if energy is None else energy.energy_mj,
        "energy_note": energy.note if energy is not None else notes["energy_mj"],
        "max_abs_logit_difference": difference,
        "sparse_layers": list(sparse_model.sparse_layers),
        "mode": linear_layout,
        "linear_layout": linear_layout,
        "note": (
            f"masked linear layers multiply with sparse {linear_layout.upper()} weights (torch.sparse.mm); masked "
            "convolutions keep sparse weights but densify them at every call, since PyTorch has no "
            "sparse convolution kernel."
        ),
        "notes": notes,
    }


def _measure_semi_structured(
    network: nn.Module,
    inputs: Tensor,
    mask: Mapping[str, Tensor] | None,
    warmup: int,
    repeats: int,
    energy_repeats: int,
) -> dict[str, Any]:
    """Latency, memory and energy of the 2:4 semi-structured copy against the dense copy, both in float16.

    Where the device cannot run the kernels (any CPU) or no linear layer is eligible, every figure
    is ``None`` and ``note`` says why; ``plan`` still lists the layers that would be converted.
    """
    notes: dict[str, str] = {}
    dtype = _SEMI_STRUCTURED_DTYPE
    plan = _attempt(notes, "plan", lambda: semi_structured_plan(network, mask, dtype))
    section: dict[str, Any] = dict.fromkeys(_SEMI_STRUCTURED_FIGURES)
    section.update(
        mode="semi_structured",
        dtype=str(dtype).removeprefix("torch."),
        latency_min_ms=None,
        latency_max_ms=None,
        latency_ratio_vs_dense=None,
        dense_latency_ms=None,
        sparse_layers=[],
        plan=None if plan is None else plan.to_dict(),
        notes=notes,
    )
    reason = semi_structured_unsupported(inputs.device)
    if reason is None and plan is None:
        reason = "the layers to convert could not be chosen (see notes.plan)"
    elif reason is None and not plan.eligible:
        reason = "no linear layer is 2:4 sparse with a shape the kernels take (see plan.left_out)"
    converted = None if reason is not None else _attempt(notes, "model", lambda: to_semi_structured(network, mask))
    if reason is None and converted is None:
        reason = "the semi-structured copy could not be built (see notes.model)"
    if reason is not None:
        notes.update(dict.fromkeys(_SEMI_STRUCTURED_FIGURES, reason))
        return {**section, "note": reason, "energy_note": reason}
    sparse_model, plan = converted
    dense_model = masked_copy(network, mask, dtype)
    half_inputs = inputs.to(dtype)
    dense = _attempt(notes, "dense_latency_ms", lambda: measure_latency(dense_model, half_inputs, warmup, repeats))
    latency = _attempt(notes, "latency_ms", lambda: measure_latency(sparse_model, half_inputs, warmup, repeats))
    memory = _attempt(notes, "peak_memory_mb", lambda: measure_memory(sparse_model, half_inputs))
    energy = _attempt(notes, "energy_mj", lambda: measure_energy(sparse_model, half_inputs, energy_repeats))
    difference = _attempt(
        notes, "max_abs_logit_difference", lambda: _max_difference(dense_model, sparse_model, half_inputs)
    )
    if "peak_memory_mb" in notes:
        notes["avg_memory_mb"] = notes["peak_memory_mb"]
    latency_ms = None if latency is None else latency.median_ms
    dense_ms = None if dense is None else dense.median_ms
    section.update(
        latency_ms=latency_ms,
        latency_min_ms=None if latency is None else latency.min_ms,
        latency_max_ms=None if latency is None else latency.max_ms,
        dense_latency_ms=dense_ms,
        latency_ratio_vs_dense=None if latency_ms is None or not dense_ms else latency_ms / dense_ms,
        peak_memory_mb=None if memory is None else memory.peak_mb,
        avg_memory_mb=None if memory is None else memory.avg_mb,
        energy_mj=None if energy is None else energy.energy_mj,
        energy_note=energy.note if energy is not None else notes["energy_mj"],
        max_abs_logit_difference=difference,
        sparse_layers=list(plan.eligible),
        plan=plan.to_dict(),
        note=(
            f"{len(plan.eligible)} linear layers hold 2:4 semi-structured float16 weights ({plan.backend}, "
            "torch.sparse.to_sparse_semi_structured); compared with the same network dense in float16; "
            "convolutions and the other layers stay dense."
        ),
    )
    return section


def _max_difference(network: nn.Module, sparse_model: nn.Module, inputs: Tensor) -> float:
    """Largest absolute difference between the logits of the dense and the sparse model."""
    modes = [(module, module.training) for module in network.modules()]
    network.eval()
    try:
        with torch.inference_mode():
            return float((network(inputs) - sparse_model(inputs)).abs().max())
    finally:
        for module, training in modes:
            module.training = training
