"""The quickstart, run exactly as a user runs it: ResNet-20 learns the digits, and iterative
magnitude pruning with rewinding to 80 % sparsity keeps its validation accuracy.

This is the test a broken pipeline cannot pass: wrong labels, a data path that scrambles images,
masks that destroy the network or a rewind that loads the wrong weights all drop the validation
accuracy far below the bars.
"""

from __future__ import annotations

import json
from pathlib import Path

from lit_prune.cli import run_cli
from tests.conftest import CONFIG_DIR

DENSE_BAR = 0.90
ALLOWED_DROP = 0.03


def test_quickstart_learns_and_keeps_accuracy_at_80_percent(in_tmp_dir: Path) -> None:
    run_cli(["fit", "--config", str(CONFIG_DIR / "quickstart.yaml"), "--trainer.enable_progress_bar=false"])

    (report_path,) = in_tmp_dir.glob("lightning_logs/quickstart/version_0/report.json")
    report = json.loads(report_path.read_text())
    stages = {stage["name"]: stage for stage in report["stages"]}
    dense, final = stages["baseline"], stages["round3/trained"]
    assert dense["val_top1"] >= DENSE_BAR, f"dense ResNet-20 reached only {dense['val_top1']:.3f} on digits"
    assert abs(report["sparsity"]["global"] - 0.8) < 1e-4
    assert final["val_top1"] >= dense["val_top1"] - ALLOWED_DROP, (
        f"80 % sparse ticket {final['val_top1']:.3f} vs dense {dense['val_top1']:.3f}"
    )
    assert report["accuracy"]["test_top1"] >= DENSE_BAR - ALLOWED_DROP
    assert report["params"]["nonzero"] < 0.3 * report["params"]["total"]
