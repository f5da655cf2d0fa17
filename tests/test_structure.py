"""The package's shape: cell types are looked up in their registry, never switched on by name, and
no module needs another to be imported first (no import cycle)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sparsernn.models.cells import CELLS

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "sparsernn"
REGISTRY = PACKAGE / "models" / "cells"


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def cell_name_switches(tree: ast.AST) -> list[int]:
    """Lines that compare with, key a dict on, or test a prefix of a cell type's name."""
    names = set(CELLS.names())
    prefixes = {name.split("_")[0] for name in names} | {name.split("_")[0] + "_" for name in names}

    def is_name(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value in names
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(is_name(e) for e in node.elts)
        return False

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(is_name(n) for n in (node.left, *node.comparators)):
            lines.append(node.lineno)
        elif isinstance(node, ast.Dict) and any(k is not None and is_name(k) for k in node.keys):
            lines.append(node.lineno)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("startswith", "endswith") and node.args
              and isinstance(node.args[0], ast.Constant) and node.args[0].value in prefixes):
            lines.append(node.lineno)
        elif isinstance(node, ast.match_case) and is_name(getattr(node.pattern, "value", None)):
            lines.append(node.pattern.lineno)
    return lines


def test_the_scanner_finds_each_kind_of_switch():
    code = ('if cell == "lstm": pass\nMODULES = {"gru": 1}\nif name.startswith("rnn_"): pass\n'
            'if cell in ("lstm", "gru"): pass\nmatch cell:\n    case "lstm": pass\n')
    assert cell_name_switches(ast.parse(code)) == [1, 2, 3, 4, 6]
    assert cell_name_switches(ast.parse('cell: str = Field("lstm")\nspec = CELLS[config.cell]\n')) == []


def test_no_cell_name_switches_outside_the_cell_registry():
    found = {f"{path.relative_to(PACKAGE)}:{line}" for path in PACKAGE.rglob("*.py") if REGISTRY not in path.parents
             for line in cell_name_switches(ast.parse(path.read_text()))}
    assert not found, f"switch on a cell name outside models/cells: {sorted(found)}"


def module_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Package modules that ``name`` imports when it is imported (module level, not inside functions)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in tree.body:
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of imports, if any. A module importing its own ancestor package is not counted: Python
    has initialised that package already (it is how a package's modules import each other)."""
    edges = {node: sorted(t for t in targets if not node.startswith(t + ".")) for node, targets in graph.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in edges.get(node, []):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = 2
        return None

    for node in edges:
        if node not in state and (cycle := visit(node, [node])):
            return cycle
    return None


def test_the_cycle_finder_finds_cycles_and_ignores_package_parents():
    assert find_cycle({"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}}) == ["p.a", "p.b", "p.c", "p.a"]
    assert find_cycle({"p": {"p.a"}, "p.a": {"p"}, "p.b": {"p.a"}}) is None


def test_the_module_import_graph_has_no_cycle():
    found = modules()
    graph = {name: module_imports(name, path, set(found)) for name, path in found.items()}
    assert "sparsernn.config" in graph["sparsernn.train"]  # the graph is read
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


@pytest.mark.slow
def test_each_module_imports_on_its_own_in_a_fresh_interpreter():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def imports(name: str) -> tuple[str, int, str]:
        result = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, env=env,
                                timeout=120)
        return name, result.returncode, result.stderr.strip().splitlines()[-1:]

    with ThreadPoolExecutor(max_workers=2) as pool:
        failures = [(name, err) for name, code, err in pool.map(imports, [m for m in modules() if not m.endswith("__main__")]) if code != 0]
    assert not failures


def test_the_version_has_one_source():
    """``__version__`` is the only place it is written: the installed metadata, ``--version``, a
    checkpoint's record and the README's status line all read it."""
    import re
    from importlib.metadata import version

    import sparsernn

    pyproject = (PACKAGE.parents[1] / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and not re.search(r"^version\s*=", pyproject, re.M)
    assert version("sparsernn") == sparsernn.__version__
    readme = (PACKAGE.parents[1] / "README.md").read_text()
    assert re.search(r"\*\*Status \(v([0-9.]+)\)", readme).group(1) == sparsernn.__version__
    from conftest import cli_in_process

    assert cli_in_process("--version").stdout.strip() == sparsernn.__version__
