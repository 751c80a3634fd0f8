"""One-click unsubscribe and List-Id on notifications (RFC 8058, RFC 2369, RFC 2919).

Read back with the standard library parser, as a mailbox provider would read them: the
URL literal in angle brackets, the one-click POST header beside it, one message per
recipient, never a shared BCC message.
"""

from __future__ import annotations

import email
import re
from email import policy

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import notifymail as nm
from notifymail._compose import compose, compose_notification

SENDER = nm.SenderSettings(from_address="alerts@bi.example.com", from_name="BI alerts")
HOLDERS = [f"member{index}@example.com" for index in range(7)]
DIRECTORY = nm.InMemoryDirectory([nm.Person(email=address) for address in HOLDERS])
# RFC 3986 unreserved and the query characters a signed link uses; never white space.
URL_CHARACTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~%=&/?"


def link(address: str) -> str:
    return f"https://bi.example.com/unsubscribe?email={address}&token=3q2-7w"


def notify(notification: nm.Notification, **delivery: object) -> nm.MemoryTransport:
    transport = nm.MemoryTransport()
    settings_ = nm.EmailSettings(sender=SENDER, delivery=nm.DeliverySettings(**delivery))  # type: ignore[arg-type]
    report = nm.Mailer(settings_, transport=transport, directory=DIRECTORY).notify(notification)
    assert report.ok
    return transport


def unsubscribe_headers(raw: bytes) -> tuple[str, str, list[bytes]]:
    """List-Unsubscribe and List-Unsubscribe-Post as the standard library reads them, and
    the raw header lines that hold them."""
    message = email.message_from_bytes(raw, policy=policy.default)
    assert len(message.get_all("List-Unsubscribe") or []) == 1
    assert len(message.get_all("List-Unsubscribe-Post") or []) == 1
    head = raw.partition(b"\r\n\r\n")[0]
    lines = [line for line in head.split(b"\r\n") if line.startswith(b"List-Unsubscribe")]
    return str(message["List-Unsubscribe"]), str(message["List-Unsubscribe-Post"]), lines


@pytest.mark.parametrize(("bcc_enabled", "per_message"), [(True, 50), (False, 50), (True, 0)])
def test_with_unsubscribe_every_recipient_gets_a_message_of_their_own(
    bcc_enabled: bool, per_message: int
) -> None:
    notification = nm.Notification(HOLDERS, "Weekly", text="Numbers", unsubscribe=link)
    transport = notify(
        notification, bcc_enabled=bcc_enabled, max_recipients_per_message=per_message
    )
    assert len(transport.outbox) == len(HOLDERS)
    for sent in transport.outbox:
        (recipient,) = sent.envelope.recipients
        assert sent.to == (recipient,)
        url, post, _ = unsubscribe_headers(sent.raw)
        assert url == f"<{link(recipient)}>"
        assert post == "List-Unsubscribe=One-Click"
        assert b"undisclosed-recipients" not in sent.raw


def test_compose_never_forms_a_shared_message_when_unsubscribe_is_set() -> None:
    notification = nm.Notification(HOLDERS, "Weekly", text="x", unsubscribe=link)
    batches = [nm.Batch(tuple(HOLDERS[:4]), hidden=True), nm.Batch(tuple(HOLDERS[4:]), False)]
    envelopes = compose_notification(notification, SENDER, batches)
    assert [e.recipients for e in envelopes] == [(address,) for address in HOLDERS]


@settings(max_examples=120, deadline=None)
@given(
    path=st.text(URL_CHARACTERS, min_size=0, max_size=480),
    host=st.sampled_from(["bi.example.com", "a.b", "unsubscribe.mail.example.org:8443"]),
)
def test_list_unsubscribe_reads_back_as_rfc_8058_asks_for_urls_of_20_to_500_characters(
    path: str, host: str
) -> None:
    url = f"https://{host}/{path}"[:500]
    if len(url) < 20:
        url += "x" * (20 - len(url))
    assume("=?" not in url)  # what a reader would decode as an encoded word: refused
    notification = nm.Notification(["ann@example.com"], "s", text="x", unsubscribe=lambda _: url)
    (envelope,) = compose_notification(
        notification, SENDER, [nm.Batch(("ann@example.com",), False)]
    )
    value, post, lines = unsubscribe_headers(envelope.raw)
    # RFC 2369: one URL in angle brackets, literal; RFC 8058: an https URI and the POST key.
    assert value == f"<{url}>"
    assert re.fullmatch(r"<https://[^<>\s]+>", value)
    assert post == "List-Unsubscribe=One-Click"
    # Never encoded (RFC 2047 words there make receivers ignore the header), never folded
    # inside the URL: it has no white space to fold at.
    assert lines == [
        f"List-Unsubscribe: <{url}>".encode(),
        b"List-Unsubscribe-Post: " + post.encode(),
    ]
    assert all(len(line) <= 998 for line in lines)


def test_list_id_is_written_in_angle_brackets() -> None:
    notification = nm.Notification(
        HOLDERS[:2], "s", text="x", unsubscribe=link, list_id="alerts.bi.example.com"
    )
    for sent in notify(notification).outbox:
        assert sent.message["List-Id"] == "<alerts.bi.example.com>"
        assert b"\r\nList-Id: <alerts.bi.example.com>\r\n" in sent.raw


def test_list_id_alone_keeps_batches() -> None:
    notification = nm.Notification(HOLDERS, "s", text="x", list_id="alerts.bi.example.com")
    (sent,) = notify(notification).outbox
    assert len(sent.envelope.recipients) == len(HOLDERS)
    assert sent.message["List-Id"] == "<alerts.bi.example.com>"
    assert "List-Unsubscribe" not in sent.message


def test_a_non_ascii_unsubscribe_url_is_percent_encoded() -> None:
    notification = nm.Notification(
        ["jürgen@bücher.example"],
        "s",
        text="x",
        unsubscribe=lambda a: f"https://bi.example.com/u/{a}",
    )
    (envelope,) = compose_notification(
        notification, SENDER, [nm.Batch(("jürgen@bücher.example",), False)]
    )
    value, _, _ = unsubscribe_headers(envelope.raw)
    assert value == "<https://bi.example.com/u/j%C3%BCrgen@b%C3%BCcher.example>"


@pytest.mark.parametrize(
    "url",
    [
        "http://bi.example.com/u",
        "mailto:unsubscribe@bi.example.com",
        "javascript:alert(1)",
        "https://",
        "https://bi.example.com/u x",
        "https://bi.example.com/u>, <https://evil.example/",
        "https://bi.example.com/=?utf-8?q?x?=",
        "https://bi.example.com/" + "a" * 1000,
        None,
    ],
)
def test_an_unsubscribe_url_that_is_not_one_https_url_is_refused_before_sending(
    url: object,
) -> None:
    transport = nm.MemoryTransport()
    mailer = nm.Mailer(nm.EmailSettings(sender=SENDER), transport=transport)
    notification = nm.Notification(["ann@example.com"], "s", text="x", unsubscribe=lambda _: url)
    with pytest.raises(nm.InvalidMessage, match="unsubscribe"):
        mailer.notify(notification)
    assert transport.outbox == []


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"unsubscribe": "https://bi.example.com/u"}, "unsubscribe: must be a callable"),
        ({"list_id": "alerts"}, "list_id"),
        ({"list_id": "alerts bi.example.com"}, "list_id"),
        ({"list_id": "alerts.bücher.example"}, "list_id"),
        (
            {"unsubscribe": link, "headers": {"List-Unsubscribe": "<https://x.example/u>"}},
            "List-Unsubscribe is made",
        ),
        ({"list_id": "a.example", "headers": {"list-id": "<b.example>"}}, "list-id is made"),
    ],
)
def test_invalid_unsubscribe_and_list_id_fields_are_refused(
    fields: dict[str, object], match: str
) -> None:
    with pytest.raises(nm.InvalidMessage, match=match):
        nm.Notification(["ann@example.com"], "s", text="x", **fields)  # type: ignore[arg-type]


def test_system_mail_never_gets_unsubscribe_headers() -> None:
    with pytest.raises(TypeError):
        nm.Message(["ann@example.com"], "Reset", text="x", unsubscribe=link)  # type: ignore[call-arg]
    envelope = compose(nm.Message(["ann@example.com"], "Reset", text="x"), SENDER)
    assert b"List-" not in envelope.raw
