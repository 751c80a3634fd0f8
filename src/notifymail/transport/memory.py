"""A transport that keeps what it would have sent, for the host's own tests.

Each message is rendered to bytes exactly as SMTP would send it, so a header error
surfaces in a test rather than in production, and read back as a receiver would, so a
test asserts on what people would see. Failures are scripted, never simulated at random.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from email.headerregistry import AddressHeader
from email.message import EmailMessage

from typing_extensions import override

from notifymail._address import address_key, normalize_address
from notifymail._readback import read_back
from notifymail.errors import error_for_reply
from notifymail.message import Attachment
from notifymail.transport.base import AsyncTransport, Transport
from notifymail.values import Delivery, Envelope, Reply

__all__ = ["AsyncMemoryTransport", "MemoryTransport", "Sent"]

_NO_SUCH_USER = Reply(550, "5.1.1 No such user")


@dataclass(frozen=True, slots=True)
class Sent:
    """One envelope as the memory transport received it, and as a receiver would read it.

    ``recipients`` are the envelope recipients that were accepted. ``to`` and ``cc`` are
    the addresses in those headers, normalised as notifymail stores addresses (Unicode
    domains), so they compare equal to what the host passed in. ``text`` and ``html`` are
    the bodies as received, or ``None``: line ends are ``\n`` and composition ends each
    body with one, so ``"Hello"`` reads back as ``"Hello\n"``. ``attachments`` are the
    files and inline images read back, in order, inline ones with their ``content_id``.
    """

    envelope: Envelope
    raw: bytes = field(repr=False)
    message: EmailMessage = field(repr=False, compare=False)
    recipients: tuple[str, ...]
    to: tuple[str, ...]
    cc: tuple[str, ...]
    subject: str
    text: str | None = field(repr=False)
    html: str | None = field(repr=False)
    attachments: tuple[Attachment, ...] = field(repr=False)


def _record(envelope: Envelope, accepted: tuple[str, ...]) -> Sent:
    """``envelope`` read back as its recipients would see it."""
    message = read_back(envelope)
    return Sent(
        envelope=envelope,
        raw=envelope.raw,
        message=message,
        recipients=accepted,
        to=_header_addresses(message, "To"),
        cc=_header_addresses(message, "Cc"),
        subject=str(message.get("Subject", "")),
        text=_body(message, "plain"),
        html=_body(message, "html"),
        attachments=_attachments(message),
    )


def _header_addresses(message: EmailMessage, name: str) -> tuple[str, ...]:
    header = message.get(name)
    if not isinstance(header, AddressHeader):
        return ()
    addresses = []
    for address in header.addresses:
        try:
            addresses.append(normalize_address(address.addr_spec))
        except ValueError:
            addresses.append(address.addr_spec)
    return tuple(addresses)


def _body(message: EmailMessage, subtype: str) -> str | None:
    part = message.get_body(preferencelist=(subtype,))
    if part is None or part.get_content_subtype() != subtype:
        return None
    content = part.get_content()
    return content if isinstance(content, str) else None


def _attachments(message: EmailMessage) -> tuple[Attachment, ...]:
    """Every part that is a file (a disposition of its own) or an inline image (a
    Content-ID), as the [`Attachment`][notifymail.Attachment] that would compose it."""
    found = []
    for part in message.walk():
        content_id = part.get("Content-ID")
        if part.is_multipart() or (part.get_content_disposition() is None and not content_id):
            continue
        mimetype = part.get_content_type()
        charset = part.get_param("charset")
        if isinstance(charset, str):
            mimetype += f"; charset={charset}"
        content = part.get_payload(decode=True)
        found.append(
            Attachment(
                filename=part.get_filename() or "",
                content=content if isinstance(content, bytes) else b"",
                mimetype=mimetype,
                content_id=str(content_id).strip() if content_id else None,
            )
        )
    return tuple(found)


class _Recorder:
    """The memory transports' outbox, scripts and delivery, shared by both twins."""

    def __init__(self) -> None:
        self.outbox: list[Sent] = []
        self._outbox_lock = threading.Lock()
        self._failures: list[BaseException] = []
        self._refused: dict[str, Reply] = {}

    def clear(self) -> None:
        """Empty the outbox; scripted failures and refusals stay."""
        with self._outbox_lock:
            self.outbox.clear()

    def fail_next(self, error: BaseException, times: int = 1) -> None:
        """Make the next ``times`` envelopes raise ``error`` (a copy of it each time)."""
        if times < 1:
            raise ValueError("times must be 1 or more")
        with self._outbox_lock:
            self._failures.extend([error] * times)

    def refuse(self, *addresses: str, reply: Reply = _NO_SUCH_USER) -> None:
        """Refuse ``addresses`` (case-insensitive) with ``reply`` in every later envelope."""
        keys = [address_key(normalize_address(address)) for address in addresses]
        with self._outbox_lock:
            self._refused.update(dict.fromkeys(keys, reply))

    def _record_delivery(self, envelope: Envelope) -> Delivery:
        envelope.raw  # noqa: B018 - render first, as SMTP would, so header errors surface
        with self._outbox_lock:
            failure = self._failures.pop(0) if self._failures else None
            refusals = dict(self._refused)
        if failure is not None:
            raise copy.copy(failure)
        refused = {
            recipient: refusals[address_key(recipient)]
            for recipient in envelope.recipients
            if address_key(recipient) in refusals
        }
        accepted = tuple(r for r in envelope.recipients if r not in refused)
        if not accepted:
            reply = next(iter(refused.values()))
            raise error_for_reply(f"every recipient was refused: {reply}", reply, refused=refused)
        sent = _record(envelope, accepted)
        with self._outbox_lock:
            self.outbox.append(sent)
        return Delivery(envelope.message_id, accepted, refused)


class MemoryTransport(_Recorder, Transport):
    """Keeps every delivered envelope in `outbox`; never opens a socket.

    ``outbox`` belongs to the instance. Script failures with `fail_next` (the next
    envelopes raise) and `refuse` (those recipients are refused from now on).
    """

    @override
    def deliver(self, envelope: Envelope) -> Delivery:
        return self._record_delivery(envelope)


class AsyncMemoryTransport(_Recorder, AsyncTransport):
    """The asyncio twin of [`MemoryTransport`][notifymail.MemoryTransport]: the same
    ``outbox``, ``clear``, ``fail_next`` and ``refuse``; never opens a socket.

    Each delivery yields to the event loop once, as a network transport would, so a
    notification to thousands never holds the loop for long.
    """

    @override
    async def deliver(self, envelope: Envelope) -> Delivery:
        import asyncio  # here, so the blocking twin's users never pay for importing it

        await asyncio.sleep(0)
        return self._record_delivery(envelope)
