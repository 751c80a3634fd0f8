"""Transports hand envelopes to a mail system: SMTP, memory for tests, or a console."""

from importlib import import_module
from typing import TYPE_CHECKING

from notifymail.transport.base import Delivery, Envelope, Reply, Transport

if TYPE_CHECKING:
    from notifymail.transport.console import ConsoleTransport
    from notifymail.transport.memory import MemoryTransport, Sent
    from notifymail.transport.smtp import SmtpTransport

# Imported on first use: the email package, smtplib and ssl are slow to import, and
# importing transport.base (as every module of the package does) must not pay for them.
_LAZY = {
    "ConsoleTransport": "notifymail.transport.console",
    "MemoryTransport": "notifymail.transport.memory",
    "Sent": "notifymail.transport.memory",
    "SmtpTransport": "notifymail.transport.smtp",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


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
