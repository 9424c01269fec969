"""The contract of a run report: the keys of ``report.json``, their types, and the checks.

A run report puts a run's accuracy next to what its pruning bought: sparsity, parameters,
serialised size (dense and sparse), MACs (dense and non-zero), latency, peak and average memory,
and energy, plus the stages the pruning callbacks recorded (baseline, pruned, rounds,
fine-tuned). Its keys are the contract in ``DESIGN.md``::

    model, dataset, method,
    sparsity: {global, layers: {param_name: fraction}},
    params: {total, nonzero},
    accuracy: {test_top1, test_top5, train_top1, train_top5},     # fractions in [0, 1]
    profile: {latency_ms, peak_memory_mb, avg_memory_mb, energy_mj, energy_note,
              macs, nonzero_macs, size_mb, sparse_size_mb, device, batch_size},
    stages: [{name, epoch, sparsity, overall_reduction, val_top1, ...}, ...]

plus ``params.unpruned``, ``reduction`` (how much was pruned against the unpruned architecture,
in one vocabulary for every method: :mod:`lit_prune.report.reduction`) and ``weights`` (where
the start weights came from; published accuracies of pretrained weights are repeated in
``accuracy.published`` beside the differences), ``profile.onnxruntime_latency_ms`` (with
``profile.onnxruntime``: provider, exporter, logit difference) when the profiling callback was asked
for ``onnxruntime: true`` and, when ``callbacks.robustness.RobustnessEvaluation``
ran, ``robustness: {clean_top1, fgsm_top1, pgd_top1, epsilon, step_size, steps, restarts, samples}``
(top-1 clean and under L∞ attacks in pixel units; ``rounds`` with robust convergence per round).

A value that could not be measured is ``null`` and the section's ``notes`` (``energy_note`` for
energy) say why; it is never 0. Memory and size are in MiB (2**20 bytes) although the keys say
``mb``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lit_prune.report.reduction import REDUCTION_KEYS

__all__ = [
    "ACCURACY_KEYS",
    "DATASET_NAMES",
    "OPTIONAL_PROFILE_KEYS",
    "PROFILE_KEYS",
    "REPORT_JSON",
    "ROBUSTNESS_KEYS",
    "REPORT_MD",
    "check_report",
    "dataset_name",
    "to_jsonable",
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

OPTIONAL_PROFILE_KEYS = ("onnxruntime_latency_ms",)
"""Profile entries of newer reports only (``ProfilingCallback(onnxruntime=True)``), checked where present."""

ROBUSTNESS_KEYS = ("clean_top1", "fgsm_top1", "pgd_top1")
"""Accuracies of the ``robustness`` section: fractions in [0, 1] or ``None`` with a note."""

_NUMBER = (int, float)
_ROBUSTNESS_SETTINGS = {"epsilon": _NUMBER, "step_size": _NUMBER, "steps": int, "restarts": int, "samples": int}
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
    _check_optional_profile(report["profile"], source)
    _check_reduction(report, source)
    _check_robustness(report, source)
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


def _check_optional_profile(profile: Mapping[str, Any], source: str) -> None:
    """Checks the profile entries older reports lack: a number, or ``None`` with a note, where present."""
    for key in OPTIONAL_PROFILE_KEYS:
        if key not in profile:
            continue
        value = profile[key]
        if value is None and not profile["notes"].get(key):
            raise ValueError(f"{source}: profile.{key} is null without a note in profile.notes saying why")
        if value is not None and (isinstance(value, bool) or not isinstance(value, _NUMBER)):
            raise ValueError(f"{source}: profile.{key} must be a number or null, got {type(value).__name__}")


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


def _check_robustness(report: Mapping[str, Any], source: str) -> None:
    """Checks the ``robustness`` section when there is one (runs without RobustnessEvaluation have none)."""
    if "robustness" not in report:
        return
    section = report["robustness"]
    if not isinstance(section, Mapping) or not isinstance(section.get("notes"), Mapping):
        raise ValueError(f"{source}: robustness must be an object with a 'notes' object")
    spec = {**{key: (*_NUMBER, type(None)) for key in ROBUSTNESS_KEYS}, **_ROBUSTNESS_SETTINGS}
    problems = _type_problems(section, spec, "robustness.")
    if problems:
        raise ValueError(f"{source} does not follow the report contract: " + "; ".join(problems))
    for key in ROBUSTNESS_KEYS:
        value = section[key]
        if value is None and not section["notes"].get(key):
            raise ValueError(f"{source}: robustness.{key} is null without a note in robustness.notes saying why")
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError(f"{source}: robustness.{key} must be a fraction in [0, 1], got {value}")
    if not 0.0 <= section["epsilon"] <= 1.0:
        raise ValueError(f"{source}: robustness.epsilon must lie in [0, 1] (pixel units), got {section['epsilon']}")


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
