"""The SMTP transport: a blocking driver (``socket`` and ``ssl``) over the protocol core.

Everything SMTP (EHLO, STARTTLS, AUTH, pipelined MAIL/RCPT/DATA, dot-stuffing, what a
reply or a broken connection means) is `notifymail.protocol`'s; the steps from
envelopes to outcomes (the pool's decisions, pipelining across messages, a kept
connection the server dropped reopened once before the next MAIL FROM, a connection
that broke or fell out of step closed, never reused) are
``notifymail.transport._driver``'s, shared with the asyncio driver. This module only
performs what those steps ask, in the calling thread: it connects, writes, reads within
the core's deadline, wraps the socket in TLS, and lets threads wait for a free
connection.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any, TypeVar

from typing_extensions import Self, override

from notifymail.protocol import SmtpClient
from notifymail.settings import Security
from notifymail.transport._driver import (
    ACQUIRE,
    FREED,
    OPEN,
    TAKE,
    Checkin,
    Close,
    Pace,
    Read,
    Secure,
    SmtpDriver,
    Steps,
)
from notifymail.transport._pool import Single
from notifymail.transport.base import PACER, Feed, Transport
from notifymail.values import Delivery, Envelope

__all__ = ["SmtpTransport"]

T = TypeVar("T")

_READ_SIZE = 65536
# A socket's timeout is changed only when it is off by more than this (seconds): each
# change is a system call, and a read would otherwise pay one for nothing.
_SLACK = 0.01


class _Session:
    """One connection: a socket, and the protocol core speaking over it."""

    def __init__(self, sock: socket.socket, client: SmtpClient) -> None:
        self.sock = sock
        self.client = client
        self._timeout = sock.gettimeout()

    def set_timeout(self, seconds: float) -> None:
        """Bound the next socket operation by ``seconds``, give or take ``_SLACK``."""
        if self._timeout is None or abs(self._timeout - seconds) > _SLACK:
            self.sock.settimeout(seconds)
            self._timeout = seconds


class SmtpTransport(SmtpDriver[_Session], Transport):
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
    _logger = logging.getLogger("notifymail.transport.smtp")

    # Guards the pool; notified at each release. Made here, not in __init__: every
    # instance needs one, and a transport needs no other state of its own.
    _vacancy: threading.Condition

    def __new__(cls, *args: object, **kwargs: object) -> Self:
        instance = super().__new__(cls, *args, **kwargs)
        instance._vacancy = threading.Condition()
        return instance

    @override
    def open(self) -> None:
        """Connect, secure and log in, unless a connection is already open."""
        self._drive(self._open())

    @override
    def close(self) -> None:
        """Say QUIT on every connection kept, and close them."""
        with self._vacancy:
            idle = self._pool.drain()
        self._drive(self._quit_all(idle))

    @override
    def probe(self, security: Security | None = None) -> bool:
        """Connect, secure and log in on a connection of its own, then QUIT; send nothing.

        ``security`` tries another mode on the same server (``smtp.port``, or that
        mode's default port when ``port`` is not set).
        """
        other = self._sibling(SmtpTransport, security)
        return other._drive(other._probe())

    @override
    def deliver(self, envelope: Envelope) -> Delivery:
        """One SMTP transaction on a kept connection or a new one."""
        single = _Single(envelope)
        self._drive(self._stream(single, logged=False, paced=PACER.get() is not None), single)
        return single.result()

    @override
    def _deliver_feed(self, feed: Feed) -> None:
        """A mailer's envelopes, each following the one before on the same connection."""
        with self._slot():
            self._drive(self._stream(feed, logged=True, paced=PACER.get() is not None), feed)

    def _drive(self, steps: Steps[T], feed: Feed | None = None) -> T:
        """Run ``steps`` to their end, performing each request in this thread."""
        result: Any = None
        error: BaseException | None = None
        while True:
            try:
                request = steps.send(result) if error is None else steps.throw(error)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]  # the steps' T
            result = error = None
            try:
                # A read (and the write before it) comes with every reply: done here.
                if type(request) is Read:
                    session: _Session = request.connection
                    if session.client.has_data_to_send:
                        session.set_timeout(self.smtp.timeout)
                        session.sock.sendall(session.client.data_to_send())
                    if request.idle is not None:
                        request.idle()
                    session.set_timeout(request.seconds)
                    result = session.sock.recv(_READ_SIZE)
                else:
                    result = self._perform(request, feed)
            except BaseException as failure:
                error = failure

    def _perform(self, request: object, feed: Feed | None) -> object:
        """Do what ``request`` asks, but a read (see ``_drive`` and
        ``notifymail.transport._driver``); its result."""
        if isinstance(request, Pace):
            self._pace(request.recipients)
        elif request is TAKE:
            assert feed is not None  # noqa: S101 - only a stream takes, and it has a feed
            return feed.next()
        elif request is ACQUIRE:
            with self._vacancy:
                expired = self._pool.expired()
                while (got := self._pool.acquire()) is False:
                    self._vacancy.wait()
            return expired, got
        elif isinstance(request, Checkin):
            with self._vacancy:
                kept = self._pool.release(request.slot, broken=request.broken)
                self._vacancy.notify()
            return kept
        elif request is FREED:
            with self._vacancy:
                self._pool.open_failed()
                self._vacancy.notify()
        elif request is OPEN:
            return self._connect_socket()
        elif isinstance(request, Secure):
            session = request.connection
            assert self._ssl_context is not None  # noqa: S101 - security other than none has one
            session.set_timeout(self.smtp.timeout)
            host = self.smtp.host
            session.sock = self._ssl_context.wrap_socket(session.sock, server_hostname=host)
        elif isinstance(request, Close):
            request.connection.sock.close()
        else:
            raise AssertionError(f"no such request: {request!r}")
        return None

    def _connect_socket(self) -> _Session:
        smtp = self.smtp
        sock = socket.create_connection((smtp.host, smtp.effective_port), smtp.timeout)
        try:
            client = self.new_client()
            client.connected(str(sock.getsockname()[0]))
        except BaseException:
            sock.close()
            raise
        return _Session(sock, client)


class _Single(Single):
    """``Single`` as a blocking feed."""

    def next(self) -> Envelope | None:
        return self.take()
