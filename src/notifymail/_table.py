"""Every setting a user can set by name, in one table.

Each row ties a variable (Metabase's ``MB_*``, or notifymail's own ``NOTIFYMAIL_*``) and,
when the admin form has it, a Metabase setting name to the settings field it sets, the
parser for its kind of string, the hosting it belongs to and the plan feature it needs.
The environment reader, the admin form's save, the plan gates of ``EmailSettings`` and
the configuration reference in the docs are all read from it: a new setting is a row
here and a field on its dataclass.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import KW_ONLY, dataclass
from typing import Final

from notifymail._checks import Label, Labeller, field_label, shown
from notifymail._enums import Feature, Hosting
from notifymail.errors import ConfigError
from notifymail.secret import Secret

__all__ = [
    "ROWS",
    "Row",
    "did_you_mean",
    "gates",
    "labeller",
    "other_hosting",
    "parse_boolean",
    "parse_integer",
    "parse_list",
    "parse_number",
    "parse_secret",
    "parse_text",
]

# A parser turns what a user typed (an environment variable, a form value) into what
# the settings constructor takes. It refuses only what the constructor could not name
# as well; anything else is passed on for the constructor's own check and message.
Parser = Callable[[Label, object], object]

_TRUE: Final = frozenset({"true", "yes", "1", "on"})
_FALSE: Final = frozenset({"false", "no", "0", "off"})
# Longer is no count, port or number of seconds: left as text, for the field's check to
# refuse (int() of 5,000 digits raises ValueError).
_DIGITS: Final = re.compile(r"[0-9]{1,30}")
_DECIMAL: Final = re.compile(r"[0-9]{1,30}(\.[0-9]{0,30})?|\.[0-9]{1,30}")


def parse_text(label: Label, value: object) -> object:
    return value.strip() if isinstance(value, str) else value


def parse_secret(label: Label, value: object) -> object:
    return Secret(value) if isinstance(value, str) else value


def parse_integer(label: Label, value: object) -> object:
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        return int(value.strip())
    return value


def parse_number(label: Label, value: object) -> object:
    if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        return float(value.strip())
    return value


def parse_boolean(label: Label, value: object) -> object:
    if isinstance(value, bool):
        return value
    word = value.strip().lower() if isinstance(value, str) else None
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise label.error(f"{shown(value)} is not a boolean (true/false/yes/no/1/0)")


def parse_list(items: str) -> Parser:
    """A JSON list of strings, or comma-separated; a list or tuple passes as a tuple."""

    def parse(label: Label, value: object) -> object:
        if isinstance(value, (list, tuple)):
            return tuple(value)
        if not isinstance(value, str):
            return value
        if value.lstrip().startswith("["):
            import json  # on first use: `import notifymail` stays cheap

            try:
                parsed = json.loads(value)
            except RecursionError:
                raise label.error(f"is not a JSON list of {items} (nested too deep)") from None
            except ValueError as error:
                raise label.error(f"is not a JSON list of {items} ({error})") from None
            if not isinstance(parsed, list) or not all(isinstance(item, str) for item in parsed):
                raise label.error(f"is not a JSON list of {items}")
            return tuple(parsed)
        return tuple(item.strip() for item in value.split(",") if item.strip())

    return parse


@dataclass(frozen=True, slots=True)
class Row:
    """One setting: where it is read from, the field it sets, and its rules.

    ``path`` is the field inside ``EmailSettings`` (``None`` for a variable that sets no
    field, with ``note`` saying what it is for); ``name`` the Metabase setting name
    ``apply_changes`` takes, if any; ``hosting`` the only hosting it is valid on;
    ``feature`` what a value other than the field's default needs.
    """

    variable: str
    path: str | None
    parse: Parser
    _: KW_ONLY
    name: str | None = None
    hosting: Hosting | None = None
    feature: Feature | None = None
    note: str = ""


_SMTP: Final = (
    ("host", parse_text),
    ("port", parse_integer),
    ("security", parse_text),
    ("username", parse_text),
    ("password", parse_secret),
)
_SELF, _CLOUD = Hosting.SELF_HOSTED, Hosting.CLOUD

# fmt: off
ROWS: Final[tuple[Row, ...]] = (
    *(Row(f"MB_EMAIL_SMTP_{key.upper()}", f"smtp.{key}", parse,
          name=f"email-smtp-{key}", hosting=_SELF) for key, parse in _SMTP),
    *(Row(f"MB_EMAIL_SMTP_{key.upper()}_OVERRIDE", f"smtp.{key}", parse,
          name=f"email-smtp-{key}-override", hosting=_CLOUD) for key, parse in _SMTP),
    Row("MB_SMTP_OVERRIDE_ENABLED", "use_custom_smtp", parse_boolean,
        name="smtp-override-enabled", hosting=_CLOUD, feature=Feature.CLOUD_CUSTOM_SMTP),
    Row("NOTIFYMAIL_SMTP_TIMEOUT", "smtp.timeout", parse_number),
    Row("NOTIFYMAIL_SMTP_CAFILE", "smtp.cafile", parse_text),
    Row("NOTIFYMAIL_SMTP_MAX_CONNECTIONS", "smtp.max_connections", parse_integer),
    Row("MB_EMAIL_FROM_ADDRESS", "sender.from_address", parse_text, name="email-from-address"),
    Row("MB_EMAIL_FROM_NAME", "sender.from_name", parse_text, name="email-from-name"),
    Row("MB_EMAIL_REPLY_TO", "sender.reply_to", parse_list("addresses"), name="email-reply-to"),
    Row("MB_BCC_ENABLED", "delivery.bcc_enabled", parse_boolean, name="bcc-enabled?"),
    Row("MB_EMAIL_MAX_RECIPIENTS_PER_MESSAGE", "delivery.max_recipients_per_message",
        parse_integer, name="email-max-recipients-per-message"),
    Row("MB_EMAIL_MAX_RECIPIENTS_PER_SECOND", "delivery.max_recipients_per_second",
        parse_integer, name="email-max-recipients-per-second"),
    Row("NOTIFYMAIL_RETRY_MAX_ATTEMPTS", "delivery.retry.max_attempts", parse_integer),
    Row("MB_SUBSCRIPTION_ALLOWED_DOMAINS", "recipients.approved_domains", parse_list("domains"),
        name="subscription-allowed-domains", feature=Feature.EMAIL_ALLOW_LIST),
    Row("MB_USER_VISIBILITY", "recipients.suggestions", parse_text,
        name="user-visibility", feature=Feature.EMAIL_RESTRICT_RECIPIENTS),
    Row("MB_EMAIL_HOSTING", "deployment.hosting", parse_text),
    Row("MB_EMAIL_PLAN", "deployment.plan", parse_text),
    *(Row(f"MB_EMAIL_MANAGED_SMTP_{key.upper()}", f"managed.smtp.{key}", parse)
      for key, parse in _SMTP),
    Row("MB_EMAIL_MANAGED_FROM_ADDRESS", "managed.from_address", parse_text),
    Row("NOTIFYMAIL_OUTBOX", None, parse_text,
        note="the outbox file of the command line tool's `worker` and `outbox` commands"),
)
# fmt: on


def gates() -> dict[str, Feature]:
    """Each gated field's path and the feature a value other than its default needs."""
    return {row.path: row.feature for row in ROWS if row.path and row.feature}


def labeller(rows: Iterable[Row], label_of: Callable[[Row], Label]) -> Labeller:
    """Field path -> the label of the row that sets it. A part (``managed``) is named by
    the first row inside it; a field no row sets by its own name."""
    by_path = {row.path: label_of(row) for row in rows if row.path}

    def label(path: str) -> Label:
        found = by_path.get(path)
        if found is None:
            inside = (found for key, found in by_path.items() if key.startswith(f"{path}."))
            found = next(inside, None)
        return found or field_label(path)

    return label


_HOSTING_NAMES: Final = {Hosting.SELF_HOSTED: "self-hosted", Hosting.CLOUD: "Cloud"}


def other_hosting(row: Row, label: Label, spelled: Callable[[Row], str | None]) -> ConfigError:
    """The error for ``row`` set on a hosting it is not for, naming the row that sets
    its field there (``spelled`` gives a row's variable or setting name, or ``None``)."""
    hosting = row.hosting or Hosting.SELF_HOSTED
    problem = f"is for {_HOSTING_NAMES[hosting]} deployments"
    for twin in ROWS:
        if twin.path == row.path and twin.hosting not in (None, hosting) and spelled(twin):
            problem += f"; on {_HOSTING_NAMES[twin.hosting]}, {spelled(twin)} sets {row.path}"
            break
    return label.error(problem)


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"; did you mean X?"`` for the known name closest to ``name``, or ``""``."""
    import difflib  # on first use: `import notifymail` stays cheap

    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.8)
    return f"; did you mean {close[0]}?" if close else ""
