"""Config files composed from ``configs/base/``: the merge rules, the errors, and the command.

The rules are those LightningCLI applies to several ``--config`` files, so a composed experiment
prints (``--print_config``) exactly the config it had when it was written out in full.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lit_prune.config_bases import compose_config, expand_config_arguments, merge_config
from lit_prune.errors import UserError
from tests.conftest import CONFIG_DIR
from tests.test_cli import lit_prune

EXPERIMENTS = sorted(path for path in CONFIG_DIR.glob("*.yaml") if path.name != "quickstart.yaml")
BASE_FILES = sorted((CONFIG_DIR / "base").rglob("*.yaml"))


def _write(path: Path, content: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(content))
    return path


def test_mappings_merge_and_everything_else_replaces() -> None:
    base = {"trainer": {"max_epochs": 160, "devices": "auto", "callbacks": [{"class_path": "A"}]}, "seed": 0}
    override = {"trainer": {"max_epochs": 200, "callbacks": [{"class_path": "B"}]}, "extra": None}
    merged = merge_config(base, override)
    assert merged == {
        "trainer": {"max_epochs": 200, "devices": "auto", "callbacks": [{"class_path": "B"}]},
        "seed": 0,
        "extra": None,
    }
    assert base["trainer"]["max_epochs"] == 160


def test_init_args_merge_only_into_the_same_class() -> None:
    sgd = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1, "momentum": 0.9}}
    assert merge_config(sgd, {"init_args": {"lr": 0.01}}) == {
        "class_path": "torch.optim.SGD",
        "init_args": {"lr": 0.01, "momentum": 0.9},
    }
    assert merge_config(sgd, {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.01}})["init_args"] == {
        "lr": 0.01,
        "momentum": 0.9,
    }
    adam = {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.001}}
    assert merge_config(sgd, adam) == adam


def test_bases_compose_in_order_recursively_and_relative_to_their_file(tmp_path: Path) -> None:
    _write(tmp_path / "base" / "inner.yaml", {"trainer": {"max_epochs": 1, "devices": 1}})
    _write(tmp_path / "base" / "outer.yaml", {"bases": ["inner.yaml"], "trainer": {"max_epochs": 2}})
    _write(tmp_path / "base" / "data.yaml", {"data": {"batch_size": 8}})
    config = _write(
        tmp_path / "experiment.yaml", {"bases": ["base/outer.yaml", "base/data.yaml"], "trainer": {"max_epochs": 3}}
    )
    assert compose_config(config) == {"trainer": {"max_epochs": 3, "devices": 1}, "data": {"batch_size": 8}}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"bases": ["absent.yaml"]}, "names the base 'absent.yaml', which does not exist"),
        ({"bases": [1, 2]}, "'bases' must be a list of config files"),
        ({"bases": ["self.yaml"]}, "config bases form a cycle"),
        ({"bases": ["list.yaml"]}, "must hold a YAML mapping of options"),
    ],
    ids=["missing", "not paths", "cycle", "not a mapping"],
)
def test_bad_bases_are_user_errors(tmp_path: Path, content: dict, expected: str) -> None:
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    config = _write(tmp_path / "self.yaml", content)
    with pytest.raises(UserError, match=expected):
        compose_config(config)


def test_only_files_that_name_bases_are_expanded(tmp_path: Path) -> None:
    plain = _write(tmp_path / "plain.yaml", {"trainer": {"max_epochs": 1}})
    _write(tmp_path / "base.yaml", {"trainer": {"devices": 1}})
    composed = _write(tmp_path / "composed.yaml", {"bases": ["base.yaml"], "trainer": {"max_epochs": 2}})
    args = ["fit", "--config", str(plain), f"--config={composed}", "-c", "{trainer: {max_epochs: 4}}", "--x=1"]
    expanded = expand_config_arguments(args)
    assert expanded[:3] == ["fit", "--config", str(plain)]
    assert expanded[3] == "--config"
    assert yaml.safe_load(expanded[4]) == {"trainer": {"devices": 1, "max_epochs": 2}}
    assert expanded[5:] == ["-c", "{trainer: {max_epochs: 4}}", "--x=1"]


def test_every_experiment_names_its_bases_and_every_base_is_used() -> None:
    """The quickstart alone is written out whole: it is the one file a new user reads first."""
    named: set[Path] = set()
    for config in EXPERIMENTS:
        bases = yaml.safe_load(config.read_text()).get("bases")
        assert bases, f"{config.name} names no bases"
        named.update((config.parent / base).resolve() for base in bases)
    for base in BASE_FILES:
        named.update((base.parent / name).resolve() for name in yaml.safe_load(base.read_text()).get("bases", []))
    unused = [base.name for base in BASE_FILES if base.resolve() not in named]
    assert not unused, f"base files no config names: {unused}"


def test_a_composed_experiment_prints_its_bases_through_the_command(tmp_path: Path) -> None:
    result = lit_prune(
        "fit", "--config", str(CONFIG_DIR / "e1_oneshot_resnet20_cifar10.yaml"), "--print_config", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["model"]["optimizer"]["init_args"]["lr"] == 0.1
    assert printed["model"]["lr_scheduler"]["init_args"]["milestones"] == [80, 120]
    assert printed["data"]["class_path"] == "datamodules.CIFAR10DataModule"
    assert printed["trainer"]["max_epochs"] == 200
    assert printed["trainer"]["logger"]["init_args"]["name"] == "e1_oneshot_resnet20_cifar10"
    assert "bases" not in printed


def test_a_missing_base_is_a_short_user_error(tmp_path: Path) -> None:
    config = _write(tmp_path / "broken.yaml", {"bases": ["base/absent.yaml"], "trainer": {"max_epochs": 1}})
    result = lit_prune("fit", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    output = " ".join((result.stdout + result.stderr).split())
    assert "names the base 'base/absent.yaml', which does not exist" in output
    assert "Traceback" not in output
    assert not (tmp_path / "lightning_logs").exists()
