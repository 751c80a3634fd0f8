"""The import graph of the package: layers, and no circle (docs/architecture.md).

Every import counts: at the top of a module, inside a function (imported on first use)
and under ``TYPE_CHECKING``: each is a dependency all the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "notifymail"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports(name: str) -> set[str]:
    """The notifymail modules that module ``name`` imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            candidates = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found |= {candidate for candidate in candidates if candidate in MODULES}
    return found - {name}


GRAPH = {name: imports(name) for name in MODULES}


def test_the_import_graph_has_no_circle() -> None:
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        for imported in sorted(GRAPH[name]):
            assert imported not in path, " -> ".join((*path[path.index(imported) :], imported))
            if imported not in done:
                visit(imported, (*path, imported))
        done.add(name)

    for name in sorted(GRAPH):
        visit(name, (name,))


def reachable(name: str) -> set[str]:
    seen: set[str] = set()
    stack = [name]
    while stack:
        for imported in GRAPH[stack.pop()] - seen:
            seen.add(imported)
            stack.append(imported)
    return seen


@pytest.mark.parametrize(
    ("module", "below_it"),
    [
        ("notifymail.message", "notifymail._compose"),
        ("notifymail.message", "notifymail.transport"),
        ("notifymail.settings", "notifymail.transport"),
        ("notifymail.policy", "notifymail.transport"),
        ("notifymail._headers", "notifymail.message"),
        ("notifymail.values", "notifymail.message"),
        ("notifymail.transport.console", "notifymail.transport.memory"),
    ],
)
def test_a_lower_layer_never_imports_a_higher_one(module: str, below_it: str) -> None:
    assert below_it not in reachable(module)
    assert not {name for name in reachable(module) if name.startswith(f"{below_it}.")}


def test_composition_does_not_load_the_email_package_to_write_a_message() -> None:
    for name in ("notifymail._compose", "notifymail._mime", "notifymail._headers"):
        tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
        modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} | {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        assert not {module for module in modules if module and module.split(".")[0] == "email"}
