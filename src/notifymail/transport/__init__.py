"""Transports hand envelopes to a mail system: SMTP, memory for tests, or a console."""

from notifymail.transport.base import Delivery, Envelope, Reply, Transport
from notifymail.transport.console import ConsoleTransport
from notifymail.transport.memory import MemoryTransport, Sent
from notifymail.transport.smtp import SmtpTransport

__all__ = [
    "ConsoleTransport",
    "Delivery",
    "Envelope",
    "MemoryTransport",
    "Reply",
    "Sent",
    "SmtpTransport",
    "Transport",
]
