"""The SMTP client protocol, written once and with no I/O: bytes in, events and bytes out.

The blocking driver (``SmtpTransport``), the asyncio driver and every connection of a
pool speak SMTP through this one state machine, as HTTP clients speak through h11: it
never touches a socket, a clock of its own or a thread, so pipelining, the error mapping
and the never-twice rule exist once, and a test can drive a whole conversation by
feeding the server's bytes and reading the client's.

A driver owns the connection and does this::

    client = SmtpClient(smtp)
    connect (on OSError: client.connection_failed(error))
    client.connected(local_address)
    loop:
        if client.has_data_to_send:
            write(client.data_to_send())      # all of it, before next_event()
        event = client.next_event()
        NEED_DATA  -> write what there is to send first; then
                      client.receive_data(read within client.time_left() seconds)
                      (b"" when the server closed the connection)
        StartTls   -> wrap the connection in TLS, then client.tls_started()
        otherwise  -> Ready, Delivered, Failed or Closed: hand it to the caller
    on any OSError while connecting, reading, writing or wrapping (a timeout too):
        client.connection_failed(error)       # next_event() is then Failed

After ``Ready``, `SmtpClient.mail` starts a transaction (``Delivered`` or
``Failed``) and `SmtpClient.quit` ends the session (``Closed``). On ``Failed``, a
client whose ``state`` is ``CLOSED`` must have its connection closed; otherwise the
connection is back in step and may carry the next envelope.

Where the server offers PIPELINING, the next envelope need not wait for the reply to
the end of DATA: when ``can_mail_ahead`` is true (the message is on its way and only
that reply is owed), ``mail`` queues the next transaction, whose MAIL, RCPT and DATA
then go out in the same write as the message before it (RFC 2920 3.1). A driver that
checks ``can_mail_ahead`` on ``NEED_DATA``, before it writes, gets that. Each envelope
still ends in exactly one ``Delivered`` or ``Failed``, in the order ``mail`` was called;
the queued one's content is only sent after its own 354, so the never-twice rule holds,
and when the connection breaks it fails with ``reconnect`` (nothing of it was taken).

``data_to_send()`` may hold credentials (AUTH): pass it straight to the write call,
never through a variable, so no traceback frame keeps it. The client itself keeps the
secret forms of the credentials only during AUTH, to mask them in the server's reply.
"""

from __future__ import annotations

import base64
import logging
import re
import ssl
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Final, TypeAlias

from notifymail._address import has_control_character, needs_smtputf8, wire_address
from notifymail.errors import (
    AuthenticationFailed,
    ConfigError,
    ConnectionFailed,
    DeliveryError,
    PermanentFailure,
    TemporaryFailure,
    TlsError,
    error_for_reply,
)
from notifymail.settings import Security, SmtpSettings
from notifymail.values import Delivery, Envelope, Reply

__all__ = [
    "NEED_DATA",
    "Closed",
    "Delivered",
    "Event",
    "Failed",
    "NeedData",
    "Ready",
    "RemoteProtocolError",
    "ReplyCode",
    "SmtpClient",
    "StartTls",
    "State",
    "Step",
    "check_options",
    "error_for",
    "printable",
]

MAX_REPLY_LINES: Final = 100
MAX_REPLY_BYTES: Final = 64 * 1024
MAX_REPLY_TEXT: Final = 512  # characters of a reply kept in a Reply, and so in errors
# Commands written ahead of their replies at most: far fewer replies than a socket's
# buffers hold, so client and server never both wait to write (RFC 2920 3.1).
PIPELINE_WINDOW: Final = 100

_END_OF_DATA = b".\r\n"
# A reply line: three digits, then " " (the last line), "-" (more follow) or nothing,
# then the text, then CRLF (or a bare LF, from a lax server).
_REPLY_LINE = re.compile(rb"([0-9]{3})(?:([ -])(.*?))?\r?\n")
_MASK = "**********"
# TLS handshake failures that mean the other end answered in plain text.
_PLAINTEXT_PEER = frozenset(
    {"WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "HTTP_REQUEST", "RECORD_LAYER_FAILURE"}
)


class ReplyCode(IntEnum):
    """The reply codes the client acts on (RFC 5321 4.2, RFC 4954)."""

    SERVICE_READY = 220
    AUTH_SUCCEEDED = 235
    OK = 250
    WILL_FORWARD = 251
    AUTH_CONTINUE = 334
    START_MAIL_INPUT = 354
    SERVICE_NOT_AVAILABLE = 421  # the server is closing the connection


class State(str, Enum):
    """Where a client is in its session."""

    CONNECTING = "connecting"  # until connected()
    SETTING_UP = "setting up"  # greeting, EHLO, STARTTLS, AUTH
    READY = "ready"  # idle: mail() or quit()
    SENDING = "sending"  # a transaction is under way
    QUITTING = "quitting"  # QUIT sent
    CLOSED = "closed"  # the connection must be closed and never used again


class Step(str, Enum):
    """What a reply, or a failure, belongs to; the value names it in error messages."""

    CONNECT = "connect"
    TLS = "the TLS handshake"
    GREETING = "the greeting"
    EHLO = "EHLO"
    HELO = "HELO"
    STARTTLS = "STARTTLS"
    AUTH = "AUTH"
    MAIL = "MAIL FROM"
    RCPT = "RCPT TO"
    DATA = "DATA"
    END_OF_DATA = "the end of DATA"
    EMPTY_DATA = "the end of an empty DATA"  # a DATA accepted after every RCPT failed
    RSET = "RSET"
    QUIT = "QUIT"


class RemoteProtocolError(Exception):
    """The server broke the protocol: a malformed reply, or one too long to keep."""


# --- events ---


@dataclass(frozen=True, slots=True)
class NeedData:
    """The client needs more bytes from the server: read, then ``receive_data``."""


NEED_DATA: Final = NeedData()


@dataclass(frozen=True, slots=True)
class StartTls:
    """Wrap the connection in TLS now (SSL before the greeting, or after STARTTLS's 220),
    then call ``tls_started``."""


@dataclass(frozen=True, slots=True)
class Ready:
    """The session is set up (greeted, secured, logged in): envelopes may follow."""

    extensions: Mapping[str, str]  # EHLO keyword (upper case) -> its parameters
    encrypted: bool


@dataclass(frozen=True, slots=True)
class Delivered:
    """The server took the message: its reply to the end of DATA was 250."""

    delivery: Delivery


@dataclass(frozen=True, slots=True)
class Failed:
    """The setup or the transaction failed with ``error``.

    ``reconnect``: the server dropped a connection that had served an earlier envelope
    before it took anything of this one (a 421 or a closed connection at MAIL FROM), so
    the driver may open a new connection and try this envelope once more.
    """

    error: DeliveryError
    reconnect: bool = False


@dataclass(frozen=True, slots=True)
class Closed:
    """The session ended (QUIT answered, or the connection closed while quitting)."""


Event: TypeAlias = NeedData | StartTls | Ready | Delivered | Failed | Closed


# --- pure helpers ---


def printable(text: str) -> str:
    """``text`` with every character that is not printable escaped (``\\x1b``, ``\\r``):
    server text may reach a terminal or a log line, and stays one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _dot_stuffed(raw: bytes) -> bytes:
    """``raw``, whose line ends are all CRLF, with a leading dot doubled and a final CRLF
    (RFC 5321 4.5.2).

    An ``Envelope``'s ``raw`` keeps that promise whichever way it was made (its bytes
    are made CRLF when it is built), so a bare LF or CR, and with it a ``<LF>.<LF>``
    that a server could take for the end of DATA, never reaches this point.
    """
    data = raw
    # bytes.replace, unlike a regular expression substitution, keeps no object per line:
    # a body of "." lines cost 70 times its size.
    if b"\n." in data:
        data = data.replace(b"\n.", b"\n..")
    if data.startswith(b"."):
        data = b"." + data
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def _address_literal(local_address: str) -> str:
    """The EHLO name RFC 5321 asks for when the client has no meaningful domain name."""
    address = local_address.partition("%")[0]
    return f"[IPv6:{address}]" if ":" in address else f"[{address}]"


def check_options(
    smtp: SmtpSettings,
    *,
    local_hostname: str | None,
    oauth2_token: Callable[[], str] | None,
) -> None:
    """Refuse a driver's options before any connection: a driver's constructor calls it."""
    if not isinstance(smtp, SmtpSettings):
        raise TypeError(f"an SMTP transport needs SmtpSettings, not {type(smtp).__name__}")
    if local_hostname is not None and (
        has_control_character(local_hostname) or not local_hostname.strip()
    ):
        raise ConfigError(
            "local_hostname: must be a host name without CR, LF or NUL", field="local_hostname"
        )
    if oauth2_token is not None:
        if not callable(oauth2_token):
            raise TypeError("oauth2_token must be a callable returning the access token")
        if smtp.username is None:
            raise ConfigError(
                "username: XOAUTH2 (oauth2_token) needs the account's username",
                field="username",
            )
    elif smtp.username is not None and smtp.password is None:
        raise ConfigError(
            "password: a username needs a password, or an oauth2_token given to the transport",
            field="password",
        )


def error_for(
    failure: Reply | BaseException,
    step: Step,
    *,
    server: str,
    timeout: float,
    greeted: bool = True,
    action: str | None = None,
    refused: Mapping[str, Reply] | None = None,
) -> DeliveryError:
    """The error for a server's refusal or a broken connection at ``step``: the one place
    where SMTP failures become notifymail's errors, for every driver.

    ``failure`` is the server's [`Reply`][notifymail.Reply], or what the I/O raised: a timeout
    (``TimeoutError``), a reset (``OSError``), a TLS or certificate error, ``EOFError``
    when the server closed the connection, or a `RemoteProtocolError`.
    ``greeted`` says whether the server had greeted (a timeout before that is a
    connection failure, after it a temporary one); ``action`` names what was refused
    (``"MAIL FROM:<a@example.com>"``); ``refused`` is set when every recipient was.
    """
    action = action or step.value
    if isinstance(failure, Reply):
        if refused:
            message = f"{server} refused every recipient ({len(refused)}); the first: {failure}"
            return error_for_reply(message, failure, refused=refused)
        if step is Step.GREETING:
            message = f"{server} refused the connection: {failure}"
            return ConnectionFailed(message, reply=failure, retryable=failure.is_transient)
        if step is Step.STARTTLS:
            return TlsError(f"{server} refused STARTTLS: {failure}", reply=failure)
        if step is Step.AUTH:
            message = f"{server} refused {action}: {failure}"
            return AuthenticationFailed(message, reply=failure, retryable=failure.is_transient)
        return error_for_reply(f"{server} refused {action}: {failure}", failure)
    if step is Step.END_OF_DATA:
        return ConnectionFailed(
            f"{server} did not confirm the message after the end of DATA; it may have "
            "been delivered, so it is not sent again",
            retryable=False,
        )
    if isinstance(failure, TimeoutError):
        seconds = f"{timeout:g}"
        if greeted:
            return TemporaryFailure(
                f"{server} stopped answering during {action} (timeout {seconds} s)"
            )
        return ConnectionFailed(
            f"{server} did not answer within the timeout of {seconds} s ({action})"
        )
    if isinstance(failure, ssl.SSLCertVerificationError):
        return TlsError(f"{server}: TLS certificate not trusted: {failure.verify_message}")
    if isinstance(failure, ssl.SSLError) and step is Step.TLS:
        reason = failure.reason or str(failure)
        hint = ""
        if not greeted and reason in _PLAINTEXT_PEER:
            hint = " (the server does not speak TLS on connect; try starttls)"
        return TlsError(f"{server}: TLS handshake failed: {reason}{hint}")
    if isinstance(failure, EOFError):
        return ConnectionFailed(f"{server} closed the connection during {action}")
    if isinstance(failure, RemoteProtocolError):
        return ConnectionFailed(f"{server} {failure} during {action}")
    reason = (failure.strerror if isinstance(failure, OSError) else None) or str(failure)
    return ConnectionFailed(f"{server}: {action} failed: {printable(reason)}")


def _caused(error: DeliveryError, cause: BaseException | None) -> DeliveryError:
    """``error`` as ``raise error from cause`` would leave it, for whoever raises it."""
    if cause is not None:
        error.__cause__ = cause
        error.__suppress_context__ = True
    return error


def _extensions(lines: list[bytes]) -> dict[str, str]:
    """The EHLO reply's extensions: keyword (upper case) -> parameters."""
    extensions: dict[str, str] = {}
    for line in lines[1:]:
        keyword, _, parameters = line.decode("ascii", "replace").strip().partition(" ")
        keyword = keyword.upper()
        if keyword.startswith("AUTH="):  # the pre-RFC 4954 form some servers still send
            keyword, parameters = "AUTH", f"{keyword[5:]} {parameters}"
        if keyword == "AUTH" and "AUTH" in extensions:
            parameters = f"{extensions['AUTH']} {parameters}"
        extensions[keyword] = parameters.strip()
    return extensions


def _malformed(line: bytes) -> RemoteProtocolError:
    """The error for a reply line that is not one (``line`` without its line end)."""
    shown = printable(line[:80].decode("utf-8", "backslashreplace"))
    return RemoteProtocolError(f"sent a malformed reply line {shown!r}")


@dataclass(slots=True)
class _Transaction:
    """One envelope's MAIL, RCPT and DATA, and what the replies said so far."""

    envelope: Envelope
    commands: list[bytes]
    steps: list[Step]  # what each command's reply belongs to
    window: int  # commands written ahead of their replies
    sent: int = 0
    answered: int = 0  # RCPT replies read
    accepted: list[str] = field(default_factory=list)
    refused: dict[str, Reply] = field(default_factory=dict)
    failure: DeliveryError | None = None
    failed_at: Step | None = None
    stale: bool = False  # the failure says the server dropped the connection at MAIL


class SmtpClient:
    """One SMTP session, client side, as a state machine with no I/O.

    ``smtp`` gives the server name (for messages), the security mode, the credentials
    and the timeout, which bounds each reply (the greeting and each command's) as a
    deadline on ``clock``. ``local_hostname`` is the EHLO name (by default the address
    literal of the connection's local end, given to `connected`).
    ``oauth2_token`` makes AUTH XOAUTH2 with ``smtp.username`` and the token it returns.
    ``logger`` receives the warnings about plaintext; drivers pass their own.
    """

    def __init__(
        self,
        smtp: SmtpSettings,
        *,
        local_hostname: str | None = None,
        oauth2_token: Callable[[], str] | None = None,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.smtp = smtp
        self.server = f"{smtp.host}:{smtp.effective_port}"
        self.state = State.CONNECTING
        self.extensions: dict[str, str] = {}
        self.encrypted = False
        self._local_hostname = local_hostname
        self._oauth2_token = oauth2_token
        self._logger = logger or logging.getLogger("notifymail.protocol")
        self._clock = clock
        self._greeted = False
        self._idle_step = Step.CONNECT  # what a failure belongs to when no reply is owed
        self._deadline: float | None = None
        self._outgoing: list[bytes] = []
        self._message_queued = False  # _outgoing holds a message's content
        self._incoming = bytearray()
        self._scanned = 0  # bytes of _incoming already split into the lines below
        self._lines: list[bytes] = []  # texts of the lines read of the current reply
        self._eof = False
        self._owed: deque[Step] = deque()  # the replies owed, oldest first
        self._events: deque[Event] = deque()
        self._transaction: _Transaction | None = None
        self._next: _Transaction | None = None  # queued behind the end of DATA (ahead)
        self._transactions = 0  # started on this connection
        # The last body shared by envelopes (see Envelope._composed), dot-stuffed, and
        # whether it is all ASCII: a notification's envelopes scan their body once.
        self._shared: tuple[bytes, bytes, bool] = (b"", b"", True)
        self._pending: DeliveryError | None = None  # to report once QUIT is answered
        # During AUTH only: the responses still to send on 334, and the forms of the
        # secret a server might repeat in its reply.
        self._auth_responses: deque[bytes] = deque()
        self._secrets: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"SmtpClient({self.server}, state={self.state.value})"

    # --- what a driver calls ---

    def connected(self, local_address: str) -> None:
        """The connection is open; ``local_address`` is its local IP address."""
        self._require(State.CONNECTING, "connected")
        self.state = State.SETTING_UP
        if self._local_hostname is None:
            self._local_hostname = _address_literal(local_address)
        if self.smtp.security is Security.SSL:
            self._idle_step = Step.TLS
            self._events.append(StartTls())
        else:
            self._owed.append(Step.GREETING)

    def tls_started(self) -> None:
        """The driver has wrapped the connection in TLS, as a ``StartTls`` event asked."""
        self.encrypted = True
        self._idle_step = Step.GREETING
        if self._greeted:  # after STARTTLS: forget what was learnt in plaintext
            self.extensions = {}
            self._ehlo()
        else:
            self._owed.append(Step.GREETING)

    @property
    def has_data_to_send(self) -> bool:
        """Whether `data_to_send` has bytes to write."""
        return bool(self._outgoing)

    @property
    def has_message_to_send(self) -> bool:
        """Whether `data_to_send` holds a message's content, up to its end of DATA: the
        point of no return, which a driver may hold back until it is ready for it."""
        return self._message_queued

    def data_to_send(self) -> bytes:
        """The bytes to write to the server now (empty when there are none)."""
        data = b"".join(self._outgoing)
        self._outgoing.clear()
        self._message_queued = False
        self._deadline = None  # a reply's time counts from the last write
        return data

    def receive_data(self, data: bytes) -> None:
        """Bytes read from the server; ``b""`` means it closed the connection."""
        if data:
            self._incoming += data
        else:
            self._eof = True

    def time_left(self) -> float:
        """Seconds left to read the reply awaited (the timeout, as a deadline per reply)."""
        if self._deadline is None:
            return self.smtp.timeout
        return max(0.0, self._deadline - self._clock())

    def connection_failed(self, error: BaseException) -> None:
        """Reading, writing, connecting or the TLS handshake raised ``error`` (a timeout
        included): the next event is ``Failed`` (``Closed`` while quitting)."""
        if self.state is not State.CLOSED:
            self._lose_connection(error)

    def next_event(self) -> Event:
        """The next event, or ``NEED_DATA`` when the client waits for the server."""
        while not self._events:
            if not self._owed:
                raise RuntimeError(f"SmtpClient in state {self.state.value} awaits nothing")
            reply = None
            if self._incoming:
                try:
                    reply = self._next_reply()
                except RemoteProtocolError as error:
                    self._lose_connection(error)
                    continue
            if reply is not None:
                self._deadline = None
                if self.state is State.SENDING:
                    self._on_transaction_reply(self._owed.popleft(), *reply)
                else:
                    self._on_reply(self._owed.popleft(), *reply)
            elif self._eof:
                self._lose_connection(EOFError())
            else:
                if self._deadline is None:
                    self._deadline = self._clock() + self.smtp.timeout
                return NEED_DATA
        return self._events.popleft()

    @property
    def can_mail_ahead(self) -> bool:
        """Whether ``mail`` may queue the next envelope now, during a transaction: the
        server offers PIPELINING and the transaction under way awaits nothing but the
        reply to its end of DATA (RFC 2920 3.1)."""
        transaction = self._transaction
        return (
            self.state is State.SENDING
            and self._next is None
            and transaction is not None
            and transaction.failure is None
            and len(self._owed) == 1
            and self._owed[0] is Step.END_OF_DATA
            and "PIPELINING" in self.extensions
        )

    def mail(self, envelope: Envelope) -> bool:
        """Start the transaction for ``envelope``: MAIL, every RCPT and DATA (pipelined
        when the server offers it), then the content. Ends in ``Delivered`` or ``Failed``.

        Called when ``can_mail_ahead``, it queues the transaction behind the one under
        way: its commands go out now, and its events follow that one's. Returns whether
        MAIL FROM is now to be written (False: refused without a word to the server).
        """
        ahead = self.can_mail_ahead
        if not ahead:
            self._require(State.READY, "mail")
        transaction = self._new_transaction(envelope)
        if ahead:
            self._next = transaction
            if transaction.failure is None:
                self._send_commands(transaction)
        else:
            self._begin(transaction)
        return transaction.failure is None

    def _new_transaction(self, envelope: Envelope) -> _Transaction:
        """The transaction for ``envelope``, failed already when the server cannot take it."""
        options, encoding = "", "ascii"
        if envelope.needs_smtputf8:
            if "SMTPUTF8" not in self.extensions:
                addresses = (envelope.sender, *envelope.recipients)
                address = next(filter(needs_smtputf8, addresses), "an address in the headers")
                message = (
                    f"{address} needs SMTPUTF8, which the server {self.server} does not offer"
                )
                return _Transaction(envelope, [], [], 1, failure=PermanentFailure(message))
            options, encoding = " SMTPUTF8", "utf-8"
        if "8BITMIME" in self.extensions and not self._is_ascii(envelope):
            options += " BODY=8BITMIME"
        # Envelope refuses addresses holding white space, brackets or control characters,
        # so none of these lines can be two.
        commands = [
            f"MAIL FROM:<{wire_address(envelope.sender)}>{options}\r\n".encode(encoding),
            *(f"RCPT TO:<{wire_address(a)}>\r\n".encode(encoding) for a in envelope.recipients),
            b"DATA\r\n",
        ]
        steps = [Step.MAIL, *[Step.RCPT] * len(envelope.recipients), Step.DATA]
        window = PIPELINE_WINDOW if "PIPELINING" in self.extensions else 1
        self._transactions += 1
        return _Transaction(envelope, commands, steps, window)

    def _begin(self, transaction: _Transaction | None) -> None:
        """Make ``transaction`` the one under way (its commands are sent, or sent here),
        or, without one, be ready for the next."""
        self.state = State.READY
        self._transaction = None
        if transaction is None:
            return
        if transaction.failure is not None:  # refused before a command was sent
            self._events.append(Failed(transaction.failure))
            return
        self._transaction = transaction
        self.state = State.SENDING
        if not transaction.sent:
            self._send_commands(transaction)

    def quit(self) -> None:
        """End the session: QUIT when the connection is in step, then ``Closed``."""
        if self.state is State.READY:
            self.state = State.QUITTING
            self._send(b"QUIT\r\n", Step.QUIT)
        elif self.state is not State.QUITTING:
            self._close()
            self._events.append(Closed())

    # --- replies ---

    def _next_reply(self) -> tuple[int, list[bytes]] | None:
        """The next complete reply (code, line texts) in what was received, if any."""
        incoming = self._incoming
        lines = self._lines
        start = self._scanned
        while True:
            end = incoming.find(b"\n", start) + 1
            if not end:
                self._scanned = start
                if len(incoming) > MAX_REPLY_BYTES:
                    raise RemoteProtocolError(f"sent a reply longer than {MAX_REPLY_BYTES} bytes")
                return None
            line = _REPLY_LINE.fullmatch(incoming, start, end)
            if line is None:
                text = bytes(incoming[start : end - 1])
                raise _malformed(text[:-1] if text.endswith(b"\r") else text)
            start = end
            code, separator, text = line.groups()
            lines.append(text or b"")
            if len(lines) > MAX_REPLY_LINES:
                raise RemoteProtocolError(f"sent a reply of more than {MAX_REPLY_LINES} lines")
            if start > MAX_REPLY_BYTES:
                raise RemoteProtocolError(f"sent a reply longer than {MAX_REPLY_BYTES} bytes")
            if separator != b"-":
                del incoming[:start]
                self._scanned = 0
                self._lines = []
                return int(code), lines

    def _reply(self, code: int, lines: list[bytes]) -> Reply:
        """The reply as kept in errors: one line, escaped, capped, no secret in it."""
        text = " ".join(line.decode("utf-8", "backslashreplace") for line in lines)
        for secret in self._secrets:
            text = text.replace(secret, _MASK)
        text = printable(text)
        if len(text) > MAX_REPLY_TEXT:
            text = text[:MAX_REPLY_TEXT] + " [...]"
        return Reply(code, text)

    def _on_reply(self, step: Step, code: int, lines: list[bytes]) -> None:
        """A reply outside a transaction (see `_on_transaction_reply`)."""
        if step is Step.QUIT:
            self._close()
            pending, self._pending = self._pending, None
            self._events.append(Closed() if pending is None else Failed(pending))
        elif step is Step.GREETING:
            if code != ReplyCode.SERVICE_READY:
                self._fail_setup(self._refusal(step, code, lines))
                return
            self._greeted = True
            self._ehlo()
        elif step in (Step.EHLO, Step.HELO):
            self._on_ehlo(step, code, lines)
        elif step is Step.STARTTLS:
            if code != ReplyCode.SERVICE_READY:
                self._fail_setup(self._refusal(step, code, lines))
                return
            if self._incoming:  # plaintext that would pass for replies after TLS
                self._fail_setup(
                    TlsError(f"{self.server} sent more than its reply to STARTTLS; not trusted")
                )
                return
            self._idle_step = Step.TLS
            self._events.append(StartTls())
        else:
            self._on_auth(code, lines)

    def _refusal(
        self, step: Step, code: int, lines: list[bytes], action: str | None = None
    ) -> DeliveryError:
        return error_for(
            self._reply(code, lines),
            step,
            server=self.server,
            timeout=self.smtp.timeout,
            action=action,
        )

    # --- setting up: EHLO, STARTTLS, AUTH ---

    def _ehlo(self) -> None:
        self._send(f"EHLO {self._local_hostname}\r\n".encode(), Step.EHLO)

    def _on_ehlo(self, step: Step, code: int, lines: list[bytes]) -> None:
        if 200 <= code < 300:
            self.extensions = _extensions(lines) if step is Step.EHLO else {}
            self._secure()
        elif step is Step.EHLO and 500 <= code < 600:  # an old server: fall back to HELO
            self._send(f"HELO {self._local_hostname}\r\n".encode(), Step.HELO)
        else:
            self._fail_setup(self._refusal(step, code, lines))

    def _secure(self) -> None:
        security = self.smtp.security
        if self.encrypted or security not in (Security.TLS, Security.STARTTLS):
            self._authenticate()
            return
        if "STARTTLS" in self.extensions:
            self._send(b"STARTTLS\r\n", Step.STARTTLS)
            return
        if security is Security.STARTTLS:
            self._fail_setup(
                TlsError(
                    f"{self.server} does not offer STARTTLS, which security starttls "
                    "requires; nothing was sent"
                )
            )
            return
        if self._has_credentials:
            self._fail_setup(
                TlsError(
                    f"{self.server} does not offer STARTTLS, and credentials are never sent "
                    f"unencrypted (security {security.value}); use none to allow it"
                )
            )
            return
        self._logger.warning(
            "%s does not offer STARTTLS; sending without encryption (security tls, "
            "no credentials)",
            self.server,
        )
        self._authenticate()

    @property
    def _has_credentials(self) -> bool:
        smtp = self.smtp
        return smtp.username is not None and (
            self._oauth2_token is not None or smtp.password is not None
        )

    def _authenticate(self) -> None:
        """One AUTH attempt (XOAUTH2, else PLAIN, else LOGIN), or none without credentials."""
        if not self._has_credentials:
            self._ready()
            return
        username = self.smtp.username
        assert username is not None  # noqa: S101 - _has_credentials says so
        what = "an OAuth2 token" if self._oauth2_token is not None else "a password"
        if "AUTH" not in self.extensions:
            self._fail_setup(
                AuthenticationFailed(
                    f"{self.server} does not offer AUTH, but a username and {what} are set"
                )
            )
            return
        offered = self.extensions["AUTH"].upper().split()
        wanted = ("XOAUTH2",) if self._oauth2_token is not None else ("PLAIN", "LOGIN")
        mechanism = next((name for name in wanted if name in offered), None)
        if mechanism is None:
            self._fail_setup(
                AuthenticationFailed(
                    f"{self.server} does not offer AUTH {' or '.join(wanted)} "
                    f"(it offers {' '.join(offered) or 'none'})"
                )
            )
            return
        if not self.encrypted:
            self._logger.warning(
                "authenticating to %s as %r without encryption (security none)",
                self.server,
                username,
            )
        self._send(self._auth_command(mechanism, username) + b"\r\n", Step.AUTH)

    def _auth_command(self, mechanism: str, username: str) -> bytes:
        """The AUTH command; the responses to later 334 challenges wait in
        ``_auth_responses``, and the forms of the secret to mask in ``_secrets``."""
        if self._oauth2_token is not None:
            token = self._oauth2_token()
            if not isinstance(token, str):
                raise TypeError(f"oauth2_token returned {type(token).__name__}, not str")
            response = base64.b64encode(f"user={username}\x01auth=Bearer {token}\x01\x01".encode())
            self._secrets = (response.decode(), token)
            self._auth_responses = deque([b""])  # answers the error challenge (RFC 7628 3.2.3)
            return b"AUTH XOAUTH2 " + response
        password = self.smtp.password
        assert password is not None  # noqa: S101 - _has_credentials says so
        secret = password.reveal()
        encoded = base64.b64encode(secret.encode())
        plain = base64.b64encode(f"\0{username}\0{secret}".encode())
        self._secrets = (plain.decode(), encoded.decode(), secret)
        if mechanism == "PLAIN":
            self._auth_responses = deque([plain])
            return b"AUTH PLAIN " + plain
        self._auth_responses = deque([base64.b64encode(username.encode()), encoded])
        return b"AUTH LOGIN"

    def _on_auth(self, code: int, lines: list[bytes]) -> None:
        if code == ReplyCode.AUTH_CONTINUE:
            # Each challenge gets the next response; one more gets "*", which cancels.
            response = self._auth_responses.popleft() if self._auth_responses else b"*"
            self._send(response + b"\r\n", Step.AUTH)
            return
        username = self.smtp.username
        what = "the OAuth2 token" if self._oauth2_token is not None else "the credentials"
        error = None
        if code != ReplyCode.AUTH_SUCCEEDED:
            error = self._refusal(Step.AUTH, code, lines, f"{what} for {username!r}")
        self._auth_responses.clear()
        self._secrets = ()
        if error is None:
            self._ready()
        elif code == ReplyCode.SERVICE_NOT_AVAILABLE:
            self._fail_setup(error)
        else:  # one attempt per connection, then QUIT
            self._pending = error
            self.state = State.QUITTING
            self._send(b"QUIT\r\n", Step.QUIT)

    def _ready(self) -> None:
        self.state = State.READY
        self._idle_step = Step.MAIL
        self._events.append(Ready(dict(self.extensions), self.encrypted))

    def _fail_setup(self, error: DeliveryError) -> None:
        self._close()
        self._events.append(Failed(error))

    # --- the transaction ---

    def _send_commands(self, transaction: _Transaction) -> None:
        """The next window of commands; pipelined, up to ``PIPELINE_WINDOW`` at once."""
        first = transaction.sent
        end = first + transaction.window
        commands = transaction.commands[first:end]
        if commands:
            self._outgoing.append(b"".join(commands))
            self._owed.extend(transaction.steps[first:end])
            transaction.sent = first + len(commands)

    def _on_transaction_reply(self, step: Step, code: int, lines: list[bytes]) -> None:
        transaction = self._transaction
        assert transaction is not None  # noqa: S101 - SENDING has one
        envelope = transaction.envelope
        if step is Step.MAIL:
            if code != ReplyCode.OK:
                self._fail_transaction(step, code, lines, f"MAIL FROM:<{envelope.sender}>")
                transaction.stale = code == ReplyCode.SERVICE_NOT_AVAILABLE
        elif step is Step.RCPT:
            address = envelope.recipients[transaction.answered]
            transaction.answered += 1
            if code in (ReplyCode.OK, ReplyCode.WILL_FORWARD):
                transaction.accepted.append(address)
            elif code == ReplyCode.SERVICE_NOT_AVAILABLE:
                self._fail_transaction(step, code, lines, f"RCPT TO:<{address}>")
            else:
                transaction.refused[address] = self._reply(code, lines)
            if transaction.answered == len(envelope.recipients) and not transaction.accepted:
                self._fail_everyone_refused(transaction)
        elif step is Step.DATA:
            if code == ReplyCode.START_MAIL_INPUT:
                if transaction.failure is None:
                    self._send_content(envelope)
                else:  # DATA accepted all the same: end it empty, never send the message
                    self._send(_END_OF_DATA, Step.EMPTY_DATA)
                return
            self._fail_transaction(step, code, lines)
        elif step is Step.END_OF_DATA:
            if code == ReplyCode.OK:
                delivery = Delivery(
                    message_id=envelope.message_id,
                    accepted=tuple(transaction.accepted),
                    refused=transaction.refused,
                )
                self._events.append(Delivered(delivery))
                following, self._next = self._next, None
                self._begin(following)
                return
            # Either reply ends the transaction (RFC 5321 3.3): nothing to reset.
            self._fail_transaction(step, code, lines, "the message")
            self._end_transaction(close=code == ReplyCode.SERVICE_NOT_AVAILABLE)
            return
        elif step is Step.RSET:
            self._end_transaction(close=code != ReplyCode.OK)
            return
        if code == ReplyCode.SERVICE_NOT_AVAILABLE:  # the server is closing the connection
            self._end_transaction(close=True)
        elif not self._owed:
            if transaction.failure is None:
                self._send_commands(transaction)
            elif transaction.failed_at is Step.MAIL:  # no transaction open: nothing to reset
                self._end_transaction(close=False)
            else:
                self._send(b"RSET\r\n", Step.RSET)

    def _fail_transaction(
        self, step: Step, code: int, lines: list[bytes], action: str | None = None
    ) -> None:
        """Note the transaction's failure; the first one is what the transaction reports."""
        transaction = self._transaction
        assert transaction is not None  # noqa: S101 - called while SENDING
        if transaction.failure is None:
            transaction.failure = self._refusal(step, code, lines, action)
            transaction.failed_at = step

    def _fail_everyone_refused(self, transaction: _Transaction) -> None:
        if transaction.failure is None:
            first = next(iter(transaction.refused.values()))
            transaction.failure = error_for(
                first,
                Step.RCPT,
                server=self.server,
                timeout=self.smtp.timeout,
                refused=transaction.refused,
            )
            transaction.failed_at = Step.RCPT

    def _end_transaction(self, *, close: bool) -> None:
        transaction = self._transaction
        assert transaction is not None  # noqa: S101 - called while SENDING
        assert transaction.failure is not None  # noqa: S101 - called once it failed
        following, self._next = self._next, None
        reconnect = close and transaction.stale and self._transactions > 1
        if close:
            self._close()
        self._events.append(Failed(transaction.failure, reconnect))
        if close:
            self._drop(following)
        else:
            self._begin(following)

    def _drop(self, queued: _Transaction | None) -> None:
        """Fail the transaction queued ahead, on a connection that is gone: none of it
        was taken, so ``reconnect`` says that it may go out on a new one."""
        if queued is None:
            return
        error = queued.failure or error_for(
            EOFError(),
            Step.MAIL,
            server=self.server,
            timeout=self.smtp.timeout,
            action=f"MAIL FROM:<{queued.envelope.sender}>",
        )
        self._events.append(Failed(error, reconnect=queued.failure is None))

    def _send_content(self, envelope: Envelope) -> None:
        """The message, dot-stuffed, and the end of DATA."""
        head, tail = envelope._parts()
        if tail and head.endswith(b"\r\n"):
            self._outgoing += (_dot_stuffed(head), self._shared_part(tail)[0])
        else:
            self._outgoing.append(_dot_stuffed(head + tail))
        self._send(_END_OF_DATA, Step.END_OF_DATA)
        self._message_queued = True

    def _is_ascii(self, envelope: Envelope) -> bool:
        head, tail = envelope._parts()
        return head.isascii() and (not tail or self._shared_part(tail)[1])

    def _shared_part(self, tail: bytes) -> tuple[bytes, bool]:
        """A body that envelopes share (it starts a line), dot-stuffed, and whether it is
        all ASCII: worked out once for all the envelopes that share it."""
        shared = self._shared
        if shared[0] is not tail:
            shared = self._shared = (tail, _dot_stuffed(tail), tail.isascii())
        return shared[1], shared[2]

    # --- the connection ---

    def _send(self, data: bytes, step: Step) -> None:
        self._outgoing.append(data)
        self._owed.append(step)

    def _close(self) -> None:
        self.state = State.CLOSED
        self._shared = (b"", b"", True)
        self._owed.clear()
        self._outgoing.clear()
        self._message_queued = False
        self._transaction = None
        self._next = None
        self._auth_responses.clear()
        self._secrets = ()

    def _lose_connection(self, cause: BaseException) -> None:
        """The connection broke (or the server broke the protocol): report what failed."""
        step = self._owed[0] if self._owed else self._idle_step
        transaction = self._transaction
        following = self._next
        pending = self._pending if transaction is None else transaction.failure
        self._pending = None
        quitting = self.state is State.QUITTING
        self._close()
        if pending is not None:  # a refusal was already final; the rest was tidying up
            self._events.append(Failed(pending))
            self._drop(following)
            return
        if quitting:
            self._events.append(Closed())
            return
        error = error_for(
            cause, step, server=self.server, timeout=self.smtp.timeout, greeted=self._greeted
        )
        reconnect = (
            step is Step.MAIL
            and transaction is not None
            and self._transactions > 1
            and isinstance(error, ConnectionFailed)
        )
        self._events.append(Failed(_caused(error, cause), reconnect))
        self._drop(following)

    def _require(self, state: State, method: str) -> None:
        if self.state is not state:
            raise RuntimeError(f"SmtpClient.{method}() in state {self.state.value}")
