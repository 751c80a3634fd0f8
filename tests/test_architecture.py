"""The layers of docs/architecture.md, held against the code's imports.

Every module under src/notifymail is read with ``ast``, not imported: an import inside
``if TYPE_CHECKING:`` or inside a function, or by name (``import_module("notifymail.x")``),
is a dependency as much as one at the top.
Importing a package (``from notifymail import __version__``) depends on everything its
``__init__`` imports, since that is what it re-exports; the ``__init__`` files
themselves are exempt from the rules.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = "notifymail"
ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src"

# Bottom-up; a module may import its own layer and the layers below, never above. Names
# are relative to ``notifymail``. Modules of other branches in flight are listed already,
# so that they land with a place: a listed module that does not exist is no error.
LAYERS: list[tuple[str, frozenset[str]]] = [
    (
        "values and errors",
        frozenset({"_address", "_enums", "_lazy", "_results", "errors", "values"}),
    ),
    (
        "settings",
        frozenset({"secret", "_checks", "plans", "_table", "env", "settings"}),
    ),
    (
        "policy and composition",
        # editing (the admin form's save) asks policy who may manage email.
        frozenset({"policy", "editing", "message", "_compose", "_headers", "_mime", "_readback"}),
    ),
    ("the SMTP protocol", frozenset({"protocol"})),
    (
        "transports",
        # verify drives a transport's probe and reads its failure into form fields; it
        # needs nothing above the transports, and Mailer.verify is built on it.
        frozenset(
            {
                "transport.base",
                "transport._pool",
                "transport._driver",
                "transport.smtp",
                "transport.asyncsmtp",
                "transport.memory",
                "transport.console",
                "verify",
            }
        ),
    ),
    (
        "the mailer",
        # The contracts the mailer types against live here, not with the stores above:
        # _queue holds the Outbox protocol (SqliteOutbox is in outbox), and the
        # Suppressions protocol belongs in this layer too (in _delivery, beside the
        # functions that apply a suppression list), not in suppressions.
        frozenset({"_delivery", "_drain", "_queue", "mailer"}),
    ),
    (
        "outbox, suppressions and workers",
        frozenset(
            {
                "outbox",
                "_sqlite",
                "worker",
                "suppressions",
                "unsubscribe",
                "celery",
            }
        ),
    ),
    ("tools", frozenset({"cli", "__main__", "testing"})),
]

# What message, settings and policy must never reach, even through another module: the
# transport package (and anything under it), the SMTP protocol, and what is built on them.
TRANSPORT_SIDE = frozenset(
    {"protocol", "mailer", "_delivery", "outbox", "worker", "cli", "testing", "verify", "celery"}
)
TRANSPORT_FREE = (
    "message",
    "settings",
    "_enums",
    "secret",
    "_checks",
    "plans",
    "_table",
    "env",
    "editing",
    "policy",
)


def module_names(source: Path) -> dict[str, Path]:
    """Every module and package under ``source/notifymail``, by dotted name."""
    names = {}
    for path in sorted((source / PACKAGE).rglob("*.py")):
        parts = path.relative_to(source).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def packages(modules: dict[str, Path]) -> set[str]:
    return {name for name, path in modules.items() if path.name == "__init__.py"}


def resolve(name: str, modules: dict[str, Path]) -> str:
    """The module or package that ``name`` (a module, or a name defined in one) is."""
    while name not in modules:
        name = name.rpartition(".")[0]
    return name


def imports_of(tree: ast.Module, module: str, modules: dict[str, Path]) -> set[str]:
    """The notifymail modules and packages that ``tree`` imports, anywhere in it."""
    package = module if module in packages(modules) else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0]
                base = f"{anchor}.{base}" if base else anchor
            # ``from a import b`` imports the module a.b when there is one, else a name of a.
            found.update(
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            )
        elif isinstance(node, ast.Call) and (by_name := imported_by_name(node)):
            found.add(by_name)
    ours = {name for name in found if name == PACKAGE or name.startswith(PACKAGE + ".")}
    return {resolve(name, modules) for name in ours} - {module}


def imported_by_name(call: ast.Call) -> str | None:
    """The module of ``import_module("notifymail...")``: an import made at run time."""
    function = call.func
    name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
    argument = call.args[0] if call.args else None
    if name == "import_module" and isinstance(argument, ast.Constant):
        return str(argument.value)
    return None


def direct_imports(source: Path) -> dict[str, set[str]]:
    """Module or package -> the modules and packages it imports."""
    modules = module_names(source)
    return {
        name: imports_of(ast.parse(path.read_text(encoding="utf-8"), str(path)), name, modules)
        for name, path in modules.items()
    }


def import_graph(source: Path = SOURCE) -> dict[str, set[str]]:
    """Module -> the modules it depends on, with each imported package replaced by what
    its ``__init__`` imports; the packages themselves are left out."""
    direct = direct_imports(source)
    package_names = packages(module_names(source))

    def expand(name: str, seen: set[str]) -> set[str]:
        if name not in package_names:
            return {name}
        if name in seen:
            return set()
        seen.add(name)
        return {found for imported in direct[name] for found in expand(imported, seen)}

    return {
        name: {found for imported in imports for found in expand(imported, set())}
        for name, imports in direct.items()
        if name not in package_names
    }


def short(module: str) -> str:
    return module.removeprefix(PACKAGE + ".")


def layer_of(module: str) -> int | None:
    for number, (_, members) in enumerate(LAYERS, start=1):
        if short(module) in members:
            return number
    return None


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle for each import that closes a loop in a depth-first walk."""
    cycles: list[list[str]] = []
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> None:
        path.append(module)
        for imported in sorted(graph.get(module, ())):
            if imported in path:
                cycles.append([*path[path.index(imported) :], imported])
            elif imported not in done:
                visit(imported)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module)
    return cycles


def route(graph: dict[str, set[str]], start: str, goal: set[str]) -> list[str] | None:
    """The shortest chain of imports from ``start`` to a module in ``goal``, if any."""
    routes = {start: [start]}
    queue = [start]
    for module in queue:
        for imported in sorted(graph.get(module, ())):
            if imported not in routes:
                routes[imported] = [*routes[module], imported]
                if imported in goal:
                    return routes[imported]
                queue.append(imported)
    return None


GRAPH = import_graph()


def test_every_import_counts_and_an_imported_package_stands_for_what_it_imports(
    tmp_path: Path,
) -> None:
    package = tmp_path / PACKAGE
    (package / "transport").mkdir(parents=True)
    for name in ("__init__", "a", "b", "c", "d", "transport/__init__", "transport/base"):
        (package / f"{name}.py").write_text("")
    (package / "__init__.py").write_text("from notifymail.b import B\n")
    (package / "transport" / "__init__.py").write_text("from notifymail.d import D\n")
    (package / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from notifymail.b import B\n"
        "def f():\n"
        "    from . import c\n"
        "    import notifymail.transport.base\n"
        "from notifymail.transport import D\n"
    )
    (package / "b.py").write_text("importlib.import_module('notifymail.transport.base')\n")
    (package / "c.py").write_text("from notifymail import __version__\n")

    graph = import_graph(tmp_path)

    assert graph["notifymail.a"] == {
        "notifymail.b",
        "notifymail.c",
        "notifymail.d",
        "notifymail.transport.base",
    }
    assert graph["notifymail.b"] == {"notifymail.transport.base"}
    assert graph["notifymail.c"] == {"notifymail.b"}
    assert "notifymail" not in graph


def test_a_cycle_and_a_chain_of_imports_are_found_with_their_modules() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}

    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert route(graph, "b", {"d"}) == ["b", "c", "d"]
    assert route(graph, "d", {"a"}) is None


def test_every_module_has_exactly_one_layer() -> None:
    listed = [member for _, members in LAYERS for member in members]
    assert len(listed) == len(set(listed)), "a module is listed in two layers"
    unplaced = []
    for module in sorted(GRAPH):
        if layer_of(module) is None:
            lowest = max((layer_of(dep) or 1 for dep in GRAPH[module]), default=1)
            unplaced.append(
                f"{module} is in no layer: add {short(module)!r} to LAYERS in"
                f" tests/test_architecture.py and to the table in docs/architecture.md,"
                f" in layer {lowest} ({LAYERS[lowest - 1][0]}) or above: it imports from"
                f" layer {lowest}"
            )
    assert not unplaced, "\n".join(unplaced)


def test_the_import_graph_has_no_cycle() -> None:
    cycles = [" -> ".join(map(short, cycle)) for cycle in find_cycles(GRAPH)]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_errors_imports_only_private_leaf_helpers() -> None:
    errors = f"{PACKAGE}.errors"
    for module in GRAPH[errors]:
        assert short(module).startswith("_"), f"errors imports {module}, which is public"
        assert not GRAPH[module], (
            f"errors imports {module}, which is no leaf: it imports {sorted(GRAPH[module])}"
        )


@pytest.mark.parametrize("module", TRANSPORT_FREE)
def test_messages_settings_and_policy_never_reach_the_transport_side(module: str) -> None:
    start = f"{PACKAGE}.{module}"
    assert start in GRAPH, f"{start} is gone: update TRANSPORT_FREE"
    forbidden = {
        name
        for name in GRAPH
        if short(name).startswith("transport.") or short(name) in TRANSPORT_SIDE
    }
    chain = route(GRAPH, start, forbidden)
    assert chain is None, "imports the transport side: " + " -> ".join(map(short, chain or ()))


def test_no_module_imports_a_module_of_a_higher_layer() -> None:
    upward = []
    for module, imports in sorted(GRAPH.items()):
        layer = layer_of(module)
        for imported in sorted(imports):
            above = layer_of(imported)
            if layer is not None and above is not None and above > layer:
                upward.append(
                    f"{short(module)} (layer {layer}, {LAYERS[layer - 1][0]}) imports"
                    f" {short(imported)} (layer {above}, {LAYERS[above - 1][0]})"
                )
    assert not upward, "imports upward:\n" + "\n".join(upward)


def test_the_architecture_page_shows_the_same_layers() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+)\. ([^|]+?) \| ([^|]+) \|", page, flags=re.MULTILINE)
    documented = {
        name: int(number) for number, _, cell in rows for name in re.findall(r"`([^`]+)`", cell)
    }
    assert [title for _, title, _ in rows] == [title for title, _ in LAYERS]
    misplaced = [
        f"{short(module)} belongs in row {layer} ({LAYERS[layer - 1][0]}) of the table in"
        f" docs/architecture.md"
        for module in sorted(GRAPH)
        if (layer := layer_of(module)) and documented.get(short(module)) != layer
    ]
    assert not misplaced, "\n".join(misplaced)
    gone = set(documented) - {short(module) for module in GRAPH}
    assert not gone, f"docs/architecture.md lists modules that do not exist: {sorted(gone)}"


def test_the_console_transport_does_not_import_the_memory_transport() -> None:
    graph = import_graph()
    assert f"{PACKAGE}.transport.memory" not in graph[f"{PACKAGE}.transport.console"]
