"""mkdocstrings reads a package's ``__all__`` as notifymail does at run time: from its
re-exports, ``from module import Name as Name`` (see notifymail._lazy). Without it,
``[Mailer][notifymail.Mailer]`` would find no ``notifymail.Mailer``."""

from __future__ import annotations

import ast
from typing import Any

import griffe

from notifymail._lazy import re_exports


class ReExports(griffe.Extension):
    def on_module_members(
        self, *, node: ast.AST | griffe.ObjectNode, mod: griffe.Module, **kwargs: Any
    ) -> None:
        if isinstance(node, ast.Module) and mod.exports is None:
            mod.exports = sorted(re_exports(node)) or None
