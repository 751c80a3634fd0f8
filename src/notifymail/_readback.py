"""A message read back from its bytes as a receiver reads it, for the transports that show
or keep what was sent (memory, console) and for tests of composition.
"""

from __future__ import annotations

import email
from email import policy as email_policy
from email.message import EmailMessage
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from notifymail.values import Envelope

__all__ = ["read_back"]


def read_back(envelope: Envelope) -> EmailMessage:
    """Parse ``envelope.raw`` as a receiver would (``email.policy.default``).

    Line ends are read as ``\\n``, as a mail client stores them, so text bodies compare
    equal to Python strings. An SMTPUTF8 message is decoded as UTF-8 first, so its headers
    read back as text rather than as surrogate escapes.
    """
    raw = envelope.raw.replace(b"\r\n", b"\n")
    if envelope.needs_smtputf8:
        parsed = email.message_from_string(
            raw.decode("utf-8", "surrogateescape"), policy=email_policy.default
        )
    else:
        parsed = email.message_from_bytes(raw, policy=email_policy.default)
    assert isinstance(parsed, EmailMessage)  # noqa: S101 - guaranteed by policy.default
    return parsed
