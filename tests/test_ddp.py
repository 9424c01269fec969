"""Every DDP rank ends with identical masks, weights and stages (two CPU processes, gloo)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.conftest import REPO_ROOT


def test_two_rank_ddp_pruning_gives_identical_masks(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    script = REPO_ROOT / "tests" / "ddp_pruning_script.py"
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path), "random_prune"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert rank0["mask"].keys() == rank1["mask"].keys()
    for name in rank0["mask"]:
        assert torch.equal(rank0["mask"][name], rank1["mask"][name]), name
    for name in rank0["weights"]:
        assert torch.equal(rank0["weights"][name], rank1["weights"][name]), name
    assert rank0["stages"] == rank1["stages"]
    pruned = sum(int((~m).sum()) for m in rank0["mask"].values())
    total = sum(m.numel() for m in rank0["mask"].values())
    assert pruned == round(0.75 * total)
