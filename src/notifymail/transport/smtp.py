"""The SMTP transport: a blocking driver (``socket`` and ``ssl``) over the protocol core.

Everything SMTP (EHLO, STARTTLS, AUTH, pipelined MAIL/RCPT/DATA, dot-stuffing, what a
reply or a broken connection means) is `notifymail.protocol`'s, shared with the
asyncio driver. This module only moves bytes: it connects, writes what the core has
to send, reads within the core's deadline, wraps the socket in TLS when told to, and
keeps one connection for every message of a ``with`` block. Two promises are kept
here too: a connection that broke or fell out of step is closed, never reused, and a
kept connection the server dropped is reopened once before the next MAIL FROM.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import ssl
from collections.abc import Callable
from typing import ClassVar

from typing_extensions import override

from notifymail.errors import ConfigError
from notifymail.protocol import (
    NEED_DATA,
    Delivered,
    Event,
    Failed,
    Ready,
    SmtpClient,
    StartTls,
    State,
    check_options,
)
from notifymail.settings import Security, SmtpSettings
from notifymail.transport.base import Transport
from notifymail.values import Delivery, Envelope

__all__ = ["SmtpTransport"]

logger = logging.getLogger("notifymail.transport.smtp")

_READ_SIZE = 65536
# A socket's timeout is changed only when it is off by more than this (seconds): each
# change is a system call, and a read would otherwise pay one for nothing.
_SLACK = 0.01


def default_ssl_context(cafile: str | None) -> ssl.SSLContext:
    """``ssl.create_default_context`` with ``cafile``, or a ConfigError naming it."""
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as error:
        reason = error.strerror or str(error)
        raise ConfigError(
            f"cafile: {cafile!r} cannot be loaded as a PEM bundle: {reason}", field="cafile"
        ) from None


class _Session:
    """One connection: a socket, and the protocol core speaking over it."""

    def __init__(
        self, sock: socket.socket, client: SmtpClient, context: ssl.SSLContext | None
    ) -> None:
        self.sock = sock
        self.client = client
        self._context = context
        self._timeout = sock.gettimeout()

    @property
    def closed(self) -> bool:
        return self.client.state is State.CLOSED

    def next_event(self) -> Event:
        """Write and read until the core has an event for the caller."""
        client = self.client
        sock = self.sock
        try:
            while True:
                if client.has_data_to_send:
                    self._set_timeout(client.smtp.timeout)
                    # Straight from the core to the socket: AUTH's bytes are in no variable.
                    sock.sendall(client.data_to_send())
                event = client.next_event()
                if event is NEED_DATA:
                    if client.has_data_to_send:
                        continue  # a reply led to a command: write it before reading
                    time_left = client.time_left()
                    if time_left <= 0:
                        raise TimeoutError("timed out")
                    self._set_timeout(time_left)
                    client.receive_data(sock.recv(_READ_SIZE))
                elif isinstance(event, StartTls):
                    sock = self._wrap()
                    client.tls_started()
                else:
                    return event
        except OSError as error:  # timeouts, resets, TLS and certificate errors
            client.connection_failed(error)
            return client.next_event()

    def _set_timeout(self, seconds: float) -> None:
        """Bound the next socket operation by ``seconds``, give or take ``_SLACK``."""
        if self._timeout is None or abs(self._timeout - seconds) > _SLACK:
            self.sock.settimeout(seconds)
            self._timeout = seconds

    def _wrap(self) -> ssl.SSLSocket:
        assert self._context is not None  # noqa: S101 - security other than none has one
        self._set_timeout(self.client.smtp.timeout)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.client.smtp.host)
        return self.sock

    def transact(self, envelope: Envelope, pace: Callable[[int], None]) -> Delivered | Failed:
        """One envelope's transaction; ``pace`` runs right before MAIL FROM is written."""
        self.client.mail(envelope)
        if self.client.has_data_to_send:
            pace(len(envelope.recipients))
        event = self.next_event()
        assert isinstance(event, (Delivered, Failed))  # noqa: S101 - what mail() ends in
        return event

    def quit(self) -> None:
        """QUIT, wait for its reply within the timeout, close."""
        try:
            self.client.quit()
            self.next_event()
        finally:
            self.close()

    def close(self) -> None:
        self.sock.close()


class SmtpTransport(Transport):
    """Delivers over SMTP, keeping one connection for every message of a ``with`` block.

    ``ssl_context`` replaces the default context (``ssl.create_default_context`` with
    ``smtp.cafile``); certificates and host names are verified either way unless the
    given context says otherwise. ``local_hostname`` is the EHLO name; by default it is
    the address literal of the connection's local end (``[192.0.2.7]``), which needs
    no DNS lookup and is what RFC 5321 asks of a client without a meaningful name.
    ``oauth2_token`` makes AUTH XOAUTH2 (Gmail, Microsoft 365): it is called at each
    login for the current access token, sent with ``smtp.username``; the password is
    then not used.
    """

    paces_at_the_wire: ClassVar[bool] = True

    def __init__(
        self,
        smtp: SmtpSettings,
        *,
        ssl_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
        oauth2_token: Callable[[], str] | None = None,
    ) -> None:
        check_options(smtp, local_hostname=local_hostname, oauth2_token=oauth2_token)
        self.smtp = smtp
        self._local_hostname = local_hostname
        self._oauth2_token = oauth2_token
        self._ssl_context = ssl_context
        if ssl_context is None and smtp.security is not Security.NONE:
            self._ssl_context = default_ssl_context(smtp.cafile)
        self._session: _Session | None = None

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

    # --- the connection's life ---

    @override
    def open(self) -> None:
        """Connect, secure and log in, unless a connection is already open."""
        self._connected()

    @override
    def close(self) -> None:
        """Say QUIT and close the connection, if one is open."""
        session, self._session = self._session, None
        if session is not None:
            session.quit()

    @override
    def probe(self, security: Security | None = None) -> bool:
        """Connect, secure and log in on a connection of its own, then QUIT; send nothing.

        ``security`` tries another mode on the same server (``smtp.port``, or that
        mode's default port when ``port`` is not set).
        """
        smtp = self.smtp if security is None else dataclasses.replace(self.smtp, security=security)
        other = SmtpTransport(
            smtp,
            ssl_context=self._ssl_context,
            local_hostname=self._local_hostname,
            oauth2_token=self._oauth2_token,
        )
        other._connect().quit()
        return True

    def _connected(self) -> _Session:
        """The open connection, or a new one: connected, secured, logged in."""
        if self._session is None:
            self._session = self._connect()
        return self._session

    def _connect(self) -> _Session:
        smtp = self.smtp
        logger.info("connecting to %s (security %s)", self._server, smtp.security.value)
        client = SmtpClient(
            smtp,
            local_hostname=self._local_hostname,
            oauth2_token=self._oauth2_token,
            logger=logger,
        )
        try:
            sock = socket.create_connection((smtp.host, smtp.effective_port), smtp.timeout)
        except OSError as error:
            client.connection_failed(error)
            event = client.next_event()
        else:
            session = _Session(sock, client, self._ssl_context)
            try:
                client.connected(str(sock.getsockname()[0]))
                event = session.next_event()
            except BaseException:
                session.close()
                raise
            if isinstance(event, Ready):
                logger.debug("connected to %s (security %s)", self._server, smtp.security.value)
                return session
            session.close()
        assert isinstance(event, Failed)  # noqa: S101 - setting up ends in Ready or Failed
        raise event.error

    def _forget(self, session: _Session) -> None:
        """Close a connection that is broken or out of step, so it is never reused."""
        session.close()
        if self._session is session:
            self._session = None

    # --- the transaction ---

    @override
    def deliver(self, envelope: Envelope) -> Delivery:
        """One SMTP transaction; opens a connection when none is open (``close`` ends it)."""
        session = self._connected()
        try:
            event = session.transact(envelope, self._pace)
            if isinstance(event, Failed) and event.reconnect:
                self._forget(session)
                logger.debug("%s closed the kept connection; reconnecting", self._server)
                session = self._connected()
                event = session.transact(envelope, self._pace)
        except BaseException:
            self._forget(session)  # out of step in a way nothing can be trusted to mend
            raise
        if isinstance(event, Failed):
            if session.closed:
                self._forget(session)
            raise event.error
        return event.delivery
