"""MemoryTransport and its asyncio twin: the outbox, what a Sent holds, and scripted failures."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import pytest

import notifymail as nm
from facades import memory_transport
from notifymail._compose import compose, compose_notification
from notifymail.policy import Batch

SENDER = nm.SenderSettings(from_address="noreply@example.com", from_name="Acme")


@pytest.fixture(params=["blocking", "asyncio"])
def memory(request: pytest.FixtureRequest) -> Callable[[], Any]:
    """Makes fresh memory transports of one kind (both have the same contract)."""
    return lambda: memory_transport(request.param)


def envelope(*to: str, **fields: object) -> nm.Envelope:
    message = nm.Message(
        to=list(to or ["ann@example.com"]),
        subject=str(fields.pop("subject", "Hi")),
        text=fields.pop("text", "Hello"),  # type: ignore[arg-type]
        **fields,  # type: ignore[arg-type]
    )
    return compose(message, SENDER)


def test_each_transport_has_its_own_outbox(memory: Callable[[], Any]) -> None:
    first, second = memory(), memory()
    first.send(envelope())
    assert len(first.outbox) == 1
    assert second.outbox == []


def test_deliver_accepts_everyone_and_records_the_envelope(memory: Callable[[], Any]) -> None:
    transport = memory()
    sent_envelope = envelope("ann@example.com", cc=["bob@example.com"], bcc=["cat@example.com"])
    delivery = transport.send(sent_envelope)
    assert delivery.ok
    assert delivery.message_id == sent_envelope.message_id
    assert delivery.accepted == ("ann@example.com", "bob@example.com", "cat@example.com")
    (sent,) = transport.outbox
    assert sent.envelope is sent_envelope
    assert sent.raw == sent_envelope.raw


def test_sent_fields_read_the_message_back(memory: Callable[[], Any]) -> None:
    transport = memory()
    transport.send(
        envelope(
            "ann@bücher.de",
            "bob@example.com",
            cc=["cat@example.com"],
            bcc=["dan@example.com"],
            subject="Grüße",
            text="Plain ü",
            html="<p>Rich</p>",
        )
    )
    (sent,) = transport.outbox
    assert sent.to == ("ann@bücher.de", "bob@example.com")
    assert sent.cc == ("cat@example.com",)
    assert sent.recipients == (
        "ann@bücher.de",
        "bob@example.com",
        "cat@example.com",
        "dan@example.com",
    )
    assert sent.subject == "Grüße"
    assert sent.text == "Plain ü\n"
    assert sent.html == "<p>Rich</p>\n"
    assert sent.message["Message-ID"] == sent.envelope.message_id
    assert "Bcc" not in sent.message


def test_sent_body_is_none_when_the_message_lacks_it(memory: Callable[[], Any]) -> None:
    transport = memory()
    transport.send(envelope(text=None, html="<p>only html</p>"))
    (sent,) = transport.outbox
    assert sent.text is None
    assert sent.html == "<p>only html</p>\n"


def test_sent_of_a_hidden_batch_has_no_to_addresses(memory: Callable[[], Any]) -> None:
    notification = nm.Notification(["ann@example.com", "bob@example.com"], "N", text="x")
    (hidden,) = compose_notification(
        notification, SENDER, [Batch(("ann@example.com", "bob@example.com"), hidden=True)]
    )
    transport = memory()
    transport.send(hidden)
    (sent,) = transport.outbox
    assert sent.to == ()
    assert sent.cc == ()
    assert sent.recipients == ("ann@example.com", "bob@example.com")


def test_smtputf8_headers_read_back_as_text(memory: Callable[[], Any]) -> None:
    transport = memory()
    transport.send(envelope("jösé@example.com", subject="Olé"))
    (sent,) = transport.outbox
    assert sent.envelope.needs_smtputf8
    assert sent.to == ("jösé@example.com",)
    assert sent.message["To"].addresses[0].username == "jösé"
    assert sent.subject == "Olé"


def test_clear_empties_the_outbox_in_place(memory: Callable[[], Any]) -> None:
    transport = memory()
    outbox = transport.outbox
    transport.send(envelope())
    transport.clear()
    assert transport.outbox is outbox
    assert outbox == []


def test_concurrent_sends_from_threads_are_all_recorded() -> None:
    transport = nm.MemoryTransport()
    envelopes = [envelope(f"user{i}@example.com") for i in range(80)]
    start = threading.Barrier(8)

    def work(share: list[nm.Envelope]) -> None:
        start.wait()
        for item in share:
            transport.send(item)

    threads = [threading.Thread(target=work, args=(envelopes[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(s.recipients[0] for s in transport.outbox) == sorted(
        e.recipients[0] for e in envelopes
    )


def test_fail_next_raises_for_that_many_envelopes_then_delivers(memory: Callable[[], Any]) -> None:
    transport = memory()
    transport.fail_next(nm.ConnectionFailed("connection refused"), times=2)
    for _ in range(2):
        with pytest.raises(nm.ConnectionFailed, match="connection refused") as info:
            transport.send(envelope())
        assert info.value.retryable
    assert transport.outbox == []
    assert transport.send(envelope()).ok
    assert len(transport.outbox) == 1


def test_fail_next_error_keeps_its_reply(memory: Callable[[], Any]) -> None:
    transport = memory()
    reply = nm.Reply(451, "4.3.0 try later")
    transport.fail_next(nm.TemporaryFailure("451 try later", reply=reply))
    with pytest.raises(nm.TemporaryFailure) as info:
        transport.send(envelope())
    assert info.value.reply == reply


def test_fail_next_in_send_many_reports_the_deliveries_before_it(
    memory: Callable[[], Any],
) -> None:
    transport = memory()
    transport.send(envelope())
    transport.fail_next(nm.PermanentFailure("554 rejected"))
    with pytest.raises(nm.PermanentFailure) as info:
        transport.send_many([envelope(), envelope()])
    assert info.value.deliveries == ()
    assert len(transport.outbox) == 1


def test_fail_next_refuses_a_non_positive_count(memory: Callable[[], Any]) -> None:
    with pytest.raises(ValueError, match="times"):
        memory().fail_next(nm.ConnectionFailed("x"), times=0)


def test_concurrent_sends_from_tasks_are_all_recorded() -> None:
    transport = nm.AsyncMemoryTransport()
    envelopes = [envelope(f"user{i}@example.com") for i in range(80)]

    async def main() -> None:
        async def work(share: list[nm.Envelope]) -> None:
            for item in share:
                await transport.send(item)

        await asyncio.gather(*(work(envelopes[i::8]) for i in range(8)))

    asyncio.run(main())
    assert sorted(s.recipients[0] for s in transport.outbox) == sorted(
        e.recipients[0] for e in envelopes
    )


def test_refuse_partially_returns_the_refusals_case_insensitively(
    memory: Callable[[], Any],
) -> None:
    transport = memory()
    transport.refuse("BOB@Example.com")
    delivery = transport.send(envelope("ann@example.com", "bob@example.com"))
    assert not delivery.ok
    assert delivery.accepted == ("ann@example.com",)
    assert delivery.refused == {"bob@example.com": nm.Reply(550, "5.1.1 No such user")}
    (sent,) = transport.outbox
    assert sent.recipients == ("ann@example.com",)
    assert sent.to == ("ann@example.com", "bob@example.com")


def test_refusing_everyone_with_5xx_is_a_permanent_failure(memory: Callable[[], Any]) -> None:
    transport = memory()
    transport.refuse("ann@example.com")
    with pytest.raises(nm.PermanentFailure) as info:
        transport.send(envelope("ann@example.com"))
    assert info.value.reply == nm.Reply(550, "5.1.1 No such user")
    assert not info.value.retryable
    assert transport.outbox == []


def test_refusing_everyone_with_4xx_is_a_temporary_failure(memory: Callable[[], Any]) -> None:
    transport = memory()
    busy = nm.Reply(452, "4.2.2 Mailbox full")
    transport.refuse("ann@example.com", "bob@example.com", reply=busy)
    with pytest.raises(nm.TemporaryFailure) as info:
        transport.send(envelope("ann@example.com", "bob@example.com"))
    assert info.value.reply == busy
    assert info.value.retryable
    assert info.value.refused == {"ann@example.com": busy, "bob@example.com": busy}


def test_refuse_applies_to_every_later_envelope(memory: Callable[[], Any]) -> None:
    transport = memory()
    transport.refuse("bob@example.com")
    for _ in range(3):
        delivery = transport.send(envelope("ann@example.com", "bob@example.com"))
        assert list(delivery.refused) == ["bob@example.com"]


@pytest.mark.parametrize(
    "address",
    ["bad@x.com\r\nRSET", "a@b.com> NOTIFY=NEVER", "a b@example.com", "", "a@b.com\x00"],
)
def test_an_envelope_refuses_addresses_that_would_break_an_smtp_command(address: str) -> None:
    with pytest.raises(nm.InvalidMessage, match="cannot go in MAIL FROM or RCPT TO"):
        nm.Envelope("ann@example.com", (address,), EmailMessage())
    with pytest.raises(nm.InvalidMessage):
        nm.Envelope(address, ("ann@example.com",), EmailMessage())


def test_sent_attachments_read_back_files_and_inline_images() -> None:
    logo = nm.Attachment("logo.png", b"\x89PNG\r\n\x1a\n", "image/png", content_id="<logo@acme>")
    report = nm.Attachment("Résumé «final».csv", "a,b\n€,1\n".encode(), "text/csv")
    binary = nm.Attachment("data.bin", bytes(range(256)), "application/octet-stream")
    transport = nm.MemoryTransport()
    transport.send(envelope(html='<img src="cid:logo@acme">', attachments=[logo, report, binary]))
    (sent,) = transport.outbox
    assert set(sent.attachments) == {logo, report, binary}
    (inline,) = [a for a in sent.attachments if a.inline]
    assert inline.content_id == "logo@acme"
    assert sent.html == '<img src="cid:logo@acme">\n'


def test_sent_attachments_is_empty_without_files() -> None:
    transport = nm.MemoryTransport()
    transport.send(envelope())
    assert transport.outbox[0].attachments == ()
