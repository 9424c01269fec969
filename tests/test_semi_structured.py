"""2:4 semi-structured inference: which linear layers convert, and what a CPU reports instead of figures."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from lit_prune.errors import UserError
from lit_prune.models import create_model
from lit_prune.pruning import magnitude_scores
from lit_prune.pruning.nm_sparsity import nm_prune_mask
from lit_prune.pruning.semi_structured import (
    SEMI_STRUCTURED_PATTERN,
    semi_structured_plan,
    semi_structured_unsupported,
    to_semi_structured,
)
from lit_prune.report.measurement import measure_profile, sparse_inference_mode
from tests.test_cli import TINY_LIMITS, lit_prune


@pytest.fixture(scope="module")
def vit_with_mlp_masks() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """ViT-Tiny (patch 4) whose MLP linears and head carry 2:4 masks; attention stays dense."""
    torch.manual_seed(0)
    network = create_model("vit_tiny", num_classes=10)
    params = {
        name: param for name, param in network.named_parameters() if ".mlp.fc" in name and name.endswith(".weight")
    }
    params["head.weight"] = network.head.weight
    mask = nm_prune_mask(magnitude_scores(params), SEMI_STRUCTURED_PATTERN.sparsity, SEMI_STRUCTURED_PATTERN)
    return network, dict(mask.items())


def test_plan_converts_exactly_the_2_4_masked_linears_of_a_fitting_shape(vit_with_mlp_masks) -> None:
    network, mask = vit_with_mlp_masks
    depth = len(network.blocks)
    expected = [f"blocks.{index}.mlp.fc{layer}" for index in range(depth) for layer in (1, 2)]
    for backend, limits in (("cusparselt", "(16, 16)"), ("cutlass", "(32, 64)")):
        plan = semi_structured_plan(network, mask, torch.float16, backend=backend)
        assert list(plan.eligible) == expected
        assert plan.left_out["head"] == f"shape (10, 192) is not a multiple of {limits}, which {backend} needs for " + (
            "torch.float16"
        )
        for index in range(depth):
            for name in (f"blocks.{index}.attn.qkv", f"blocks.{index}.attn.proj"):
                assert plan.left_out[name] == "weights are not 2:4 sparse (some group of 4 inputs keeps more than 2)"
        assert set(plan.eligible) | set(plan.left_out) == {
            name for name, module in network.named_modules() if isinstance(module, nn.Linear)
        }


def test_plan_goes_by_the_zeros_without_a_mask_and_refuses_other_dtypes() -> None:
    linear = nn.Linear(64, 32)
    with torch.no_grad():
        linear.weight.view(-1, 4)[:, :2] = 0.0
    assert semi_structured_plan(nn.Sequential(linear), None, torch.bfloat16, "cusparselt").eligible == ("0",)
    with torch.no_grad():
        linear.weight[0, 0] = 1.0
    assert semi_structured_plan(nn.Sequential(linear), None, torch.bfloat16, "cusparselt").eligible == ()
    with pytest.raises(ValueError, match="dtype must be one of"):
        semi_structured_plan(nn.Sequential(linear), None, torch.float32)
    assert semi_structured_plan(nn.Sequential(nn.Linear(6, 32)), None).left_out == {
        "0": "input size 6 is not a multiple of 4"
    }


def test_cpu_says_needs_cuda_and_builds_nothing(vit_with_mlp_masks) -> None:
    network, mask = vit_with_mlp_masks
    assert semi_structured_unsupported("cpu").startswith("needs CUDA")
    with pytest.raises(RuntimeError, match="^needs CUDA"):
        to_semi_structured(network, mask)


def test_profile_on_cpu_reports_the_note_and_no_figure(vit_with_mlp_masks) -> None:
    network, mask = vit_with_mlp_masks
    inputs = torch.randn(2, 3, 32, 32)
    profile = measure_profile(
        network, inputs, mask, warmup=0, repeats=1, energy_repeats=1, sparse_inference="semi_structured"
    )
    section = profile["sparse_inference"]
    assert section["mode"] == "semi_structured"
    assert section["note"].startswith("needs CUDA") and profile["notes"]["sparse_inference"] == section["note"]
    for key in ("latency_ms", "latency_ratio_vs_dense", "energy_mj", "peak_memory_mb", "max_abs_logit_difference"):
        assert section[key] is None
    assert len(section["plan"]["eligible"]) == 2 * len(network.blocks)
    assert profile["latency_ms"] > 0, "the dense figures are measured as always"


def test_sparse_inference_modes() -> None:
    assert [sparse_inference_mode(value) for value in (False, None, True, "csr", "coo", "semi_structured")] == [
        None,
        None,
        "csr",
        "csr",
        "coo",
        "semi_structured",
    ]
    with pytest.raises(UserError, match="sparse_inference must be false, true"):
        sparse_inference_mode("2:4")
    torch.manual_seed(0)
    network = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))
    mask = {"1.weight": torch.rand(8, 12) > 0.5, "3.weight": torch.rand(3, 8) > 0.5}
    with torch.no_grad():
        for name, keep in mask.items():
            network.get_parameter(name).mul_(keep)
    profile = measure_profile(network, torch.randn(4, 3, 2, 2), mask, warmup=0, repeats=1, sparse_inference="coo")
    assert profile["sparse_inference"]["linear_layout"] == "coo"
    assert profile["sparse_inference"]["max_abs_logit_difference"] < 1e-5


def test_console_fit_with_semi_structured_inference_writes_the_note(tmp_path: Path) -> None:
    config = tmp_path / "semi.yaml"
    config.write_text(
        textwrap.dedent(
            """\
            seed_everything: 0
            trainer:
              max_epochs: 1
              accelerator: cpu
              devices: 1
              logger:
                class_path: lightning.pytorch.loggers.TensorBoardLogger
                init_args: {save_dir: lightning_logs, name: semi}
              callbacks:
                - class_path: callbacks.profiling.ProfilingCallback
                  init_args:
                    batch_size: 16
                    latency_repeats: 2
                    energy_repeats: 1
                    max_eval_batches: 1
                    sparse_inference: semi_structured
                - class_path: callbacks.MagnitudePruning
                  init_args: {pattern: "2:4", start_epoch: 0}
            model:
              network: resnet20
            data:
              class_path: datamodules.DigitsDataModule
              init_args: {batch_size: 16, seed: 0}
            """
        )
    )
    result = lit_prune("fit", "--config", str(config), *TINY_LIMITS, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = tmp_path / "lightning_logs" / "semi" / "version_0"
    report = json.loads((run_dir / "report.json").read_text())
    note = report["profile"]["notes"]["sparse_inference"]
    assert note.startswith("needs CUDA")
    section = report["profile"]["sparse_inference"]
    assert section["latency_ms"] is None and section["note"] == note
    assert "fc" in section["plan"]["left_out"], "ResNet-20's only linear layer (10 x 64) is too small for the kernels"
    assert report["sparsity"]["global"] == pytest.approx(0.5, abs=0.01)
    assert "Sparse inference (semi_structured): needs CUDA" in (run_dir / "report.md").read_text()

    typo = tmp_path / "typo.yaml"
    typo.write_text(config.read_text().replace("semi_structured", "semi-structured"))
    bad = lit_prune("fit", "--config", str(typo), *TINY_LIMITS, cwd=tmp_path)
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert "sparse_inference must be false, true (the same as csr), csr, coo, semi_structured" in bad.stderr
    assert not (tmp_path / "lightning_logs" / "semi" / "version_1").exists()


def test_the_cuda_branch_measures_dense_and_converted_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA-only branch, run on a CPU with the device check passed and the conversion faked.

    ``to_sparse_semi_structured`` is replaced by a copy of the dense half-precision weight, so this
    checks what surrounds the kernels (which layers, which copies are timed, what is reported),
    not the kernels themselves.
    """
    import lit_prune.pruning.semi_structured as semi_structured
    import lit_prune.report.measurement as measurement

    converted: list[tuple[int, ...]] = []

    def fake_conversion(weight: torch.Tensor) -> torch.Tensor:
        converted.append(tuple(weight.shape))
        assert weight.dtype == torch.float16 and SEMI_STRUCTURED_PATTERN.holds(weight)
        return weight.clone()

    monkeypatch.setattr(semi_structured, "semi_structured_unsupported", lambda device: None)
    monkeypatch.setattr(measurement, "semi_structured_unsupported", lambda device: None)
    monkeypatch.setattr(torch.sparse, "to_sparse_semi_structured", fake_conversion)
    monkeypatch.setattr(semi_structured, "semi_structured_backend", lambda: "cusparselt")
    torch.manual_seed(0)
    network = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 3))
    params = {name: param for name, param in network.named_parameters() if name.endswith("weight")}
    mask = dict(nm_prune_mask(magnitude_scores(params), 0.5, SEMI_STRUCTURED_PATTERN).items())
    with torch.no_grad():
        for name, keep in mask.items():
            network.get_parameter(name).mul_(keep)
    profile = measure_profile(
        network, torch.randn(8, 4, 4, 4), mask, warmup=0, repeats=2, sparse_inference="semi_structured"
    )
    section = profile["sparse_inference"]
    assert converted == [(32, 64), (16, 32)], "the (3, 16) head is too small for the kernels"
    assert section["sparse_layers"] == ["1", "3"]
    assert section["plan"]["left_out"] == {
        "5": "shape (3, 16) is not a multiple of (16, 16), which cusparselt needs for torch.float16"
    }
    assert section["latency_ms"] > 0 and section["dense_latency_ms"] > 0 and section["latency_ratio_vs_dense"] > 0
    assert section["max_abs_logit_difference"] == 0.0, "the fake conversion keeps the weights, so outputs agree"
    assert section["note"].startswith("2 linear layers hold 2:4 semi-structured float16 weights")
    assert "sparse_inference" not in profile["notes"]
