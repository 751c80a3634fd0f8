"""Real SMTP servers for tests: aiosmtpd on 127.0.0.1, scripted and recording, plus raw
sockets that accept and then say nothing.

Use them through the fixtures in ``conftest.py`` (``smtp_server``, ``silent_server``),
which start each server inside the test and stop it at teardown. Everything here is
seen from the server's side, so a test can prove what reached the wire (which
commands, whether the connection was encrypted, which messages arrived) without
mocking ``smtplib``.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any, Literal

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from notifymail import Envelope, Security, SmtpSettings

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (aiosmtpd's Controller cannot use port 0)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Received:
    """One message as the server received it (after the end of DATA)."""

    mail_from: str
    recipients: tuple[str, ...]
    content: bytes  # as received, dot-stuffing undone, CRLF line ends
    mail_options: tuple[str, ...]
    tls: bool  # whether the connection was encrypted when the message arrived


@dataclass(frozen=True)
class Login:
    """One AUTH attempt that reached the authenticator."""

    mechanism: str
    username: str
    tls: bool


def _encrypted(server: SMTP) -> bool:
    transport = server.transport
    return transport is not None and transport.get_extra_info("ssl_object") is not None


@dataclass
class RecordingHandler:
    """An aiosmtpd handler that records everything and can be told to misbehave.

    Recording: ``commands`` (every command verb received, all connections, in order),
    ``ehlo_names`` (the client's EHLO arguments), ``messages`` (each message whose DATA
    the server accepted, or whose reply it "lost"), ``logins`` (AUTH attempts),
    ``connections`` (how many were opened).

    Scripting, set before or during the test:

    - ``refuse``: wire address -> reply line for RCPT TO (``"550 5.1.1 No such user"``).
    - ``mail_reply``: a reply line for every MAIL FROM instead of ``250 OK``.
    - ``data_replies``: replies to the end of DATA, used one per message, in order;
      then ``250 OK``. A reply that is not 2xx does not record the message.
    - ``drop_after``: after that many messages on one connection, the server answers
      the next MAIL FROM by closing the connection (with ``drop_reply`` first, e.g.
      ``"421 4.4.2 Idle timeout"``, when set), as a server does that closes idle or
      over-used connections.
    - ``lose_data_reply``: record the message, then never reply to the end of DATA:
      the reply is lost after the server took it. ``"close"`` closes the connection,
      ``"silence"`` keeps it open and says nothing.
    - ``offer_auth``: False leaves AUTH out of the EHLO reply.
    """

    refuse: dict[str, str] = field(default_factory=dict)
    mail_reply: str | None = None
    data_replies: list[str] = field(default_factory=list)
    drop_after: int | None = None
    drop_reply: str | None = None
    lose_data_reply: Literal["close", "silence"] | None = None
    offer_auth: bool = True

    commands: list[str] = field(default_factory=list)
    ehlo_names: list[str] = field(default_factory=list)
    messages: list[Received] = field(default_factory=list)
    logins: list[Login] = field(default_factory=list)
    connections: int = 0

    def authenticator(self, users: Mapping[str, str]) -> Callable[..., AuthResult]:
        """An aiosmtpd authenticator accepting ``users`` (name -> password); else 535."""

        def authenticate(
            server: SMTP, session: Any, envelope: Any, mechanism: str, auth_data: Any
        ) -> AuthResult:
            assert isinstance(auth_data, LoginPassword)
            username = auth_data.login.decode()
            self.logins.append(Login(mechanism, username, _encrypted(server)))
            success = users.get(username) == auth_data.password.decode()
            # handled=False makes aiosmtpd send the standard 535 on failure.
            return AuthResult(success=success, handled=False, auth_data=auth_data)

        return authenticate

    async def handle_EHLO(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        self.ehlo_names.append(hostname)
        if self.offer_auth:
            return responses
        return [line for line in responses if not line[4:].startswith("AUTH")]

    async def handle_MAIL(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        served = getattr(session, "messages_served", 0)
        if self.drop_after is not None and served >= self.drop_after:
            if self.drop_reply is None:
                return await _close_silently(server)
            server.loop.call_soon(server.transport.close)
            return self.drop_reply
        if self.mail_reply is not None:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Any, envelope: Any
    ) -> str:
        reply = self.data_replies.pop(0) if self.data_replies else "250 OK"
        if reply.startswith("2") or self.lose_data_reply is not None:
            self.messages.append(
                Received(
                    mail_from=envelope.mail_from,
                    recipients=tuple(envelope.rcpt_tos),
                    content=envelope.original_content,
                    mail_options=tuple(envelope.mail_options),
                    tls=_encrypted(server),
                )
            )
            session.messages_served = getattr(session, "messages_served", 0) + 1
        if self.lose_data_reply == "close":
            return await _close_silently(server)
        if self.lose_data_reply == "silence":
            await asyncio.Event().wait()  # cancelled when the client hangs up
        return reply


async def _close_silently(server: SMTP) -> str:
    """Close the connection without a reply; the handler task is cancelled meanwhile."""
    server.transport.close()
    await asyncio.Event().wait()  # cancelled by aiosmtpd when the connection is lost
    raise AssertionError("unreachable")


def _recorded(commands: list[str], verb: str, method: Callable[[Any], Awaitable[None]]) -> Any:
    @functools.wraps(method)
    async def record(arg: Any) -> None:
        commands.append(verb)
        await method(arg)

    return record


class _RecordingSMTP(SMTP):
    """aiosmtpd's SMTP, noting every command verb it receives in ``handler.commands``."""

    def __init__(self, handler: RecordingHandler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        handler.connections += 1
        # aiosmtpd dispatches through this table (verb -> bound smtp_* method).
        self._smtp_methods = {
            verb: _recorded(handler.commands, verb, method)
            for verb, method in self._smtp_methods.items()
        }


class _RecordingController(Controller):
    def factory(self) -> SMTP:
        return _RecordingSMTP(self.handler, **self.SMTP_kwargs)


@dataclass
class SmtpServer:
    """A running aiosmtpd server: where it listens, and its handler's records."""

    port: int
    handler: RecordingHandler
    security: Security  # the mode a client should use with it
    controller: Controller = field(repr=False)

    def settings(self, **overrides: Any) -> SmtpSettings:
        """SmtpSettings pointing at this server, 1 s timeout; ``overrides`` win."""
        values: dict[str, Any] = {
            "host": HOST,
            "port": self.port,
            "security": self.security,
            "timeout": 1.0,
        }
        values.update(overrides)
        return SmtpSettings(**values)

    def stop(self) -> None:
        self.controller.stop()


def start_smtp_server(
    *,
    implicit_tls: ssl.SSLContext | None = None,
    starttls: ssl.SSLContext | None = None,
    users: Mapping[str, str] | None = None,
    auth_require_tls: bool = True,
    smtputf8: bool = True,
    handler: RecordingHandler | None = None,
) -> SmtpServer:
    """Start aiosmtpd on 127.0.0.1 and return it running; the caller stops it.

    ``implicit_tls``: a server context for TLS from connect (port-465 style).
    ``starttls``: a server context for STARTTLS, which is then offered.
    ``users``: name -> password; AUTH is offered (after TLS unless
    ``auth_require_tls`` is False) and checked against them.
    ``smtputf8``: whether the SMTPUTF8 extension is offered.
    """
    handler = handler or RecordingHandler()
    kwargs: dict[str, Any] = {
        "enable_SMTPUTF8": smtputf8,
        "auth_require_tls": auth_require_tls and implicit_tls is None,
        "tls_context": starttls,
    }
    if users is not None:
        kwargs["authenticator"] = handler.authenticator(users)
    handler.offer_auth = users is not None
    if implicit_tls is not None:
        security = Security.SSL
    elif starttls is not None:
        security = Security.STARTTLS
    else:
        security = Security.NONE
    controller = _RecordingController(
        handler,
        hostname=HOST,
        port=free_port(),
        ssl_context=implicit_tls,
        server_hostname="mail.test",  # aiosmtpd would otherwise call socket.getfqdn()
        ready_timeout=5.0,
        **kwargs,
    )
    controller.start()
    handler.connections = 0  # forget the controller's own readiness probe
    return SmtpServer(
        port=controller.port, handler=handler, security=security, controller=controller
    )


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts connections and never answers.

    With ``greeting`` it sends that line first, then goes silent: a server that
    stops answering after the greeting.
    """

    def __init__(self, greeting: bytes | None = None) -> None:
        self._greeting = greeting
        self._listener = socket.create_server((HOST, 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.accepted.append(connection)
            if self._greeting is not None:
                connection.sendall(self._greeting)

    def settings(self, **overrides: Any) -> SmtpSettings:
        values: dict[str, Any] = {"host": HOST, "port": self.port, "timeout": 0.5}
        values.update(overrides)
        return SmtpSettings(**values)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()
        self._listener.close()
        for connection in self.accepted:
            connection.close()


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    """A server-side TLS context with a certificate from ``ca`` for ``names``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


def make_envelope(
    sender: str = "alerts@example.com",
    recipients: tuple[str, ...] = ("ann@example.com",),
    body: str = "Hello.\n",
    subject: str = "Test",
) -> Envelope:
    """An envelope with a small text message and a unique Message-ID."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain="example.com")
    message.set_content(body)
    return Envelope(sender, recipients, message)
