"""The facade a host application talks to: it decides (policy), composes (message) and
hands over (transport), retrying and pacing the hand-over, and does nothing else itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING

from typing_extensions import Self

from notifymail._delivery import (
    DeliveryReport,
    Handed,
    Tally,
    Throttle,
    hand_over,
    log_summary,
    send_report,
)
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
from notifymail.values import Delivery, Envelope

if TYPE_CHECKING:
    from notifymail.settings import EmailSettings
    from notifymail.verify import VerifyResult

__all__ = ["DeliveryReport", "Mailer"]


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
        self._clock = clock
        self._sleep = sleep
        rate = settings.delivery.max_recipients_per_second
        self._throttle = None if rate is None else Throttle(rate)

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
        [`DeliveryError`][notifymail.DeliveryError] when no recipient could be handed the message.
        """
        from notifymail._compose import compose  # the email package, on first use

        envelope = compose(message, self.settings.active_sender)
        with self:  # one connection for the retries too
            return send_report(self._hand_over(envelope))

    def notify(self, notification: Notification) -> DeliveryReport:
        """Send an alert or subscription to its recipients, batched by the delivery policy.

        The body is composed once. Each envelope waits for the throttle, and retryable
        errors and 4xx recipient refusals are retried by the retry policy, never to a
        recipient that already accepted. Never raises [`DeliveryError`][notifymail.DeliveryError]:
        what failed is in the report. An invalid address or header raises
        [`InvalidMessage`][notifymail.InvalidMessage] before anything is sent.
        """
        from notifymail._compose import compose_notification  # as in send

        batches = plan_delivery(notification.recipients, self.directory, self.settings)
        envelopes = compose_notification(notification, self.settings.active_sender, batches)
        tally = Tally()
        with self:  # one connection for every envelope, even outside the host's block
            for envelope in envelopes:
                tally.add(self._hand_over(envelope))
        report = tally.report()
        log_summary(len(envelopes), report)
        return report

    def check_recipients(
        self, creator: Person, recipients: Iterable[str], *, existing: Iterable[str] = ()
    ) -> None:
        """[`notifymail.policy.check_recipients`][notifymail.check_recipients] with this mailer's
        settings, directory."""
        check_recipients(creator, recipients, self.directory, self.settings, existing=existing)

    def suggest_recipients(
        self, viewer: Person, *, everyone_group: str | None = None
    ) -> list[Person]:
        """[`notifymail.policy.suggest_recipients`][notifymail.suggest_recipients] with this
        mailer's settings, directory."""
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

        The check goes through the mailer's transport when it has a server to check
        ([`probe`][notifymail.transport.base.Transport.probe]), so a private CA or an OAuth2 token
        given to it counts here too; otherwise through an SMTP transport for the settings.
        """
        from notifymail.verify import verify_smtp, verify_transport

        smtp = self.settings.active_smtp
        if smtp is None:
            raise _no_server()
        result = verify_transport(self.transport, smtp, autocorrect=autocorrect)
        return verify_smtp(smtp, autocorrect=autocorrect) if result is None else result

    def _hand_over(self, envelope: Envelope) -> Handed:
        """Deliver one envelope with the retry policy (see `hand_over`)."""
        plan = hand_over(envelope, self.settings.delivery.retry)
        step = next(plan)
        while True:
            if step.wait:
                self._sleep(step.wait)
            try:
                step = plan.send(self._attempt(step.envelope))
            except StopIteration as done:
                handed: Handed = done.value
                return handed

    def _attempt(self, envelope: Envelope) -> Delivery | DeliveryError:
        """Hand ``envelope`` to the transport once: the throttle applies, no retry.

        Returns the transport's [`DeliveryError`][notifymail.DeliveryError] instead of raising it.
        Outside a ``with`` block of the mailer, the transport opens and closes around it.
        """
        if self._throttle is not None:
            recipients = len(envelope.recipients)
            while (wait := self._throttle.reserve(recipients, self._clock)) > 0:
                self._sleep(wait)
        try:
            return self.transport.send(envelope)
        except DeliveryError as error:
            return error


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
