"""Import direction inside ``edgevid.report`` and ``edgevid.export``: no module imports one that imports it back.

Read from the source (every ``import``, lazy ones inside functions included), so a circle shows
even when a lazy import keeps it from failing at import time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import edgevid

ROOT = Path(edgevid.__file__).parent


def imports_within(package: str) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports (``edgevid.<package>.*``)."""
    prefix = f"edgevid.{package}"
    files = {p.stem: p for p in (ROOT / package).glob("*.py")}
    graph: dict[str, set[str]] = {}
    for stem, path in files.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == prefix:
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(prefix + "."):
                found.add(node.module[len(prefix) + 1:].split(".")[0])
            elif isinstance(node, ast.Import):
                found |= {a.name[len(prefix) + 1:].split(".")[0] for a in node.names if a.name.startswith(prefix + ".")}
        graph[stem] = (found & files.keys()) - {stem}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path (first module repeated at the end), or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        for nxt in sorted(graph[node]):
            if nxt in path:
                return path[path.index(nxt):] + [nxt]
            if nxt not in done:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        done.add(node)
        return None

    for start in sorted(graph):
        found = None if start in done else visit(start, [start])
        if found:
            return found
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("package", ["report", "export"])
def test_no_import_circle(package):
    graph = imports_within(package)
    assert find_cycle(graph) is None, f"edgevid.{package} modules import each other: {find_cycle(graph)}"


def test_bench_uses_layers_and_both_share_the_timed_call():
    graph = imports_within("report")
    assert "bench" not in graph["layers"] and {"call", "layers"} <= graph["bench"] and "call" in graph["layers"]


def test_export_plans_before_it_writes():
    """Planning decides without writing: it never imports the writer or the graph exporters."""
    graph = imports_within("export")
    assert {"plan", "write"} <= graph["api"]
    assert not graph["plan"] & {"write", "api", "onnx", "openvino", "tensorrt", "validate"}
    assert "api" not in graph["write"]
