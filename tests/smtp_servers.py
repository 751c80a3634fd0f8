"""Real SMTP servers for tests: aiosmtpd on 127.0.0.1, scripted and recording, plus raw
sockets that accept and then say nothing.

``FaultyServer`` is a raw, threaded SMTP server that follows a fault script (a reply
code, a dropped connection, a lost reply or a delay at any step) and counts, from its
side, each recipient's deliveries and RCPT TO attempts; use it as a context manager.

Use the others through the fixtures in ``conftest.py`` (``smtp_server``, ``silent_server``),
which start each server inside the test and stop it at teardown. Everything here is
seen from the server's side, so a test can prove what reached the wire (which
commands, whether the connection was encrypted, which messages arrived) without
mocking ``smtplib``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import select
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any, Literal

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

import notifymail as nm
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
    ``connections`` (how many were opened), ``arrivals`` (``time.monotonic()`` and the
    address of every RCPT TO, as it arrived).

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
    - ``offer_pipelining``: True adds PIPELINING (RFC 2920) to the EHLO reply; aiosmtpd
      reads commands one after another either way, but does not offer it itself.
    - ``echo_credentials``: a failed AUTH is answered with a 535 that repeats the
      username and password it received, as a careless or hostile server might.
    """

    refuse: dict[str, str] = field(default_factory=dict)
    mail_reply: str | None = None
    data_replies: list[str] = field(default_factory=list)
    drop_after: int | None = None
    drop_reply: str | None = None
    lose_data_reply: Literal["close", "silence"] | None = None
    offer_auth: bool = True
    offer_pipelining: bool = False
    echo_credentials: bool = False

    commands: list[str] = field(default_factory=list)
    ehlo_names: list[str] = field(default_factory=list)
    messages: list[Received] = field(default_factory=list)
    logins: list[Login] = field(default_factory=list)
    connections: int = 0
    arrivals: list[tuple[float, str]] = field(default_factory=list)

    def authenticator(self, users: Mapping[str, str]) -> Callable[..., AuthResult]:
        """An aiosmtpd authenticator accepting ``users`` (name -> password); else 535."""

        def authenticate(
            server: SMTP, session: Any, envelope: Any, mechanism: str, auth_data: Any
        ) -> AuthResult:
            assert isinstance(auth_data, LoginPassword)
            username = auth_data.login.decode()
            self.logins.append(Login(mechanism, username, _encrypted(server)))
            password = auth_data.password.decode()
            success = users.get(username) == password
            # handled=False makes aiosmtpd send the standard 535 on failure, or ``message``.
            message = None
            if self.echo_credentials and not success:
                message = f"535 5.7.8 Bad credentials: {username} {password}"
            return AuthResult(success=success, handled=False, message=message, auth_data=auth_data)

        return authenticate

    async def handle_EHLO(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        self.ehlo_names.append(hostname)
        if not self.offer_auth:
            responses = [line for line in responses if not line[4:].startswith("AUTH")]
        if self.offer_pipelining:
            responses = [responses[0], "250-PIPELINING", *responses[1:]]
        return responses

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
        self.arrivals.append((time.monotonic(), address))
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


@dataclass
class OAuth2Handler(RecordingHandler):
    """A RecordingHandler whose server also offers AUTH XOAUTH2 (RFC 7628's SASL form, as
    Gmail and Microsoft 365 speak it), accepting ``tokens`` (username -> access token).

    A refused token gets the error challenge (``334`` and base64 JSON), then ``535``
    once the client has answered it with an empty line.
    """

    tokens: dict[str, str] = field(default_factory=dict)

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:  # noqa: N802
        blob = base64.b64decode(args[1]).decode()
        fields = dict(part.split("=", 1) for part in blob.split("\x01") if part)
        username, token = fields["user"], fields["auth"].removeprefix("Bearer ")
        self.logins.append(Login("XOAUTH2", username, _encrypted(server)))
        if self.tokens.get(username) == token:
            return AuthResult(success=True, handled=False, auth_data=username)
        await server.challenge_auth('{"status":"401","schemes":"bearer"}')
        return AuthResult(success=False, handled=False)


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
    port: int | None = None,
) -> SmtpServer:
    """Start aiosmtpd on 127.0.0.1 and return it running; the caller stops it.

    ``implicit_tls``: a server context for TLS from connect (port-465 style).
    ``starttls``: a server context for STARTTLS, which is then offered.
    ``users``: name -> password; AUTH is offered (after TLS unless
    ``auth_require_tls`` is False) and checked against them.
    ``smtputf8``: whether the SMTPUTF8 extension is offered.
    ``port``: where to listen (a free port when None), e.g. where a test said nothing was.
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
        port=free_port() if port is None else port,
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


# --- a raw SMTP server that misbehaves on purpose ---

FAULT_STEPS = ("greet", "ehlo", "mail", "rcpt", "data", "end", "rset")
DROP = "drop"  # close the connection instead of replying
LOST = "lost"  # end of DATA only: take the message, then close without a reply


@dataclass(frozen=True)
class Slow:
    """Wait ``seconds`` before doing ``then`` (a reply line, ``DROP``, ``LOST`` or ``"ok"``)."""

    seconds: float
    then: str = "ok"


FaultAction = str | Slow  # a reply line ("451 4.3.0 Try later"), "ok", DROP or LOST

_DEFAULT_REPLIES = {
    "greet": "220 faulty.test ESMTP",
    "ehlo": "250-faulty.test\r\n250-8BITMIME\r\n250 SMTPUTF8",
    "mail": "250 2.1.0 OK",
    "rcpt": "250 2.1.5 OK",
    "data": "354 End data with <CR><LF>.<CR><LF>",
    "end": "250 2.0.0 Queued",
    "rset": "250 2.0.0 OK",
}


class _Closed(Exception):
    """The scripted server closed this connection."""


@dataclass(frozen=True)
class Arrival:
    """One command line as it reached the server, and how many replies the server had
    sent on that connection before it arrived (the greeting counts as one)."""

    connection: int
    line: str
    answered: int


class _Wire:
    """A connection's two directions: lines in, each noted with the number of replies
    sent before it arrived, and reply lines out."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""
        self._lines: list[tuple[bytes, int]] = []
        self._replies = 0
        self.answered = 0  # replies sent before the line last read arrived

    def _take(self, chunk: bytes) -> None:
        self._buffer += chunk
        *complete, self._buffer = self._buffer.split(b"\n")
        self._lines.extend((line + b"\n", self._replies) for line in complete)

    def readline(self) -> bytes:
        """The next line, waiting for it; b"" once the client has closed."""
        while not self._lines:
            chunk = self._sock.recv(65536)
            if not chunk:
                return b""
            self._take(chunk)
        line, self.answered = self._lines.pop(0)
        return line

    def _readable(self) -> bool:
        try:
            return bool(select.select([self._sock], [], [], 0)[0])
        except ValueError:  # the socket was closed by FaultyServer.stop
            raise _Closed from None

    def send(self, reply: str) -> None:
        # Lines already here arrived before this reply: take them in first.
        while self._readable():
            chunk = self._sock.recv(65536)
            if not chunk:
                break
            self._take(chunk)
        self._sock.sendall(reply.encode() + b"\r\n")
        self._replies += 1


@dataclass
class Transaction:
    """One message the server took (acknowledged with 250, or taken with its reply lost)."""

    connection: int
    mail_from: str
    recipients: tuple[str, ...]
    content: bytes
    confirmed: bool  # False when the reply to the end of DATA never reached the client


class FaultyServer:
    """A threaded SMTP server on 127.0.0.1 whose replies follow a fault script.

    ``faults`` maps a step (``FAULT_STEPS``) to the actions for its next occurrences,
    consumed in order across all connections; when a step's list is empty the server
    behaves. An action is a reply line, ``"ok"`` (the normal reply), ``DROP``, ``LOST``
    (end of DATA only) or ``Slow(seconds, then)``. A 421 reply closes the connection after
    it, as RFC 5321 asks. A message counts as delivered when the server commits to it: a
    250 to the end of DATA, or ``LOST``.

    Records, all seen from the server: ``connections``, ``peak`` (the most connections
    open at once), ``rcpt_attempts`` (wire address
    -> RCPT TO commands), ``delivered`` (wire address -> messages taken for it),
    ``transactions``, ``arrivals`` (every command line, with the replies sent before it
    arrived), and ``violations`` (commands out of step, such as a second MAIL FROM
    inside a transaction, or two clients' commands interleaved on one connection).

    ``pipelining`` offers PIPELINING (RFC 2920): a RCPT TO after a refused MAIL FROM, or
    a DATA without recipients, is then answered 503 instead of counted a violation.
    ``careless_data`` answers such a DATA 354 all the same (then 554 to its end), as
    some servers do, and records what it received in ``empty_data``.
    """

    def __init__(
        self,
        faults: Mapping[str, list[FaultAction]] | None = None,
        *,
        pipelining: bool = False,
        careless_data: bool = False,
    ) -> None:
        self.faults: dict[str, list[FaultAction]] = {step: [] for step in FAULT_STEPS}
        for step, actions in (faults or {}).items():
            if step not in self.faults:
                raise ValueError(f"unknown step {step!r}")
            self.faults[step] = list(actions)
        self.connections = 0
        self.peak = 0
        self._open = 0
        self.rcpt_attempts: dict[str, int] = {}
        self.delivered: dict[str, int] = {}
        self.transactions: list[Transaction] = []
        self.violations: list[str] = []
        self.arrivals: list[Arrival] = []
        self.empty_data: list[bytes] = []
        self.pipelining = pipelining
        self.careless_data = careless_data
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener = socket.create_server((HOST, 0))
        self._listener.settimeout(0.5)
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def settings(self, **overrides: Any) -> SmtpSettings:
        """SmtpSettings for this server (plain SMTP, 1 s timeout); ``overrides`` win."""
        values: dict[str, Any] = {"host": HOST, "port": self.port, "timeout": 1.0}
        values.update(overrides)
        return SmtpSettings(**values)

    def __enter__(self) -> FaultyServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept() at once on Linux
        self._acceptor.join()
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(timeout=5)

    @property
    def unconfirmed(self) -> set[str]:
        """Recipients of messages taken whose reply to the end of DATA was lost."""
        return {r for t in self.transactions if not t.confirmed for r in t.recipients}

    def _accept(self) -> None:
        number = 0
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:  # shut down by stop()
                return
            number += 1
            sock.settimeout(10)
            # Replies go out at once, as from a server that batches them when the client
            # pipelines: with Nagle's algorithm each reply after the first would wait for
            # the client's delayed ACK (40 ms) while the client waits for that reply.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections += 1
                self._open += 1
                self.peak = max(self.peak, self._open)
                self._sockets.append(sock)
            thread = threading.Thread(target=self._serve, args=(sock, number), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _action(self, step: str) -> FaultAction:
        with self._lock:
            actions = self.faults[step]
            return actions.pop(0) if actions else "ok"

    def _reply(
        self, wire: _Wire, step: str, on_commit: Callable[[bool], None] | None = None
    ) -> str:
        """Do this step's scripted action; return the reply line sent."""
        action = self._action(step)
        if isinstance(action, Slow):
            reply = _DEFAULT_REPLIES[step] if action.then == "ok" else action.then
            if on_commit is not None and (reply.startswith("250") or reply == LOST):
                # The server commits before it is slow: the message is taken either way.
                on_commit(False)
                on_commit = None
            self._stopping.wait(action.seconds)
            action = action.then
        reply = _DEFAULT_REPLIES[step] if action == "ok" else action
        if step == "ehlo" and self.pipelining and reply.startswith("250-"):
            reply = reply.replace("\r\n", "\r\n250-PIPELINING\r\n", 1)
        if reply == LOST and on_commit is not None:
            on_commit(False)
            raise _Closed
        if reply in (DROP, LOST):
            raise _Closed
        if on_commit is not None and reply.startswith("250"):
            on_commit(True)
        wire.send(reply)
        if reply.startswith("421"):
            raise _Closed
        return reply

    def _serve(self, sock: socket.socket, number: int) -> None:
        try:
            self._converse(_Wire(sock), number)
        except (_Closed, OSError):
            pass
        finally:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            with self._lock:
                self._open -= 1

    def _converse(self, wire: _Wire, number: int) -> None:
        self._reply(wire, "greet")
        mail_from: str | None = None
        recipients: list[str] = []
        while line := wire.readline():
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            with self._lock:
                self.arrivals.append(Arrival(number, text, wire.answered))
            verb, _, argument = text.partition(" ")
            verb = verb.upper()
            # Pipelined, the commands after a refusal arrive all the same (RFC 2920).
            out_of_step = not self.pipelining
            if verb in ("EHLO", "HELO"):
                self._reply(wire, "ehlo")
                mail_from, recipients = None, []
            elif verb == "MAIL":
                if mail_from is not None:
                    self.violations.append(f"connection {number}: MAIL inside a transaction")
                if self._reply(wire, "mail").startswith("250"):
                    mail_from, recipients = _path(argument), []
            elif verb == "RCPT":
                address = _path(argument)
                with self._lock:
                    self.rcpt_attempts[address] = self.rcpt_attempts.get(address, 0) + 1
                if mail_from is None:
                    if out_of_step:
                        self.violations.append(f"connection {number}: RCPT before MAIL")
                    else:
                        wire.send("503 5.5.1 Need MAIL first")
                        continue
                if self._reply(wire, "rcpt").startswith("25"):
                    recipients.append(address)
            elif verb == "DATA":
                if mail_from is None or not recipients:
                    if out_of_step:
                        self.violations.append(f"connection {number}: DATA without recipients")
                    if self.careless_data:
                        wire.send(_DEFAULT_REPLIES["data"])
                        self.empty_data.append(_read_data(wire))
                        wire.send("554 5.5.1 No valid recipients")
                        mail_from, recipients = None, []
                    else:
                        wire.send("503 5.5.1 Bad sequence of commands")
                    continue
                if not self._reply(wire, "data").startswith("354"):
                    mail_from, recipients = None, []
                    continue
                content = _read_data(wire)
                commit = functools.partial(
                    self._commit, number, mail_from, tuple(recipients), content
                )
                mail_from, recipients = None, []
                self._reply(wire, "end", commit)
            elif verb == "RSET":
                mail_from, recipients = None, []
                self._reply(wire, "rset")
            elif verb == "QUIT":
                wire.send("221 2.0.0 Bye")
                return
            elif verb == "NOOP":
                wire.send("250 2.0.0 OK")
            else:
                self.violations.append(f"connection {number}: unexpected {line!r}")
                wire.send("500 5.5.2 Unrecognised command")

    def _commit(
        self,
        number: int,
        mail_from: str,
        recipients: tuple[str, ...],
        content: bytes,
        confirmed: bool,
    ) -> None:
        with self._lock:
            self.transactions.append(
                Transaction(number, mail_from, recipients, content, confirmed)
            )
            for address in recipients:
                self.delivered[address] = self.delivered.get(address, 0) + 1


def _path(argument: str) -> str:
    """The address of ``FROM:<a@b> SMTPUTF8`` or ``TO:<a@b>``."""
    return argument.partition("<")[2].partition(">")[0]


def _read_data(reader: _Wire) -> bytes:
    lines = []
    while True:
        line = reader.readline()
        if not line:
            raise _Closed
        if line == b".\r\n":
            return b"".join(lines)
        lines.append(line[1:] if line.startswith(b".") else line)


# --- a raw server that runs a script of its own on each connection ---


class ScriptedServer:
    """A threaded TCP server on 127.0.0.1 that runs ``script(server, connection)`` for
    each client.

    For hostile servers no other server here can play (a reply dribbled a byte at a
    time, an endless reply, control characters, a hang-up in the middle of AUTH).
    ``received`` collects every byte read through :meth:`read_line`. Use it as a context
    manager; ``stop`` closes every connection, which ends a script blocked on it.
    """

    def __init__(self, script: Callable[[ScriptedServer, socket.socket], None]) -> None:
        self._script = script
        self._listener = socket.create_server((HOST, 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self.received = bytearray()
        self._connections: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def settings(self, **overrides: Any) -> SmtpSettings:
        """SmtpSettings for this server (plain SMTP, 1 s timeout); ``overrides`` win."""
        values: dict[str, Any] = {"host": HOST, "port": self.port, "timeout": 1.0}
        values.update(overrides)
        return SmtpSettings(**values)

    def read_line(self, connection: socket.socket) -> bytes:
        """One line from the client (b"" once it has closed), at most 64 KiB."""
        line = bytearray()
        while not line.endswith(b"\n") and len(line) < 65536:
            chunk = connection.recv(1)
            if not chunk:
                break
            line += chunk
        self.received += line
        return bytes(line)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            connection.settimeout(10)
            self._connections.append(connection)
            thread = threading.Thread(target=self._run, args=(connection,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _run(self, connection: socket.socket) -> None:
        with contextlib.suppress(OSError):
            self._script(self, connection)

    def stop(self) -> None:
        self._stopping.set()
        self._acceptor.join()
        self._listener.close()
        for connection in self._connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()
        for thread in self._threads:
            thread.join(timeout=5)


def assert_accounted_for(
    report: nm.DeliveryReport,
    recipients: Iterable[str],
    server: FaultyServer,
    max_attempts: int,
) -> None:
    """Each recipient accepted exactly once or reported not accepted, never both, never lost."""
    recipients = list(recipients)
    accepted, refused, failed = set(report.accepted), set(report.refused), set(report.failed)
    assert len(report.accepted) == len(accepted)
    assert not accepted & refused
    assert not accepted & failed
    assert not refused & failed
    assert accepted | refused | failed == set(recipients)
    lost = server.unconfirmed
    for address in recipients:
        delivered = server.delivered.get(address, 0)
        assert delivered <= 1, f"{address} delivered {delivered} times"
        if address in accepted:
            assert delivered == 1, f"{address} reported accepted but never delivered"
        elif delivered:
            # The one permitted ambiguity: taken by the server, its reply lost.
            error = report.failed.get(address)
            assert address in lost, f"{address} delivered but reported {error or 'refused'}"
            assert isinstance(error, nm.ConnectionFailed)
            assert error.retryable is False
        assert server.rcpt_attempts.get(address, 0) <= max_attempts
    assert server.violations == []
