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


# The layers, lowest first: a module may import its own layer and those below, never one above (a lazy
# import inside a function counts too; ``if TYPE_CHECKING:`` imports, which never run, do not).
LAYERS: list[set[str]] = [
    {"errors", "files", "registry", "timing", "progress", "validation"},  # no package imports of note
    {"config", "settings", "checkpoint"},                                 # what a run is, how it is stored
    {"data", "models"},                                                   # corpora; cells and stacks
    {"dynamics", "optim", "runtime"},                                     # spectra, optimizers, devices
    {"sparsity", "tasks"},                                                # methods on models; what is learned
    {"runs", "resume"},                                                   # the run directory and its state
    {"train", "plots"},                                                   # the loop; figures
    {"launch", "search", "deploy"},                                       # what runs trainings or ships them
    {"integrations"},                                                     # other libraries' interfaces
    {"cli", "__main__", "__init__"},                                      # the front doors
]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def runtime_imports(tree: ast.AST) -> list[tuple[str, int]]:
    """``(module, line)`` of every ``sparsernn`` import that can run (skipping ``if TYPE_CHECKING:``)."""
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"
               for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("sparsernn"):
            names = [f"{node.module}.{a.name}" for a in node.names] if node.module == "sparsernn" else [node.module]
            found += [(name, node.lineno) for name in names]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("sparsernn")]
    return found


def test_every_top_level_module_has_a_layer():
    tops = {layer_of(name) for name in modules()}
    assert tops - set(RANK) == set(), "add the new module to LAYERS"


def test_the_layer_check_sees_an_import_up_and_ignores_type_checking():
    code = "from sparsernn.train import Trainer\nif TYPE_CHECKING:\n    from sparsernn.search import Search\n"
    assert runtime_imports(ast.parse(code)) == [("sparsernn.train", 1)]


def test_no_import_runs_up_the_layers():
    upward = []
    for name, path in modules().items():
        mine = layer_of(name) if name != "sparsernn" else "__init__"
        for target, line in runtime_imports(ast.parse(path.read_text())):
            theirs = layer_of(target)
            if theirs in RANK and RANK[theirs] > RANK.get(mine, len(LAYERS)):
                upward.append(f"{path.relative_to(PACKAGE)}:{line} imports {target}")
    assert not upward, "imports up the layers: " + "; ".join(upward)


def test_no_source_file_over_450_lines_and_no_function_over_60():
    long_files = [f"{path.relative_to(PACKAGE)} ({n})" for path in PACKAGE.rglob("*.py")
                  if (n := len(path.read_text().splitlines())) > 450]
    long_functions = [f"{path.relative_to(PACKAGE)}:{node.name} ({n})" for path in PACKAGE.rglob("*.py")
                      for node in ast.walk(ast.parse(path.read_text()))
                      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                      and (n := node.end_lineno - node.lineno + 1) > 60]
    assert not long_files and not long_functions, f"too long: {long_files + long_functions}"
