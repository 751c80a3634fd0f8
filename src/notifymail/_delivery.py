"""The mailer's core, written once for the blocking and the asyncio facades.

Handing an envelope over (retries, which recipients to try again), the throttle's
bookkeeping and the report are decisions, not I/O, so they live here without a socket,
a clock or a sleep: `hand_over` is a generator that yields what to do next
(`Attempt`: wait this long, then send this envelope) and is sent what the
transport said (a [`Delivery`][notifymail.Delivery] or the
[`DeliveryError`][notifymail.DeliveryError]); `Throttle`
is told the time and answers how long to wait; `Dispatch` hands a notification's
envelopes to the transport's connections as each can take one, retries included.
``Mailer`` drives them with blocking calls and ``AsyncMailer`` with ``await``, so
neither holds a copy of the rules.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import re
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

from notifymail._address import address_key
from notifymail.errors import DeliveryError
from notifymail.values import Delivery, Envelope, Reply

if TYPE_CHECKING:
    from notifymail.settings import RetryPolicy

__all__ = [
    "Attempt",
    "DeliveryReport",
    "Dispatch",
    "HandOver",
    "Handed",
    "Handing",
    "Suppressions",
    "Tally",
    "Throttle",
    "hand_over",
    "is_throttling",
    "log_summary",
    "record_hard_bounces",
    "says_throttling",
    "send_report",
    "split_suppressed",
]

logger = logging.getLogger("notifymail.mailer")

_WINDOW = 1.0  # seconds: the throttle's window
# A wait rounded down to nothing would spin; a clock that has not yet reached the end
# of the window by a rounding error is simply asked to wait a microsecond more.
_MIN_WAIT = 1e-6
# A 4xx reply whose text says that the server is limiting the client.


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """What happened to every recipient of a ``send`` or ``notify``.

    Each recipient is in exactly one of ``accepted``, ``refused`` (the server said no to
    that recipient, with its last reply), ``failed`` (never handed over: connection,
    TLS, authentication, or retries exhausted) and ``suppressed`` (on the mailer's
    suppression list, so never handed over; only a notification's recipients).
    ``deliveries`` lists every envelope the server took, retries included, in order.
    """

    deliveries: tuple[Delivery, ...] = ()
    accepted: tuple[str, ...] = ()
    refused: Mapping[str, Reply] = field(default_factory=dict)
    failed: Mapping[str, DeliveryError] = field(default_factory=dict)
    suppressed: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "deliveries", tuple(self.deliveries))
        object.__setattr__(self, "accepted", tuple(self.accepted))
        object.__setattr__(self, "refused", MappingProxyType(dict(self.refused)))
        object.__setattr__(self, "failed", MappingProxyType(dict(self.failed)))
        object.__setattr__(self, "suppressed", tuple(self.suppressed))

    @property
    def ok(self) -> bool:
        """True when no recipient was refused or failed; a suppressed one is no failure."""
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
    ``suppressed``: recipients left out at delivery time (an outbox's envelope whose
    recipients joined the suppression list after it was enqueued).
    """

    deliveries: tuple[Delivery, ...]
    accepted: tuple[str, ...]
    refused: Mapping[str, Reply]
    failed: Mapping[str, DeliveryError]
    error: DeliveryError | None
    suppressed: tuple[str, ...] = ()


HandOver = Generator[Attempt, "Delivery | DeliveryError", Handed]


def hand_over(envelope: Envelope, retry: RetryPolicy) -> HandOver:
    """Deliver one envelope with retries: yields attempts, is sent their outcomes.

    Only recipients that have not accepted are ever tried again: the whole envelope
    after a retryable error, the recipients alone after a 4xx refusal. Returns (as the
    generator's value) what became of every recipient.
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
        if not delivery.refused:
            break
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


def says_throttling(outcome: Delivery | DeliveryError) -> bool:
    """Whether a reply in ``outcome`` (the error's, or a recipient's) is throttling."""
    if isinstance(outcome, DeliveryError):
        replies = [outcome.reply, *outcome.refused.values()]
    else:
        replies = list(outcome.refused.values())
    return any(reply is not None and is_throttling(reply) for reply in replies)


class Tally:
    """A report being filled in as envelopes are handed over, from any thread or task.

    ``suppressed`` are the recipients left out before any hand-over.
    """

    def __init__(self, suppressed: Iterable[str] = ()) -> None:
        self._suppressed = dict.fromkeys(suppressed)
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
            self._suppressed.update(dict.fromkeys(handed.suppressed))

    def report(self) -> DeliveryReport:
        """The report of everything recorded so far."""
        with self._lock:
            return DeliveryReport(
                deliveries=tuple(self._deliveries),
                accepted=tuple(self._accepted),
                refused=self._refused,
                failed=self._failed,
                suppressed=tuple(self._suppressed),
            )


def log_summary(envelopes: int, report: DeliveryReport) -> None:
    """One INFO line per ``notify``: what became of its recipients."""
    logger.info(
        "notify: %d envelope(s), %d accepted, %d refused, %d failed, %d suppressed",
        envelopes,
        len(report.accepted),
        len(report.refused),
        len(report.failed),
        len(report.suppressed),
    )


class Suppressions(Protocol):
    """A suppression list: the addresses notifications are no longer sent to.

    A [`Mailer`][notifymail.Mailer] given one asks ``is_suppressed`` for every recipient
    of a notification before any is handed over, and calls ``add(address, "hard
    bounce")`` when a server refuses an address with the enhanced status 5.1.1. An
    implementation must compare addresses case-insensitively and may be called from
    several threads.
    """

    def is_suppressed(self, address: str) -> bool: ...

    def add(self, address: str, reason: str) -> None: ...

    def remove(self, address: str) -> None: ...


def split_suppressed(
    recipients: Iterable[str], is_suppressed: Callable[[str], bool]
) -> tuple[list[str], tuple[str, ...]]:
    """``recipients`` (normalised) split into those to send to and those on the list.

    Each address is asked about once (a list in a database is asked per address); a
    suppressed address given twice is listed once, as first spelled.
    """
    verdicts: dict[str, bool] = {}
    kept: list[str] = []
    suppressed: list[str] = []
    for address in recipients:
        key = address_key(address)
        known = verdicts.get(key)
        if known is None:
            known = verdicts[key] = is_suppressed(address)
            if known:
                suppressed.append(address)
        if not known:
            kept.append(address)
    return kept, tuple(suppressed)


# An enhanced status code (RFC 3463) opens the reply's text: class.subject.detail.
_ENHANCED_STATUS = re.compile(r"\s*(\d\.\d{1,3}\.\d{1,3})(?!\S)")
_NO_SUCH_USER = "5.1.1"  # RFC 3463: bad destination mailbox address


def record_hard_bounces(refused: Mapping[str, Reply], add: Callable[[str, str], object]) -> None:
    """Add to the suppression list (``add``) every recipient of ``refused`` that a server
    refused for good as having no such mailbox (5.1.1), with the reason ``"hard bounce"``.

    A list that cannot be written is logged, not raised: the message has gone out, and
    an error now would lose the report and invite the host to send it all again.
    """
    for address, reply in refused.items():
        status = _ENHANCED_STATUS.match(reply.text)
        if not (reply.is_permanent and status is not None and status[1] == _NO_SUCH_USER):
            continue
        try:
            add(address, "hard bounce")
        except Exception as error:
            logger.warning("could not add %s to the suppression list: %r", address, error)


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


class Handing(Protocol):
    """What a mailer's feed hands out to its transport's connections, and tells what
    became of each envelope: a notification's `Dispatch`, or a batch of envelopes an
    outbox leased (``_drain.Claimed``)."""

    def take(self, now: float, *, ready_only: bool) -> Attempt | None: ...

    def give_back(self, envelope: Envelope) -> None: ...

    def prepare(self) -> None: ...

    def done(self, envelope: Envelope, outcome: Delivery | DeliveryError, now: float) -> None: ...


class Dispatch:
    """A notification's envelopes, handed to the transport's connections as each can
    take one, and what became of them (``handed``, in the order each was done with).

    Every envelope is handed over by its own `hand_over` plan, so retries follow the
    retry policy and never reach a recipient that accepted. ``take`` gives a retry whose
    delay is over first, then a first attempt, in order; a caller that may wait (its
    connection is idle) is otherwise given the retry due first, with the time left
    until it is due. ``workers`` callers take at once; after each throttling reply
    (`is_throttling`) one fewer does, never fewer than one, for the rest of the
    notification: the next idle caller is given None and stops. Safe to share by
    threads and tasks.
    """

    def __init__(self, envelopes: Iterable[Envelope], retry: RetryPolicy, *, workers: int) -> None:
        self.handed: list[Handed] = []
        self._retry = retry
        self._fresh = deque(envelopes)
        self._ready: deque[tuple[HandOver, Envelope]] = deque()  # given back unsent
        # Retries by due time: (due, tie-breaker, plan, envelope, the delay asked for).
        self._later: list[tuple[float, int, HandOver, Envelope, float]] = []
        self._in_flight: dict[int, HandOver] = {}
        self._order = itertools.count()  # breaks ties between retries due at one time
        self._workers = workers
        self._limit = workers
        self._closed = False
        self._lock = threading.Lock()

    def take(self, now: float, *, ready_only: bool) -> Attempt | None:
        """The next envelope to send, with how long to wait first (0 with ``ready_only``).

        None with ``ready_only``: nothing can go at once. None otherwise: nothing is
        left for this caller (every envelope is done, or with another caller), or one
        caller too many is taking; either way the caller stops.
        """
        with self._lock:
            later = self._later
            if self._closed or self._workers > self._limit:
                plan = None
            elif self._ready:
                plan, envelope = self._ready.popleft()
                wait = 0.0
            elif later and later[0][0] <= now:
                _, _, plan, envelope, _ = heapq.heappop(later)
                wait = 0.0
            elif self._fresh:
                plan = hand_over(self._fresh.popleft(), self._retry)
                envelope = next(plan).envelope
                wait = 0.0
            elif later and not ready_only:
                due, _, plan, envelope, delay = heapq.heappop(later)
                wait = min(due - now, delay)  # never more than asked, by a rounding error
            else:
                plan = None
            if plan is None:
                if not ready_only:
                    self._workers -= 1
                return None
            self._in_flight[id(envelope)] = plan
            return Attempt(envelope, wait)

    def close(self) -> None:
        """Hand out nothing more: the notification is being given up (an interrupt, an
        error in a worker). Envelopes under way are still reported with ``done``."""
        with self._lock:
            self._closed = True

    def prepare(self) -> None:
        """Serialise the envelope ``take`` will most likely give next (a retry may come
        first): called while a connection waits for the server."""
        with self._lock:
            envelope = (
                self._ready[0][1] if self._ready else self._fresh[0] if self._fresh else None
            )
        if envelope is not None:
            envelope._parts()  # cached on the envelope

    def give_back(self, envelope: Envelope) -> None:
        """An envelope ``take`` gave that was not sent after all (the throttle said wait)."""
        with self._lock:
            self._ready.appendleft((self._in_flight.pop(id(envelope)), envelope))

    def done(self, envelope: Envelope, outcome: Delivery | DeliveryError, now: float) -> None:
        """Record what became of an envelope ``take`` gave; schedule its retry, if any."""
        with self._lock:
            plan = self._in_flight.pop(id(envelope))
            if self._limit > 1 and says_throttling(outcome):
                self._limit -= 1
                logger.info("server is throttling: %d envelope(s) at once", self._limit)
            try:
                attempt = plan.send(outcome)
            except StopIteration as finished:
                self.handed.append(finished.value)
                return
            due = now + attempt.wait
            heapq.heappush(
                self._later, (due, next(self._order), plan, attempt.envelope, attempt.wait)
            )
