"""A transport that prints each message for a person to read: the command line tool's
default when no SMTP server is configured, and a development aid.
"""

from __future__ import annotations

import sys
from email.message import EmailMessage
from typing import TextIO

from typing_extensions import override

from notifymail._readback import read_back
from notifymail.transport.base import Transport
from notifymail.values import Delivery, Envelope

__all__ = ["ConsoleTransport"]

_SEPARATOR = "-" * 79


class ConsoleTransport(Transport):
    """Writes each message to ``stream``: envelope, headers, then the bodies, decoded.

    ``stream`` defaults to the ``sys.stdout`` of the moment each message is written, so
    a redirected or captured stdout is honoured. Every recipient counts as accepted.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    @override
    def deliver(self, envelope: Envelope) -> Delivery:
        stream = self._stream if self._stream is not None else sys.stdout
        stream.write(render(envelope))
        stream.flush()
        return Delivery(envelope.message_id, envelope.recipients)


def render(envelope: Envelope) -> str:
    """The message as a person reads it: headers decoded, text bodies shown, files listed."""
    message = read_back(envelope)
    lines = [
        f"Envelope-From: {envelope.sender}",
        f"Envelope-To: {', '.join(envelope.recipients)}",
        "",
    ]
    lines += [f"{name}: {value}" for name, value in message.items()]
    for part in message.walk():
        if not part.is_multipart():
            lines += ["", *_describe(part)]
    lines.append(_SEPARATOR)
    return "\n".join(lines) + "\n"


def _describe(part: EmailMessage) -> list[str]:
    content_type = part.get_content_type()
    filename = part.get_filename()
    if part.get_content_maintype() == "text" and filename is None:
        return [f"[{content_type}]", str(part.get_content()).rstrip("\n")]
    size = len(part.get_payload(decode=True) or b"")
    cid = part.get("Content-ID")
    inline = f", inline {cid}" if cid else ""
    return [f"[attachment {filename!r}: {content_type}, {size} bytes{inline}]"]
