"""Mailer.enqueue, Mailer.deliver_queued and OutboxWorker over a real SQLite outbox file
and the memory transport."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from typing_extensions import override

import notifymail as nm
from facades import Driven, Facade
from notifymail._queue import Claim, Settled
from notifymail._sqlite import LogSync
from smtp_servers import RecordingHandler, SmtpServer

SETTINGS = nm.EmailSettings(sender=nm.SenderSettings(from_address="alerts@example.com"))
NO_CONNECTION = nm.ConnectionFailed("connection refused")


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def alert(*recipients: str) -> nm.Notification:
    return nm.Notification(list(recipients), "Revenue is down", text="See the dashboard.")


def outsiders(count: int) -> list[str]:
    return [f"user{i}@example.org" for i in range(count)]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def outbox(tmp_path: Path, clock: Clock) -> Iterator[nm.SqliteOutbox]:
    with nm.SqliteOutbox(tmp_path / "mail.db", clock=clock) as store:
        yield store


@pytest.fixture
def transport() -> nm.MemoryTransport:
    return nm.MemoryTransport()


@pytest.fixture
def mailer(transport: nm.MemoryTransport, outbox: nm.SqliteOutbox) -> nm.Mailer:
    return nm.Mailer(SETTINGS, transport=transport, outbox=outbox)


@pytest.fixture
def driven(facade: Facade, transport: nm.MemoryTransport, outbox: nm.SqliteOutbox) -> Driven:
    """A Mailer, or an AsyncMailer called as if blocking, with the outbox and transport."""
    return facade.mailer(SETTINGS, transport=transport, outbox=outbox)


def sent_in(path: Path) -> int:
    """How many envelopes the outbox file at ``path`` says are sent, read from a
    connection of its own (what another process would see)."""
    connection = sqlite3.connect(path)
    try:
        (sent,) = connection.execute(
            "SELECT count(*) FROM outbox_envelope WHERE state = 3"
        ).fetchone()
    finally:
        connection.close()
    return int(sent)


class SettleHook(nm.SqliteOutbox):
    """An outbox that calls ``before_settle`` ahead of recording each outcome."""

    def before_settle(self, claim: Claim) -> None:
        """Look at (or fail) the recording about to be made of ``claim``'s outcome."""

    @override
    def settle(
        self,
        claim: Claim,
        result: nm.Delivery | nm.DeliveryError | None,
        *,
        suppressed: Collection[str] = (),
    ) -> Settled:
        self.before_settle(claim)
        return super().settle(claim, result, suppressed=suppressed)


def test_enqueue_sends_nothing_and_deliver_queued_delivers_it(
    driven: Driven, transport: nm.MemoryTransport, outbox: nm.SqliteOutbox
) -> None:
    queued = driven.enqueue(alert(*outsiders(3)))
    assert (queued.envelopes, queued.recipients, queued.new) == (3, 3, True)
    assert transport.outbox == []
    report = driven.deliver_queued()
    assert sorted(report.accepted) == outsiders(3)
    assert report.ok
    assert len(report.deliveries) == 3
    assert sorted(sent.to[0] for sent in transport.outbox) == outsiders(3)
    assert transport.outbox[0].subject == "Revenue is down"
    assert outbox.status().sent == 3
    assert driven.deliver_queued() == nm.DeliveryReport()


def test_system_mail_goes_through_the_outbox_as_one_envelope(
    mailer: nm.Mailer, transport: nm.MemoryTransport
) -> None:
    message = nm.Message(
        to=["ann@example.com"], bcc=["audit@example.com"], subject="Reset", text="x"
    )
    assert mailer.enqueue(message).envelopes == 1
    mailer.deliver_queued()
    (sent,) = transport.outbox
    assert sent.recipients == ("ann@example.com", "audit@example.com")
    assert "Bcc" not in sent.message


def test_an_invalid_item_raises_and_stores_nothing(
    mailer: nm.Mailer, outbox: nm.SqliteOutbox
) -> None:
    with pytest.raises(nm.InvalidMessage):
        mailer.enqueue(alert("fine@example.org", "not an address"))
    with pytest.raises(nm.InvalidMessage):
        mailer.enqueue(
            nm.Notification(["a@example.org"], "Subject\r\nBcc: evil@example.org", text="x")
        )
    assert outbox.status().queued == 0


def test_a_key_enqueued_twice_is_delivered_once(
    mailer: nm.Mailer, transport: nm.MemoryTransport
) -> None:
    first = mailer.enqueue(alert(*outsiders(2)), key="alert-42/2024-05-01")
    again = mailer.enqueue(alert(*outsiders(2)), key="alert-42/2024-05-01")
    assert again.new is False
    assert again.id == first.id
    mailer.deliver_queued()
    assert len(transport.outbox) == 2


def test_without_a_key_each_enqueue_is_new(mailer: nm.Mailer) -> None:
    first = mailer.enqueue(alert("a@example.org"))
    second = mailer.enqueue(alert("a@example.org"))
    assert first.new
    assert second.new
    assert first.key != second.key


def test_a_mailer_without_an_outbox_says_so(transport: nm.MemoryTransport) -> None:
    mailer = nm.Mailer(SETTINGS, transport=transport)
    with pytest.raises(nm.ConfigError, match="no outbox") as caught:
        mailer.enqueue(alert("a@example.org"))
    assert caught.value.field == "outbox"
    with pytest.raises(nm.ConfigError, match="no outbox"):
        mailer.deliver_queued()


def test_deliver_queued_needs_an_outbox_that_workers_claim_from(
    transport: nm.MemoryTransport,
) -> None:
    class Broker:
        def enqueue(self, envelopes: object, *, key: str, notification: bool) -> nm.Queued:
            return nm.Queued(id="1", key=key, envelopes=0, recipients=0, new=True)

    mailer = nm.Mailer(SETTINGS, transport=transport, outbox=Broker())
    assert mailer.enqueue(alert("a@example.org"), key="k").key == "k"
    with pytest.raises(nm.ConfigError, match="Broker is delivered by its own workers"):
        mailer.deliver_queued()


class FlagNoting:
    """An outbox that notes the ``notification`` flag of each key it is given."""

    def __init__(self) -> None:
        self.flags: dict[str, object] = {}

    def enqueue(
        self, envelopes: Sequence[nm.Envelope], *, key: str, notification: bool = False
    ) -> nm.Queued:
        self.flags[key] = notification
        return nm.Queued(id=key, key=key, envelopes=len(envelopes), recipients=0, new=True)


@pytest.mark.parametrize("kind", ["blocking", "asyncio"])
def test_an_outbox_is_told_which_items_are_notifications(kind: str) -> None:
    outbox = FlagNoting()
    alert_item = alert("a@example.org")
    reset = nm.Message(["a@example.org"], "Reset your password", text=".")
    if kind == "asyncio":
        amailer = nm.AsyncMailer(SETTINGS, transport=nm.AsyncMemoryTransport(), outbox=outbox)

        async def enqueue_both() -> None:
            await amailer.enqueue(alert_item, key="alert")
            await amailer.enqueue(reset, key="reset")

        asyncio.run(enqueue_both())
    else:
        mailer = nm.Mailer(SETTINGS, transport=nm.MemoryTransport(), outbox=outbox)
        mailer.enqueue(alert_item, key="alert")
        mailer.enqueue(reset, key="reset")

    assert outbox.flags == {"alert": True, "reset": False}


def test_limit_bounds_the_envelopes_tried(
    driven: Driven, transport: nm.MemoryTransport, outbox: nm.SqliteOutbox
) -> None:
    driven.enqueue(alert(*outsiders(120)))
    assert len(driven.deliver_queued(limit=70).accepted) == 70
    assert outbox.status().queued == 50
    assert len(driven.deliver_queued(limit=0).accepted) == 0
    assert len(driven.deliver_queued().accepted) == 50
    assert len(transport.outbox) == 120


def test_each_outcome_is_committed_before_the_next_envelope_is_sent(
    tmp_path: Path, outbox: nm.SqliteOutbox, facade: Facade
) -> None:
    class Witness(nm.MemoryTransport):
        """Reads the file, from a connection of its own, as each envelope goes out."""

        def __init__(self) -> None:
            super().__init__()
            self.committed_before: list[int] = []

        @override
        def deliver(self, envelope: nm.Envelope) -> nm.Delivery:
            self.committed_before.append(sent_in(tmp_path / "mail.db"))
            return super().deliver(envelope)

    witness = Witness()
    mailer = facade.mailer(SETTINGS, transport=witness, outbox=outbox)
    mailer.enqueue(alert(*outsiders(60)))
    mailer.deliver_queued()
    assert witness.committed_before == list(range(60))


class Witness(RecordingHandler):
    """A server that notes, at each end of DATA, how many envelopes the outbox file says
    are sent (read from a connection of its own), and whether the client had pipelined
    the next message's MAIL FROM behind it (the server's input buffer holds it)."""

    def __init__(self, path: Path, *, pipelining: bool = True) -> None:
        super().__init__(offer_pipelining=pipelining)
        self.path = path
        self.sent_before: list[int] = []
        self.mail_behind: list[bool] = []

    @override
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.sent_before.append(sent_in(self.path))
        self.mail_behind.append(b"MAIL FROM" in bytes(server._reader._buffer))
        return await super().handle_DATA(server, session, envelope)


def test_over_smtp_each_outcome_is_committed_before_the_next_end_of_data(
    tmp_path: Path, facade: Facade, smtp_server: Callable[..., SmtpServer]
) -> None:
    """Both facades pipeline the next message behind the one in flight, and still commit
    each outcome before the next end of DATA (the asyncio one in a thread of its own)."""
    handler = Witness(tmp_path / "mail.db")
    server = smtp_server(handler=handler)
    settings = nm.EmailSettings(sender=SETTINGS.sender, smtp=server.settings(timeout=10.0))
    transport: nm.Transport | nm.AsyncTransport = (
        nm.AsyncSmtpTransport(settings.smtp)
        if facade.is_async
        else nm.SmtpTransport(settings.smtp)
    )
    with nm.SqliteOutbox(tmp_path / "mail.db") as outbox:
        mailer = facade.mailer(settings, transport=transport, outbox=outbox)
        mailer.enqueue(alert(*outsiders(70)))  # two batches
        report = mailer.deliver_queued()
        assert sorted(report.accepted) == sorted(outsiders(70))
        assert outbox.status().sent == 70
    assert handler.sent_before == list(range(70))
    # Pipelined within each batch of 50; the last of a batch waits for the next claim.
    assert handler.mail_behind == [index not in (49, 69) for index in range(70)]


class HeldRecording(SettleHook):
    """Holds the recording of the second outcome until the server has received the
    third message's DATA command (10 s at most), and notes what the server had then."""

    def __init__(self, path: Path, handler: RecordingHandler) -> None:
        super().__init__(path)
        self.handler = handler
        self.settling = 0
        self.seen: tuple[int, int] | None = None  # DATA commands, messages received

    @override
    def before_settle(self, claim: Claim) -> None:
        self.settling += 1
        if self.settling != 2:
            return
        handler = self.handler
        deadline = time.monotonic() + 10
        while handler.commands.count("DATA") < 3 and time.monotonic() < deadline:
            time.sleep(0.002)
        self.seen = (handler.commands.count("DATA"), len(handler.messages))


def test_an_async_drain_sends_the_next_commands_while_an_outcome_is_recorded(
    tmp_path: Path, smtp_server: Callable[..., SmtpServer]
) -> None:
    """To a server without PIPELINING, the asyncio drain does not wait for an outcome's
    recording (in its store thread) to begin the next message: its MAIL, RCPT and DATA
    go out meanwhile, and only its content waits, so the end of DATA still never
    precedes the commit of the outcome before it."""
    handler = Witness(tmp_path / "mail.db", pipelining=False)
    server = smtp_server(handler=handler)
    settings = nm.EmailSettings(sender=SETTINGS.sender, smtp=server.settings(timeout=20.0))
    with HeldRecording(tmp_path / "mail.db", handler) as outbox:
        mailer = nm.AsyncMailer(settings, outbox=outbox)
        asyncio.run(mailer.enqueue(alert(*outsiders(5))))
        report = asyncio.run(mailer.deliver_queued())
        assert sorted(report.accepted) == sorted(outsiders(5))
        assert outbox.status().sent == 5
    assert outbox.seen == (3, 2)  # the third message's DATA, not its content
    assert handler.sent_before == list(range(5))
    assert handler.mail_behind == [False] * 5


def test_each_outcome_is_anticipated_while_the_server_answers(
    tmp_path: Path, smtp_server: Callable[..., SmtpServer]
) -> None:
    """Over SMTP, the outbox works out each envelope's likely record while its reply is
    awaited (`SqliteOutbox.anticipate`); a reply that differs is recorded as it is."""

    class Watched(SettleHook):
        anticipated_at_settle: list[bool]

        @override
        def before_settle(self, claim: Claim) -> None:
            held = self._held.get(int(claim.id))
            self.anticipated_at_settle.append(held is not None and held.anticipated is not None)

    handler = RecordingHandler(refuse={"user3@example.org": "550 5.1.1 No such user"})
    server = smtp_server(handler=handler)
    settings = nm.EmailSettings(sender=SETTINGS.sender, smtp=server.settings(timeout=10.0))
    with Watched(tmp_path / "mail.db") as outbox:
        outbox.anticipated_at_settle = []
        mailer = nm.Mailer(settings, outbox=outbox)
        mailer.enqueue(alert(*outsiders(6)))
        report = mailer.deliver_queued()
        assert outbox.anticipated_at_settle == [True] * 6
        assert sorted(report.accepted) == [a for a in outsiders(6) if a != "user3@example.org"]
        assert list(report.refused) == ["user3@example.org"]
        assert outbox.status().sent == 6
        assert outbox.dead() == []
    assert len(handler.messages) == 5


def test_while_the_server_is_unreachable_the_batch_is_deferred_unsent(
    driven: Driven, transport: nm.MemoryTransport, outbox: nm.SqliteOutbox, clock: Clock
) -> None:
    driven.enqueue(alert(*outsiders(10)))
    transport.fail_next(NO_CONNECTION)
    report = driven.deliver_queued()
    assert report == nm.DeliveryReport()
    assert outbox.status().deferred == 10
    assert transport.outbox == []
    clock.now += 66
    assert len(driven.deliver_queued().accepted) == 10


def test_an_error_of_one_envelope_does_not_hold_up_the_others(
    driven: Driven, transport: nm.MemoryTransport, outbox: nm.SqliteOutbox
) -> None:
    driven.enqueue(alert(*outsiders(5)))
    transport.fail_next(nm.TemporaryFailure("451 4.3.0 message deferred"))
    report = driven.deliver_queued()
    assert len(report.accepted) == 4
    assert outbox.status().deferred == 1


def test_a_permanent_refusal_is_final_and_reported(
    driven: Driven, transport: nm.MemoryTransport, outbox: nm.SqliteOutbox, clock: Clock
) -> None:
    transport.refuse("gone@example.org")
    driven.enqueue(alert("gone@example.org", "here@example.org"))
    report = driven.deliver_queued()
    assert report.accepted == ("here@example.org",)
    assert dict(report.refused) == {"gone@example.org": nm.Reply(550, "5.1.1 No such user")}
    clock.now += 10 * 86400
    assert driven.deliver_queued() == nm.DeliveryReport()
    assert outbox.status().sent == 2


@pytest.mark.parametrize("over", ["memory", "smtp"])
def test_the_throttle_applies_to_queued_mail(
    tmp_path: Path, facade: Facade, over: str, smtp_server: Callable[..., SmtpServer]
) -> None:
    """Over SMTP, the throttle also holds back the envelope that would be pipelined."""
    handler = RecordingHandler(offer_pipelining=True)
    smtp = smtp_server(handler=handler).settings(timeout=10.0)
    settings = nm.EmailSettings(
        sender=nm.SenderSettings(from_address="alerts@example.com"),
        smtp=smtp,
        delivery=nm.DeliverySettings(max_recipients_per_second=5),
    )
    transport: nm.Transport | nm.AsyncTransport = nm.MemoryTransport()
    if over == "smtp":
        transport = nm.AsyncSmtpTransport(smtp) if facade.is_async else nm.SmtpTransport(smtp)
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    with nm.SqliteOutbox(tmp_path / "mail.db") as outbox:
        mailer = facade.mailer(
            settings,
            transport=transport,
            outbox=outbox,
            clock=lambda: now[0],
            sleep=sleep,
        )
        mailer.enqueue(alert(*outsiders(12)))
        assert len(mailer.deliver_queued().accepted) == 12
        assert outbox.status().sent == 12
    assert now[0] >= 2.0
    assert len(waits) == 2
    if over == "smtp":
        assert sorted(m.recipients[0] for m in handler.messages) == sorted(outsiders(12))


def test_a_worker_thread_delivers_until_stopped(
    mailer: nm.Mailer, transport: nm.MemoryTransport, outbox: nm.SqliteOutbox
) -> None:
    worker = nm.OutboxWorker(mailer, poll_interval=0.01)
    worker.start()
    try:
        mailer.enqueue(alert(*outsiders(120)))
        deadline = time.monotonic() + 30
        while outbox.status().sent < 120 and time.monotonic() < deadline:
            time.sleep(0.01)
        mailer.enqueue(alert("late@example.org"))
        while outbox.status().sent < 121 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        worker.stop(timeout=30)
    assert outbox.status().sent == 121
    assert len(transport.outbox) == 121


def test_run_delivers_in_the_calling_thread_and_logs_each_batch(
    mailer: nm.Mailer, outbox: nm.SqliteOutbox, caplog: pytest.LogCaptureFixture
) -> None:
    mailer.enqueue(alert(*outsiders(70)))
    stop = threading.Event()

    class StopWhenDone(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("delivered") and outbox.status().queued == 0:
                stop.set()

    handler = StopWhenDone()
    logging.getLogger("notifymail.worker").addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger="notifymail.worker"):
            nm.OutboxWorker(mailer, poll_interval=0.01).run(stop)
    finally:
        logging.getLogger("notifymail.worker").removeHandler(handler)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("delivered")]
    assert lines == [
        "delivered a batch: 50 accepted, 0 refused, 0 failed",
        "delivered a batch: 20 accepted, 0 refused, 0 failed",
    ]
    assert outbox.status().sent == 70


def test_a_worker_outlives_a_failing_batch(
    mailer: nm.Mailer, transport: nm.MemoryTransport, outbox: nm.SqliteOutbox
) -> None:
    class Broken(Exception):
        pass

    mailer.enqueue(alert("a@example.org"))
    transport.fail_next(Broken("a bug in a custom transport"))
    stop = threading.Event()
    worker = nm.OutboxWorker(mailer, poll_interval=0.01)
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + 30
    while outbox.status().sent < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join(timeout=30)
    assert outbox.status().sent == 1


def test_poll_interval_must_be_positive(mailer: nm.Mailer) -> None:
    with pytest.raises(ValueError, match="poll_interval"):
        nm.OutboxWorker(mailer, poll_interval=0)


# --- interrupted --------------------------------------------------------------------


def test_an_interrupted_call_gives_back_what_it_had_not_sent(
    outbox: nm.SqliteOutbox, clock: Clock
) -> None:
    class Interrupted(nm.MemoryTransport):
        @override
        def deliver(self, envelope: nm.Envelope) -> nm.Delivery:
            if len(self.outbox) == 2:
                raise KeyboardInterrupt
            return super().deliver(envelope)

    transport = Interrupted()
    mailer = nm.Mailer(SETTINGS, transport=transport, outbox=outbox)
    mailer.enqueue(alert(*outsiders(10)))
    with pytest.raises(KeyboardInterrupt):
        mailer.deliver_queued()
    assert outbox.status() == nm.OutboxStatus(queued=8, deferred=0, sending=0, sent=2, dead=0)
    mailer.transport = nm.MemoryTransport()
    assert len(mailer.deliver_queued().accepted) == 8  # at once: no lease to wait for


def test_a_call_interrupted_right_after_its_leases_are_committed_gives_them_back(
    outbox: nm.SqliteOutbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C as the claim starts the background sync of its leases (a thread's start,
    which waits): the claim never reaches the drain, yet nothing stays leased."""

    def interrupted(log: LogSync) -> None:
        raise KeyboardInterrupt

    mailer = nm.Mailer(SETTINGS, transport=nm.MemoryTransport(), outbox=outbox)
    mailer.enqueue(alert(*outsiders(10)))
    monkeypatch.setattr(LogSync, "begin", interrupted)
    with pytest.raises(KeyboardInterrupt):
        mailer.deliver_queued()
    assert outbox.status() == nm.OutboxStatus(queued=10, deferred=0, sending=0, sent=0, dead=0)
    monkeypatch.undo()
    assert len(mailer.deliver_queued().accepted) == 10  # at once: no lease to wait for


def test_leases_that_cannot_be_given_back_after_an_interrupt_are_logged(
    outbox: nm.SqliteOutbox, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The interrupt is what the caller hears of; the leases kept are in the log."""

    def interrupted(log: LogSync) -> None:
        raise KeyboardInterrupt

    def locked(claims: object) -> None:
        raise sqlite3.OperationalError("database is locked")

    mailer = nm.Mailer(SETTINGS, transport=nm.MemoryTransport(), outbox=outbox)
    mailer.enqueue(alert(*outsiders(10)))
    monkeypatch.setattr(LogSync, "begin", interrupted)
    monkeypatch.setattr(outbox, "release", locked)
    with pytest.raises(KeyboardInterrupt):
        mailer.deliver_queued()
    assert outbox.status().sending == 10
    assert "10 lease(s) kept until they run out: database is locked" in caplog.text


# --- asyncio ------------------------------------------------------------------------


class ThreadNoting(SettleHook):
    """Notes the thread of every call a mailer makes to the outbox."""

    threads: set[int]

    def enqueue(
        self, envelopes: Sequence[nm.Envelope], *, key: str, notification: bool = False
    ) -> nm.Queued:
        self.threads.add(threading.get_ident())
        return super().enqueue(envelopes, key=key, notification=notification)

    def claim(self, limit: int) -> list[Claim]:
        self.threads.add(threading.get_ident())
        return super().claim(limit)

    def holds(self, claim: Claim) -> bool:
        self.threads.add(threading.get_ident())
        return super().holds(claim)

    def before_settle(self, claim: Claim) -> None:
        self.threads.add(threading.get_ident())


@pytest.mark.parametrize("over", ["memory", "smtp"])
def test_async_mailer_enqueues_and_delivers_with_the_outbox_off_the_event_loop(
    tmp_path: Path, over: str, smtp_server: Callable[..., SmtpServer]
) -> None:
    server = smtp_server(handler=RecordingHandler(offer_pipelining=True))
    settings, transport, delivered = async_drain(over, server)
    with ThreadNoting(tmp_path / "mail.db") as outbox:
        outbox.threads = set()
        mailer = nm.AsyncMailer(settings, transport=transport, outbox=outbox)

        async def main() -> tuple[nm.Queued, nm.Queued, nm.DeliveryReport, int]:
            first = await mailer.enqueue(alert(*outsiders(60)), key="k")
            again = await mailer.enqueue(alert(*outsiders(60)), key="k")
            return first, again, await mailer.deliver_queued(), threading.get_ident()

        first, again, report, loop_thread = asyncio.run(main())
        assert (first.envelopes, first.new, again.new) == (60, True, False)
        assert sorted(report.accepted) == sorted(outsiders(60))
        assert sorted(delivered()) == sorted(outsiders(60))
        assert outbox.status().sent == 60
        assert outbox.threads
        assert loop_thread not in outbox.threads


def test_async_mailer_refuses_an_invalid_item_and_stores_nothing(
    outbox: nm.SqliteOutbox,
) -> None:
    mailer = nm.AsyncMailer(SETTINGS, transport=nm.AsyncMemoryTransport(), outbox=outbox)
    with pytest.raises(nm.InvalidMessage):
        asyncio.run(mailer.enqueue(alert("not an address")))
    assert outbox.status().queued == 0


def test_a_cancelled_async_deliver_queued_gives_back_what_it_had_not_sent(
    outbox: nm.SqliteOutbox,
) -> None:
    class Slow(nm.AsyncMemoryTransport):
        @override
        async def deliver(self, envelope: nm.Envelope) -> nm.Delivery:
            if len(self.outbox) == 3:
                await asyncio.sleep(60)
            return await super().deliver(envelope)

    transport = Slow()
    mailer = nm.AsyncMailer(SETTINGS, transport=transport, outbox=outbox)

    async def main() -> None:
        await mailer.enqueue(alert(*outsiders(10)))
        task = asyncio.ensure_future(mailer.deliver_queued())
        while len(transport.outbox) < 3:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert outbox.status() == nm.OutboxStatus(queued=7, deferred=0, sending=0, sent=3, dead=0)


class GatedOutbox(SettleHook):
    """Once the third outcome is recorded, holds the lease check that follows it (the
    recording's call takes the next envelope) until ``gate`` is set; or, with
    ``failing``, fails the recording of the third outcome with that error."""

    def __init__(self, path: Path, *, failing: Exception | None = None) -> None:
        super().__init__(path)
        self.failing = failing
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.settling = 0  # recordings begun

    @override
    def before_settle(self, claim: Claim) -> None:
        self.settling += 1
        if self.failing is not None and self.settling == 3:
            raise self.failing

    @override
    def holds(self, claim: Claim) -> bool:
        if self.failing is None and self.settling == 3 and not self.entered.is_set():
            self.entered.set()
            assert self.gate.wait(10)
        return super().holds(claim)


async def cancel_in_the_store(
    mailer: nm.AsyncMailer, entered: threading.Event, gate: threading.Event
) -> None:
    """Enqueue ten, start a drain, cancel it once a call to the store has ``entered``
    (and waits for ``gate``), let that call go on 0.2 s later, and see the drain raise
    the cancellation."""
    await mailer.enqueue(alert(*outsiders(10)))
    task = asyncio.ensure_future(mailer.deliver_queued())
    for _ in range(500):
        if entered.is_set():
            break
        await asyncio.sleep(0.01)
    assert entered.is_set()
    task.cancel()
    asyncio.get_running_loop().call_later(0.2, gate.set)
    with pytest.raises(asyncio.CancelledError):
        await task


def async_drain(
    over: str, server: SmtpServer
) -> tuple[nm.EmailSettings, nm.AsyncTransport, Callable[[], list[str]]]:
    """Settings, an asyncio transport (memory, or SMTP to ``server``), and who got mail."""
    settings = nm.EmailSettings(sender=SETTINGS.sender, smtp=server.settings(timeout=10.0))
    memory = nm.AsyncMemoryTransport()
    transport = memory if over == "memory" else nm.AsyncSmtpTransport(settings.smtp)
    handler = server.handler

    def delivered() -> list[str]:
        if over == "memory":
            return [sent.to[0] for sent in memory.outbox]
        return [message.recipients[0] for message in handler.messages]

    return settings, transport, delivered


@pytest.mark.parametrize("over", ["memory", "smtp"])
def test_an_async_drain_cancelled_while_the_store_works_finishes_that_call_first(
    tmp_path: Path, over: str, smtp_server: Callable[..., SmtpServer]
) -> None:
    """The store's call under way (the third outcome's recording, which takes the next
    envelope) ends before the batch is given back: nothing is recorded twice, nothing
    stays leased, and no envelope that got through is sent again."""
    server = smtp_server(handler=RecordingHandler(offer_pipelining=True))
    settings, transport, delivered = async_drain(over, server)
    with GatedOutbox(tmp_path / "mail.db") as outbox:
        mailer = nm.AsyncMailer(settings, transport=transport, outbox=outbox)

        asyncio.run(cancel_in_the_store(mailer, outbox.entered, outbox.gate))
        assert outbox.status() == nm.OutboxStatus(queued=7, deferred=0, sending=0, sent=3, dead=0)
        assert delivered() == outsiders(3)
        assert len(asyncio.run(mailer.deliver_queued()).accepted) == 7
        assert outbox.status().sent == 10
    assert sorted(delivered()) == sorted(outsiders(10))


@pytest.mark.parametrize(
    "error",
    [sqlite3.OperationalError("disk I/O error"), ConnectionError("suppressions unreachable")],
)
@pytest.mark.parametrize("count", [10, 3])
@pytest.mark.parametrize("over", ["memory", "smtp"])
def test_an_outcome_the_store_fails_to_record_stops_the_async_drain(
    tmp_path: Path,
    over: str,
    count: int,
    error: Exception,
    smtp_server: Callable[..., SmtpServer],
) -> None:
    """The store's error is raised, even for the batch's last envelope, and an OSError
    is not taken for the connection's; the next message's end of DATA never goes out,
    and the batch is given back, the envelope whose outcome was not recorded with it."""
    server = smtp_server(handler=RecordingHandler(offer_pipelining=True))
    settings, transport, delivered = async_drain(over, server)
    with GatedOutbox(tmp_path / "mail.db", failing=error) as outbox:
        mailer = nm.AsyncMailer(settings, transport=transport, outbox=outbox)
        asyncio.run(mailer.enqueue(alert(*outsiders(count))))
        with pytest.raises(type(error), match=str(error)):
            asyncio.run(mailer.deliver_queued())
        assert delivered() == outsiders(3)
        assert outbox.status() == nm.OutboxStatus(
            queued=count - 2, deferred=0, sending=0, sent=2, dead=0
        )


def test_a_421_met_while_an_outcome_is_recorded_defers_the_rest_of_the_batch(
    tmp_path: Path, smtp_server: Callable[..., SmtpServer]
) -> None:
    """The second message, pipelined behind the first, is refused with 421 while the
    first one's outcome is still being recorded (and that recording takes the next
    envelope): the drain stops there, and nothing more goes out, on no new connection."""

    class SlowFirst(SettleHook):
        settled = 0

        @override
        def before_settle(self, claim: Claim) -> None:
            self.settled += 1
            if self.settled == 1:
                time.sleep(0.3)

    handler = RecordingHandler(offer_pipelining=True)
    handler.refuse["user1@example.org"] = "421 4.3.2 Going down"
    server = smtp_server(handler=handler)
    settings = nm.EmailSettings(sender=SETTINGS.sender, smtp=server.settings(timeout=10.0))
    with SlowFirst(tmp_path / "mail.db") as outbox:
        mailer = nm.AsyncMailer(settings, outbox=outbox)
        asyncio.run(mailer.enqueue(alert(*outsiders(10))))
        report = asyncio.run(mailer.deliver_queued())
        assert report.accepted == ("user0@example.org",)
        assert outbox.status() == nm.OutboxStatus(queued=0, deferred=9, sending=0, sent=1, dead=0)
    assert [message.recipients for message in handler.messages] == [("user0@example.org",)]
    assert handler.connections == 1


def test_an_async_drain_cancelled_while_it_leases_gives_the_leases_back(
    tmp_path: Path,
) -> None:
    class SlowClaim(nm.SqliteOutbox):
        entered = threading.Event()
        gate = threading.Event()

        @override
        def claim(self, limit: int) -> list[Claim]:
            self.entered.set()
            assert self.gate.wait(10)
            return super().claim(limit)

    transport = nm.AsyncMemoryTransport()
    with SlowClaim(tmp_path / "mail.db") as outbox:
        mailer = nm.AsyncMailer(SETTINGS, transport=transport, outbox=outbox)

        asyncio.run(cancel_in_the_store(mailer, outbox.entered, outbox.gate))
        assert transport.outbox == []
        assert outbox.status() == nm.OutboxStatus(queued=10, deferred=0, sending=0, sent=0, dead=0)
