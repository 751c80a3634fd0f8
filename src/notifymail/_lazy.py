"""Names a package exports but imports on first use.

``import notifymail`` loads only the errors, the settings and the policy: the email
package, ssl and logging, which the rest needs, cost more start-up time than
all of notifymail's own code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, MutableMapping
from importlib import import_module
from typing import Any


def lazy_exports(
    namespace: MutableMapping[str, Any], modules: Mapping[str, str], exported: Iterable[str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """A module's ``__getattr__`` and ``__dir__`` for names imported from ``modules`` on use.

    ``modules`` maps each lazy name to the module it lives in; once imported, the name is
    stored in ``namespace`` (the module's globals) and never looked up again.
    """
    package = namespace["__name__"]
    names = frozenset(exported)

    def __getattr__(name: str) -> object:  # noqa: N807 - PEP 562
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:  # noqa: N807 - PEP 562
        return sorted({*namespace, *names})

    return __getattr__, __dir__
