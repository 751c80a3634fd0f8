"""Composition: messages and notifications become finished envelopes, ready to send.

Composition is where header injection and Bcc leaks are stopped: every header is written
by ``notifymail._headers``, recipients travel only in the envelope, and a hidden batch's
headers name no one. An envelope leaves here as finished bytes: a notification's body is
written once (``notifymail._mime``) and shared by all its envelopes, and each envelope
adds only its own headers. A transport, an outbox or a task broker then only sends or
stores bytes, and nothing can fail between the first envelope of a ``notify`` and the last.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

from notifymail._address import ascii_domain, domain_of, needs_smtputf8
from notifymail._headers import (
    ONE_CLICK,
    address_list,
    literal,
    mailbox,
    unstructured,
    unsubscribe_url,
)
from notifymail._mime import body
from notifymail.message import Message, Notification, validate_recipients
from notifymail.values import Envelope

if TYPE_CHECKING:
    from notifymail.settings import SenderSettings

__all__ = ["compose", "compose_notification", "notification_envelopes"]

_UNDISCLOSED_RECIPIENTS = b"To: undisclosed-recipients:;\r\n"
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class _Batch(Protocol):
    """What `compose_notification` needs of ``notifymail.policy.Batch``."""

    @property
    def recipients(self) -> tuple[str, ...]: ...

    @property
    def hidden(self) -> bool: ...


def compose(message: Message, sender: SenderSettings) -> Envelope:
    """System mail: one envelope to to, cc and bcc (each once), ``To``/``Cc`` as given.

    ``Reply-To`` is the message's ``reply_to`` when given, else the sender's. No ``Bcc``
    header is ever written; a message to bcc alone is ``To: undisclosed-recipients:;``.
    """
    composition = _Composition(message, sender, message.reply_to or sender.reply_to)
    to = message.to if message.to or message.cc else None
    return composition.envelope(message.recipients, to, message.cc)


def compose_notification(
    notification: Notification, sender: SenderSettings, batches: Sequence[_Batch]
) -> list[Envelope]:
    """One envelope per batch, all sharing one body; each with its own ``Message-ID``.

    A hidden batch is addressed ``To: undisclosed-recipients:;`` with no ``Cc``: its
    headers name no recipient. A visible batch lists every recipient in ``To``.

    Two kinds of recipient get an envelope of their own whatever the batch: everyone,
    when the notification has ``unsubscribe`` (each message carries its recipient's own
    URL), and a recipient whose address needs SMTPUTF8, so that a server without it
    refuses that recipient alone rather than the batch.
    """
    return list(notification_envelopes(notification, sender, batches))


def notification_envelopes(
    notification: Notification, sender: SenderSettings, batches: Sequence[_Batch]
) -> Iterator[Envelope]:
    """`compose_notification` one envelope at a time, for a caller that yields to an
    event loop between them; the body is written once, before the first."""
    composition = _Composition(notification, sender, sender.reply_to)
    known = frozenset(notification.recipients)  # validated when the notification was made
    for batch in batches:
        recipients = tuple(batch.recipients)
        if not known.issuperset(recipients):
            recipients = validate_recipients(recipients, "recipients")
        if notification.unsubscribe is not None:
            for recipient in recipients:
                url = unsubscribe_url(recipient, notification.unsubscribe(recipient))
                extra = f"List-Unsubscribe: {url}\r\nList-Unsubscribe-Post: {ONE_CLICK}\r\n"
                yield composition.envelope((recipient,), (recipient,), extra=extra.encode("ascii"))
            continue
        alone: tuple[str, ...] = ()
        if len(recipients) > 1 and not composition.smtputf8:
            alone = tuple(filter(needs_smtputf8, recipients))
        if alone:
            shared = tuple(r for r in recipients if not needs_smtputf8(r))
            hidden = batch.hidden and len(shared) > 1
        else:
            shared, hidden = recipients, batch.hidden
        if shared:
            yield composition.envelope(shared, None if hidden else shared)
        for recipient in alone:
            yield composition.envelope((recipient,), (recipient,))


def _date() -> str:
    """Now, as RFC 5322 writes a date (English names whatever the locale)."""
    now = time.gmtime()
    return (
        f"{_DAYS[now.tm_wday]}, {now.tm_mday:02d} {_MONTHS[now.tm_mon - 1]} {now.tm_year} "
        f"{now.tm_hour:02d}:{now.tm_min:02d}:{now.tm_sec:02d} +0000"
    )


class _Composition:
    """What every envelope of one message or notification shares, written once: the body,
    and the header lines that name no recipient. ``From`` and ``Reply-To`` are written
    for each domain form they are needed in (A-labels, or Unicode under SMTPUTF8).
    """

    def __init__(
        self, content: Message | Notification, sender: SenderSettings, reply_to: tuple[str, ...]
    ) -> None:
        tree = body(content)
        self._tail = tree.tail
        self._sender = sender.from_address
        self._from_name = sender.from_name or ""
        self._reply_to = reply_to
        self._message_id_domain = ascii_domain(domain_of(sender.from_address))
        self.smtputf8 = any(map(needs_smtputf8, (self._sender, *reply_to)))
        self._addressed: dict[bool, tuple[bytes, bytes]] = {}
        self._subject_and_date = unstructured("Subject", content.subject) + (
            f"Date: {_date()}\r\n".encode("ascii")
        )
        custom = [
            literal(name, value) if name.lower().startswith("list-") else unstructured(name, value)
            for name, value in content.headers.items()
        ]
        if isinstance(content, Notification) and content.list_id is not None:
            custom.append(f"List-Id: <{content.list_id}>\r\n".encode("ascii"))
        self._custom = b"".join(custom)
        self._mime = b"MIME-Version: 1.0\r\n" + tree.head
        self._from_and_reply_to(self.smtputf8)  # an invalid from name fails here, not later

    def _from_and_reply_to(self, utf8: bool) -> tuple[bytes, bytes]:
        lines = self._addressed.get(utf8)
        if lines is None:
            lines = (
                mailbox("From", self._sender, self._from_name, utf8=utf8),
                address_list("Reply-To", self._reply_to, utf8=utf8) if self._reply_to else b"",
            )
            self._addressed[utf8] = lines
        return lines

    def envelope(
        self,
        recipients: tuple[str, ...],
        to: Sequence[str] | None,
        cc: Sequence[str] = (),
        *,
        extra: bytes = b"",
    ) -> Envelope:
        """An envelope over the shared body; ``to=None`` writes ``To:
        undisclosed-recipients:;``. ``extra`` is header lines of this envelope alone."""
        utf8 = self.smtputf8 or any(map(needs_smtputf8, recipients))
        from_line, reply_to = self._from_and_reply_to(utf8)
        if to is None:
            to_line = _UNDISCLOSED_RECIPIENTS
        else:
            to_line = address_list("To", to, utf8=utf8) if to else b""
        message_id = f"<{secrets.token_hex(16)}@{self._message_id_domain}>"
        head = b"".join(
            (
                from_line,
                to_line,
                address_list("Cc", cc, utf8=utf8) if cc else b"",
                reply_to,
                self._subject_and_date,
                f"Message-ID: {message_id}\r\n".encode(),
                self._custom,
                extra,
                self._mime,
            )
        )
        return Envelope._composed(
            self._sender, recipients, head, self._tail, smtputf8=utf8, message_id=message_id
        )
