"""The package's layers, as ARCHITECTURE.md draws them, checked on the source.

Each module may import only from its own layer or the layers below it, and no
two modules import each other (directly or around a loop), counting imports
inside functions and under ``TYPE_CHECKING`` too: a lazy import is still a
dependency a reader has to follow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "src" / "rangestream"

# Lowest first. A module's layer is the first entry whose prefix matches its dotted name.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("errors", "redact", "retry", "plan", "headers")),
    ("transports", ("transports",)),
    ("engine", ("engine",)),
    ("client", ("client", "refresh", "output", "proxypool")),
    ("muxer", ("muxer",)),
    ("testing", ("testing",)),
    ("api", ("__init__",)),
    ("service", ("service",)),
    ("cli", ("cli", "__main__")),
]


def layer_of(module: str) -> int:
    top = module.split(".")[0]
    for rank, (_, prefixes) in enumerate(LAYERS):
        if top in prefixes:
            return rank
    raise AssertionError(f"module {module!r} is in no layer: add it to LAYERS and ARCHITECTURE.md")


def modules() -> dict[str, Path]:
    found = {}
    for path in PKG.rglob("*.py"):
        parts = list(path.relative_to(PKG).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path) -> set[str]:
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg and name != "__init__" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                if not node.module:  # "from . import x": each name is a module or a name of the package
                    out.update(f"{target}.{a.name}".strip(".") for a in node.names)
                    continue
            elif node.module and node.module.startswith("rangestream."):
                target = node.module.removeprefix("rangestream.")
            else:
                continue
            out.add(target or "__init__")
        elif isinstance(node, ast.Import):
            out.update(a.name.removeprefix("rangestream.") for a in node.names if a.name.startswith("rangestream."))
    known = modules()
    resolved = set()
    for t in out:
        while t and t not in known:  # "pkg.name" where name is not a module: the package itself
            t = t.rpartition(".")[0]
        if t and t != name:
            resolved.add(t)
    return resolved


GRAPH = {name: imports_of(name, path) for name, path in modules().items()}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down(module: str) -> None:
    rank = layer_of(module)
    upward = sorted(t for t in GRAPH[module] if layer_of(t) > rank)
    assert not upward, f"{module} ({LAYERS[rank][0]}) imports from higher layers: {upward}"


def test_no_import_cycles() -> None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name)
