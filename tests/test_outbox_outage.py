"""An SMTP outage seen through the outbox, against a real aiosmtpd server and a fake clock:
down (connection refused), then 421 for a while, then back. Every recipient gets the
message once, when the backoff schedule says; a 5xx recipient is never tried again."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import notifymail as nm
from facades import Facade
from smtp_servers import RecordingHandler, SmtpServer, free_port

MIN_BACKOFF, MAX_BACKOFF = 60.0, 600.0
JITTER = 0.1
EARLY = 0.01  # seconds before an attempt is due

HOLDERS = ["ann@example.com", "bob@example.com", "gone@example.com"]
OUTSIDERS = [f"guest{i}@example.org" for i in range(5)]


@dataclass
class CountingHandler(RecordingHandler):
    """Also counts RCPT TO commands per address."""

    rcpt_counts: Counter[str] = field(default_factory=Counter)

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.rcpt_counts[address] += 1
        return await super().handle_RCPT(server, session, envelope, address, options)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def received(handler: RecordingHandler) -> Counter[str]:
    return Counter(address for message in handler.messages for address in message.recipients)


def test_an_outage_delays_mail_by_the_backoff_schedule_and_loses_none(
    tmp_path: Path, smtp_server: Callable[..., SmtpServer], facade: Facade
) -> None:
    clock = Clock()
    port = free_port()  # nothing listens there yet: connection refused
    settings = nm.EmailSettings(
        sender=nm.SenderSettings(from_address="alerts@example.com"),
        smtp=nm.SmtpSettings(host="127.0.0.1", port=port, timeout=5.0),
    )
    directory = nm.InMemoryDirectory([nm.Person(email) for email in HOLDERS])
    outbox = nm.SqliteOutbox(
        tmp_path / "mail.db", clock=clock, min_backoff=MIN_BACKOFF, max_backoff=MAX_BACKOFF
    )
    smtp = settings.smtp
    transport = nm.AsyncSmtpTransport(smtp) if facade.is_async else nm.SmtpTransport(smtp)
    mailer = facade.mailer(settings, transport=transport, directory=directory, outbox=outbox)

    def wait_for_attempt(number: int) -> None:
        """Move the clock to just before attempt ``number`` may come, check that nothing
        is tried there, then to the latest moment it may come."""
        nominal = min(MIN_BACKOFF * 2 ** (number - 2), MAX_BACKOFF)
        start = clock.now
        clock.now = start + nominal - EARLY
        assert mailer.deliver_queued() == nm.DeliveryReport()
        clock.now = start + nominal * (1 + JITTER)

    with outbox:
        queued = mailer.enqueue(nm.Notification(HOLDERS + OUTSIDERS, "Alert", text="Down 5%"))
        assert (queued.envelopes, queued.recipients) == (6, 8)

        # Attempts 1 and 2: nothing listens; one refused connection defers all six.
        assert mailer.deliver_queued() == nm.DeliveryReport()
        assert outbox.status().deferred == 6
        wait_for_attempt(2)
        assert mailer.deliver_queued() == nm.DeliveryReport()

        # Attempt 3: the server is up and answers 421.
        handler = CountingHandler(mail_reply="421 4.3.2 System not accepting messages")
        smtp_server(handler=handler, port=port)
        wait_for_attempt(3)
        assert handler.connections == 0  # nothing was tried before its time
        assert mailer.deliver_queued() == nm.DeliveryReport()
        assert handler.connections >= 1
        assert handler.messages == []

        # Attempt 4: recovered; bob's mailbox is busy for now and gone's does not exist.
        handler.mail_reply = None
        handler.refuse = {
            "bob@example.com": "450 4.2.1 Mailbox busy",
            "gone@example.com": "550 5.1.1 No such user",
        }
        connections = handler.connections
        wait_for_attempt(4)
        assert handler.connections == connections
        report = mailer.deliver_queued()
        assert sorted(report.accepted) == sorted(["ann@example.com", *OUTSIDERS])
        assert dict(report.refused) == {"gone@example.com": nm.Reply(550, "5.1.1 No such user")}
        assert report.failed == {}
        assert outbox.status() == nm.OutboxStatus(queued=0, deferred=1, sending=0, sent=5, dead=0)

        # Attempt 5 of the shared envelope: bob alone.
        del handler.refuse["bob@example.com"]
        wait_for_attempt(5)
        assert mailer.deliver_queued().accepted == ("bob@example.com",)

        clock.now += 7 * 86400.0
        assert mailer.deliver_queued() == nm.DeliveryReport()
        assert outbox.status() == nm.OutboxStatus(queued=0, deferred=0, sending=0, sent=6, dead=0)

    assert received(handler) == Counter(
        dict.fromkeys(["ann@example.com", "bob@example.com", *OUTSIDERS], 1)
    )
    assert handler.rcpt_counts["gone@example.com"] == 1
    assert handler.rcpt_counts["ann@example.com"] == 1
    assert handler.rcpt_counts["bob@example.com"] == 2
