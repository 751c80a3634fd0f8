"""The errors notifymail raises, one tree so a host can catch as broadly or narrowly as it needs.

::

    NotifymailError(Exception)
    ├── ConfigError(NotifymailError, ValueError)   .field, .env_var
    │   └── FeatureNotAvailable                     .feature
    ├── InvalidMessage(NotifymailError, ValueError)
    ├── PermissionDenied
    ├── RecipientNotAllowed                         .refused  (address -> reason)
    ├── InvalidToken                                an unsubscribe token altered or not ours
    └── DeliveryError                               .reply, .retryable, .deliveries, .refused
        ├── ConnectionFailed        retryable
        ├── TlsError                not retryable
        ├── AuthenticationFailed    not retryable
        ├── TemporaryFailure        retryable
        └── PermanentFailure        not retryable

Every message is one line that names the setting or variable at fault. No error ever
holds a password: settings keep it in a [`Secret`][notifymail.Secret], and the SMTP
transport never puts credentials into an error's text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from notifymail._enums import Feature
    from notifymail._results import Delivery, Reply

__all__ = [
    "AuthenticationFailed",
    "ConfigError",
    "ConnectionFailed",
    "DeliveryError",
    "FeatureNotAvailable",
    "InvalidMessage",
    "InvalidToken",
    "NotifymailError",
    "PermanentFailure",
    "PermissionDenied",
    "RecipientNotAllowed",
    "TemporaryFailure",
    "TlsError",
    "error_for_reply",
]


class NotifymailError(Exception):
    """Base of every error notifymail raises on purpose."""


class ConfigError(NotifymailError, ValueError):
    """A setting is missing or invalid.

    ``field`` names the settings field (``"port"``, ``"smtp.port"``) or the Metabase
    setting name (``"email-smtp-port"``); ``env_var`` names the environment variable
    the value came from, when it came from one.
    """

    def __init__(
        self, message: str, *, field: str | None = None, env_var: str | None = None
    ) -> None:
        super().__init__(message)
        self.field = field
        self.env_var = env_var


class FeatureNotAvailable(ConfigError):
    """A setting was given a value that the deployment's plan does not include.

    Raised instead of ignoring the value: a restriction an admin believes is on must
    never be silently off.
    """

    def __init__(
        self,
        message: str,
        *,
        feature: Feature,
        field: str | None = None,
        env_var: str | None = None,
    ) -> None:
        super().__init__(message, field=field, env_var=env_var)
        self.feature = feature


class InvalidMessage(NotifymailError, ValueError):
    """A message or address that cannot be sent as given (bad address, CR/LF in a header)."""


class PermissionDenied(NotifymailError):
    """The acting person may not do this (for example, change the email settings)."""


class RecipientNotAllowed(NotifymailError):
    """Some recipients may not be added to a subscription or alert.

    ``refused`` maps each refused address to the reason, so a form can mark every one.
    """

    def __init__(self, message: str, *, refused: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.refused: Mapping[str, str] = MappingProxyType(dict(refused or {}))


class InvalidToken(NotifymailError):
    """An unsubscribe token that was altered, cut short, or made with another secret.

    A host's unsubscribe endpoint answers it with an error page and unsubscribes nobody.
    """


class DeliveryError(NotifymailError):
    """A message could not be handed over to the mail server.

    ``reply`` is the server's reply when there was one. ``retryable`` says whether the
    same attempt may succeed later; the retry loop reads this flag and nothing else.
    ``deliveries`` holds what
    [`Transport.send_many`][notifymail.transport.base.Transport.send_many] delivered before this
    error. ``refused`` maps each recipient to its reply when the envelope failed because the
    server refused every recipient; it is empty for every other failure.
    """

    default_retryable = False

    def __init__(
        self,
        message: str,
        *,
        reply: Reply | None = None,
        retryable: bool | None = None,
        deliveries: Iterable[Delivery] = (),
        refused: Mapping[str, Reply] | None = None,
    ) -> None:
        super().__init__(message)
        self.reply = reply
        self.retryable = self.default_retryable if retryable is None else retryable
        self.deliveries: tuple[Delivery, ...] = tuple(deliveries)
        self.refused: Mapping[str, Reply] = MappingProxyType(dict(refused or {}))


class ConnectionFailed(DeliveryError):
    """The server could not be reached, or the connection broke (refused, reset, timeout)."""

    default_retryable = True


class TlsError(DeliveryError):
    """TLS could not be set up: handshake, untrusted certificate, wrong host, no STARTTLS."""


class AuthenticationFailed(DeliveryError):
    """The server refused the credentials, or offered no AUTH while credentials are set."""


class TemporaryFailure(DeliveryError):
    """A 4xx reply, or a server that stopped answering after its greeting."""

    default_retryable = True


class PermanentFailure(DeliveryError):
    """A 5xx reply: sending the same thing again will fail again."""


def error_for_reply(
    message: str, reply: Reply, *, refused: Mapping[str, Reply] | None = None
) -> TemporaryFailure | PermanentFailure:
    """The error for a server's refusal: [`TemporaryFailure`][notifymail.TemporaryFailure] for a
    4xx reply, [`PermanentFailure`][notifymail.PermanentFailure] for anything else. For transports
    of every kind."""
    error_class = TemporaryFailure if reply.is_transient else PermanentFailure
    return error_class(message, reply=reply, refused=refused)
