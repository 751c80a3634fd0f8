"""The abstract transports, [`Transport`][notifymail.Transport] and its asyncio twin
[`AsyncTransport`][notifymail.AsyncTransport], whose subclasses implement one method, ``deliver``.

Both bases share the bookkeeping that is not I/O (when to open, when to close, what to
log); only the calls that wait differ. The values they pass (``Envelope``, ``Reply``,
``Delivery``) live in ``notifymail.values``; they are re-exported here for transport
authors.

A mailer hands a notification's envelopes over through a feed (``Feed``,
``AsyncFeed``): a transport takes the next envelope when it can send it and reports
each outcome, so a transport that keeps several connections, or pipelines one message
behind another, decides when; the base takes them one at a time through ``deliver``.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from typing_extensions import Self

from notifymail.errors import DeliveryError
from notifymail.values import Delivery, Envelope, Reply

if TYPE_CHECKING:
    import asyncio

    from notifymail.settings import Security

__all__ = ["AsyncTransport", "Delivery", "Envelope", "Reply", "Transport"]

logger = logging.getLogger("notifymail.transport")


class Feed(Protocol):
    """Envelopes for a transport to send as it can take them, and where outcomes go."""

    def ready(self) -> Envelope | None:
        """An envelope to send at once, if one is ready; never waits. A connection with
        envelopes in flight asks it whether one more may follow them."""

    def next(self) -> Envelope | None:
        """The envelope to send next, once it may go (a retry's delay, the throttle);
        None when nothing is left for this caller, who then stops."""

    def prepare(self) -> None:
        """Serialise the envelope likely to go next, while a connection waits for the
        server: the work is then off the path between a reply and the next write."""

    def done(self, envelope: Envelope, outcome: Delivery | DeliveryError) -> None:
        """What became of an envelope ``ready`` or ``next`` handed out."""


class AsyncFeed(Protocol):
    """``Feed`` for asyncio transports: ``next`` is awaited."""

    def ready(self) -> Envelope | None:
        """As ``Feed.ready``."""

    async def next(self) -> Envelope | None:
        """As ``Feed.next``, waiting without blocking the event loop."""

    def prepare(self) -> None:
        """As ``Feed.prepare``."""

    def done(self, envelope: Envelope, outcome: Delivery | DeliveryError) -> None:
        """What became of an envelope ``ready`` or ``next`` handed out."""


class _Lifecycle:
    """What both bases share: when to open and close (see [`Transport`][notifymail.Transport]), the
    logs."""

    paces_at_the_wire: ClassVar[bool] = False
    """Whether the transport calls ``_pace`` (``_apace``) right before it hands an
    envelope's recipients to the server (SMTP: before MAIL FROM is written)."""

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
        """How many envelopes the transport delivers at once (1 here: one at a time).

        A transport that says more makes ``deliver`` safe to run that many times at
        once, from threads or tasks, and the base no longer serialises its callers.
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
    a time. ``open`` and ``close`` do nothing unless overridden. ``open`` runs before
    the first envelope, not on entering a ``with`` block, so a server that is down
    fails the send (which a mailer retries), never the ``with`` statement; once open,
    the transport stays open until the outermost block ends and ``close`` runs. Outside
    a ``with`` block each ``send`` and ``send_many`` call opens and closes around itself.
    """

    _lock: threading.RLock

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        instance = super().__new__(cls, *args, **kwargs)
        instance._lock = threading.RLock()
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

    def _pace(self, recipients: int) -> None:
        """Wait, if need be, before ``recipients`` more go to the server (a no-op here)."""

    def send(self, envelope: Envelope) -> Delivery:
        """Deliver one envelope and return what the server did with it."""
        with self._serial(), self:
            return self._deliver_logged(envelope)

    def send_many(self, envelopes: Iterable[Envelope]) -> list[Delivery]:
        """Deliver envelopes in order, over one connection where the transport has one.

        Stops at the first envelope that fails as a whole and raises its error, whose
        ``deliveries`` then holds the deliveries made before it.
        """
        deliveries: list[Delivery] = []
        with self._serial(), self:
            for envelope in envelopes:
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
        """One envelope at a time through ``deliver``, serialised as ``send`` is (the
        feed's waits are not); a transport that pipelines overrides it."""
        while (envelope := feed.next()) is not None:
            try:
                with self._serial():
                    outcome: Delivery | DeliveryError = self._deliver_logged(envelope)
            except DeliveryError as error:
                outcome = error
            feed.done(envelope, outcome)

    def _serial(self) -> contextlib.AbstractContextManager[object]:
        """The lock that keeps callers to one at a time, unless ``concurrency`` is more."""
        return self._lock if self.concurrency == 1 else contextlib.nullcontext()

    def _ensure_open(self) -> None:
        if not self._is_open:
            with self._lock:
                if not self._is_open:
                    self.open()
                    self._is_open = True

    def _deliver_logged(self, envelope: Envelope) -> Delivery:
        try:
            self._ensure_open()
            delivery = self.deliver(envelope)
        except DeliveryError as error:
            self._log_failure(envelope, error)
            raise
        self._log_delivery(delivery)
        return delivery


class AsyncTransport(_Lifecycle, abc.ABC):
    """Hands envelopes to a mail system from asyncio code; implement
    [`deliver`][notifymail.transport.base.AsyncTransport.deliver].

    The twin of [`Transport`][notifymail.Transport], with the same rules:
    [`send`][notifymail.transport.base.AsyncTransport.send],
    [`send_many`][notifymail.transport.base.AsyncTransport.send_many] (same contract),
    ``async with``, logging, lazy [`open`][notifymail.transport.base.AsyncTransport.open]
    before the first envelope and
    [`close`][notifymail.transport.base.AsyncTransport.close] when the outermost block ends.
    Tasks sharing one transport deliver one envelope at a time. Creating one needs no
    running event loop.
    """

    _alock: asyncio.Lock | None

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        instance = super().__new__(cls, *args, **kwargs)
        instance._alock = None  # made on first use, inside the event loop
        return instance

    @abc.abstractmethod
    async def deliver(self, envelope: Envelope) -> Delivery:
        """Deliver one envelope, as
        [`Transport.deliver`][notifymail.transport.base.Transport.deliver] does, without
        blocking."""

    async def open(self) -> None:
        """Prepare for delivery (connect, log in). Awaited before the first envelope."""

    async def close(self) -> None:
        """Release what [`open`][notifymail.transport.base.AsyncTransport.open] took. Awaited once,
        when the outermost block ends."""

    async def _apace(self, recipients: int) -> None:
        """Wait, if need be, before ``recipients`` more go to the server (a no-op here)."""

    async def send(self, envelope: Envelope) -> Delivery:
        """Deliver one envelope and return what the server did with it."""
        async with self, self._serial():
            return await self._deliver_logged(envelope)

    async def send_many(self, envelopes: Iterable[Envelope]) -> list[Delivery]:
        """Deliver envelopes in order, as
        [`Transport.send_many`][notifymail.transport.base.Transport.send_many] does."""
        deliveries: list[Delivery] = []
        async with self, self._serial():
            for envelope in envelopes:
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

    def _lock(self) -> asyncio.Lock:
        if self._alock is None:
            import asyncio

            self._alock = asyncio.Lock()
        return self._alock

    async def _send_feed(self, feed: AsyncFeed) -> None:
        """Deliver what ``feed`` hands out until it has nothing more for this caller."""
        async with self:
            await self._deliver_feed(feed)

    async def _deliver_feed(self, feed: AsyncFeed) -> None:
        """One envelope at a time through ``deliver``, serialised as ``send`` is (the
        feed's waits are not); a transport that pipelines overrides it."""
        while (envelope := await feed.next()) is not None:
            try:
                async with self._serial():
                    outcome: Delivery | DeliveryError = await self._deliver_logged(envelope)
            except DeliveryError as error:
                outcome = error
            feed.done(envelope, outcome)

    def _serial(self) -> contextlib.AbstractAsyncContextManager[object]:
        """The lock that keeps tasks to one at a time, unless ``concurrency`` is more."""
        return self._lock() if self.concurrency == 1 else contextlib.nullcontext()

    async def _ensure_open(self) -> None:
        if self._is_open:
            return
        # One at a time already, or under the lock that __aexit__ closes under.
        async with contextlib.nullcontext() if self.concurrency == 1 else self._lock():
            if not self._is_open:
                await self.open()
                self._is_open = True

    async def _deliver_logged(self, envelope: Envelope) -> Delivery:
        try:
            await self._ensure_open()
            delivery = await self.deliver(envelope)
        except DeliveryError as error:
            self._log_failure(envelope, error)
            raise
        self._log_delivery(delivery)
        return delivery
