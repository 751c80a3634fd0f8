"""The values every layer passes around: the envelope, the server's reply, the delivery.

Who receives a message is the envelope's business, never a header's: the ``Bcc`` header
is not even serialised. An envelope is bytes and addresses, so an outbox or a task broker
stores it as it is (``to_dict``/``from_dict``) and sends exactly those bytes later.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from notifymail._address import ascii_domain, needs_smtputf8
from notifymail._results import Delivery, Reply
from notifymail.errors import InvalidMessage

if TYPE_CHECKING:
    from email.message import EmailMessage

__all__ = ["Delivery", "Envelope", "Reply"]

_BREAKS_A_COMMAND = re.compile(r"[\s<>\x00-\x1f\x7f]|^$")
_MESSAGE_ID = re.compile(
    rb"^message-id:[ \t]*(.*?)[ \t]*\r\n(?![ \t])", re.IGNORECASE | re.M | re.S
)
_FORMAT_VERSION = 1


def _check_address(address: object) -> None:
    """Refuse what would end an SMTP command early, add parameters to it, or could not be
    written in IDNA A-labels on the wire."""
    if not isinstance(address, str) or _BREAKS_A_COMMAND.search(address):
        raise InvalidMessage(f"envelope: {address!r} cannot go in MAIL FROM or RCPT TO")
    domain = address.rpartition("@")[2]
    if not domain.isascii():
        try:
            ascii_domain(domain)
        except ValueError as error:
            raise InvalidMessage(
                f"envelope: {address!r} has an invalid domain (no IDNA A-labels): {error}"
            ) from None


def _crlf(raw: bytes) -> bytes:
    """``raw`` with every line end (CR LF, CR or LF) made CR LF."""
    # Counting is much cheaper than rewriting what has nothing to change; and unlike a
    # regular expression substitution, bytes.replace keeps no object per line.
    if raw.count(b"\r") == raw.count(b"\n") == raw.count(b"\r\n"):
        return raw
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


class Envelope:
    """One SMTP transaction: the envelope sender, the recipients, and the message.

    Give exactly one of ``message`` (an ``EmailMessage``, serialised on first use of
    ``raw``) and ``raw`` (the message's bytes, sent unchanged but for line ends made
    CRLF; ``message`` is then parsed back on first use). ``recipients`` alone decide who
    receives the message; its ``To`` and ``Cc`` headers are for display. ``smtputf8=True``
    says that an address only the headers hold (a ``Reply-To``) needs SMTPUTF8.
    """

    __slots__ = ("_message", "_message_id", "_raw", "_tail", "recipients", "sender", "smtputf8")

    sender: str
    recipients: tuple[str, ...]
    smtputf8: bool
    _message: EmailMessage | None
    _raw: bytes | None
    _tail: bytes  # bytes after _raw that other envelopes share: see _composed
    _message_id: str | None  # found on first use, or given by composition

    def __init__(
        self,
        sender: str,
        recipients: Iterable[str],
        message: EmailMessage | None = None,
        *,
        raw: bytes | None = None,
        smtputf8: bool = False,
    ) -> None:
        if isinstance(recipients, str):
            raise TypeError("Envelope.recipients must be a tuple of addresses, not a str")
        recipients = tuple(recipients)
        if not recipients:
            raise ValueError("an Envelope needs at least one recipient")
        for address in (sender, *recipients):
            _check_address(address)
        if (message is None) == (raw is None):
            raise TypeError("an Envelope needs exactly one of message and raw")
        if raw is not None:
            if not isinstance(raw, (bytes, bytearray, memoryview)):
                raise TypeError(f"Envelope.raw must be bytes, not {type(raw).__name__}")
            raw = _crlf(bytes(raw))
        set_ = object.__setattr__
        set_(self, "sender", sender)
        set_(self, "recipients", recipients)
        set_(self, "smtputf8", bool(smtputf8))
        set_(self, "_message", message)
        set_(self, "_raw", raw)
        set_(self, "_tail", b"")
        set_(self, "_message_id", None)

    @classmethod
    def _composed(
        cls,
        sender: str,
        recipients: tuple[str, ...],
        head: bytes,
        tail: bytes,
        *,
        smtputf8: bool,
        message_id: str | None = None,
    ) -> Envelope:
        """Composition's envelope: the bytes ``head + tail``, both finished, where ``tail``
        (the body) is one object shared by every envelope of a notification, so that
        20,000 envelopes hold one body. Composition has validated the addresses and
        written CRLF line ends, so nothing is checked again here. ``head`` ends a line,
        so ``tail`` starts one; ``message_id`` is the one ``head`` holds, when known.
        """
        envelope = cls.__new__(cls)
        set_ = object.__setattr__
        set_(envelope, "sender", sender)
        set_(envelope, "recipients", recipients)
        set_(envelope, "smtputf8", smtputf8)
        set_(envelope, "_message", None)
        set_(envelope, "_raw", head)
        set_(envelope, "_tail", tail)
        set_(envelope, "_message_id", message_id)
        return envelope

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Envelope is immutable: cannot set {name!r}")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(sender={self.sender!r}, recipients={self.recipients!r}, "
            f"smtputf8={self.smtputf8!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Envelope):
            return NotImplemented
        return (self.sender, self.recipients, self.smtputf8, self.raw) == (
            other.sender,
            other.recipients,
            other.smtputf8,
            other.raw,
        )

    def __hash__(self) -> int:
        return hash((self.sender, self.recipients, self.smtputf8))

    @property
    def needs_smtputf8(self) -> bool:
        """Whether an address has a non-ASCII local part, which only SMTPUTF8 can carry."""
        if self.smtputf8:
            return True
        addresses = (self.sender, *self.recipients)
        # The whole address in ASCII is the common case, and settles it at C speed.
        return not all(map(str.isascii, addresses)) and any(map(needs_smtputf8, addresses))

    @property
    def raw(self) -> bytes:
        """The message as sent on the wire: CRLF line ends, no ``Bcc`` header.

        Headers are 7-bit (RFC 2047 encoded) unless an address needs SMTPUTF8.
        Serialised once, on first use.
        """
        head, tail = self._parts()
        # Joined on each use rather than kept: the body stays shared between envelopes.
        return head + tail if tail else head

    def _parts(self) -> tuple[bytes, bytes]:
        """``raw`` in the two parts it is kept in: this envelope's own, and the tail (the
        body) shared with other envelopes, ``b""`` when none is (see `_composed`)."""
        raw = self._raw
        if raw is None:
            raw = self._serialise()
            object.__setattr__(self, "_raw", raw)
        return raw, self._tail

    @property
    def message(self) -> EmailMessage:
        """The message; for an envelope made from ``raw``, parsed back on first use."""
        message = self._message
        if message is None:
            from email import message_from_bytes, policy  # slow to import: on first use
            from email.message import EmailMessage

            parsed = message_from_bytes(self.raw, policy=policy.SMTP)
            assert isinstance(parsed, EmailMessage)  # noqa: S101 - guaranteed by the policy
            message = parsed
            if self._message_id is None:  # from the bytes, which are what is sent
                self._message_id_from_bytes()
            object.__setattr__(self, "_message", message)
        return message

    @property
    def message_id(self) -> str:
        """The ``Message-ID`` header, or ``""`` when the message has none."""
        found = self._message_id
        if found is not None:
            return found
        message = self._message
        if message is not None:  # given, not parsed: it may still change, read it each time
            return str(message.get("Message-ID", ""))
        return self._message_id_from_bytes()

    def _message_id_from_bytes(self) -> str:
        """The Message-ID the bytes hold, kept: the bytes never change."""
        head = self._raw if self._tail else self.raw.partition(b"\r\n\r\n")[0] + b"\r\n"
        assert head is not None  # noqa: S101 - an envelope without a message has bytes
        match = _MESSAGE_ID.search(head)
        found = "" if match is None else " ".join(match[1].decode("ascii", "replace").split())
        object.__setattr__(self, "_message_id", found)
        return found

    def with_recipients(self, recipients: Iterable[str]) -> Envelope:
        """The same bytes from the same sender, for ``recipients`` (a retry to some of them)."""
        if self._tail and self._raw is not None:
            recipients = tuple(recipients)
            if not recipients:
                raise ValueError("an Envelope needs at least one recipient")
            for address in recipients:
                _check_address(address)
            return Envelope._composed(
                self.sender,
                recipients,
                self._raw,
                self._tail,
                smtputf8=self.needs_smtputf8,
                message_id=self._message_id,
            )
        return Envelope(self.sender, recipients, raw=self.raw, smtputf8=self.needs_smtputf8)

    def to_dict(self) -> dict[str, object]:
        """A JSON-safe form for queues and task brokers;
        [`from_dict`][notifymail.transport.base.Envelope.from_dict] reads it back."""
        return {
            "version": _FORMAT_VERSION,
            "sender": self.sender,
            "recipients": list(self.recipients),
            "raw": base64.b64encode(self.raw).decode("ascii"),
            "smtputf8": self.needs_smtputf8,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Envelope:
        """The envelope [`to_dict`][notifymail.transport.base.Envelope.to_dict] made, with
        byte-identical ``raw``.

        Raises ``ValueError`` for a malformed dict or an unknown version, and
        ``InvalidMessage`` for an address the constructor refuses.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"Envelope.from_dict: expected a mapping, not {type(data).__name__}")
        version = data.get("version")
        if version != _FORMAT_VERSION:
            raise ValueError(f"Envelope.from_dict: unknown version {version!r}")
        sender, recipients, raw, smtputf8 = (
            data.get(name) for name in ("sender", "recipients", "raw", "smtputf8")
        )
        if not isinstance(sender, str):
            raise ValueError("Envelope.from_dict: sender must be a str")
        if not isinstance(recipients, list) or not all(isinstance(r, str) for r in recipients):
            raise ValueError("Envelope.from_dict: recipients must be a list of str")
        if not isinstance(smtputf8, bool):
            raise ValueError("Envelope.from_dict: smtputf8 must be a bool")
        if not isinstance(raw, str):
            raise ValueError("Envelope.from_dict: raw must be a base64 str")
        try:
            content = base64.b64decode(raw.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise ValueError("Envelope.from_dict: raw is not valid base64") from None
        return cls(sender, recipients, raw=content, smtputf8=smtputf8)

    def _serialise(self) -> bytes:
        import copy
        from email import policy  # here, not at start-up: it is slow to import

        message = self.message
        if "Bcc" in message:
            message = copy.copy(message)
            del message["Bcc"]
        # The policy's line ends are CRLF, but a payload set as bytes keeps its own.
        return _crlf(
            message.as_bytes(policy=policy.SMTPUTF8 if self.needs_smtputf8 else policy.SMTP)
        )
