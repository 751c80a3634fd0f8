"""Mailer(..., suppressions=...) and AsyncMailer's (SPEC.md section 11): suppressed addresses
never reach RCPT, hard bounces join the list, and system mail ignores it; seen from a real
SMTP server. Each test runs once per facade (the ``facade`` fixture)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import notifymail as nm
from facades import Driven, Facade
from smtp_servers import RecordingHandler, SmtpServer

HOLDERS = ("ann@example.com", "bob@example.com", "cat@example.com")
OUTSIDERS = ("dee@partner.example", "eve@client.example")
NO_SUCH_USER = "550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown"


StartServer = Callable[..., SmtpServer]


def mailer_for(facade: Facade, server: SmtpServer, suppressions: nm.Suppressions | None) -> Driven:
    settings = nm.EmailSettings(
        sender=nm.SenderSettings(from_address="alerts@example.com"),
        smtp=server.settings(),
        delivery=nm.DeliverySettings(retry=nm.RetryPolicy(max_attempts=1)),
    )
    people = nm.InMemoryDirectory(nm.Person(address) for address in HOLDERS)
    return facade.mailer(
        settings,
        transport=nm.SmtpTransport(server.settings()),
        directory=people,
        suppressions=suppressions,
    )


def alert(*recipients: str) -> nm.Notification:
    return nm.Notification(list(recipients), "Revenue dropped", text="Revenue dropped 12%.")


def rcpt_server(smtp_server: StartServer, **refuse: str) -> tuple[SmtpServer, RecordingHandler]:
    handler = RecordingHandler(refuse=dict(refuse))
    return smtp_server(handler=handler), handler


def rcpt_to(handler: RecordingHandler) -> list[str]:
    """Every address the server was given in RCPT TO, in order."""
    return [address for _, address in handler.arrivals]


def test_suppressed_addresses_never_reach_the_servers_rcpt(
    facade: Facade, smtp_server: StartServer
) -> None:
    server, handler = rcpt_server(smtp_server)
    suppressions = nm.InMemorySuppressions()
    suppressions.add("ANN@example.com", "unsubscribed")
    suppressions.add("dee@partner.example", "unsubscribed")

    report = mailer_for(facade, server, suppressions).notify(alert(*HOLDERS, *OUTSIDERS))

    assert "ann@example.com" not in rcpt_to(handler)
    assert "dee@partner.example" not in rcpt_to(handler)
    assert sorted(rcpt_to(handler)) == ["bob@example.com", "cat@example.com", OUTSIDERS[1]]
    assert report.suppressed == ("ann@example.com", "dee@partner.example")
    assert sorted(report.accepted) == ["bob@example.com", "cat@example.com", OUTSIDERS[1]]
    assert report.ok


def test_a_notification_to_suppressed_addresses_only_opens_no_connection(
    facade: Facade,
    smtp_server: StartServer,
) -> None:
    server, handler = rcpt_server(smtp_server)
    suppressions = nm.InMemorySuppressions()
    suppressions.add("ann@example.com", "unsubscribed")

    report = mailer_for(facade, server, suppressions).notify(
        alert("Ann@Example.com", "ann@example.com")
    )

    assert handler.connections == 0
    assert handler.commands == []
    assert report.suppressed == ("Ann@example.com",)
    assert report.accepted == ()
    assert report.deliveries == ()


def test_a_refusal_with_status_5_1_1_adds_the_address_as_a_hard_bounce(
    facade: Facade,
    smtp_server: StartServer,
) -> None:
    server, handler = rcpt_server(smtp_server, **{"gone@example.com": NO_SUCH_USER})
    suppressions = nm.InMemorySuppressions()
    mailer = mailer_for(facade, server, suppressions)

    first = mailer.notify(alert("ann@example.com", "gone@example.com"))
    handler.arrivals.clear()
    second = mailer.notify(alert("ann@example.com", "gone@example.com"))

    assert first.refused["gone@example.com"].code == 550
    assert suppressions.reason("gone@example.com") == "hard bounce"
    assert rcpt_to(handler) == ["ann@example.com"]
    assert second.suppressed == ("gone@example.com",)
    assert second.accepted == ("ann@example.com",)


@pytest.mark.parametrize(
    "reply",
    [
        "550 5.7.1 Message rejected as spam",
        "550 No such user here",  # no enhanced status: not certain enough
        "452 4.2.2 Mailbox full",
        "550 5.1.10 Recipient address has null MX",
        "553 5.1.3 Bad destination address syntax",
    ],
)
def test_other_refusals_leave_the_list_alone(
    facade: Facade, smtp_server: StartServer, reply: str
) -> None:
    server, _ = rcpt_server(smtp_server, **{"gone@example.com": reply})
    suppressions = nm.InMemorySuppressions()

    report = mailer_for(facade, server, suppressions).notify(
        alert("ann@example.com", "gone@example.com")
    )

    assert "gone@example.com" in report.refused
    assert not suppressions.is_suppressed("gone@example.com")


def test_a_hard_bounce_of_an_envelope_refused_whole_is_recorded(
    facade: Facade,
    smtp_server: StartServer,
) -> None:
    server, _ = rcpt_server(smtp_server, **{"gone@example.com": NO_SUCH_USER})
    suppressions = nm.InMemorySuppressions()

    report = mailer_for(facade, server, suppressions).notify(alert("gone@example.com"))

    assert "gone@example.com" in report.refused
    assert suppressions.reason("gone@example.com") == "hard bounce"


def test_send_ignores_the_suppression_list(facade: Facade, smtp_server: StartServer) -> None:
    server, handler = rcpt_server(smtp_server, **{"gone@example.com": NO_SUCH_USER})
    suppressions = nm.InMemorySuppressions()
    suppressions.add("ann@example.com", "unsubscribed")
    mailer = mailer_for(facade, server, suppressions)

    report = mailer.send(
        nm.Message(["ann@example.com", "gone@example.com"], "Reset your password", text="Here.")
    )

    assert rcpt_to(handler) == ["ann@example.com", "gone@example.com"]
    assert report.accepted == ("ann@example.com",)
    assert report.suppressed == ()
    assert not suppressions.is_suppressed("gone@example.com")  # nor does it write to it


def test_every_recipient_is_in_exactly_one_of_the_four_buckets(
    facade: Facade,
    smtp_server: StartServer,
) -> None:
    server, handler = rcpt_server(smtp_server, **{"bob@example.com": NO_SUCH_USER})
    # Account holders share the first envelope; each outsider has one of their own, and
    # the first outsider's is refused at the end of DATA: failed, not refused.
    handler.data_replies = ["250 OK", "554 5.6.0 Message rejected"]
    suppressions = nm.InMemorySuppressions()
    suppressions.add("cat@example.com", "unsubscribed")
    everyone = (*HOLDERS, *OUTSIDERS)

    report = mailer_for(facade, server, suppressions).notify(alert(*everyone))

    buckets = [set(report.accepted), set(report.refused), set(report.failed)]
    buckets.append(set(report.suppressed))
    assert buckets == [
        {"ann@example.com", OUTSIDERS[1]},
        {"bob@example.com"},
        {OUTSIDERS[0]},
        {"cat@example.com"},
    ]
    assert sum(len(bucket) for bucket in buckets) == len(everyone)


def test_the_list_is_asked_once_per_address(facade: Facade) -> None:
    asked: list[str] = []

    class CountingSuppressions(nm.InMemorySuppressions):
        def is_suppressed(self, address: str) -> bool:
            asked.append(address)
            return super().is_suppressed(address)

    transport = nm.MemoryTransport()
    settings = nm.EmailSettings(sender=nm.SenderSettings(from_address="alerts@example.com"))
    mailer = facade.mailer(settings, transport=transport, suppressions=CountingSuppressions())

    mailer.notify(alert("ann@example.com", "Ann@example.com", "bob@example.com"))

    assert asked == ["ann@example.com", "bob@example.com"]
    assert sorted(sent.recipients[0] for sent in transport.outbox) == [
        "ann@example.com",
        "bob@example.com",
    ]


def test_a_list_that_cannot_be_written_is_logged_and_the_report_still_returned(
    facade: Facade, smtp_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    class ReadOnlySuppressions(nm.InMemorySuppressions):
        def add(self, address: str, reason: str) -> None:
            raise OSError("read-only file system")

    server, _ = rcpt_server(smtp_server, **{"gone@example.com": NO_SUCH_USER})
    mailer = mailer_for(facade, server, ReadOnlySuppressions())

    with caplog.at_level(logging.WARNING, logger="notifymail"):
        report = mailer.notify(alert("ann@example.com", "gone@example.com"))

    assert report.accepted == ("ann@example.com",)
    assert "gone@example.com" in report.refused
    assert any(
        "gone@example.com" in record.getMessage() and "read-only" in record.getMessage()
        for record in caplog.records
    )


def test_an_sqlite_list_shared_by_two_mailers_stops_mail_at_once(
    facade: Facade, smtp_server: StartServer, tmp_path: Path
) -> None:
    server, handler = rcpt_server(smtp_server)
    path = tmp_path / "mail.db"
    with nm.SqliteSuppressions(path) as web, nm.SqliteSuppressions(path) as worker:
        mailer = mailer_for(facade, server, worker)
        web.add("bob@example.com", "unsubscribed from alerts")  # the unsubscribe endpoint

        report = mailer.notify(alert(*HOLDERS))

    assert report.suppressed == ("bob@example.com",)
    assert "bob@example.com" not in rcpt_to(handler)
    assert sorted(rcpt_to(handler)) == ["ann@example.com", "cat@example.com"]


def test_without_a_list_nothing_is_suppressed(facade: Facade, smtp_server: StartServer) -> None:
    server, handler = rcpt_server(smtp_server, **{"gone@example.com": NO_SUCH_USER})
    mailer = mailer_for(facade, server, None)

    report = mailer.notify(alert("ann@example.com", "gone@example.com"))

    assert mailer.mailer.suppressions is None
    assert report.suppressed == ()
    assert rcpt_to(handler) == ["ann@example.com", "gone@example.com"]


def test_the_async_mailer_reads_and_writes_the_list_off_the_event_loop() -> None:
    calls: list[tuple[str, threading.Thread]] = []

    class RecordingSuppressions(nm.InMemorySuppressions):
        def is_suppressed(self, address: str) -> bool:
            calls.append(("is_suppressed", threading.current_thread()))
            return super().is_suppressed(address)

        def add(self, address: str, reason: str) -> None:
            calls.append(("add", threading.current_thread()))
            super().add(address, reason)

    async def notify() -> threading.Thread:
        transport = nm.AsyncMemoryTransport()
        transport.refuse("gone@example.com", reply=nm.Reply(550, "5.1.1 No such user"))
        settings = nm.EmailSettings(sender=nm.SenderSettings(from_address="alerts@example.com"))
        mailer = nm.AsyncMailer(
            settings, transport=transport, suppressions=RecordingSuppressions()
        )
        await mailer.notify(alert("ann@example.com", "gone@example.com"))
        return threading.current_thread()

    loop_thread = asyncio.run(notify())

    assert [name for name, _ in calls] == ["is_suppressed", "is_suppressed", "add"]
    assert all(thread is not loop_thread for _, thread in calls)


# --- the outbox: enqueue leaves suppressed recipients out, deliver_queued adds hard bounces


def outbox_mailer(
    server: SmtpServer, path: Path, suppressions: nm.Suppressions
) -> tuple[nm.Mailer, nm.SqliteOutbox]:
    outbox = nm.SqliteOutbox(path)
    settings = nm.EmailSettings(
        sender=nm.SenderSettings(from_address="alerts@example.com"), smtp=server.settings()
    )
    return nm.Mailer(settings, suppressions=suppressions, outbox=outbox), outbox


def test_enqueue_stores_nothing_for_suppressed_recipients_and_they_never_reach_rcpt(
    smtp_server: StartServer, tmp_path: Path
) -> None:
    server, handler = rcpt_server(smtp_server)
    path = tmp_path / "mail.db"
    with nm.SqliteSuppressions(path) as suppressions:  # the outbox's own file
        suppressions.add("bob@example.com", "unsubscribed")
        mailer, outbox = outbox_mailer(server, path, suppressions)
        with outbox:
            queued = mailer.enqueue(alert(*HOLDERS))
            report = mailer.deliver_queued()

    assert (queued.envelopes, queued.recipients) == (2, 2)
    assert sorted(report.accepted) == ["ann@example.com", "cat@example.com"]
    assert sorted(rcpt_to(handler)) == ["ann@example.com", "cat@example.com"]


def test_enqueue_of_system_mail_ignores_the_list(smtp_server: StartServer, tmp_path: Path) -> None:
    server, handler = rcpt_server(smtp_server)
    suppressions = nm.InMemorySuppressions()
    suppressions.add("bob@example.com", "unsubscribed")
    mailer, outbox = outbox_mailer(server, tmp_path / "mail.db", suppressions)
    with outbox:
        mailer.enqueue(nm.Message(["bob@example.com"], "Reset your password", text="Here."))
        report = mailer.deliver_queued()

    assert report.accepted == ("bob@example.com",)
    assert rcpt_to(handler) == ["bob@example.com"]


def test_deliver_queued_adds_a_5_1_1_refusal_as_a_hard_bounce(
    smtp_server: StartServer, tmp_path: Path
) -> None:
    server, handler = rcpt_server(smtp_server, **{"gone@example.com": NO_SUCH_USER})
    suppressions = nm.InMemorySuppressions()
    mailer, outbox = outbox_mailer(server, tmp_path / "mail.db", suppressions)
    with outbox:
        mailer.enqueue(alert("ann@example.com", "gone@example.com"))
        report = mailer.deliver_queued()
        handler.arrivals.clear()
        again = mailer.enqueue(alert("ann@example.com", "gone@example.com"))

    assert "gone@example.com" in report.refused
    assert suppressions.reason("gone@example.com") == "hard bounce"
    assert again.recipients == 1


def test_the_async_mailer_leaves_suppressed_recipients_out_of_the_outbox(tmp_path: Path) -> None:
    suppressions = nm.InMemorySuppressions()
    suppressions.add("bob@example.com", "unsubscribed")
    transport = nm.AsyncMemoryTransport()
    transport.refuse("gone@example.com", reply=nm.Reply(550, "5.1.1 No such user"))
    settings = nm.EmailSettings(sender=nm.SenderSettings(from_address="alerts@example.com"))

    async def enqueue_and_deliver() -> tuple[int, nm.DeliveryReport]:
        with nm.SqliteOutbox(tmp_path / "mail.db") as outbox:
            mailer = nm.AsyncMailer(
                settings, transport=transport, suppressions=suppressions, outbox=outbox
            )
            queued = await mailer.enqueue(
                alert("ann@example.com", "bob@example.com", "gone@example.com")
            )
            return queued.recipients, await mailer.deliver_queued()

    stored, report = asyncio.run(enqueue_and_deliver())

    assert stored == 2
    assert report.accepted == ("ann@example.com",)
    assert [sent.recipients for sent in transport.outbox] == [("ann@example.com",)]
    assert suppressions.reason("gone@example.com") == "hard bounce"
