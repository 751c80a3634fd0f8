"""Header fields as notifymail writes them on the wire, and the checks that keep them honest.

The email package's folder is not used for them: on Python 3.10 to 3.12 it loses the space
between two encoded words when a fold falls there, can leave a folded line of white space
alone, writes encoded words of 76 characters, writes text that merely looks like an
encoded word as it is (so every reader decodes it), and re-parses a whole address list at
each fold, which is quadratic. Here a header is a list of tokens, each beginning with the
white space that separates it from the one before, and folding is one linear pass that
breaks the line before a token. Unfolding (removing each CRLF) gives the tokens back as
they were, so the standard library parser of every supported Python version reads the
text that was given.
"""

from __future__ import annotations

import binascii
import codecs
import re
from collections.abc import Iterable, Sequence

from notifymail._address import (
    ATEXT,
    ascii_domain,
    has_control_character,
    has_unpaired_surrogate,
)
from notifymail.errors import InvalidMessage

__all__ = [
    "MAX_LINE",
    "address_list",
    "check_encoded_words",
    "check_text",
    "encoded_words",
    "fold",
    "list_header_value",
    "list_id",
    "literal",
    "mailbox",
    "unstructured",
    "unsubscribe_url",
]

MAX_LINE = 78  # RFC 5322 2.1.1: a line SHOULD be no longer, CRLF aside
_MAX_OCTETS = 998  # ... and MUST be no longer
_MAX_ENCODED_WORD = 75  # RFC 2047 2
_Q_PAYLOAD = _MAX_ENCODED_WORD - len("=?utf-8?q??=")
_B_BYTES = (_MAX_ENCODED_WORD - len("=?utf-8?b??=")) // 4 * 3
_MAX_LINE_ATOM = MAX_LINE - 1  # a longer plain word in a display name is encoded, to fold

_PLAIN_TEXT = re.compile(r"(?!.*=\?)[!-~]+(?: [!-~]+)*")  # printable ASCII, single spaces
_CHUNK = re.compile(r"[ \t]*[^ \t]+")  # a word and the white space before it
_LITERAL_WORD = re.compile(r"(?!.*=\?)[!-~]+")
_PLAIN_PHRASE = re.compile(rf"(?!.*=\?){ATEXT}(?: {ATEXT})*")
_ATOM = re.compile(rf"(?!.*=\?){ATEXT}")
_PLAIN_ADDRESS = re.compile(rf"(?!.*=\?){ATEXT}(?:\.{ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
# A dot-atom local part; RFC 6532 adds every non-ASCII character to atext.
_UTF8_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\U0010ffff-]+"
_LOCAL_PART = re.compile(rf"{_UTF8_ATEXT}(?:\.{_UTF8_ATEXT})*")
# Letters, digits and the few marks RFC 2047 5(3) lets a "Q" word hold even in a phrase.
_Q_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
# What readers decode as an encoded word; looser than RFC 2047, as a lenient reader is.
_ENCODED_WORD = re.compile(r"=\?([^?]*)\?([qQbB])\?(.*?)\?=", re.DOTALL)
_Q_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
_CONTROL_BYTE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def check_text(field: str, value: object) -> str:
    """Return ``value`` if it is a str that can go into a header, else raise InvalidMessage.

    A line break, NUL or other control character would end the header or inject another,
    and an unpaired surrogate cannot be encoded at all.
    """
    if not isinstance(value, str):
        raise InvalidMessage(f"{field}: must be a str, not {type(value).__name__}")
    if has_control_character(value):
        raise InvalidMessage(f"{field}: {value!r} contains a line break, NUL or control character")
    if has_unpaired_surrogate(value):
        raise InvalidMessage(f"{field}: {value!r} contains an unpaired surrogate")
    return value


def check_encoded_words(field: str, text: str) -> None:
    """Refuse ``text`` if an encoded word in it decodes, read once or again and again, to a
    line break, NUL or control character.

    notifymail writes such text encoded, so that a reader decodes it once, to the text
    given; but a reader that decodes again (or a host that pasted an encoded header) would
    meet the line break, so it never leaves here.
    """
    while "=?" in text:
        decoded = _decode_encoded_words(field, text)
        if decoded == text:
            return
        text = decoded


def _decode_encoded_words(field: str, text: str) -> str:
    pieces = []
    end = 0
    for match in _ENCODED_WORD.finditer(text):
        charset, encoding, payload = match.groups()
        if encoding in "qQ":
            data = _Q_ESCAPE.sub(
                lambda m: bytes.fromhex(m[1].decode("ascii")),
                payload.replace("_", " ").encode("utf-8", "surrogateescape"),
            )
        else:
            try:
                data = binascii.a2b_base64(payload.encode("ascii", "ignore") + b"===")
            except binascii.Error:
                continue
        try:
            decoded = data.decode(codecs.lookup(charset.partition("*")[0]).name, "replace")
        except (LookupError, ValueError):
            decoded = data.decode("latin-1")
        if _CONTROL_BYTE.search(data) or has_control_character(decoded):
            raise InvalidMessage(
                f"{field}: {text!r} holds an encoded word that decodes to a line break, NUL "
                "or control character"
            )
        pieces += [text[end : match.start()], decoded]
        end = match.end()
    pieces.append(text[end:])
    return "".join(pieces)


def fold(name: str, tokens: Iterable[str]) -> bytes:
    """``name: tokens`` with CRLF, the line broken before a token wherever it would pass 78
    characters. Every token but the first begins with white space, so every folded line
    does, and none is white space alone. The first token stays on the first line: a value
    that began on the next one would read back with a leading space.
    """
    pieces = [f"{name}:"]
    width = len(name) + 1
    for index, token in enumerate(tokens):
        if not index:
            token = " " + token  # noqa: PLW2901 - the space after the colon
        elif width + len(token) > MAX_LINE:
            pieces.append("\r\n")
            width = 0
        pieces.append(token)
        width += len(token)
        if width > _MAX_OCTETS:
            raise InvalidMessage(f"{name}: a line would be longer than 998 characters")
    pieces.append("\r\n")
    return "".join(pieces).encode("utf-8")


def _q(character: str) -> str:
    if character in _Q_SAFE:
        return character
    if character == " ":
        return "_"
    return "".join(f"={byte:02X}" for byte in character.encode("utf-8"))


def encoded_words(text: str, first: int = _MAX_ENCODED_WORD) -> list[str]:
    """``text`` as RFC 2047 encoded words of at most 75 characters, each whole characters;
    the first at most ``first`` characters when a character fits in that.

    "Q" or "B", whichever is shorter: mostly ASCII text stays readable in Q.
    """
    overhead = len("=?utf-8?q??=")
    quoted = [_q(character) for character in text]
    if sum(map(len, quoted)) <= (len(text.encode("utf-8")) + 2) // 3 * 4:
        chunks = _pack(quoted, list(map(len, quoted)), _Q_PAYLOAD, first - overhead)
        return [f"=?utf-8?q?{chunk}?=" for chunk in chunks]
    sizes = [len(character.encode("utf-8")) for character in text]
    return [
        "=?utf-8?b?" + binascii.b2a_base64(chunk.encode("utf-8"), newline=False).decode() + "?="
        for chunk in _pack(text, sizes, _B_BYTES, (first - overhead) // 4 * 3)
    ]


def _pack(pieces: Sequence[str], sizes: Sequence[int], limit: int, first: int) -> list[str]:
    """``pieces`` joined into as few strings as fit ``limit`` (by ``sizes``), in order; the
    first fits ``first`` unless not even one piece does."""
    packed: list[str] = []
    start = total = 0
    room = first if sizes and sizes[0] <= first else limit
    for index, size in enumerate(sizes):
        if total + size > room:
            packed.append("".join(pieces[start:index]))
            start, total, room = index, 0, limit
        total += size
    packed.append("".join(pieces[start:]))
    return packed


def _tokens(text: str, plain: re.Pattern[str], longest: int, room: int) -> list[str]:
    """``text`` as tokens: words that ``plain`` matches as they are, every other run of
    words as encoded words.

    A run takes the white space inside it, and leading or trailing white space, which a
    reader would otherwise drop. The white space between a plain word and a run stays
    outside, where every reader keeps it. Readers drop the white space between two encoded
    words, so a run longer than one encoded word is split with a space that is not text.
    ``room`` is what the first line has left for the first token.
    """
    chunks = _CHUNK.findall(text)
    trailing = text[sum(map(len, chunks)) :]
    tokens: list[str] = []
    run: list[str] = []
    separator = ""
    for index, chunk in enumerate(chunks):
        word = chunk.lstrip(" \t")
        last = index == len(chunks) - 1
        if (
            (index or len(word) == len(chunk))
            and len(chunk) <= longest
            and not (last and trailing)
            and plain.fullmatch(word)
        ):
            if run:
                tokens += _encoded_tokens("".join(run), separator, room)
                run = []
            tokens.append(chunk)
            continue
        if not run:
            separator = chunk[0] if tokens else ""
            chunk = chunk[len(separator) :]  # noqa: PLW2901
        run.append(chunk)
    if run or trailing:
        tokens += _encoded_tokens("".join((*run, trailing)), separator, room)
    return tokens


def _encoded_tokens(text: str, separator: str, room: int) -> list[str]:
    """Encoded words for ``text``; ``room`` applies when they begin the header."""
    first, *rest = encoded_words(text, _MAX_ENCODED_WORD if separator else room)
    return [separator + first, *(" " + word for word in rest)]


def unstructured(name: str, text: str) -> bytes:
    """An unstructured header (``Subject``, a custom header) that reads back as ``text``.

    Words of printable ASCII go as they are; other words, white space a reader would
    drop, and words that merely look like an encoded word go as encoded words.
    """
    if _PLAIN_TEXT.fullmatch(text) and len(name) + 2 + len(text) <= MAX_LINE:
        return f"{name}: {text}\r\n".encode("ascii")
    tokens = _tokens(text, _LITERAL_WORD, _MAX_OCTETS - len(name) - 2, MAX_LINE - len(name) - 2)
    return fold(name, tokens or [""])


def _wire_address(field: str, address: str, *, utf8: bool) -> str:
    """``address`` as a header writes it: the domain in A-labels unless under SMTPUTF8."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return address
    local_part, _, domain = address.rpartition("@")
    if "=?" in local_part or not _LOCAL_PART.fullmatch(local_part):
        raise InvalidMessage(f"{field}: {address!r} cannot be written in a header")
    if not (utf8 or local_part.isascii()):
        raise InvalidMessage(f"{field}: {address!r} needs SMTPUTF8")
    return f"{local_part}@{domain if utf8 else ascii_domain(domain)}"


def address_list(name: str, addresses: Sequence[str], *, utf8: bool) -> bytes:
    """``To``, ``Cc`` or ``Reply-To``: the addresses, folded after a comma. One pass."""
    wire = [_wire_address(name, address, utf8=utf8) for address in addresses]
    value = ", ".join(wire)
    if len(name) + 2 + len(value) <= MAX_LINE:
        return f"{name}: {value}\r\n".encode()
    tokens = [f" {address}," for address in wire]
    tokens[0] = tokens[0][1:]
    tokens[-1] = tokens[-1][:-1]
    return fold(name, tokens)


def mailbox(name: str, address: str, display_name: str, *, utf8: bool) -> bytes:
    """``From``: ``display_name <address>``; the name is never parsed for an address.

    The name goes as atoms, else as a quoted string (printable ASCII), else as encoded
    words with its plain words between them. Python's address parser, unlike RFC 2047
    6.2, keeps the white space between two encoded words and reads a run of white space
    as one space, so a run of encoded text longer than one encoded word reads back there
    with a space more at each split.
    """
    wire = _wire_address(name, address, utf8=utf8)
    if not display_name:
        return fold(name, [wire])
    check_text(f"{name}: from_name", display_name)
    check_encoded_words(f"{name}: from_name", display_name)
    room = MAX_LINE - len(name) - 2
    quoted = None if _PLAIN_PHRASE.fullmatch(display_name) else _quoted(display_name, room)
    tokens = [quoted] if quoted else _tokens(display_name, _ATOM, _MAX_LINE_ATOM, room)
    return fold(name, [*tokens, f" <{wire}>"])


def _quoted(text: str, room: int) -> str | None:
    """``text`` as a quoted string, if it is printable ASCII that cannot be taken for an
    encoded word and the quoted string fits in ``room``; else None.

    A quoted string is never folded: ``email.utils.parseaddr`` reads a line break inside
    one as the end of the name and takes what follows for the address.
    """
    if not (text.isascii() and text.isprintable()) or "=?" in text:
        return None
    quoted = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return quoted if len(quoted) <= room else None


# --- List-* headers (RFC 2369, RFC 2919, RFC 8058): literal, never encoded -------------

_URL_LIST = re.compile(r"<[^<>\s]+>(?:\s*,\s*<[^<>\s]+>)*")
_URL_LIST_HEADERS = frozenset(
    {"list-archive", "list-help", "list-owner", "list-post", "list-subscribe", "list-unsubscribe"}
)
_LIST_ID = re.compile(rf"(?!.*=\?){ATEXT}(?:\.{ATEXT})+")
_LIST_ID_HEADER = re.compile(r"(?:[ -;=?-~]*\s)?<([^<>]*)>")
# An https URL of printable ASCII without white space, quotes or angle brackets, which
# would end it inside <...>, and without "=?", which a reader would decode.
_HTTPS_URL = re.compile(
    r"(?!.*=\?)https://[^/?#\s<>\"\x00-\x1f\x7f]+[^\s<>\"\x00-\x1f\x7f]*", re.I
)
ONE_CLICK = "List-Unsubscribe=One-Click"  # RFC 8058 3.1


def _percent_encoded(value: str) -> str:
    """``value`` with every non-ASCII character percent-encoded as UTF-8 (RFC 3987 3.1)."""
    if value.isascii():
        return value
    return "".join(
        character
        if character.isascii()
        else "".join(f"%{byte:02X}" for byte in character.encode("utf-8"))
        for character in value
    )


def list_header_value(name: str, value: str) -> str:
    """The value of a ``List-*`` header as it goes out: ASCII, literal, or InvalidMessage.

    URL lists (RFC 2369) must be ``<URL>, <URL>``; ``List-Post`` may also be ``NO``;
    ``List-Id`` is ``name <list.id>`` (RFC 2919); ``List-Unsubscribe-Post`` is RFC 8058's
    one value. A non-ASCII character is percent-encoded. Nothing that a reader would decode
    as an encoded word gets through: these headers are read by machines, which ignore an
    encoded one, and must stay literal.
    """
    check_text(name, value)
    lowered = name.lower()
    if lowered in _URL_LIST_HEADERS:
        value = _percent_encoded(value)
    elif not value.isascii():
        raise InvalidMessage(f"{name}: {value!r} must be ASCII (List-* headers are never encoded)")
    value = value.strip()
    if "=?" in value:
        raise InvalidMessage(f"{name}: {value!r} would be read as an encoded word")
    if lowered in _URL_LIST_HEADERS:
        if not (_URL_LIST.fullmatch(value) or (lowered == "list-post" and value == "NO")):
            raise InvalidMessage(
                f"{name}: {value!r} is not a list of URLs in angle brackets (<https://...>)"
            )
    elif lowered == "list-id":
        match = _LIST_ID_HEADER.fullmatch(value)
        if match is None or not _LIST_ID.fullmatch(match[1]):
            raise InvalidMessage(
                f"{name}: {value!r} is not a list id such as <alerts.example.com>"
            )
    elif lowered == "list-unsubscribe-post" and value != ONE_CLICK:
        raise InvalidMessage(f"{name}: must be {ONE_CLICK!r} (RFC 8058)")
    literal(name, value)  # a line too long raises here, when the header is made
    return value


def literal(name: str, value: str) -> bytes:
    """A header written as it is, folded only at its own white space (ASCII values)."""
    tokens = _CHUNK.findall(value)
    return fold(name, tokens or [""])


def unsubscribe_url(recipient: str, url: object) -> str:
    """The ``List-Unsubscribe`` value for ``url``, a recipient's unsubscribe link."""
    if not isinstance(url, str):
        raise InvalidMessage(
            f"unsubscribe: must return a str for {recipient!r}, not {type(url).__name__}"
        )
    wire = _percent_encoded(url)
    if not _HTTPS_URL.fullmatch(wire):
        raise InvalidMessage(
            f"unsubscribe: {url!r} for {recipient!r} is not an https URL (RFC 8058 needs one)"
        )
    if len("List-Unsubscribe: <>") + len(wire) > _MAX_OCTETS:
        raise InvalidMessage(f"unsubscribe: the URL for {recipient!r} is longer than a line")
    return f"<{wire}>"


def list_id(value: object) -> str:
    """``value`` if it is a list id (RFC 2919: ``label.namespace``), else InvalidMessage."""
    value = check_text("list_id", value)
    if not _LIST_ID.fullmatch(value) or len(value) > _MAX_OCTETS - len("List-Id: <>"):
        raise InvalidMessage(
            f"list_id: {value!r} is not a list id (dot-separated ASCII words, such as "
            "alerts.bi.example.com)"
        )
    return value
