"""Naming the layer and the operator that made an export fail.

``torch.export`` runs the network's Python ``forward`` on symbolic tensors, so while it traces,
forward hooks fire as usual: :class:`LayerTracker` keeps the stack of modules whose forward has
begun and not ended, and after a failure its top is the layer that raised. The ONNX translation
runs later, on the traced graph, and its error names a graph node or an ``OpOverload``;
:func:`operator_of` finds the operator in the message and :func:`layer_of_operator` the layer that
called it, from the ``nn_module_stack`` the traced graph records for every node. ``torch.export`` also prints the
partial graph of a failed trace to standard error; :func:`partial_graph_withheld` keeps that dump
from burying the message (what else was written there is passed on once the block ends).
"""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr
from typing import Any

from torch import nn
from torch.export import ExportedProgram

__all__ = ["LayerTracker", "describe_failure", "layer_of_operator", "operator_of", "partial_graph_withheld"]

_OPERATOR_PATTERNS = (
    re.compile(r"OpOverload\(op='([\w.]+)'"),
    re.compile(r"target=torch\.ops\.([\w.]+?)(?:\.default)?\]"),
    re.compile(r"\b(aten::\w+|onnx::\w+)"),
    re.compile(r"torch\.ops\.([\w]+\.[\w]+)"),
)
_SOURCE_LINE = re.compile(r'File "([^"]+)", line (\d+), in (\w+)\n\s*(.+)')
_NOISE = ("next steps", "this is step", "- ", "##", "(refer to", "⬆")
_MAX_LINE = 300


class LayerTracker:
    """Records which layers' forward passes are running, through forward hooks on every module.

    Args:
        model: The network being exported.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.stack: list[tuple[str, str]] = []

    @contextmanager
    def tracking(self) -> Iterator[LayerTracker]:
        """Installs the hooks for the duration of the block; on leaving, the stack keeps the failing layer."""
        self.stack = []
        handles = []
        for name, module in self.model.named_modules():
            if not name:
                continue
            handles.append(module.register_forward_pre_hook(self._enter(name, type(module).__name__)))
            handles.append(module.register_forward_hook(self._leave))
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def innermost(self) -> tuple[str, str] | None:
        """The innermost layer whose forward began and did not end: ``(name, class name)``, or ``None``."""
        return self.stack[-1] if self.stack else None

    def _enter(self, name: str, kind: str) -> Any:
        def hook(module: nn.Module, args: Any) -> None:
            self.stack.append((name, kind))

        return hook

    def _leave(self, module: nn.Module, args: Any, output: Any) -> None:
        if self.stack:
            self.stack.pop()


@contextmanager
def partial_graph_withheld() -> Iterator[None]:
    """Holds back what the block writes to ``sys.stderr``; passes it on if the block succeeds.

    On a failure the text is dropped: it is the partial graph ``torch.export`` prints, and the
    raised error (described by :func:`describe_failure`) says what failed.
    """
    captured = io.StringIO()
    with redirect_stderr(captured):
        yield
    sys.stderr.write(captured.getvalue())


def operator_of(error: BaseException) -> str | None:
    """The operator an exporter's error names (``litprune.mystery``, ``aten::foo``), if it names one."""
    for current in _chain(error):
        text = str(current)
        for pattern in _OPERATOR_PATTERNS:
            match = pattern.search(text)
            if match:
                return match.group(1)
    return None


def layer_of_operator(program: ExportedProgram, operator: str) -> tuple[str, str] | None:
    """The layer of the traced graph that calls ``operator``: ``(name, class name)``, or ``None``."""
    wanted = operator.replace("::", ".")
    for node in program.graph.nodes:
        if node.op != "call_function" or wanted not in str(node.target):
            continue
        stack = node.meta.get("nn_module_stack") or {}
        if stack:
            path, kind = list(stack.values())[-1]
            return str(path).removeprefix("L['self'].") or "(the network itself)", _class_name(kind)
        return "(the network itself)", ""
    return None


def describe_failure(what: str, error: BaseException, layer: tuple[str, str] | None, operator: str | None) -> list[str]:
    """The lines that tell a user why an export failed: layer, operator, the exporter's reason, the source line.

    Args:
        what: What failed, e.g. ``"ONNX export"``.
        error: The exporter's exception.
        layer: The failing layer (name, class), if known.
        operator: The failing operator, if known.

    Returns:
        A few lines, the first naming the layer and operator.
    """
    where = []
    if layer is not None:
        where.append(f"layer {layer[0]!r}" + (f" ({layer[1]})" if layer[1] else ""))
    if operator is not None:
        where.append(f"operator {operator}")
    lines = [f"{what} failed" + (f" at {', '.join(where)}" if where else "") + f": {_reason(error)}"]
    source = _source_line(error)
    if source:
        lines.append(source)
    return lines


def _reason(error: BaseException) -> str:
    """The most specific informative line of the exception chain."""
    for current in reversed(_chain(error)):
        for line in str(current).splitlines():
            text = re.sub(r"\x1b\[[0-9;]*m", "", line).strip()
            if text and not text.lower().startswith(_NOISE):
                name = type(current).__name__
                return f"{name}: {text}"[:_MAX_LINE]
    return type(error).__name__


def _source_line(error: BaseException) -> str | None:
    for current in _chain(error):
        match = _SOURCE_LINE.search(str(current))
        if match:
            file, line, function, code = match.groups()
            return f"in {function} ({file}:{line}): {code.strip()}"
    return None


def _chain(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _class_name(kind: Any) -> str:
    return kind.__name__ if isinstance(kind, type) else str(kind).rsplit(".", 1)[-1].strip("'>")
