"""Every option of every callback reaches the command line: ``--trainer.callbacks.help`` and ``--print_config``.

A callback declares its own options and forwards the shared ones to its base as ``**kwargs``; the
parser follows that forwarding. These tests check that nothing forwarded is lost: the expected
options are every parameter of every ``__init__`` along the class's bases, less the ones the class
fixes itself (listed here), and the old names of renamed options are refused with the new name.
The help of each callback is read in-process through ``main()``; ``--print_config`` of all of
them together through the installed console script.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import yaml

import callbacks
from callbacks.base import PruningCallback
from lit_prune.cli import main
from lit_prune.renamed_options import RENAMED_OPTIONS
from tests.conftest import CONFIG_DIR
from tests.test_cli import lit_prune

FIXED_BY_CLASS = {
    "ChannelPruning": {"kinds"},
    "HeadPruning": {"include_residual"},
    "SaliencyPruning": {"scope", "layer_sparsity", "seed"},
    "SensitivityAnalysis": {"scope", "score", "pattern", "seed"},
}
"""Options of a base that a callback sets itself instead of passing them on."""

REQUIRED = {
    "ChannelPruning": {"removed_fraction": 0.3, "prune_epoch": 1},
    "HeadPruning": {"removed_fraction": 0.3, "prune_epoch": 1},
    "ChannelRegressionPruning": {"channel_fraction": 0.5},
    "LotteryTicket": {"epochs_per_round": 2, "rounds": 1},
    "MagnitudePruning": {"target_sparsity": 0.5},
    "SensitivityAnalysis": {"target_sparsity": 0.5},
}
"""Values for the options a callback cannot do without, so a config can name it."""

_NOT_OPTIONS = {"self", "args", "kwargs", "renamed"}
_OPTION = re.compile(r"^ +--trainer\.callbacks\.(\w+)", re.MULTILINE)
"""An option's entry in the help: indented, at the start of its line."""


def expected_options(cls: type) -> set[str]:
    """Every ``__init__`` parameter along the bases that ``cls`` forwards ``**kwargs`` to, less those it fixes."""
    names: set[str] = set()
    for base in cls.__mro__:
        if "__init__" not in vars(base):
            continue
        parameters = inspect.signature(base.__init__).parameters
        names |= set(parameters) - _NOT_OPTIONS
        if "kwargs" not in parameters:
            break
    return names - FIXED_BY_CLASS.get(cls.__name__, set())


def test_every_callback_of_the_package_is_checked() -> None:
    assert set(callbacks.__all__) >= {"MagnitudePruning", "LotteryTicket", "ChannelPruning", "SparseExport"}
    for name in callbacks.__all__:
        cls = getattr(callbacks, name)
        assert expected_options(cls), name
        if issubclass(cls, PruningCallback):
            assert not RENAMED_OPTIONS.keys() & expected_options(cls), f"{name} still takes an old option name"


@pytest.mark.parametrize("name", callbacks.__all__)
def test_help_lists_every_option(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    # In-process through main() (exit status included): a process per callback would spend most of
    # its time importing torch; --help and --print_config of the console script are tested below.
    status = main(["fit", "--trainer.callbacks.help", f"callbacks.{name}"])
    printed = capsys.readouterr()
    assert status == 0, printed.err
    listed = set(_OPTION.findall(printed.out))
    assert listed == expected_options(getattr(callbacks, name)), printed.out


def test_print_config_shows_every_option_of_every_callback(tmp_path: Path) -> None:
    config = yaml.safe_load((CONFIG_DIR / "quickstart.yaml").read_text())
    config["trainer"]["callbacks"] = [
        {"class_path": f"callbacks.{name}", "init_args": REQUIRED.get(name, {})} for name in callbacks.__all__
    ]
    path = tmp_path / "all_callbacks.yaml"
    path.write_text(yaml.safe_dump(config))
    result = lit_prune("fit", "--config", str(path), "--print_config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)["trainer"]["callbacks"]
    assert [entry["class_path"] for entry in printed] == [f"callbacks.{name}" for name in callbacks.__all__]
    for name, entry in zip(callbacks.__all__, printed):
        assert set(entry["init_args"]) == expected_options(getattr(callbacks, name)), name
        for option, value in REQUIRED.get(name, {}).items():
            assert entry["init_args"][option] == value


@pytest.mark.parametrize(
    ("name", "old", "new"),
    [
        ("LotteryTicket", "final_sparsity", "target_sparsity"),
        ("LotteryTicket", "prune_fraction", "fraction_of_remaining"),
        ("MagnitudePruning", "fraction_per_step", "fraction_of_remaining"),
        ("ChannelPruning", "param_fraction", "removed_fraction"),
        ("EarlyBird", "ratio", "channel_fraction"),
        ("ChannelRegressionPruning", "ratios", "channel_fraction"),
    ],
)
def test_an_old_option_name_is_refused_with_the_new_one(name: str, old: str, new: str) -> None:
    options = {**REQUIRED.get(name, {}), old: 0.5}
    with pytest.raises(ValueError, match=f"{old} was renamed {new}"):
        getattr(callbacks, name)(**options)
