"""What a host asks to send: messages, notifications and their attachments, checked.

Every address is validated and every header value checked when a ``Message`` or
``Notification`` is made: a line break or control character, an unpaired surrogate, an
encoded word that decodes to a line break, a ``List-*`` header that receivers would
ignore. So ``InvalidMessage`` comes before anything is composed, let alone sent.
Composition (``notifymail._compose``) turns these values into envelopes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from notifymail._address import address_key, has_unpaired_surrogate, normalize_address
from notifymail._headers import check_encoded_words, check_text, list_header_value
from notifymail._headers import list_id as _checked_list_id
from notifymail.errors import InvalidMessage

__all__ = ["Attachment", "Message", "Notification", "validate_recipients"]


_FIELD_NAME = re.compile(r"[!-9;-~]{1,76}")
_MIME_WORD = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # RFC 2045 token
_MIMETYPE = re.compile(
    rf"({_MIME_WORD})/({_MIME_WORD})(?:\s*;\s*charset\s*=\s*(\"?)({_MIME_WORD})\3)?"
)
_CONTENT_ID = re.compile(r"[!-;=?-~]+")

# Headers composition owns: a custom header may not replace them. Content-* and Resent-*
# are matched by prefix.
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
# Made from Notification.unsubscribe and Notification.list_id, when they are given.
_UNSUBSCRIBE_HEADERS = frozenset({"list-unsubscribe", "list-unsubscribe-post"})

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


def _text(field: str, value: object) -> str:
    """``value`` if it may go into a header as text, else InvalidMessage naming ``field``."""
    text = check_text(field, value)
    check_encoded_words(field, text)
    return text


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
                f"headers: {name!r} is not a header name (printable ASCII, no ':' or space, "
                "at most 76 characters)"
            )
        lowered = name.lower()
        if lowered in _STRUCTURAL_HEADERS or lowered.startswith(("content-", "resent-")):
            raise InvalidMessage(f"headers: {name} is set by notifymail and cannot be overridden")
        if any(existing.lower() == lowered for existing in checked):
            raise InvalidMessage(f"headers: {name} is given twice")
        if lowered.startswith("list-"):
            checked[name] = list_header_value(name, value)
        else:
            checked[name] = _text(name, value)
    return MappingProxyType(checked)


def _is_utf8(data: bytes) -> bool:
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file sent with a message; inline (an image the HTML shows) when it has ``content_id``.

    Refer to an inline image from the HTML as ``cid:<content_id>``. ``content_id`` may be
    given with or without angle brackets; it is stored without them.

    ``mimetype`` is ``type/subtype``, stored in lower case, with an optional ``charset``
    parameter for ``text/*`` (``"text/csv; charset=iso-8859-1"``). A ``text/*`` file
    given without one whose bytes are valid UTF-8 is stored as ``charset=utf-8``, so that
    receivers decode it as it was written (RFC 2046 4.1.2 would have them read US-ASCII).
    """

    filename: str
    content: bytes
    mimetype: str
    content_id: str | None = None

    def __post_init__(self) -> None:
        _text("filename", self.filename)
        if not isinstance(self.content, (bytes, bytearray, memoryview)):
            raise InvalidMessage(
                f"content: {self.filename!r} must be bytes, not {type(self.content).__name__}"
            )
        object.__setattr__(self, "content", bytes(self.content))
        object.__setattr__(self, "mimetype", self._mimetype())
        if self.content_id is not None:
            content_id = check_text("content_id", self.content_id).strip()
            if content_id.startswith("<") and content_id.endswith(">"):
                content_id = content_id[1:-1]
            if not _CONTENT_ID.fullmatch(content_id) or "=?" in content_id:
                raise InvalidMessage(
                    f"content_id: {self.content_id!r} is not a Content-ID (printable ASCII "
                    "without spaces, angle brackets or an encoded word's '=?')"
                )
            object.__setattr__(self, "content_id", content_id)

    def _mimetype(self) -> str:
        match = _MIMETYPE.fullmatch(check_text("mimetype", self.mimetype).strip())
        if match is None or match[1].lower() in ("multipart", "message"):
            raise InvalidMessage(
                f"mimetype: {self.mimetype!r} is not a type/subtype such as application/pdf, "
                "with at most a charset parameter (multipart/* and message/* are not supported)"
            )
        maintype, subtype, _, charset = match.groups()
        if maintype.lower() != "text":
            if charset:
                raise InvalidMessage(f"mimetype: {self.mimetype!r}: charset is for text/* only")
        elif not charset and _is_utf8(self.content):
            charset = "utf-8"
        mimetype = f"{maintype}/{subtype}"
        return (f"{mimetype}; charset={charset}" if charset else mimetype).lower()

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
    set_(owner, "subject", _text("subject", subject))
    for name, body in (("text", text), ("html", html)):
        if body is not None and not isinstance(body, str):
            raise InvalidMessage(f"{name}: must be a str or None, not {type(body).__name__}")
        if body is not None and has_unpaired_surrogate(body):
            raise InvalidMessage(f"{name}: contains an unpaired surrogate, which cannot be sent")
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
        seen: dict[str, str] = {}
        for address in (*self.to, *self.cc, *self.bcc):
            seen.setdefault(address_key(address), address)
        return tuple(seen.values())


@dataclass(frozen=True, slots=True, init=False)
class Notification:
    """An alert or subscription; the mailer decides who shares which envelope.

    ``headers`` carries extras such as ``X-Report-Id``. Recipients are validated and
    stored normalised, duplicates included (the delivery plan drops them).

    ``unsubscribe`` maps a recipient's address to their unsubscribe URL (``https``): each
    recipient then gets a message of their own with ``List-Unsubscribe: <URL>`` and
    ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058), never a shared BCC
    message. ``list_id`` adds ``List-Id: <list_id>`` (RFC 2919), such as
    ``"alerts.bi.example.com"``.
    """

    recipients: tuple[str, ...]
    subject: str
    text: str | None
    html: str | None
    attachments: tuple[Attachment, ...]
    headers: Mapping[str, str]
    unsubscribe: Callable[[str], str] | None
    list_id: str | None

    def __init__(  # noqa: PLR0917 - SPEC's positional order
        self,
        recipients: Sequence[str],
        subject: str,
        text: str | None = None,
        html: str | None = None,
        attachments: Sequence[Attachment] = (),
        headers: Mapping[str, str] = _NO_HEADERS,
        unsubscribe: Callable[[str], str] | None = None,
        list_id: str | None = None,
    ) -> None:
        object.__setattr__(self, "recipients", validate_recipients(recipients, "recipients"))
        if not self.recipients:
            raise InvalidMessage("recipients: a notification needs at least one recipient")
        _content(
            self, subject=subject, text=text, html=html, attachments=attachments, headers=headers
        )
        if unsubscribe is not None and not callable(unsubscribe):
            raise InvalidMessage(
                "unsubscribe: must be a callable from an address to its unsubscribe URL, "
                f"not {type(unsubscribe).__name__}"
            )
        object.__setattr__(self, "unsubscribe", unsubscribe)
        object.__setattr__(self, "list_id", None if list_id is None else _checked_list_id(list_id))
        made = {
            *(_UNSUBSCRIBE_HEADERS if unsubscribe is not None else ()),
            *(("list-id",) if list_id is not None else ()),
        }
        for name in self.headers:
            if name.lower() in made:
                raise InvalidMessage(
                    f"headers: {name} is made from the unsubscribe and list_id fields; "
                    "give one or the other"
                )
