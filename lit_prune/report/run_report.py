"""The report of one run: ``report.json`` (for tools) and ``report.md`` (for people, see
:mod:`lit_prune.report_markdown`).

The report puts a run's accuracy next to what its pruning bought: sparsity, parameters, serialised
size (dense and sparse), MACs (dense and non-zero), latency, peak and average memory, and energy,
plus the stages the pruning callbacks recorded (baseline, pruned, rounds, fine-tuned). Its keys
are the contract in ``DESIGN.md``::

    model, dataset, method,
    sparsity: {global, layers: {param_name: fraction}},
    params: {total, nonzero},
    accuracy: {test_top1, test_top5, train_top1, train_top5},     # fractions in [0, 1]
    profile: {latency_ms, peak_memory_mb, avg_memory_mb, energy_mj, energy_note,
              macs, nonzero_macs, size_mb, sparse_size_mb, device, batch_size},
    stages: [{name, epoch, sparsity, overall_reduction, val_top1, ...}, ...]

plus ``params.unpruned``, ``reduction`` (how much was pruned against the unpruned architecture,
in one vocabulary for every method: :mod:`lit_prune.report_reduction`) and ``weights`` (where
the start weights came from; published accuracies of pretrained weights are repeated in
``accuracy.published`` beside the differences).

A value that could not be measured is ``null`` and the section's ``notes`` (``energy_note`` for
energy) say why; it is never 0. Memory and size are in MiB (2**20 bytes) although the keys say
``mb``. Nothing here imports Lightning: ``callbacks.profiling.ProfilingCallback`` gathers the
inputs from a trainer and calls these functions.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lit_prune import __version__
from lit_prune.atomic_files import atomic_write
from lit_prune.profiling import (
    count_macs,
    measure_energy,
    measure_latency,
    measure_memory,
    measure_size,
)
from lit_prune.pruning.parameters import PRUNABLE_LAYER_TYPES
from lit_prune.pruning.sparse_export import to_sparse_inference
from lit_prune.report_markdown import render_markdown
from lit_prune.report_reduction import REDUCTION_KEYS, masked_entry_count, stage_reduction

__all__ = [
    "ACCURACY_KEYS",
    "DATASET_NAMES",
    "PROFILE_KEYS",
    "REPORT_JSON",
    "REPORT_MD",
    "accuracy_section",
    "build_report",
    "check_report",
    "dataset_name",
    "load_report",
    "measure_profile",
    "parameter_counts",
    "sparsity_summary",
    "to_jsonable",
    "write_report",
]

REPORT_JSON = "report.json"
"""File name of the machine-readable report inside a run directory."""

REPORT_MD = "report.md"
"""File name of the human-readable report inside a run directory."""

DATASET_NAMES = {
    "CIFAR10DataModule": "cifar10",
    "CIFAR100DataModule": "cifar100",
    "DigitsDataModule": "digits",
}
"""Readable dataset names of the data modules lit-prune ships, by class name."""

ACCURACY_KEYS = ("test_top1", "test_top5", "train_top1", "train_top5")
"""Accuracy entries of a report: fractions in [0, 1] or ``None`` with a note."""

PROFILE_KEYS = (
    "latency_ms",
    "peak_memory_mb",
    "avg_memory_mb",
    "energy_mj",
    "macs",
    "nonzero_macs",
    "size_mb",
    "sparse_size_mb",
)
"""Measured profile entries of a report: numbers or ``None`` with a note."""

_NUMBER = (int, float)
_TYPES: dict[str, Any] = {
    "model": str,
    "dataset": str,
    "method": str,
    "sparsity": {"global": _NUMBER, "layers": dict},
    "params": {"total": int, "nonzero": int},
    "accuracy": {**{key: (*_NUMBER, type(None)) for key in ACCURACY_KEYS}, "notes": dict},
    "profile": {
        **{key: (*_NUMBER, type(None)) for key in PROFILE_KEYS},
        "macs": (int, type(None)),
        "nonzero_macs": (int, type(None)),
        "energy_note": str,
        "device": str,
        "batch_size": (int, type(None)),
        "notes": dict,
    },
    "stages": list,
}


def dataset_name(datamodule: object | None) -> str:
    """A readable name for the data a run used.

    Args:
        datamodule: The data module (any object), or ``None`` when the run had none.

    Returns:
        ``"cifar10"``, ``"cifar100"`` or ``"digits"`` for lit-prune's data modules, otherwise the
        class name; ``"unknown"`` without a data module.
    """
    if datamodule is None:
        return "unknown"
    class_name = type(datamodule).__name__
    return DATASET_NAMES.get(class_name, class_name)


def parameter_counts(network: nn.Module) -> dict[str, int]:
    """Counts the parameters of a network and those that are not zero.

    Args:
        network: The network; shared parameters are counted once.

    Returns:
        ``{"total": ..., "nonzero": ...}``.
    """
    parameters = list({id(p): p for p in network.parameters()}.values())
    return {
        "total": sum(p.numel() for p in parameters),
        "nonzero": sum(int(torch.count_nonzero(p.detach())) for p in parameters),
    }


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
    sparse_inference: bool = False,
) -> dict[str, Any]:
    """Measures the ``profile`` section of a report on the network's own device.

    Latency is the median (and the mean) of ``repeats`` timed batches after ``warmup`` untimed ones; memory is
    the peak and time-averaged live memory of one forward pass; energy is read from RAPL/NVML
    counters over ``energy_repeats`` batches (see ``lit_prune.profiling``). MACs are per image;
    sizes are of the serialised state dict. With ``sparse_inference`` and a mask, the same
    latency, memory and energy are measured on ``to_sparse_inference(network, mask)`` (sparse
    CSR linear layers; convolutions densify their weight at each call because PyTorch has no
    sparse convolution), which shows what unstructured sparsity does and does not buy on stock
    kernels.

    A measurement that raises is reported as ``None`` with the error in ``notes`` (and a
    warning), so a failing measurement at the end of a long run does not lose the others.

    Args:
        network: The network, on the device to profile on.
        inputs: A batch of model inputs on that device.
        mask: The pruning mask, if any (sparse size and sparse inference use it).
        warmup: Untimed batches before the latency measurement.
        repeats: Timed batches of the latency measurement.
        energy_repeats: Batches inside the energy window.
        sparse_inference: Whether to measure the sparse-inference copy too.

    Returns:
        The section (keys in :data:`PROFILE_KEYS` plus ``energy_note``, ``device``,
        ``batch_size``, ``notes`` and details such as ``latency_min_ms``), with
        ``sparse_inference`` a dictionary of its measurements or ``None``.
    """
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
    if not sparse_inference:
        profile["sparse_inference"] = None
        notes["sparse_inference"] = "not requested (set sparse_inference: true to measure it)"
    elif mask is None:
        profile["sparse_inference"] = None
        notes["sparse_inference"] = "requested, but the model has no pruning mask to run sparse"
    else:
        profile["sparse_inference"] = _measure_sparse_inference(
            network, inputs, mask, warmup, repeats, energy_repeats, profile["latency_ms"]
        )
    return profile


def build_report(
    *,
    model: str,
    dataset: str,
    method: str,
    network: nn.Module,
    mask: Mapping[str, Tensor] | None,
    accuracy: Mapping[str, Any],
    profile: Mapping[str, Any],
    stages: Sequence[Mapping[str, Any]],
    reduction: Mapping[str, Any] | None = None,
    weights: Mapping[str, Any] | None = None,
    surgery: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Assembles and checks a run report.

    Args:
        model: Name of the network (registry name or class name).
        dataset: Readable dataset name (see :func:`dataset_name`).
        method: Description of the pruning method, ``"dense"`` for none.
        network: The final network (for sparsity and parameter counts).
        mask: Its pruning mask, or ``None``.
        accuracy: The section built by :func:`accuracy_section`.
        profile: The section measured by :func:`measure_profile`.
        stages: The stages recorded by pruning callbacks, in order; each gets its
            ``overall_reduction`` (:func:`lit_prune.report_reduction.stage_reduction`).
        reduction: The section of :func:`lit_prune.report_reduction.reduction_section`; its
            ``params_unpruned`` also becomes ``params.unpruned``.
        weights: Where the run's start weights came from (``lit_prune.models.weights_source``);
            published test accuracies in it (``published``) are copied to ``accuracy.published``
            with the differences to the measured ones.
        surgery: Whether the run removed channels, heads or units physically.
        extra: Further top-level entries (run directory, trigger, epoch, ...).

    Returns:
        The report as JSON-ready data, with ``created_at``, ``lit_prune_version`` and
        ``torch_version`` added.

    Raises:
        ValueError: If a required entry is missing, has the wrong type, or is ``None`` without
            a note.
    """
    params: dict[str, Any] = parameter_counts(network)
    params["unpruned"] = None if reduction is None else reduction.get("params_unpruned")
    masked = masked_entry_count(mask)
    report: dict[str, Any] = {
        "model": model,
        "dataset": dataset,
        "method": method,
        "sparsity": sparsity_summary(network, mask),
        "params": params,
        "accuracy": _with_published(accuracy, weights),
        "profile": dict(profile),
        "stages": [
            {**stage, "overall_reduction": stage_reduction(stage, params["unpruned"], masked, surgery)}
            for stage in stages
        ],
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "lit_prune_version": __version__,
        "torch_version": torch.__version__,
    }
    if reduction is not None:
        report["reduction"] = dict(reduction)
    if weights is not None:
        report["weights"] = dict(weights)
    report.update(extra or {})
    report = to_jsonable(report)
    check_report(report)
    return report


def check_report(report: Mapping[str, Any], source: str = "report") -> None:
    """Checks that a report has the contract's keys and types, and a note for every ``None``.

    Args:
        report: A report as built by :func:`build_report` or read from ``report.json``.
        source: What to call the report in error messages (e.g. its path).

    Raises:
        ValueError: If an entry is missing or has the wrong type, a fraction is outside [0, 1],
            or a measured value is ``None`` without a note saying why.
    """
    if not isinstance(report, Mapping):
        raise ValueError(f"{source} must be a JSON object, got {type(report).__name__}")
    problems = _type_problems(report, _TYPES, "")
    if problems:
        raise ValueError(f"{source} does not follow the report contract: " + "; ".join(problems))
    fractions = {f"accuracy.{key}": report["accuracy"][key] for key in ACCURACY_KEYS}
    fractions["sparsity.global"] = report["sparsity"]["global"]
    for name, value in fractions.items():
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError(f"{source}: {name} must be a fraction in [0, 1], got {value}")
    for section, keys in (("accuracy", ACCURACY_KEYS), ("profile", PROFILE_KEYS)):
        for key in keys:
            if report[section][key] is None and not (
                report[section]["notes"].get(key) or (key == "energy_mj" and report["profile"]["energy_note"])
            ):
                raise ValueError(f"{source}: {section}.{key} is null without a note in {section}.notes saying why")
    _check_reduction(report, source)
    for index, stage in enumerate(report["stages"]):
        if not isinstance(stage, Mapping) or not isinstance(stage.get("name"), str):
            raise ValueError(f"{source}: stages[{index}] must be an object with a string 'name', got {stage!r}")


def to_jsonable(value: Any) -> Any:
    """Converts a value to plain JSON data.

    Tensors become numbers or lists, tuples lists, paths and devices strings, mapping keys
    strings, and non-finite floats ``None`` (JSON has no NaN).

    Args:
        value: Nested dictionaries, sequences, tensors and scalars.

    Returns:
        The same data made of ``dict``, ``list``, ``str``, ``int``, ``float``, ``bool`` and ``None``.

    Raises:
        TypeError: If a value has no JSON form.
    """
    if isinstance(value, Tensor):
        value = value.detach().cpu().tolist()
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item) for item in value]
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (Path, torch.device, torch.dtype)):
        return str(value)
    if hasattr(value, "item") and callable(value.item):
        return to_jsonable(value.item())
    raise TypeError(f"cannot store a {type(value).__name__} in a report; use numbers, strings, lists or dicts")


def write_report(report: Mapping[str, Any], run_dir: str | Path) -> tuple[Path, Path]:
    """Writes ``report.md`` and ``report.json`` into a run directory, each atomically.

    Each file is written to a temporary file in the same directory and renamed over the target,
    so a reader never sees a half-written file; ``report.json`` is written last, so its presence
    means both are complete.

    Args:
        report: A report that passes :func:`check_report`.
        run_dir: The run directory (created if missing).

    Returns:
        The paths of ``report.json`` and ``report.md``.

    Raises:
        ValueError: If the report does not follow the contract.
    """
    check_report(report)
    directory = Path(run_dir)
    directory.mkdir(parents=True, exist_ok=True)
    markdown_path = directory / REPORT_MD
    json_path = directory / REPORT_JSON
    markdown = render_markdown(report)
    data = json.dumps(report, indent=2, allow_nan=False) + "\n"
    atomic_write(markdown_path, lambda path: path.write_text(markdown, encoding="utf-8"))
    atomic_write(json_path, lambda path: path.write_text(data, encoding="utf-8"))
    return json_path, markdown_path


def load_report(run_dir: str | Path) -> dict[str, Any]:
    """Reads and checks the ``report.json`` of a run directory.

    Args:
        run_dir: The run directory.

    Returns:
        The report.

    Raises:
        FileNotFoundError: If the directory or its ``report.json`` does not exist.
        ValueError: If the file is not valid JSON or does not follow the report contract.
    """
    directory = Path(run_dir)
    path = directory / REPORT_JSON
    if not directory.is_dir():
        raise FileNotFoundError(f"run directory {directory} does not exist")
    if not path.is_file():
        raise FileNotFoundError(
            f"{directory} has no {REPORT_JSON}: run `lit-prune fit` or `lit-prune test` with "
            "callbacks.profiling.ProfilingCallback among the trainer callbacks "
            "(--trainer.callbacks+=callbacks.profiling.ProfilingCallback) to write one"
        )
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path} is not valid JSON ({error}); run fit or test with the ProfilingCallback again"
        ) from None
    check_report(report, source=str(path))
    return report


def _with_published(accuracy: Mapping[str, Any], weights: Mapping[str, Any] | None) -> dict[str, Any]:
    """The accuracy section, plus the published figures of the start weights and the differences."""
    section = dict(accuracy)
    published = (weights or {}).get("published")
    if not published:
        return section
    entry = dict(published)
    for key in ("test_top1", "test_top5"):
        measured, reference = section.get(key), published.get(key)
        entry[f"difference_{key}"] = None if measured is None or reference is None else measured - reference
    section["published"] = entry
    return section


def _check_reduction(report: Mapping[str, Any], source: str) -> None:
    """Checks the ``reduction`` section when there is one (reports before it have none)."""
    reduction = report.get("reduction")
    if reduction is None:
        return
    if not isinstance(reduction, Mapping) or not isinstance(reduction.get("notes"), Mapping):
        raise ValueError(f"{source}: reduction must be an object with a 'notes' object")
    for key in REDUCTION_KEYS:
        if key not in reduction:
            raise ValueError(f"{source}: reduction.{key} is missing")
        value = reduction[key]
        if value is None:
            if not reduction["notes"].get(key):
                raise ValueError(f"{source}: reduction.{key} is null without a note in reduction.notes saying why")
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{source}: reduction.{key} must be a number or null, got {type(value).__name__}")
    for key in ("removed_fraction", "zeroed_fraction", "overall_reduction"):
        value = reduction[key]
        if value is not None and not -1e-9 <= value <= 1.0 + 1e-9:
            raise ValueError(f"{source}: reduction.{key} must be a fraction in [0, 1], got {value}")


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
) -> dict[str, Any] | None:
    notes: dict[str, str] = {}
    sparse_model = _attempt(notes, "model", lambda: to_sparse_inference(network, mask))
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
        "linear_layout": "csr",
        "note": (
            "masked linear layers multiply with sparse CSR weights (torch.sparse.mm); masked "
            "convolutions keep sparse weights but densify them at every call, since PyTorch has no "
            "sparse convolution kernel."
        ),
        "notes": notes,
    }


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


def _type_problems(value: Mapping[str, Any], spec: Mapping[str, Any], prefix: str) -> list[str]:
    problems = []
    for key, expected in spec.items():
        name = f"{prefix}{key}"
        if key not in value:
            problems.append(f"missing {name}")
        elif isinstance(expected, Mapping):
            if isinstance(value[key], Mapping):
                problems += _type_problems(value[key], expected, f"{name}.")
            else:
                problems.append(f"{name} must be an object, got {type(value[key]).__name__}")
        elif isinstance(value[key], bool) or not isinstance(value[key], expected):
            allowed = expected if isinstance(expected, tuple) else (expected,)
            names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
            problems.append(f"{name} must be {names}, got {type(value[key]).__name__}")
    return problems
