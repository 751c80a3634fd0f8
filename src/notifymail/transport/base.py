"""The abstract transports, [`Transport`][notifymail.Transport] and its asyncio twin
[`AsyncTransport`][notifymail.AsyncTransport], whose subclasses implement one method,
``deliver``.

Both bases share the bookkeeping that is not I/O (when to open, when to close, what to
log); only the calls that wait differ. The values they pass (``Envelope``, ``Reply``,
``Delivery``) live in ``notifymail.values``; they are re-exported here for transport
authors.

A mailer hands a notification's envelopes over through a feed (`Feed`, `AsyncFeed`):
a transport takes the next envelope when it can send it and reports each outcome, so a
transport that keeps several connections, or pipelines one message behind another,
decides when; the base takes them one at a time through ``deliver``.
"""

from __future__ import annotations

import abc
import logging
import threading
from collections.abc import Iterable
from contextvars import ContextVar
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from typing_extensions import Self

from notifymail.errors import DeliveryError
from notifymail.values import Delivery, Envelope, Reply

if TYPE_CHECKING:
    import asyncio

    from notifymail.settings import Security

__all__ = ["AsyncTransport", "Delivery", "Envelope", "Reply", "Transport"]

logger = logging.getLogger("notifymail.transport")

T = TypeVar("T")


class Pacer(Protocol):
    """A mailer's throttle as a transport sees it, for the envelope being sent now."""

    def reserve(self, recipients: int) -> float:
        """Count ``recipients`` from now and return 0.0, or return the seconds to wait."""

    def wait(self, seconds: float) -> None:
        """Wait before asking again (the mailer's own sleep)."""


class AsyncPacer(Protocol):
    """`Pacer` for asyncio transports: the wait is awaited."""

    def reserve(self, recipients: int) -> float:
        """Count ``recipients`` from now and return 0.0, or return the seconds to wait."""

    async def wait(self, seconds: float) -> None:
        """Wait before asking again (the mailer's own sleep)."""


class Feed(Protocol):
    """Envelopes for a transport to send as it can take them, and where outcomes go.

    The feed paces them by the mailer's throttle itself: a recipient counts from when
    ``ready`` or ``next`` hands its envelope out, right before its MAIL FROM is written.
    """

    def ready(self) -> Envelope | None:
        """An envelope to send at once, if one is ready; never waits. A connection with
        envelopes in flight asks it whether one more may follow them."""

    def next(self) -> Envelope | None:
        """The envelope to send next, once it may go (a retry's delay, the throttle);
        None when nothing is left for this caller, who then stops."""

    def prepare(self) -> None:
        """Do ahead, while a connection waits for the server, what comes next: serialise
        the envelope likely to go next, and whatever else the feed's source can work out
        before the reply. The work is then off the path between a reply and the next
        write."""

    def done(self, envelope: Envelope, outcome: Delivery | DeliveryError) -> None:
        """What became of an envelope ``ready`` or ``next`` handed out."""


class AsyncFeed(Protocol):
    """`Feed` for asyncio transports: ``next`` is awaited."""

    def ready(self) -> Envelope | None:
        """As `Feed.ready`."""

    async def next(self) -> Envelope | None:
        """As `Feed.next`, waiting without blocking the event loop."""

    def prepare(self) -> None:
        """As `Feed.prepare`."""

    def done(
        self, envelope: Envelope, outcome: Delivery | DeliveryError
    ) -> asyncio.Future[Any] | None:
        """What became of an envelope ``ready`` or ``next`` handed out; a future when
        recording it waits (an outbox's store, in a thread). The transport never cancels
        it, and waits for it before it sends any message's content or reports another
        outcome; meanwhile it may take the next envelope (``ready``, ``next``) and send
        its commands."""


async def uncancelled(future: asyncio.Future[T]) -> tuple[T, asyncio.CancelledError | None]:
    """Wait for ``future`` without ever cancelling it: its result (or raise its error),
    and the cancellation of the caller that came meanwhile, if one did, for the caller
    to raise once it has dealt with the result."""
    import asyncio

    try:
        return await asyncio.shield(future), None
    except asyncio.CancelledError as cancelled:
        await asyncio.wait([future])
        return future.result(), cancelled


async def finished(future: asyncio.Future[T]) -> T:
    """`uncancelled`'s result; a cancellation that came meanwhile is raised after it."""
    value, cancelled = await uncancelled(future)
    if cancelled is not None:
        raise cancelled
    return value


# The throttle of the mailer whose send is under way in this thread or task, installed by
# the mailer around each hand-over: a transport shared by mailers paces each one's sends
# by that mailer's own throttle, and the pool's threads and tasks all see it.
PACER: ContextVar[Pacer | None] = ContextVar("notifymail_pacer", default=None)
ASYNC_PACER: ContextVar[AsyncPacer | None] = ContextVar("notifymail_async_pacer", default=None)


class _Lifecycle:
    """What both bases share: when to open and close (see
    [`Transport`][notifymail.Transport]), how many envelopes at once, where the throttle is
    counted, and the logs.
    """

    #: True for a driver that calls ``_pace`` (or ``_apace``) itself, right before it
    #: writes MAIL FROM; otherwise the base paces just before handing the envelope over.
    paces_at_the_wire: ClassVar[bool] = False

    _open_count: int  # with blocks entered and not yet left, across threads or tasks
    _is_open: bool  # open() has run and close() has not

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        # Set here rather than in __init__ so a subclass that forgets super().__init__()
        # still gets working bookkeeping.
        instance = super().__new__(cls)
        instance._open_count = 0
        instance._is_open = False
        return instance

    @property
    def concurrency(self) -> int:
        """How many envelopes this transport delivers at once (1 unless a subclass says so).

        With more than one, ``deliver`` may run in that many threads (or tasks) at once.
        """
        return 1

    def _closing(self) -> bool:
        """True, once, when the outermost block has ended on an open transport."""
        if self._open_count == 0 and self._is_open:
            self._is_open = False
            return True
        return False

    def _log_failure(self, envelope: Envelope, error: DeliveryError) -> None:
        logger.warning(
            "%s: %s failed for %d recipient(s): %s",
            type(self).__name__,
            envelope.message_id or "message",
            len(envelope.recipients),
            error,
        )

    def _log_delivery(self, delivery: Delivery) -> None:
        logger.debug(
            "%s: %s accepted by %d, refused by %d",
            type(self).__name__,
            delivery.message_id or "message",
            len(delivery.accepted),
            len(delivery.refused),
        )


class Transport(_Lifecycle, abc.ABC):
    """Hands envelopes to a mail system. Subclass it and implement
    [`deliver`][notifymail.transport.base.Transport.deliver].

    The base provides the rest: [`send`][notifymail.transport.base.Transport.send],
    [`send_many`][notifymail.transport.base.Transport.send_many], the context manager,
    logging, and a lock so that a transport shared by threads delivers one envelope at
    a time (`concurrency` at a time, when a subclass raises it). ``open`` and
    ``close`` do nothing unless overridden. ``open`` runs before the first envelope, not
    on entering a ``with`` block, so a server that is down fails the send (which a
    mailer retries), never the ``with`` statement; once open, the transport stays open
    until the outermost block ends and ``close`` runs. Outside a ``with`` block each
    ``send`` and ``send_many`` call opens and closes around itself.

    The sending mailer's throttle is counted just before ``deliver`` runs, in its turn,
    or, for a driver whose `paces_at_the_wire` is True, wherever it calls `_pace`.
    """

    _lock: threading.RLock  # open, close and the count of blocks
    _slots: threading.BoundedSemaphore | None  # deliveries under way: concurrency at most

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        instance = super().__new__(cls, *args, **kwargs)
        instance._lock = threading.RLock()
        instance._slots = None
        return instance

    @abc.abstractmethod
    def deliver(self, envelope: Envelope) -> Delivery:
        """Deliver one envelope.

        Return a [`Delivery`][notifymail.Delivery], with partial refusals in ``refused``. Raise a
        [`DeliveryError`][notifymail.DeliveryError] subclass when the envelope failed as a whole,
        including when every recipient was refused.
        """

    def open(self) -> None:
        """Prepare for delivery (connect, log in). Called before the first envelope."""

    def close(self) -> None:
        """Release what [`open`][notifymail.transport.base.Transport.open] took. Called once, when
        the outermost block ends."""

    def probe(self, security: Security | None = None) -> bool:
        """Check the way to the mail system as delivering would, sending nothing.

        Return True once the check passed, or False when there is nothing to check (the
        base class); raise the [`DeliveryError`][notifymail.DeliveryError] a delivery would.
        ``security`` asks an SMTP transport to try another security mode instead of its
        own (what ``verify --autocorrect`` does); other transports ignore it.
        """
        return False

    def send(self, envelope: Envelope) -> Delivery:
        """Deliver one envelope and return what the server did with it."""
        pacer = None if self.paces_at_the_wire else PACER.get()
        with self:
            if pacer is None:
                with self._slot():
                    return self._deliver_logged(envelope)
            # Counted in its turn, right before deliver; waiting happens outside the turn,
            # so a sender held back by the throttle never holds the transport from others.
            recipients = len(envelope.recipients)
            while True:
                with self._slot():
                    wait = pacer.reserve(recipients)
                    if not wait:
                        return self._deliver_logged(envelope)
                pacer.wait(wait)

    def send_many(self, envelopes: Iterable[Envelope]) -> list[Delivery]:
        """Deliver envelopes in order, over one connection where the transport has one.

        Stops at the first envelope that fails as a whole and raises its error, whose
        ``deliveries`` then holds the deliveries made before it.
        """
        deliveries: list[Delivery] = []
        with self, self._slot():
            for envelope in envelopes:
                if not self.paces_at_the_wire:
                    self._pace(len(envelope.recipients))
                try:
                    deliveries.append(self._deliver_logged(envelope))
                except DeliveryError as error:
                    error.deliveries = tuple(deliveries)
                    raise
        return deliveries

    def __enter__(self) -> Self:
        with self._lock:
            self._open_count += 1
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with self._lock:
            self._open_count -= 1
            if self._closing():
                self.close()

    def _send_feed(self, feed: Feed) -> None:
        """Deliver what ``feed`` hands out until it has nothing more for this caller."""
        with self:
            self._deliver_feed(feed)

    def _deliver_feed(self, feed: Feed) -> None:
        """One envelope at a time through ``deliver``, each in its turn as ``send`` takes
        it (the feed's waits are outside it); a transport that pipelines overrides it."""
        while (envelope := feed.next()) is not None:
            try:
                with self._slot():
                    outcome: Delivery | DeliveryError = self._deliver_logged(envelope)
            except DeliveryError as error:
                outcome = error
            feed.done(envelope, outcome)

    def _pace(self, recipients: int) -> None:
        """Wait until ``recipients`` more fit the sending mailer's throttle, if it has one.

        A driver whose `paces_at_the_wire` is True calls it right before it writes
        MAIL FROM, so the throttle counts what the server sees.
        """
        pacer = PACER.get()
        if pacer is not None:
            while wait := pacer.reserve(recipients):
                pacer.wait(wait)

    def _slot(self) -> threading.BoundedSemaphore:
        if self._slots is None:
            with self._lock:
                if self._slots is None:
                    self._slots = threading.BoundedSemaphore(self.concurrency)
        return self._slots

    def _deliver_logged(self, envelope: Envelope) -> Delivery:
        try:
            if not self._is_open:
                with self._lock:
                    if not self._is_open:
                        self.open()
                        self._is_open = True
            delivery = self.deliver(envelope)
        except DeliveryError as error:
            self._log_failure(envelope, error)
            raise
        self._log_delivery(delivery)
        return delivery


class AsyncTransport(_Lifecycle, abc.ABC):
    """Hands envelopes to a mail system from asyncio code; implement `deliver`.

    The twin of [`Transport`][notifymail.Transport], with the same rules: `send`, `send_many`
    (same contract), ``async with``, logging, lazy `open` before the first envelope
    and `close` when the outermost block ends, `concurrency` envelopes at a
    time (one unless a subclass raises it), and the throttle counted just before
    ``deliver`` or wherever a driver that paces at the wire awaits `_apace`.
    Creating one needs no running event loop.
    """

    _alock: asyncio.Lock | None  # open and close; made on first use, inside the loop
    _aslots: asyncio.Semaphore | None  # deliveries under way: concurrency at most

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        instance = super().__new__(cls, *args, **kwargs)
        instance._alock = None
        instance._aslots = None
        return instance

    @abc.abstractmethod
    async def deliver(self, envelope: Envelope) -> Delivery:
        """Deliver one envelope, as
        [`Transport.deliver`][notifymail.transport.base.Transport.deliver] does, without
        blocking."""

    async def open(self) -> None:
        """Prepare for delivery (connect, log in). Awaited before the first envelope."""

    async def close(self) -> None:
        """Release what `open` took. Awaited once, when the outermost block ends."""

    async def probe(self, security: Security | None = None) -> bool:
        """Check the way to the mail system as delivering would, sending nothing, as
        [`Transport.probe`][notifymail.transport.base.Transport.probe] does, without
        blocking: True once the check passed, False when there is nothing to check (the
        base class); raise the [`DeliveryError`][notifymail.DeliveryError] a delivery
        would."""
        return False

    async def send(self, envelope: Envelope) -> Delivery:
        """Deliver one envelope and return what the server did with it."""
        pacer = None if self.paces_at_the_wire else ASYNC_PACER.get()
        async with self:
            if pacer is None:
                async with self._slot():
                    return await self._deliver_logged(envelope)
            recipients = len(envelope.recipients)  # counted in its turn, as Transport.send
            while True:
                async with self._slot():
                    wait = pacer.reserve(recipients)
                    if not wait:
                        return await self._deliver_logged(envelope)
                await pacer.wait(wait)

    async def send_many(self, envelopes: Iterable[Envelope]) -> list[Delivery]:
        """Deliver envelopes in order, as
        [`Transport.send_many`][notifymail.transport.base.Transport.send_many] does."""
        deliveries: list[Delivery] = []
        async with self, self._slot():
            for envelope in envelopes:
                if not self.paces_at_the_wire:
                    await self._apace(len(envelope.recipients))
                try:
                    deliveries.append(await self._deliver_logged(envelope))
                except DeliveryError as error:
                    error.deliveries = tuple(deliveries)
                    raise
        return deliveries

    async def __aenter__(self) -> Self:
        self._open_count += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._open_count -= 1
        if self._open_count == 0 and self._is_open:
            # Under the lock, so a task that enters meanwhile opens after this close.
            async with self._lock():
                if self._closing():
                    await self.close()

    async def _send_feed(self, feed: AsyncFeed) -> None:
        """Deliver what ``feed`` hands out until it has nothing more for this caller."""
        async with self:
            await self._deliver_feed(feed)

    async def _deliver_feed(self, feed: AsyncFeed) -> None:
        """One envelope at a time through ``deliver``, each in its turn as ``send`` takes
        it (the feed's waits are outside it); a transport that pipelines overrides it."""
        while (envelope := await feed.next()) is not None:
            try:
                async with self._slot():
                    outcome: Delivery | DeliveryError = await self._deliver_logged(envelope)
            except DeliveryError as error:
                outcome = error
            if (recording := feed.done(envelope, outcome)) is not None:
                await finished(recording)

    async def _apace(self, recipients: int) -> None:
        """Wait until ``recipients`` more fit the sending mailer's throttle, as ``_pace``."""
        pacer = ASYNC_PACER.get()
        if pacer is not None:
            while wait := pacer.reserve(recipients):
                await pacer.wait(wait)

    def _lock(self) -> asyncio.Lock:
        if self._alock is None:
            import asyncio

            self._alock = asyncio.Lock()
        return self._alock

    def _slot(self) -> asyncio.Semaphore:
        if self._aslots is None:
            import asyncio

            self._aslots = asyncio.Semaphore(self.concurrency)
        return self._aslots

    async def _deliver_logged(self, envelope: Envelope) -> Delivery:
        try:
            if not self._is_open:
                async with self._lock():
                    if not self._is_open:
                        await self.open()
                        self._is_open = True
            delivery = await self.deliver(envelope)
        except DeliveryError as error:
            self._log_failure(envelope, error)
            raise
        self._log_delivery(delivery)
        return delivery
