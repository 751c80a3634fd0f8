"""Who may receive what, and who may change the settings, decided without I/O.

Every rule is a plain function of settings and people, so each one is a table test and
none of them logs, sleeps or opens a socket. Addresses compare case-insensitively
everywhere (directory lookup, duplicates, approved domains), and the IDNA and Unicode
spellings of a domain are equal.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from notifymail._address import address_key, domain_of, normalize_address
from notifymail.errors import ConfigError, PermissionDenied, RecipientNotAllowed
from notifymail.settings import (
    SMTP_FIELDS,
    Deployment,
    EmailSettings,
    Feature,
    Secret,
    SmtpSettings,
    SuggestionMode,
    entitlements,
    relabel_errors,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "Batch",
    "Directory",
    "InMemoryDirectory",
    "Person",
    "apply_changes",
    "can_manage_email",
    "check_recipients",
    "entitlements",
    "plan_delivery",
    "suggest_recipients",
]


# --- people ---


@dataclass(frozen=True, slots=True)
class Person:
    """Someone the host knows: an account holder when ``active``.

    ``restricted`` means row or column security applies to them, so they may send only
    to themselves. ``groups`` may be given as any iterable of names; it is kept as a
    frozenset.
    """

    email: str
    first_name: str = ""
    last_name: str = ""
    groups: frozenset[str] = frozenset()
    is_admin: bool = False
    settings_access: bool = False
    restricted: bool = False
    active: bool = True

    if TYPE_CHECKING:

        def __init__(  # noqa: PLR0917 - SPEC's positional order
            self,
            email: str,
            first_name: str = "",
            last_name: str = "",
            groups: Iterable[str] = frozenset(),
            is_admin: bool = False,
            settings_access: bool = False,
            restricted: bool = False,
            active: bool = True,
        ) -> None: ...

    def __post_init__(self) -> None:
        if not isinstance(self.groups, frozenset):
            if isinstance(self.groups, str):
                raise TypeError("groups must be an iterable of group names, not a str")
            object.__setattr__(self, "groups", frozenset(self.groups))


class Directory(Protocol):
    """Where the host's people are looked up.

    ``find`` must compare addresses case-insensitively and treat the IDNA and Unicode
    spellings of a domain as equal; it returns inactive people too (the policy decides
    what inactive means).
    """

    def find(self, email: str) -> Person | None: ...

    def people(self) -> Iterable[Person]: ...


def _lookup_key(address: str) -> str:
    """The key under which ``address`` names a mailbox: ``address_key`` of the normalised
    address, or of the address as given when it is not valid (no valid address has it)."""
    try:
        return address_key(normalize_address(address))
    except ValueError:
        return address_key(address)


class InMemoryDirectory:
    """A [`Directory`][notifymail.Directory] over a fixed list of people, looked up through a dict.

    Two people with the same address (compared as `find` compares) are a
    ``ValueError``: a mailbox belongs to one account.
    """

    def __init__(self, people: Iterable[Person] = ()) -> None:
        self._people = tuple(people)
        self._by_key: dict[str, Person] = {}
        for person in self._people:
            key = _lookup_key(person.email)
            if key in self._by_key:
                raise ValueError(f"two people share the address {person.email!r}")
            self._by_key[key] = person

    def find(self, email: str) -> Person | None:
        return self._by_key.get(_lookup_key(email))

    def people(self) -> Iterable[Person]:
        return self._people

    def __len__(self) -> int:
        return len(self._people)

    def __repr__(self) -> str:
        return f"InMemoryDirectory(<{len(self._people)} people>)"


# --- who may change the settings ---


def can_manage_email(actor: Person, deployment: Deployment) -> bool:
    """Admins always; ``settings_access`` only with advanced permissions; inactive never."""
    if not actor.active:
        return False
    if actor.is_admin:
        return True
    return actor.settings_access and Feature.ADVANCED_PERMISSIONS in entitlements(deployment)


# --- the admin form's save ---

_PLAIN_SMTP: Final = {f"email-smtp-{name}": name for name in SMTP_FIELDS}
_OVERRIDE_SMTP: Final = {f"email-smtp-{name}-override": name for name in SMTP_FIELDS}
_OVERRIDE_ENABLED: Final = "smtp-override-enabled"

_Parse = Callable[[str, object], object]


def _form_integer(what: str) -> _Parse:
    def parse(name: str, value: object) -> object:
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            return int(value.strip())
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: {value!r} is not {what}", field=name)

    return parse


def _form_boolean(name: str, value: object) -> object:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigError(f"{name}: {value!r} is not true or false", field=name)


def _form_list(name: str, value: object) -> object:
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    if isinstance(value, (list, tuple)):
        return tuple(value)
    raise ConfigError(
        f"{name}: must be a list or a comma-separated str, not {type(value).__name__}",
        field=name,
    )


def _form_password(name: str, value: object) -> object:
    if isinstance(value, (str, Secret)):
        return value
    raise ConfigError(f"{name}: must be a str, not {type(value).__name__}", field=name)


def _as_given(name: str, value: object) -> object:
    """Passed on for the settings constructor to check (and name the field)."""
    return value


_SMTP_PARSERS: Final[Mapping[str, _Parse]] = {
    "host": _as_given,
    "port": _form_integer("a port number (1-65535)"),
    "security": _as_given,
    "username": _as_given,
    "password": _form_password,
}
# Setting name -> (part of EmailSettings, field of that part, parser), for names valid on
# either hosting; the smtp names are added per hosting by _targets.
_COMMON: Final[Mapping[str, tuple[str, str, _Parse]]] = {
    "email-from-address": ("sender", "from_address", _as_given),
    "email-from-name": ("sender", "from_name", _as_given),
    "email-reply-to": ("sender", "reply_to", _form_list),
    "bcc-enabled?": ("delivery", "bcc_enabled", _form_boolean),
    "email-max-recipients-per-message": (
        "delivery",
        "max_recipients_per_message",
        _form_integer("a count (0 or more)"),
    ),
    "email-max-recipients-per-second": (
        "delivery",
        "max_recipients_per_second",
        _form_integer("a count (0 or more)"),
    ),
    "subscription-allowed-domains": ("recipients", "approved_domains", _form_list),
    "user-visibility": ("recipients", "suggestions", _as_given),
}


def _targets(deployment: Deployment) -> dict[str, tuple[str, str, _Parse]]:
    smtp_names = _OVERRIDE_SMTP if deployment.is_cloud else _PLAIN_SMTP
    targets = dict(_COMMON)
    targets.update(
        {name: ("smtp", field, _SMTP_PARSERS[field]) for name, field in smtp_names.items()}
    )
    if deployment.is_cloud:
        targets[_OVERRIDE_ENABLED] = ("toggle", "use_custom_smtp", _form_boolean)
    return targets


def _unknown(name: str) -> ConfigError:
    if name in _PLAIN_SMTP:
        why = (
            f"is for self-hosted deployments; on Cloud the customer's server is set "
            f"with {name}-override"
        )
    elif name in _OVERRIDE_SMTP or name == _OVERRIDE_ENABLED:
        why = "is for Cloud deployments; self-hosted, use the email-smtp-* settings"
    else:
        why = "is not an email setting"
    return ConfigError(f"{name}: {why}", field=name)


def _labels(deployment: Deployment) -> dict[str, str]:
    """Settings field name (as the constructors report it) -> Metabase setting name."""
    labels = {field: name for name, (_, field, _) in _targets(deployment).items()}
    for field in ("approved_domains", "suggestions"):
        labels[f"recipients.{field}"] = labels[field]
    for field in SMTP_FIELDS:
        labels[f"smtp.{field}"] = labels[field]
    return labels


_Updates = dict[str, tuple[str, object]]  # field -> (setting name, value or None)
_Part = TypeVar("_Part", bound="DataclassInstance")


def _default(field: dataclasses.Field[Any]) -> object:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _replace(part: _Part, updates: _Updates) -> _Part:
    """``part`` with ``updates`` applied; ``None`` puts a field back to its default."""
    defaults = {field.name: _default(field) for field in dataclasses.fields(part)}
    values: dict[str, object] = {}
    for field, (name, value) in updates.items():
        if value is None and defaults[field] is dataclasses.MISSING:
            raise ConfigError(f"{name}: is required and cannot be cleared", field=name)
        values[field] = defaults[field] if value is None else value
    return dataclasses.replace(part, **values)


def _new_smtp(
    current: SmtpSettings | None, updates: _Updates, host_name: str
) -> SmtpSettings | None:
    """The server after ``updates``: clearing the host clears the whole server, and a
    server without a host cannot be given its other fields."""
    password = updates.get("password")
    if (
        password is not None
        and current is not None
        and current.password is not None
        and password[1] == current.password.masked()
    ):
        # the form handed back the masked form: keep the stored password
        updates = {field: update for field, update in updates.items() if field != "password"}
    host = updates["host"][1] if "host" in updates else current and current.host
    if host is None:
        given = [name for name, value in updates.values() if value is not None]
        if given:
            raise ConfigError(
                f"{host_name}: is not set, so {', '.join(given)} cannot be set",
                field=host_name,
            )
        return None
    if current is None:
        values: dict[str, Any] = {
            field: value for field, (_, value) in updates.items() if value is not None
        }
        return SmtpSettings(**values)
    new = _replace(current, updates)
    moved = new.host.lower() != current.host.lower()
    if moved and new.password is not None and "password" not in updates:
        # Stricter than Metabase: whoever may edit the form must not be able to point
        # the stored password at a server of their own.
        password_name = host_name.replace("-host", "-password")
        raise ConfigError(
            f"{password_name}: enter the password again; the stored one is not sent to "
            f"a new host ({new.host})",
            field=password_name,
        )
    return new


def apply_changes(
    current: EmailSettings, changes: Mapping[str, object], actor: Person
) -> EmailSettings:
    """The admin form's save: ``current`` with ``changes`` applied, all or nothing.

    ``changes`` maps Metabase setting names to values as a form sends them: ports and
    counts as ``int`` or digits, booleans as ``bool`` or ``"true"``/``"false"``, lists as
    a list or a comma-separated ``str``. ``None`` or an empty ``str`` clears a setting
    (back to its default; clearing the host clears the whole server, and while no host
    is set the other server settings are a ``ConfigError`` naming the host setting;
    the sender's address cannot be cleared). A password equal
    to the stored one's ``masked()`` form keeps the stored password. Self-hosted, the
    ``email-smtp-*`` names set the server; on Cloud their ``-override`` twins set the
    customer's own server and ``smtp-override-enabled`` switches to it.

    Raises [`PermissionDenied`][notifymail.PermissionDenied] unless
    [`can_manage_email`][notifymail.can_manage_email],
    [`FeatureNotAvailable`][notifymail.FeatureNotAvailable] for a value the plan does not include,
    and [`ConfigError`][notifymail.ConfigError] whose ``field`` is the setting name for anything
    else. ``current`` is never modified; the result is validated as a whole.
    """
    deployment = current.deployment
    if not can_manage_email(actor, deployment):
        raise PermissionDenied(f"{actor.email} may not change the email settings")
    targets = _targets(deployment)
    updates: dict[str, _Updates] = {}
    for name, value in changes.items():
        if name not in targets:
            raise _unknown(name)
        part, field, parse = targets[name]
        cleared = value is None or (isinstance(value, str) and not value.strip())
        updates.setdefault(part, {})[field] = (name, None if cleared else parse(name, value))

    with relabel_errors(_labels(deployment)):
        new: dict[str, Any] = {
            part: _replace(getattr(current, part), updates[part])
            for part in ("sender", "delivery", "recipients")
            if part in updates
        }
        if "smtp" in updates:
            host_name = "email-smtp-host-override" if deployment.is_cloud else "email-smtp-host"
            new["smtp"] = _new_smtp(current.smtp, updates["smtp"], host_name)
        if "toggle" in updates:
            _, enabled = updates["toggle"]["use_custom_smtp"]
            new["use_custom_smtp"] = bool(enabled)
        return dataclasses.replace(current, **new)


# --- recipients ---


def check_recipients(
    creator: Person,
    recipients: Iterable[str],
    directory: Directory,
    settings: EmailSettings,
    *,
    existing: Iterable[str] = (),
) -> None:
    """Refuse, in one error, every recipient ``creator`` may not add to a subscription.

    An active account holder passes (their address is the directory's, so it is not
    validated again), except that a ``restricted`` creator may add no one but themselves.
    Anyone else needs a valid address whose domain is approved (exactly,
    case-insensitively, IDNA-equal; no approved domains means every domain). Addresses
    in ``existing`` were on the subscription before this edit and are not re-checked.
    Raises [`RecipientNotAllowed`][notifymail.RecipientNotAllowed] with ``refused`` mapping each
    refused address, as given, to the reason.
    """
    approved = frozenset(settings.recipients.approved_domains)
    creator_key = _lookup_key(creator.email)
    skip = {_lookup_key(address) for address in existing}
    refused: dict[str, str] = {}
    for address in recipients:
        key = _lookup_key(address)
        if key in skip:
            continue
        skip.add(key)
        reason = _refusal(
            address,
            key,
            creator=creator,
            creator_key=creator_key,
            directory=directory,
            approved=approved,
        )
        if reason is not None:
            refused[address] = reason
    if refused:
        listed = "; ".join(f"{address!r} ({reason})" for address, reason in refused.items())
        raise RecipientNotAllowed(
            f"The following email addresses are not allowed: {listed}", refused=refused
        )


def _refusal(
    address: str,
    key: str,
    *,
    creator: Person,
    creator_key: str,
    directory: Directory,
    approved: frozenset[str],
) -> str | None:
    """Why ``address`` may not be added, or ``None`` when it may."""
    if key == creator_key and creator.active:
        return None
    if creator.restricted:
        return "a creator with restricted data access may only add themselves"
    person = directory.find(address)
    if person is not None and person.active:
        return None
    try:
        normalized = normalize_address(address)
    except ValueError as error:
        return f"not a valid email address: {error}"
    domain = domain_of(normalized)
    if approved and domain not in approved:
        return f"{domain} is not an approved domain and the address has no account"
    return None


def suggest_recipients(
    viewer: Person,
    directory: Directory,
    settings: EmailSettings,
    *,
    everyone_group: str | None = None,
) -> list[Person]:
    """The people a recipient picker offers ``viewer``, sorted by last, first name, address.

    Restricted (and inactive) viewers get no one; admins get everyone; otherwise
    ``settings.recipients.suggestions`` decides: ALL every active person, GROUP those
    sharing a group with the viewer other than ``everyone_group``, NONE no one.
    Inactive people never appear. The plan is not checked here: a mode other than ALL
    cannot exist on a plan without the feature, because the settings refuse it.
    """
    if viewer.restricted or not viewer.active:
        return []
    mode = SuggestionMode.ALL if viewer.is_admin else settings.recipients.suggestions
    if mode is SuggestionMode.NONE:
        return []
    active = (person for person in directory.people() if person.active)
    if mode is SuggestionMode.GROUP:
        groups = viewer.groups - {everyone_group}
        active = (person for person in active if not groups.isdisjoint(person.groups))
    return sorted(
        active,
        key=lambda person: (
            person.last_name.casefold(),
            person.first_name.casefold(),
            _lookup_key(person.email),
        ),
    )


# --- delivery ---


@dataclass(frozen=True, slots=True)
class Batch:
    """The recipients of one message; ``hidden`` puts them in BCC (``To`` undisclosed)."""

    recipients: tuple[str, ...]
    hidden: bool


def plan_delivery(
    recipients: Iterable[str], directory: Directory, settings: EmailSettings
) -> list[Batch]:
    """Who goes in which message of a notification, before any message exists.

    Duplicates are dropped (first spelling kept). Active account holders share messages
    of at most ``max_recipients_per_message`` (0: one message) and never more than
    ``max_recipients_per_second`` when set, hidden under BCC unless a batch has one
    recipient. Everyone else gets a message of their own. Account-holder batches come
    first, then outsiders, each in input order. Addresses are not validated here: the
    mailer does that before asking.
    """
    seen: set[str] = set()
    members: list[str] = []
    outsiders: list[str] = []
    for address in recipients:
        key = _lookup_key(address)
        if key in seen:
            continue
        seen.add(key)
        person = directory.find(address)
        (members if person is not None and person.active else outsiders).append(address)

    delivery = settings.delivery
    limits = [
        limit
        for limit in (delivery.max_recipients_per_message, delivery.max_recipients_per_second)
        if limit
    ]
    size = min(limits) if limits else max(len(members), 1)
    chunks = (tuple(members[start : start + size]) for start in range(0, len(members), size))
    batches = [Batch(chunk, hidden=delivery.bcc_enabled and len(chunk) > 1) for chunk in chunks]
    batches.extend(Batch((address,), hidden=False) for address in outsiders)
    return batches
