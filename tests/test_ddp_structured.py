"""Every DDP rank removes the same channels and ends with identical shapes and weights (two CPU processes, gloo)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.conftest import REPO_ROOT


def test_two_rank_ddp_channel_pruning_gives_identical_shrunken_networks(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    script = REPO_ROOT / "tests" / "ddp_structured_script.py"
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-4000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert rank0["surgery"], "no channels were removed"
    assert rank0["surgery"] == rank1["surgery"]
    assert rank0["weights"].keys() == rank1["weights"].keys()
    for name in rank0["weights"]:
        assert torch.equal(rank0["weights"][name], rank1["weights"][name]), name
    assert rank0["stages"] == rank1["stages"]
    assert [stage["name"] for stage in rank0["stages"]] == ["baseline", "pruned", "fine_tuned"]
    assert rank0["stages"][1]["params_removed_fraction"] >= 0.4
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    shrunk = sum(tensor.numel() for name, tensor in rank0["weights"].items() if not name.endswith(buffers))
    assert rank0["optimizer_params"] == shrunk == rank0["stages"][-1]["params"], "optimizer holds old parameters"
    assert rank0["global_step"] == rank1["global_step"] == 4, "training continued after the surgery"
