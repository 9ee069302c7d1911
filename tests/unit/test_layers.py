"""The package layout keeps the layers of docs/ARCHITECTURE.md: imports only go down.

Reads every module's imports with `ast` (also those inside functions and under
TYPE_CHECKING, which tie modules together just as much) and fails on an import that
goes up a layer, sideways between rooms of one level, or closes a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "fedfs"

# Each layer may import the layers it lists (and itself), nothing else inside fedfs.
# The foundation (errors, config, events, the package's own __init__) may be imported
# by every layer and imports no layer.
FOUNDATION = {"fedfs", "fedfs.errors", "fedfs.config", "fedfs.events"}
ALLOWED: dict[str, set[str]] = {
    "store": set(),
    "meta": {"store"},
    "data": {"meta", "store"},
    "tree": {"data", "meta", "store"},
    "audit": set(),
    "identity": set(),
    "policy": {"audit", "identity", "store"},
    "fuse": {"tree", "data", "meta", "store", "policy", "identity"},
    "control": {"fuse", "policy", "tree", "data", "meta", "store", "audit", "identity"},
    "ops": {"control", "fuse", "policy", "tree", "data", "meta", "store", "audit", "identity"},
    "daemon": {
        "ops", "control", "fuse", "tree", "data", "meta", "store", "policy", "audit",
        "identity",
    },
    "cli": {
        "daemon", "ops", "control", "policy", "tree", "data", "meta", "store", "audit",
        "identity",
    },
}  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def fedfs_imports(path: Path) -> set[str]:
    """Every fedfs module that path imports, wherever the import statement is."""
    found: set[str] = set()
    package = module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "fedfs")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    [*package.split(".")[: len(package.split(".")) - node.level + 1], base]
                ).strip(".")
            if base.split(".")[0] != "fedfs":
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                sub = PACKAGE.parent / Path(*candidate.split("."))
                is_module = sub.with_suffix(".py").exists() or (sub / "__init__.py").exists()
                found.add(candidate if is_module else base)
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): fedfs_imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> str | None:
    if module in FOUNDATION:
        return None
    return module.split(".")[1]


def test_every_module_belongs_to_a_known_layer() -> None:
    unknown = sorted(m for m in graph() if m not in FOUNDATION and layer_of(m) not in ALLOWED)
    assert not unknown, f"modules outside every layer folder: {unknown}"


def test_imports_only_go_down_the_layers() -> None:
    wrong: list[str] = []
    for module, imports in graph().items():
        mine = layer_of(module)
        for target in sorted(imports):
            theirs = layer_of(target)
            if theirs is None or theirs == mine:
                continue
            if mine is None:
                wrong.append(f"{module} (foundation) imports {target}")
            elif theirs not in ALLOWED[mine]:
                wrong.append(f"{module} ({mine}) imports {target} ({theirs})")
    assert not wrong, "imports that go up or across the layers:\n" + "\n".join(wrong)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle among fedfs's modules, as a path that returns to its start."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in edges:
                continue
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_circle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ],
)
def test_the_circle_finder_finds_circles(
    edges: dict[str, set[str]], expected: list[str] | None
) -> None:
    assert find_cycle(edges) == expected
