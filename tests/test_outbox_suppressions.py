"""The suppression list at delivery time: an address suppressed after its notification
was enqueued (an unsubscribe, a hard bounce) is not sent the mail still in the outbox,
with both facades, a real SQLite file and a real SMTP server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

import notifymail as nm
from smtp_servers import RecordingHandler, SmtpServer, start_smtp_server

HOLDERS = ("ann@example.com", "bob@example.com", "cat@example.com")


def deliver(
    kind: str, server: SmtpServer, path: Path, suppressions: nm.Suppressions
) -> nm.DeliveryReport:
    """Deliver what ``path``'s outbox holds with a mailer of ``kind``."""
    settings = nm.EmailSettings(
        sender=nm.SenderSettings(from_address="alerts@example.com"), smtp=server.settings()
    )
    people = nm.InMemoryDirectory(nm.Person(address) for address in HOLDERS)
    with nm.SqliteOutbox(path) as outbox:
        if kind == "asyncio":
            amailer = nm.AsyncMailer(
                settings, directory=people, suppressions=suppressions, outbox=outbox
            )
            return asyncio.run(amailer.deliver_queued())
        mailer = nm.Mailer(settings, directory=people, suppressions=suppressions, outbox=outbox)
        return mailer.deliver_queued()


def enqueue(path: Path, notification: nm.Notification) -> nm.Queued:
    settings = nm.EmailSettings(sender=nm.SenderSettings(from_address="alerts@example.com"))
    people = nm.InMemoryDirectory(nm.Person(address) for address in HOLDERS)
    with nm.SqliteOutbox(path) as outbox:
        mailer = nm.Mailer(
            settings, transport=nm.MemoryTransport(), directory=people, outbox=outbox
        )
        return mailer.enqueue(notification)


def status(path: Path) -> nm.OutboxStatus:
    with nm.SqliteOutbox(path) as outbox:
        return outbox.status()


@pytest.fixture
def server() -> Iterator[tuple[SmtpServer, RecordingHandler]]:
    handler = RecordingHandler(offer_pipelining=True)
    running = start_smtp_server(handler=handler)
    yield running, handler
    running.stop()


@pytest.mark.parametrize("kind", ["blocking", "asyncio"])
def test_recipients_suppressed_after_enqueue_are_left_out_and_settled(
    kind: str, server: tuple[SmtpServer, RecordingHandler], tmp_path: Path
) -> None:
    smtp, handler = server
    path = tmp_path / "mail.db"
    queued = enqueue(
        path,
        nm.Notification(
            [*HOLDERS, "dee@partner.example", "eve@client.example"], "Drop", text="-12%"
        ),
    )
    assert (queued.envelopes, queued.recipients) == (3, 5)  # the holders share one envelope
    with nm.SqliteSuppressions(path) as suppressions:  # the outbox's own file
        suppressions.add("Bob@Example.com", "unsubscribed")  # one of an envelope's three
        suppressions.add("eve@client.example", "hard bounce")  # an envelope's only one
        report = deliver(kind, smtp, path, suppressions)
        again = deliver(kind, smtp, path, suppressions)

    assert sorted(report.accepted) == ["ann@example.com", "cat@example.com", "dee@partner.example"]
    assert sorted(report.suppressed) == ["bob@example.com", "eve@client.example"]
    assert report.ok
    assert not report.failed
    assert not report.refused
    assert sorted(address for _, address in handler.arrivals) == sorted(report.accepted)
    assert len(handler.messages) == 2  # eve's envelope never went out
    assert status(path) == nm.OutboxStatus(queued=0, deferred=0, sending=0, sent=3, dead=0)
    assert again == nm.DeliveryReport()  # settled: never tried again


@pytest.mark.parametrize("kind", ["blocking", "asyncio"])
def test_a_batch_whose_recipients_are_all_suppressed_is_settled_without_a_connection(
    kind: str, server: tuple[SmtpServer, RecordingHandler], tmp_path: Path
) -> None:
    smtp, handler = server
    path = tmp_path / "mail.db"
    enqueue(
        path, nm.Notification(["dee@partner.example", "eve@client.example"], "Drop", text="-12%")
    )
    suppressions = nm.InMemorySuppressions()
    suppressions.add("dee@partner.example", "unsubscribed")
    suppressions.add("eve@client.example", "unsubscribed")

    report = deliver(kind, smtp, path, suppressions)

    assert sorted(report.suppressed) == ["dee@partner.example", "eve@client.example"]
    assert report.accepted == ()
    assert report.deliveries == ()
    assert handler.connections == 0
    assert status(path) == nm.OutboxStatus(queued=0, deferred=0, sending=0, sent=2, dead=0)


def test_without_a_suppression_list_deliver_queued_sends_to_everyone_enqueued(
    server: tuple[SmtpServer, RecordingHandler], tmp_path: Path
) -> None:
    smtp, handler = server
    path = tmp_path / "mail.db"
    enqueue(path, nm.Notification(["dee@partner.example", *HOLDERS], "Drop", text="-12%"))
    settings = nm.EmailSettings(
        sender=nm.SenderSettings(from_address="alerts@example.com"), smtp=smtp.settings()
    )
    with nm.SqliteOutbox(path) as outbox:
        report = nm.Mailer(settings, outbox=outbox).deliver_queued()

    assert len(report.accepted) == 4
    assert report.suppressed == ()
    assert len(handler.arrivals) == 4


@pytest.mark.parametrize("kind", ["blocking", "asyncio"])
def test_a_5_1_1_refusal_of_queued_mail_joins_the_list_for_a_notification_only(
    kind: str, tmp_path: Path
) -> None:
    handler = RecordingHandler(
        refuse={
            "gone@partner.example": "550 5.1.1 No such user",
            "left@partner.example": "550 5.1.1 No such user",
        }
    )
    smtp = start_smtp_server(handler=handler)
    try:
        path = tmp_path / "mail.db"
        enqueue(path, nm.Notification(["gone@partner.example"], "Drop", text="-12%"))
        settings = nm.EmailSettings(sender=nm.SenderSettings(from_address="alerts@example.com"))
        with nm.SqliteOutbox(path) as outbox:
            mailer = nm.Mailer(settings, transport=nm.MemoryTransport(), outbox=outbox)
            mailer.enqueue(nm.Message(["left@partner.example"], "Reset", text="link"))
        suppressions = nm.InMemorySuppressions()

        report = deliver(kind, smtp, path, suppressions)
    finally:
        smtp.stop()

    assert sorted(report.refused) == ["gone@partner.example", "left@partner.example"]
    assert suppressions.is_suppressed("gone@partner.example")
    assert not suppressions.is_suppressed("left@partner.example")  # system mail: never
