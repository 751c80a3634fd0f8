"""What every transport shares: the envelope, the server's reply, the delivery result, and
the abstract [`Transport`][notifymail.Transport] whose subclasses implement one method,
``deliver``.

Who receives a message is the envelope's business, never a header's: the ``Bcc`` header
is not even serialised.
"""

from __future__ import annotations

import abc
import logging
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any

from typing_extensions import Self

from notifymail._address import needs_smtputf8
from notifymail.errors import DeliveryError, InvalidMessage

if TYPE_CHECKING:
    from email.message import EmailMessage

__all__ = ["Delivery", "Envelope", "Reply", "Transport"]

logger = logging.getLogger("notifymail.transport")


@dataclass(frozen=True, slots=True)
class Reply:
    """An SMTP reply: ``str(Reply(550, "5.1.1 No such user"))`` is ``"550 5.1.1 No such user"``."""

    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}".rstrip()

    @property
    def is_transient(self) -> bool:
        """A 4xx reply: the same request may succeed later."""
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        """A 5xx reply: the same request will fail again."""
        return 500 <= self.code < 600


_BREAKS_A_COMMAND = re.compile(r"[\s<>\x00-\x1f\x7f]|^$")


@dataclass(frozen=True)
class Envelope:
    """One SMTP transaction: the envelope sender, the recipients, and the message.

    ``recipients`` alone decide who receives the message; its ``To`` and ``Cc`` headers
    are for display. A ``Bcc`` header, if the message has one, is never serialised.
    """

    sender: str
    recipients: tuple[str, ...]
    message: EmailMessage = field(repr=False, compare=False)
    smtputf8: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.recipients, str):
            raise TypeError("Envelope.recipients must be a tuple of addresses, not a str")
        if not isinstance(self.recipients, tuple):
            object.__setattr__(self, "recipients", tuple(self.recipients))
        if not self.recipients:
            raise ValueError("an Envelope needs at least one recipient")
        for address in (self.sender, *self.recipients):
            # What would end an SMTP command early or add parameters to it.
            if not isinstance(address, str) or _BREAKS_A_COMMAND.search(address):
                raise InvalidMessage(f"envelope: {address!r} cannot go in MAIL FROM or RCPT TO")

    @property
    def needs_smtputf8(self) -> bool:
        """Whether an address has a non-ASCII local part, which only SMTPUTF8 can carry.

        ``smtputf8=True`` says so for an address only the headers hold (a ``Reply-To``).
        """
        return self.smtputf8 or any(map(needs_smtputf8, (self.sender, *self.recipients)))

    @property
    def message_id(self) -> str:
        """The ``Message-ID`` header, or ``""`` when the message has none."""
        return str(self.message.get("Message-ID", ""))

    @cached_property
    def raw(self) -> bytes:
        """The message as sent on the wire: CRLF line ends, no ``Bcc`` header.

        Headers are 7-bit (RFC 2047 encoded) unless an address needs SMTPUTF8.
        Serialised once, on first use.
        """
        import copy
        from email import policy  # here, not at start-up: it is slow to import

        message = self.message
        if "Bcc" in message:
            message = copy.copy(message)
            del message["Bcc"]
        return message.as_bytes(policy=policy.SMTPUTF8 if self.needs_smtputf8 else policy.SMTP)


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the server did with one envelope: who accepted it and who was refused, and why."""

    message_id: str
    accepted: tuple[str, ...]
    refused: Mapping[str, Reply] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "accepted", tuple(self.accepted))
        object.__setattr__(self, "refused", MappingProxyType(dict(self.refused)))

    @property
    def ok(self) -> bool:
        """True when no recipient was refused."""
        return not self.refused


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
