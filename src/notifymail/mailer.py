"""The facade a host application talks to: it decides (policy), composes (message) and
hands over (transport), retrying and pacing the hand-over, and does nothing else itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING

from typing_extensions import Self

from notifymail._compose import compose, compose_notification
from notifymail.errors import ConfigError, DeliveryError
from notifymail.message import Message, Notification
from notifymail.policy import (
    Directory,
    InMemoryDirectory,
    Person,
    check_recipients,
    plan_delivery,
    suggest_recipients,
)
from notifymail.transport.base import Transport
from notifymail.values import Delivery, Envelope, Reply

if TYPE_CHECKING:
    from notifymail.settings import EmailSettings
    from notifymail.verify import VerifyResult

__all__ = ["DeliveryReport", "Mailer"]

logger = logging.getLogger("notifymail.mailer")

_WINDOW = 1.0  # seconds: the throttle's window
# A wait rounded down to nothing would spin; a clock that has not yet reached the end
# of the window by a rounding error is simply asked to sleep a microsecond more.
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


@dataclass
class _Tally:
    """A report being filled in while envelopes are handed over."""

    deliveries: list[Delivery] = field(default_factory=list)
    accepted: dict[str, None] = field(default_factory=dict)
    refused: dict[str, Reply] = field(default_factory=dict)
    failed: dict[str, DeliveryError] = field(default_factory=dict)

    def report(self) -> DeliveryReport:
        return DeliveryReport(
            deliveries=tuple(self.deliveries),
            accepted=tuple(self.accepted),
            refused=self.refused,
            failed=self.failed,
        )


class _Throttle:
    """Admits at most ``rate`` recipients in any one-second window, across threads.

    It waits, never fails. Recipients count from the moment they are admitted. A batch
    larger than ``rate`` is admitted alone, once the window is empty, rather than never.
    The lock is released while sleeping, so waiting threads do not block each other's
    bookkeeping.
    """

    def __init__(
        self, rate: int, clock: Callable[[], float], sleep: Callable[[float], object]
    ) -> None:
        self._rate = rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._admitted: deque[tuple[float, int]] = deque()  # (expiry time, recipients)
        self._in_window = 0

    def admit(self, recipients: int) -> None:
        """Return once ``recipients`` more fit in the current one-second window."""
        while True:
            with self._lock:
                now = self._clock()
                while self._admitted and self._admitted[0][0] <= now:
                    self._in_window -= self._admitted.popleft()[1]
                if not self._admitted or self._in_window + recipients <= self._rate:
                    self._admitted.append((now + _WINDOW, recipients))
                    self._in_window += recipients
                    return
                wait = self._admitted[0][0] - now
            self._sleep(max(wait, _MIN_WAIT))


class Mailer:
    """Sends system mail and notifications for a host application.

    Without ``transport`` it builds an SMTP transport for ``settings.active_smtp``.
    ``directory`` tells account holders from outsiders (empty by default: everyone is an
    outsider). ``clock`` and ``sleep`` pace retries and the throttle; tests inject fakes.
    Use it as a context manager to keep one connection for every send inside the block.
    A mailer may be shared by threads; the ``max_recipients_per_second`` throttle then
    holds across all of them.
    """

    def __init__(
        self,
        settings: EmailSettings,
        *,
        transport: Transport | None = None,
        directory: Directory | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.settings = settings
        self.transport = transport if transport is not None else _smtp_transport(settings)
        self.directory: Directory = directory if directory is not None else InMemoryDirectory(())
        self._sleep = sleep
        rate = settings.delivery.max_recipients_per_second
        self._throttle = None if rate is None else _Throttle(rate, clock, sleep)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(transport={type(self.transport).__name__})"

    def __enter__(self) -> Self:
        """Keep one connection for every send inside the block (opened by the first)."""
        self.transport.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.transport.__exit__(exc_type, exc, traceback)

    def send(self, message: Message) -> DeliveryReport:
        """Send system mail (a password reset, an invitation) as one envelope.

        Retryable errors are retried; partial refusals come back in the report. Raises the
        :class:`~notifymail.DeliveryError` when no recipient could be handed the message.
        """
        envelope = compose(message, self.settings.active_sender)
        tally = _Tally()
        with self:  # one connection for the retries too
            error = self._hand_over(envelope, tally)
        if error is not None and not tally.accepted:
            raise error
        return tally.report()

    def notify(self, notification: Notification) -> DeliveryReport:
        """Send an alert or subscription to its recipients, batched by the delivery policy.

        The body is composed once. Each envelope waits for the throttle, and retryable
        errors and 4xx recipient refusals are retried by the retry policy, never to a
        recipient that already accepted. Never raises :class:`~notifymail.DeliveryError`:
        what failed is in the report. An invalid address or header raises
        :class:`~notifymail.InvalidMessage` before anything is sent.
        """
        batches = plan_delivery(notification.recipients, self.directory, self.settings)
        envelopes = compose_notification(notification, self.settings.active_sender, batches)
        tally = _Tally()
        with self:  # one connection for every envelope, even outside the host's block
            for envelope in envelopes:
                self._hand_over(envelope, tally)
        logger.info(
            "notify: %d envelope(s), %d accepted, %d refused, %d failed",
            len(envelopes),
            len(tally.accepted),
            len(tally.refused),
            len(tally.failed),
        )
        return tally.report()

    def check_recipients(
        self, creator: Person, recipients: Iterable[str], *, existing: Iterable[str] = ()
    ) -> None:
        """:func:`notifymail.policy.check_recipients` with this mailer's settings, directory."""
        check_recipients(creator, recipients, self.directory, self.settings, existing=existing)

    def suggest_recipients(
        self, viewer: Person, *, everyone_group: str | None = None
    ) -> list[Person]:
        """:func:`notifymail.policy.suggest_recipients` with this mailer's settings, directory."""
        return suggest_recipients(
            viewer, self.directory, self.settings, everyone_group=everyone_group
        )

    def send_test_email(self, to: str) -> DeliveryReport:
        """Send a short message to ``to`` saying that email is set up."""
        return self.send(
            Message(
                to=(to,),
                subject="Test email from notifymail",
                text=_TEST_TEXT,
                html=_TEST_HTML,
            )
        )

    def verify(self, *, autocorrect: bool = False) -> VerifyResult:
        """Check the active SMTP server (connect, TLS, login, quit) without sending.

        With an :class:`SmtpTransport`, its TLS context is used, so a private CA given to
        the transport is trusted here too.
        """
        from notifymail.transport.smtp import SmtpTransport
        from notifymail.verify import verify_smtp

        smtp = self.settings.active_smtp
        if smtp is None:
            raise _no_server()
        transport = self.transport
        context = transport.ssl_context if isinstance(transport, SmtpTransport) else None
        return verify_smtp(smtp, autocorrect=autocorrect, ssl_context=context)

    def _hand_over(self, envelope: Envelope, tally: _Tally) -> DeliveryError | None:
        """Deliver one envelope with retries, record the outcome in ``tally``.

        Only recipients that have not accepted are ever tried again: the whole envelope
        after a retryable error, the recipients alone after a 4xx refusal. Returns the
        last error when no recipient of a try accepted, else None.
        """
        retry = self.settings.delivery.retry
        pending = envelope
        attempt = 1
        while True:
            if self._throttle is not None:
                self._throttle.admit(len(pending.recipients))
            error: DeliveryError | None = None
            try:
                delivery = self.transport.send(pending)
            except DeliveryError as raised:
                error = raised
                if not error.refused:  # the envelope as a whole failed
                    if error.retryable and attempt < retry.max_attempts:
                        logger.debug("attempt %d failed, will retry: %s", attempt, error)
                        self._sleep(retry.delay(attempt))
                        attempt += 1
                        continue
                    tally.failed.update(dict.fromkeys(pending.recipients, error))
                    return error
                # The server refused every recipient: the same as a delivery to no one.
                delivery = Delivery(pending.message_id, accepted=(), refused=error.refused)
            else:
                tally.deliveries.append(delivery)
            tally.accepted.update(dict.fromkeys(delivery.accepted))
            tally.refused.update(delivery.refused)
            again = tuple(
                address for address, reply in delivery.refused.items() if reply.is_transient
            )
            if not again or attempt >= retry.max_attempts:
                return error
            for address in again:
                del tally.refused[address]
            logger.debug("attempt %d: %d recipient(s) refused for now", attempt, len(again))
            pending = envelope.with_recipients(again)
            self._sleep(retry.delay(attempt))
            attempt += 1


def _no_server() -> ConfigError:
    return ConfigError(
        "smtp: no SMTP server is configured (set smtp, or MB_EMAIL_SMTP_HOST)", field="smtp"
    )


def _smtp_transport(settings: EmailSettings) -> Transport:
    smtp = settings.active_smtp
    if smtp is None:
        raise _no_server()
    from notifymail.transport.smtp import SmtpTransport

    return SmtpTransport(smtp)


_TEST_TEXT = (
    "Your email settings work.\n\n"
    "This is a test message sent by notifymail to confirm that email is set up.\n"
)
_TEST_HTML = (
    "<p><strong>Your email settings work.</strong></p>\n"
    "<p>This is a test message sent by notifymail to confirm that email is set up.</p>\n"
)
