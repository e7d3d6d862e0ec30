"""The package's structure, checked: layers, no import cycles, no private names across modules.

``tmd_nb.formats`` (with ``heightmap`` and ``errors`` below it) is the format layer: numpy and
the standard library only. ``tmd_nb.notebook`` builds on it. These tests read every module's
imports, the lazy ones inside functions included, so a change that breaks the rules fails here.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGE = ROOT / "tmd_nb"
NOTEBOOK_ONLY = ("IPython", "ipywidgets", "matplotlib")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
FORMAT_LAYER = sorted(
    name
    for name in MODULES
    if name.startswith("tmd_nb.formats") or name in ("tmd_nb.heightmap", "tmd_nb.errors", "tmd_nb._version")
)


def imports(name: str) -> list[tuple[str, list[str], int]]:
    """``(imported module, names taken from it, line)`` for every import statement in module ``name``."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, [alias.name for alias in node.names], node.lineno))
    return found


def internal_edges(name: str) -> set[str]:
    """The tmd_nb modules that module ``name`` imports (a ``from package import module`` names the module)."""
    edges = set()
    for target, names, _ in imports(name):
        if not target.startswith("tmd_nb"):
            continue
        submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
        edges.update(submodules or [target])
    edges.discard(name)
    return edges


def test_every_module_is_seen() -> None:
    assert {"tmd_nb", "tmd_nb.formats.registry", "tmd_nb.notebook.magics", "tmd_nb.notebook.panel.export"} <= set(
        MODULES
    )


def test_there_are_no_import_cycles_lazy_or_not() -> None:
    graph = {name: internal_edges(name) for name in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_no_module_imports_another_modules_private_names() -> None:
    offences = [
        f"{MODULES[name].relative_to(ROOT)}:{line} imports {n} from {target}"
        for name in MODULES
        for target, names, line in imports(name)
        if target.startswith("tmd_nb")
        for n in names
        if n.startswith("_") and not (n.startswith("__") and n.endswith("__")) and f"{target}.{n}" not in MODULES
    ]
    assert offences == []


@pytest.mark.parametrize("name", FORMAT_LAYER)
def test_format_layer_modules_import_no_notebook_library(name: str) -> None:
    used = [(target, line) for target, _, line in imports(name) if target.split(".")[0] in NOTEBOOK_ONLY] + [
        (target, line) for target, _, line in imports(name) if target.startswith("tmd_nb.notebook")
    ]
    assert used == [], f"{name} is in the format layer but imports {used}"


def test_using_the_format_layer_loads_no_notebook_library(tmp_path: Path) -> None:
    code = f"""
import importlib, sys, warnings
import numpy as np
import tmd_nb
for name in {FORMAT_LAYER!r}:
    importlib.import_module(name)
warnings.simplefilter("ignore", tmd_nb.MetadataNotStoredWarning)
d = {{"height_map": np.zeros((3, 4), np.float32), "units": "mm"}}
# Read-only formats are left out: instruments' files are read by SurfaceTopography, which itself
# imports matplotlib (a library of the reader's, not of tmd_nb's format layer).
for fmt in tmd_nb.formats.registry.writable():
    path = tmd_nb.save(d, {str(tmp_path)!r} + "/scan" + fmt.extensions[0])
    tmd_nb.load(path)
print(sorted(m for m in sys.modules if m.split(".")[0] in {NOTEBOOK_ONLY!r}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
