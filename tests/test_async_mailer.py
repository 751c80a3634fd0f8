"""What only the asyncio side has: AsyncTransport's lifecycle across tasks, the throttle
across tasks, verify off the event loop, and an event loop that never stalls.

Everything both facades promise alike is pinned once, for both, in test_mailer.py.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

import pytest

import notifymail as nm
from smtp_servers import SmtpServer
from test_mailer import FakeClock, alert, max_in_any_window, settings

SENDER = nm.SenderSettings(from_address="alerts@example.com")


class Lifecycle(nm.AsyncMemoryTransport):
    """Records the order of opens, deliveries and closes, and yields inside each."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    async def open(self) -> None:
        await asyncio.sleep(0)
        self.events.append("open")

    async def close(self) -> None:
        await asyncio.sleep(0.01)
        self.events.append("close")

    async def deliver(self, envelope: nm.Envelope) -> nm.Delivery:
        self.events.append("deliver")
        return await super().deliver(envelope)


def envelope(recipient: str = "ann@example.com") -> nm.Envelope:
    raw = f"Message-ID: <{recipient}>\r\nSubject: x\r\n\r\nbody\r\n".encode()
    return nm.Envelope("alerts@example.com", (recipient,), raw=raw)


def test_async_transport_opens_lazily_and_closes_when_the_outermost_block_ends() -> None:
    transport = Lifecycle()

    async def main() -> None:
        async with transport:
            assert transport.events == []  # entering opens nothing
            async with transport:
                await transport.send(envelope())
            await transport.send(envelope())
            assert transport.events == ["open", "deliver", "deliver"]
        assert transport.events[-1] == "close"

    asyncio.run(main())
    assert transport.events == ["open", "deliver", "deliver", "close"]


def test_async_transport_tasks_deliver_one_at_a_time_over_one_opening() -> None:
    inside = 0
    most = 0

    class Exclusive(Lifecycle):
        async def deliver(self, envelope: nm.Envelope) -> nm.Delivery:
            nonlocal inside, most
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.001)
            inside -= 1
            return await super().deliver(envelope)

    transport = Exclusive()

    async def main() -> None:
        async with transport:
            await asyncio.gather(
                *(transport.send(envelope(f"u{i}@example.com")) for i in range(20))
            )

    asyncio.run(main())
    assert most == 1
    assert transport.events.count("open") == 1
    assert transport.events.count("close") == 1
    assert len(transport.outbox) == 20


def test_a_task_sending_while_another_closes_opens_again_after_the_close() -> None:
    transport = Lifecycle()

    async def main() -> None:
        first = asyncio.create_task(transport.send(envelope()))
        await asyncio.sleep(0.005)  # the first send is now inside its close
        await transport.send(envelope("bob@example.com"))
        await first

    asyncio.run(main())
    assert transport.events == ["open", "deliver", "close", "open", "deliver", "close"]


def test_async_send_many_stops_at_the_first_failure_with_the_deliveries_before_it() -> None:
    transport = nm.AsyncMemoryTransport()
    transport.refuse("bob@example.com")
    batch = [envelope("ann@example.com"), envelope("bob@example.com"), envelope("cat@example.com")]

    with pytest.raises(nm.PermanentFailure) as info:
        asyncio.run(transport.send_many(batch))
    assert [d.accepted for d in info.value.deliveries] == [("ann@example.com",)]
    assert [sent.recipients for sent in transport.outbox] == [("ann@example.com",)]


def test_async_transport_logs_each_failure_and_delivery(caplog: pytest.LogCaptureFixture) -> None:
    transport = nm.AsyncMemoryTransport()
    transport.fail_next(nm.ConnectionFailed("connection refused"))
    with caplog.at_level(logging.DEBUG, logger="notifymail.transport"):
        with pytest.raises(nm.ConnectionFailed):
            asyncio.run(transport.send(envelope()))
        asyncio.run(transport.send(envelope()))
    lines = [r.getMessage() for r in caplog.records if r.name == "notifymail.transport"]
    assert lines == [
        "AsyncMemoryTransport: <ann@example.com> failed for 1 recipient(s): connection refused",
        "AsyncMemoryTransport: <ann@example.com> accepted by 1, refused by 0",
    ]


def test_an_async_mailer_made_outside_any_loop_serves_one_loop_after_another() -> None:
    transport = nm.AsyncMemoryTransport()
    mailer = nm.AsyncMailer(settings(), transport=transport)
    for recipient in ("dee@partner.example", "eve@client.example"):
        report = asyncio.run(mailer.notify(alert(recipient)))
        assert report.accepted == (recipient,)
    assert len(transport.outbox) == 2


def test_throttle_holds_across_tasks() -> None:
    clock = FakeClock()
    admitted: list[tuple[float, int]] = []

    class Clocked(nm.AsyncMemoryTransport):
        async def deliver(self, envelope: nm.Envelope) -> nm.Delivery:
            admitted.append((clock.last_read(), len(envelope.recipients)))
            return await super().deliver(envelope)

    async def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        await asyncio.sleep(0)

    transport = Clocked()
    mailer = nm.AsyncMailer(settings(per_second=5), transport=transport, clock=clock, sleep=sleep)

    async def main() -> None:
        await asyncio.gather(
            *(
                mailer.notify(alert(*(f"t{task}-{i}@partner.example" for i in range(10))))
                for task in range(4)
            )
        )

    asyncio.run(main())
    assert len(transport.outbox) == 40
    assert max_in_any_window(admitted) <= 5
    assert max(when for when, _ in admitted) >= 7.0  # 40 recipients: 8 windows


def test_async_verify_checks_the_server_off_the_event_loop(
    smtp_server: object,
) -> None:
    server: SmtpServer = smtp_server()  # type: ignore[operator]
    email_settings = nm.EmailSettings(sender=SENDER, smtp=server.settings())
    mailer = nm.AsyncMailer(email_settings, transport=nm.AsyncMemoryTransport())
    ticks = 0

    async def main() -> nm.VerifyResult:
        nonlocal ticks
        check = asyncio.create_task(mailer.verify())
        while not check.done():
            ticks += 1
            await asyncio.sleep(0)
        return await check

    result = asyncio.run(main())
    assert result.ok
    assert result.security == nm.Security.NONE
    assert server.handler.commands == ["EHLO", "QUIT"]
    assert server.handler.messages == []
    assert ticks > 1  # the loop ran other tasks while the check was under way


def test_notify_to_two_thousand_never_stalls_the_event_loop() -> None:
    """A probe task ticks every 10 ms while notify sends 2,000 messages.

    A stall is the loop's thread busy elsewhere between two ticks, so the gap is measured
    in that thread's CPU time: on a machine busy with other work the operating system may
    pause the whole process, which is no stall of ours and would make wall time flaky.
    The objects earlier tests left behind are frozen out of the garbage collector's way
    for the same reason: a full collection of the test run's heap is not ours either.
    """
    transport = nm.AsyncMemoryTransport()
    mailer = nm.AsyncMailer(settings(), transport=transport)
    outsiders = [f"user{i}@partner.example" for i in range(2000)]
    gaps: list[float] = []

    async def main() -> nm.DeliveryReport:
        await mailer.send_test_email("warm@example.com")  # first-use imports, not a stall
        done = asyncio.Event()

        async def probe() -> None:
            last = time.thread_time()
            while not done.is_set():
                await asyncio.sleep(0.01)
                now = time.thread_time()
                gaps.append(now - last)
                last = now

        ticking = asyncio.create_task(probe())
        await asyncio.sleep(0.02)
        report = await mailer.notify(nm.Notification(outsiders, "Digest", text="x\n"))
        done.set()
        await ticking
        return report

    gc.collect()
    gc.freeze()
    try:
        report = asyncio.run(main())
    finally:
        gc.unfreeze()
    assert len(report.accepted) == 2000
    assert len(transport.outbox) == 2001
    assert len(gaps) > 20  # the probe ran throughout
    assert max(gaps) < 0.05
