"""Score registry: every importance score by name, with what it ranks and what it needs.

A score is a function registered with :func:`register_score`. Its ``kind`` says what it ranks:

- ``"weights"``: single weights. ``function(params, ...)`` returns a dict of parameter name to a
  tensor of the parameter's shape;
- ``"groups"``: structured units (channels, heads, MLP units).
  ``function(model, groups, ...)`` returns a dict of group name to a 1-D tensor with one
  score per unit of the :class:`~lit_prune.pruning.channel_groups.StructuredGroup`.

Higher always means more important: selection removes the lowest. A score is called by keyword
with the inputs its signature names, drawn from :data:`INPUTS` (``model``, ``params``,
``groups``, ``current_mask``, ``batches``, ``input_shape``, ``seed``); any other parameter must
have a default and is an *option* of the score (GraSP's ``temperature``, the ``bn_mode`` of
the data-taking scores). What a score needs from the caller is declared as data, ``needs``,
drawn from :data:`NEEDS`, so callbacks supply it without knowing the score's name: a score that
declares ``batches`` gets calibration batches, ``input_shape`` the shape of one input sample,
``seed`` a seed, ``gradients`` an autograd-enabled context, ``batch_norm`` a network with batch
norms. The declaration is checked against the signature when the score is registered.

A YAML option that picks a score takes a registered name or the dotted import path of a
user's own registered function, ``package.module.function`` (:func:`get_score` imports it).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from torch import Tensor

from lit_prune.errors import UserError
from lit_prune.pruning.selection import SCOPES

__all__ = [
    "INPUTS",
    "NEEDS",
    "SCORE_KINDS",
    "Score",
    "ScoreFunction",
    "get_score",
    "list_scores",
    "register_score",
]

ScoreFunction = Callable[..., dict[str, Tensor]]
_FunctionT = TypeVar("_FunctionT", bound=ScoreFunction)

SCORE_KINDS: tuple[str, ...] = ("weights", "groups")
"""``weights``: one score per weight; ``groups``: one score per structured unit."""

NEEDS: tuple[str, ...] = ("batches", "batch_norm", "gradients", "input_shape", "seed")
"""What a score may need: calibration batches, batch-norm layers, autograd, one sample's shape, a seed."""

INPUTS: tuple[str, ...] = ("model", "params", "groups", "current_mask", "batches", "input_shape", "seed")
"""The parameter names through which a score receives its inputs."""

_SIGNATURE_NEEDS = ("batches", "input_shape", "seed")
_REQUIRED_INPUTS = {"weights": ("params",), "groups": ("model", "groups")}
_NEED_WORDS = {
    "batches": "calibration batches (inputs, targets)",
    "batch_norm": "batch-norm layers in the network",
    "gradients": "autograd (it differentiates the loss)",
    "input_shape": "the shape of one input sample",
    "seed": "a seed",
}

_KIND_WORDS = {"weights": "single weights", "groups": "structured groups (channels, heads, MLP units)"}

_REGISTRY: dict[str, Score] = {}


@dataclass(frozen=True)
class Score:
    """A registered score: the function and the facts callbacks act on.

    Attributes:
        name: Registry name, e.g. ``"snip"``.
        kind: One of :data:`SCORE_KINDS`.
        function: The score function.
        needs: What the caller must supply, a subset of :data:`NEEDS`.
        label: How reports name the score (``"GraSP"``); the name by default.
        scopes: The selection scopes the score is meant for, from :data:`SCOPES`.
        iterative: Scores again after each of many small pruning steps (SynFlow's rounds).
        calibration_splits: Into how many class-grouped batches a class-balanced calibration
            sample is cut (GraSP's reference scores two halves).
        settings: Fixed facts recorded with every mask the score makes (e.g. its dtype).
    """

    name: str
    kind: str
    function: ScoreFunction
    needs: frozenset[str]
    label: str
    scopes: tuple[str, ...] = SCOPES
    iterative: bool = False
    calibration_splits: int = 1
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def options(self) -> dict[str, Any]:
        """The score's own keyword options (parameters outside :data:`INPUTS`) and their defaults."""
        return {
            name: parameter.default
            for name, parameter in inspect.signature(self.function).parameters.items()
            if name not in INPUTS and parameter.default is not inspect.Parameter.empty
        }

    def __call__(self, **inputs: Any) -> dict[str, Tensor]:
        """Calls the function with the inputs and options its signature names (None ones left out).

        Args:
            **inputs: Any of :data:`INPUTS` and the score's options; those the function does not
                name are left out, unless it takes ``**kwargs``.

        Returns:
            What the function returns.

        Raises:
            UserError: If a declared need (batches, input shape, seed) is missing.
        """
        missing = [need for need in _SIGNATURE_NEEDS if need in self.needs and inputs.get(need) is None]
        if missing:
            raise UserError(
                f"score {self.name!r} needs {' and '.join(_NEED_WORDS[need] for need in missing)}; "
                f"pass {', '.join(f'{need}=' for need in missing)}"
            )
        parameters = inspect.signature(self.function).parameters
        takes_all = any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values())
        given = {key: value for key, value in inputs.items() if value is not None}
        return self.function(**{key: value for key, value in given.items() if takes_all or key in parameters})


def register_score(
    name: str,
    kind: str,
    *,
    needs: Iterable[str] = (),
    label: str | None = None,
    scopes: Iterable[str] = SCOPES,
    iterative: bool = False,
    calibration_splits: int = 1,
    settings: Mapping[str, Any] | None = None,
) -> Callable[[_FunctionT], _FunctionT]:
    """Registers a score function under ``name`` (decorator); the function is returned unchanged.

    Args:
        name: Registry name, e.g. ``"lamp"``; may not contain a dot (dots mark import paths).
        kind: ``"weights"`` or ``"groups"`` (see the module docstring).
        needs: What the caller must supply, from :data:`NEEDS`; ``batches``, ``input_shape`` and
            ``seed`` must be parameters of the function, and a parameter of one of those names
            must be declared.
        label: How reports name the score; the name when None.
        scopes: The selection scopes the score is meant for (LAMP: ``("global",)``).
        iterative: Whether selection re-scores after each of many small steps (SynFlow).
        calibration_splits: Batches a class-balanced calibration sample is cut into, >= 1.
        settings: Fixed facts recorded with every mask the score makes.

    Returns:
        A decorator that records the function and returns it unchanged.

    Raises:
        TypeError: If the function is not callable, or its signature does not fit ``kind`` and
            ``needs`` (a required parameter outside :data:`INPUTS`, a need it does not take).
        ValueError: If ``name`` is empty, has a dot or is taken, or ``kind``, ``needs``,
            ``scopes`` or ``calibration_splits`` is not allowed.
    """
    if not isinstance(name, str) or not name or "." in name:
        raise ValueError(f"score name must be a non-empty string without dots, got {name!r}")
    if name in _REGISTRY:
        raise ValueError(f"score {name!r} is already registered; registered scores: {list_scores()}")
    if kind not in SCORE_KINDS:
        raise ValueError(f"score kind must be one of {list(SCORE_KINDS)}, got {kind!r}")
    declared = frozenset(needs)
    unknown = sorted(declared - set(NEEDS))
    if unknown:
        raise ValueError(f"unknown needs {unknown} for score {name!r}; allowed: {list(NEEDS)}")
    scopes = tuple(scopes)
    if not scopes or any(scope not in SCOPES for scope in scopes):
        raise ValueError(f"scopes of score {name!r} must be drawn from {list(SCOPES)}, got {list(scopes)}")
    if isinstance(calibration_splits, bool) or not isinstance(calibration_splits, int) or calibration_splits < 1:
        raise ValueError(f"calibration_splits must be an int >= 1, got {calibration_splits!r}")

    def decorator(function: _FunctionT) -> _FunctionT:
        if not callable(function):
            raise TypeError(f"register_score({name!r}) needs a function, got {type(function).__name__}")
        _check_signature(name, kind, declared, function)
        _REGISTRY[name] = Score(
            name=name,
            kind=kind,
            function=function,
            needs=declared,
            label=label or name,
            scopes=scopes,
            iterative=iterative,
            calibration_splits=calibration_splits,
            settings=MappingProxyType(dict(settings or {})),
        )
        return function

    return decorator


def list_scores(kind: str | None = None) -> list[str]:
    """Returns the registered score names, sorted, optionally only those of one ``kind``.

    Raises:
        ValueError: If ``kind`` is not None or one of :data:`SCORE_KINDS`.
    """
    if kind is not None and kind not in SCORE_KINDS:
        raise ValueError(f"score kind must be one of {list(SCORE_KINDS)} or None, got {kind!r}")
    return sorted(name for name, score in _REGISTRY.items() if kind is None or score.kind == kind)


def get_score(name: str, kind: str | None = None) -> Score:
    """Returns the score named ``name``: a registered name or a ``package.module.function`` path.

    An import path is imported (which runs the module's ``@register_score``) and must lead to a
    registered function.

    Args:
        name: A name from :func:`list_scores`, or an import path of a registered function.
        kind: When given, the kind the caller needs; another kind is an error.

    Returns:
        The registered score.

    Raises:
        UserError: If the name is unknown, the path cannot be imported or does not lead to a
            registered score function, or the score is of another kind.
    """
    if not isinstance(name, str) or not name:
        raise UserError(f"a score is a registered name or an import path package.module.function, got {name!r}")
    score = _REGISTRY.get(name) or (_import_score(name) if "." in name else None)
    if score is None:
        raise UserError(
            f"unknown score {name!r}; registered scores: {_describe_kinds(kind)}, or an import path "
            "package.module.function to your own function registered with lit_prune.pruning.register_score "
            "(docs/extending.md)"
        )
    if kind is not None and score.kind != kind:
        raise UserError(
            f"score {name!r} ranks {_KIND_WORDS[score.kind]}, but this option needs a score of {_KIND_WORDS[kind]}: "
            f"{', '.join(list_scores(kind))}"
        )
    return score


def _describe_kinds(kind: str | None) -> str:
    kinds = SCORE_KINDS if kind is None else (kind,)
    return "; ".join(f"{', '.join(list_scores(k))} ({k})" for k in kinds)


def _import_score(path: str) -> Score:
    module_name, _, attribute = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise UserError(
            f"score {path!r}: cannot import module {module_name!r} ({type(error).__name__}: {error}); "
            "the module must be importable (on PYTHONPATH) from where lit-prune runs"
        ) from error
    if not hasattr(module, attribute):
        raise UserError(f"score {path!r}: module {module_name!r} has no attribute {attribute!r}")
    target = getattr(module, attribute)
    for score in _REGISTRY.values():
        if score.function is target:
            return score
    raise UserError(
        f"score {path!r} is not a valid score: {type(target).__name__} {attribute!r} is not registered; decorate "
        "the function with @register_score(name, kind='weights' or 'groups') from lit_prune.pruning "
        "(docs/extending.md)"
    )


def _check_signature(name: str, kind: str, needs: frozenset[str], function: ScoreFunction) -> None:
    parameters = inspect.signature(function).parameters
    for required in _REQUIRED_INPUTS[kind]:
        if required not in parameters:
            takes = " and ".join(_REQUIRED_INPUTS[kind])
            raise TypeError(f"a {kind} score takes {takes}; {name!r} has no {required!r}")
    for parameter in parameters.values():
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.POSITIONAL_ONLY):
            raise TypeError(f"score {name!r}: parameters are passed by keyword, so {parameter} is not allowed")
        if parameter.default is inspect.Parameter.empty and parameter.name not in INPUTS:
            raise TypeError(
                f"score {name!r}: parameter {parameter.name!r} is not one of the inputs {list(INPUTS)}, "
                "so it needs a default (it is an option of the score)"
            )
    for need in _SIGNATURE_NEEDS:
        if (need in needs) != (need in parameters):
            raise TypeError(
                f"score {name!r}: a score that needs {need!r} takes a parameter of that name, and one that takes "
                f"it declares needs=[{need!r}, ...]"
            )
