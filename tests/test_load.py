"""One Mailer shared by 8 threads sending 2,000 notifications: every message delivered once,
the throttle held across threads, no connection used by two threads at once.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

import notifymail as nm
from notifymail.transport._driver import Steps
from notifymail.transport.base import Feed
from notifymail.transport.smtp import SmtpTransport
from smtp_servers import FaultyServer

T = TypeVar("T")

THREADS = 8
PER_THREAD = 250
SENDER = nm.SenderSettings(from_address="alerts@example.com")


def _recipient(thread: int, number: int) -> str:
    return f"t{thread}-n{number}@example.net"


class _Overlap:
    """Fails the test if two threads are ever inside ``deliver`` at once (never blocks)."""

    def __init__(self) -> None:
        self._busy = threading.Lock()
        self.overlaps = 0
        self.threads: set[int] = set()

    def enter(self) -> None:
        if not self._busy.acquire(blocking=False):
            self.overlaps += 1
            raise AssertionError("two threads delivered on one transport at once")
        self.threads.add(threading.get_ident())

    def leave(self) -> None:
        self._busy.release()


class _ExclusiveSmtp(SmtpTransport):
    def __init__(self, smtp: nm.SmtpSettings, overlap: _Overlap) -> None:
        super().__init__(smtp)
        self._overlap = overlap

    def _drive(self, steps: Steps[T], feed: Feed | None = None) -> T:  # uses connections
        self._overlap.enter()
        try:
            return super()._drive(steps, feed)
        finally:
            self._overlap.leave()


def _run_threads(target: Callable[[int], None]) -> None:
    errors: list[BaseException] = []

    def run(thread: int) -> None:
        try:
            target(thread)
        except BaseException as error:  # surfaced in the main thread below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []


def test_eight_threads_share_one_mailer_and_connection_and_deliver_each_message_once():
    overlap = _Overlap()
    with FaultyServer() as server:
        settings = nm.EmailSettings(sender=SENDER, smtp=server.settings(timeout=10.0))
        mailer = nm.Mailer(settings, transport=_ExclusiveSmtp(settings.smtp, overlap))
        reports: list[nm.DeliveryReport] = []

        def work(thread: int) -> None:
            with mailer:
                for number in range(PER_THREAD):
                    recipient = _recipient(thread, number)
                    reports.append(mailer.notify(nm.Notification([recipient], "Load", "x\n")))

        _run_threads(work)

    expected = {_recipient(t, n) for t in range(THREADS) for n in range(PER_THREAD)}
    assert all(report.ok for report in reports)
    assert len(reports) == THREADS * PER_THREAD
    assert Counter(a for report in reports for a in report.accepted) == Counter(expected)
    assert server.delivered == dict.fromkeys(expected, 1)
    message_ids = [
        t.content.split(b"Message-ID: ", 1)[1].split(b"\r\n", 1)[0] for t in server.transactions
    ]
    assert len(set(message_ids)) == THREADS * PER_THREAD
    assert server.violations == []  # no command of one thread inside another's transaction
    assert overlap.overlaps == 0
    assert len(overlap.threads) == THREADS
    # One connection at a time served every thread, each for its 100 messages.
    assert server.connections == THREADS * PER_THREAD // 100


class VirtualTime:
    """A clock for threads in which time passes only when every thread is asleep.

    A sleeping thread wakes when the clock reaches its wake-up time, the earliest first;
    between two sleeps a thread runs at one instant, so the time a transport sees is the
    time the throttle admitted the envelope.
    """

    def __init__(self, threads: int) -> None:
        self._now = 0.0
        self._running = threads
        self._sleepers: list[tuple[float, int]] = []
        self._woken: set[int] = set()
        self._sequence = itertools.count()
        self._condition = threading.Condition()

    def clock(self) -> float:
        with self._condition:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._condition:
            ticket = next(self._sequence)
            heapq.heappush(self._sleepers, (self._now + max(seconds, 0.0), ticket))
            self._running -= 1
            self._advance()
            while ticket not in self._woken:
                self._condition.wait()
            self._woken.discard(ticket)

    def finished(self) -> None:
        with self._condition:
            self._running -= 1
            self._advance()

    def _advance(self) -> None:
        if self._running == 0 and self._sleepers:
            wake, ticket = heapq.heappop(self._sleepers)
            self._now = max(self._now, wake)
            self._woken.add(ticket)
            self._running += 1
            self._condition.notify_all()


class _PacedMemory(nm.MemoryTransport):
    """Records when each envelope was handed over, and asserts one delivery at a time."""

    def __init__(self, time: VirtualTime, overlap: _Overlap) -> None:
        super().__init__()
        self._time = time
        self._overlap = overlap
        self.handed: list[tuple[float, int]] = []

    def deliver(self, envelope: nm.Envelope) -> nm.Delivery:
        self._overlap.enter()
        try:
            self.handed.append((self._time.clock(), len(envelope.recipients)))
            return super().deliver(envelope)
        finally:
            self._overlap.leave()


def busiest_second(handed: list[tuple[float, int]]) -> int:
    """The most recipients handed over in any window [t, t + 1 s)."""
    handed = sorted(handed)
    busiest = total = start = 0
    for end in range(len(handed)):
        total += handed[end][1]
        while handed[end][0] - handed[start][0] >= 1.0:
            total -= handed[start][1]
            start += 1
        busiest = max(busiest, total)
    return busiest


def test_the_throttle_holds_across_threads_sharing_one_mailer():
    rate = 40
    time = VirtualTime(THREADS)
    overlap = _Overlap()
    transport = _PacedMemory(time, overlap)
    members = [
        nm.Person(email=_recipient(t, n)) for t in range(THREADS) for n in range(PER_THREAD)
    ]
    settings = nm.EmailSettings(
        sender=SENDER,
        delivery=nm.DeliverySettings(max_recipients_per_second=rate, max_recipients_per_message=3),
    )
    mailer = nm.Mailer(
        settings,
        transport=transport,
        directory=nm.InMemoryDirectory(members),
        clock=time.clock,
        sleep=time.sleep,
    )
    reports: list[nm.DeliveryReport] = []

    def work(thread: int) -> None:
        try:
            # Alternate one outsider alone with three account holders in one envelope.
            for number in range(0, PER_THREAD, 4):
                group = [_recipient(thread, n) for n in range(number, min(number + 3, PER_THREAD))]
                reports.append(mailer.notify(nm.Notification(group, "Paced", "x\n")))
                if number + 3 < PER_THREAD:
                    outsider = f"outsider-{thread}-{number}@example.org"
                    reports.append(mailer.notify(nm.Notification([outsider], "Paced", "x\n")))
        finally:
            time.finished()

    _run_threads(work)

    handed_total = sum(count for _, count in transport.handed)
    assert all(report.ok for report in reports)
    assert handed_total == sum(len(report.accepted) for report in reports)
    assert busiest_second(transport.handed) == rate  # full windows, never more
    # Paced, not stalled: the whole run takes about as long as the rate demands.
    duration = max(t for t, _ in transport.handed)
    assert handed_total / rate - 1 <= duration <= handed_total / rate + 1
    assert overlap.overlaps == 0
    sent = Counter(r for report in reports for r in report.accepted)
    assert set(sent.values()) == {1}
    assert len(transport.outbox) == len(transport.handed)
