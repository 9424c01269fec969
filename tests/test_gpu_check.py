"""``benchmarks/gpu_check.py --device cpu --quick``: the GPU check runs end to end on a CPU, so it cannot rot.

The script runs in a subprocess as a user runs it; the test checks its exit status and the JSON it
writes: every part is there, measured parts hold positive figures, and the parts that need CUDA
are skipped with the reason, never filled with a number.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "benchmarks" / "gpu_check.py"
PARTS = ["epoch", "precision", "layout_compile", "masks", "structured_inference", "semi_structured", "energy", "ddp"]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def quick_check(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict]:
    directory = tmp_path_factory.mktemp("gpu_check")
    result = _run("--device", "cpu", "--quick", "--output", str(directory / "check.json"), cwd=directory)
    assert result.returncode == 0, result.stdout + result.stderr
    return result, json.loads((directory / "check.json").read_text())


def test_quick_cpu_run_measures_every_part_it_can(quick_check) -> None:
    result, check = quick_check
    assert list(check["parts"]) == PARTS
    assert check["device"]["type"] == "cpu" and check["quick"] is True and check["stopped_early"] is False
    for name in PARTS:
        assert f"gpu_check: {name}" in result.stdout, "every part prints its time"
        assert check["parts"][name]["seconds"] >= 0
    assert "gpu_check: total" in result.stdout and 0 < check["total_s"] <= check["budget_s"]

    epoch = check["parts"]["epoch"]
    assert epoch["status"] == "ok" and epoch["steps"] == 8 and epoch["train_images"] == 256
    assert epoch["lightning_epoch_s"] > 0 and epoch["model_only_s"] > 0 and epoch["data_path_only_s"] > 0
    assert check["parts"]["precision"]["bf16_mixed_step"]["median_ms"] > 0
    layout = check["parts"]["layout_compile"]
    assert layout["compile_backend"] == "eager"
    for variant in ("eager", "channels_last", "compiled", "compiled_channels_last"):
        assert layout[variant]["median_ms"] > 0 and layout[variant]["first_step_s"] > 0
    masks = check["parts"]["masks"]
    assert masks["masked_weights_still_zero"] is True and masks["sparsity"] == 0.9
    assert masks["torch_nn_utils_prune"]["ratio_to_dense"] > 0
    structured = check["parts"]["structured_inference"]
    assert structured["params_pruned"] < structured["params_dense"] / 2
    assert set(structured) >= {"batch_1", "batch_32"} and structured["batch_1"]["pruned_ms"] > 0


def test_cuda_parts_are_skipped_with_their_reason_on_a_cpu(quick_check) -> None:
    _, check = quick_check
    semi = check["parts"]["semi_structured"]
    assert semi["status"] == "skipped" and semi["reason"].startswith("needs CUDA")
    assert semi["plan"]["eligible"] == 24, "ViT-Tiny's 12 blocks have two 2:4-masked MLP linears each"
    assert "model_speedup" not in semi
    ddp = check["parts"]["ddp"]
    assert ddp["status"] == "skipped" and ddp["reason"] == "needs two CUDA GPUs, found 0"
    energy = check["parts"]["energy"]
    if energy["status"] == "ok":
        assert energy["energy_mj"] > 0, "a CPU with readable RAPL counters gives a reading"
    else:
        assert energy["status"] == "skipped" and energy["reason"].startswith("unavailable")


@pytest.fixture
def gpu_check(monkeypatch: pytest.MonkeyPatch):
    """The script imported as a module, to call its functions in this process."""
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", module)
    spec.loader.exec_module(module)
    return module


def test_semi_structured_part_past_the_device_check(gpu_check, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA-only part on a CPU with the device check passed and the 2:4 conversion faked.

    ``to_sparse_semi_structured`` returns the dense float16 weight, so this checks the part's
    plumbing (what is converted, what is timed and reported), not the kernels.
    """
    import lit_prune.pruning.semi_structured as semi_structured

    converted: list[tuple[int, ...]] = []

    def fake_conversion(weight: torch.Tensor) -> torch.Tensor:
        converted.append(tuple(weight.shape))
        return weight.clone()

    monkeypatch.setattr(gpu_check, "semi_structured_unsupported", lambda device: None)
    monkeypatch.setattr(semi_structured, "semi_structured_unsupported", lambda device: None)
    monkeypatch.setattr(torch.sparse, "to_sparse_semi_structured", fake_conversion)
    result = gpu_check.part_semi_structured(gpu_check.QUICK, torch.device("cpu"), deadline=float("inf"))
    assert converted == [(768, 192), (192, 768)] * 12
    assert result["converted_layers"] == 24 and result["mlp_block_rows"] == 4 * 65
    for key in ("model_dense_ms", "model_semi_structured_ms", "mlp_block_dense_ms", "mlp_block_semi_structured_ms"):
        assert result[key] > 0
    assert result["max_abs_logit_difference"] == 0.0


def test_spent_budget_skips_the_parts_and_bad_paths_fail_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], gpu_check
) -> None:
    output = tmp_path / "spent.json"
    assert gpu_check.main(["--device", "cpu", "--quick", "--budget-s", "0", "--output", str(output)]) == 0
    check = json.loads(output.read_text())
    assert check["stopped_early"] is True and list(check["parts"]) == PARTS
    assert {part["reason"] for part in check["parts"].values()} == {"time budget of 0 s spent"}

    missing = tmp_path / "no" / "such" / "dir" / "check.json"
    assert gpu_check.main(["--device", "cpu", "--quick", "--output", str(missing)]) == 2
    assert "does not exist" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert gpu_check.main(["--device", "cuda", "--quick", "--output", str(tmp_path / "cuda.json")]) == 2
        assert "no CUDA device" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["spent.json"]
