"""The SMTP transport: hands envelopes to a real server through ``smtplib`` and ``ssl``.

``deliver`` reads as the SMTP transaction, one small method per step, each turning
``smtplib``'s exceptions into notifymail's errors with the server's [`Reply`][notifymail.Reply].
Two promises shape it: credentials never travel unencrypted (except under
``Security.NONE``, with a warning each time), and once the end of DATA has been
sent a message is never sent again, so no one receives it twice.

When the server offers PIPELINING (RFC 2920), MAIL FROM, every RCPT TO and DATA go out
in one write and their replies are read in order, saving round trips; the replies mean
the same either way, and one code path reads them.
"""

from __future__ import annotations

import base64
import logging
import re
import smtplib
import socket
import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import NoReturn

from typing_extensions import override

from notifymail._address import has_control_character, needs_smtputf8, wire_address
from notifymail.errors import (
    AuthenticationFailed,
    ConfigError,
    ConnectionFailed,
    DeliveryError,
    PermanentFailure,
    TemporaryFailure,
    TlsError,
)
from notifymail.settings import Security, SmtpSettings
from notifymail.transport.base import Transport
from notifymail.values import Delivery, Envelope, Reply

__all__ = ["SmtpTransport"]

logger = logging.getLogger("notifymail.transport.smtp")

_UPGRADES = (Security.TLS, Security.STARTTLS)
_LINE_END = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)
_END_OF_DATA = b".\r\n"
_SERVICE_CLOSING = 421
# Commands written ahead of their replies at most: far fewer replies than a socket's
# buffers hold, so client and server never both wait to write (RFC 2920 3.1).
_PIPELINE_WINDOW = 100


def _reply(code: int, text: bytes | str) -> Reply:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return Reply(code, " ".join(text.split("\n")))


def _by_code(
    message: str, reply: Reply, refused: Mapping[str, Reply] | None = None
) -> DeliveryError:
    """A refusal as an error: 4xx is temporary, anything else permanent."""
    error_class = TemporaryFailure if reply.is_transient else PermanentFailure
    return error_class(message, reply=reply, refused=refused)


def _timed_out(error: BaseException) -> bool:
    # smtplib turns a timeout while reading a reply into SMTPServerDisconnected.
    return isinstance(error, TimeoutError) or isinstance(error.__context__, TimeoutError)


def _without_credentials(text: bytes | str, username: str, password: str) -> str:
    """``text`` with the password masked, as sent and as AUTH LOGIN and PLAIN encode it."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    plain = f"\0{username}\0{password}".encode()
    for form in (
        base64.b64encode(plain).decode(),
        base64.b64encode(password.encode()).decode(),
        password,
    ):
        text = text.replace(form, "**********")
    return text


def _dot_stuffed(raw: bytes) -> bytes:
    """``raw`` with CRLF line ends, a leading dot doubled, and a final CRLF (RFC 5321 4.5.2)."""
    data = raw
    # Counting is much cheaper than a substitution that finds nothing to change, the
    # common case for an Envelope's raw bytes.
    if not data.count(b"\r") == data.count(b"\n") == data.count(b"\r\n"):
        data = _LINE_END.sub(b"\r\n", data)
    if data.startswith(b".") or b"\n." in data:
        data = _LEADING_DOT.sub(b"..", data)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def _line(line: str) -> str:
    """One command line, refused like smtplib's ``putcmd`` if it would be two."""
    if "\r" in line or "\n" in line:
        raise ValueError(f"a command line must not contain CR or LF: {line!r}")
    return line + "\r\n"


class _Commands:
    """The commands of one transaction up to DATA, and their replies in order.

    Pipelined, the commands go out together (by ``_PIPELINE_WINDOW``) before the first
    reply is read, and a refusal leaves replies owed (``owed``). Otherwise each command
    goes out when its reply is asked for, so none follows a refusal.
    MAIL and RCPT carry addresses already validated: smtplib's ``mail`` and ``rcpt``
    would parse them again (``email.utils.parseaddr``), which costs more than the rest
    of the client's side of a transaction.
    """

    def __init__(
        self, connection: smtplib.SMTP, lines: list[str], encoding: str, *, pipelined: bool
    ) -> None:
        self._connection = connection
        self._lines = lines
        self._encoding = encoding
        self._ahead = _PIPELINE_WINDOW if pipelined else 1
        self._sent = 0
        self._read = 0

    @property
    def owed(self) -> int:
        """Replies to commands sent that have not been read."""
        return self._sent - self._read

    def reply(self) -> tuple[int, bytes]:
        """The next command's reply, sending it (and, pipelined, those after it) first."""
        if self._sent == self._read:
            end = self._sent + self._ahead
            self._connection.send("".join(self._lines[self._sent : end]).encode(self._encoding))
            self._sent = min(end, len(self._lines))
        self._read += 1
        return self._connection.getreply()


def _address_literal(sock: socket.socket | None) -> str:
    """The EHLO name RFC 5321 asks for when the client has no meaningful domain name."""
    assert sock is not None  # noqa: S101 - called on a connected socket only
    address = str(sock.getsockname()[0]).partition("%")[0]
    return f"[IPv6:{address}]" if ":" in address else f"[{address}]"


class SmtpTransport(Transport):
    """Delivers over SMTP, keeping one connection for every message of a ``with`` block.

    ``ssl_context`` replaces the default context (``ssl.create_default_context`` with
    ``smtp.cafile``); certificates and host names are verified either way unless the
    given context says otherwise. ``local_hostname`` is the EHLO name; by default it is
    the address literal of the connection's local end (``[192.0.2.7]``), which needs
    no DNS lookup and is what RFC 5321 asks of a client without a meaningful name.
    """

    def __init__(
        self,
        smtp: SmtpSettings,
        *,
        ssl_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
    ) -> None:
        if not isinstance(smtp, SmtpSettings):
            raise TypeError(f"SmtpTransport needs SmtpSettings, not {type(smtp).__name__}")
        if local_hostname is not None and (
            has_control_character(local_hostname) or not local_hostname.strip()
        ):
            raise ConfigError(
                "local_hostname: must be a host name without CR, LF or NUL",
                field="local_hostname",
            )
        self.smtp = smtp
        self._local_hostname = local_hostname
        self._ssl_context = ssl_context
        if ssl_context is None and smtp.security is not Security.NONE:
            self._ssl_context = self._default_context(smtp.cafile)
        self._connection: smtplib.SMTP | None = None
        self._served = False  # whether the open connection has carried a transaction

    def __repr__(self) -> str:
        smtp = self.smtp
        return f"SmtpTransport({smtp.host}:{smtp.effective_port}, security={smtp.security.value})"

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context in use (``None`` under ``Security.NONE`` without one given)."""
        return self._ssl_context

    @property
    def _server(self) -> str:
        return f"{self.smtp.host}:{self.smtp.effective_port}"

    @staticmethod
    def _default_context(cafile: str | None) -> ssl.SSLContext:
        try:
            return ssl.create_default_context(cafile=cafile)
        except (OSError, ssl.SSLError) as error:
            reason = error.strerror or str(error)
            raise ConfigError(
                f"cafile: {cafile!r} cannot be loaded as a PEM bundle: {reason}", field="cafile"
            ) from None

    # --- the connection's life ---

    @override
    def open(self) -> None:
        """Connect, secure and log in, unless a connection is already open."""
        self._connected()

    def _connected(self) -> smtplib.SMTP:
        """The open connection, or a new one: connected, secured, logged in."""
        if self._connection is not None:
            return self._connection
        connection = self._connect()
        try:
            self._ehlo(connection)
            self._starttls(connection)
            self._login(connection)
        except BaseException:
            connection.close()
            raise
        logger.debug("connected to %s (security %s)", self._server, self.smtp.security.value)
        self._connection = connection
        self._served = False
        return connection

    @override
    def close(self) -> None:
        """Say QUIT and close the connection, if one is open."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            connection.quit()
        except (smtplib.SMTPException, OSError):
            connection.close()

    def _drop(self, connection: smtplib.SMTP) -> None:
        """Close a connection that is broken or out of step, so it is never reused."""
        connection.close()
        if self._connection is connection:
            self._connection = None

    # --- the transaction ---

    @override
    def deliver(self, envelope: Envelope) -> Delivery:
        """One SMTP transaction; opens a connection when none is open (``close`` ends it)."""
        connection, commands = self._mail_from(envelope)
        try:
            accepted, refused = self._rcpt(connection, envelope, commands)
            self._data(connection, envelope, commands)
        except DeliveryError:
            self._reset(connection, commands)
            raise
        except BaseException:
            self._drop(connection)  # out of step in a way RSET cannot be trusted to mend
            raise
        return Delivery(message_id=envelope.message_id, accepted=tuple(accepted), refused=refused)

    def _mail_from(self, envelope: Envelope) -> tuple[smtplib.SMTP, _Commands]:
        """MAIL FROM on the open connection, reopening once a kept one the server dropped."""
        reused = self._connection is not None and self._served
        try:
            return self._mail(self._connected(), envelope)
        except (ConnectionFailed, TemporaryFailure) as error:
            stale = isinstance(error, ConnectionFailed) or (
                error.reply is not None and error.reply.code == _SERVICE_CLOSING
            )
            if not (reused and stale and self._connection is None):
                raise
            logger.debug("%s closed the kept connection; reconnecting", self._server)
        return self._mail(self._connected(), envelope)

    def _reset(self, connection: smtplib.SMTP, commands: _Commands) -> None:
        """RSET after a failed transaction, so a kept connection is back in step."""
        self._settle(connection, commands)
        if self._connection is not connection:
            return
        try:
            code, _ = connection.rset()
        except (smtplib.SMTPException, OSError):
            code = 0
        if code != 250:
            self._drop(connection)

    def _settle(self, connection: smtplib.SMTP, commands: _Commands) -> None:
        """Read the replies still owed to pipelined commands after a refusal. A DATA
        answered 354 all the same gets the end of an empty message, never the message."""
        if self._connection is not connection or not commands.owed:
            return
        try:
            codes = [commands.reply()[0] for _ in range(commands.owed)]
            if codes[-1] == 354:
                connection.send(_END_OF_DATA)
                codes.append(connection.getreply()[0])
        except (smtplib.SMTPException, OSError):
            codes = []
        if not codes or _SERVICE_CLOSING in codes:
            self._drop(connection)

    # --- the steps ---

    @contextmanager
    def _step(self, connection: smtplib.SMTP, action: str) -> Iterator[None]:
        """Run one SMTP step, turning smtplib's and ssl's exceptions into ours."""
        try:
            yield
        except smtplib.SMTPResponseException as error:
            reply = _reply(error.smtp_code, error.smtp_error)
            if reply.code == _SERVICE_CLOSING:
                self._drop(connection)
            raise _by_code(f"{self._server} refused {action}: {reply}", reply) from error
        except OSError as error:  # smtplib's other exceptions, socket and ssl errors
            self._drop(connection)
            self._raise_broken(error, action, greeted=True)

    def _raise_broken(self, error: OSError, action: str, *, greeted: bool) -> NoReturn:
        server = self._server
        if _timed_out(error):
            seconds = f"{self.smtp.timeout:g}"
            if greeted:
                message = f"{server} stopped answering during {action} (timeout {seconds} s)"
                raise TemporaryFailure(message) from error
            message = f"{server} did not answer within the timeout of {seconds} s ({action})"
            raise ConnectionFailed(message) from error
        if isinstance(error, ssl.SSLCertVerificationError):
            message = f"{server}: TLS certificate not trusted: {error.verify_message}"
            raise TlsError(message) from error
        if isinstance(error, ssl.SSLError):
            reason = error.reason or str(error)
            raise TlsError(f"{server}: TLS handshake failed: {reason}") from error
        if isinstance(error, smtplib.SMTPServerDisconnected):
            raise ConnectionFailed(f"{server} closed the connection during {action}") from error
        reason = error.strerror or str(error)
        raise ConnectionFailed(f"{server}: {action} failed: {reason}") from error

    def _connect(self) -> smtplib.SMTP:
        # Given the host, smtplib connects and reads the greeting in the constructor, and
        # remembers the host as the TLS server name. The placeholder local_hostname keeps
        # it from calling socket.getfqdn(), which can block on DNS; the EHLO name is set
        # once the socket exists.
        smtp = self.smtp
        try:
            if smtp.security is Security.SSL:
                connection: smtplib.SMTP = smtplib.SMTP_SSL(
                    smtp.host,
                    smtp.effective_port,
                    local_hostname="localhost",
                    timeout=smtp.timeout,
                    context=self._ssl_context,
                )
            else:
                connection = smtplib.SMTP(
                    smtp.host,
                    smtp.effective_port,
                    local_hostname="localhost",
                    timeout=smtp.timeout,
                )
        except smtplib.SMTPResponseException as error:
            reply = _reply(error.smtp_code, error.smtp_error)
            message = f"{self._server} refused the connection: {reply}"
            raise ConnectionFailed(message, reply=reply, retryable=reply.is_transient) from error
        except OSError as error:  # smtplib closes what it opened before raising
            self._raise_broken(error, "connect", greeted=False)
        connection.local_hostname = self._local_hostname or _address_literal(connection.sock)
        return connection

    def _ehlo(self, connection: smtplib.SMTP) -> None:
        with self._step(connection, "EHLO"):
            connection.ehlo_or_helo_if_needed()

    def _starttls(self, connection: smtplib.SMTP) -> None:
        security = self.smtp.security
        if security not in _UPGRADES:
            return
        if not connection.has_extn("starttls"):
            if security is Security.STARTTLS:
                raise TlsError(
                    f"{self._server} does not offer STARTTLS, which security starttls "
                    "requires; nothing was sent"
                )
            if not self.smtp.has_credentials:
                logger.warning(
                    "%s does not offer STARTTLS; sending without encryption (security tls, "
                    "no credentials)",
                    self._server,
                )
            return  # _login refuses to send credentials over this plaintext connection
        with self._step(connection, "STARTTLS"):
            try:
                connection.starttls(context=self._ssl_context)
            except smtplib.SMTPResponseException as error:
                reply = _reply(error.smtp_code, error.smtp_error)
                message = f"{self._server} refused STARTTLS: {reply}"
                raise TlsError(message, reply=reply) from error
        self._ehlo(connection)

    def _login(self, connection: smtplib.SMTP) -> None:
        smtp = self.smtp
        if smtp.username is None or smtp.password is None:
            return
        if not isinstance(connection.sock, ssl.SSLSocket):
            if smtp.security is not Security.NONE:
                raise TlsError(
                    f"{self._server} does not offer STARTTLS, and credentials are never sent "
                    f"unencrypted (security {smtp.security.value}); use none to allow it"
                )
            logger.warning(
                "authenticating to %s as %r without encryption (security none)",
                self._server,
                smtp.username,
            )
        if not connection.has_extn("auth"):
            raise AuthenticationFailed(
                f"{self._server} does not offer AUTH, but username and password are set"
            )
        failure: AuthenticationFailed | None = None
        secret = smtp.password.reveal()
        try:
            with self._step(connection, "AUTH"):
                try:
                    connection.login(smtp.username, secret)
                except smtplib.SMTPResponseException as error:
                    # A server may repeat what it was sent: the reply never keeps the password.
                    text = _without_credentials(error.smtp_error, smtp.username, secret)
                    reply = _reply(error.smtp_code, text)
                    message = (
                        f"{self._server} refused the credentials for {smtp.username!r}: {reply}"
                    )
                    failure = AuthenticationFailed(
                        message, reply=reply, retryable=reply.is_transient
                    )
                except smtplib.SMTPServerDisconnected:
                    raise  # a broken connection, not a refusal: _step makes it ConnectionFailed
                except smtplib.SMTPException as error:  # smtplib's own text, never the server's
                    message = f"{self._server} refused AUTH for {smtp.username!r}: {error}"
                    failure = AuthenticationFailed(message)
        finally:
            del secret  # so no capture of frame locals (error trackers) records it
        if failure is not None:
            raise failure  # outside the except: no chained exception holds the server's reply

    def _mail(
        self, connection: smtplib.SMTP, envelope: Envelope
    ) -> tuple[smtplib.SMTP, _Commands]:
        self._served = True
        options = ""
        encoding = "ascii"
        if envelope.needs_smtputf8:
            if not connection.has_extn("smtputf8"):
                addresses = (envelope.sender, *envelope.recipients)
                address = next(filter(needs_smtputf8, addresses), "an address in the headers")
                raise PermanentFailure(
                    f"{address} needs SMTPUTF8, which the server {self._server} does not offer"
                )
            options, encoding = " SMTPUTF8", "utf-8"
        if not envelope.raw.isascii() and connection.has_extn("8bitmime"):
            options += " BODY=8BITMIME"
        lines = [
            _line(f"MAIL FROM:<{wire_address(envelope.sender)}>{options}"),
            *(_line(f"RCPT TO:<{wire_address(address)}>") for address in envelope.recipients),
            _line("DATA"),
        ]
        pipelined = connection.has_extn("pipelining")
        commands = _Commands(connection, lines, encoding, pipelined=pipelined)
        with self._step(connection, "MAIL FROM"):
            code, text = commands.reply()
        if code != 250:
            if code != _SERVICE_CLOSING:  # else the server is closing: nothing to read
                self._settle(connection, commands)
            reply = _reply(code, text)
            self._refused_transaction(connection, f"MAIL FROM:<{envelope.sender}>", reply)
        return connection, commands

    def _rcpt(
        self, connection: smtplib.SMTP, envelope: Envelope, commands: _Commands
    ) -> tuple[list[str], dict[str, Reply]]:
        accepted: list[str] = []
        refused: dict[str, Reply] = {}
        for address in envelope.recipients:
            with self._step(connection, "RCPT TO"):
                code, text = commands.reply()
            if code in (250, 251):
                accepted.append(address)
                continue
            reply = _reply(code, text)
            if code == _SERVICE_CLOSING:
                self._refused_transaction(connection, f"RCPT TO:<{address}>", reply)
            refused[address] = reply
        if not accepted:
            first = next(iter(refused.values()))
            count = len(refused)
            message = f"{self._server} refused every recipient ({count}); the first: {first}"
            raise _by_code(message, first, refused)
        return accepted, refused

    def _data(self, connection: smtplib.SMTP, envelope: Envelope, commands: _Commands) -> None:
        with self._step(connection, "DATA"):
            code, text = commands.reply()
        if code != 354:
            self._refused_transaction(connection, "DATA", _reply(code, text))
        with self._step(connection, "the message content"):
            connection.send(_dot_stuffed(envelope.raw) + _END_OF_DATA)
        # From here on the server may have accepted the message: never send it again.
        try:
            code, text = connection.getreply()
        except OSError as error:  # smtplib's exceptions included
            self._drop(connection)
            raise ConnectionFailed(
                f"{self._server} did not confirm the message after the end of DATA; it may "
                "have been delivered, so it is not sent again",
                retryable=False,
            ) from error
        if code != 250:
            self._refused_transaction(connection, "the message", _reply(code, text))

    def _refused_transaction(
        self, connection: smtplib.SMTP, action: str, reply: Reply
    ) -> NoReturn:
        if reply.code == _SERVICE_CLOSING:
            self._drop(connection)
        raise _by_code(f"{self._server} refused {action}: {reply}", reply)
