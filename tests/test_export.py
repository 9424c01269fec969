"""``lit-prune export``: real lit-prune checkpoints exported to ONNX and ``torch.export``, parity proven.

The checkpoints are written by a Lightning ``Trainer`` after one training batch on the digits
data: dense, magnitude-masked (50 %), channel-shrunk ResNet-20 and a head-pruned ViT-Tiny
(patch 4). Each export is checked twice: by the command's own parity check, and here against the
network Lightning itself loads from the checkpoint (``ImageClassifier.load_from_checkpoint``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn

from lit_prune.cli import main
from lit_prune.errors import UserError
from lit_prune.export import (
    EXPORT_FORMATS,
    ExportRequest,
    compare_outputs,
    export_checked,
    rebuild_network,
    report_path,
)
from lit_prune.module import ImageClassifier
from lit_prune.pruning import (
    global_prune_mask,
    magnitude_scores,
    prunable_groups,
    prunable_parameters,
    select_channels,
    structured_importance,
)
from lit_prune.pruning.parameters import parameter_count
from lit_prune.report import check_report
from lit_prune.tensorboard_scalars import read_scalars
from tests.pruning_helpers import digits, make_trainer
from tests.test_cli import MAX_ERROR_LINES, QUICKSTART, TINY_LIMITS, lit_prune

CASES = ("dense", "masked", "shrunk", "vit_heads")
TOLERANCE = 1e-4


def _fit_one_batch(module: ImageClassifier, root: Path) -> object:
    trainer = make_trainer(
        root,
        max_epochs=1,
        callbacks=[],
        limit_train_batches=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
    )
    trainer.fit(module, digits(batch_size=8))
    return trainer


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Checkpoints written by a Trainer: dense, 50 % masked, channel-shrunk ResNet-20, head-pruned ViT-Tiny."""
    root = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    paths = {case: root / f"{case}.ckpt" for case in CASES}

    dense = ImageClassifier("resnet20", num_classes=10)
    trainer = _fit_one_batch(dense, root)
    trainer.save_checkpoint(paths["dense"])
    groups = prunable_groups(dense.network, include_residual=True, kinds=["channels"])
    dense.apply_surgery(select_channels(structured_importance(dense.network, groups, "l1"), 0.5, scope="layer"))
    trainer.save_checkpoint(paths["shrunk"])

    masked = ImageClassifier("resnet20", num_classes=10)
    trainer = _fit_one_batch(masked, root)
    masked.set_pruning_mask(global_prune_mask(magnitude_scores(prunable_parameters(masked.network)), sparsity=0.5))
    trainer.save_checkpoint(paths["masked"])

    vit = ImageClassifier("vit_tiny", num_classes=10, network_kwargs={"patch_size": 4})
    trainer = _fit_one_batch(vit, root)
    heads = prunable_groups(vit.network, kinds=["heads"])
    vit.apply_surgery({name: [0, 2] for name in heads})
    trainer.save_checkpoint(paths["vit_heads"])
    return paths


def _lightning_network(checkpoint: Path) -> nn.Module:
    """The network as Lightning loads the checkpoint, independently of lit_prune.export."""
    return ImageClassifier.load_from_checkpoint(checkpoint, map_location="cpu").network.eval()


def _epoch(checkpoint: Path) -> int:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"]


def _run_exported(path: Path, images: torch.Tensor) -> torch.Tensor:
    if path.suffix == ".onnx":
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: images.numpy()})[0])
    return torch.export.load(path).module()(images)


@pytest.mark.parametrize("export_format", list(EXPORT_FORMATS))
@pytest.mark.parametrize("case", CASES)
def test_export_has_parity_with_the_checkpoint_lightning_loads(
    case: str, export_format: str, checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    rebuilt = rebuild_network(checkpoints[case])
    output = tmp_path / f"model{EXPORT_FORMATS[export_format]}"
    request = ExportRequest(export_format, output, rebuilt.input_shape, batch_size=3, latency_repeats=1)
    content = export_checked(rebuilt.network, request, echo=lambda line: None)

    assert content["passed"] and [entry["batch_size"] for entry in content["parity"]] == [1, 3]
    assert all(entry["max_scaled_diff"] <= TOLERANCE for entry in content["parity"])
    assert json.loads(report_path(output).read_text()) == content
    assert content["file_size_bytes"] == output.stat().st_size
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([output.name, report_path(output).name])

    reference = _lightning_network(checkpoints[case])
    assert parameter_count(rebuilt.network) == parameter_count(reference)
    images = torch.randn(5, *rebuilt.input_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(_run_exported(output, images), reference(images), atol=TOLERANCE, rtol=TOLERANCE)


def test_rebuilt_networks_keep_their_zeros_and_small_shapes(checkpoints: dict[str, Path]) -> None:
    dense = rebuild_network(checkpoints["dense"])
    masked = rebuild_network(checkpoints["masked"])
    shrunk = rebuild_network(checkpoints["shrunk"])
    vit = rebuild_network(checkpoints["vit_heads"])
    state = torch.load(checkpoints["masked"], map_location="cpu", weights_only=True)["pruning"]["mask"]
    for name, keep in state.items():
        assert bool((masked.network.get_parameter(name)[~keep] == 0).all()), name
    assert masked.mask_sparsity == pytest.approx(0.5, abs=1e-3) and dense.mask_sparsity is None
    assert shrunk.surgery_records > 0 and parameter_count(shrunk.network) < 0.5 * parameter_count(dense.network)
    assert all(block.attn.num_heads == 2 for block in vit.network.blocks)
    assert vit.input_shape == (3, 32, 32) and dense.epoch == _epoch(checkpoints["dense"])


def test_input_shape_comes_from_the_runs_config(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    checkpoint = run / "checkpoints" / "last.ckpt"
    checkpoint.write_bytes(checkpoints["dense"].read_bytes())
    (run / "config.yaml").write_text(
        "data:\n  class_path: datamodules.DigitsDataModule\n  init_args: {image_size: 40}\n"
    )
    rebuilt = rebuild_network(checkpoint)
    assert rebuilt.input_shape == (3, 40, 40) and "config.yaml" in rebuilt.input_source


def test_parity_figures_follow_the_rule() -> None:
    eager = torch.tensor([[10.0, -1.0], [0.0, 2.0]], dtype=torch.float64)
    result = compare_outputs(
        eager + torch.tensor([[0.011, 0.0], [0.0, -0.002]], dtype=torch.float64), eager, tolerance=0.0011
    )
    assert result.max_abs_diff == pytest.approx(0.011) and result.max_rel_diff == pytest.approx(0.0011)
    assert result.max_scaled_diff == pytest.approx(0.001) and result.passed and result.top1_agreement == 1.0
    assert not compare_outputs(eager + 0.01, eager, tolerance=0.001).passed
    assert not compare_outputs(eager[:1], eager).passed
    assert not compare_outputs(torch.full_like(eager, float("nan")), eager).passed


@torch.library.custom_op("lit_prune_tests::mystery", mutates_args=())
def _mystery(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@_mystery.register_fake
def _mystery_shape(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class _Mystery(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _mystery(x)


class _DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x
        return -x


class _AlwaysTrue(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.abs().sum() >= 0:
            return 2 * x
        return x


class _Net(nn.Module):
    def __init__(self, odd: nn.Module) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.odd = odd

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.odd(self.fc(x))


@pytest.mark.parametrize(
    ("export_format", "odd", "named"),
    [
        ("onnx", _Mystery(), ["layer 'odd' (_Mystery)", "operator lit_prune_tests.mystery", "TorchScript"]),
        ("exported_program", _DataDependent(), ["layer 'odd' (_DataDependent)", "data-dependent", "x.sum() > 0"]),
    ],
    ids=["onnx operator", "torch.export data-dependent branch"],
)
def test_a_network_that_cannot_export_names_layer_and_operator(
    export_format: str, odd: nn.Module, named: list[str], tmp_path: Path
) -> None:
    output = tmp_path / f"model{EXPORT_FORMATS[export_format]}"
    with pytest.raises(UserError) as raised:
        export_checked(_Net(odd), ExportRequest(export_format, output, (4,), batch_size=2), echo=lambda line: None)
    for text in named:
        assert text in str(raised.value), (text, str(raised.value))
    assert not list(tmp_path.iterdir()), "a failed export leaves no file"


def test_the_torchscript_exporter_takes_over_where_dynamo_fails_and_the_json_says_why(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "model.onnx"
    content = export_checked(_Net(_AlwaysTrue()), ExportRequest("onnx", output, (4,), batch_size=3, latency_repeats=1))
    assert content["exporter"] == "torchscript" and content["opset"] == 18 and content["passed"]
    assert "layer 'odd' (_AlwaysTrue)" in content["dynamo_failure"]
    assert "def forward" not in capfd.readouterr().err, "torch.export's partial graph is not dumped on the user"
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    assert session.run(None, {session.get_inputs()[0].name: np.ones((5, 4), np.float32)})[0].shape == (5, 4)


def test_console_script_exports_a_shrunk_checkpoint(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    output = tmp_path / "exports" / "resnet20_small.onnx"
    result = lit_prune(
        "export",
        "--ckpt_path",
        str(checkpoints["shrunk"]),
        "--format",
        "onnx",
        "--output",
        str(output),
        "--batch_size",
        "4",
        "--latency_repeats",
        "2",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tolerance 0.0001" in result.stdout and re.search(r"parity at batch 4: max \|diff\| \S+", result.stdout)
    content = json.loads(report_path(output).read_text())
    assert content["passed"] and content["exporter"] == "dynamo" and content["batch_sizes_checked"] == [1, 4]
    assert content["file_size_bytes"] == output.stat().st_size and content["opset"] >= 18
    assert (
        content["surgery_records"] > 0
        and content["epoch"] == _epoch(checkpoints["shrunk"])
        and content["input_shape"] == [3, 32, 32]
    )
    latency = content["latency"]
    assert latency["batch_size"] == 4 and latency["pytorch_eager_ms"] > 0
    assert latency["onnxruntime_ms"]["CPUExecutionProvider"] > 0
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch"
    logits = session.run(None, {session.get_inputs()[0].name: np.zeros((7, 3, 32, 32), np.float32)})[0]
    assert logits.shape == (7, 10)


def test_parity_failure_exits_1_and_writes_nothing(
    checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "model.onnx"
    arguments = ["--format", "onnx", "--output", str(output), "--batch_size", "2", "--tolerance", "1e-12"]
    assert main(["export", "--ckpt_path", str(checkpoints["dense"]), *arguments]) == 1
    printed = capsys.readouterr()
    assert "FAILED" in printed.out and "tolerance 1e-12" in printed.err and "nothing was written" in printed.err
    assert not list(tmp_path.iterdir()), "a failed parity check leaves no file, not even a temporary one"


BAD_INPUTS = {
    "unknown format": (["--format", "tflite", "--output", "out/m.onnx"], ["--format", "onnx", "exported_program"]),
    "not a lit-prune checkpoint": (
        ["--ckpt_path", "raw.pt", "--format", "onnx", "--output", "out/m.onnx"],
        ["not a lit-prune checkpoint", "'pruning'"],
    ),
    "not a checkpoint at all": (
        ["--ckpt_path", "notes.txt", "--format", "onnx", "--output", "out/m.onnx"],
        ["notes.txt", "torch.save"],
    ),
    "output under a file": (
        ["--format", "exported_program", "--output", "notes.txt/m.pt2"],
        ["notes.txt", "is a file, not a folder"],
    ),
    "suffix of another format": (["--format", "exported_program", "--output", "out/m.onnx"], [".pt2"]),
    "output is a folder": (["--format", "onnx", "--output", "folder.onnx"], ["folder.onnx", "is a directory"]),
    "batch size 0": (["--format", "onnx", "--output", "out/m.onnx", "--batch_size", "0"], ["--batch_size", ">= 1"]),
}


def _bad_input_files(directory: Path) -> list[Path]:
    (directory / "notes.txt").write_text("not a checkpoint\n")
    torch.save({"conv.weight": torch.zeros(2, 2)}, directory / "raw.pt")
    (directory / "folder.onnx").mkdir()
    return sorted(directory.iterdir())


def _arguments(case: str, checkpoint: Path) -> list[str]:
    arguments = BAD_INPUTS[case][0]
    return ["export", *([] if "--ckpt_path" in arguments else ["--ckpt_path", str(checkpoint)]), *arguments]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_exits_2_and_leaves_nothing(
    case: str, checkpoints: dict[str, Path], in_tmp_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _bad_input_files(in_tmp_dir)
    assert main(_arguments(case, checkpoints["dense"])) == 2
    error = capsys.readouterr().err
    for text in BAD_INPUTS[case][1]:
        assert text in error, (text, error)
    assert "Traceback" not in error and len(error.strip().splitlines()) <= MAX_ERROR_LINES
    assert sorted(in_tmp_dir.iterdir()) == before, "bad input leaves no file or folder behind"


def test_console_script_refuses_a_checkpoint_that_is_not_lit_prunes(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    before = _bad_input_files(tmp_path)
    result = lit_prune(*_arguments("not a lit-prune checkpoint", checkpoints["dense"]), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "'raw.pt' is not a lit-prune checkpoint" in result.stderr and "Traceback" not in result.stderr
    assert sorted(tmp_path.iterdir()) == before


def test_profiling_callback_adds_onnxruntime_latency_to_the_report(tmp_path: Path) -> None:
    callbacks = tmp_path / "callbacks.yaml"
    callbacks.write_text(
        "trainer:\n  callbacks:\n"
        "    - class_path: callbacks.profiling.ProfilingCallback\n"
        "      init_args: {batch_size: 16, onnxruntime: true, train_accuracy: false}\n"
        "    - class_path: callbacks.LotteryTicket\n"
        "      init_args: {epochs_per_round: 2, rounds: 1, target_sparsity: 0.8, rewind_epoch: 1}\n"
    )
    arguments = ["--config", QUICKSTART, "--config", str(callbacks), "--trainer.max_epochs=3", *TINY_LIMITS]
    result = lit_prune("fit", *arguments, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = tmp_path.glob("lightning_logs/quickstart/version_*")
    report = json.loads((run / "report.json").read_text())
    check_report(report)
    profile = report["profile"]
    details = profile["onnxruntime"]
    assert profile["onnxruntime_latency_ms"] == details["latency_ms"] > 0
    assert details["provider"] == "CPUExecutionProvider" and details["exporter"] == "dynamo"
    assert details["max_abs_logit_difference"] < TOLERANCE
    assert details["latency_ratio_vs_eager"] == pytest.approx(details["latency_ms"] / profile["latency_ms"])
    assert "onnxruntime (CPUExecutionProvider, dynamo ONNX export" in (run / "report.md").read_text()
    assert "profile/onnxruntime_latency_ms" in read_scalars(run)


def test_help_names_the_formats_and_the_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "onnx, exported_program" in text and "1: the outputs differ by more than the tolerance" in text
