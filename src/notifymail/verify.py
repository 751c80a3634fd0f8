"""Check SMTP settings before saving them: connect, secure, log in, quit, and send nothing.

The outcome speaks the admin form's language: each problem is keyed by the form field
to fix, with Metabase's message, so a host can show it next to that field.
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from notifymail.errors import AuthenticationFailed, DeliveryError, TlsError
from notifymail.settings import Security, SmtpSettings
from notifymail.transport.smtp import SmtpTransport

__all__ = ["VerifyResult", "verify_smtp"]

_WRONG_HOST: Final = "Wrong host or port"
_WRONG_CREDENTIALS: Final = "Wrong username or password"
_UNTRUSTED: Final = "TLS certificate not trusted"
_NO_STARTTLS: Final = "Server does not offer STARTTLS"
_AUTOCORRECT_ORDER: Final = (Security.TLS, Security.STARTTLS, Security.SSL)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """What [`verify_smtp`][notifymail.verify_smtp] found.

    ``errors`` maps form fields (``host``, ``port``, ``username``, ``password``,
    ``security``) to the message to show there; it is empty when ``ok``. ``security``
    is the mode that worked (or the configured one, when none did); ``corrected`` says
    that it differs from the configured one.
    """

    ok: bool
    errors: Mapping[str, str]
    security: Security
    corrected: bool

    def __post_init__(self) -> None:
        object.__setattr__(self, "errors", MappingProxyType(dict(self.errors)))


def _field_errors(error: DeliveryError) -> dict[str, str]:
    """The form fields at fault for ``error``, with Metabase's messages."""
    if isinstance(error, AuthenticationFailed):
        return {"username": _WRONG_CREDENTIALS, "password": _WRONG_CREDENTIALS}
    if isinstance(error, TlsError):
        cause = error.__cause__
        if isinstance(cause, ssl.SSLCertVerificationError):
            return {"security": _UNTRUSTED}
        if not isinstance(cause, ssl.SSLError):  # STARTTLS not offered, or refused
            return {"security": _NO_STARTTLS}
    # Everything else (refused, unreachable, silent, a TLS handshake with something that
    # does not speak TLS there) means the form points at the wrong server or port, as
    # Metabase reports it.
    return {"host": _WRONG_HOST, "port": _WRONG_HOST}


def _attempt(smtp: SmtpSettings, ssl_context: ssl.SSLContext | None) -> dict[str, str]:
    transport = SmtpTransport(smtp, ssl_context=ssl_context)
    try:
        transport.open()
    except DeliveryError as error:
        return _field_errors(error)
    transport.close()
    return {}


def verify_smtp(
    smtp: SmtpSettings,
    *,
    autocorrect: bool = False,
    ssl_context: ssl.SSLContext | None = None,
) -> VerifyResult:
    """Connect to ``smtp``, secure the connection, log in and quit; nothing is sent.

    With ``autocorrect`` the configured security is tried first, then TLS, STARTTLS
    and SSL (each on ``smtp.port``, or that mode's default port when ``port`` is not
    set); the first that works is reported in ``security``. When none works, the
    errors are those of the configured mode. A ``cafile`` that cannot be loaded
    raises [`ConfigError`][notifymail.ConfigError].
    """
    modes = [smtp.security]
    if autocorrect:
        modes += [mode for mode in _AUTOCORRECT_ORDER if mode is not smtp.security]
    failures = []
    for mode in modes:
        errors = _attempt(dataclasses.replace(smtp, security=mode), ssl_context)
        if not errors:
            corrected = mode is not smtp.security
            return VerifyResult(ok=True, errors={}, security=mode, corrected=corrected)
        failures.append(errors)
    return VerifyResult(ok=False, errors=failures[0], security=smtp.security, corrected=False)
