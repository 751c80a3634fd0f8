"""Recipient policy: people, permissions, recipient checks, suggestions, delivery plans.

Each rule is a table. Where Metabase behaves the same the table says so; a comment marks
where notifymail is deliberately stricter.
"""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

import notifymail as nm
from notifymail._address import address_key, normalize_address
from notifymail.policy import _lookup_key

# --- fixtures -------------------------------------------------------------------------

ALICE = nm.Person("alice@example.com", "Alice", "Archer", frozenset({"all", "sales"}))
BOB = nm.Person("Bob@Example.com", "bob", "archer", frozenset({"all", "sales"}))
CAROL = nm.Person("carol@other.org", "Carol", "Cole", frozenset({"all", "ops"}))
DAVE = nm.Person("dave@other.org", "Dave", "Dunn", frozenset({"all", "sales"}), active=False)
RITA = nm.Person("rita@example.com", "Rita", "Reed", frozenset({"all"}), restricted=True)
ADMIN = nm.Person("admin@example.com", "Ada", "Zed", frozenset({"all"}), is_admin=True)
ANNA = nm.Person("anna@bücher.de", "Anna", "Berg", frozenset({"all", "ops"}))
PEOPLE = (ALICE, BOB, CAROL, DAVE, RITA, ADMIN, ANNA)
DIRECTORY = nm.InMemoryDirectory(PEOPLE)


def make_settings(
    *,
    plan: nm.Plan = nm.Plan.PRO,
    domains: tuple[str, ...] = (),
    suggestions: nm.SuggestionMode = nm.SuggestionMode.ALL,
    bcc: bool = True,
    per_message: int = 50,
    per_second: int | None = None,
) -> nm.EmailSettings:
    return nm.EmailSettings(
        deployment=nm.Deployment(plan=plan),
        sender=nm.SenderSettings(from_address="reports@example.com"),
        delivery=nm.DeliverySettings(
            bcc_enabled=bcc,
            max_recipients_per_message=per_message,
            max_recipients_per_second=per_second,
        ),
        recipients=nm.RecipientPolicy(approved_domains=domains, suggestions=suggestions),
    )


# --- people and the directory ---------------------------------------------------------


def test_person_keeps_groups_given_as_any_iterable_as_a_frozenset() -> None:
    person = nm.Person("x@example.com", groups=["a", "b", "a"])  # type: ignore[arg-type]
    assert person.groups == frozenset({"a", "b"})


def test_person_refuses_a_str_for_groups() -> None:
    with pytest.raises(TypeError, match="groups"):
        nm.Person("x@example.com", groups="sales")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "email", ["not-an-email", "", "a@b@c.example", "x@example.com\r\nBcc: y@evil.example", 42]
)
def test_person_refuses_an_invalid_address_with_invalid_message(email: object) -> None:
    # InvalidMessage, as for any address mail cannot be sent to; it is not a setting.
    with pytest.raises(nm.InvalidMessage) as caught:
        nm.Person(email)  # type: ignore[arg-type]
    assert str(caught.value).startswith("email: ")
    assert "\n" not in str(caught.value)


def test_person_keeps_its_address_as_given() -> None:
    assert nm.Person(" Ann@Example.COM ").email == " Ann@Example.COM "


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param("alice@example.com", ALICE, id="exact"),
        pytest.param("ALICE@EXAMPLE.COM", ALICE, id="case-insensitive"),
        pytest.param("bob@example.com", BOB, id="stored-mixed-case"),
        pytest.param("  alice@example.com ", ALICE, id="surrounding-space"),
        pytest.param("Anna@XN--BCHER-KVA.DE", ANNA, id="idna-query-unicode-stored"),
        pytest.param("dave@other.org", DAVE, id="inactive-found"),
        pytest.param("eve@example.com", None, id="unknown"),
        pytest.param("alice@@example.com", None, id="invalid"),
    ],
)
def test_directory_find_compares_addresses_as_mail_systems_do(
    query: str, expected: nm.Person | None
) -> None:
    assert DIRECTORY.find(query) is expected


def test_directory_finds_unicode_query_for_idna_stored_address() -> None:
    person = nm.Person("bo@xn--bcher-kva.de")
    assert nm.InMemoryDirectory([person]).find("BO@Bücher.de") is person


def test_directory_refuses_two_people_with_one_address() -> None:
    with pytest.raises(ValueError, match="share the address"):
        nm.InMemoryDirectory([ALICE, nm.Person("Alice@EXAMPLE.com")])


def test_directory_people_are_given_back_in_order() -> None:
    assert list(DIRECTORY.people()) == list(PEOPLE)


_EMAILISH = st.lists(
    st.sampled_from([*"abcXYZ09.+-_@\"' \t", "xn--", "ü", "ß", "@@", "\n"]), max_size=12
).map("".join)


def _normalized_key(address: str) -> str | None:
    try:
        return address_key(normalize_address(address))
    except ValueError:
        return None


@hypothesis_settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        _EMAILISH,
        st.builds(lambda local, domain: f"{local}@{domain}", _EMAILISH, _EMAILISH),
        st.sampled_from(
            ["A.B@Example.COM", "x@XN--BCHER-KVA.de", " a@b.co", "a@b.co\n", "Ü@Bücher.DE"]
        ),
        st.builds(
            lambda local, domain: f"{local}@{domain}",
            st.from_regex(r"[A-Za-z0-9][A-Za-z0-9.+_-]{0,8}", fullmatch=True),
            st.sampled_from(
                ["Bücher.DE", "XN--BCHER-KVA.de", "ÉCOLE.fr", "EXAMPLE.Com", "ex.test"]
            ),
        ),
    )
)
def test_lookup_key_equals_address_key_of_the_normalised_address(address: str) -> None:
    # The fast path (no validation) must key a valid address exactly as email-validator
    # would, and an invalid address as itself when its domain needs no normalising.
    expected = _normalized_key(address)
    if expected is not None:
        assert _lookup_key(address) == expected
    elif address.isascii() and "xn--" not in address.lower():
        assert _lookup_key(address) == address_key(address)


# --- entitlements and who may manage email --------------------------------------------

PAID = {
    nm.Feature.EMAIL_ALLOW_LIST,
    nm.Feature.EMAIL_RESTRICT_RECIPIENTS,
    nm.Feature.ADVANCED_PERMISSIONS,
}


@pytest.mark.parametrize(
    ("hosting", "plan", "features"),
    [
        pytest.param(nm.Hosting.SELF_HOSTED, nm.Plan.OSS, set(), id="self-hosted-oss"),
        pytest.param(nm.Hosting.SELF_HOSTED, nm.Plan.PRO, PAID, id="self-hosted-pro"),
        pytest.param(nm.Hosting.SELF_HOSTED, nm.Plan.ENTERPRISE, PAID, id="self-hosted-ee"),
        pytest.param(nm.Hosting.CLOUD, nm.Plan.STARTER, set(), id="cloud-starter"),
        pytest.param(
            nm.Hosting.CLOUD, nm.Plan.PRO, PAID | {nm.Feature.CLOUD_CUSTOM_SMTP}, id="cloud-pro"
        ),
        pytest.param(
            nm.Hosting.CLOUD,
            nm.Plan.ENTERPRISE,
            PAID | {nm.Feature.CLOUD_CUSTOM_SMTP},
            id="cloud-ee",
        ),
    ],
)
def test_entitlements_follow_the_plan_and_hosting(
    hosting: nm.Hosting, plan: nm.Plan, features: set[nm.Feature]
) -> None:
    assert nm.entitlements(nm.Deployment(hosting=hosting, plan=plan)) == features


SELF_OSS = nm.Deployment(plan=nm.Plan.OSS)
SELF_PRO = nm.Deployment(plan=nm.Plan.PRO)


@pytest.mark.parametrize(
    ("actor", "deployment", "allowed"),
    [
        pytest.param(ADMIN, SELF_OSS, True, id="admin-oss"),
        pytest.param(ADMIN, SELF_PRO, True, id="admin-pro"),
        pytest.param(
            nm.Person("a@example.com", is_admin=True, active=False),
            SELF_PRO,
            False,
            id="inactive-admin",
        ),
        pytest.param(
            nm.Person("s@example.com", settings_access=True), SELF_OSS, False, id="access-oss"
        ),
        pytest.param(
            nm.Person("s@example.com", settings_access=True), SELF_PRO, True, id="access-pro"
        ),
        pytest.param(
            nm.Person("s@example.com", settings_access=True, active=False),
            SELF_PRO,
            False,
            id="inactive-access-pro",
        ),
        pytest.param(ALICE, SELF_PRO, False, id="plain-user"),
    ],
)
def test_can_manage_email(actor: nm.Person, deployment: nm.Deployment, allowed: bool) -> None:
    # Metabase: admins, or the "settings access" application permission on paid plans.
    assert nm.can_manage_email(actor, deployment) is allowed


# --- check_recipients -----------------------------------------------------------------

APPROVED = make_settings(domains=("example.com", "bücher.de"))


@pytest.mark.parametrize(
    ("creator", "address", "existing", "settings", "reason"),
    [
        # Metabase: account holders may always be added, approved domains or not.
        pytest.param(ALICE, "carol@other.org", (), APPROVED, None, id="account-holder"),
        pytest.param(ALICE, "CAROL@OTHER.ORG", (), APPROVED, None, id="account-holder-case"),
        # Stricter than Metabase: a deactivated account does not exempt an address.
        pytest.param(ALICE, "dave@other.org", (), APPROVED, "not an approved", id="inactive"),
        pytest.param(ALICE, "eve@example.com", (), APPROVED, None, id="approved-domain"),
        pytest.param(ALICE, "eve@EXAMPLE.com", (), APPROVED, None, id="approved-domain-case"),
        pytest.param(ALICE, "eve@xn--bcher-kva.de", (), APPROVED, None, id="approved-idna"),
        pytest.param(ALICE, "eve@mail.example.com", (), APPROVED, "not an approved", id="sub"),
        pytest.param(ALICE, "eve@ample.com", (), APPROVED, "not an approved", id="suffix"),
        pytest.param(ALICE, "eve@other.org", (), APPROVED, "not an approved", id="outsider"),
        pytest.param(ALICE, "eve@other.org", (), make_settings(), None, id="no-allow-list"),
        # Stricter than Metabase: the syntax is checked by email-validator, with its reason.
        pytest.param(ALICE, "eve@@example.com", (), APPROVED, "not a valid", id="invalid"),
        pytest.param(ALICE, "eve@example.com\n", (), APPROVED, "line break", id="newline"),
        # Metabase: sandboxed people may only send to themselves.
        pytest.param(RITA, "rita@example.com", (), APPROVED, None, id="restricted-self"),
        pytest.param(RITA, "Rita@Example.COM", (), APPROVED, None, id="restricted-self-case"),
        pytest.param(RITA, "alice@example.com", (), APPROVED, "only add themselves", id="r-co"),
        pytest.param(RITA, "eve@example.com", (), APPROVED, "only add themselves", id="r-out"),
        # An edit never fails for addresses that were already on the subscription.
        pytest.param(ALICE, "eve@other.org", ("eve@other.org",), APPROVED, None, id="existing"),
        pytest.param(ALICE, "EVE@other.org", ("eve@OTHER.org",), APPROVED, None, id="exist-case"),
        pytest.param(
            RITA, "alice@example.com", ("alice@example.com",), APPROVED, None, id="exist-r"
        ),
    ],
)
def test_check_recipients_rule(
    creator: nm.Person,
    address: str,
    existing: tuple[str, ...],
    settings: nm.EmailSettings,
    reason: str | None,
) -> None:
    if reason is None:
        nm.check_recipients(creator, [address], DIRECTORY, settings, existing=existing)
        return
    with pytest.raises(nm.RecipientNotAllowed) as caught:
        nm.check_recipients(creator, [address], DIRECTORY, settings, existing=existing)
    assert list(caught.value.refused) == [address]
    assert reason in caught.value.refused[address]


def test_check_recipients_lists_every_refused_address_in_one_error() -> None:
    recipients = ["eve@other.org", "alice@example.com", "bad@@x", "EVE@other.org", "z@y.net"]
    with pytest.raises(nm.RecipientNotAllowed) as caught:
        nm.check_recipients(ALICE, recipients, DIRECTORY, APPROVED)
    error = caught.value
    assert set(error.refused) == {"eve@other.org", "bad@@x", "z@y.net"}
    message = str(error)
    assert message.startswith("The following email addresses are not allowed: ")
    assert all(address in message for address in error.refused)
    assert "\n" not in message


def test_check_recipients_with_nothing_new_passes() -> None:
    nm.check_recipients(ALICE, [], DIRECTORY, APPROVED)


def _refused(creator: nm.Person, addresses: list[str], settings: nm.EmailSettings) -> list[str]:
    try:
        nm.check_recipients(creator, addresses, DIRECTORY, settings)
    except nm.RecipientNotAllowed as error:
        return list(error.refused)
    return []


_DOMAINS = ("example.com", "other.org", "bücher.de", "mail.example.com", "z.net")
_LOCALS = ("alice", "carol", "dave", "anna", "eve", "Bob", "zoe")


@hypothesis_settings(max_examples=150, deadline=None)
@given(
    addresses=st.lists(
        st.builds(
            lambda local, domain, upper: (
                f"{local}@{domain}".upper() if upper else f"{local}@{domain}"
            ),
            st.sampled_from(_LOCALS),
            st.sampled_from(_DOMAINS),
            st.booleans(),
        ),
        max_size=12,
    ),
    approved=st.lists(st.sampled_from(_DOMAINS), min_size=1, unique=True),
)
def test_an_address_passes_iff_it_has_an_active_account_or_an_approved_domain(
    addresses: list[str], approved: list[str]
) -> None:
    settings = make_settings(domains=tuple(approved))
    expected = set()
    for address in addresses:
        person = DIRECTORY.find(address)
        domain = normalize_address(address).rpartition("@")[2]
        if not ((person is not None and person.active) or domain in approved):
            expected.add(address_key(normalize_address(address)))
    refused = _refused(ALICE, addresses, settings)
    assert len(refused) == len(set(map(_lookup_key, refused)))  # each mailbox listed once
    assert set(map(_lookup_key, refused)) == expected


# --- suggest_recipients ---------------------------------------------------------------


def _emails(people: list[nm.Person]) -> list[str]:
    return [person.email for person in people]


ACTIVE_SORTED = [
    "alice@example.com",  # Archer, Alice
    "Bob@Example.com",  # archer, bob
    "anna@bücher.de",  # Berg
    "carol@other.org",  # Cole
    "rita@example.com",  # Reed
    "admin@example.com",  # Zed
]


@pytest.mark.parametrize(
    ("viewer", "mode", "expected"),
    [
        # Metabase "user visibility": all, group, none; admins always see everyone.
        pytest.param(ALICE, nm.SuggestionMode.ALL, ACTIVE_SORTED, id="all"),
        pytest.param(ADMIN, nm.SuggestionMode.NONE, ACTIVE_SORTED, id="admin-sees-everyone"),
        pytest.param(
            ALICE,
            nm.SuggestionMode.GROUP,
            ["alice@example.com", "Bob@Example.com"],
            id="group-without-everyone",
        ),
        pytest.param(
            CAROL, nm.SuggestionMode.GROUP, ["anna@bücher.de", "carol@other.org"], id="group-ops"
        ),
        pytest.param(
            nm.Person("ed@example.com", groups=frozenset({"all"})),
            nm.SuggestionMode.GROUP,
            [],
            id="only-everyone-group",
        ),
        pytest.param(ALICE, nm.SuggestionMode.NONE, [], id="none"),
        # Metabase: sandboxed people see only themselves; notifymail suggests no one.
        pytest.param(RITA, nm.SuggestionMode.ALL, [], id="restricted"),
        pytest.param(DAVE, nm.SuggestionMode.ALL, [], id="inactive-viewer"),
    ],
)
def test_suggest_recipients_rule(
    viewer: nm.Person, mode: nm.SuggestionMode, expected: list[str]
) -> None:
    settings = make_settings(suggestions=mode)
    suggested = nm.suggest_recipients(viewer, DIRECTORY, settings, everyone_group="all")
    assert _emails(suggested) == expected


def test_group_mode_counts_the_everyone_group_when_it_is_not_named() -> None:
    settings = make_settings(suggestions=nm.SuggestionMode.GROUP)
    viewer = nm.Person("ed@example.com", groups=frozenset({"all"}))
    assert _emails(nm.suggest_recipients(viewer, DIRECTORY, settings)) == ACTIVE_SORTED


def test_suggestions_sort_by_last_then_first_name_then_address_ignoring_case() -> None:
    people = [
        nm.Person("b@x.com", "ann", "Smith"),
        nm.Person("A@x.com", "Ann", "smith"),
        nm.Person("c@x.com", "Zed", "Adams"),
        nm.Person("d@x.com", "bob", "SMITH"),
    ]
    suggested = nm.suggest_recipients(ADMIN, nm.InMemoryDirectory(people), make_settings())
    assert _emails(suggested) == ["c@x.com", "A@x.com", "b@x.com", "d@x.com"]


# --- plan_delivery --------------------------------------------------------------------

HOLDERS = ["alice@example.com", "Bob@Example.com", "carol@other.org", "anna@bücher.de"]


def _plan(recipients: list[str], **settings: object) -> list[tuple[tuple[str, ...], bool]]:
    batches = nm.plan_delivery(recipients, DIRECTORY, make_settings(**settings))  # type: ignore[arg-type]
    return [(batch.recipients, batch.hidden) for batch in batches]


@pytest.mark.parametrize(
    ("recipients", "settings", "expected"),
    [
        pytest.param([], {}, [], id="nobody"),
        pytest.param(HOLDERS[:3], {}, [(tuple(HOLDERS[:3]), True)], id="bcc-one-message"),
        pytest.param(HOLDERS[:3], {"bcc": False}, [(tuple(HOLDERS[:3]), False)], id="cc"),
        pytest.param(HOLDERS[:1], {}, [(tuple(HOLDERS[:1]), False)], id="one-never-hidden"),
        pytest.param(
            HOLDERS,
            {"per_message": 3},
            [(tuple(HOLDERS[:3]), True), ((HOLDERS[3],), False)],
            id="per-message-cap",
        ),
        pytest.param(
            HOLDERS,
            {"per_message": 3, "per_second": 2},
            [(tuple(HOLDERS[:2]), True), (tuple(HOLDERS[2:]), True)],
            id="per-second-lower",
        ),
        pytest.param(HOLDERS, {"per_message": 0}, [(tuple(HOLDERS), True)], id="0-one-message"),
        pytest.param(
            HOLDERS,
            {"per_message": 0, "per_second": 3},
            [(tuple(HOLDERS[:3]), True), ((HOLDERS[3],), False)],
            id="0-with-per-second",
        ),
        pytest.param(
            ["eve@x.org", "alice@example.com", "dave@other.org", "Bob@Example.com"],
            {},
            [
                (("alice@example.com", "Bob@Example.com"), True),
                (("eve@x.org",), False),
                (("dave@other.org",), False),
            ],
            id="outsiders-alone-after-holders",
        ),
        pytest.param(
            ["ALICE@example.com", "alice@EXAMPLE.com", "anna@XN--BCHER-KVA.DE", "anna@bücher.de"],
            {},
            [(("ALICE@example.com", "anna@XN--BCHER-KVA.DE"), True)],
            id="duplicates-first-spelling",
        ),
        pytest.param(
            ["Eve@x.org", "eve@X.ORG"], {}, [(("Eve@x.org",), False)], id="duplicate-outsider"
        ),
        pytest.param(
            ["not an address", "x@@y"],
            {},
            [(("not an address",), False), (("x@@y",), False)],
            id="invalid-not-validated",
        ),
    ],
)
def test_plan_delivery_rule(
    recipients: list[str],
    settings: dict[str, object],
    expected: list[tuple[tuple[str, ...], bool]],
) -> None:
    assert _plan(recipients, **settings) == expected


_POOL = [
    *HOLDERS,
    "ALICE@EXAMPLE.COM",
    "dave@other.org",
    "rita@example.com",
    "eve@x.org",
    "EVE@x.org",
    "f@y.net",
    "g@z.io",
]


@hypothesis_settings(max_examples=200, deadline=None)
@given(
    recipients=st.lists(st.sampled_from(_POOL), max_size=20),
    bcc=st.booleans(),
    per_message=st.integers(0, 5),
    per_second=st.one_of(st.none(), st.integers(1, 5)),
)
def test_plan_delivery_properties(
    recipients: list[str], bcc: bool, per_message: int, per_second: int | None
) -> None:
    settings = make_settings(bcc=bcc, per_message=per_message, per_second=per_second)
    batches = nm.plan_delivery(recipients, DIRECTORY, settings)
    planned = [address for batch in batches for address in batch.recipients]
    # every mailbox exactly once
    assert sorted(map(_lookup_key, planned)) == sorted(set(map(_lookup_key, recipients)))
    caps = [cap for cap in (per_message, per_second) if cap]
    for batch in batches:
        assert not caps or len(batch.recipients) <= min(caps)
        assert batch.hidden == (bcc and len(batch.recipients) > 1)
        person = DIRECTORY.find(batch.recipients[0])
        if person is None or not person.active:  # outsiders alone
            assert len(batch.recipients) == 1
    # holders' batches before any outsider's
    kinds = [
        (p := DIRECTORY.find(batch.recipients[0])) is not None and p.active for batch in batches
    ]
    assert kinds == sorted(kinds, reverse=True)


def test_policy_re_exports_entitlements_from_settings() -> None:
    import notifymail.policy
    import notifymail.settings

    assert notifymail.policy.entitlements is notifymail.settings.entitlements
    assert "entitlements" in notifymail.policy.__all__
    assert all(
        getattr(nm, name) is getattr(notifymail.policy, name) for name in notifymail.policy.__all__
    )


# --- a directory that matches more loosely than notifymail ------------------------------


class _AccentBlindDirectory:
    """A directory that finds people as a MySQL ``_ai_ci`` collation would: accents,
    width and case ignored."""

    def __init__(self, people: tuple[nm.Person, ...]) -> None:
        self._people = people

    @staticmethod
    def _fold(address: str) -> str:
        decomposed = unicodedata.normalize("NFKD", address)
        return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()

    def find(self, email: str) -> nm.Person | None:
        return next((p for p in self._people if self._fold(p.email) == self._fold(email)), None)

    def people(self) -> tuple[nm.Person, ...]:
        return self._people


LOOSE = _AccentBlindDirectory((nm.Person("alice@corp.com", "Alice"), ALICE))
CORP_ONLY = make_settings(domains=("corp.com",))


@pytest.mark.parametrize("lookalike", ["alice@cörp.com", "ALICE@CÖRP.COM", "alice@corp.cöm"])
def test_check_recipients_checks_the_directorys_answer(lookalike: str) -> None:
    # The directory says "Alice", but her address is not the one asked for: the address
    # is an outsider's, on a domain that is not approved.
    assert LOOSE.find(lookalike) is not None
    with pytest.raises(nm.RecipientNotAllowed) as caught:
        nm.check_recipients(ALICE, [lookalike], LOOSE, CORP_ONLY)
    assert set(caught.value.refused) == {lookalike}
    nm.check_recipients(ALICE, ["alice@corp.com", "ALICE@CORP.COM"], LOOSE, CORP_ONLY)


def test_plan_delivery_sends_a_lookalike_a_message_of_its_own() -> None:
    batches = nm.plan_delivery(
        ["alice@corp.com", "alice@cörp.com", "alicé@corp.com", "alice@example.com"],
        LOOSE,
        make_settings(per_message=0),
    )
    assert batches == [
        nm.Batch(("alice@corp.com", "alice@example.com"), hidden=True),
        nm.Batch(("alice@cörp.com",), hidden=False),
        nm.Batch(("alicé@corp.com",), hidden=False),
    ]
