"""Check SMTP settings before saving them: connect, secure, log in, quit, and send nothing.

The outcome speaks the admin form's language: each problem is keyed by the form field
to fix, with Metabase's message, so a host can show it next to that field.
"""

from __future__ import annotations

import dataclasses
import socket
import ssl
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, TypeAlias

from notifymail.errors import AuthenticationFailed, ConnectionFailed, DeliveryError, TlsError
from notifymail.settings import Security, SmtpSettings
from notifymail.transport.base import AsyncTransport, Transport
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
    ``security``) to the message to show there: Metabase's message, and the precise
    reason in brackets (``"Wrong host or port (connection refused)"``); it is empty
    when ``ok``. ``security``
    is the mode that worked (or the configured one, when none did); ``corrected`` says
    that it differs from the configured one.
    """

    ok: bool
    errors: Mapping[str, str]
    security: Security
    corrected: bool

    def __post_init__(self) -> None:
        object.__setattr__(self, "errors", MappingProxyType(dict(self.errors)))


def _reason(error: DeliveryError, smtp: SmtpSettings) -> str:
    """What went wrong, in a few words, to show beside Metabase's message."""
    security = smtp.security
    cause = error.__cause__
    reply = error.reply
    if isinstance(cause, ssl.SSLCertVerificationError):
        return cause.verify_message or "certificate verify failed"
    if isinstance(cause, ssl.SSLError) and security is Security.SSL:
        return "the server does not speak TLS on connect; try starttls"
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, socket.gaierror):
        return "host not found"
    if isinstance(cause, TimeoutError):
        return f"no answer within {smtp.timeout:g} s"
    if isinstance(error, AuthenticationFailed) and reply is None:
        return "the server does not offer AUTH"
    if isinstance(error, TlsError) and reply is None and security is Security.TLS:
        return "credentials are never sent unencrypted under tls"
    if reply is not None:
        return f"the server answered {reply}"
    if isinstance(error, ConnectionFailed) and cause is None:
        return "the server closed the connection"
    return str(error)


def _field_errors(error: DeliveryError, smtp: SmtpSettings) -> dict[str, str]:
    """The form fields at fault for ``error``: Metabase's message, and why in brackets."""
    reason = _reason(error, smtp)
    fields: tuple[str, ...]
    if isinstance(error, AuthenticationFailed):
        fields, message = ("username", "password"), _WRONG_CREDENTIALS
    elif isinstance(error, TlsError) and isinstance(error.__cause__, ssl.SSLCertVerificationError):
        fields, message = ("security",), _UNTRUSTED
    elif isinstance(error, TlsError) and not isinstance(error.__cause__, ssl.SSLError):
        # STARTTLS not offered (Metabase's message says it all), or refused.
        if error.reply is None and smtp.security is Security.STARTTLS:
            return {"security": _NO_STARTTLS}
        fields, message = ("security",), _NO_STARTTLS
    else:
        # Everything else (refused, unreachable, silent, a TLS handshake with something
        # that does not speak TLS there) means the form points at the wrong server or
        # port, as Metabase reports it.
        fields, message = ("host", "port"), _WRONG_HOST
    return dict.fromkeys(fields, f"{message} ({reason})")


def _modes(configured: Security, autocorrect: bool) -> list[Security]:
    """The modes to try, configured first; never one that could send in plaintext when
    the configured one is encrypted (``tls`` goes on unencrypted without STARTTLS)."""
    if not autocorrect:
        return [configured]
    alternatives: tuple[Security, ...] = _AUTOCORRECT_ORDER
    if configured in (Security.SSL, Security.STARTTLS):
        alternatives = (Security.STARTTLS, Security.SSL)
    return [configured, *(mode for mode in alternatives if mode is not configured)]


# What a probe came to: True once it passed, False when the transport has nothing to
# check, or the DeliveryError it raised.
Probed: TypeAlias = bool | DeliveryError
Check: TypeAlias = Generator[Security, Probed, "VerifyResult | None"]


def _checking(smtp: SmtpSettings, autocorrect: bool) -> Check:
    """The check without I/O, shared by the blocking and the asyncio drivers: it yields
    each security mode to probe, is sent what that probe came to, and returns the
    result (None when the transport has nothing to check)."""
    failures = []
    for mode in _modes(smtp.security, autocorrect):
        outcome = yield mode
        if isinstance(outcome, DeliveryError):
            failures.append(_field_errors(outcome, dataclasses.replace(smtp, security=mode)))
            continue
        if not outcome:
            return None
        corrected = mode is not smtp.security
        return VerifyResult(ok=True, errors={}, security=mode, corrected=corrected)
    return VerifyResult(ok=False, errors=failures[0], security=smtp.security, corrected=False)


def _advance(check: Check, outcome: Probed) -> Security | VerifyResult | None:
    """The next mode ``check`` asks for, given the last probe's ``outcome``; its result
    once it is done."""
    try:
        return check.send(outcome)
    except StopIteration as done:
        result: VerifyResult | None = done.value
        return result


def verify_transport(
    transport: Transport, smtp: SmtpSettings, *, autocorrect: bool = False
) -> VerifyResult | None:
    """[`verify_smtp`][notifymail.verify_smtp] through ``transport``'s
    [`probe`][notifymail.transport.base.Transport.probe]
    (its TLS context, its OAuth2 token), in ``smtp``'s security mode; None when the
    transport has nothing to check."""
    check = _checking(smtp, autocorrect)
    step: Security | VerifyResult | None = next(check)
    while isinstance(step, Security):
        try:
            outcome: Probed = transport.probe(step)
        except DeliveryError as error:
            outcome = error
        step = _advance(check, outcome)
    return step


async def verify_async_transport(
    transport: AsyncTransport, smtp: SmtpSettings, *, autocorrect: bool = False
) -> VerifyResult | None:
    """`verify_transport` through an asyncio transport's
    [`probe`][notifymail.transport.base.AsyncTransport.probe], without blocking the
    event loop."""
    check = _checking(smtp, autocorrect)
    step: Security | VerifyResult | None = next(check)
    while isinstance(step, Security):
        try:
            outcome: Probed = await transport.probe(step)
        except DeliveryError as error:
            outcome = error
        step = _advance(check, outcome)
    return step


def verify_smtp(
    smtp: SmtpSettings,
    *,
    autocorrect: bool = False,
    ssl_context: ssl.SSLContext | None = None,
) -> VerifyResult:
    """Connect to ``smtp``, secure the connection, log in and quit; nothing is sent.

    With ``autocorrect`` the configured security is tried first, then the others
    (each on ``smtp.port``, or that mode's default port when ``port`` is not set): TLS,
    STARTTLS and SSL, except that from an encrypted mode (SSL, STARTTLS) only the other
    of those two, never TLS, which goes on unencrypted when STARTTLS is missing. The
    first that works is reported in ``security``. When none works, the errors are those
    of the configured mode. A ``cafile`` that cannot be loaded raises
    [`ConfigError`][notifymail.ConfigError].
    """
    result = verify_transport(
        SmtpTransport(smtp, ssl_context=ssl_context), smtp, autocorrect=autocorrect
    )
    assert result is not None  # noqa: S101 - an SmtpTransport always has a server to check
    return result


async def verify_smtp_async(smtp: SmtpSettings, *, autocorrect: bool = False) -> VerifyResult:
    """[`verify_smtp`][notifymail.verify_smtp] through a fresh
    [`AsyncSmtpTransport`][notifymail.AsyncSmtpTransport], without blocking the event loop."""
    # The asyncio driver, imported only by the asyncio callers.
    from notifymail.transport.asyncsmtp import AsyncSmtpTransport

    result = await verify_async_transport(AsyncSmtpTransport(smtp), smtp, autocorrect=autocorrect)
    assert result is not None  # noqa: S101 - an AsyncSmtpTransport always has a server to check
    return result
