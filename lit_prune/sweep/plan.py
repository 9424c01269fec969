"""From a sweep definition to its runs: every combination and seed, named, resolved and checked.

Each run gets a directory named by its grid values and seed
(``draw_epoch-10_ratio-0.3_seed-0``). With a base stage, the base runs are planned from the
branches: a branch's base is its own config (or the stage's ``config``) with the stage's
options and without the dropped callbacks, for its seed; branches whose bases come out identical
share one base run, which keeps the start states of every epoch its branches start at.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace

from lit_prune.errors import UserError
from lit_prune.sweep.base_stage import BaseCheckpoints, start_checkpoint
from lit_prune.sweep.definition import CONFIG_KEY, SweepDefinition, config_smoke_args
from lit_prune.sweep.resolve import (
    ConfigResolver,
    add_callback,
    drop_callbacks,
    ensure_profiling,
    set_run_directory,
)

__all__ = ["PlannedRun", "plan_runs", "option_value"]

_UNSAFE = re.compile(r"[^A-Za-z0-9.+-]+")
_BASE_CALLBACK = f"{BaseCheckpoints.__module__}.{BaseCheckpoints.__name__}"


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep, ready to start.

    Attributes:
        name: Its directory name inside the sweep directory.
        kind: ``"base"``, ``"branch"`` or ``"run"``.
        values: Its grid values.
        seed: Its seed.
        config_text: Its complete config (YAML), as the run is started with it.
        base: The name of its base run (branches).
        branch_epoch: The epoch at whose start it resumes its base (branches that resume).
    """

    name: str
    kind: str
    values: dict[str, Any]
    seed: int
    config_text: str
    base: str | None = None
    branch_epoch: int | None = None

    def start_checkpoint(self, sweep_dir: Path) -> Path | None:
        """The base checkpoint this branch starts from, or ``None``."""
        if self.base is None or self.branch_epoch is None:
            return None
        return start_checkpoint(sweep_dir / self.base, self.branch_epoch)


def option_value(value: Any) -> str:
    """A grid value written as a command-line option value (YAML flow style for lists and dicts)."""
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def plan_runs(definition: SweepDefinition, sweep_dir: Path, resolver: ConfigResolver) -> list[PlannedRun]:
    """Expands, names, resolves and checks every run of a sweep; bases come first.

    Args:
        definition: The sweep.
        sweep_dir: Its directory (the runs' logger ``save_dir``).
        resolver: The parser of run configs.

    Returns:
        The runs.

    Raises:
        UserError: If a combination is rejected by the run's parser or a callback, two runs
            would get the same directory, or a base stage does not fit the runs.
    """
    combinations = [dict(zip(definition.grid, values)) for values in itertools.product(*definition.grid.values())]
    labels = _key_labels(list(definition.grid))
    drafts = [
        _Draft(_run_name(values, labels, seed), values, seed, _branch_epoch(definition, values))
        for seed in definition.seeds
        for values in combinations
    ]
    _check_unique([draft.name for draft in drafts])
    bases = _plan_bases(definition, drafts, sweep_dir, resolver) if definition.base is not None else {}
    runs = list({base.name: base for base in bases.values()}.values())
    for draft in drafts:
        base = bases.get(draft.name)
        config = _config(definition, draft.values)
        args = [*_smoke_args(definition, config), *definition.args, *_grid_args(draft.values)]
        args.append(f"--seed_everything={draft.seed}")
        if base is not None:
            assert definition.base is not None
            args += [arg.replace("{base}", str(sweep_dir / base.name)) for arg in definition.base.branch_args]
        _check_no_placeholder(draft.name, args)
        cfg = resolver.resolve(draft.name, config, args)
        resolver.check(draft.name, cfg)
        text = _finish_config(cfg, draft.name, sweep_dir, resolver)
        kind = "run" if base is None else "branch"
        runs.append(
            PlannedRun(draft.name, kind, draft.values, draft.seed, text, base and base.name, draft.branch_epoch)
        )
    _check_unique([run.name for run in runs])
    return runs


@dataclass(frozen=True)
class _Draft:
    name: str
    values: dict[str, Any]
    seed: int
    branch_epoch: int | None


def _plan_bases(
    definition: SweepDefinition, drafts: Sequence[_Draft], sweep_dir: Path, resolver: ConfigResolver
) -> dict[str, PlannedRun]:
    """The base run of every branch (by branch name): one per seed and distinct base config."""
    stage = definition.base
    assert stage is not None
    configs: dict[tuple[int, str], tuple[str, Namespace]] = {}
    groups: dict[tuple[int, str], list[_Draft]] = {}
    for draft in drafts:
        source = stage.config or _config(definition, draft.values)
        if (draft.seed, source) not in configs:
            cfg = _base_config(definition, source, draft.seed, resolver)
            configs[(draft.seed, source)] = (resolver.parser.dump(cfg, skip_unset=False), cfg)
        text, _ = configs[(draft.seed, source)]
        groups.setdefault((draft.seed, text), []).append(draft)
    per_seed = {seed: sum(key[0] == seed for key in groups) for seed in definition.seeds}
    counter = {seed: 0 for seed in definition.seeds}
    by_branch: dict[str, PlannedRun] = {}
    for (seed, text), members in groups.items():
        counter[seed] += 1
        name = f"base_seed-{seed}" if per_seed[seed] == 1 else f"base{counter[seed]}_seed-{seed}"
        cfg = next(cfg for (s, _), (t, cfg) in configs.items() if s == seed and t == text)
        epochs = sorted({draft.branch_epoch for draft in members if draft.branch_epoch is not None})
        _check_epochs(name, epochs, cfg.trainer.max_epochs)
        add_callback(cfg, _BASE_CALLBACK, epochs=epochs or [1], stop=bool(epochs))
        base = PlannedRun(name, "base", {}, seed, _finish_config(cfg, name, sweep_dir, resolver))
        by_branch.update({draft.name: base for draft in members})
    return by_branch


def _base_config(definition: SweepDefinition, config: str, seed: int, resolver: ConfigResolver) -> Namespace:
    stage = definition.base
    assert stage is not None
    name = f"base_seed-{seed}"
    args = [*_smoke_args(definition, config), *definition.args, *stage.args, f"--seed_everything={seed}"]
    _check_no_placeholder(name, args)
    cfg = resolver.resolve(name, config, args)
    if stage.drop_callbacks:
        drop_callbacks(cfg, stage.drop_callbacks, name)
    resolver.check(name, cfg)
    return cfg


def _check_epochs(name: str, epochs: Sequence[int], max_epochs: int | None) -> None:
    late = [epoch for epoch in epochs if max_epochs is not None and max_epochs >= 0 and epoch >= max_epochs]
    if late:
        raise UserError(
            f"base run {name}: branches start at epoch(s) {late}, but trainer.max_epochs is {max_epochs}; "
            "a branch must start before the last epoch"
        )


def _finish_config(cfg: Namespace, name: str, sweep_dir: Path, resolver: ConfigResolver) -> str:
    """Points the run at its directory, makes sure it reports, and dumps its complete config."""
    set_run_directory(cfg, name, str(sweep_dir), name)
    ensure_profiling(cfg)
    return resolver.dump(name, cfg)


def _config(definition: SweepDefinition, values: Mapping[str, Any]) -> str:
    return str(values.get(CONFIG_KEY, definition.config))


def _smoke_args(definition: SweepDefinition, config: str) -> list[str]:
    return config_smoke_args(config) if definition.smoke_configs else []


def _grid_args(values: Mapping[str, Any]) -> list[str]:
    return [f"--{key}={option_value(value)}" for key, value in values.items() if key != CONFIG_KEY]


def _check_no_placeholder(name: str, args: Sequence[str]) -> None:
    if any("{base}" in arg for arg in args):
        raise UserError(f"run {name}: {{base}} stands for the base run's directory only in base.branch_args")


def _branch_epoch(definition: SweepDefinition, values: Mapping[str, Any]) -> int | None:
    if definition.base is None:
        return None
    epoch = definition.base.branch_epoch
    return int(values[epoch]) if isinstance(epoch, str) else epoch


def _key_labels(keys: Sequence[str]) -> dict[str, str]:
    """The last component of each key, or the whole key where last components collide."""
    last = [key.rsplit(".", 1)[-1] for key in keys]
    return {key: short if last.count(short) == 1 else key for key, short in zip(keys, last)}


def _run_name(values: Mapping[str, Any], labels: Mapping[str, str], seed: int) -> str:
    parts = []
    for key, value in values.items():
        text = Path(str(value)).stem if key == CONFIG_KEY else option_value(value)
        parts.append(f"{labels[key]}-{_UNSAFE.sub('-', text).strip('-') or 'value'}")
    return "_".join([*parts, f"seed-{seed}"])


def _check_unique(names: Sequence[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise UserError(
                f"two runs of the sweep would share the directory {name!r}: their grid values read the same once "
                "written as a directory name; make the values distinct"
            )
        seen.add(name)
