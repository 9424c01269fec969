"""``report.md``: the one-run summary a person reads (``report.json`` is the same for tools)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lit_prune.report.formatting import (
    format_count,
    format_macs,
    format_number,
    format_percent,
    format_points,
    format_ratio,
)
from lit_prune.robustness.attacks import format_pixels

__all__ = ["render_markdown"]


def render_markdown(report: Mapping[str, Any]) -> str:
    """Renders a one-run summary: start weights, accuracy, parameter reduction, profile, stages, notes.

    Args:
        report: A report that passes :func:`lit_prune.report.check_report`.

    Returns:
        Markdown text.
    """
    lines = [f"# {report['model']} on {report['dataset']}: {report['method']}", "", _context(report), ""]
    weights = report.get("weights")
    if weights:
        where = weights.get("url") or weights.get("path")
        lines += [f"Start weights: {weights['description']}" + (f" (`{where}`)." if where else "."), ""]
    lines += _accuracy(report)
    lines += _reduction(report)
    lines += _profile(report["profile"])
    lines += _robustness(report.get("robustness"))
    lines += _stages(report["stages"])
    sparsity = report["sparsity"]
    if sparsity["global"]:
        lines += ["", "## Sparsity per layer", "", "| parameter | sparsity |", "|---|---:|"]
        lines += [f"| `{name}` | {format_percent(value)} |" for name, value in sparsity["layers"].items()]
    notes = {f"accuracy.{k}": v for k, v in report["accuracy"]["notes"].items()}
    notes.update({f"profile.{k}": v for k, v in report["profile"]["notes"].items()})
    notes.update({f"reduction.{k}": v for k, v in (report.get("reduction") or {}).get("notes", {}).items()})
    notes.update({f"robustness.{k}": v for k, v in (report.get("robustness") or {}).get("notes", {}).items()})
    if notes:
        lines += ["", "## Notes", ""]
        lines += [f"- `{key}`: {value}" for key, value in notes.items()]
    return "\n".join(lines) + "\n"


def _context(report: Mapping[str, Any]) -> str:
    context = [f"lit-prune {report.get('lit_prune_version', '?')}"]
    if report.get("created_at"):
        context.insert(0, f"written {report['created_at']}")
    if report.get("trigger"):
        context.append(f"after `{report['trigger']}` (epoch {report.get('epoch')}, step {report.get('global_step')})")
    if report.get("run_dir"):
        context.append(f"run directory `{report['run_dir']}`")
    if report.get("validated_on_test"):
        context.append("**validated on the test set** (`val_split: 0`, `validate_on_test: true`)")
    return " · ".join(context)


def _accuracy(report: Mapping[str, Any]) -> list[str]:
    accuracy = report["accuracy"]
    published = accuracy.get("published")
    header, rule = "| split | top-1 | top-5 | images |", "|---|---:|---:|---:|"
    if published:
        header += " published top-1 | difference | published top-5 | difference |"
        rule += "---:|---:|---:|---:|"
    lines = ["## Accuracy", "", header, rule]
    for split in ("test", "train"):
        top1, top5 = accuracy[f"{split}_top1"], accuracy[f"{split}_top5"]
        samples = format_count(accuracy.get(f"{split}_samples"))
        row = f"| {split} | {format_percent(top1)} | {format_percent(top5)} | {samples} |"
        if published and split == "test":
            row += (
                f" {format_percent(published['test_top1'])} | {format_points(top1, published['test_top1'])} "
                f"| {format_percent(published['test_top5'])} | {format_points(top5, published['test_top5'])} |"
            )
        elif published:
            row += " — | — | — | — |"
        lines.append(row)
    if accuracy.get("source"):
        lines += ["", f"Measured by {accuracy['source']}."]
    if published:
        lines += ["", f"Published figures: {published['source']}; the difference is in percentage points."]
    return lines


def _reduction(report: Mapping[str, Any]) -> list[str]:
    sparsity, params = report["sparsity"], report["params"]
    reduction = report.get("reduction")
    lines = ["", "## Parameter reduction", ""]
    if reduction:
        reference = reduction.get("reference") or "unknown (see the notes)"
        lines += [f"Against the unpruned architecture: {reference}.", "", "| figure | value |", "|---|---:|"]
        rows = [
            ("parameters of the unpruned architecture", format_count(reduction["params_unpruned"])),
            ("parameters stored (after physical removal)", format_count(reduction["params_total"])),
            ("parameters non-zero", format_count(reduction["params_nonzero"])),
            ("removed physically (structured)", format_percent(reduction["removed_fraction"])),
            ("zeroed (unstructured)", format_percent(reduction["zeroed_fraction"])),
            ("overall parameter reduction", format_percent(reduction["overall_reduction"])),
            ("compression (unpruned / non-zero parameters)", format_ratio(reduction["compression_ratio"])),
            (
                "MACs per image: unpruned / dense / non-zero",
                f"{format_macs(reduction['macs_unpruned'])} / {format_macs(reduction['macs'])} "
                f"/ {format_macs(reduction['nonzero_macs'])}",
            ),
            ("MAC reduction (non-zero against unpruned)", format_percent(reduction["macs_reduction"])),
            ("theoretical speed-up (MAC ratio, zeros skipped)", format_ratio(reduction["theoretical_speedup"])),
            ("theoretical speed-up with dense kernels", format_ratio(reduction["dense_kernel_speedup"])),
            (
                "serialised size MiB: unpruned / dense / sparse",
                f"{format_number(reduction['size_unpruned_mb'], 3)} / {format_number(reduction['size_mb'], 3)} "
                f"/ {format_number(reduction['sparse_size_mb'], 3)}",
            ),
            (
                "latency per batch ms: unpruned / this network",
                f"{format_number(reduction['reference_latency_ms'], 2)} / {format_number(reduction['latency_ms'], 2)}",
            ),
            ("measured speed-up (latency ratio, same device and batch)", format_ratio(reduction["measured_speedup"])),
        ]
        lines += [f"| {label} | {value} |" for label, value in rows]
        lines += [
            "",
            "Removed + zeroed = overall, all as fractions of the unpruned architecture's parameters "
            '(docs/architecture.md, "Parameter reduction").',
        ]
    else:
        lines.append(f"Parameters: {params['total']:,} in total, {params['nonzero']:,} non-zero.")
    lines += [
        "",
        f"Mask sparsity {format_percent(sparsity['global'])} (from {sparsity.get('source', 'mask')}): the pruned "
        f"fraction of the masked weights; {format_percent(sparsity.get('zero_weight_fraction'))} of all conv/linear "
        "weights are zero.",
    ]
    return lines


def _profile(profile: Mapping[str, Any]) -> list[str]:
    sparse = profile.get("sparse_inference")
    lines = [
        "",
        "## Profile",
        "",
        f"Device `{profile['device']}`, batch of {format_count(profile['batch_size'])} images "
        f"of shape {tuple(profile.get('input_shape') or ())}.",
        "",
        "| measure | dense weights | sparse inference |",
        "|---|---:|---:|",
    ]
    latency = format_number(profile["latency_ms"], 2)
    if profile.get("latency_mean_ms") is not None:
        latency += f" / {format_number(profile['latency_mean_ms'], 2)}"
    if profile.get("latency_min_ms") is not None:
        latency += f" ({format_number(profile['latency_min_ms'], 2)}–{format_number(profile['latency_max_ms'], 2)})"
    repeats = profile.get("latency_repeats")
    rows = [
        (
            f"latency per batch, median / mean (min–max) of {format_count(repeats)} batches, ms",
            latency,
            _sparse_cell(sparse, "latency_ms", 2),
        ),
        ("peak memory, MiB", format_number(profile["peak_memory_mb"], 2), _sparse_cell(sparse, "peak_memory_mb", 2)),
        ("average memory, MiB", format_number(profile["avg_memory_mb"], 2), _sparse_cell(sparse, "avg_memory_mb", 2)),
        ("energy per batch, mJ", format_number(profile["energy_mj"], 1), _sparse_cell(sparse, "energy_mj", 1)),
        ("MACs per image", format_macs(profile["macs"]), "—"),
        ("non-zero MACs per image", format_macs(profile["nonzero_macs"]), "—"),
        (
            "serialised size, MiB",
            f"{format_number(profile['size_mb'], 3)} (dense)",
            f"{format_number(profile['sparse_size_mb'], 3)} (sparse)",
        ),
    ]
    lines += [f"| {label} | {dense} | {sparse_cell} |" for label, dense, sparse_cell in rows]
    lines += ["", f"Energy: {profile['energy_note']}"]
    if sparse and sparse.get("latency_ms") is None:
        lines += ["", f"Sparse inference ({sparse.get('mode', 'csr')}): {sparse.get('note', '')}."]
    elif sparse:
        lines += [
            "",
            f"Sparse inference: {sparse.get('note', '')} Largest logit difference to the dense model: "
            f"{_scientific(sparse.get('max_abs_logit_difference'))}; latency relative to dense: "
            f"{format_number(sparse.get('latency_ratio_vs_dense'), 2)}×.",
        ]
    return lines + _onnxruntime(profile)


def _onnxruntime(profile: Mapping[str, Any]) -> list[str]:
    """One line on onnxruntime's latency (``ProfilingCallback(onnxruntime=True)``); nothing in older reports."""
    details = profile.get("onnxruntime")
    if not details:
        return []
    return [
        "",
        f"onnxruntime ({details['provider']}, {details['exporter']} ONNX export, opset {details.get('opset')}): "
        f"{format_number(details['latency_ms'], 2)} ms per batch, "
        f"{format_number(details.get('latency_ratio_vs_eager'), 2)}× the eager latency; largest logit difference "
        f"to PyTorch {_scientific(details.get('max_abs_logit_difference'))}.",
    ]


def _robustness(section: Mapping[str, Any] | None) -> list[str]:
    """Clean and adversarial top-1 (``callbacks.robustness.RobustnessEvaluation``), and robust convergence per round."""
    if not section:
        return []
    attacks = [key for key in section if key.endswith("_top1") and key != "clean_top1"]
    lines = [
        "",
        "## Robustness",
        "",
        f"L∞ attacks in pixel space, ε = {format_pixels(section['epsilon'])}; PGD: {section['steps']} steps of "
        f"{format_pixels(section['step_size'])}, {section['restarts']} restart(s), random start; "
        f"{format_count(section['samples'])} test images; model trained: {section.get('training', 'n/a')}.",
        "",
        "| clean top-1 | " + " | ".join(f"{key.removesuffix('_top1').upper()} top-1" for key in attacks) + " |",
        "|---:|" + "---:|" * len(attacks),
        f"| {format_percent(section['clean_top1'])} | "
        + " | ".join(format_percent(section[key]) for key in attacks)
        + " |",
        "",
        "An example counts as robust only if it is classified correctly both clean and after the attack.",
    ]
    rounds = section.get("rounds")
    if rounds:
        target = format_percent(section.get("target_accuracy"))
        lines += [
            "",
            f"Robust convergence per round (`{section.get('monitor')}`, target {target}):",
            "",
            f"| round | sparsity | epochs | epochs to reach {target} | final | best | final val top-1 |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {entry['round']} | {format_percent(entry['sparsity'])} | {entry['epochs']} "
            f"| {'not reached' if entry['epochs_to_target'] is None else entry['epochs_to_target']} "
            f"| {format_percent(entry['final'])} | {format_percent(entry['best'])} "
            f"| {format_percent(entry['final_val_top1'])} |"
            for entry in rounds
        ]
    return lines


def _stages(stages: list[Mapping[str, Any]]) -> list[str]:
    lines = ["", "## Stages", ""]
    if not stages:
        return lines + ["No pruning stages were recorded (no pruning callback ran)."]
    lines += [
        "| stage | epoch | step | mask sparsity | overall reduction | val top-1 | val top-5 | val loss |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for stage in stages:
        stage_sparsity = "no mask" if stage.get("sparsity") is None else format_percent(stage["sparsity"])
        lines.append(
            f"| {stage['name']} | {format_count(stage.get('epoch'))} | {format_count(stage.get('global_step'))} "
            f"| {stage_sparsity} | {format_percent(stage.get('overall_reduction'))} "
            f"| {format_percent(stage.get('val_top1'))} | {format_percent(stage.get('val_top5'))} "
            f"| {format_number(stage.get('val_loss'), 4)} |"
        )
    return lines


def _sparse_cell(sparse: Mapping[str, Any] | None, key: str, digits: int) -> str:
    return "—" if sparse is None else format_number(sparse.get(key), digits)


def _scientific(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2e}"
