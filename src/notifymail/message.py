"""What a host asks to send, and how it becomes envelopes ready for a transport.

Composition is where header injection and Bcc leaks are stopped: every header value goes
through one check, recipients travel only in the envelope, and a hidden batch's headers
name no one. A notification's body (alternatives, inline images, attachments) is built
once and shared by every envelope; only the top-level headers differ between them.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email import policy as email_policy
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

from notifymail._address import (
    address_key,
    ascii_domain,
    domain_of,
    has_control_character,
    normalize_address,
)
from notifymail.errors import InvalidMessage
from notifymail.transport.base import Envelope

if TYPE_CHECKING:
    from notifymail.settings import SenderSettings

__all__ = [
    "Attachment",
    "Message",
    "Notification",
    "compose",
    "compose_notification",
    "validate_recipients",
]


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

_FIELD_NAME = re.compile(r"[!-9;-~]+")
_MIMETYPE = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+)/([!#$%&'*+.^_`|~0-9A-Za-z-]+)")
_CONTENT_ID = re.compile(r"[!-;=?-~]+")

# Headers composition owns: a custom header may not replace them. Content-* and Resent-*
# are matched by prefix. What is left is unstructured to the email package, so a custom
# value is written as given, never parsed.
_STRUCTURAL_HEADERS = frozenset(
    {
        "bcc",
        "cc",
        "date",
        "from",
        "message-id",
        "mime-version",
        "orig-date",
        "reply-to",
        "return-path",
        "sender",
        "subject",
        "to",
    }
)

_UNDISCLOSED_RECIPIENTS = "undisclosed-recipients:;"
_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


def _header_value(name: str, value: object) -> str:
    """Return ``value`` if it may go into header ``name``, else raise InvalidMessage."""
    if not isinstance(value, str):
        raise InvalidMessage(f"{name}: must be a str, not {type(value).__name__}")
    if has_control_character(value):
        raise InvalidMessage(f"{name}: {value!r} contains a line break, NUL or control character")
    return value


def validate_recipients(addresses: Iterable[str], field: str) -> tuple[str, ...]:
    """Return ``addresses`` normalised, in order; raise InvalidMessage naming the bad one.

    A bare ``str`` is refused rather than read as one address (Django does the same):
    ``to="a@example.com, b@example.com"`` is too easy to get wrong.
    """
    if isinstance(addresses, (str, bytes)):
        raise InvalidMessage(f"{field}: must be a list or tuple of addresses, not a single str")
    normalized = []
    for address in addresses:
        try:
            normalized.append(normalize_address(address))
        except ValueError as error:
            raise InvalidMessage(f"{field}: {address!r} is not a valid address: {error}") from None
    return tuple(normalized)


def _custom_headers(headers: Mapping[str, str]) -> Mapping[str, str]:
    if not isinstance(headers, Mapping):
        raise InvalidMessage(f"headers: must be a mapping, not {type(headers).__name__}")
    checked: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _FIELD_NAME.fullmatch(name):
            raise InvalidMessage(
                f"headers: {name!r} is not a header name (printable ASCII, no ':' or space)"
            )
        lowered = name.lower()
        if lowered in _STRUCTURAL_HEADERS or lowered.startswith(("content-", "resent-")):
            raise InvalidMessage(f"headers: {name} is set by notifymail and cannot be overridden")
        if any(existing.lower() == lowered for existing in checked):
            raise InvalidMessage(f"headers: {name} is given twice")
        checked[name] = _header_value(name, value)
    return MappingProxyType(checked)


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file sent with a message; inline (an image the HTML shows) when it has ``content_id``.

    Refer to an inline image from the HTML as ``cid:<content_id>``. ``content_id`` may be
    given with or without angle brackets; it is stored without them.
    """

    filename: str
    content: bytes
    mimetype: str
    content_id: str | None = None

    def __post_init__(self) -> None:
        _header_value("filename", self.filename)
        if not isinstance(self.content, (bytes, bytearray, memoryview)):
            raise InvalidMessage(
                f"content: {self.filename!r} must be bytes, not {type(self.content).__name__}"
            )
        object.__setattr__(self, "content", bytes(self.content))
        match = _MIMETYPE.fullmatch(_header_value("mimetype", self.mimetype).strip())
        if match is None or match[1].lower() in ("multipart", "message"):
            raise InvalidMessage(
                f"mimetype: {self.mimetype!r} is not a type/subtype such as application/pdf "
                "(multipart/* and message/* are not supported)"
            )
        object.__setattr__(self, "mimetype", match[0].lower())
        if self.content_id is not None:
            content_id = _header_value("content_id", self.content_id).strip()
            if content_id.startswith("<") and content_id.endswith(">"):
                content_id = content_id[1:-1]
            if not _CONTENT_ID.fullmatch(content_id):
                raise InvalidMessage(
                    f"content_id: {self.content_id!r} is not a Content-ID "
                    "(printable ASCII without spaces or angle brackets)"
                )
            object.__setattr__(self, "content_id", content_id)

    @property
    def inline(self) -> bool:
        """Whether the attachment is an inline image referred to by ``content_id``."""
        return self.content_id is not None


def _content(
    owner: Message | Notification,
    *,
    subject: str,
    text: str | None,
    html: str | None,
    attachments: Iterable[Attachment],
    headers: Mapping[str, str],
) -> None:
    """Validate and store what a Message and a Notification have in common."""
    set_ = object.__setattr__
    set_(owner, "subject", _header_value("subject", subject))
    for name, body in (("text", text), ("html", html)):
        if body is not None and not isinstance(body, str):
            raise InvalidMessage(f"{name}: must be a str or None, not {type(body).__name__}")
    if text is None and html is None:
        raise InvalidMessage("text: a message needs a text or an html body (or both)")
    set_(owner, "text", text)
    set_(owner, "html", html)
    attachments = tuple(attachments)
    for attachment in attachments:
        if not isinstance(attachment, Attachment):
            raise InvalidMessage(
                f"attachments: must be Attachment objects, not {type(attachment).__name__}"
            )
        if attachment.inline and html is None:
            raise InvalidMessage(
                f"attachments: inline image {attachment.filename!r} needs an html body"
            )
    set_(owner, "attachments", attachments)
    set_(owner, "headers", _custom_headers(headers))


@dataclass(frozen=True, slots=True, init=False)
class Message:
    """System mail (a password reset, an invitation) to named people.

    Every address is validated and stored normalised; sequences are stored as tuples and
    ``headers`` as a read-only mapping. ``bcc`` recipients receive the message but appear
    in no header. ``reply_to``, when given, replaces the sender's reply-to addresses.
    """

    to: tuple[str, ...]
    subject: str
    text: str | None
    html: str | None
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    reply_to: tuple[str, ...]
    headers: Mapping[str, str]
    attachments: tuple[Attachment, ...]

    def __init__(  # noqa: PLR0917 - SPEC's positional order
        self,
        to: Sequence[str],
        subject: str,
        text: str | None = None,
        html: str | None = None,
        cc: Sequence[str] = (),
        bcc: Sequence[str] = (),
        reply_to: Sequence[str] = (),
        headers: Mapping[str, str] = _NO_HEADERS,
        attachments: Sequence[Attachment] = (),
    ) -> None:
        for name, addresses in (("to", to), ("cc", cc), ("bcc", bcc), ("reply_to", reply_to)):
            object.__setattr__(self, name, validate_recipients(addresses, name))
        if not (self.to or self.cc or self.bcc):
            raise InvalidMessage("to: a message needs at least one recipient in to, cc or bcc")
        _content(
            self, subject=subject, text=text, html=html, attachments=attachments, headers=headers
        )

    @property
    def recipients(self) -> tuple[str, ...]:
        """Everyone who receives the message (to, cc, bcc), each once, first spelling kept."""
        return _unique((*self.to, *self.cc, *self.bcc))


@dataclass(frozen=True, slots=True, init=False)
class Notification:
    """An alert or subscription; the mailer decides who shares which envelope.

    ``headers`` carries extras such as ``List-Unsubscribe``. Recipients are validated and
    stored normalised, duplicates included (the delivery plan drops them).
    """

    recipients: tuple[str, ...]
    subject: str
    text: str | None
    html: str | None
    attachments: tuple[Attachment, ...]
    headers: Mapping[str, str]

    def __init__(  # noqa: PLR0917 - SPEC's positional order
        self,
        recipients: Sequence[str],
        subject: str,
        text: str | None = None,
        html: str | None = None,
        attachments: Sequence[Attachment] = (),
        headers: Mapping[str, str] = _NO_HEADERS,
    ) -> None:
        object.__setattr__(self, "recipients", validate_recipients(recipients, "recipients"))
        if not self.recipients:
            raise InvalidMessage("recipients: a notification needs at least one recipient")
        _content(
            self, subject=subject, text=text, html=html, attachments=attachments, headers=headers
        )


class _Batch(Protocol):
    """What :func:`compose_notification` needs of ``notifymail.policy.Batch``."""

    @property
    def recipients(self) -> tuple[str, ...]: ...

    @property
    def hidden(self) -> bool: ...


def _unique(addresses: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, str] = {}
    for address in addresses:
        seen.setdefault(address_key(address), address)
    return tuple(seen.values())


def _needs_smtputf8(address: str) -> bool:
    return not address.rpartition("@")[0].isascii()


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


def _header(name: str, value: object) -> BaseHeader:
    header: BaseHeader = _POLICY.header_factory(name, value)
    return header


def _boundary() -> str:
    # "=_" never occurs in quoted-printable or base64 text. Set at composition so that
    # serialising a shared part never writes to it (the generator would otherwise).
    return f"=_{secrets.token_hex(16)}"


def _multipart(subtype: str, parts: Sequence[MIMEPart]) -> MIMEPart:
    part = MIMEPart(policy=_POLICY)
    part["Content-Type"] = f'multipart/{subtype}; boundary="{_boundary()}"'
    part.set_payload(list(parts))
    return part


def _text_part(body: str, subtype: str) -> MIMEPart:
    part = MIMEPart(policy=_POLICY)
    part.set_content(body, subtype=subtype)
    return part


def _attachment_part(attachment: Attachment) -> MIMEPart:
    part = MIMEPart(policy=_POLICY)
    maintype, _, subtype = attachment.mimetype.partition("/")
    part.set_content(
        attachment.content,
        maintype,
        subtype,
        disposition="inline" if attachment.inline else "attachment",
        filename=attachment.filename,
        cid=f"<{attachment.content_id}>" if attachment.inline else None,
    )
    return part


def _body(content: Message | Notification) -> MIMEPart:
    """The MIME tree: text/html alternative, inline images related to the html, then mixed."""
    inline = [a for a in content.attachments if a.inline]
    files = [a for a in content.attachments if not a.inline]
    html: MIMEPart | None = None
    if content.html is not None:
        html = _text_part(content.html, "html")
        if inline:
            html = _multipart("related", [html, *map(_attachment_part, inline)])
    if content.text is None:
        assert html is not None  # noqa: S101 - _content guarantees a text or an html body
        body = html
    else:
        body = _text_part(content.text, "plain")
        if html is not None:
            body = _multipart("alternative", [body, html])
    if files:
        body = _multipart("mixed", [body, *map(_attachment_part, files)])
    return body


class _SharedBody:
    """A body with its bytes on the wire, serialised once for every envelope that carries it.

    Serialising the body is most of the cost of an envelope; the headers are not.
    """

    def __init__(self, part: MIMEPart) -> None:
        self.part = part
        self.header_ids = frozenset(id(value) for _, value in part.raw_items())
        self._wire: dict[bool, bytes] = {}

    def wire(self, utf8: bool) -> bytes:
        """The body part, its own headers included, as ``email.policy.SMTP(UTF8)`` writes it."""
        data = self._wire.get(utf8)
        if data is None:
            # Two threads may both get here: each writes the same bytes.
            data = self._wire[utf8] = self.part.as_bytes(policy=_wire_policy(utf8))
        return data


def _wire_policy(utf8: bool) -> email_policy.Policy:
    return email_policy.SMTPUTF8 if utf8 else email_policy.SMTP


@dataclass(frozen=True)
class _ComposedEnvelope(Envelope):
    """An envelope whose ``raw`` reuses its body's bytes: only the top headers are written.

    ``raw`` equals ``message.as_bytes(policy=SMTP)`` (SMTPUTF8 when needed), because
    the message's headers are the envelope's own followed by the shared body's. The
    message is shared structure: it must not be modified once composed.
    """

    body: _SharedBody = field(kw_only=True, repr=False, compare=False)

    @cached_property
    def raw(self) -> bytes:
        wire_policy = _wire_policy(self.needs_smtputf8)
        header_ids = self.body.header_ids
        headers = b"".join(
            wire_policy.fold_binary(name, value)
            for name, value in self.message.raw_items()
            if id(value) not in header_ids and name.lower() != "bcc"
        )
        return headers + self.body.wire(self.needs_smtputf8)


class _Headers:
    """The headers of one composition, parsed once and shared by all its envelopes.

    Only ``To``, ``Cc`` and ``Message-ID`` are made per envelope; ``From`` and
    ``Reply-To`` once for each domain form (A-labels, or Unicode under SMTPUTF8).
    """

    def __init__(
        self,
        content: Message | Notification,
        sender: SenderSettings,
        reply_to: tuple[str, ...],
        body: _SharedBody,
    ) -> None:
        self._sender = sender.from_address
        self._from_name = _header_value("from_name", sender.from_name or "")
        self._reply_to = reply_to
        self._message_id_domain = ascii_domain(domain_of(sender.from_address))
        self._body = body
        self._subject_and_date = [
            _header("Subject", content.subject),
            _header("Date", format_datetime(datetime.now(timezone.utc))),
        ]
        self._tail = [
            *(_header(name, value) for name, value in content.headers.items()),
            _header("MIME-Version", "1.0"),
            *(value for _, value in body.part.raw_items()),
        ]
        self._addressed: dict[bool, list[BaseHeader]] = {}

    def _from_and_reply_to(self, utf8: bool) -> list[BaseHeader]:
        headers = self._addressed.get(utf8)
        if headers is None:
            headers = [
                _header("From", _address(self._sender, utf8=utf8, display_name=self._from_name))
            ]
            if self._reply_to:
                headers.append(
                    _header("Reply-To", [_address(a, utf8=utf8) for a in self._reply_to])
                )
            self._addressed[utf8] = headers
        return headers

    def envelope(
        self, recipients: tuple[str, ...], to: Sequence[str] | None, cc: Sequence[str] = ()
    ) -> Envelope:
        """An envelope over the body; ``to=None`` writes ``To: undisclosed-recipients:;``."""
        utf8 = any(map(_needs_smtputf8, (self._sender, *recipients, *self._reply_to)))
        from_header, *reply_to = self._from_and_reply_to(utf8)
        headers = [from_header]
        if to is None:
            headers.append(_header("To", _UNDISCLOSED_RECIPIENTS))
        elif to:
            headers.append(_header("To", [_address(a, utf8=utf8) for a in to]))
        if cc:
            headers.append(_header("Cc", [_address(a, utf8=utf8) for a in cc]))
        headers += reply_to
        headers += self._subject_and_date
        headers.append(
            _header("Message-ID", f"<{secrets.token_hex(16)}@{self._message_id_domain}>")
        )
        headers += self._tail
        message = EmailMessage(policy=_POLICY)
        for header in headers:
            message[header.name] = header  # a header object is stored as it is, not re-parsed
        payload = self._body.part.get_payload()
        # A fresh list per envelope: the parts are shared, the list that holds them is not.
        message.set_payload(list(payload) if isinstance(payload, list) else payload)
        return _ComposedEnvelope(self._sender, recipients, message, smtputf8=utf8, body=self._body)


def compose(message: Message, sender: SenderSettings) -> Envelope:
    """System mail: one envelope to to, cc and bcc (each once), ``To``/``Cc`` as given.

    ``Reply-To`` is the message's ``reply_to`` when given, else the sender's. No ``Bcc``
    header is ever written; a message to bcc alone is ``To: undisclosed-recipients:;``.
    """
    body = _SharedBody(_body(message))
    headers = _Headers(message, sender, message.reply_to or sender.reply_to, body)
    to = message.to if message.to or message.cc else None
    return headers.envelope(message.recipients, to, message.cc)


def compose_notification(
    notification: Notification, sender: SenderSettings, batches: Sequence[_Batch]
) -> list[Envelope]:
    """One envelope per batch, all sharing one body; each with its own ``Message-ID``.

    A hidden batch is addressed ``To: undisclosed-recipients:;`` with no ``Cc``: its
    headers name no recipient. A visible batch lists every recipient in ``To``.
    """
    headers = _Headers(notification, sender, sender.reply_to, _SharedBody(_body(notification)))
    envelopes = []
    for batch in batches:
        recipients = validate_recipients(batch.recipients, "recipients")
        envelopes.append(headers.envelope(recipients, None if batch.hidden else recipients))
    return envelopes
