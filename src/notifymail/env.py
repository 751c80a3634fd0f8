"""The environment reader: Metabase's ``MB_*`` variables and notifymail's ``NOTIFYMAIL_*``.

It turns an environment into values keyed by settings field and the labels that name
each variable, both read from the settings table (``notifymail._table``);
[`EmailSettings.from_env`][notifymail.settings.EmailSettings.from_env] builds the
settings from them. A variable whose name looks like one of ours (``MB_EMAIL_*``,
``MB_SMTP_*``, ``NOTIFYMAIL_*``) but is not is refused with the name it was probably
meant to be: a typo must never quietly turn encryption off.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

import notifymail._checks as check
from notifymail._checks import Label, Labeller, build
from notifymail._table import ROWS, Row, did_you_mean, labeller, other_hosting, parse_secret
from notifymail.errors import ConfigError
from notifymail.plans import Deployment

__all__ = ["OUTBOX_VARIABLE", "outbox_path", "read_values", "snapshot"]

OUTBOX_VARIABLE: Final = "NOTIFYMAIL_OUTBOX"
_OURS: Final = ("MB_EMAIL_", "MB_SMTP_", "NOTIFYMAIL_")
_ROWS: Final = {row.variable: row for row in ROWS}

Snapshot = dict[str, object]


def snapshot(environ: Mapping[str, str]) -> Snapshot:
    """The variables of ours in ``environ`` that are set, stripped, passwords already
    in a [`Secret`][notifymail.Secret] so that no later frame holds one as a str."""
    return {
        name: parse_secret(_label(_ROWS[name]), value.strip())
        if name in _ROWS and _ROWS[name].parse is parse_secret
        else value.strip()
        for name, value in environ.items()
        if (name in _ROWS or name.startswith(_OURS)) and value.strip()
    }


def _label(row: Row) -> Label:
    return Label(row.variable, row.path or row.variable, row.variable)


def read_values(
    variables: Snapshot, deployment: Deployment | None
) -> tuple[dict[str, object], Labeller]:
    """The values the variables set, by field path, and the labels naming them.

    ``deployment``, when given, wins over ``MB_EMAIL_HOSTING`` and ``MB_EMAIL_PLAN``.
    A variable for the other hosting (``MB_EMAIL_SMTP_*`` on Cloud, an ``_OVERRIDE``
    one self-hosted) is refused, not ignored.
    """
    for name in variables:
        if name not in _ROWS:
            raise ConfigError(f"{name}: unknown variable{did_you_mean(name, _ROWS)}", env_var=name)
    if deployment is None:
        deployment = build(
            Deployment, _parsed(variables, "deployment."), labeller(ROWS, _label), "deployment."
        )
    rows = [row for row in ROWS if row.hosting in (None, deployment.hosting)]
    for name in variables:
        row = _ROWS[name]
        if row.hosting not in (None, deployment.hosting):
            raise other_hosting(row, _label(row), lambda twin: twin.variable)
    values: dict[str, object] = {"deployment": deployment}
    values.update(
        (path, value)
        for path, value in _parsed(variables, "", rows).items()
        if not path.startswith("deployment.")
    )
    return values, labeller(rows, _label)


def _parsed(variables: Snapshot, prefix: str, rows: list[Row] | None = None) -> dict[str, object]:
    return {
        row.path: row.parse(_label(row), variables[row.variable])
        for row in (ROWS if rows is None else rows)
        if row.path is not None and row.path.startswith(prefix) and row.variable in variables
    }


def outbox_path(environ: Mapping[str, str] | None = None) -> str | None:
    """The outbox file ``NOTIFYMAIL_OUTBOX`` names (``os.environ`` by default), or
    ``None`` when it is unset or empty."""
    row = _ROWS[OUTBOX_VARIABLE]
    value = row.parse(_label(row), (os.environ if environ is None else environ).get(row.variable))
    del environ  # it holds the passwords too: not a local of this frame
    return check.optional_text(_label(row), value)
