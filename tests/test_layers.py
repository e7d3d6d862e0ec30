"""The package's structure, checked: layers, no import cycles, no private names across modules.

The layers of docs/ARCHITECTURE.md, lowest first: ``heightmap``, ``errors`` and ``_version``;
``tmd_nb.storage`` (how a height map is stored); ``tmd_nb.formats`` (the formats and their
registry); the adapters (``tmd_nb.notebook``, ``chunks``, ``batch``, ``xarray_io``,
``xarray_backend``); the package itself (``tmd_nb/__init__``, ``__main__``). A module imports only
modules of its own layer or below. Storage and formats are the format layer: numpy and the
standard library only. These tests read every module's imports, the lazy ones inside functions
included, so a change that breaks the rules fails here.
"""

from __future__ import annotations

import ast
import importlib
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
BOTTOM = ("tmd_nb.heightmap", "tmd_nb.errors", "tmd_nb._version")
ADAPTERS = ("tmd_nb.notebook", "tmd_nb.chunks", "tmd_nb.batch", "tmd_nb.xarray_io", "tmd_nb.xarray_backend")
LAYER_NAMES = ("bottom", "storage", "formats", "adapters", "package")


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def layer(name: str) -> int:
    """The rank of module ``name``: a module may import modules of its own rank or lower only."""
    if within(name, BOTTOM):
        return 0
    if within(name, ("tmd_nb.storage",)):
        return 1
    if within(name, ("tmd_nb.formats",)):
        return 2
    if within(name, ADAPTERS):
        return 3
    if name in ("tmd_nb", "tmd_nb.__main__"):
        return 4
    raise AssertionError(f"{name} is in no layer: place it in tests/test_layers.py and docs/ARCHITECTURE.md")


FORMAT_LAYER = sorted(name for name in MODULES if layer(name) <= 2)


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


def test_every_module_has_a_layer() -> None:
    assert {name: LAYER_NAMES[layer(name)] for name in MODULES}["tmd_nb.chunks"] == "adapters"


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{name} ({LAYER_NAMES[layer(name)]}) imports {target} ({LAYER_NAMES[layer(target)]})"
        for name, targets in graph.items()
        for target in targets
        if target in MODULES and layer(target) > layer(name)
    )


def test_no_module_imports_a_module_of_a_higher_layer_lazily_or_not() -> None:
    assert upward_imports({name: internal_edges(name) for name in MODULES}) == []


def test_nothing_in_storage_imports_a_format() -> None:
    offences = [
        f"{name} imports {target}"
        for name in MODULES
        if within(name, ("tmd_nb.storage",))
        for target in internal_edges(name)
        if not within(target, ("tmd_nb.storage", *BOTTOM))
    ]
    assert offences == []


def test_the_direction_check_sees_an_upward_import() -> None:
    # A lazy import of the registry inside a storage module, as the graph would record it.
    graph = {"tmd_nb.storage.units": {"tmd_nb.formats.registry"}, "tmd_nb.notebook.magics": {"tmd_nb.batch"}}
    assert upward_imports(graph) == ["tmd_nb.storage.units (storage) imports tmd_nb.formats.registry (formats)"]


def test_formats_holds_only_the_formats_and_their_registry() -> None:
    modules = {name.rpartition(".")[2] for name in MODULES if name.startswith("tmd_nb.formats.")}
    for name in modules - {"registry", "base"}:
        assert hasattr(importlib.import_module(f"tmd_nb.formats.{name}"), "FORMAT"), name


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
