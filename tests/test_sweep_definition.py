"""Sweep definitions: every shipped sweep file plans, and bad input is a clear error before anything runs.

These tests parse in this process (no run starts): the planning of a sweep resolves every run's
complete config with the parser of ``lit-prune fit``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from lit_prune.errors import UserError
from lit_prune.sweep.definition import SweepDefinition, load_sweep_file, parse_grid_option, parse_seeds
from lit_prune.sweep.manifest import Manifest, RunEntry, fingerprint
from lit_prune.sweep.plan import plan_runs
from lit_prune.sweep.resolve import ConfigResolver
from tests.conftest import CONFIG_DIR

SWEEP_FILES = sorted((CONFIG_DIR / "sweeps").glob("*.yaml"))
QUICKSTART = str(CONFIG_DIR / "quickstart.yaml")
E1 = str(CONFIG_DIR / "e1_oneshot_resnet20_cifar10.yaml")
DIGITS = ["--data", "{class_path: datamodules.DigitsDataModule, init_args: {batch_size: 16}}"]


@pytest.fixture(scope="module")
def resolver() -> ConfigResolver:
    return ConfigResolver()


def test_every_seed_experiment_has_a_sweep_file() -> None:
    names = {path.stem for path in SWEEP_FILES}
    for prefix in ("e1", "e2", "e3_earlybird_fixed", "e3_earlybird_auto", "e4", "e5", "e6", "e7", "e8"):
        assert any(name.startswith(prefix) for name in names), prefix


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_sweep_file_plans_as_smoke_on_digits(path: Path, resolver: ConfigResolver, tmp_path: Path) -> None:
    definition = load_sweep_file(path)
    smoke = plan_runs(definition.with_smoke().with_args(DIGITS), tmp_path / "smoke", resolver)
    assert smoke and all(run.config_text for run in smoke)
    for run in smoke:
        config = yaml.safe_load(run.config_text)
        assert config["trainer"]["logger"]["init_args"]["version"] == run.name
        assert config["data"]["class_path"] == "datamodules.DigitsDataModule"
    if definition.base is not None:
        bases = [run for run in smoke if run.kind == "base"]
        assert len(bases) == len(definition.with_smoke().seeds)
        assert all(run.base in {base.name for base in bases} for run in smoke if run.kind == "branch")


def test_e3_fixed_shares_one_base_per_seed_keeping_every_draw_epoch(resolver: ConfigResolver, tmp_path: Path) -> None:
    definition = load_sweep_file(CONFIG_DIR / "sweeps" / "e3_earlybird_fixed.yaml")
    runs = plan_runs(definition, tmp_path, resolver)
    bases = [run for run in runs if run.kind == "base"]
    assert [base.name for base in bases] == ["base_seed-0", "base_seed-1", "base_seed-2"]
    assert len(runs) == 3 + 3 * 8
    base = yaml.safe_load(bases[0].config_text)
    classes = [callback["class_path"] for callback in base["trainer"]["callbacks"]]
    assert not any(path.endswith("EarlyBird") for path in classes)
    keeper = base["trainer"]["callbacks"][-1]
    assert keeper["class_path"] == "lit_prune.sweep.base_stage.BaseCheckpoints"
    assert keeper["init_args"]["epochs"] == [10, 30, 50, 100]
    branch = next(run for run in runs if run.values.get("trainer.callbacks.draw_epoch") == 30 and run.seed == 1)
    assert (branch.base, branch.branch_epoch) == ("base_seed-1", 30)
    assert branch.start_checkpoint(tmp_path) == tmp_path / "base_seed-1" / "checkpoints" / "start_epoch_030.ckpt"


def test_e2_branches_rewind_to_their_base_init(resolver: ConfigResolver, tmp_path: Path) -> None:
    runs = plan_runs(load_sweep_file(CONFIG_DIR / "sweeps" / "e2_lottery.yaml"), tmp_path, resolver)
    branch = next(run for run in runs if run.kind == "branch" and run.seed == 2)
    ticket = yaml.safe_load(branch.config_text)["trainer"]["callbacks"][-1]
    assert ticket["init_args"]["rewind_weights"] == str(tmp_path / "base_seed-2" / "checkpoints" / "init.ckpt")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"config": QUICKSTART, "grids": {}}, "unknown key(s) ['grids']"),
        ({"config": QUICKSTART, "grid": {"trainer.max_epochs": []}}, "has no values"),
        ({"config": QUICKSTART, "grid": {"trainer.max_epochs": 3}}, "must be a list"),
        ({"config": QUICKSTART, "seeds": []}, "seeds is empty"),
        ({"config": QUICKSTART, "seeds": [0, 0]}, "lists a seed twice"),
        ({"config": "configs/missing.yaml"}, "is not a file"),
        ({"grid": {"trainer.max_epochs": [1]}}, "needs a run config"),
        ({"config": QUICKSTART, "grid": {"seed_everything": [1, 2]}}, "use seeds"),
        ({"config": QUICKSTART, "base": {"branch_epoch": 0}}, "not an epoch >= 1"),
        ({"config": QUICKSTART, "base": {"branch_epoch": "trainer.nope"}}, "neither an epoch nor a grid key"),
        ({"config": QUICKSTART, "layout": {"rows": "a", "columns": "b"}}, "is not a grid key"),
    ],
)
def test_bad_sweep_files_are_refused(content: dict, message: str, tmp_path: Path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(UserError, match=re.escape(message)):
        load_sweep_file(path)


def test_command_line_grid_and_seeds_are_parsed() -> None:
    key = "trainer.callbacks.target_sparsity"
    assert parse_grid_option(f"{key}=0.5, 0.7") == (key, [0.5, 0.7])
    assert parse_grid_option("model.network=resnet20,resnet32") == ("model.network", ["resnet20", "resnet32"])
    assert parse_seeds("0,1,2") == (0, 1, 2)
    with pytest.raises(UserError, match="KEY=V1,V2"):
        parse_grid_option("trainer.max_epochs")
    with pytest.raises(UserError, match="integers"):
        parse_seeds("0,one")


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"trainer.callbacks.not_an_option": [1]}, "rejects its options"),
        ({"trainer.callbacks.target_sparsity": ["half"]}, "rejects its options"),
        ({"trainer.callbacks.target_sparsity": [1.5]}, "refuses its arguments"),
    ],
)
def test_a_combination_the_run_parser_rejects_is_found_before_anything_runs(
    grid: dict, message: str, resolver: ConfigResolver, tmp_path: Path
) -> None:
    definition = SweepDefinition(name="bad", config=E1, grid={"trainer.callbacks.start_epoch": [1], **grid})
    with pytest.raises(UserError, match=message) as error:
        plan_runs(definition, tmp_path, resolver)
    assert "run start_epoch-1_" in str(error.value)
    assert not (tmp_path / "manifest.json").exists()


def test_runs_that_would_share_a_directory_are_refused(resolver: ConfigResolver, tmp_path: Path) -> None:
    grid = {"model.network_kwargs": [{"a": "x y"}, {"a": "x-y"}]}
    definition = SweepDefinition(name="clash", config=QUICKSTART, grid=grid)
    with pytest.raises(UserError, match="share the directory"):
        plan_runs(definition, tmp_path, resolver)


def test_a_directory_made_by_a_different_sweep_is_refused(tmp_path: Path) -> None:
    runs = [RunEntry("a_seed-0", "run", {"a": 1}, 0)]
    Manifest.open(tmp_path, "first", fingerprint(["one"]), {}, runs)
    with pytest.raises(UserError, match="made by a different sweep 'first'"):
        Manifest.open(tmp_path, "second", fingerprint(["two"]), {}, runs)
    foreign = tmp_path / "foreign"
    (foreign / "something").mkdir(parents=True)
    with pytest.raises(UserError, match="not made by lit-prune sweep"):
        Manifest.open(foreign, "first", fingerprint(["one"]), {}, runs)
