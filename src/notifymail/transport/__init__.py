"""Transports hand envelopes to a mail system: SMTP, memory for tests, or a console;
blocking (``Transport``) or asyncio (``AsyncTransport``)."""

from typing import TYPE_CHECKING

from notifymail._lazy import lazy_exports
from notifymail.transport.base import AsyncTransport, Transport
from notifymail.values import Delivery, Envelope, Reply

if TYPE_CHECKING:
    from notifymail.transport.console import ConsoleTransport
    from notifymail.transport.memory import AsyncMemoryTransport, MemoryTransport, Sent
    from notifymail.transport.smtp import SmtpTransport

# Imported on first use: the email package and ssl are slow to import, and
# importing transport.base (as every module of the package does) must not pay for them.
_LAZY = {
    "AsyncMemoryTransport": "notifymail.transport.memory",
    "ConsoleTransport": "notifymail.transport.console",
    "MemoryTransport": "notifymail.transport.memory",
    "Sent": "notifymail.transport.memory",
    "SmtpTransport": "notifymail.transport.smtp",
}


__all__ = [
    "AsyncMemoryTransport",
    "AsyncTransport",
    "ConsoleTransport",
    "Delivery",
    "Envelope",
    "MemoryTransport",
    "Reply",
    "Sent",
    "SmtpTransport",
    "Transport",
]

__getattr__, __dir__ = lazy_exports(globals(), _LAZY, __all__)
