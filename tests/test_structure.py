"""The codebase's shape, checked: the layers docs/architecture.md draws, no import cycle inside a package, no module
over 400 lines, ruff clean. Each is a rule a reviewer would otherwise have to remember."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MAX_LINES = 400


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed beside {sys.executable}: pip install -e '.[dev]'")
    return str(path)


def test_packages_import_only_the_packages_below_them():
    """The contract in pyproject.toml ([tool.importlinter]); a layer's import of one above it breaks it."""
    done = subprocess.run([_tool("lint-imports")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "BROKEN" not in done.stdout


def test_no_import_cycle_inside_a_package():
    """Modules of one package import each other one way (imports for type checking aside): a loop means two modules
    that can only be understood, and changed, together."""
    import grimp

    graph = grimp.build_graph("ablate", exclude_type_checking_imports=True)
    cycles = _cycles(graph)
    assert not cycles, f"import cycles inside a package: {cycles}"


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module, over imports between modules of one package (a
    package's __init__, its public face, is left out: it imports its modules by design)."""

    def package(module: str) -> str:
        return ".".join(module.split(".")[:2])

    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        for other in graph.find_modules_directly_imported_by(module):
            if package(other) != package(module) or other == package(module):
                continue
            if other not in order:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], order[other])
        if low[module] == order[module]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in order:
            visit(module)
    return found


def test_the_cycle_finder_finds_a_cycle():
    class Graph:  # p._x → p._y → p._x; p._y → q and p._z → p._x are no cycle
        modules = {"ablate.p._x", "ablate.p._y", "ablate.p._z", "ablate.q"}
        edges = {"ablate.p._x": {"ablate.p._y"}, "ablate.p._y": {"ablate.p._x", "ablate.q"},
                 "ablate.p._z": {"ablate.p._x"}, "ablate.q": set()}

        def find_modules_directly_imported_by(self, module):
            return self.edges[module]

    assert _cycles(Graph()) == [["ablate.p._x", "ablate.p._y"]]


def test_no_module_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in sorted((ROOT / "ablate").rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by concern): {long}"


def test_ruff_is_clean():
    """The rules and line length in pyproject.toml ([tool.ruff])."""
    done = subprocess.run([_tool("ruff"), "check", "--no-cache", "ablate", "tests", "benchmarks"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
