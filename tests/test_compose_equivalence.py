"""The fast composition path writes a message that reads as the email package's own would.

Composition writes headers and MIME parts itself (bodies and shared headers written once)
instead of going through the email package's folder and generator. These tests build the
same message the slow, ordinary way (``EmailMessage``, ``set_content``,
``add_alternative``) and check that the standard library reads both to the same parts;
the headers are checked against the values given, which the email package's own folder
does not always give back (a leading space, a space between encoded words: see
test_headers).
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
from notifymail._readback import read_back
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


def headers_of(raw: bytes) -> dict[str, str]:
    message = email.message_from_bytes(raw, policy=policy.default)
    return {name: str(value) for name, value in message.items()}


def leaves(raw: bytes) -> list[tuple[str, str | None, object]]:
    """What the standard library reads in ``raw``: the structure and each leaf, decoded,
    line ends as a mail client stores them."""
    message = email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=policy.default)
    return [
        (
            part.get_content_type(),
            None if part.is_multipart() else str(part.get_param("charset")),
            None if part.is_multipart() else part.get_content(),
        )
        for part in message.walk()
    ]


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
def test_fast_path_reads_back_as_given_with_the_email_packages_parts(  # noqa: PLR0917
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
    sender = nm.SenderSettings(
        from_address="reports@example.com", from_name=from_name or None, reply_to=tuple(reply_to)
    )
    try:
        message = nm.Message(to=to, subject=subject, text=text, html=html, headers=custom)
        envelope = compose(message, sender)
    except nm.InvalidMessage:
        return  # an encoded word that decodes to a control character: refused, not composed
    slow = slow_path(
        envelope,
        sender,
        to=message.to,
        subject=subject,
        text=text,
        html=html,
        headers=dict(message.headers),
    )
    assert leaves(envelope.raw) == leaves(slow)
    read = read_back(envelope)
    assert read["Subject"] == subject
    for name, value in custom.items():
        assert read[name] == value
    (sent_from,) = read["From"].addresses
    assert sent_from.addr_spec == "reports@example.com"
    assert sent_from.display_name.split() == (from_name or "").split()
    for name, expected in (("To", message.to), ("Reply-To", sender.reply_to)):
        got = [a.addr_spec for a in read[name].addresses] if expected else []
        assert got == [wire(a, envelope.needs_smtputf8) for a in expected]
    assert read["Message-ID"] == envelope.message_id


def wire(address: str, utf8: bool) -> str:
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain if utf8 else ascii_domain(domain)}"


@settings(max_examples=60, deadline=None)
@given(
    recipients=st.lists(addresses, min_size=1, max_size=6, unique_by=str.lower),
    hidden=st.booleans(),
    subject=TEXT,
    html=BODY,
)
def test_every_envelope_of_a_notification_reads_back_with_the_same_parts(
    recipients: list[str], hidden: bool, subject: str, html: str
) -> None:
    sender = nm.SenderSettings(from_address="alerts@example.com", from_name="Alerts")
    notification = nm.Notification(recipients, subject or "s", text="Hello\n", html=html)
    batches = [nm.Batch((address,), hidden=False) for address in notification.recipients]
    batches.append(nm.Batch(notification.recipients, hidden=hidden))
    envelopes = compose_notification(notification, sender, batches)
    for envelope in envelopes:
        read = headers_of(envelope.raw)
        assert read["Message-ID"] == envelope.message_id
        assert read["Subject"] == (subject or "s")
    # The body is shared: every envelope carries the same parts.
    assert len({repr(leaves(envelope.raw)) for envelope in envelopes}) == 1


@given(st.binary(max_size=200).map(lambda data: data.replace(b"\x00", b"")))
def test_an_envelopes_bytes_dot_stuffed_match_smtplib(data: bytes) -> None:
    expected = smtplib.quotedata(data.decode("latin-1")).encode("latin-1")
    if not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    raw = nm.Envelope(sender="a@example.com", recipients=["b@example.com"], raw=data).raw
    assert _dot_stuffed(raw) == expected


def _bare_line_ends(raw: bytes) -> int:
    """How many CRs and LFs in ``raw`` are not in a CRLF pair."""
    pairs = raw.count(b"\r\n")
    return raw.count(b"\r") - pairs + raw.count(b"\n") - pairs


_MIXED_LINES = st.lists(
    st.tuples(
        st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\r\n"), max_size=20),
        st.sampled_from(["\r", "\n", "\r\n", ""]),
    ),
    max_size=8,
).map(lambda pairs: "".join(line + end for line, end in pairs))


@settings(max_examples=60)
@given(text=_MIXED_LINES, html=_MIXED_LINES)
def test_every_way_of_making_an_envelope_leaves_no_bare_cr_or_lf(text: str, html: str) -> None:
    sender = nm.SenderSettings(from_address="alerts@example.com")
    notification = nm.Notification(["ann@example.net"], "s", text=text or ".", html=html or None)
    (composed,) = compose_notification(
        notification, sender, [nm.Batch(("ann@example.net",), hidden=False)]
    )
    message = EmailMessage()
    message["From"] = "alerts@example.com"
    message.set_content((text or ".").encode("utf-8"), "application", "octet-stream", cte="8bit")
    built = nm.Envelope(
        sender="alerts@example.com", recipients=["ann@example.net"], message=message
    )
    given_raw = nm.Envelope(
        sender="alerts@example.com", recipients=["ann@example.net"], raw=(text + html).encode()
    )

    for envelope in (composed, built, given_raw):
        assert _bare_line_ends(envelope.raw) == 0
