"""Composition: messages and notifications become envelopes ready for a transport.

Composition is where header injection and Bcc leaks are stopped: every header value goes
through one check, recipients travel only in the envelope, and a hidden batch's headers
name no one. A notification's body (alternatives, inline images, attachments) is built
once and shared by every envelope; only the top-level headers differ between them.

It is kept apart from `notifymail.message` because it needs the email package,
which costs more start-up time than the rest of notifymail: it loads with the mailer,
not with ``import notifymail`` or a message.
"""

from __future__ import annotations

import binascii
import re
import secrets
from collections.abc import Sequence
from datetime import datetime, timezone
from email import policy as email_policy
from email import quoprimime
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime
from typing import TYPE_CHECKING, Protocol

from notifymail._address import (
    ATEXT,
    ascii_domain,
    domain_of,
    has_control_character,
    needs_smtputf8,
    wire_address,
)
from notifymail.errors import InvalidMessage
from notifymail.message import (
    Attachment,
    Message,
    Notification,
    _header_value,
    validate_recipients,
)
from notifymail.values import Envelope

if TYPE_CHECKING:
    from notifymail.settings import SenderSettings

__all__ = ["compose", "compose_notification"]


class _HeaderRegistry(HeaderRegistry):
    """The email package's registry, minus building a new class on every lookup."""

    def __init__(self) -> None:
        super().__init__()
        self._types: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        header_type = self._types.get(key)
        if header_type is None:
            header_type = self._types[key] = super().__getitem__(name)
        return header_type


# Bodies are encoded 7-bit (quoted-printable or base64 when needed) so that a message
# goes through any server, 8BITMIME or not; only SMTPUTF8 headers are ever 8-bit.
_POLICY = email_policy.default.clone(cte_type="7bit", header_factory=_HeaderRegistry())

_MAX_LINE = 78  # the policy's max_line_length, as email.policy.SMTP's

_UNDISCLOSED_RECIPIENTS = "undisclosed-recipients:;"


# Header values the wire policy writes verbatim and the email package parses back to
# themselves are stored as plain str (set_raw), parsed only if someone reads them: parsing
# and folding a header object costs more than the rest of composing a message. Anything
# else (non-ASCII, quoting, an encoded word) becomes a parsed header object, as
# ``message[name] = value`` would make it. Values longer than a line are refolded from a
# parse by the policy either way, so the bytes are the same on both paths.
_PLAIN_ADDRESS = re.compile(rf"{ATEXT}(?:\.{ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
_PLAIN_PHRASE = re.compile(rf"(?!.*=\?){ATEXT}(?: {ATEXT})*")  # a display name, no quotes
_PLAIN_TEXT = re.compile(r"(?!.*=\?)[!-~]+(?: [!-~]+)*")  # unstructured: Subject, custom

_Value = str | BaseHeader


def _address(address: str, *, utf8: bool, display_name: str = "") -> Address:
    """A header address; the domain as A-labels unless the message goes out as SMTPUTF8.

    ``email.policy.SMTP`` would RFC 2047-encode a Unicode domain, which no one can read.
    """
    local_part, _, domain = address.rpartition("@")
    return Address(
        display_name=display_name,
        username=local_part,
        domain=domain if utf8 else ascii_domain(domain),
    )


def _addresses(
    name: str, addresses: Sequence[str], *, utf8: bool, display_name: str = ""
) -> _Value:
    """An address header (``From`` with ``display_name``, ``To``, ``Cc``, ``Reply-To``)."""
    wire = addresses if utf8 else [wire_address(address) for address in addresses]
    if all(map(_PLAIN_ADDRESS.fullmatch, wire)):
        if not display_name:
            return ", ".join(wire)
        if _PLAIN_PHRASE.fullmatch(display_name):
            return f"{display_name} <{wire[0]}>"
    return _header(name, [_address(a, utf8=utf8, display_name=display_name) for a in addresses])


def _text(name: str, value: str) -> _Value:
    """An unstructured header (``Subject``, a custom header)."""
    return value if _PLAIN_TEXT.fullmatch(value) else _header(name, value)


def _header(name: str, value: object) -> BaseHeader:
    header: BaseHeader = _POLICY.header_factory(name, value)
    # The email package decodes encoded words when it parses a value, even inside a quoted
    # display name, and writes what they decode to as it is: a line break hidden in
    # "=?utf-8?q?=0D=0ABcc:...?=" would be header injection.
    text = str(header)
    if has_control_character(text) or ("=?" in text and _folds_a_line_break(header)):
        raise InvalidMessage(
            f"{name}: {value!r} holds an encoded word that decodes to a line break, NUL or "
            "control character"
        )
    return header


def _folds_a_line_break(header: BaseHeader) -> bool:
    folded = header.fold(policy=email_policy.SMTP).removesuffix("\r\n")
    return has_control_character(folded.replace("\r\n ", " "))


def _verbatim(name: str, value: object) -> bool:
    """Whether the wire policy writes ``value``, a plain str, on one line as it is: printable
    ASCII (no line break to split on) that fits the line; longer values are refolded."""
    return (
        type(value) is str
        and value.isascii()
        and value.isprintable()
        and len(name) + 2 + len(value) <= _MAX_LINE
    )


def _wire_policy(utf8: bool) -> email_policy.Policy:
    return email_policy.SMTPUTF8 if utf8 else email_policy.SMTP


_LINE_END = re.compile(r"\r\n|\r|\n")


def _transfer_encoded(body: str) -> tuple[str, str]:
    """The transfer encoding and payload ``set_content`` picks for ``body`` in UTF-8 under
    a 7-bit policy: 7bit when it can, else the shorter of quoted-printable and base64 as
    judged by the first ten lines."""
    lines = body.encode().splitlines()
    if body.isascii() and max(map(len, lines), default=0) <= _MAX_LINE:
        return "7bit", b"\n".join(lines).decode() + "\n"
    text = b"\n".join(lines) + b"\n"
    sniff = b"\n".join(lines[:10]) + b"\n"
    sniff_qp = quoprimime.body_encode(sniff.decode("latin-1"), _MAX_LINE)
    if len(sniff_qp) <= len(binascii.b2a_base64(sniff)):
        if len(lines) <= 10:
            return "quoted-printable", sniff_qp
        return "quoted-printable", quoprimime.body_encode(text.decode("latin-1"), _MAX_LINE)
    chunk = _MAX_LINE // 4 * 3
    encoded = (binascii.b2a_base64(text[i : i + chunk]) for i in range(0, len(text), chunk))
    return "base64", b"".join(encoded).decode("ascii")


class _Part:
    """A MIME part and its bytes on the wire, written without the email package's generator
    where the part is ours to know: text, and multiparts of parts. ``head(utf8) +
    body(utf8)`` equals ``mime.as_bytes(policy=SMTP or SMTPUTF8)``.

    Parts are shared by every envelope of a composition: nothing here writes to them.
    """

    def __init__(self, mime: MIMEPart, children: Sequence[_Part] = ()) -> None:
        self.mime = mime
        self.children = tuple(children)
        self.boundary = b""
        self._wire: dict[bool, tuple[bytes, bytes]] = {}

    @classmethod
    def text(cls, body: str, subtype: str) -> _Part:
        """What ``part.set_content(body, subtype=subtype)`` makes, without parsing headers."""
        mime = MIMEPart(policy=_POLICY)
        cte, payload = _transfer_encoded(body)
        mime.set_raw("Content-Type", f'text/{subtype}; charset="utf-8"')
        mime.set_raw("Content-Transfer-Encoding", cte)
        mime.set_payload(payload)
        part = cls(mime)
        # The generator writes a text payload line by line, each ended with CRLF.
        wire = (_LINE_END.sub("\r\n", payload).encode("ascii"),)
        part._wire[False] = part._wire[True] = (part._head(False), b"\r\n" + wire[0])
        return part

    @classmethod
    def multipart(cls, subtype: str, children: Sequence[_Part]) -> _Part:
        # "=_" never occurs in quoted-printable or base64 text. Set at composition so that
        # serialising a shared part never writes to it (the generator would otherwise).
        # 24 hex digits keep the Content-Type on one line.
        boundary = f"=_{secrets.token_hex(12)}"
        mime = MIMEPart(policy=_POLICY)
        mime.set_raw("Content-Type", f'multipart/{subtype}; boundary="{boundary}"')
        mime.set_payload([child.mime for child in children])
        part = cls(mime, children)
        part.boundary = boundary.encode("ascii")
        return part

    @classmethod
    def attachment(cls, attachment: Attachment) -> _Part:
        mime = MIMEPart(policy=_POLICY)
        maintype, _, subtype = attachment.mimetype.partition("/")
        mime.set_content(
            attachment.content,
            maintype,
            subtype,
            disposition="inline" if attachment.inline else "attachment",
            filename=attachment.filename,
            cid=f"<{attachment.content_id}>" if attachment.inline else None,
        )
        if "=?" in attachment.filename and _folds_a_line_break(mime["Content-Disposition"]):
            raise InvalidMessage(
                f"filename: {attachment.filename!r} holds an encoded word that decodes to a "
                "line break, NUL or control character"
            )
        return cls(mime)

    def _head(self, utf8: bool) -> bytes:
        fold = _wire_policy(utf8).fold_binary
        return b"".join(fold(name, value) for name, value in self.mime.raw_items())

    def _head_and_body(self, utf8: bool) -> tuple[bytes, bytes]:
        wire = self._wire.get(utf8)
        if wire is None:
            # Two threads may both get here: each writes the same bytes.
            if self.children:
                delimiter = b"\r\n--" + self.boundary + b"\r\n"
                parts = delimiter.join(b"".join(c._head_and_body(utf8)) for c in self.children)
                body = b"\r\n" + delimiter[2:] + parts + b"\r\n--" + self.boundary + b"--\r\n"
                wire = (self._head(utf8), body)
            else:
                data = self.mime.as_bytes(policy=_wire_policy(utf8))
                end = data.index(b"\r\n\r\n") + 2
                wire = (data[:end], data[end:])
            self._wire[utf8] = wire
        return wire

    def body(self, utf8: bool) -> bytes:
        """Everything after the part's own headers: the blank line, then the content."""
        return self._head_and_body(utf8)[1]


def _body(content: Message | Notification) -> _Part:
    """The MIME tree: text/html alternative, inline images related to the html, then mixed."""
    inline = [a for a in content.attachments if a.inline]
    files = [a for a in content.attachments if not a.inline]
    html: _Part | None = None
    if content.html is not None:
        html = _Part.text(content.html, "html")
        if inline:
            html = _Part.multipart("related", [html, *map(_Part.attachment, inline)])
    if content.text is None:
        assert html is not None  # noqa: S101 - _content guarantees a text or an html body
        body = html
    else:
        body = _Part.text(content.text, "plain")
        if html is not None:
            body = _Part.multipart("alternative", [body, html])
    if files:
        body = _Part.multipart("mixed", [body, *map(_Part.attachment, files)])
    return body


class _ComposedEnvelope(Envelope):
    """An envelope whose ``raw`` reuses the bytes its composition shares: only the headers
    that vary per envelope (``To``, ``Cc``, ``Message-ID``) are written.

    ``raw`` equals ``message.as_bytes(policy=SMTP)`` (SMTPUTF8 when needed). The message
    is shared structure: it must not be modified once composed.
    """

    __slots__ = ("_headers", "_message_id")

    _headers: _Headers
    _message_id: str

    def __init__(
        self,
        sender: str,
        recipients: tuple[str, ...],
        message: EmailMessage,
        *,
        smtputf8: bool,
        headers: _Headers,
        message_id: str,
    ) -> None:
        super().__init__(sender, recipients, message, smtputf8=smtputf8)
        object.__setattr__(self, "_headers", headers)
        object.__setattr__(self, "_message_id", message_id)

    @property
    def message_id(self) -> str:
        return self._message_id

    def _serialise(self) -> bytes:
        return self._headers.wire(self.message, self.needs_smtputf8)


class _Headers:
    """The headers of one composition, made once and shared by all its envelopes.

    Only ``To``, ``Cc`` and ``Message-ID`` are made per envelope; ``From`` and
    ``Reply-To`` once for each domain form (A-labels, or Unicode under SMTPUTF8). Each
    shared header is folded once per wire policy, however many envelopes carry it.
    """

    def __init__(
        self,
        content: Message | Notification,
        sender: SenderSettings,
        reply_to: tuple[str, ...],
        body: _Part,
    ) -> None:
        self._sender = sender.from_address
        self._from_name = _header_value("from_name", sender.from_name or "")
        self._reply_to = reply_to
        self._message_id_domain = ascii_domain(domain_of(sender.from_address))
        self._body = body
        self._subject_and_date = [
            ("Subject", _text("Subject", content.subject)),
            ("Date", format_datetime(datetime.now(timezone.utc))),
        ]
        self._tail = [
            *((name, _text(name, value)) for name, value in content.headers.items()),
            ("MIME-Version", "1.0"),
            *body.mime.raw_items(),
        ]
        self._addressed: dict[bool, list[tuple[str, _Value]]] = {}
        # (utf8, name, id of a value every envelope shares) -> the header folded for the
        # wire. The shared values are kept alive by self, so their ids stay theirs.
        self._shared = {id(value) for _, value in (*self._subject_and_date, *self._tail)}
        self._shared.add(id(_UNDISCLOSED_RECIPIENTS))
        self._folded: dict[tuple[bool, str, int], bytes] = {}

    def _from_and_reply_to(self, utf8: bool) -> list[tuple[str, _Value]]:
        headers = self._addressed.get(utf8)
        if headers is None:
            headers = [
                (
                    "From",
                    _addresses("From", (self._sender,), utf8=utf8, display_name=self._from_name),
                )
            ]
            if self._reply_to:
                headers.append(("Reply-To", _addresses("Reply-To", self._reply_to, utf8=utf8)))
            self._shared.update(id(value) for _, value in headers)
            self._addressed[utf8] = headers
        return headers

    def envelope(
        self, recipients: tuple[str, ...], to: Sequence[str] | None, cc: Sequence[str] = ()
    ) -> Envelope:
        """An envelope over the body; ``to=None`` writes ``To: undisclosed-recipients:;``."""
        utf8 = any(map(needs_smtputf8, (self._sender, *recipients, *self._reply_to)))
        from_header, *reply_to = self._from_and_reply_to(utf8)
        message_id = f"<{secrets.token_hex(16)}@{self._message_id_domain}>"
        headers = [from_header]
        if to is None:
            headers.append(("To", _UNDISCLOSED_RECIPIENTS))
        elif to:
            headers.append(("To", _addresses("To", to, utf8=utf8)))
        if cc:
            headers.append(("Cc", _addresses("Cc", cc, utf8=utf8)))
        headers += reply_to
        headers += self._subject_and_date
        headers.append(("Message-ID", message_id))
        headers += self._tail
        message = EmailMessage(policy=_POLICY)
        for name, value in headers:
            # Stored as it is: a header object is not parsed again, a str only when read.
            message.set_raw(name, value)
        payload = self._body.mime.get_payload()
        # A fresh list per envelope: the parts are shared, the list that holds them is not.
        message.set_payload(list(payload) if isinstance(payload, list) else payload)
        return _ComposedEnvelope(
            self._sender,
            recipients,
            message,
            smtputf8=utf8,
            headers=self,
            message_id=message_id,
        )

    def wire(self, message: EmailMessage, utf8: bool) -> bytes:
        """``message.as_bytes(policy=SMTP or SMTPUTF8)`` for a message of `envelope`."""
        wire_policy = _wire_policy(utf8)
        folded = self._folded
        lines = []
        for name, value in message.raw_items():
            if name.lower() == "bcc":
                continue
            key = (utf8, name, id(value))
            line = folded.get(key)
            if line is None:
                if _verbatim(name, value):
                    line = f"{name}: {value}\r\n".encode("ascii")  # as the policy writes it
                else:
                    line = wire_policy.fold_binary(name, value)
                if id(value) in self._shared:
                    folded[key] = line
            lines.append(line)
        lines.append(self._body.body(utf8))
        return b"".join(lines)


def compose(message: Message, sender: SenderSettings) -> Envelope:
    """System mail: one envelope to to, cc and bcc (each once), ``To``/``Cc`` as given.

    ``Reply-To`` is the message's ``reply_to`` when given, else the sender's. No ``Bcc``
    header is ever written; a message to bcc alone is ``To: undisclosed-recipients:;``.
    """
    body = _body(message)
    headers = _Headers(message, sender, message.reply_to or sender.reply_to, body)
    to = message.to if message.to or message.cc else None
    return headers.envelope(message.recipients, to, message.cc)


class _Batch(Protocol):
    """What `compose_notification` needs of ``notifymail.policy.Batch``."""

    @property
    def recipients(self) -> tuple[str, ...]: ...

    @property
    def hidden(self) -> bool: ...


def compose_notification(
    notification: Notification, sender: SenderSettings, batches: Sequence[_Batch]
) -> list[Envelope]:
    """One envelope per batch, all sharing one body; each with its own ``Message-ID``.

    A hidden batch is addressed ``To: undisclosed-recipients:;`` with no ``Cc``: its
    headers name no recipient. A visible batch lists every recipient in ``To``.
    """
    headers = _Headers(notification, sender, sender.reply_to, _body(notification))
    envelopes = []
    for batch in batches:
        recipients = validate_recipients(batch.recipients, "recipients")
        envelopes.append(headers.envelope(recipients, None if batch.hidden else recipients))
    return envelopes
