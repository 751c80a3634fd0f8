"""Several envelopes at once: Transport.concurrency, notify's lanes (threads for Mailer,
tasks for AsyncMailer), narrowing on a throttling server, and where the throttle counts.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import ClassVar

import pytest

import notifymail as nm
from facades import Facade
from test_mailer import FakeClock, settings

OUTSIDERS = [f"user{i}@partner.example" for i in range(60)]


def lane() -> int:
    """Who is delivering: the task under a running loop, else the thread."""
    try:
        return id(asyncio.current_task())
    except RuntimeError:
        return threading.get_ident()


class Recorder:
    """What a test transport of either kind saw: how many were inside at once, and who."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.memory = nm.MemoryTransport()  # the outbox, and the scripted failures
        self.inside = 0
        self.most = 0
        self.lanes: list[int] = []
        self.opens = 0
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
            self.lanes.append(lane())

    def leave(self) -> None:
        with self._lock:
            self.inside -= 1

    def delivered(self) -> Counter[str]:
        return Counter(r for sent in self.memory.outbox for r in sent.recipients)


class WideTransport(nm.Transport):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    @property
    def concurrency(self) -> int:
        return self.recorder.width

    def open(self) -> None:
        self.recorder.opens += 1

    def deliver(self, envelope: nm.Envelope) -> nm.Delivery:
        self.recorder.enter()
        try:
            time.sleep(0.002)
            return self.recorder.memory.deliver(envelope)
        finally:
            self.recorder.leave()


class WideAsyncTransport(nm.AsyncTransport):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    @property
    def concurrency(self) -> int:
        return self.recorder.width

    async def open(self) -> None:
        self.recorder.opens += 1

    async def deliver(self, envelope: nm.Envelope) -> nm.Delivery:
        self.recorder.enter()
        try:
            await asyncio.sleep(0.002)
            return self.recorder.memory.deliver(envelope)
        finally:
            self.recorder.leave()


def wide(facade: Facade, width: int) -> tuple[Recorder, nm.Transport | nm.AsyncTransport]:
    recorder = Recorder(width)
    kind = WideAsyncTransport if facade.is_async else WideTransport
    return recorder, kind(recorder)


def test_the_base_transports_deliver_one_at_a_time() -> None:
    assert nm.MemoryTransport().concurrency == 1
    assert nm.AsyncMemoryTransport().concurrency == 1


def test_notify_hands_over_as_many_envelopes_at_once_as_the_transport_allows(
    facade: Facade,
) -> None:
    recorder, transport = wide(facade, 4)
    mailer = facade.mailer(settings(), transport=transport)
    report = mailer.notify(nm.Notification(OUTSIDERS[:40], "Digest", text="x"))

    assert sorted(report.accepted) == sorted(OUTSIDERS[:40])
    assert recorder.delivered() == Counter(OUTSIDERS[:40])
    assert recorder.most == 4
    assert len(set(recorder.lanes)) == 4
    assert recorder.opens == 1


def test_a_421_narrows_notify_by_one_lane_each_time_down_to_one(facade: Facade) -> None:
    recorder, transport = wide(facade, 4)
    busy = nm.Reply(421, "4.7.0 Too many concurrent connections")
    recorder.memory.fail_next(nm.TemporaryFailure(str(busy), reply=busy), times=3)
    clock = FakeClock()
    mailer = facade.mailer(settings(), transport=transport, clock=clock, sleep=clock.sleep)
    report = mailer.notify(nm.Notification(OUTSIDERS, "Digest", text="x"))

    assert report.ok
    assert recorder.delivered() == Counter(OUTSIDERS)
    assert len(clock.sleeps) == 3  # each refused envelope retried once
    # After the third 421 one lane is left: lanes above it finish what they hold and stop.
    assert len(set(recorder.lanes[-40:])) == 1


def test_every_recipient_lands_in_exactly_one_bucket_on_eight_lanes_with_faults(
    facade: Facade,
) -> None:
    recorder, transport = wide(facade, 8)
    memory = recorder.memory
    memory.fail_next(nm.ConnectionFailed("connection reset"), times=5)
    memory.fail_next(nm.ConnectionFailed("reply lost after DATA", retryable=False))
    memory.refuse(*OUTSIDERS[:3])
    memory.refuse(*OUTSIDERS[3:5], reply=nm.Reply(452, "4.2.2 Mailbox full"))
    holders = [f"member{i}@example.com" for i in range(16)]
    people = nm.InMemoryDirectory(nm.Person(address) for address in holders)
    clock = FakeClock()
    mailer = facade.mailer(
        # More attempts than resets: which lane meets them is a race, and no envelope
        # may run out of attempts because it met them all.
        settings(per_message=4, retry=nm.RetryPolicy(max_attempts=7)),
        transport=transport,
        directory=people,
        clock=clock,
        sleep=clock.sleep,
    )
    everyone = [*holders, *OUTSIDERS]
    report = mailer.notify(nm.Notification(everyone, "Digest", text="x"))

    buckets = [*report.accepted, *report.refused, *report.failed]
    assert Counter(buckets) == Counter(everyone)  # every one in exactly one bucket
    assert set(report.refused) <= set(OUTSIDERS[:5])  # unless the lost reply was theirs
    assert set(OUTSIDERS[:5]) <= set(report.refused) | set(report.failed)
    assert len(report.failed) in (1, 4)  # the envelope whose reply was lost: one or four
    delivered = recorder.delivered()
    assert set(delivered.values()) == {1}  # never twice
    assert set(delivered) == set(report.accepted)
    assert recorder.most > 1


def test_a_wide_transport_delivers_that_many_at_once_and_opens_once() -> None:
    recorder = Recorder(4)
    transport = WideTransport(recorder)
    envelopes = [
        nm.Envelope("a@example.com", (address,), raw=b"Subject: x\r\n\r\nx\r\n")
        for address in OUTSIDERS[:32]
    ]
    with transport:
        threads = [
            threading.Thread(
                target=lambda share=envelopes[n::8]: [transport.send(e) for e in share]
            )
            for n in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert recorder.most == 4
    assert recorder.opens == 1
    assert recorder.delivered() == Counter(OUTSIDERS[:32])


def test_a_wide_async_transport_delivers_that_many_at_once_and_opens_once() -> None:
    recorder = Recorder(4)
    transport = WideAsyncTransport(recorder)
    envelopes = [
        nm.Envelope("a@example.com", (address,), raw=b"Subject: x\r\n\r\nx\r\n")
        for address in OUTSIDERS[:32]
    ]

    async def main() -> None:
        async with transport:
            await asyncio.gather(*(transport.send(e) for e in envelopes))

    asyncio.run(main())
    assert recorder.most == 4
    assert recorder.opens == 1
    assert recorder.delivered() == Counter(OUTSIDERS[:32])


class WirePaced(nm.MemoryTransport):
    """A driver that paces at the wire: it calls _pace itself, where MAIL FROM would go."""

    paces_at_the_wire: ClassVar[bool] = True

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.written: list[float] = []

    def deliver(self, envelope: nm.Envelope) -> nm.Delivery:
        self._pace(len(envelope.recipients))
        self.written.append(self.clock.now)
        return super().deliver(envelope)


class AsyncWirePaced(nm.AsyncMemoryTransport):
    paces_at_the_wire: ClassVar[bool] = True

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.written: list[float] = []

    async def deliver(self, envelope: nm.Envelope) -> nm.Delivery:
        await self._apace(len(envelope.recipients))
        self.written.append(self.clock.now)
        return await super().deliver(envelope)


def test_a_driver_that_paces_at_the_wire_is_counted_there_and_only_there(
    facade: Facade,
) -> None:
    clock = FakeClock()
    transport = AsyncWirePaced(clock) if facade.is_async else WirePaced(clock)
    mailer = facade.mailer(
        settings(per_second=2), transport=transport, clock=clock, sleep=clock.sleep
    )
    for _ in range(3):
        mailer.send(nm.Message(["ann@example.com", "bob@example.com"], "Reset", text="x"))
    # Counted once per envelope: counted twice, the second envelope would wait 2 s.
    assert transport.written == [0.0, 1.0, 2.0]


def test_the_pace_hook_does_nothing_outside_a_mailer() -> None:
    clock = FakeClock()
    transport = WirePaced(clock)
    transport.send(nm.Envelope("a@example.com", ("b@example.com",), raw=b"Subject: x\r\n\r\n"))
    assert transport.written == [0.0]
    assert clock.sleeps == []


@pytest.mark.parametrize(
    ("reply", "throttling"),
    [
        (nm.Reply(421, "4.4.2 Closing connection"), True),
        (nm.Reply(451, "4.7.1 Please try again later"), True),
        (nm.Reply(450, "Too many messages, slow down"), True),
        (nm.Reply(452, "4.3.1 Rate limit exceeded"), True),
        (nm.Reply(451, "4.3.0 Temporary local problem"), False),
        (nm.Reply(452, "4.2.2 Mailbox full"), False),
        (nm.Reply(550, "5.7.1 Too many recipients, rejected"), False),
    ],
)
def test_a_server_says_it_is_throttling_by_421_by_4_7_x_or_in_words(
    reply: nm.Reply, throttling: bool
) -> None:
    from notifymail._delivery import is_throttling

    assert is_throttling(reply) is throttling
