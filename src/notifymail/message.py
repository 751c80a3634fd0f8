"""What a host asks to send: messages, notifications and their attachments, checked.

Every address is validated and every header value checked for line breaks and control
characters when a ``Message`` or ``Notification`` is made; composition then refuses
what only the email package's decoding reveals (an RFC 2047 encoded word that decodes
to a line break), so ``InvalidMessage`` still comes before anything is sent.
``notifymail._compose`` turns them into envelopes, with the email package, which this
module does without.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from notifymail._address import address_key, has_control_character, normalize_address
from notifymail.errors import InvalidMessage

__all__ = ["Attachment", "Message", "Notification", "validate_recipients"]


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


def _unique(addresses: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, str] = {}
    for address in addresses:
        seen.setdefault(address_key(address), address)
    return tuple(seen.values())
