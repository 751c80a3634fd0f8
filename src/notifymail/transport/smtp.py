"""The SMTP transport: a blocking driver (``socket`` and ``ssl``) over the protocol core.

Everything SMTP (EHLO, STARTTLS, AUTH, pipelined MAIL/RCPT/DATA, dot-stuffing, what a
reply or a broken connection means) is `notifymail.protocol`'s, and what the pool of
connections decides is ``notifymail.transport._pool``'s, both shared with the asyncio
driver. This module only moves bytes and waits: it connects, writes what the core has
to send, reads within the core's deadline, wraps the socket in TLS when told to, and
lets threads wait for a free connection. Two promises are kept here too: a connection
that broke or fell out of step is closed, never reused, and a kept connection the
server dropped is reopened once before the next MAIL FROM.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from typing import ClassVar, Generic, TypeVar

from typing_extensions import Self, override

from notifymail.errors import ConfigError, DeliveryError
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
from notifymail.transport._pool import Lane, Limits, Pool, Single, Slot
from notifymail.transport.base import AsyncFeed, Feed, Transport, _Lifecycle
from notifymail.values import Delivery, Envelope

__all__ = ["SmtpTransport"]

logger = logging.getLogger("notifymail.transport.smtp")

C = TypeVar("C")

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


class SmtpOptions(_Lifecycle, Generic[C]):
    """What both SMTP transports are given and do alike: the settings, the TLS context,
    the EHLO name and the OAuth2 token checked once; the pool of connections (``C``);
    the core each connection speaks; how an envelope's outcome is logged and reported."""

    paces_at_the_wire: ClassVar[bool] = True
    _limits: ClassVar[Limits] = Limits()

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
        self._pool: Pool[C] = Pool(smtp.max_connections, self._limits)

    def __repr__(self) -> str:
        smtp = self.smtp
        name = type(self).__name__
        return f"{name}({smtp.host}:{smtp.effective_port}, security={smtp.security.value})"

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context in use (``None`` under ``Security.NONE`` without one given)."""
        return self._ssl_context

    @property
    @override
    def concurrency(self) -> int:
        """``smtp.max_connections``: how many envelopes go out at once."""
        return self.smtp.max_connections

    @property
    def _server(self) -> str:
        return f"{self.smtp.host}:{self.smtp.effective_port}"

    def new_client(self, log: logging.Logger) -> SmtpClient:
        """The protocol core for a new connection, warning through ``log``."""
        return SmtpClient(
            self.smtp,
            local_hostname=self._local_hostname,
            oauth2_token=self._oauth2_token,
            logger=log,
        )

    def settle(
        self,
        feed: Feed | AsyncFeed,
        envelope: Envelope,
        outcome: Delivery | DeliveryError,
        *,
        logged: bool,
    ) -> None:
        """Report an envelope's outcome to ``feed``, logged as ``send`` logs it."""
        if logged:
            if isinstance(outcome, DeliveryError):
                self._log_failure(envelope, outcome)
            else:
                self._log_delivery(outcome)
        feed.done(envelope, outcome)


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

    def next_event(
        self, ahead: Callable[[], object] | None = None, idle: Callable[[], object] | None = None
    ) -> Event:
        """Write and read until the core has an event for the caller.

        ``ahead`` is called when the core could queue the next envelope behind the
        message it is about to send (``can_mail_ahead``), before that is written;
        ``idle`` before each wait for the server.
        """
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
                    if ahead is not None and client.can_mail_ahead:
                        ahead()
                    if client.has_data_to_send:
                        continue  # a reply led to a command: write it before reading
                    if idle is not None:
                        idle()
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

    def quit(self) -> None:
        """QUIT, wait for its reply within the timeout, close."""
        try:
            self.client.quit()
            self.next_event()
        finally:
            self.close()

    def close(self) -> None:
        self.sock.close()


class SmtpTransport(SmtpOptions["_Session"], Transport):
    """Delivers over SMTP through up to ``smtp.max_connections`` connections.

    Connections are kept between messages for as long as the transport is open (a
    ``with`` block, or one ``send``), each for at most 100 messages and 300 seconds;
    one idle for 30 seconds is closed before the next message. With
    ``max_connections`` above 1, that many threads deliver at once, each on a
    connection of its own (``concurrency``). Where the server offers PIPELINING, a
    mailer's next envelope follows the message before it in the same write.

    ``ssl_context`` replaces the default context (``ssl.create_default_context`` with
    ``smtp.cafile``); certificates and host names are verified either way unless the
    given context says otherwise. ``local_hostname`` is the EHLO name; by default it is
    the address literal of the connection's local end (``[192.0.2.7]``), which needs
    no DNS lookup and is what RFC 5321 asks of a client without a meaningful name.
    ``oauth2_token`` makes AUTH XOAUTH2 (Gmail, Microsoft 365): it is called at each
    login for the current access token, sent with ``smtp.username``; the password is
    then not used.
    """

    # Guards the pool; notified at each release. Made here, not in __init__: every
    # instance needs one, and a transport needs no other state of its own.
    _vacancy: threading.Condition

    def __new__(cls, *args: object, **kwargs: object) -> Self:
        instance = super().__new__(cls, *args, **kwargs)
        instance._vacancy = threading.Condition()
        return instance

    # --- the connections' life ---

    @override
    def open(self) -> None:
        """Connect, secure and log in, unless a connection is already open."""
        self._checkin(self._checkout(), broken=False)

    @override
    def close(self) -> None:
        """Say QUIT on every connection kept, and close them."""
        with self._vacancy:
            idle = self._pool.drain()
        for slot in idle:
            slot.connection.quit()

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

    def _checkout(self) -> Slot[_Session]:
        """A kept connection, or a new one (connected, secured, logged in); waits while
        ``max_connections`` are in use."""
        with self._vacancy:
            expired = self._pool.expired()
            while (got := self._pool.acquire()) is False:
                self._vacancy.wait()
        for slot in expired:
            slot.connection.quit()
        if not isinstance(got, bool):
            return got
        try:
            session = self._connect()
        except BaseException:
            with self._vacancy:
                self._pool.open_failed()
                self._vacancy.notify()
            raise
        with self._vacancy:
            return self._pool.opened(session)

    def _checkin(self, slot: Slot[_Session], *, broken: bool) -> None:
        """Keep the connection for the next envelope, or close it (QUIT when it is in step)."""
        with self._vacancy:
            kept = self._pool.release(slot, broken=broken)
            self._vacancy.notify()
        if kept:
            return
        if broken:
            slot.connection.close()
        else:
            logger.debug("%s: a connection served its time; closing it", self._server)
            slot.connection.quit()

    def _connect(self) -> _Session:
        smtp = self.smtp
        logger.info("connecting to %s (security %s)", self._server, smtp.security.value)
        client = self.new_client(logger)
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

    # --- the transactions ---

    @override
    def deliver(self, envelope: Envelope) -> Delivery:
        """One SMTP transaction on a kept connection or a new one."""
        single = _Single(envelope)
        self._stream(single, logged=False)
        return single.result()

    @override
    def _deliver_feed(self, feed: Feed) -> None:
        """A mailer's envelopes, each following the one before on the same connection."""
        with self._slot():
            self._stream(feed, logged=True)

    def _stream(self, feed: Feed, *, logged: bool) -> None:
        """Send what ``feed`` hands out, on one connection at a time, until it is dry."""
        lane = Lane()
        dry = False
        while not dry and (envelope := lane.again() or feed.next()):
            self._is_open = True  # close() runs when the outermost block ends
            try:
                slot = self._checkout()
            except DeliveryError as error:
                self.settle(feed, envelope, error, logged=logged)
                continue
            broken = True
            try:
                dry = self._run(slot, envelope, lane, feed, logged=logged)
                broken = slot.connection.closed
            finally:
                self._checkin(slot, broken=broken)

    def _run(
        self,
        slot: Slot[_Session],
        envelope: Envelope,
        lane: Lane,
        feed: Feed,
        *,
        logged: bool,
    ) -> bool:
        """Send ``envelope``, then what ``feed`` has, over one connection until the feed
        is dry (True) or the connection must go (False)."""
        session = slot.connection

        def ahead() -> None:
            if self._pool.has_room(slot) and (later := feed.ready()):
                self._start(slot, later, lane)

        self._start(slot, envelope, lane)
        while lane.busy:
            event = session.next_event(ahead, feed.prepare)
            assert isinstance(event, (Delivered, Failed))  # noqa: S101 - what mail() ends in
            if (settled := lane.ended(event)) is not None:
                self.settle(feed, *settled, logged=logged)
            else:
                logger.debug("%s closed the kept connection; sending again", self._server)
            if lane.busy or session.closed or not self._pool.has_room(slot):
                continue
            if (later := feed.next()) is None:
                return True
            self._start(slot, later, lane)
        return False

    def _start(self, slot: Slot[_Session], envelope: Envelope, lane: Lane) -> None:
        lane.started(envelope)
        slot.messages += 1
        if slot.connection.client.mail(envelope):
            self._pace(len(envelope.recipients))


class _Single(Single):
    """``Single`` as a blocking feed."""

    def next(self) -> Envelope | None:
        return self.take()
