"""Transports hand envelopes to a mail system: SMTP, memory for tests, or a console;
blocking (``Transport``) or asyncio (``AsyncTransport``)."""

from typing import TYPE_CHECKING

# Each public name is written once, as a re-export (see notifymail._lazy).
from notifymail._lazy import lazy_exports
from notifymail.transport.base import AsyncTransport as AsyncTransport
from notifymail.transport.base import Transport as Transport
from notifymail.values import Delivery as Delivery
from notifymail.values import Envelope as Envelope
from notifymail.values import Reply as Reply

# Imported on first use: the email package and ssl are slow to import, and
# importing transport.base (as every module of the package does) must not pay for them.
if TYPE_CHECKING:
    from notifymail.transport.asyncsmtp import AsyncSmtpTransport as AsyncSmtpTransport
    from notifymail.transport.console import ConsoleTransport as ConsoleTransport
    from notifymail.transport.memory import AsyncMemoryTransport as AsyncMemoryTransport
    from notifymail.transport.memory import MemoryTransport as MemoryTransport
    from notifymail.transport.memory import Sent as Sent
    from notifymail.transport.smtp import SmtpTransport as SmtpTransport

if not TYPE_CHECKING:  # a type checker reads the imports instead, and knows every name
    __getattr__, __dir__ = lazy_exports(globals())
