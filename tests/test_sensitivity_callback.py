"""``SensitivityAnalysis`` and ``SparseExport``: sweep through the callback, allocation, files, resume, checks."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import callbacks.sensitivity as sensitivity_module
import lit_prune.pruning.sparse_files as sparse_files_module
from callbacks.saliency_pruning import SaliencyPruning
from callbacks.sensitivity import SENSITIVITY_FIGURE, SENSITIVITY_JSON, SensitivityAnalysis
from callbacks.sparse_export import SparseExport
from lit_prune.module import ImageClassifier
from lit_prune.pruning import PruningMask, prunable_parameters
from lit_prune.pruning.sparse_files import (
    MASKS_FILE,
    SPARSE_EXPORT_FILE,
    SPARSE_WEIGHTS_FILE,
    export_and_verify,
    verify_export,
)
from tests.pruning_helpers import digits, make_module, make_trainer


class _FakeTrainer(SimpleNamespace):
    """What ``analyse_and_prune`` reads from a Trainer, on one process, writing into ``log_dir``."""

    def __init__(self, log_dir: Path) -> None:
        data = digits()
        data.setup("fit")
        super().__init__(
            datamodule=data,
            strategy=SimpleNamespace(broadcast=lambda obj, src=0: obj),
            limit_val_batches=1,
            log_dir=str(log_dir),
            default_root_dir=str(log_dir),
            is_global_zero=True,
            loggers=[],
            current_epoch=0,
            global_step=0,
        )


def _weights(module: ImageClassifier) -> dict[str, torch.Tensor]:
    return {name: param.detach().clone() for name, param in module.network.named_parameters()}


def test_sweep_restores_every_layer_after_its_probes_and_only_the_mask_remains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    module = make_module()
    original = _weights(module)
    changed_per_call: list[list[str]] = []
    evaluate = sensitivity_module.evaluate_on_validation

    def _spying_evaluate(trainer: Any, pl_module: ImageClassifier, max_batches: int | None) -> dict[str, float]:
        current = _weights(pl_module)
        changed = [name for name, tensor in current.items() if not torch.equal(tensor, original[name])]
        for name in changed:
            zeroed = current[name] != original[name]
            assert bool((current[name][zeroed] == 0).all()), f"{name} was changed by more than zeroing"
        changed_per_call.append(changed)
        return evaluate(trainer, pl_module, max_batches)

    monkeypatch.setattr(sensitivity_module, "evaluate_on_validation", _spying_evaluate)
    callback = SensitivityAnalysis(target_sparsity=0.6, sparsities=[0.0, 0.3, 0.6, 0.9], eval_batches=1)
    callback.analyse_and_prune(_FakeTrainer(tmp_path), module)

    layers = list(prunable_parameters(module.network))
    assert len(changed_per_call) == 1 + 3 * len(layers), "one baseline and three probes per layer (0 % is free)"
    assert changed_per_call[0] == [], "the baseline was not measured on the unmodified model"
    assert all(len(changed) == 1 for changed in changed_per_call[1:]), "a probed layer was not restored"
    assert [changed[0] for changed in changed_per_call[1:]][::3] == layers
    mask = module.pruning_mask
    for name, tensor in _weights(module).items():
        expected = original[name] * mask[name] if name in mask else original[name]
        assert torch.equal(tensor, expected), f"{name}: more than the mask changed"


def test_allocation_reaches_the_global_target_within_one_weight_per_layer(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = make_module()
    callback = SensitivityAnalysis(
        target_sparsity=0.7, sparsities=[0.0, 0.5, 0.8, 0.9], eval_batches=1, exclude=["fc.weight"]
    )
    result = callback.analyse_and_prune(_FakeTrainer(tmp_path), module)

    mask = module.pruning_mask
    params = prunable_parameters(module.network, exclude=["fc.weight"])
    assert set(mask) == set(params) == set(callback.allocation) == set(result.curves)
    assert mask.num_pruned() == round(0.7 * sum(p.numel() for p in params.values()))
    for name, fraction in callback.allocation.items():
        pruned = int((~mask[name]).sum())
        assert abs(pruned - fraction * params[name].numel()) < 1, name
        assert fraction <= 0.9 + 1e-12, f"{name} allocated beyond the highest probed sparsity"
    assert [s["name"] for s in module.pruning_stages] == ["baseline", "pruned"]
    assert module.pruning_stages[1]["selected_sparsity"] == pytest.approx(0.7, abs=1e-5)

    data = json.loads((tmp_path / SENSITIVITY_JSON).read_text())
    assert data["allocation"] == pytest.approx(callback.allocation)
    assert set(data["layers"]) == set(params)
    assert [point[0] for point in data["layers"]["conv1.weight"]["curve"]] == [0.0, 0.5, 0.8, 0.9]
    assert (tmp_path / SENSITIVITY_FIGURE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], "a temporary file was left behind"


def test_user_layer_sparsity_prunes_exactly_the_matching_layers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = make_module()
    callback = SensitivityAnalysis(
        layer_sparsity={"layer1.*": 0.5, "fc.weight": 0.3}, sparsities=[0.0, 0.5], eval_batches=1
    )
    callback.analyse_and_prune(_FakeTrainer(tmp_path), module)
    params = dict(module.network.named_parameters())
    for name, keep in module.pruning_mask.items():
        expected = 0.5 if name.startswith("layer1.") else 0.3 if name == "fc.weight" else 0.0
        assert int((~keep).sum()) == round(expected * params[name].numel()), name
    assert callback.allocation is None


def test_real_run_writes_files_logs_the_figure_and_exports_verified_coo(in_tmp_dir: Path) -> None:
    L.seed_everything(0)
    module = make_module()
    logger = TensorBoardLogger(save_dir=in_tmp_dir, name="e5")
    callbacks = [SparseExport(), SensitivityAnalysis(target_sparsity=0.5, sparsities=[0.0, 0.5, 0.9], eval_batches=1)]
    make_trainer(in_tmp_dir, max_epochs=2, callbacks=callbacks, logger=logger).fit(module, digits())

    run_dir = Path(logger.log_dir)
    for name in (SENSITIVITY_JSON, SENSITIVITY_FIGURE, MASKS_FILE, SPARSE_WEIGHTS_FILE, SPARSE_EXPORT_FILE):
        assert (run_dir / name).is_file(), name
    export = json.loads((run_dir / SPARSE_EXPORT_FILE).read_text())
    assert export["verified"] and export["problems"] == []
    assert export["kept_weights"] == module.pruning_mask.num_kept()
    assert export["dense_weights_bytes"] == 4 * module.pruning_mask.num_total()
    assert [s["name"] for s in module.pruning_stages] == ["baseline", "pruned", "sparse_export", "fine_tuned"]
    assert module.pruning_stages[2]["coo_verified"] is True
    assert PruningMask.from_state_dict(torch.load(run_dir / MASKS_FILE, weights_only=True)).equals(module.pruning_mask)
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    assert "sensitivity/curves" in events.Tags()["images"]
    assert "prune/sparsity" in events.Tags()["scalars"]


def test_resume_does_not_redo_the_sweep_and_keeps_the_mask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interrupted_fit: Callable[..., Path]
) -> None:
    L.seed_everything(0)
    first = make_module()
    analysis = SensitivityAnalysis(target_sparsity=0.5, sparsities=[0.0, 0.5, 0.9], eval_batches=1)
    last = interrupted_fit(first, [analysis], max_epochs=3, stop_after_epoch=0, datamodule=digits())

    def _no_sweep(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the sensitivity sweep ran again after resuming")

    monkeypatch.setattr(sensitivity_module, "sensitivity_sweep", _no_sweep)
    resumed = make_module()
    callback = SensitivityAnalysis(target_sparsity=0.5, sparsities=[0.0, 0.5, 0.9], eval_batches=1)
    make_trainer(tmp_path, max_epochs=2, callbacks=[callback]).fit(resumed, digits(), ckpt_path=last)
    assert callback.done and callback.allocation == analysis.allocation
    assert resumed.pruning_mask.equals(first.pruning_mask)
    assert [s["name"] for s in resumed.pruning_stages] == ["baseline", "pruned", "fine_tuned"]


def _exported(tmp_path: Path) -> tuple[ImageClassifier, PruningMask]:
    torch.manual_seed(0)
    module = make_module()
    params = prunable_parameters(module.network)
    mask = PruningMask({name: torch.rand(p.shape) > 0.7 for name, p in params.items()})
    module.set_pruning_mask(mask)
    assert export_and_verify(module.network, mask, tmp_path)["verified"]
    return module, mask


def _coo(indices: torch.Tensor, values: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return torch.sparse_coo_tensor(indices, values, shape, check_invariants=True).coalesce()


def test_verification_catches_corrupted_values_indices_and_masks(tmp_path: Path) -> None:
    module, mask = _exported(tmp_path)
    assert verify_export(tmp_path, module.network, mask) == []
    pristine = torch.load(tmp_path / SPARSE_WEIGHTS_FILE, weights_only=True)

    values = dict(pristine)
    tensor = values["conv1.weight"]
    changed = tensor.values().clone()
    changed[0] += 1.0
    values["conv1.weight"] = _coo(tensor.indices(), changed, tensor.shape)
    torch.save(values, tmp_path / SPARSE_WEIGHTS_FILE)
    assert any("conv1.weight: 1 values differ" in problem for problem in verify_export(tmp_path, module.network))

    dropped = dict(pristine)
    tensor = dropped["fc.weight"]
    dropped["fc.weight"] = _coo(tensor.indices()[:, 1:], tensor.values()[1:], tensor.shape)
    torch.save(dropped, tmp_path / SPARSE_WEIGHTS_FILE)
    assert any("fc.weight: 1 indices differ" in problem for problem in verify_export(tmp_path, module.network))

    torch.save(pristine, tmp_path / SPARSE_WEIGHTS_FILE)
    other = {name: keep.clone() for name, keep in mask.items()}
    other["conv1.weight"].view(-1)[0] ^= True
    torch.save(other, tmp_path / MASKS_FILE)
    problems = verify_export(tmp_path, module.network, mask)
    assert any(problem.startswith("conv1.weight") for problem in problems)
    assert f"{MASKS_FILE}: differs from the module's mask" in problems

    (tmp_path / SPARSE_WEIGHTS_FILE).write_bytes(b"not a checkpoint")
    assert "cannot be read back" in verify_export(tmp_path, module.network)[0]
    (tmp_path / MASKS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=MASKS_FILE):
        verify_export(tmp_path, module.network)


def test_a_mismatching_export_fails_the_run_and_is_recorded(in_tmp_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sparse_files_module, "verify_export", lambda *args: ["conv1.weight: 3 values differ"])
    pruning = SaliencyPruning(score="magnitude", target_sparsity=0.5)
    with pytest.raises(RuntimeError, match="3 values differ"):
        make_trainer(in_tmp_dir, max_epochs=1, callbacks=[SparseExport(), pruning]).fit(make_module(), digits())
    (export_file,) = in_tmp_dir.glob(f"lightning_logs/version_0/{SPARSE_EXPORT_FILE}")
    assert json.loads(export_file.read_text())["verified"] is False


def test_sparse_export_without_a_mask_writes_nothing(in_tmp_dir: Path) -> None:
    with pytest.warns(UserWarning, match="nothing to export"):
        make_trainer(in_tmp_dir, max_epochs=1, callbacks=[SparseExport()]).fit(make_module(), digits())
    assert not list(in_tmp_dir.rglob(SPARSE_WEIGHTS_FILE))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of"),
        ({"target_sparsity": 0.5, "layer_sparsity": {"*": 0.5}}, "exactly one of"),
        ({"target_sparsity": 0.95}, r"\(0, 0.9\]"),
        ({"target_sparsity": 0.0}, r"\(0, 0.9\]"),
        ({"target_sparsity": 0.5, "sparsities": []}, "non-empty list"),
        ({"target_sparsity": 0.5, "sparsities": [0.5, 0.5]}, "not repeat"),
        ({"target_sparsity": 0.5, "sparsities": [0.5, 1.0]}, r"\[0, 1\)"),
        ({"layer_sparsity": {}}, "non-empty mapping"),
        ({"layer_sparsity": {"conv1.weight": 1.5}}, r"\[0, 1\)"),
        ({"target_sparsity": 0.5, "at_epoch": -1}, ">= 0"),
        ({"target_sparsity": 0.5, "eval_batches": 0}, ">= 1"),
    ],
)
def test_bad_options_fail_at_construction(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SensitivityAnalysis(**kwargs)


def test_analysis_epoch_past_max_epochs_fails_at_start() -> None:
    callback = SensitivityAnalysis(target_sparsity=0.5, at_epoch=3)
    with pytest.raises(ValueError, match="max_epochs"):
        make_trainer(None, max_epochs=3, callbacks=[callback]).fit(make_module(), digits())


def test_layer_pattern_matching_nothing_names_the_layers(tmp_path: Path) -> None:
    callback = SensitivityAnalysis(layer_sparsity={"classifier.*": 0.5}, sparsities=[0.0, 0.5], eval_batches=1)
    with pytest.raises(ValueError, match="classifier"):
        callback.analyse_and_prune(_FakeTrainer(tmp_path), make_module())


def test_sparse_export_option_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="true or false"):
        SparseExport(fail_on_mismatch="yes")
