"""How the package is put together: its modules import one another without a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import dynamic_tinybert

PACKAGE = Path(dynamic_tinybert.__file__).parent


def imports() -> dict[str, set[str]]:
    """Module -> the package modules it imports, anywhere in it (in functions and under
    TYPE_CHECKING too: a cycle there is still a circle in the design)."""
    graph = {}
    for path in PACKAGE.glob("*.py"):
        name = path.stem
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    found.add(node.module.split(".")[0])
                else:  # from . import checkpoint
                    found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dynamic_tinybert."):
                found.add(node.module.split(".")[1])
        graph[name] = found - {name}
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph, or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_one():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_the_package_has_no_import_cycle():
    graph = imports()
    assert {"cli", "server", "batching", "model"} <= set(graph)
    assert cycle(graph) is None, " -> ".join(cycle(graph))


def test_no_function_of_the_package_is_longer_than_60_lines():
    long = []
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 60:
                    long.append(f"{path.name}:{node.name} ({lines} lines)")
    assert not long


def test_the_training_modules_stay_under_350_lines():
    for name in ("train", "train_settings", "train_data", "stages", "resume", "processes"):
        assert len((PACKAGE / f"{name}.py").read_text().splitlines()) <= 350, name


def test_every_public_name_is_found_where_the_package_says():
    """The package imports its public names on first use (so that its entry point is light)."""
    assert sorted(dynamic_tinybert.__all__) == sorted(dynamic_tinybert._HOME)
    for name in dynamic_tinybert.__all__:
        value = getattr(dynamic_tinybert, name)
        assert value.__module__ == f"dynamic_tinybert.{dynamic_tinybert._HOME[name]}", name
