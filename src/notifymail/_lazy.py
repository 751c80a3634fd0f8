"""Names a package exports but imports on first use.

``import notifymail`` loads only the errors, the settings and the policy: the email
package, ssl and logging, which the rest needs, cost more start-up time than
all of notifymail's own code.

A package's ``__init__`` names each export once, in the form type checkers read as a
re-export: ``from notifymail.module import Name as Name``. Names it imports at once are
written at the top; names it imports on first use, under ``if TYPE_CHECKING:``, a block
that never runs. That block is read back from the ``__init__``'s own source, the first
time a name is missing from the module: so the type checkers, ``__all__``, ``dir()``
and the imports on first use all read the same lines. (The source is read through the
package's loader, so a zip archive works; a bundler that ships bytecode only must ship
the ``__init__.py`` files too.)
"""

from __future__ import annotations

import ast
import linecache
from collections.abc import Callable, MutableMapping
from functools import cache
from importlib import import_module
from typing import Any


def re_exports(tree: ast.AST) -> dict[str, str]:
    """Each name a module re-exports (``from package.module import Name as Name``, an
    absolute import), to the module it comes from."""
    exports: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            exports.update(
                (alias.name, node.module) for alias in node.names if alias.asname == alias.name
            )
    return exports


def lazy_exports(
    namespace: MutableMapping[str, Any],
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """A package's ``__getattr__`` and ``__dir__`` (PEP 562), given its globals.

    A re-exported name not yet in ``namespace`` is imported from its module on first use
    and stored there, never looked up again; so is ``__all__``, the sorted re-exports.
    """
    package = namespace["__name__"]

    @cache
    def exports() -> dict[str, str]:
        # The file, else what the package's loader has (a zip archive's source).
        source = "".join(linecache.getlines(namespace["__file__"], dict(namespace)))
        if not source:
            raise ImportError(f"{package}: its __init__.py is needed to import its names")
        return re_exports(ast.parse(source))

    def __getattr__(name: str) -> object:  # noqa: N807 - PEP 562
        if name == "__all__":
            value: object = sorted(exports())
        elif name in exports():
            value = getattr(import_module(exports()[name]), name)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value

    def __dir__() -> list[str]:  # noqa: N807 - PEP 562
        return sorted({*namespace, *exports()})

    return __getattr__, __dir__
