"""The abstract [`Transport`][notifymail.Transport], whose subclasses implement one method,
``deliver``.

The values it passes (``Envelope``, ``Reply``, ``Delivery``) live in
``notifymail.values``; they are re-exported here for transport authors.
"""

from __future__ import annotations

import abc
import logging
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar

from typing_extensions import Self

from notifymail.errors import DeliveryError
from notifymail.values import Delivery, Envelope, Reply

if TYPE_CHECKING:
    from notifymail.settings import Security

__all__ = ["Delivery", "Envelope", "Reply", "Transport"]

logger = logging.getLogger("notifymail.transport")


class Transport(abc.ABC):
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

    paces_at_the_wire: ClassVar[bool] = False
    """Whether the transport calls `_pace` right before it hands an envelope's
    recipients to the server (SMTP: before MAIL FROM is written)."""

    _lock: threading.RLock
    _open_count: int  # with blocks entered and not yet left, across threads
    _is_open: bool  # open() has run and close() has not

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        # Set here rather than in __init__ so a subclass that forgets super().__init__()
        # still gets a working lock.
        instance = super().__new__(cls)
        instance._lock = threading.RLock()
        instance._open_count = 0
        instance._is_open = False
        return instance

    @abc.abstractmethod
    def deliver(self, envelope: Envelope) -> Delivery:
        """Deliver one envelope.

        Return a [`Delivery`][notifymail.Delivery], with partial refusals in ``refused``. Raise a
        [`DeliveryError`][notifymail.DeliveryError] subclass when the envelope failed as a whole,
        including when every recipient was refused.
        """

    def open(self) -> None:  # noqa: B027 - optional hook, deliberately empty
        """Prepare for delivery (connect, log in). Called before the first envelope."""

    def close(self) -> None:  # noqa: B027 - optional hook, deliberately empty
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

    def _pace(self, recipients: int) -> None:  # noqa: B027 - a hook, deliberately empty
        """Wait, if need be, before ``recipients`` more go to the server (a no-op here)."""

    def send(self, envelope: Envelope) -> Delivery:
        """Deliver one envelope and return what the server did with it."""
        with self._lock, self:
            return self._deliver_logged(envelope)

    def send_many(self, envelopes: Iterable[Envelope]) -> list[Delivery]:
        """Deliver envelopes in order, over one connection where the transport has one.

        Stops at the first envelope that fails as a whole and raises its error, whose
        ``deliveries`` then holds the deliveries made before it.
        """
        deliveries: list[Delivery] = []
        with self._lock, self:
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
            if self._open_count == 0 and self._is_open:
                self._is_open = False
                self.close()

    def _deliver_logged(self, envelope: Envelope) -> Delivery:
        name = type(self).__name__
        try:
            if not self._is_open:
                self.open()
                self._is_open = True
            delivery = self.deliver(envelope)
        except DeliveryError as error:
            logger.warning(
                "%s: %s failed for %d recipient(s): %s",
                name,
                envelope.message_id or "message",
                len(envelope.recipients),
                error,
            )
            raise
        logger.debug(
            "%s: %s accepted by %d, refused by %d",
            name,
            delivery.message_id or "message",
            len(delivery.accepted),
            len(delivery.refused),
        )
        return delivery
