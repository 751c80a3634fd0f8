"""Transports hand envelopes to a mail system: SMTP, memory for tests, or a console."""

from notifymail.transport.base import Delivery, Envelope, Reply, Transport

__all__ = ["Delivery", "Envelope", "Reply", "Transport"]
