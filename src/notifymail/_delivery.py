"""The mailer's core, written once for the blocking and the asyncio facades.

Handing an envelope over (retries, which recipients to try again), the throttle's
bookkeeping and the report are decisions, not I/O, so they live here without a socket,
a clock or a sleep: `hand_over` is a generator that yields what to do next
(`Attempt`: wait this long, then send this envelope) and is sent what the
transport said (a [`Delivery`][notifymail.Delivery] or the
[`DeliveryError`][notifymail.DeliveryError]); `Throttle`
is told the time and answers how long to wait. ``Mailer`` drives them with blocking
calls and ``AsyncMailer`` with ``await``, so neither holds a copy of the rules.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from notifymail.errors import DeliveryError
from notifymail.values import Delivery, Envelope, Reply

if TYPE_CHECKING:
    from notifymail.settings import RetryPolicy

__all__ = [
    "Attempt",
    "DeliveryReport",
    "HandOver",
    "Handed",
    "Lanes",
    "Tally",
    "Throttle",
    "hand_over",
    "is_throttling",
    "log_summary",
    "send_report",
]

logger = logging.getLogger("notifymail.mailer")

_WINDOW = 1.0  # seconds: the throttle's window
# A wait rounded down to nothing would spin; a clock that has not yet reached the end
# of the window by a rounding error is simply asked to wait a microsecond more.
_MIN_WAIT = 1e-6


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """What happened to every recipient of a ``send`` or ``notify``.

    Each recipient is in exactly one of ``accepted``, ``refused`` (the server said no to
    that recipient, with its last reply) and ``failed`` (never handed over: connection,
    TLS, authentication, or retries exhausted). ``deliveries`` lists every envelope the
    server took, retries included, in order.
    """

    deliveries: tuple[Delivery, ...] = ()
    accepted: tuple[str, ...] = ()
    refused: Mapping[str, Reply] = field(default_factory=dict)
    failed: Mapping[str, DeliveryError] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "deliveries", tuple(self.deliveries))
        object.__setattr__(self, "accepted", tuple(self.accepted))
        object.__setattr__(self, "refused", MappingProxyType(dict(self.refused)))
        object.__setattr__(self, "failed", MappingProxyType(dict(self.failed)))

    @property
    def ok(self) -> bool:
        """True when every recipient accepted the message."""
        return not self.refused and not self.failed


@dataclass(frozen=True, slots=True)
class Attempt:
    """An instruction of `hand_over`: wait ``wait`` seconds, then send ``envelope``."""

    envelope: Envelope
    wait: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Handed:
    """What became of one envelope's recipients once `hand_over` is done with it.

    ``error`` is the last error when no recipient of the last attempt accepted, else None.
    """

    deliveries: tuple[Delivery, ...]
    accepted: tuple[str, ...]
    refused: Mapping[str, Reply]
    failed: Mapping[str, DeliveryError]
    error: DeliveryError | None


HandOver = Generator[Attempt, "Delivery | DeliveryError", Handed]


def hand_over(envelope: Envelope, retry: RetryPolicy, lanes: Lanes | None = None) -> HandOver:
    """Deliver one envelope with retries: yields attempts, is sent their outcomes.

    Only recipients that have not accepted are ever tried again: the whole envelope
    after a retryable error, the recipients alone after a 4xx refusal. Returns (as the
    generator's value) what became of every recipient. Each outcome is shown to
    ``lanes``, whose width a throttling server narrows.
    """
    deliveries: list[Delivery] = []
    accepted: dict[str, None] = {}
    refused: dict[str, Reply] = {}
    failed: dict[str, DeliveryError] = {}
    pending = envelope
    attempt = 1
    wait = 0.0
    while True:
        outcome = yield Attempt(pending, wait)
        if lanes is not None:
            lanes.observe(outcome)
        error: DeliveryError | None = None
        if isinstance(outcome, DeliveryError):
            error = outcome
            if not error.refused:  # the envelope as a whole failed
                if error.retryable and attempt < retry.max_attempts:
                    logger.debug("attempt %d failed, will retry: %s", attempt, error)
                    wait = retry.delay(attempt)
                    attempt += 1
                    continue
                failed = dict.fromkeys(pending.recipients, error)
                break
            # The server refused every recipient: the same as a delivery to no one.
            delivery = Delivery(pending.message_id, accepted=(), refused=error.refused)
        else:
            delivery = outcome
            deliveries.append(delivery)
        accepted.update(dict.fromkeys(delivery.accepted))
        refused.update(delivery.refused)
        again = tuple(address for address, reply in delivery.refused.items() if reply.is_transient)
        if not again or attempt >= retry.max_attempts:
            break
        for address in again:
            del refused[address]
        logger.debug("attempt %d: %d recipient(s) refused for now", attempt, len(again))
        pending = envelope.with_recipients(again)
        wait = retry.delay(attempt)
        attempt += 1
    return Handed(
        deliveries=tuple(deliveries),
        accepted=tuple(accepted),
        refused=refused,
        failed=failed,
        error=error,
    )


_THROTTLING = re.compile(r"throttl|rate.?limit|too many|too fast|slow down", re.IGNORECASE)


def is_throttling(reply: Reply) -> bool:
    """A reply by which a server says it is being sent too much: 421 (closing), or a 4xx
    whose enhanced status is 4.7.x or whose text says so.
    """
    if reply.code == 421:
        return True
    return reply.is_transient and (
        reply.text.startswith("4.7.") or _THROTTLING.search(reply.text) is not None
    )


class Lanes:
    """The envelopes of one ``notify`` and how many may be handed over at once.

    ``width`` lanes start, as many as the transport's concurrency (and no more than
    there are envelopes); each takes the next envelope while its number is below the
    current limit. Every throttling reply (`is_throttling`) lowers the limit by
    one, never below one, for the rest of the ``notify``: a lane above it finishes the
    envelope in its hands and stops, and lane 0 always runs, so every envelope is taken
    exactly once. Safe for threads and tasks.
    """

    def __init__(self, envelopes: Iterable[Envelope], concurrency: int) -> None:
        self._pending = deque(envelopes)
        self._lock = threading.Lock()
        self.width = max(1, min(concurrency, len(self._pending)))
        self._limit = self.width

    def next(self, lane: int) -> Envelope | None:
        """The next envelope for ``lane``, or None when it should stop."""
        with self._lock:
            if lane >= self._limit or not self._pending:
                return None
            return self._pending.popleft()

    def observe(self, outcome: Delivery | DeliveryError) -> None:
        """Narrow the lanes by one when ``outcome`` says the server is throttling."""
        if isinstance(outcome, DeliveryError):
            replies = [outcome.reply, *outcome.refused.values()]
        else:
            replies = list(outcome.refused.values())
        if any(reply is not None and is_throttling(reply) for reply in replies):
            with self._lock:
                if self._limit > 1:
                    self._limit -= 1
                    logger.info("server is throttling: %d envelope(s) at once", self._limit)


class Tally:
    """A report being filled in as envelopes are handed over, from any thread or task."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deliveries: list[Delivery] = []
        self._accepted: dict[str, None] = {}
        self._refused: dict[str, Reply] = {}
        self._failed: dict[str, DeliveryError] = {}

    def add(self, handed: Handed) -> None:
        """Record what became of one envelope's recipients."""
        with self._lock:
            self._deliveries.extend(handed.deliveries)
            self._accepted.update(dict.fromkeys(handed.accepted))
            self._refused.update(handed.refused)
            self._failed.update(handed.failed)

    def report(self) -> DeliveryReport:
        """The report of everything recorded so far."""
        with self._lock:
            return DeliveryReport(
                deliveries=tuple(self._deliveries),
                accepted=tuple(self._accepted),
                refused=self._refused,
                failed=self._failed,
            )


def log_summary(envelopes: int, report: DeliveryReport) -> None:
    """One INFO line per ``notify``: what became of its recipients."""
    logger.info(
        "notify: %d envelope(s), %d accepted, %d refused, %d failed",
        envelopes,
        len(report.accepted),
        len(report.refused),
        len(report.failed),
    )


class Throttle:
    """Admits at most ``rate`` recipients in any one-second window, across threads and tasks.

    It never sleeps: it answers how long to wait, and the caller waits that long (with a
    blocking sleep or an ``await``) before asking again, so one object serves both
    facades. It reads the caller's clock under its lock, so admissions are recorded in
    the order of their times.

    A recipient counts from the moment it is admitted until one second after its
    hand-over is over (`finish`). The server sees it somewhere in between, however
    late the hand-over started or however long it took, so no one-second window at the
    server holds more than ``rate``: a window counted from admission alone would let a
    hand-over that was admitted early and reached the server late share a window with
    the next second's admissions. A batch larger than ``rate`` is admitted alone, once
    nothing else counts, rather than never.
    """

    def __init__(self, rate: int) -> None:
        self._rate = rate
        self._lock = threading.Lock()
        self._in_flight = 0  # admitted, hand-over not over
        self._finished: deque[tuple[float, int]] = deque()  # (expiry time, recipients)
        self._in_window = 0  # recipients in _finished

    def reserve(self, recipients: int, clock: Callable[[], float]) -> float:
        """Admit ``recipients`` now and return 0.0, or return the seconds to wait first."""
        with self._lock:
            now = clock()
            while self._finished and self._finished[0][0] <= now:
                self._in_window -= self._finished.popleft()[1]
            counted = self._in_flight + self._in_window
            if counted == 0 or counted + recipients <= self._rate:
                self._in_flight += recipients
                return 0.0
            # A hand-over still under way frees its room a second after it ends, at best.
            soonest = self._finished[0][0] - now if self._finished else _WINDOW
            return max(soonest, _MIN_WAIT)

    def finish(self, recipients: int, clock: Callable[[], float]) -> None:
        """The hand-over of ``recipients`` admitted earlier is over (done or failed)."""
        with self._lock:
            self._in_flight -= recipients
            self._finished.append((clock() + _WINDOW, recipients))
            self._in_window += recipients


def send_report(handed: Handed) -> DeliveryReport:
    """The report of a ``send``; raises the error when no recipient took the message."""
    if handed.error is not None and not handed.accepted:
        raise handed.error
    tally = Tally()
    tally.add(handed)
    return tally.report()
