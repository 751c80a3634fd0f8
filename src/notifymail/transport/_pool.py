"""What a pool of SMTP connections decides, with no I/O, for both SMTP drivers.

Which connection serves the next envelope, when a new one may be opened, when one is
retired (after 100 messages or 300 seconds, or at a connection-level error) and when an
idle one is closed (after 30 seconds); and, on one connection, which envelope each event
belongs to and which envelope goes out once more on a new connection. The blocking
driver waits on a ``threading.Condition`` and the asyncio driver on an
``asyncio.Condition``; nothing else about the pool differs between them.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from notifymail.errors import DeliveryError
from notifymail.protocol import Delivered, Failed
from notifymail.values import Delivery, Envelope

if TYPE_CHECKING:
    import asyncio

__all__ = ["Lane", "Limits", "Pool", "Single", "Slot"]

C = TypeVar("C")


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """How long a connection serves: messages carried, seconds open, seconds idle."""

    messages: int = 100
    age: float = 300.0
    idle: float = 30.0


@dataclass(slots=True, eq=False)
class Slot(Generic[C]):
    """A pooled connection and its record: when it opened, when it was last handed
    back, how many transactions it started."""

    connection: C
    opened: float
    used: float
    messages: int = 0


class Pool(Generic[C]):
    """Up to ``size`` connections: the idle ones, and a count of those handed out.

    Not thread-safe: a driver calls it under the lock of its condition, and waits on
    that condition when ``acquire`` says so.
    """

    def __init__(self, size: int, limits: Limits, clock: Callable[[], float] = time.monotonic):
        self.size = size
        self.limits = limits
        self.clock = clock
        self._idle: list[Slot[C]] = []  # the one used last at the end
        self._out = 0  # handed out, or being opened

    def acquire(self) -> Slot[C] | bool:
        """The idle connection used last, or True when the caller may open a new one
        (it counts as handed out from now on), or False: wait for a ``release``.

        Call ``expired`` first, so that an idle connection handed out is fit to serve.
        """
        if self._idle:
            self._out += 1
            return self._idle.pop()
        if self._out < self.size:
            self._out += 1
            return True
        return False

    def opened(self, connection: C) -> Slot[C]:
        """The slot of a connection the caller opened after ``acquire`` said True."""
        now = self.clock()
        return Slot(connection, opened=now, used=now)

    def open_failed(self) -> None:
        """Opening the connection ``acquire`` allowed failed: the place is free again."""
        self._out -= 1

    def has_room(self, slot: Slot[C]) -> bool:
        """Whether the connection may start one more transaction."""
        limits = self.limits
        return slot.messages < limits.messages and self.clock() - slot.opened < limits.age

    def release(self, slot: Slot[C], *, broken: bool) -> bool:
        """Take a connection back; True when it is kept for the next envelope, False
        when the caller must close it (``broken``), or say QUIT and close it (spent)."""
        self._out -= 1
        if broken or not self.has_room(slot):
            return False
        slot.used = self.clock()
        self._idle.append(slot)
        return True

    def expired(self) -> list[Slot[C]]:
        """Remove and return the idle connections to close: idle or open too long."""
        now = self.clock()
        limits = self.limits
        stale = [
            slot
            for slot in self._idle
            if now - slot.used >= limits.idle or now - slot.opened >= limits.age
        ]
        if stale:
            self._idle = [slot for slot in self._idle if slot not in stale]
        return stale

    def drain(self) -> list[Slot[C]]:
        """Remove and return every idle connection: the transport is closing."""
        idle, self._idle = self._idle, []
        return idle


class Lane:
    """The envelopes in flight on one connection, oldest first, those to send once more
    on a new connection, and the outcome being recorded (see ``_driver.Record``).

    The protocol core ends every envelope in one ``Delivered`` or ``Failed``, in the
    order they were started; a ``Failed`` with ``reconnect`` (the server dropped a kept
    connection before taking anything of that envelope) sends it again, once.
    """

    def __init__(self) -> None:
        self._in_flight: deque[Envelope] = deque()
        self._again: deque[Envelope] = deque()
        self._reconnected: set[int] = set()
        self.recording: asyncio.Future[Any] | None = None

    @property
    def busy(self) -> bool:
        """Whether an envelope awaits its event."""
        return bool(self._in_flight)

    def started(self, envelope: Envelope) -> None:
        self._in_flight.append(envelope)

    def ended(self, event: Delivered | Failed) -> tuple[Envelope, Delivery | DeliveryError] | None:
        """The envelope ``event`` ends and its outcome; None when it goes out again."""
        envelope = self._in_flight.popleft()
        if isinstance(event, Delivered):
            return envelope, event.delivery
        if event.reconnect and id(envelope) not in self._reconnected:
            self._reconnected.add(id(envelope))
            self._again.append(envelope)
            return None
        return envelope, event.error

    def again(self) -> Envelope | None:
        """The next envelope to send again on a new connection, if any."""
        return self._again.popleft() if self._again else None


class Single:
    """A feed of one envelope and its outcome: how ``deliver`` runs one transaction
    through the same path as a mailer's stream of envelopes."""

    def __init__(self, envelope: Envelope) -> None:
        self._envelope: Envelope | None = envelope
        self._outcome: Delivery | DeliveryError | None = None

    def ready(self) -> Envelope | None:
        """Nothing to follow the envelope: it is the only one."""
        return None

    def prepare(self) -> None:
        """Nothing to prepare: the envelope is already under way."""

    def take(self) -> Envelope | None:
        """The envelope, once."""
        envelope, self._envelope = self._envelope, None
        return envelope

    def done(self, envelope: Envelope, outcome: Delivery | DeliveryError) -> None:
        self._outcome = outcome

    def result(self) -> Delivery:
        """The delivery, or raise the envelope's error."""
        outcome = self._outcome
        if isinstance(outcome, DeliveryError):
            raise outcome
        assert outcome is not None  # noqa: S101 - every envelope taken ends in an outcome
        return outcome
