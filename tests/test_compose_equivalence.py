"""The fast composition path writes what the email package's own API would.

Composition skips the email package's header parsing and generator wherever it can (plain
header values stored as text, bodies and shared headers serialised once). These tests
build the same message the slow, ordinary way (``EmailMessage``, ``set_content``,
``add_alternative``, header objects) and check that the standard library parses both to
the same headers and parts, and that the bytes sent are the message's own serialisation.
"""

from __future__ import annotations

import email
import smtplib
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage

from hypothesis import given, settings
from hypothesis import strategies as st

import notifymail as nm
from notifymail._address import ascii_domain
from notifymail._compose import compose, compose_notification
from notifymail.protocol import _dot_stuffed

LOCAL_PARTS = ["ann", "Ann.Lee", "o'neil+tag", "x_y=z", "jösé"]
DOMAINS = ["example.com", "EXAMPLE.org", "mail-1.example.co.uk", "bücher.de", "xn--bcher-kva.de"]
NAMES = [
    "",
    "Example Reports",
    "Reports, Inc.",
    'Say "hi"',
    "Ünï Reports",
    "=?utf-8?q?Encoded?=",
    "Long " * 20,
    "a  b",
]
# Printable text with spaces, non-ASCII and encoded-word look-alikes; no control characters.
TEXT = st.lists(
    st.sampled_from([*"abcXYZ 019.,:;<>@\"'()=?-_", "=?", "ü", "€", "日"]), max_size=60
).map("".join)
BODY = st.one_of(
    st.lists(st.sampled_from([*"ab c.\n", "ü", "€", "=", "\t", "=?"]), max_size=400).map("".join),
    st.builds(lambda line, n: (line + "\n") * n, st.text("ab ", max_size=120), st.integers(0, 30)),
    # around the 78-character line limit that decides between 7bit and an encoding
    st.builds(lambda n, c: c * n + "\n", st.integers(70, 90), st.sampled_from(["a", "ü", "="])),
)

addresses = st.builds(
    lambda local, domain: f"{local}@{domain}",
    st.sampled_from(LOCAL_PARTS),
    st.sampled_from(DOMAINS),
)


def summary(raw: bytes) -> tuple[list[tuple[str, str]], list[tuple[str, str | None, str, object]]]:
    """What the standard library reads in ``raw``: headers (boundaries aside) and leaf parts."""
    message = email.message_from_bytes(raw, policy=policy.default)
    headers = sorted(
        (name, str(value))
        for name, value in message.items()
        if name.lower() not in ("content-type", "date", "message-id")
    )
    leaves = [
        (
            part.get_content_type(),
            part.get("Content-Transfer-Encoding"),
            str(part.get_param("charset")),
            part.get_payload(),
        )
        for part in message.walk()
        if not part.is_multipart()
    ]
    structure = [(part.get_content_type(), "", "", None) for part in message.walk()]
    return headers, structure + leaves


def slow_path(
    envelope: nm.Envelope,
    sender: nm.SenderSettings,
    *,
    to: tuple[str, ...],
    subject: str,
    text: str | None,
    html: str | None,
    headers: dict[str, str],
) -> bytes:
    """The same message, composed with the email package's ordinary API."""
    utf8 = envelope.needs_smtputf8

    def address(value: str, display_name: str = "") -> Address:
        local, _, domain = value.rpartition("@")
        return Address(display_name, local, domain if utf8 else ascii_domain(domain))

    message = EmailMessage(policy=policy.default.clone(cte_type="7bit"))
    message["From"] = address(sender.from_address, sender.from_name or "")
    message["To"] = [address(a) for a in to]
    if sender.reply_to:
        message["Reply-To"] = [address(a) for a in sender.reply_to]
    message["Subject"] = subject
    message["Date"] = envelope.message["Date"]
    message["Message-ID"] = envelope.message_id
    for name, value in headers.items():
        message[name] = value
    message["MIME-Version"] = "1.0"
    if text is not None:
        message.set_content(text)
        if html is not None:
            message.add_alternative(html, subtype="html")
    else:
        assert html is not None
        message.set_content(html, subtype="html")
    return message.as_bytes(policy=policy.SMTPUTF8 if utf8 else policy.SMTP)


def wire_policy(envelope: nm.Envelope) -> policy.EmailPolicy:
    return policy.SMTPUTF8 if envelope.needs_smtputf8 else policy.SMTP


@settings(max_examples=250, deadline=None)
@given(
    to=st.lists(addresses, min_size=1, max_size=3, unique_by=str.lower),
    from_name=st.sampled_from(NAMES),
    reply_to=st.lists(addresses, max_size=2),
    subject=st.one_of(TEXT, st.sampled_from(["Weekly report", "x" * 100, "a  b ", " lead"])),
    text=st.one_of(st.none(), BODY),
    html=st.one_of(st.none(), BODY),
    custom=st.one_of(st.just({}), st.builds(lambda v: {"X-Tag": v}, TEXT)),
)
def test_fast_path_parses_to_the_same_headers_and_parts_as_the_email_package(  # noqa: PLR0917
    to: list[str],
    from_name: str,
    reply_to: list[str],
    subject: str,
    text: str | None,
    html: str | None,
    custom: dict[str, str],
) -> None:
    if text is None and html is None:
        text = ""
    if custom.get("X-Tag", "x").strip() == "":
        custom = {}
    sender = nm.SenderSettings(
        from_address="reports@example.com", from_name=from_name or None, reply_to=tuple(reply_to)
    )
    try:
        message = nm.Message(to=to, subject=subject, text=text, html=html, headers=custom)
        envelope = compose(message, sender)
    except nm.InvalidMessage:
        return  # an encoded word that decodes to a control character: refused, not composed
    assert envelope.raw == envelope.message.as_bytes(policy=wire_policy(envelope))
    slow = slow_path(
        envelope,
        sender,
        to=message.to,
        subject=subject,
        text=text,
        html=html,
        headers=dict(message.headers),
    )
    assert summary(envelope.raw) == summary(slow)


@settings(max_examples=60, deadline=None)
@given(
    recipients=st.lists(addresses, min_size=1, max_size=6, unique_by=str.lower),
    hidden=st.booleans(),
    subject=TEXT,
    html=BODY,
)
def test_every_envelope_of_a_notification_is_its_messages_own_serialisation(
    recipients: list[str], hidden: bool, subject: str, html: str
) -> None:
    sender = nm.SenderSettings(from_address="alerts@example.com", from_name="Alerts")
    notification = nm.Notification(recipients, subject or "s", text="Hello\n", html=html)
    batches = [nm.Batch((address,), hidden=False) for address in notification.recipients]
    batches.append(nm.Batch(notification.recipients, hidden=hidden))
    envelopes = compose_notification(notification, sender, batches)
    for envelope in envelopes:
        assert envelope.raw == envelope.message.as_bytes(policy=wire_policy(envelope))
        parsed = email.message_from_bytes(envelope.raw, policy=policy.default)
        assert parsed["Message-ID"] == envelope.message_id
    # The body is shared: every envelope carries the same parts.
    bodies = {summary(envelope.raw)[1].__repr__() for envelope in envelopes}
    assert len(bodies) == 1


@given(st.binary(max_size=200).map(lambda data: data.replace(b"\x00", b"")))
def test_dot_stuffing_matches_smtplib(data: bytes) -> None:
    expected = smtplib.quotedata(data.decode("latin-1")).encode("latin-1")
    if not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    assert _dot_stuffed(data) == expected
