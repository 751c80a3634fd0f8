"""Signed unsubscribe links, so a recipient without an account can leave a list in one click.

The token in the link carries the recipient and the list id in the clear and an
HMAC-SHA256 signature over both: the host's endpoint needs no table of issued links, and
nobody can make a link that unsubscribes someone else without the secret. Tokens do not
expire (mailbox providers keep a message's ``List-Unsubscribe`` URL for as long as the
message is kept); a new secret invalidates every link already sent.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from functools import lru_cache
from typing import Final
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from notifymail._address import has_control_character, normalize_address
from notifymail.errors import ConfigError, InvalidMessage, InvalidToken
from notifymail.secret import Secret

__all__ = ["UnsubscribeTokens"]

# Anyone on the list holds a token, that is a message and its signature: a short secret
# could be found from it offline, and with it a link for every other recipient forged.
_MIN_SECRET_BYTES: Final = 16
# Signed before the payload, so a secret the host also uses elsewhere cannot be made to
# sign an unsubscribe token by another use of it, nor the other way round.
_PURPOSE: Final = b"notifymail unsubscribe v1\n"
_SEPARATOR: Final = "\n"  # between recipient and list id: neither may contain a line break
# What RFC 3986 allows in a URI, percent-escapes included: List-Unsubscribe needs the URL
# literally inside <...> in an ASCII header (RFC 2369), so no space, no "<" or ">".
_URI_CHARACTERS: Final = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")


class UnsubscribeTokens:
    """Makes and checks the ``token`` of unsubscribe URLs with one secret.

    ``secret`` (at least 16 bytes; ``secrets.token_urlsafe(32)`` makes a good one) is
    given as a [`Secret`][notifymail.Secret], a str or bytes; it never appears in a
    ``repr`` or an error. A short secret raises [`ConfigError`][notifymail.ConfigError] with
    ``field="secret"``.
    """

    __slots__ = ("_key",)

    def __init__(self, secret: Secret | str | bytes) -> None:
        self._key = _key_of(secret)
        del secret  # so no capture of frame locals (error trackers) records it
        if len(self._key) < _MIN_SECRET_BYTES:
            raise ConfigError(
                f"secret: must be at least {_MIN_SECRET_BYTES} bytes long", field="secret"
            )

    def url(self, base_url: str, recipient: str, list_id: str) -> str:
        """``base_url`` with a ``token`` query parameter for ``recipient`` and ``list_id``.

        The query parameters ``base_url`` already has are kept. ``base_url`` must be an
        absolute ``https`` URL in ASCII (percent-encode anything else) without a
        ``token`` parameter of its own; ``recipient`` a valid address (the token
        carries it normalised); ``list_id`` a non-empty str without line breaks.
        Anything else raises [`InvalidMessage`][notifymail.InvalidMessage] (a ``ValueError``)
        naming the argument.
        """
        if not isinstance(base_url, str):
            raise InvalidMessage(f"base_url: must be a str, not {type(base_url).__name__}")
        head, tail = _url_around_token(base_url)
        return f"{head}{self._token(_payload(recipient, list_id))}{tail}"

    def verify(self, token: str) -> tuple[str, str]:
        """The ``(recipient, list_id)`` that ``token`` was made for.

        Raises [`InvalidToken`][notifymail.InvalidToken] for anything
        [`url`][notifymail.unsubscribe.UnsubscribeTokens.url] did not make with this
        secret: a changed character, another secret, a token cut short.
        """
        if not isinstance(token, str) or not token.isascii():
            raise InvalidToken("token: not an unsubscribe token")
        encoded_payload, _, _ = token.partition(".")
        try:
            payload = base64.urlsafe_b64decode(encoded_payload + "=" * (-len(encoded_payload) % 4))
        except (binascii.Error, ValueError):
            raise InvalidToken("token: not an unsubscribe token") from None
        # The whole token is made again and compared, rather than the signatures alone:
        # base64 ignores the unused low bits of a last character, and such a change must
        # be refused like any other.
        if not hmac.compare_digest(self._token(payload).encode(), token.encode()):
            raise InvalidToken("token: altered, or made with another secret")
        recipient, _, list_id = payload.decode().partition(_SEPARATOR)
        return recipient, list_id

    def _token(self, payload: bytes) -> str:
        signature = hmac.digest(self._key, _PURPOSE + payload, "sha256")
        return f"{_b64(payload)}.{_b64(signature)}"

    def __repr__(self) -> str:
        return "UnsubscribeTokens(secret=Secret('**********'))"


def _key_of(secret: Secret | str | bytes) -> bytes:
    if isinstance(secret, Secret):
        return secret.reveal().encode()
    if isinstance(secret, str):
        return secret.encode()
    if isinstance(secret, bytes):
        return secret
    raise TypeError(f"secret: must be a Secret, str or bytes, not {type(secret).__name__}")


# A notification asks for one URL per recipient, all on the same base: it is checked and
# split once.
@lru_cache(maxsize=64)
def _url_around_token(base_url: str) -> tuple[str, str]:
    """What comes before and after the token in the URL made from ``base_url``, if that
    is an absolute https URL that may go into a List-* header."""
    if not _URI_CHARACTERS.fullmatch(base_url):
        raise InvalidMessage(
            f"base_url: {base_url!r} must be ASCII without spaces or <>; percent-encode the rest"
        )
    parts = urlsplit(base_url)
    if parts.scheme != "https" or not parts.hostname:
        raise InvalidMessage(f"base_url: {base_url!r} must be an https URL with a host")
    if any(name == "token" for name, _ in parse_qsl(parts.query, keep_blank_values=True)):
        raise InvalidMessage(f"base_url: {base_url!r} already has a token parameter")
    query = f"{parts.query}&token=" if parts.query else "token="
    head = urlunsplit(parts._replace(query=query, fragment=""))
    return head, f"#{parts.fragment}" if parts.fragment else ""


def _payload(recipient: str, list_id: str) -> bytes:
    try:
        address = normalize_address(recipient)
    except ValueError as error:
        raise InvalidMessage(f"recipient: {recipient!r} is not a valid address: {error}") from None
    if not isinstance(list_id, str):
        raise InvalidMessage(f"list_id: must be a str, not {type(list_id).__name__}")
    if not list_id or has_control_character(list_id):
        raise InvalidMessage(
            f"list_id: {list_id!r} must be non-empty, without line breaks or control characters"
        )
    return f"{address}{_SEPARATOR}{list_id}".encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
