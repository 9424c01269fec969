"""Statistics over seeds (``lit_prune.report.stats``) against values computed by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

import lit_prune.report.stats as report_stats
from lit_prune.errors import UserError
from lit_prune.report.stats import SeedRun, group_runs, layout_markdown, statistics_markdown, summarize


def _report(top1: float | None, sparsity: float, latency: float | None = 10.0) -> dict:
    return {
        "sparsity": {"global": sparsity},
        "params": {"nonzero": 100, "total": 200},
        "accuracy": {"test_top1": top1, "test_top5": None},
        "profile": {"latency_ms": latency, "energy_mj": None},
    }


def _run(values: dict, seed: int, top1: float | None, sparsity: float = 0.5, latency: float | None = 10.0) -> SeedRun:
    return SeedRun(Path(f"run_{seed}"), _report(top1, sparsity, latency), values, seed)


def test_mean_and_sample_standard_deviation_by_hand() -> None:
    # 0.90, 0.92, 0.97: mean 0.93; deviations -0.03, -0.01, 0.04; squares sum 0.0026; / (3 - 1) = 0.0013
    statistic = summarize([0.90, 0.92, 0.97])
    assert statistic.n == 3
    assert statistic.mean == pytest.approx(0.93)
    assert statistic.std == pytest.approx(math.sqrt(0.0013))
    assert statistic.format(100.0, 2) == "93.00 ± 3.61 (3)"
    assert summarize([0.5, None, 0.7]) == pytest.approx(summarize([0.5, 0.7]))
    assert summarize([0.5, None, 0.7]).format(100.0, 1) == "60.0 ± 14.1 (2)"
    assert summarize([0.8]).format(100.0, 1) == "80.0 (n=1)"
    assert summarize([None, None]).format() == "n/a"


def test_runs_differing_only_in_seed_form_one_group_with_its_statistics() -> None:
    a, b = {"ratio": 0.3}, {"ratio": 0.5}
    runs = [_run(a, 0, 0.90), _run(b, 0, 0.80), _run(a, 1, 0.92), _run(b, 1, 0.84), _run(a, 2, 0.97, latency=None)]
    groups = group_runs(runs)
    assert [group.label for group in groups] == ["ratio=0.3", "ratio=0.5"]
    assert [len(group.runs) for group in groups] == [3, 2]
    table = statistics_markdown(groups)
    # ratio=0.5: 0.80, 0.84 -> mean 0.82, std sqrt(0.0008) = 0.028284
    assert "| ratio=0.3 | 0, 1, 2 | 50.00 ± 0.00 (3) | 100 ± 0 (3) | 10.00 ± 0.00 (2) | 93.00 ± 3.61 (3) |" in table
    assert "| ratio=0.5 | 0, 1 | 50.00 ± 0.00 (2) | 100 ± 0 (2) | 10.00 ± 0.00 (2) | 82.00 ± 2.83 (2) |" in table
    assert "energy" not in table and "top-5" not in table  # measured by no run: left out, never 0


def test_layout_puts_one_key_down_and_another_across() -> None:
    runs = []
    for epoch, ratio, accuracies in (
        (10, 0.3, (0.90, 0.92)),
        (10, 0.5, (0.88, 0.86)),
        (30, 0.3, (0.91, 0.93)),
        (30, 0.5, (0.85, 0.89)),
    ):
        values = {"trainer.callbacks.draw_epoch": epoch, "trainer.callbacks.ratio": ratio}
        runs += [_run(values, seed, accuracy) for seed, accuracy in enumerate(accuracies)]
    table = layout_markdown(group_runs(runs), "draw_epoch", "trainer.callbacks.ratio")
    # std of two values a, b is |a - b| / sqrt(2): 0.02 / 1.41421 = 1.41 %, 0.04 / 1.41421 = 2.83 %
    assert "| draw_epoch | 0.3 | 0.5 |" in table
    assert "| 10 | 91.00 ± 1.41 (2) | 87.00 ± 1.41 (2) |" in table
    assert "| 30 | 92.00 ± 1.41 (2) | 87.00 ± 2.83 (2) |" in table
    with pytest.raises(UserError, match="matches none"):
        layout_markdown(group_runs(runs), "sparsity", "ratio")
    with pytest.raises(UserError, match="unknown metric"):
        layout_markdown(group_runs(runs), "draw_epoch", "ratio", "accuracy")


def test_values_come_from_the_sweep_manifest_or_from_the_configs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report_stats, "load_report", lambda run_dir: json.loads((run_dir / "report.json").read_text()))
    sweep = tmp_path / "sweep"
    entries = []
    for seed, accuracy in ((0, 0.6), (1, 0.8)):
        name = f"sparsity-0.5_seed-{seed}"
        (sweep / name).mkdir(parents=True)
        (sweep / name / "report.json").write_text(json.dumps(_report(accuracy, 0.5)))
        values = {"trainer.callbacks.target_sparsity": 0.5}
        entries.append({"name": name, "kind": "run", "values": values, "seed": seed})
    (sweep / "manifest.json").write_text(json.dumps({"fingerprint": "x", "runs": entries}))
    loose = []
    for seed, (ratio, accuracy) in enumerate(((0.3, 0.5), (0.3, 0.7), (0.7, 0.4))):
        run_dir = tmp_path / "loose" / f"version_{seed}"
        run_dir.mkdir(parents=True)
        (run_dir / "report.json").write_text(json.dumps(_report(accuracy, ratio)))
        config = {
            "seed_everything": seed,
            "trainer": {
                "logger": {"init_args": {"version": seed}},
                "callbacks": [{"class_path": "callbacks.EarlyBird", "init_args": {"ratio": ratio}}],
            },
        }
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
        loose.append(run_dir)
    swept = group_runs(report_stats.load_seed_runs(report_stats.find_runs([sweep])))
    assert [(g.label, len(g.runs)) for g in swept] == [("target_sparsity=0.5", 2)]
    top1 = next(metric for metric in report_stats.METRICS if metric.key == "test_top1")
    assert swept[0].statistic(top1).format(100.0, 1) == "70.0 ± 14.1 (2)"
    configured = group_runs(report_stats.load_seed_runs(loose))
    assert [(g.label, len(g.runs)) for g in configured] == [("ratio=0.3", 2), ("ratio=0.7", 1)]
    written = report_stats.write_statistics(loose, tmp_path / "out", rows=None, columns=None)
    assert written[0].name == "statistics.md"
    assert (tmp_path / "out" / "accuracy_vs_sparsity_mean.png") in written
