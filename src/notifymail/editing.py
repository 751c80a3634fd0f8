"""The admin form's save: Metabase's setting names applied to the settings, all or nothing.

The names, their parsers and the hosting each belongs to come from the settings table
(``notifymail._table``), the same one the environment reader uses, so a value means the
same thing in a variable and in the form. Errors name the setting, as the form shows it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Final

from notifymail._checks import Label, build, default_at, flatten
from notifymail._table import ROWS, Row, did_you_mean, labeller, other_hosting, parse_secret
from notifymail.errors import ConfigError, PermissionDenied
from notifymail.policy import Person, can_manage_email
from notifymail.secret import Secret
from notifymail.settings import EmailSettings, SmtpSettings

__all__ = ["apply_changes"]

_NAMES: Final = {row.name: row for row in ROWS if row.name is not None}


def apply_changes(
    current: EmailSettings, changes: Mapping[str, object], actor: Person
) -> EmailSettings:
    """The admin form's save: ``current`` with ``changes`` applied, all or nothing.

    ``changes`` maps Metabase setting names to values as a form sends them: ports and
    counts as ``int`` or digits, booleans as ``bool`` or true/false/yes/no/1/0/on/off,
    lists as a list, a JSON list or a comma-separated ``str``. ``None`` or an empty
    ``str`` clears a setting (back to its default; clearing the host clears the whole
    server, and while no host is set the other server settings are a ``ConfigError``
    naming the host setting; the sender's address cannot be cleared). A password equal
    to the stored one's ``masked()`` form keeps the stored password, but a change of
    host, port or security that would keep it must enter it again (or clear it): the
    stored password never goes to another server by someone else's hand. Self-hosted,
    the ``email-smtp-*`` names set the server; on Cloud their ``-override`` twins set the
    customer's own server and ``smtp-override-enabled`` switches to it.

    Raises [`PermissionDenied`][notifymail.PermissionDenied] unless
    [`can_manage_email`][notifymail.can_manage_email],
    [`FeatureNotAvailable`][notifymail.FeatureNotAvailable] for a value the plan does not
    include, and [`ConfigError`][notifymail.ConfigError] whose ``field`` is the setting name
    for anything else. ``current`` is never modified; the result is validated as a whole.
    """
    given = _passwords_wrapped(changes)
    del changes  # it holds the new password: not a local of this frame
    deployment = current.deployment
    if not can_manage_email(actor, deployment):
        raise PermissionDenied(f"{actor.email} may not change the email settings")
    stored = flatten(current)
    values = dict(stored)
    updates: dict[str, object] = {}
    for name, value in given.items():
        row = _NAMES.get(name)
        if row is None:
            raise ConfigError(
                f"{name}: is not an email setting{did_you_mean(name, _NAMES)}", field=name
            )
        if row.hosting not in (None, deployment.hosting):
            raise other_hosting(row, _label(row), lambda twin: twin.name)
        path = row.path or name
        if value is None or (isinstance(value, str) and not value.strip()):
            _clear(values, path)
            continue
        new = row.parse(_label(row), value)
        old = stored.get(path)
        if not (
            isinstance(new, Secret) and isinstance(old, Secret) and new.reveal() == old.masked()
        ):
            updates[path] = new  # else the form handed back the masked form: keep it
    values.update(updates)
    rows = [row for row in _NAMES.values() if row.hosting in (None, deployment.hosting)]
    label = labeller(rows, _label)
    settings = build(EmailSettings, values, label)
    if _password_moved(current.smtp, settings.smtp):
        raise label("smtp.password").error(
            "enter the password again, or clear it: the stored one is not sent to another "
            "host, port or security"
        )
    return settings


def _passwords_wrapped(changes: Mapping[str, object]) -> dict[str, object]:
    return {
        name: _NAMES[name].parse(_label(_NAMES[name]), value)
        if name in _NAMES
        and _NAMES[name].parse is parse_secret
        and isinstance(value, str)
        and value.strip()
        else value
        for name, value in changes.items()
    }


def _label(row: Row) -> Label:
    name = row.name or row.variable
    return Label(name, name)


def _clear(values: dict[str, object], path: str) -> None:
    """Clear ``path``; clearing what a part cannot be without (``smtp.host``) clears the
    whole part when the part itself is optional."""
    part = path.rpartition(".")[0]
    whole = (
        part
        and default_at(EmailSettings, part) is None
        and default_at(EmailSettings, path) is dataclasses.MISSING
    )
    for key in [key for key in values if key == path or (whole and key.startswith(f"{part}."))]:
        del values[key]


def _password_moved(before: SmtpSettings | None, after: SmtpSettings | None) -> bool:
    """Whether ``after`` keeps ``before``'s password for another host, port or security."""
    if before is None or after is None or after.password is None:
        return False
    if after.password is not before.password:
        return False  # entered again
    return (before.host.lower(), before.effective_port, before.security) != (
        after.host.lower(),
        after.effective_port,
        after.security,
    )
