"""The pure core never imports Lightning: every module of lit_prune.pruning, .models, .profiling, .export, .robustness.

Two checks per package, subpackages included: no ``import`` statement names Lightning (read from
the source, so a lazy import inside a function is caught too), and importing every module of the
package in a fresh interpreter leaves Lightning out of ``sys.modules``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE_PACKAGES = (
    "lit_prune.pruning",
    "lit_prune.models",
    "lit_prune.profiling",
    "lit_prune.export",
    "lit_prune.robustness",
)
LIGHTNING = {"lightning", "pytorch_lightning"}


def _imported_modules(path: Path) -> list[str]:
    modules: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules.append(node.module or "")
    return modules


def _module_names(package: str) -> list[str]:
    directory = ROOT.joinpath(*package.split("."))
    names = []
    for path in sorted(directory.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@pytest.mark.parametrize("package", CORE_PACKAGES)
def test_no_module_of_the_core_names_lightning(package: str) -> None:
    files = sorted(ROOT.joinpath(*package.split(".")).rglob("*.py"))
    assert len(files) > 1
    for path in files:
        offending = [m for m in _imported_modules(path) if m.split(".")[0] in LIGHTNING]
        assert not offending, f"{path.relative_to(ROOT)} imports {offending}"


@pytest.mark.parametrize("package", CORE_PACKAGES)
def test_importing_every_module_of_the_core_leaves_lightning_out(package: str) -> None:
    modules = _module_names(package)
    assert any(name.count(".") >= 2 for name in modules)
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(LIGHTNING)!r}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]"


def test_the_scan_covers_subpackages() -> None:
    modules = _module_names("lit_prune.pruning")
    assert "lit_prune.pruning.regression_pruning.lasso" in modules
    assert "lit_prune.pruning.regression_pruning" in modules
