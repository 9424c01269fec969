"""What a sweep is: configs, a grid of option values, seeds, options for every run, a base stage.

A sweep is written either as a sweep file (YAML, see ``configs/sweeps/``) or on the command line
(``--config X.yaml --grid KEY=V1,V2 --seeds 0,1,2``). Both become one :class:`SweepDefinition`,
checked here before anything is parsed or run. A sweep file has these keys::

    name: e3_fixed                  # the sweep directory's name (default: the file's stem)
    config: configs/X.yaml          # the run config (or a grid over ``config``)
    grid:                           # option (as after ``--`` on the command line) to its values
      trainer.callbacks.draw_epoch: [10, 30, 50, 100]
      trainer.callbacks.ratio: [0.3, 0.5]
    seeds: [0, 1, 2]
    args: [--trainer.accelerator=gpu]   # options for every run
    base:                           # optional: train once, branch many
      drop_callbacks: [callbacks.early_bird.EarlyBird]
      branch_epoch: trainer.callbacks.draw_epoch   # an integer, or a grid key holding it
      branch_args: []               # options for every branch; ``{base}`` is the base run's directory
    layout: {rows: trainer.callbacks.draw_epoch, columns: trainer.callbacks.ratio}
    smoke:                          # replaces grid / seeds / args / base for ``--smoke``
      grid: {trainer.callbacks.draw_epoch: [1, 2]}
      args: [--trainer.max_epochs=3]
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from lit_prune.config_bases import compose_config
from lit_prune.errors import UserError

__all__ = [
    "CONFIG_KEY",
    "BaseStage",
    "Layout",
    "SweepDefinition",
    "config_smoke_args",
    "load_sweep_file",
    "parse_grid_option",
    "parse_seeds",
]

CONFIG_KEY = "config"
"""The grid key that varies the run's config file instead of an option."""

_FILE_KEYS = ("name", "config", "grid", "seeds", "args", "base", "layout", "smoke")
_BASE_KEYS = ("config", "drop_callbacks", "args", "branch_epoch", "branch_args")
_SMOKE_KEYS = ("grid", "seeds", "args", "base")
_LAYOUT_KEYS = ("rows", "columns", "metric")
_KEY_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class BaseStage:
    """A dense run trained once per seed, whose saved states the sweep's runs branch from.

    Attributes:
        config: The base run's config file; ``None`` uses each branch's own config.
        drop_callbacks: Class paths of the callbacks left out of the base run (the pruning).
        args: Further options of the base run.
        branch_epoch: The epoch at whose start every branch resumes the base run (its epoch
            counter, optimizer and LR schedule continue), or a grid key whose value is that epoch;
            ``None``: branches start from scratch and take what they need through
            ``branch_args`` (e.g. ``--model.network_kwargs.checkpoint_path={base}/...``).
        branch_args: Options added to every branch; ``{base}`` stands for the base run's directory.
    """

    config: str | None = None
    drop_callbacks: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    branch_epoch: int | str | None = None
    branch_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Layout:
    """How ``lit-prune report`` lays out the sweep's table: one grid key down, another across.

    Attributes:
        rows: The key whose values are the rows.
        columns: The key whose values are the columns.
        metric: The report metric in the cells (``test_top1`` by default).
    """

    rows: str
    columns: str
    metric: str = "test_top1"


@dataclass(frozen=True)
class SweepDefinition:
    """Everything that defines a sweep's runs.

    Attributes:
        name: The sweep's name (its directory's default name).
        config: The run config file; ``None`` when the grid varies ``config``.
        grid: Option key to its values, in order; the runs are every combination.
        seeds: The seeds; each combination runs once per seed.
        args: Options given to every run.
        base: The shared base stage, or ``None``.
        layout: The report layout, or ``None``.
        smoke: The sweep file's ``smoke`` section (raw), or ``None``.
        source: The sweep file, or ``None`` for a sweep given on the command line.
        smoke_configs: Give every run its config's own ``# smoke:`` options first (``--smoke``).
    """

    name: str
    config: str | None
    grid: dict[str, list[Any]] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)
    args: tuple[str, ...] = ()
    base: BaseStage | None = None
    layout: Layout | None = None
    smoke: dict[str, Any] | None = None
    source: str | None = None
    smoke_configs: bool = False

    def __post_init__(self) -> None:
        _check_name(self.name)
        _check_grid(self.grid)
        if self.config is None and CONFIG_KEY not in self.grid:
            raise UserError(
                "the sweep needs a run config: give `config: FILE` (or --config FILE) or a grid over config"
            )
        if self.config is not None and CONFIG_KEY in self.grid:
            raise UserError("give either `config` or a grid over `config`, not both")
        for config in [self.config] if self.config is not None else self.grid[CONFIG_KEY]:
            _check_file(config, CONFIG_KEY)
        if not self.seeds:
            raise UserError("seeds is empty: give at least one seed, e.g. seeds: [0, 1, 2]")
        _check_options(self.args, "args")
        if self.base is not None:
            _check_base(self.base, self.grid)
        if self.layout is not None:
            for key in (self.layout.rows, self.layout.columns):
                if key not in self.grid:
                    raise UserError(f"layout key {key!r} is not a grid key; the grid keys are {sorted(self.grid)}")

    def with_smoke(self) -> SweepDefinition:
        """The sweep with its ``smoke`` section applied (tiny schedule, few values) for a smoke test.

        Every run also gets its config's own ``# smoke:`` options (the convention of ``configs/``),
        before the sweep's options and grid values.

        Returns:
            A new definition named ``<name>-smoke``.

        """
        smoke = self.smoke or {}
        grid = {**self.grid, **_grid(smoke.get("grid", {}), "smoke.grid")}
        base = self.base
        if "base" in smoke:
            base = None if smoke["base"] is None else _base(smoke["base"], "smoke.base")
        return replace(
            self,
            name=f"{self.name}-smoke",
            grid=grid,
            seeds=_seeds(smoke["seeds"], "smoke.seeds") if "seeds" in smoke else self.seeds,
            args=self.args + _strings(smoke.get("args", []), "smoke.args"),
            base=base,
            smoke=None,
            smoke_configs=True,
        )

    def identity(self) -> dict[str, Any]:
        """What makes two sweeps the same: everything but the layout, with the config files' contents.

        The sweep's fingerprint is taken from this, so re-running the same command (after an update of
        lit-prune too) continues its sweep, while another grid, other seeds or options, or an edited
        config file is another sweep.
        """
        configs = [self.config] if self.config is not None else list(self.grid[CONFIG_KEY])
        if self.base is not None and self.base.config is not None:
            configs.append(self.base.config)
        return {
            "name": self.name,
            "grid": self.grid,
            "seeds": list(self.seeds),
            "args": list(self.args),
            "base": None if self.base is None else asdict(self.base),
            "smoke_configs": self.smoke_configs,
            "configs": {path: yaml.safe_dump(compose_config(path), sort_keys=True) for path in configs},
        }

    def with_args(self, args: Sequence[str]) -> SweepDefinition:
        """The sweep with further options for every run (those after the sweep's own options)."""
        return replace(self, args=self.args + tuple(args))


def config_smoke_args(config: str | Path) -> list[str]:
    """The options on a run config's ``# smoke:`` comment lines (tiny schedule for a smoke run)."""
    options: list[str] = []
    for line in Path(config).read_text(encoding="utf-8").splitlines():
        if line.startswith("# smoke:"):
            options.extend(line.removeprefix("# smoke:").split())
    return options


def load_sweep_file(path: str | Path) -> SweepDefinition:
    """Reads and checks a sweep file.

    Args:
        path: The YAML file.

    Returns:
        The definition.

    Raises:
        UserError: If the file is missing, is not YAML, or a key or value is not allowed.
    """
    file = Path(path)
    if not file.is_file():
        raise UserError(f"sweep file {str(file)!r} not found; the shipped ones are in configs/sweeps/")
    try:
        content = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise UserError(f"sweep file {file} is not valid YAML: {error}") from None
    if not isinstance(content, dict):
        raise UserError(f"sweep file {file} must hold a mapping with the keys {list(_FILE_KEYS)}")
    _check_keys(content, _FILE_KEYS, f"sweep file {file}")
    smoke = content.get("smoke")
    if smoke is not None:
        if not isinstance(smoke, dict):
            raise UserError(f"smoke must be a mapping with some of the keys {list(_SMOKE_KEYS)}, got {smoke!r}")
        _check_keys(smoke, _SMOKE_KEYS, "smoke")
    config = content.get("config")
    if config is not None and not isinstance(config, str):
        raise UserError(f"config must be the path of a run config file, got {config!r}")
    return SweepDefinition(
        name=str(content.get("name") or file.stem),
        config=config,
        grid=_grid(content.get("grid") or {}, "grid"),
        seeds=_seeds(content.get("seeds", [0]), "seeds"),
        args=_strings(content.get("args") or [], "args"),
        base=None if content.get("base") is None else _base(content["base"], "base"),
        layout=None if content.get("layout") is None else _layout(content["layout"]),
        smoke=smoke,
        source=str(file),
    )


def parse_grid_option(text: str) -> tuple[str, list[Any]]:
    """Parses one ``--grid KEY=V1,V2`` option; each value is read as YAML (``0.5`` is a number).

    Args:
        text: The option's value.

    Returns:
        The key and its values.

    Raises:
        UserError: If there is no ``=``, the key is malformed or no value is given.
    """
    key, separator, values = text.partition("=")
    if not separator:
        raise UserError(f"--grid {text!r}: write KEY=V1,V2,... e.g. --grid trainer.callbacks.target_sparsity=0.5,0.7")
    items = [item.strip() for item in values.split(",") if item.strip()]
    return key.strip(), [yaml.safe_load(item) for item in items]


def parse_seeds(text: str) -> tuple[int, ...]:
    """Parses ``--seeds 0,1,2``.

    Raises:
        UserError: If an item is not an integer or none is given.
    """
    items = [item.strip() for item in text.split(",") if item.strip()]
    try:
        return _seeds([int(item) for item in items], "--seeds")
    except ValueError:
        raise UserError(f"--seeds {text!r}: give integers separated by commas, e.g. --seeds 0,1,2") from None


def _check_keys(content: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = sorted(set(content) - set(allowed))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {unknown}; allowed: {list(allowed)}")


def _check_name(name: str) -> None:
    if not _NAME_PATTERN.match(name):
        raise UserError(f"sweep name {name!r} must use letters, digits, '.', '_' and '-' only (it names a directory)")


def _check_file(path: Any, key: str) -> None:
    if not isinstance(path, str) or not Path(path).is_file():
        raise UserError(f"{key}: {path!r} is not a file; give the path of a run config such as configs/quickstart.yaml")


def _grid(grid: Any, where: str) -> dict[str, list[Any]]:
    if not isinstance(grid, dict):
        raise UserError(f"{where} must map option keys to lists of values, got {grid!r}")
    result = {}
    for key, values in grid.items():
        if not isinstance(values, list):
            raise UserError(f"{where}.{key} must be a list of values, got {values!r}")
        result[str(key)] = list(values)
    _check_grid(result)
    return result


def _check_grid(grid: Mapping[str, list[Any]]) -> None:
    for key, values in grid.items():
        if not _KEY_PATTERN.match(key):
            raise UserError(
                f"grid key {key!r} is not an option key: write it as after -- on the command line, "
                "e.g. trainer.callbacks.target_sparsity or model.network"
            )
        if key in ("seed_everything", "trainer.logger", "ckpt_path"):
            raise UserError(f"grid key {key!r} is set by the sweep itself (seeds and run directories); use seeds")
        if not values:
            raise UserError(f"grid key {key!r} has no values: an empty grid runs nothing; give at least one value")
        if len({repr(value) for value in values}) != len(values):
            raise UserError(f"grid key {key!r} lists a value twice: {values}")


def _seeds(seeds: Any, where: str) -> tuple[int, ...]:
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise UserError(f"{where} must be a list of integers, got {seeds!r}")
    if not seeds:
        raise UserError(f"{where} is empty: give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"{where} lists a seed twice: {seeds}")
    return tuple(seeds)


def _strings(values: Any, where: str) -> tuple[str, ...]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise UserError(
            f"{where} must be a list of command-line options such as --trainer.max_epochs=3, got {values!r}"
        )
    return tuple(values)


def _check_options(options: Sequence[str], where: str) -> None:
    if options and not options[0].startswith("--"):
        raise UserError(f"{where}: options must start with --KEY (e.g. --trainer.max_epochs=3), got {options[0]!r}")


def _base(content: Any, where: str) -> BaseStage:
    if not isinstance(content, dict):
        raise UserError(f"{where} must be a mapping with some of the keys {list(_BASE_KEYS)}, got {content!r}")
    _check_keys(content, _BASE_KEYS, where)
    branch_epoch = content.get("branch_epoch")
    if branch_epoch is not None and (isinstance(branch_epoch, bool) or not isinstance(branch_epoch, (int, str))):
        raise UserError(f"{where}.branch_epoch must be an epoch (integer >= 1) or a grid key, got {branch_epoch!r}")
    drop = content.get("drop_callbacks") or []
    if not isinstance(drop, list) or not all(isinstance(item, str) for item in drop):
        raise UserError(f"{where}.drop_callbacks must be a list of callback class paths, got {drop!r}")
    config = content.get("config")
    if config is not None:
        _check_file(config, f"{where}.config")
    return BaseStage(
        config=config,
        drop_callbacks=tuple(drop),
        args=_strings(content.get("args") or [], f"{where}.args"),
        branch_epoch=branch_epoch,
        branch_args=_strings(content.get("branch_args") or [], f"{where}.branch_args"),
    )


def _check_base(base: BaseStage, grid: Mapping[str, list[Any]]) -> None:
    epoch = base.branch_epoch
    if isinstance(epoch, str):
        if epoch not in grid:
            raise UserError(
                f"base.branch_epoch {epoch!r} is neither an epoch nor a grid key; grid keys: {sorted(grid)}"
            )
        epochs = grid[epoch]
    else:
        epochs = [] if epoch is None else [epoch]
    for value in epochs:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(
                f"base.branch_epoch: {value!r} is not an epoch >= 1 (a branch resumes the base run at the start of "
                "that epoch; to start from the initial weights use branch_args with {base}/checkpoints/init.ckpt)"
            )
    if epoch is None and not base.branch_args:
        raise UserError("base: give branch_epoch (branches resume the base run) or branch_args using {base}")
    _check_options(base.args, "base.args")
    _check_options(base.branch_args, "base.branch_args")


def _layout(content: Any) -> Layout:
    if not isinstance(content, dict) or "rows" not in content or "columns" not in content:
        raise UserError(f"layout must be a mapping with rows and columns (grid keys), got {content!r}")
    _check_keys(content, _LAYOUT_KEYS, "layout")
    metric = str(content.get("metric", "test_top1"))
    return Layout(rows=str(content["rows"]), columns=str(content["columns"]), metric=metric)
