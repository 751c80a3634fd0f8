"""Hostile input in every field a host passes in: no injected header or recipient, no crash
but a typed ``NotifymailError``, and no address past the approved-domain check that would
be delivered to another domain.

Each property is checked on what leaves notifymail: the bytes of the message read back as
a receiver would, the envelope, and the RCPT TO commands a real server receives.
"""

from __future__ import annotations

import email
import email.utils
import smtplib
from collections.abc import Callable, Iterator
from email.utils import parseaddr
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import notifymail as nm
from notifymail._address import (
    ascii_domain,
    domain_of,
    has_control_character,
    normalize_address,
    wire_address,
)
from notifymail._compose import compose
from notifymail._readback import read_back
from notifymail._table import ROWS
from smtp_servers import FaultyServer
from test_compose_scale import MIB, peak_bytes

# Every variable that sets a settings field, and the field it sets.
ENV_VARIABLES = {row.variable: row.path for row in ROWS if row.path is not None}
FAST = settings(max_examples=200, deadline=None, derandomize=True, database=None)

# Pieces that break naive parsers and serialisers: line breaks of every kind, header and
# address syntax, encoded words, look-alikes of "@" and ".", and plain text between them.
PIECES = [
    "\r",
    "\n",
    "\r\n",
    "\x00",
    "\x0b",
    "\x85",
    "\u2028",
    "\t",
    " ",
    ":",
    ";",
    ",",
    "<",
    ">",
    '"',
    "\\",
    "(",
    ")",
    "@",
    ".",
    "[",
    "]",
    "=?utf-8?q?=0D=0ABcc:_x@evil.example?=",
    "=?utf-8?b?QmNjOiB4QGV2aWwuZXhhbXBsZQ==?=",
    "=?utf-8?q?=0D=0AContent-Type:_text/html?=",  # in a Content-ID: a second Content-Type
    "=?utf-8?b?4oCo?=",  # U+2028: Python's parser breaks a From line there
    "=?utf-8?b?4oCp?=",  # U+2029
    "=?utf-8?b?woU=?=",  # NEL
    "=?utf-8?q?=3D=3Futf-8=3Fq=3F=3D0D=3D0A=3F=3D?=",  # a line break, read twice
    " <v@evil.example>",
    "v@evil.example>",
    "\r\nBcc: x@evil.example",
    "\nTo: x@evil.example",
    "Bcc:",
    "x@evil.example",
    "\uff20",  # fullwidth @
    "\ufe6b",  # small @
    "\uff0e",  # fullwidth .
    "\u3002",  # ideographic full stop
    "\uff45",  # fullwidth e
    "\u0435",  # Cyrillic e
    "ß",
    "\u017f",  # long s
    "\u200b",
    "\ufeff",
    "\U0001f600",
    "é",
    "%",
    "!",
    "evil.example",
    "example.com",
]
hostile_text = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=4)), max_size=8).map(
    "".join
)
# A from name is shown beside the address: pieces that would end the name early, or
# smuggle an address in, come often enough to meet each other.
hostile_name = st.lists(
    st.one_of(
        st.sampled_from(
            ["=?utf-8?b?4oCo?=", "=?utf-8?b?woU=?=", "=?utf-8?b?w6k=?=", " <v@evil.example>"]
        ),
        st.sampled_from(['"', ",", "<", ">", " ", "Ann", "\\", "@", "(", ":"]),
        hostile_text,
    ),
    max_size=6,
).map("".join)
plain_local = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-_+", min_size=1, max_size=8)
hostile_address = st.one_of(
    hostile_text,
    st.tuples(
        st.one_of(plain_local, hostile_text),
        st.sampled_from(["@", "\uff20", "@@"]),
        st.one_of(
            st.sampled_from(["example.com", "bücher.example", "evil.example", "EXAMPLE.COM."]),
            hostile_text,
        ),
    ).map("".join),
)

# Addresses one step away from an approved one, so that many pass the check.
near_approved = st.builds(
    "{}@{}{}".format,
    st.one_of(
        plain_local,
        st.lists(
            st.sampled_from(
                ["a", "B", "\u00fc", "%", "+", "=?", "?=", ".", '"', "(", ")", "@", "\uff20"]
            ),
            min_size=1,
            max_size=5,
        ).map("".join),
    ),
    st.sampled_from(
        [
            "example.com",
            "EXAMPLE.com",
            "\uff45xample.com",  # fullwidth e
            "example\u3002com",  # ideographic full stop
            "example.com.",
            "b\u00fccher.example",
            "B\u00dcCHER.example",
            "xn--bcher-kva.example",
            "evil.example",
            "example.com.evil.example",
            "sub.example.com",
            "ex\u0430mple.com",  # Cyrillic a
        ]
    ),
    st.sampled_from(
        ["", "", "", "(c)", ">", " ", "\u200b", "@evil.example", "\uff20evil.example"]
    ),
)

SENDER = nm.SenderSettings(from_address="alerts@example.com", from_name="Alerts")
BASE_HEADERS = {
    "from",
    "to",
    "cc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
}

T = TypeVar("T")


def _outcome(build: Callable[[], T]) -> T | nm.NotifymailError:
    """What ``build`` returns, or the NotifymailError it raises; any other error escapes."""
    try:
        return build()
    except nm.NotifymailError as error:
        return error


PART_HEADERS = {"content-type", "content-transfer-encoding", "content-disposition", "content-id"}


def _lines(raw: bytes) -> Iterator[bytes]:
    assert b"\r\n" in raw
    for line in raw.split(b"\r\n"):
        assert b"\r" not in line, f"bare CR in {line!r}"
        assert b"\n" not in line, f"bare LF in {line!r}"
        assert b"\x00" not in line
        yield line


def _header_block(raw: bytes) -> list[bytes]:
    lines = list(_lines(raw))
    return lines[: lines.index(b"")]


def assert_no_injection(
    envelope: nm.Envelope, to: tuple[str, ...], cc: tuple[str, ...], custom: dict[str, str]
) -> None:
    """The message says what composition put in it, and nothing more."""
    headers = _header_block(envelope.raw)
    names = [line.split(b":", 1)[0].decode().lower() for line in headers if line[:1] not in b" \t"]
    assert all(len(line) <= 998 for line in headers)
    allowed = BASE_HEADERS | {name.lower() for name in custom}
    assert set(names) <= allowed, names
    assert len(names) == len(set(names)), names  # no header twice
    parsed = read_back(envelope)
    assert "Bcc" not in parsed
    for name, expected in (("To", to), ("Cc", cc)):
        header = parsed.get(name)
        got = (
            ()
            if header is None or not hasattr(header, "addresses")
            else tuple(normalize_address(a.addr_spec) for a in header.addresses)
        )
        assert got == expected, (name, got, expected)
    for name in custom:
        assert parsed[name] is not None
    for part in parsed.walk():
        if part is parsed:
            continue
        part_names = [name.lower() for name in part]
        assert set(part_names) <= PART_HEADERS, part_names
        assert len(part_names) == len(set(part_names)), part_names


def assert_from_is(envelope: nm.Envelope, address: str, name: str | None) -> None:
    """Every reader finds ``address`` in From, and the name the sender was given."""
    parsed = read_back(envelope)
    (mailbox,) = parsed["From"].addresses
    assert mailbox.addr_spec == address
    assert parseaddr(str(parsed["From"]))[1] == address
    raw_from = email.message_from_bytes(envelope.raw)["From"]  # compat32: the raw value
    assert parseaddr(" ".join(raw_from.split()))[1] == address
    # Python reads white space in a display name as one space, and (unlike RFC 2047) the
    # space between two encoded words of a long name as a space too.
    assert "".join(mailbox.display_name.split()) == "".join((name or "").split())


# --- every field of a message ---

ENCODED_BCC = "=?utf-8?q?=0D=0ABcc:_x@evil.example?="


def message_case(**hostile: object) -> dict[str, object]:
    """The arguments of the message property: benign, but for ``hostile``."""
    benign: dict[str, object] = {
        "to": ["ann@example.com"],
        "bcc": [],
        "subject": "s",
        "header_name": "X-Tag",
        "header_value": "v",
        "filename": "a.pdf",
        "from_name": "A",
        "content_id": None,
    }
    return {**benign, **hostile}


@FAST
@given(
    to=st.lists(hostile_address, max_size=2),
    bcc=st.lists(hostile_address, max_size=1),
    subject=hostile_text,
    header_name=hostile_text,
    header_value=hostile_text,
    filename=hostile_text,
    from_name=hostile_name,
    content_id=st.one_of(st.none(), hostile_text),
)
@example(**message_case(subject="Hi\r\nBcc: x@evil.example"))
@example(
    **message_case(
        bcc=["eve@example.com"],
        subject=ENCODED_BCC,
        header_value=ENCODED_BCC,
        filename='a.pdf"; name="b.exe',
        from_name='Evil <x@evil.example>, "',
        content_id="=?utf-8?q?=0D=0AContent-Type:_text/html?=",
    )
)
@example(
    **message_case(
        subject="=?utf-8?b?QmNjOiB4QGV2aWwuZXhhbXBsZQ==?=",
        header_value="=?utf-8?b?QmNjOiB4QGV2aWwuZXhhbXBsZQ==?=",
        filename=ENCODED_BCC,
        from_name=ENCODED_BCC,
    )
)
@example(**message_case(header_value=f"a {ENCODED_BCC}"))
@example(**message_case(filename="=?utf-8?q?=0D=0AContent-Type:_text/html?=", content_id="logo"))
@example(**message_case(from_name=ENCODED_BCC))
@example(**message_case(from_name="=?utf-8?b?w6k=?= <v@evil.example>"))
def test_message_fields_raise_a_typed_error_or_compose_without_injection(  # noqa: PLR0917
    to, bcc, subject, header_name, header_value, filename, from_name, content_id
):
    try:
        sender = nm.SenderSettings(from_address="alerts@example.com", from_name=from_name)
        message = nm.Message(
            to=to,
            bcc=bcc,
            subject=subject,
            text="Body\n",
            html=None if content_id is None else '<img src="cid:x">',
            headers={header_name: header_value},
            attachments=[
                nm.Attachment(filename, b"%PDF", "application/pdf"),
                *(
                    []
                    if content_id is None
                    else [nm.Attachment("i.png", b"P", "image/png", content_id)]
                ),
            ],
        )
        transport = nm.MemoryTransport()
        nm.Mailer(nm.EmailSettings(sender=sender), transport=transport).send(message)
    except nm.NotifymailError:  # any other exception fails the test
        return

    (sent,) = transport.outbox
    expected = tuple(normalize_address(a) for a in (*to, *bcc))
    assert sorted(sent.envelope.recipients) == sorted(dict.fromkeys(expected))
    assert_no_injection(sent.envelope, message.to, (), {header_name: header_value})
    parsed = sent.message
    assert_from_is(sent.envelope, "alerts@example.com", from_name)
    attachment = next(parsed.iter_attachments())
    assert attachment.get_filename() == email.utils.unquote(filename).strip()
    assert parsed["Subject"] == subject
    assert parsed[header_name] == header_value
    if content_id is not None:
        (image,) = sent.attachments[1:]
        assert image.content_id == nm.Attachment("i.png", b"P", "image/png", content_id).content_id


hostile_content_id = st.lists(
    st.sampled_from(
        [
            *("=?utf-8?q?=0D=0AContent-Type:_text/html?=", "=?utf-8?b?DQo=?="),
            *("logo", "@", ".", "=?", "?=", "=0D=0A", "_", "<", ">", "a"),
        ]
    ),
    min_size=1,
    max_size=5,
).map("".join)


@FAST
@given(from_name=hostile_name, content_id=hostile_content_id)
def test_a_from_name_or_content_id_raises_a_typed_error_or_reads_back_as_given(
    from_name, content_id
):
    transport = nm.MemoryTransport()
    try:
        sender = nm.SenderSettings(from_address="alerts@example.com", from_name=from_name)
        image = nm.Attachment("chart.png", b"\x89PNG", "image/png", content_id=content_id)
        message = nm.Message(["ann@example.com"], "s", text="x", html="<img>", attachments=[image])
        nm.Mailer(nm.EmailSettings(sender=sender), transport=transport).send(message)
    except nm.NotifymailError:  # any other exception fails the test
        assert transport.outbox == []
        return
    (sent,) = transport.outbox
    assert_no_injection(sent.envelope, ("ann@example.com",), (), {})
    assert_from_is(sent.envelope, "alerts@example.com", from_name)
    (inline,) = [part for part in sent.message.walk() if part.get("Content-ID")]
    assert inline.get_all("Content-Type") == ["image/png"]
    assert inline["Content-ID"] == f"<{image.content_id}>"
    assert sent.attachments == (image,)


@FAST
@given(
    recipients=st.lists(hostile_address, min_size=1, max_size=3),
    subject=hostile_text,
    bcc_enabled=st.booleans(),
)
def test_notification_fields_raise_a_typed_error_or_compose_without_injection(
    recipients, subject, bcc_enabled
):
    members = nm.InMemoryDirectory(
        [nm.Person(email="ann@example.com"), nm.Person(email="bob@example.com")]
    )
    settings_ = nm.EmailSettings(
        sender=SENDER, delivery=nm.DeliverySettings(bcc_enabled=bcc_enabled)
    )
    transport = nm.MemoryTransport()
    everyone = [*recipients, "ann@example.com", "bob@example.com"]
    try:
        report = nm.Mailer(settings_, transport=transport, directory=members).notify(
            nm.Notification(everyone, subject, text="Body\n")
        )
    except nm.NotifymailError:  # any other exception fails the test
        assert transport.outbox == []  # refused before anything was sent, never midway
        return

    assert report.ok
    for sent in transport.outbox:
        recipients_ = sent.envelope.recipients
        members_only = all(members.find(r) is not None for r in recipients_)
        # An outsider's message names them alone; account holders see others only under CC.
        shown = recipients_ if (len(recipients_) == 1 or not bcc_enabled) else ()
        assert members_only or len(recipients_) == 1
        assert_no_injection(sent.envelope, shown, (), {})
        assert sent.message["Subject"] == subject


# --- hostile bodies ---


@settings(max_examples=12, deadline=None, derandomize=True, database=None)
@given(
    lines=st.lists(
        st.sampled_from(["", ".", "..", "a", "x" * 100, "é", "=", " ", ".\t", "From x"]),
        min_size=1,
        max_size=4,
    ),
    html=st.booleans(),
)
def test_any_body_of_short_or_long_lines_costs_a_small_multiple_of_its_size(
    lines: list[str], html: bool
) -> None:
    unit = "\n".join(lines) + "\n"
    body = unit * (MIB // len(unit.encode()) + 1)
    size = len(body.encode())
    message = nm.Message(
        ["ann@example.com"], "s", text=None if html else body, html=body if html else None
    )
    assert peak_bytes(lambda: compose(message, SENDER).raw) < 8 * size + MIB


# --- settings and the environment ---


@FAST
@given(variable=st.sampled_from(sorted(ENV_VARIABLES)), value=hostile_text)
@example(variable="MB_EMAIL_FROM_NAME", value="Evil\r\nBcc: x@evil.example")
@example(variable="MB_EMAIL_REPLY_TO", value='["a@example.com", 1]')
@example(variable="MB_SUBSCRIPTION_ALLOWED_DOMAINS", value="example.com, evil.example@x")
def test_any_environment_value_gives_settings_or_a_config_error_naming_a_variable(variable, value):
    environ = {
        "MB_EMAIL_FROM_ADDRESS": "alerts@example.com",
        "MB_EMAIL_SMTP_HOST": "mail.example.com",
        "MB_EMAIL_PLAN": "pro",
    }
    environ[variable] = value
    email_settings = _outcome(lambda: nm.EmailSettings.from_env(environ))
    if isinstance(email_settings, nm.NotifymailError):
        assert isinstance(email_settings, nm.ConfigError)
        assert email_settings.env_var in ENV_VARIABLES
        assert not has_control_character(str(email_settings))
        return
    assert email_settings.sender.from_address == normalize_address(
        email_settings.sender.from_address
    )


@FAST
@given(
    host=hostile_text,
    username=hostile_text,
    password=hostile_text,
    from_address=hostile_address,
    reply_to=st.lists(hostile_address, max_size=2),
)
def test_any_settings_value_gives_settings_or_a_config_error(
    host, username, password, from_address, reply_to
):
    smtp = _outcome(
        lambda: nm.SmtpSettings(host=host, username=username or None, password=password or None)
    )
    sender = _outcome(
        lambda: nm.SenderSettings(from_address=from_address, reply_to=tuple(reply_to))
    )
    for outcome in (smtp, sender):
        if isinstance(outcome, nm.NotifymailError):
            assert isinstance(outcome, nm.ConfigError)
            assert outcome.field is not None
    if isinstance(smtp, nm.SmtpSettings):
        assert not has_control_character(smtp.host + (smtp.username or ""))
        if smtp.password is not None:
            assert "password=Secret('**********')" in repr(smtp)
    if isinstance(sender, nm.SenderSettings):
        assert not has_control_character("".join((sender.from_address, *sender.reply_to)))


@FAST
@given(domains=st.lists(hostile_text, max_size=3), as_string=st.booleans())
@example(domains=["Example.COM", " bücher.example ", "xn--bcher-kva.example"], as_string=True)
def test_approved_domains_are_normalised_domains_or_a_config_error(domains, as_string):
    policy = _outcome(
        lambda: nm.RecipientPolicy(approved_domains=", ".join(domains) if as_string else domains)
    )
    if isinstance(policy, nm.NotifymailError):
        assert isinstance(policy, nm.ConfigError)
        assert policy.field == "approved_domains"
        return
    for domain in policy.approved_domains:
        assert domain == domain.strip().lower()
        assert not any(c in domain for c in "@, \r\n\x00")
        assert nm.RecipientPolicy(approved_domains=(domain,)).approved_domains == (domain,)
        assert ascii_domain(domain).isascii()
    assert len(set(policy.approved_domains)) == len(policy.approved_domains)


# --- recipient smuggling ---

APPROVED = ("example.com", "bücher.example")
APPROVED_WIRE = {ascii_domain(domain) for domain in APPROVED}
ALLOW_LIST = nm.EmailSettings(
    sender=SENDER,
    deployment=nm.Deployment(plan=nm.Plan.PRO),
    recipients=nm.RecipientPolicy(approved_domains=APPROVED),
)
CREATOR = nm.Person(email="creator@example.com")
# Account holders on unapproved domains: a spoof of one of these must not pass as them.
ACCOUNTS = nm.InMemoryDirectory(
    [CREATOR, nm.Person(email="ceo@strasse.de"), nm.Person(email="sam@partner.example")]
)

CONFUSIONS = [
    '"evil@evil.example"@example.com',
    "evil@evil.example@example.com",
    "a@example.com@evil.example",
    "@evil.example:a@example.com",
    "a@evil.example(example.com)",
    "a(comment)@example.com",
    "a@example.com(comment)",
    "=?utf-8?q?a=40evil.example?=@example.com",
    "a@=?utf-8?q?example.com?=",
    "a@evil.example.",
    "a@example.com.",
    "a@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com",
    "a@example\u3002com",
    "a@ex\u0430mple.com",  # Cyrillic a
    "a\uff20evil.example@example.com",
    "a%evil.example@example.com",
    "a@example.com\u200b",
    "a@sub.example.com",
    "a@[127.0.0.1]",
    "a@example.com>",
    "<a@evil.example> a@example.com",
    "a@evil.example, b@example.com",
    "a@evil.example\x00@example.com",
    "a@xn--bcher-kva.example",
    "a@BÜCHER.example",
    "ceo@straße.de",  # a different domain (xn--strae-oqa.de) that casefolds to strasse.de
    "\u017fam@partner.example",  # a different mailbox that casefolds to sam@
    "SAM@PARTNER.EXAMPLE",
]


def _passes_check(address: str) -> bool:
    refusal = _outcome(lambda: nm.check_recipients(CREATOR, [address], ACCOUNTS, ALLOW_LIST))
    if refusal is None:
        return True
    assert isinstance(refusal, nm.RecipientNotAllowed)
    assert list(refusal.refused) == [address]
    return False


def assert_not_smuggled(address: str) -> tuple[str, ...]:
    """If ``address`` passes the check, it goes on the wire to the domain that was checked.

    Returns the envelope recipients (wire form) of a notification to it.
    """
    if not _passes_check(address):
        return ()
    account = ACCOUNTS.find(address)
    normalized = normalize_address(address)
    allowed_domains = set(APPROVED)
    if account is not None and account.active:
        # An account holder's own mailbox: the same address, spelt another way.
        assert normalized.lower() == normalize_address(account.email).lower()
        allowed_domains.add(domain_of(normalize_address(account.email)))
    else:
        assert domain_of(normalized) in APPROVED
    transport = nm.MemoryTransport()
    nm.Mailer(ALLOW_LIST, transport=transport, directory=ACCOUNTS).notify(
        nm.Notification([address], "Report", text="x\n")
    )
    (sent,) = transport.outbox
    wire = tuple(wire_address(r) for r in sent.envelope.recipients)
    allowed_wire = {ascii_domain(d) for d in allowed_domains}
    for recipient in wire:
        # smtplib re-parses what it is given: it must not find another address in it.
        quoted = smtplib.quoteaddr(recipient)
        assert quoted == f"<{recipient}>"
        assert recipient.rpartition("@")[2] in allowed_wire
    return wire


@pytest.mark.parametrize("address", CONFUSIONS)
def test_parser_confusion_never_passes_the_check_for_another_domain(address):
    assert_not_smuggled(address)


def test_a_spoof_of_an_account_holder_on_another_domain_is_refused():
    # straße.de is xn--strae-oqa.de, not strasse.de: not the account holder's mailbox.
    assert not _passes_check("ceo@straße.de")
    assert not _passes_check("\u017fam@partner.example")
    assert _passes_check("CEO@Strasse.DE")
    assert ACCOUNTS.find("ceo@straße.de") is None


@pytest.fixture(scope="module")
def wire_server() -> Iterator[FaultyServer]:
    with FaultyServer() as server:
        yield server


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(address=st.one_of(near_approved, near_approved, hostile_address))  # 2/3 near misses
@example(address="a@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com")
@example(address="ünï@bücher.example")
@example(address="=?utf-8?q?a=40evil.example?=@example.com")
def test_an_address_that_passes_the_check_reaches_the_server_for_the_checked_domain(
    address, wire_server
):
    wire = assert_not_smuggled(address)
    if not wire:
        return
    before = dict(wire_server.rcpt_attempts)
    transport = nm.SmtpTransport(wire_server.settings())
    report = nm.Mailer(ALLOW_LIST, transport=transport, directory=ACCOUNTS).notify(
        nm.Notification([address], "Report", text="x\n")
    )
    assert report.ok
    arrived = {a for a, n in wire_server.rcpt_attempts.items() if n != before.get(a, 0)}
    assert arrived == set(wire)
    assert {a.rpartition("@")[2] for a in arrived} <= APPROVED_WIRE | {
        "strasse.de",
        "partner.example",
    }


# --- regressions found by the properties above ---

ENCODED_BREAK = "=?utf-8?q?=0D=0ABcc:_x@evil.example?="


@pytest.mark.parametrize(
    "build",
    [
        lambda: nm.Message(["ann@example.com"], ENCODED_BREAK, text="x"),
        lambda: nm.Message(["ann@example.com"], "s", text="x", headers={"X-Tag": ENCODED_BREAK}),
        lambda: nm.Message(
            ["ann@example.com"],
            "s",
            text="x",
            attachments=[nm.Attachment(ENCODED_BREAK, b"x", "application/pdf")],
        ),
    ],
    ids=["subject", "custom header", "attachment filename"],
)
def test_an_encoded_word_hiding_a_line_break_is_refused_before_sending(build):
    transport = nm.MemoryTransport()
    with pytest.raises(nm.InvalidMessage, match="encoded word"):
        nm.Mailer(nm.EmailSettings(sender=SENDER), transport=transport).send(build())
    assert transport.outbox == []


def test_a_from_name_with_an_encoded_word_hiding_a_line_break_is_refused_before_sending():
    sender = nm.SenderSettings(from_address="alerts@example.com", from_name=ENCODED_BREAK)
    transport = nm.MemoryTransport()
    with pytest.raises(nm.InvalidMessage, match="From"):
        nm.Mailer(nm.EmailSettings(sender=sender), transport=transport).send(
            nm.Message(["ann@example.com"], "s", text="x")
        )
    assert transport.outbox == []


def test_addresses_that_only_casefold_alike_are_different_recipients():
    settings_ = nm.EmailSettings(sender=SENDER, delivery=nm.DeliverySettings(bcc_enabled=False))
    batches = nm.plan_delivery(["ceo@strasse.de", "ceo@straße.de"], ACCOUNTS, settings_)
    assert [batch.recipients for batch in batches] == [("ceo@strasse.de",), ("ceo@straße.de",)]


ENCODED_LOCAL_PART = "=?utf-8?q?=0D=0ABcc=3A=20x=40evil=2Ecom?=@approved.example"


def test_a_recipient_whose_local_part_is_an_encoded_word_is_refused_before_anything_is_sent():
    # Under CC its To header would be refolded, and a reader decodes the encoded word.
    settings_ = nm.EmailSettings(sender=SENDER, delivery=nm.DeliverySettings(bcc_enabled=False))
    members = [f"member{index}@approved.example" for index in range(60)]
    directory = nm.InMemoryDirectory([nm.Person(email=a) for a in members])
    transport = nm.MemoryTransport()
    mailer = nm.Mailer(settings_, transport=transport, directory=directory)
    with pytest.raises(nm.InvalidMessage, match=r"recipients: .*encoded word"):
        mailer.notify(nm.Notification([*members, ENCODED_LOCAL_PART], "Report", text="x"))
    assert transport.outbox == []
    with pytest.raises(nm.RecipientNotAllowed, match="encoded word"):
        mailer.check_recipients(nm.Person(email=members[0]), [ENCODED_LOCAL_PART])


def test_one_recipient_needing_smtputf8_fails_alone_in_a_bcc_batch_without_it(smtp_server):
    server = smtp_server(smtputf8=False)
    holders = [f"member{index}@example.com" for index in range(5)]
    everyone = [*holders[:2], "jörg@example.com", *holders[2:]]
    directory = nm.InMemoryDirectory([nm.Person(email=address) for address in everyone])
    settings_ = nm.EmailSettings(sender=SENDER, smtp=server.settings())
    mailer = nm.Mailer(settings_, directory=directory, sleep=lambda seconds: None)

    report = mailer.notify(nm.Notification(everyone, "Weekly", text="Numbers"))

    assert sorted(report.accepted) == sorted(holders)
    assert list(report.failed) == ["jörg@example.com"]
    assert "SMTPUTF8" in str(report.failed["jörg@example.com"])
    (received,) = server.handler.messages
    assert sorted(received.recipients) == sorted(holders)
    assert b"undisclosed-recipients:;" in received.content
