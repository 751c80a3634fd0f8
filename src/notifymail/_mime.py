"""The MIME body of a message written straight to wire bytes, once per composition.

A notification to 20,000 people is one body and 20,000 sets of headers: the body (text and
HTML alternatives, inline images, attachments) is written here once, as the bytes SMTP
sends, and every envelope shares those bytes. Nothing goes through the email package's
generator, whose cost per line and per part would be paid again for each envelope; and
nothing keeps a Python object per line of a body, so a 16 MiB body costs a few times
16 MiB, whatever the length of its lines.
"""

from __future__ import annotations

import binascii
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from notifymail._headers import MAX_LINE, fold, literal

if TYPE_CHECKING:
    from notifymail.message import Attachment, Message, Notification

__all__ = ["Part", "body"]

# What 7bit cannot carry: a line longer than a header line, or a control character.
_NOT_7BIT = re.compile(rb"[^\n]{%d}|[\x00-\x08\x0b-\x1f\x7f]" % (MAX_LINE + 1))
_SNIFF = 4096  # bytes of a body that choose between quoted-printable and base64
_BASE64_LINE = 76 // 4 * 3  # bytes of content per base64 line of 76 characters
_BASE64_BLOCK = _BASE64_LINE * 1024  # encoded at once, so that no line is an object
_PLAIN_FILENAME = re.compile(r"(?!.*=\?)(?:[ !#-\[\]-~]*[!#-\[\]-~])?")  # no quote, no backslash
_ATTR_CHAR = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$&+-.^_`|~"
)
_RFC2231_PIECE = 40  # characters of a percent-encoded filename per folded line


@dataclass(frozen=True, slots=True)
class Part:
    """A MIME part on the wire: its header lines, and the rest (the blank line, then the
    content). A part's bytes are ``head + tail``."""

    head: bytes
    tail: bytes


def body(content: Message | Notification) -> Part:
    """The MIME tree: text/html alternative, inline images related to the html, then mixed."""
    inline = [a for a in content.attachments if a.inline]
    files = [a for a in content.attachments if not a.inline]
    html: Part | None = None
    if content.html is not None:
        html = _text(content.html, "html")
        if inline:
            html = _multipart("related", [html, *map(_attachment, inline)])
    if content.text is None:
        assert html is not None  # noqa: S101 - a message has a text or an html body
        tree = html
    else:
        tree = _text(content.text, "plain")
        if html is not None:
            tree = _multipart("alternative", [tree, html])
    if files:
        tree = _multipart("mixed", [tree, *map(_attachment, files)])
    return tree


def _text(text: str, subtype: str) -> Part:
    """A UTF-8 text part: 7bit when it can go as it is, else the shorter of
    quoted-printable and base64 for its beginning. Line ends become CRLF."""
    data = text.encode("utf-8")
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if not data.endswith(b"\n"):
        data += b"\n"
    sample = data[:_SNIFF]
    if data.isascii() and not _NOT_7BIT.search(data):
        encoding, tail = "7bit", _crlf(data)
    elif len(binascii.b2a_qp(sample, istext=True)) <= len(sample) * 4 // 3 * 78 // 76:
        encoding, tail = "quoted-printable", _crlf(binascii.b2a_qp(data, istext=True))
    else:
        encoding, tail = "base64", b"\r\n" + _base64_lines(data)
    head = (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        f"Content-Transfer-Encoding: {encoding}\r\n"
    )
    return Part(head.encode("ascii"), tail)


def _crlf(lines: bytes) -> bytes:
    """The blank line that ends a part's headers, then ``lines`` with CRLF line ends."""
    return (b"\n" + lines).replace(b"\n", b"\r\n")


def _base64_lines(data: bytes) -> bytes:
    """``data`` in base64, lines of 76 characters ending in CRLF; a block at a time."""
    blocks = []
    for start in range(0, len(data), _BASE64_BLOCK):
        encoded = binascii.b2a_base64(data[start : start + _BASE64_BLOCK], newline=False)
        blocks.append(b"\r\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76)))
    blocks.append(b"")
    return b"\r\n".join(blocks)


def _attachment(attachment: Attachment) -> Part:
    """A file, base64 so that its bytes arrive as they are; inline with its Content-ID."""
    content_type, _, parameters = attachment.mimetype.partition(";")
    charset = parameters.partition("=")[2].strip()
    if charset:
        content_type += f'; charset="{charset}"'
    disposition = "inline" if attachment.inline else "attachment"
    head = b"".join(
        (
            literal("Content-Type", content_type),
            b"Content-Transfer-Encoding: base64\r\n",
            fold("Content-Disposition", [f"{disposition};", *_filename(attachment.filename)]),
            b""
            if attachment.content_id is None
            else f"Content-ID: <{attachment.content_id}>\r\n".encode("ascii"),
        )
    )
    return Part(head, b"\r\n" + _base64_lines(attachment.content))


def _filename(filename: str) -> list[str]:
    """The ``filename`` parameter, quoted when plain and short, else RFC 2231 ``filename*``
    in UTF-8, in numbered pieces when long. Never an encoded word: the parsers that decode
    one inside a quoted parameter would read back something else."""
    if _PLAIN_FILENAME.fullmatch(filename) and len(filename) <= MAX_LINE - 20:
        return [f' filename="{filename}"']
    encoded = "".join(chr(b) if b in _ATTR_CHAR else f"%{b:02X}" for b in filename.encode("utf-8"))
    pieces = _split_escapes(encoded, _RFC2231_PIECE)
    if len(pieces) == 1:
        return [f" filename*=utf-8''{encoded}"]
    tokens = [f" filename*{index}*={piece};" for index, piece in enumerate(pieces)]
    tokens[0] = tokens[0].replace("*=", "*=utf-8''", 1)
    tokens[-1] = tokens[-1][:-1]
    return tokens


def _split_escapes(encoded: str, size: int) -> list[str]:
    """``encoded`` in pieces of about ``size``, never inside a ``%XX`` escape."""
    pieces = []
    start = 0
    while start < len(encoded):
        end = min(start + size, len(encoded))
        while end < len(encoded) and "%" in encoded[end - 2 : end]:
            end += 1
        pieces.append(encoded[start:end])
        start = end
    return pieces or [""]


def _multipart(subtype: str, parts: Sequence[Part]) -> Part:
    # "=_" never occurs in quoted-printable or base64; 24 hex digits keep the line short.
    # 7bit text could hold it, so the boundary is checked against the content.
    while True:
        boundary = f"=_{secrets.token_hex(12)}".encode("ascii")
        if not any(boundary in part.tail for part in parts):
            break
    pieces = [b"\r\n"]  # the blank line that ends the headers
    for part in parts:
        pieces += (b"--", boundary, b"\r\n", part.head, part.tail, b"\r\n")
    pieces += (b"--", boundary, b"--\r\n")
    head = f'Content-Type: multipart/{subtype}; boundary="{boundary.decode()}"\r\n'
    return Part(head.encode("ascii"), b"".join(pieces))
