"""One run's report assembled, written as ``report.md`` and ``report.json``, and read back.

``callbacks.profiling.ProfilingCallback`` gathers the inputs from a trainer and calls
:func:`build_report` and :func:`write_report`; ``lit-prune report`` and the sweep runner read
reports with :func:`load_report`. ``report.md`` is rendered by :mod:`lit_prune.report.markdown`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lit_prune import __version__
from lit_prune.atomic_files import atomic_write
from lit_prune.pruning.parameters import parameter_count
from lit_prune.report.markdown import render_markdown
from lit_prune.report.measurement import sparsity_summary
from lit_prune.report.reduction import masked_entry_count, stage_reduction
from lit_prune.report.schema import REPORT_JSON, REPORT_MD, check_report, to_jsonable

__all__ = ["build_report", "load_report", "write_report"]


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
        dataset: Readable dataset name (see :func:`lit_prune.report.schema.dataset_name`).
        method: Description of the pruning method, ``"dense"`` for none.
        network: The final network (for sparsity and parameter counts).
        mask: Its pruning mask, or ``None``.
        accuracy: The section built by :func:`lit_prune.report.measurement.accuracy_section`.
        profile: The section measured by :func:`lit_prune.report.measurement.measure_profile`.
        stages: The stages recorded by pruning callbacks, in order; each gets its
            ``overall_reduction`` (:func:`lit_prune.report.reduction.stage_reduction`).
        reduction: The section of :func:`lit_prune.report.reduction.reduction_section`; its
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
    params: dict[str, Any] = {"total": parameter_count(network), "nonzero": parameter_count(network, nonzero=True)}
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


def write_report(report: Mapping[str, Any], run_dir: str | Path) -> tuple[Path, Path]:
    """Writes ``report.md`` and ``report.json`` into a run directory, each atomically.

    Each file is written to a temporary file in the same directory and renamed over the target,
    so a reader never sees a half-written file; ``report.json`` is written last, so its presence
    means both are complete.

    Args:
        report: A report that passes :func:`lit_prune.report.schema.check_report`.
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
