"""``lit-prune report RUN_DIR [RUN_DIR ...]``: one table and three plots comparing finished runs.

Each run directory must hold the ``report.json`` that ``callbacks.profiling.ProfilingCallback``
writes. The command writes into ``--output`` (the current directory by default):

* ``comparison.md``: two tables with a row per run. "Accuracy and parameter reduction": test
  top-1/top-5, parameters non-zero / stored / of the unpruned architecture, the fractions removed
  physically, zeroed and overall, MACs and the theoretical speed-up. "Measured cost": size dense
  and sparse, latency and the measured speed-up, memory, energy. The vocabulary is the same for
  every method (:mod:`lit_prune.report.reduction`).
* with runs that measured robustness (``callbacks.robustness.RobustnessEvaluation``), a
  "Robustness" table (clean, FGSM and PGD top-1, the budget, how the model was trained) and, for
  runs that followed robust validation accuracy through rounds, "Robust convergence per round":
  one row per run and round with the epochs it took to reach the target and the final value, so
  boosting tickets and natural tickets trained adversarially are read off one table.
* ``accuracy_vs_epoch.png``, ``loss_vs_epoch.png`` and ``accuracy_vs_sparsity.png`` (test top-1
  against the overall parameter reduction), see :mod:`lit_prune.report.plots`.
* ``statistics.md`` and the mean plots: runs that differ only in their seed (a sweep's runs, or
  runs whose configs differ only there) as mean ± sample std (n) of every metric, optionally laid
  out with ``--rows KEY --columns KEY`` (:mod:`lit_prune.report.stats`).

The reference of a run is its **dense baseline**, the first run given with the same model and
dataset whose method is ``"dense"``: Δ top-1, Δ size, the theoretical speed-up (MAC ratio) and the
measured speed-up (latency ratio, only on the same device and batch size) are taken against that
row. Without one, the run's own unpruned architecture is the reference (its parameters, MACs, size
and latency measured by the run's report; accuracy against the run's ``baseline`` stage), and the
cells say so with a dagger.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lit_prune.atomic_files import atomic_write
from lit_prune.report.formatting import (
    format_count,
    format_macs,
    format_number,
    format_percent,
    format_points,
    format_ratio,
)
from lit_prune.report.plots import write_plots
from lit_prune.report.runs import Run, find_baseline, load_runs
from lit_prune.report.stats import write_statistics
from lit_prune.robustness.attacks import format_pixels

__all__ = ["COMPARISON_MD", "compare_runs", "comparison_markdown", "main", "row_figures"]

COMPARISON_MD = "comparison.md"

_OWN = "†"
_OTHER_DEVICE = "‡"
_OLD_REPORT = "§"
_FOOTNOTES = {
    _OWN: (
        "† no dense run of this model and dataset was given: the reference is the run's own unpruned architecture "
        "(parameters, MACs, size and latency measured by its report, latency in the same process on the same batch); "
        "Δ top-1 is against the run's own baseline stage (validation accuracy before pruning). Give a dense run "
        "(`lit-prune report BASELINE_RUN RUNS...`) to compare with a trained dense model."
    ),
    _OTHER_DEVICE: "‡ latency measured on another device or batch size than the dense run: not comparable.",
    _OLD_REPORT: (
        "§ this report has no reduction section (written by an older lit-prune): re-run "
        "`lit-prune test --config CONFIG --ckpt_path CHECKPOINT` to rewrite it."
    ),
}


def row_figures(run: Run, runs: Sequence[Run]) -> dict[str, Any]:
    """The figures of one comparison row, against its reference, as numbers (``None`` if unknown).

    Args:
        run: The run.
        runs: All runs of the comparison (the dense baseline is looked up among them).

    Returns:
        ``reference`` (``"self"`` for the dense baseline itself, ``"dense run"`` or ``"own"``),
        ``baseline`` (its label or ``None``), ``delta_top1`` (fraction), ``size_change``
        (relative change of the sparse size against the reference's dense size),
        ``theoretical_speedup``, ``measured_speedup``, and ``marks`` (footnote marks that apply).
    """
    report, profile = run.report, run.report["profile"]
    reduction = report.get("reduction") or {}
    marks: set[str] = set() if reduction else {_OLD_REPORT}
    baseline = find_baseline(run, runs)
    if baseline is run:
        return {
            "reference": "self", "baseline": run.label, "delta_top1": None, "size_change": None,
            "theoretical_speedup": None, "measured_speedup": None, "marks": marks,
        }  # fmt: skip
    if baseline is None:
        own = next((s for s in report["stages"] if s["name"] == "baseline"), {})
        top1 = report["accuracy"]["test_top1"]
        return {
            "reference": "own",
            "baseline": None,
            "delta_top1": None if top1 is None or own.get("val_top1") is None else top1 - own["val_top1"],
            "size_change": _change(profile["sparse_size_mb"], reduction.get("size_unpruned_mb")),
            "theoretical_speedup": reduction.get("theoretical_speedup"),
            "measured_speedup": reduction.get("measured_speedup"),
            "marks": marks | {_OWN},
        }
    base = baseline.report["profile"]
    top1, base_top1 = report["accuracy"]["test_top1"], baseline.report["accuracy"]["test_top1"]
    same_device = profile["device"] == base["device"] and profile["batch_size"] == base["batch_size"]
    return {
        "reference": "dense run",
        "baseline": baseline.label,
        "delta_top1": None if top1 is None or base_top1 is None else top1 - base_top1,
        "size_change": _change(profile["sparse_size_mb"], base["size_mb"]),
        "theoretical_speedup": _ratio(base["macs"], profile["nonzero_macs"]),
        "measured_speedup": _ratio(base["latency_ms"], profile["latency_ms"]) if same_device else None,
        "marks": marks | (set() if same_device else {_OTHER_DEVICE}),
    }


def comparison_markdown(runs: Sequence[Run], plots: Sequence[Path] = ()) -> str:
    """Renders the comparison tables of the runs.

    Args:
        runs: The runs, one row each, in order.
        plots: Plot files to show below the tables (linked by file name).

    Returns:
        Markdown text.
    """
    figures = {run.label: row_figures(run, runs) for run in runs}
    marks = set().union(*(f["marks"] for f in figures.values())) if figures else set()
    lines = ["# Run comparison", "", *_reference_lines(runs, figures), "", "## Accuracy and parameter reduction", ""]
    lines += [
        "| run | model | dataset | method | start weights | test top-1 | test top-5 | Δ top-1 "
        "| params non-zero / stored / unpruned | removed | zeroed | overall reduction "
        "| MACs non-zero / dense / unpruned | theoretical speed-up |",
        "|" + "---|" * 5 + "---:|" * 9,
    ]
    for run in runs:
        lines.append(_cells(_reduction_row(run, figures[run.label])))
    lines += [
        "",
        "## Measured cost",
        "",
        "| run | size MiB dense / sparse | Δ size | latency ms per batch | measured speed-up "
        "| memory MiB peak / avg | energy mJ per batch | device, batch |",
        "|---|" + "---:|" * 7,
    ]
    for run in runs:
        lines.append(_cells(_cost_row(run, figures[run.label])))
    lines += [
        "",
        "Removed (physically, structured), zeroed (unstructured) and overall reduction are fractions of the "
        "unpruned architecture's parameters; removed + zeroed = overall (docs/architecture.md, \"Parameter "
        'reduction"). Theoretical speed-up: reference MACs / non-zero MACs (a kernel that skips zeros); measured '
        "speed-up: reference latency / latency. Δ top-1 in percentage points; Δ size: sparse size against the "
        "reference's dense size. MACs per image; latency, memory and energy per batch. n/a: not measured (the run's "
        "report.md says why).",
    ]
    lines += [_FOOTNOTES[mark] for mark in (_OWN, _OTHER_DEVICE, _OLD_REPORT) if mark in marks]
    lines += _robustness_lines(runs)
    lines += ["", "## Run directories", ""]
    lines += [f"- {run.label}: `{run.path}`" for run in runs]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{path.stem.replace('_', ' ')}]({path.name})" for path in plots]
    return "\n".join(lines) + "\n"


def compare_runs(patterns: Sequence[str], output_dir: str | Path = ".") -> list[Path]:
    """Writes the comparison table and the plots of the given runs.

    Args:
        patterns: Run directories or glob patterns.
        output_dir: Directory to write into (created if missing).

    Returns:
        The paths written: ``comparison.md`` first, then the plots that had data.

    Raises:
        FileNotFoundError: If a run directory or its ``report.json`` is missing.
        ValueError: If a pattern matches nothing or a report is malformed.
    """
    runs = load_runs(patterns)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    plots = write_plots(runs, output)
    table = output / COMPARISON_MD
    text = comparison_markdown(runs, plots)
    atomic_write(table, lambda path: path.write_text(text, encoding="utf-8"))
    return [table, *plots]


def main(argv: Sequence[str] | None = None) -> list[Path]:
    """Runs ``lit-prune report`` with command-line arguments.

    Args:
        argv: The arguments after ``report``.

    Returns:
        The paths written.
    """
    parser = argparse.ArgumentParser(
        prog="lit-prune report",
        description=(
            "Compare finished runs: markdown tables and plots from their report.json and TensorBoard logs. "
            "Give the dense baseline run first (lit-prune report BASELINE_RUN RUNS...) to take deltas against it."
        ),
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories or glob patterns")
    parser.add_argument(
        "--output", "-o", default=".", metavar="DIR", help="where to write (default: the current directory)"
    )
    parser.add_argument("--rows", metavar="KEY", help="statistics.md layout: the key whose values are the rows")
    parser.add_argument("--columns", metavar="KEY", help="statistics.md layout: the key whose values are the columns")
    parser.add_argument("--metric", default="test_top1", help="the layout's metric (default test_top1)")
    args = parser.parse_args(argv)
    try:
        written = compare_runs(args.run_dirs, args.output)
        run_dirs = [run.path for run in load_runs(args.run_dirs)]
        written += write_statistics(run_dirs, Path(args.output), args.rows, args.columns, args.metric)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    for path in written:
        print(f"lit-prune report: wrote {path}")
    return written


def _reference_lines(runs: Sequence[Run], figures: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per run saying what its deltas and speed-ups are taken against."""
    lines = ["References:", ""]
    for run in runs:
        figure = figures[run.label]
        if figure["reference"] == "self":
            text = "dense baseline (the reference of the other runs of its model and dataset)"
        elif figure["reference"] == "dense run":
            text = f"against the dense run {figure['baseline']}"
        else:
            text = "no dense run given: against its own unpruned architecture †"
        lines.append(f"- {run.label}: {text}")
    return lines


def _reduction_row(run: Run, figure: Mapping[str, Any]) -> list[str]:
    report, accuracy = run.report, run.report["accuracy"]
    reduction = report.get("reduction") or {}
    old = _OLD_REPORT if not reduction else ""
    own = _OWN if figure["reference"] == "own" else ""
    delta = "reference" if figure["reference"] == "self" else _mark(_points(figure["delta_top1"]), own)
    return [
        run.label,
        report["model"],
        report["dataset"],
        report["method"],
        _weights(report.get("weights")),
        format_percent(accuracy["test_top1"]),
        format_percent(accuracy["test_top5"]),
        delta,
        f"{format_count(report['params']['nonzero'])} / {format_count(report['params']['total'])} "
        f"/ {format_count(reduction.get('params_unpruned'))}{old}",
        _mark(format_percent(reduction.get("removed_fraction")), old),
        _mark(format_percent(reduction.get("zeroed_fraction")), old),
        _mark(format_percent(reduction.get("overall_reduction")), old),
        f"{format_macs(report['profile']['nonzero_macs'])} / {format_macs(report['profile']['macs'])} "
        f"/ {format_macs(reduction.get('macs_unpruned'))}{old}",
        "reference" if figure["reference"] == "self" else _mark(format_ratio(figure["theoretical_speedup"]), own),
    ]


def _cost_row(run: Run, figure: Mapping[str, Any]) -> list[str]:
    profile = run.report["profile"]
    own = _OWN if figure["reference"] == "own" else ""
    if figure["reference"] == "self":
        size_change, measured = "reference", "reference"
    else:
        size_change = _mark(_relative(figure["size_change"]), own)
        if _OTHER_DEVICE in figure["marks"]:
            measured = f"n/a{_OTHER_DEVICE}"
        else:
            measured = _mark(format_ratio(figure["measured_speedup"]), own)
    return [
        run.label,
        f"{format_number(profile['size_mb'], 3)} / {format_number(profile['sparse_size_mb'], 3)}",
        size_change,
        format_number(profile["latency_ms"], 2),
        measured,
        f"{format_number(profile['peak_memory_mb'], 1)} / {format_number(profile['avg_memory_mb'], 1)}",
        format_number(profile["energy_mj"], 1),
        f"{profile['device']}, {format_count(profile['batch_size'])}",
    ]


def _robustness_lines(runs: Sequence[Run]) -> list[str]:
    """The robustness tables, for the runs whose report has a ``robustness`` section (none without)."""
    measured = [run for run in runs if run.report.get("robustness")]
    if not measured:
        return []
    lines = [
        "",
        "## Robustness",
        "",
        "| run | training | ε | PGD steps × restarts | clean top-1 | FGSM top-1 | PGD top-1 | test images |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in measured:
        section = run.report["robustness"]
        lines.append(
            _cells(
                [
                    run.label,
                    str(section.get("training", "n/a")),
                    format_pixels(section["epsilon"]),
                    f"{section['steps']} × {section['restarts']}",
                    format_percent(section["clean_top1"]),
                    format_percent(section["fgsm_top1"]),
                    format_percent(section["pgd_top1"]),
                    format_count(section["samples"]),
                ]
            )
        )
    lines += ["", "L∞ attacks in pixel units; an example is robust only if it is correct clean and under the attack."]
    followed = [run for run in measured if run.report["robustness"].get("rounds")]
    if followed:
        lines += [
            "",
            "## Robust convergence per round",
            "",
            "| run | round | sparsity | monitor | target | epochs to target | epochs | final | best |",
            "|---|---:|---:|---|---:|---:|---:|---:|---:|",
        ]
        for run in followed:
            section = run.report["robustness"]
            for entry in section["rounds"]:
                reached = entry.get("epochs_to_target")
                lines.append(
                    _cells(
                        [
                            run.label,
                            str(entry["round"]),
                            format_percent(entry.get("sparsity")),
                            f"`{section.get('monitor')}`",
                            format_percent(section.get("target_accuracy")),
                            "not reached" if reached is None else str(reached),
                            format_count(entry.get("epochs")),
                            format_percent(entry.get("final")),
                            format_percent(entry.get("best")),
                        ]
                    )
                )
        lines += [
            "",
            "Epochs to target: epochs of the round until the monitored robust validation accuracy first reached the "
            "target (Li et al. 2020: boosting tickets get there sooner); final and best: its value at the round's "
            "end and its highest in the round.",
        ]
    return lines


def _weights(weights: Mapping[str, Any] | None) -> str:
    if not weights:
        return "n/a"
    if weights.get("kind") == "pretrained" and weights.get("dataset"):
        return f"pretrained ({weights['dataset']})"
    return str(weights.get("kind", "n/a"))


def _cells(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _mark(text: str, mark: str) -> str:
    return text if not mark or text == "n/a" else f"{text}{mark}"


def _points(value: float | None) -> str:
    return format_points(value, 0.0) if value is not None else "n/a"


def _relative(value: float | None) -> str:
    return "n/a" if value is None else f"{100.0 * value:+.1f} %"


def _change(value: float | None, reference: float | None) -> float | None:
    if value is None or not reference:
        return None
    return value / reference - 1.0


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator
