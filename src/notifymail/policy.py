"""Who may receive what, and who may manage the email settings, decided without I/O.

The pure recipient rules: who a person is, who may manage email, who may be added to a
subscription, who is suggested and who shares which message. Every rule is a plain
function of settings and people, so each one is a table test and none of them logs,
sleeps or opens a socket. Addresses compare case-insensitively everywhere (directory
lookup, duplicates, approved domains), and the IDNA and Unicode spellings of a domain
are equal. Saving the admin form is settings editing: ``notifymail.editing``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from notifymail._address import address_key, domain_of, normalize_address
from notifymail._checks import Labeller, Validated, shown
from notifymail._enums import Feature, SuggestionMode
from notifymail.errors import InvalidMessage, RecipientNotAllowed
from notifymail.plans import Deployment, entitlements
from notifymail.settings import EmailSettings

__all__ = [
    "Batch",
    "Directory",
    "InMemoryDirectory",
    "Person",
    "can_manage_email",
    "check_recipients",
    "entitlements",
    "plan_delivery",
    "suggest_recipients",
]


# --- people ---


@dataclass(frozen=True, slots=True)
class Person(Validated):
    """Someone the host knows: an account holder when ``active``.

    ``restricted`` means row or column security applies to them, so they may send only
    to themselves. ``groups`` may be given as any iterable of names; it is kept as a
    frozenset. ``email`` is kept as given, and must be a valid address:
    [`InvalidMessage`][notifymail.InvalidMessage] otherwise, as for any address mail cannot go to.
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

    @classmethod
    def _checked(cls, values: dict[str, Any], label: Labeller) -> dict[str, Any]:
        email = values["email"]
        try:
            normalize_address(email)
        except ValueError as error:
            raise InvalidMessage(
                f"{label('email').name}: {shown(email)} is not a valid email address: {error}"
            ) from None
        groups = values["groups"]
        if isinstance(groups, str):
            raise TypeError("groups must be an iterable of group names, not a str")
        return {**values, "groups": frozenset(groups)}


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
    Raises [`RecipientNotAllowed`][notifymail.RecipientNotAllowed] with ``refused`` mapping
    each refused address, as given, to the reason.
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
    if _account_holder(directory, address, key):
        return None
    try:
        normalized = normalize_address(address)
    except ValueError as error:
        return f"not a valid email address: {error}"
    domain = domain_of(normalized)
    if approved and domain not in approved:
        return f"{domain} is not an approved domain and the address has no account"
    return None


def _account_holder(directory: Directory, address: str, key: str) -> bool:
    """Whether ``address`` (whose lookup key is ``key``) belongs to an active account.

    The directory's answer is checked: a directory that matches more loosely than
    notifymail (accents, width, as a MySQL ``_ai_ci`` collation does) must not let
    ``alice@cörp.com`` pass as the account of ``alice@corp.com``.
    """
    person = directory.find(address)
    return person is not None and person.active and _lookup_key(person.email) == key


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
        (members if _account_holder(directory, address, key) else outsiders).append(address)

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
