"""Pruning stages of ``SaliencyPruning``: when each fires and how much of the target it reaches.

A schedule in stages that fire at initialisation, at the start of an epoch, or once validation
top-1 reaches a value, as in E6 (GraSP from scratch, Wang et al. 2020, "Picking Winning Tickets
Before Training by Preserving Gradient Flow", pruned in stages at 20/40/60 % accuracy). This
module only parses and checks the YAML list; the callback decides when a stage fires.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lit_prune.errors import UserError
from lit_prune.validation import check_choice, check_fraction, check_int

__all__ = ["TRIGGERS", "Stage", "parse_stages"]

TRIGGERS = ("init", "epoch", "val_top1")
"""When a stage fires: before training, at the start of an epoch, or once validation top-1 reaches a value."""

_STAGE_KEYS = ("trigger", "value", "fraction_of_target", "latest_epoch")
_RENAMED_KEYS = {"fraction": "fraction_of_target"}
"""Old stage key to the key that replaced it; an old key is refused with the new one."""


@dataclass(frozen=True)
class Stage:
    """One pruning stage: when it fires and how much of the target it reaches.

    Args:
        trigger: ``"init"``, ``"epoch"`` or ``"val_top1"``.
        value: The epoch (``epoch``) or validation top-1 fraction (``val_top1``); None for ``init``.
        fraction_of_target: Fraction of the target sparsity reached by this stage, in (0, 1].
        latest_epoch: ``val_top1`` only: fire at the start of this epoch at the latest, even
            if the accuracy was not reached; None waits for the accuracy.
    """

    trigger: str
    value: float | int | None
    fraction_of_target: float
    latest_epoch: int | None = None

    def describe(self) -> str:
        """``init``, ``epoch 5`` or ``val_top1 >= 0.4``."""
        if self.trigger == "init":
            return "init"
        if self.trigger == "epoch":
            return f"epoch {self.value}"
        return f"val_top1 >= {self.value:g}"


def parse_stages(stages: Sequence[Mapping[str, Any]] | None) -> list[Stage]:
    """Validates the YAML stage list of ``SaliencyPruning`` (None: one stage at initialisation).

    Args:
        stages: Mappings with keys ``trigger``, ``value``, ``fraction_of_target`` and optionally
            ``latest_epoch``.

    Returns:
        The stages, in firing order.

    Raises:
        UserError: If a stage is malformed or the stages are not increasing.
    """
    if stages is None:
        return [Stage("init", None, 1.0)]
    if isinstance(stages, (str, bytes, Mapping)) or not isinstance(stages, Sequence) or not stages:
        raise UserError(
            "stages must be a non-empty list of {trigger, value, fraction_of_target} mappings, e.g. "
            "[{trigger: val_top1, value: 0.2, fraction_of_target: 0.5}, "
            f"{{trigger: val_top1, value: 0.6, fraction_of_target: 1.0}}], got {stages!r}"
        )
    parsed = [_parse_stage(index, spec) for index, spec in enumerate(stages)]
    fractions = [s.fraction_of_target for s in parsed]
    if any(b <= a for a, b in zip(fractions, fractions[1:])) or fractions[-1] != 1.0:
        raise UserError(
            f"the stages' fraction_of_target must increase strictly and the last must be 1.0 (the target), "
            f"got {fractions}"
        )
    if any(s.trigger == "init" for s in parsed[1:]):
        raise UserError("an 'init' trigger fires before training, so only the first stage may have it")
    for trigger, values in (
        ("epoch", [s.value for s in parsed if s.trigger == "epoch"]),
        ("val_top1", [s.value for s in parsed if s.trigger == "val_top1"]),
        ("latest_epoch", [s.latest_epoch for s in parsed if s.latest_epoch is not None]),
    ):
        if any(b <= a for a, b in zip(values, values[1:])):
            raise UserError(f"the {trigger} values of the stages must increase strictly, got {values}")
    return parsed


def _parse_stage(index: int, spec: Any) -> Stage:
    where = f"stages[{index}]"
    if not isinstance(spec, Mapping):
        raise UserError(
            f"{where} must be a mapping such as {{trigger: val_top1, value: 0.4, fraction_of_target: 0.75}}, "
            f"got {spec!r}"
        )
    for old, new in _RENAMED_KEYS.items():
        if old in spec:
            raise UserError(f"{where}: {old} was renamed {new} (docs/extending.md lists the names of the options)")
    unknown = sorted(set(spec) - set(_STAGE_KEYS))
    if unknown:
        raise UserError(f"{where} has unknown keys {unknown}; allowed keys: {list(_STAGE_KEYS)}")
    trigger = check_choice(spec.get("trigger"), f"{where}.trigger", TRIGGERS)
    fraction = check_fraction(
        spec.get("fraction_of_target"),
        f"{where}.fraction_of_target",
        zero=False,
        one=True,
        meaning="of the target sparsity",
    )
    value = spec.get("value")
    latest_epoch = spec.get("latest_epoch")
    if trigger == "init":
        if value is not None:
            raise UserError(f"{where}: an 'init' trigger takes no value, got {value!r}")
    elif trigger == "epoch":
        value = check_int(value, f"{where}.value", 0, meaning="the epoch")
    else:
        value = check_fraction(
            value, f"{where}.value", zero=False, one=True, meaning="a validation top-1 fraction, 0.2 for 20 %"
        )
    if latest_epoch is not None:
        if trigger != "val_top1":
            raise UserError(f"{where}: latest_epoch applies to 'val_top1' triggers only")
        latest_epoch = check_int(latest_epoch, f"{where}.latest_epoch", 0)
    return Stage(trigger, value, fraction, latest_epoch)
