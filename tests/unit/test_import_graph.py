"""No import circles among cci's own modules (``cci_core`` and the built-in ``plugins``).

The graph is built from the source with :mod:`ast`: an edge for every import made
when a module is imported (at module level, in a class body, in ``try`` or ``if``
blocks) and for every ``if TYPE_CHECKING:`` import, which type checkers follow the
same way. Imports inside functions (lazy ones) are left out: they run later, and
often exist precisely to avoid a circle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: folder -> import package (the folder plugins/ is installed as cci_builtin_plugins: pyproject.toml)
PACKAGES = {"cci_core": "cci_core", "plugins": "cci_builtin_plugins"}

Graph = dict[str, set[str]]


def module_files() -> dict[str, Path]:
    """Every module of the packages, by dotted name (a package by its ``__init__``)."""
    modules = {}
    for folder, package in PACKAGES.items():
        for file in sorted((ROOT / folder).rglob("*.py")):
            parts = [package, *file.relative_to(ROOT / folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = file
    return modules


def _imports(tree: ast.Module, lazy: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements run when the module is imported (and with ``lazy``, those in functions too)."""
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and not lazy:
            continue
        else:
            pending.extend(ast.iter_child_nodes(node))


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom, known: set[str]) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
        return
    base = node.module or ""
    if node.level:
        anchor = module.split(".")
        anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
        base = ".".join([*anchor, *([base] if base else [])])
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        yield submodule if submodule in known else base


def import_graph(lazy: bool = False) -> Graph:
    """Module -> the modules of cci it imports."""
    files = module_files()
    known = set(files)
    graph: Graph = {name: set() for name in files}
    for name, file in files.items():
        tree = ast.parse(file.read_text(encoding="utf-8"), str(file))
        for node in _imports(tree, lazy):
            for target in _targets(name, file.name == "__init__.py", node, known):
                if target in known and target != name:
                    graph[name].add(target)
    return graph


def _shortest_cycle(graph: Graph, start: str) -> list[str] | None:
    """The shortest path from ``start`` back to itself, as a list of modules ending with ``start``."""
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node]):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if target not in came_from:
                    came_from[target] = node
                    following.append(target)
        frontier = following
    return None


def cycles(graph: Graph) -> list[list[str]]:
    """One shortest cycle through each module that is on a cycle, without repeating a cycle."""
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()
    for module in sorted(graph):
        cycle = _shortest_cycle(graph, module)
        if cycle and frozenset(cycle) not in seen:
            seen.add(frozenset(cycle))
            found.append(cycle)
    return found


def test_the_graph_sees_imports_of_every_kind() -> None:
    graph = import_graph()
    assert "cci_core.errors" in graph["cci_core.cli.group"]  # from cci_core.errors import ...
    assert "cci_core.config" in graph["cci_core.doctor"] or "cci_core.config" in graph["cci_core.hookspecs"]  # TYPE_CHECKING
    assert "cci_core.cli.state" in graph["cci_core.cli.main"]
    assert "cci_core.api" in graph["cci_builtin_plugins.incus.doctor"]
    assert "cci_builtin_plugins.incus.doctor" in graph["cci_builtin_plugins.setup.facts"]
    assert graph["cci_core.cli.entry"] <= import_graph(lazy=True)["cci_core.cli.entry"]


def test_a_cycle_is_found_and_named() -> None:
    graph: Graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]


def test_no_import_circles() -> None:
    found = cycles(import_graph())
    assert not found, "import circles: " + "; ".join(" -> ".join(cycle) for cycle in found)
