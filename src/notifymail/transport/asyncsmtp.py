"""The asyncio SMTP transport: a driver on asyncio streams over the same protocol core.

Everything SMTP is ``notifymail.protocol``'s and everything the pool decides is
``notifymail.transport._pool``'s, exactly as for the blocking ``SmtpTransport``; this
module only moves bytes without blocking the event loop: ``asyncio.open_connection``
(names resolved by the loop's resolver), reads bounded by the core's deadline, writes,
``start_tls`` for SSL and STARTTLS, and tasks that wait on an ``asyncio.Condition`` for
a free connection. No thread is started and no blocking socket call is made.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from typing_extensions import override

from notifymail.errors import DeliveryError
from notifymail.protocol import NEED_DATA, Delivered, Event, Failed, Ready, StartTls, State
from notifymail.settings import Security
from notifymail.transport._pool import Lane, Single, Slot
from notifymail.transport.base import AsyncFeed, AsyncTransport
from notifymail.transport.smtp import SmtpOptions
from notifymail.values import Delivery, Envelope

__all__ = ["AsyncSmtpTransport"]

logger = logging.getLogger("notifymail.transport.asyncsmtp")

T = TypeVar("T")

# More than a StreamReader ever buffers (twice its limit, plus one chunk from the
# socket), so one read takes everything received: nothing that arrived in plaintext can
# stay behind in the reader across a STARTTLS upgrade.
_READ_SIZE = 1 << 20

if sys.version_info >= (3, 11):

    async def _within(seconds: float, awaitable: Awaitable[T]) -> T:
        """``awaitable``, or TimeoutError after ``seconds``."""
        async with asyncio.timeout(seconds):
            return await awaitable

else:

    async def _within(seconds: float, awaitable: Awaitable[T]) -> T:
        """``awaitable``, or TimeoutError after ``seconds``."""
        try:
            return await asyncio.wait_for(awaitable, seconds)
        except asyncio.TimeoutError:  # not yet the built-in TimeoutError on 3.10
            raise TimeoutError("timed out") from None


class _Connection:
    """One connection: a stream pair, and the protocol core speaking over it."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        options: SmtpOptions[_Connection],
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.client = options.new_client(logger)
        self._options = options
        # The deadline of the read under way, watched by one timer that is moved only
        # when it goes off early: a timeout per read would cost a timer per reply.
        self._deadline = 0.0
        self._reading: asyncio.Task[object] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._expired = False

    @property
    def closed(self) -> bool:
        return self.client.state is State.CLOSED

    async def next_event(
        self,
        ahead: Callable[[], Awaitable[None]] | None = None,
        idle: Callable[[], object] | None = None,
    ) -> Event:
        """Write and read until the core has an event for the caller.

        ``ahead`` is awaited when the core could queue the next envelope behind the
        message it is about to send (``can_mail_ahead``), before that is written;
        ``idle`` is called before each wait for the server.
        """
        client = self.client
        try:
            while True:
                if client.has_data_to_send:
                    # Straight from the core to the stream: AUTH's bytes are in no variable.
                    self.writer.write(client.data_to_send())
                    if self.writer.transport.get_write_buffer_size():
                        await _within(client.smtp.timeout, self.writer.drain())
                event = client.next_event()
                if event is NEED_DATA:
                    if ahead is not None and client.can_mail_ahead:
                        await ahead()
                    if client.has_data_to_send:
                        continue  # a reply led to a command: write it before reading
                    if idle is not None:
                        idle()
                    time_left = client.time_left()
                    if time_left <= 0:
                        raise TimeoutError("timed out")
                    client.receive_data(await self._read(time_left))
                elif isinstance(event, StartTls):
                    await _within(client.smtp.timeout, self._start_tls())
                    client.tls_started()
                else:
                    return event
        except OSError as error:  # timeouts, resets, TLS and certificate errors
            client.connection_failed(error)
            return client.next_event()

    async def _read(self, seconds: float) -> bytes:
        """What the server sent next (b"" once it closed), or TimeoutError after ``seconds``."""
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + seconds
        if self._watchdog is None:
            self._watchdog = loop.call_at(self._deadline, self._watch)
        task = self._reading = asyncio.current_task()
        try:
            return await self.reader.read(_READ_SIZE)
        except asyncio.CancelledError:
            if not self._expired:
                raise
            self._expired = False
            if sys.version_info >= (3, 11) and task is not None:
                task.uncancel()  # the cancellation was the watchdog's, and ends here
            raise TimeoutError("timed out") from None
        finally:
            self._reading = None

    def _watch(self) -> None:
        """The watchdog went off: cancel the read if its deadline has passed."""
        self._watchdog = None
        task = self._reading
        if task is None:  # no read under way: the next one sets the watchdog again
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._deadline:
            self._watchdog = loop.call_at(self._deadline, self._watch)
            return
        self._expired = True
        task.cancel()

    async def _start_tls(self) -> None:
        context = self._options.ssl_context
        assert context is not None  # noqa: S101 - security other than none has one
        host = self.client.smtp.host
        if sys.version_info >= (3, 11):
            await self.writer.start_tls(context, server_hostname=host)
            return
        # Python 3.10: StreamWriter.start_tls does not exist yet. The streams that read
        # and write plaintext are left behind, new ones are put on the TLS transport.
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        transport = await loop.start_tls(
            self.writer.transport, protocol, context, server_hostname=host
        )
        if transport is None:  # the connection closed during the handshake
            raise ConnectionResetError("the connection closed during the TLS handshake")
        protocol.connection_made(transport)
        self.reader = reader
        self.writer = asyncio.StreamWriter(transport, protocol, reader, loop)

    async def quit(self) -> None:
        """QUIT, wait for its reply within the timeout, close."""
        try:
            self.client.quit()
            await self.next_event()
        finally:
            await self.close()

    async def close(self) -> None:
        """Close the connection; a TLS goodbye is awaited within the timeout at most."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        writer = self.writer
        writer.close()
        with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
            await _within(self.client.smtp.timeout, writer.wait_closed())


class AsyncSmtpTransport(SmtpOptions["_Connection"], AsyncTransport):
    """Delivers over SMTP from asyncio code, through up to ``smtp.max_connections``
    connections, keeping every promise of [`SmtpTransport`][notifymail.SmtpTransport]
    (security modes, certificate checks, timeouts, pipelining, SMTPUTF8, never twice
    after the end of DATA, per-recipient results).

    It never blocks the event loop: connections are asyncio streams, waits are awaited,
    and no thread is started. With ``max_connections`` above 1, that many tasks deliver
    at once, each on a connection of its own (``concurrency``). The options are those
    of ``SmtpTransport``; ``oauth2_token`` is called on the event loop, so it should
    return a token it already holds. Creating one needs no running event loop.
    """

    _condition: asyncio.Condition | None = None  # made in the loop, on first use

    # --- the connections' life ---

    @override
    async def open(self) -> None:
        """Connect, secure and log in, unless a connection is already open."""
        await self._checkin(await self._checkout(), broken=False)

    @override
    async def close(self) -> None:
        """Say QUIT on every connection kept, and close them."""
        for slot in self._pool.drain():
            await slot.connection.quit()

    @override
    async def probe(self, security: Security | None = None) -> bool:
        """Connect, secure and log in on a connection of its own, then QUIT; send nothing.

        ``security`` tries another mode on the same server (``smtp.port``, or that
        mode's default port when ``port`` is not set).
        """
        smtp = self.smtp if security is None else dataclasses.replace(self.smtp, security=security)
        other = AsyncSmtpTransport(
            smtp,
            ssl_context=self._ssl_context,
            local_hostname=self._local_hostname,
            oauth2_token=self._oauth2_token,
        )
        await (await other._connect()).quit()
        return True

    def _vacancy(self) -> asyncio.Condition:
        if self._condition is None:
            self._condition = asyncio.Condition()
        return self._condition

    async def _checkout(self) -> Slot[_Connection]:
        """A kept connection, or a new one (connected, secured, logged in); waits while
        ``max_connections`` are in use."""
        vacancy = self._vacancy()
        async with vacancy:
            expired = self._pool.expired()
            while (got := self._pool.acquire()) is False:
                await vacancy.wait()
        for slot in expired:
            await slot.connection.quit()
        if not isinstance(got, bool):
            return got
        try:
            connection = await self._connect()
        except BaseException:
            self._pool.open_failed()
            await self._notify()
            raise
        return self._pool.opened(connection)

    async def _checkin(self, slot: Slot[_Connection], *, broken: bool) -> None:
        """Keep the connection for the next envelope, or close it (QUIT when it is in step)."""
        kept = self._pool.release(slot, broken=broken)
        await self._notify()
        if kept:
            return
        if broken:
            await slot.connection.close()
        else:
            logger.debug("%s: a connection served its time; closing it", self._server)
            await slot.connection.quit()

    async def _notify(self) -> None:
        vacancy = self._vacancy()
        async with vacancy:
            vacancy.notify()

    async def _connect(self) -> _Connection:
        smtp = self.smtp
        logger.info("connecting to %s (security %s)", self._server, smtp.security.value)
        try:
            reader, writer = await _within(
                smtp.timeout, asyncio.open_connection(smtp.host, smtp.effective_port)
            )
        except OSError as error:
            client = self.new_client(logger)
            client.connection_failed(error)
            event = client.next_event()
        else:
            connection = _Connection(reader, writer, self)
            try:
                connection.client.connected(str(writer.get_extra_info("sockname")[0]))
                event = await connection.next_event()
            except BaseException:
                writer.transport.abort()
                raise
            if isinstance(event, Ready):
                logger.debug("connected to %s (security %s)", self._server, smtp.security.value)
                return connection
            await connection.close()
        assert isinstance(event, Failed)  # noqa: S101 - setting up ends in Ready or Failed
        raise event.error

    # --- the transactions ---

    @override
    async def deliver(self, envelope: Envelope) -> Delivery:
        """One SMTP transaction on a kept connection or a new one."""
        single = _AsyncSingle(envelope)
        await self._stream(single, logged=False)
        return single.result()

    @override
    async def _deliver_feed(self, feed: AsyncFeed) -> None:
        """A mailer's envelopes, each following the one before on the same connection."""
        async with self._slot():
            await self._stream(feed, logged=True)

    async def _stream(self, feed: AsyncFeed, *, logged: bool) -> None:
        """Send what ``feed`` hands out, on one connection at a time, until it is dry."""
        lane = Lane()
        dry = False
        while not dry and (envelope := lane.again() or await feed.next()):
            self._is_open = True  # close() runs when the outermost block ends
            try:
                slot = await self._checkout()
            except DeliveryError as error:
                self.settle(feed, envelope, error, logged=logged)
                continue
            broken = True
            try:
                dry = await self._run(slot, envelope, lane, feed, logged=logged)
                broken = slot.connection.closed
            finally:
                await self._checkin(slot, broken=broken)

    async def _run(
        self,
        slot: Slot[_Connection],
        envelope: Envelope,
        lane: Lane,
        feed: AsyncFeed,
        *,
        logged: bool,
    ) -> bool:
        """Send ``envelope``, then what ``feed`` has, over one connection until the feed
        is dry (True) or the connection must go (False)."""
        connection = slot.connection

        async def ahead() -> None:
            if self._pool.has_room(slot) and (later := feed.ready()):
                await self._start(slot, later, lane)

        await self._start(slot, envelope, lane)
        while lane.busy:
            event = await connection.next_event(ahead, feed.prepare)
            assert isinstance(event, (Delivered, Failed))  # noqa: S101 - what mail() ends in
            if (settled := lane.ended(event)) is not None:
                self.settle(feed, *settled, logged=logged)
            else:
                logger.debug("%s closed the kept connection; sending again", self._server)
            if lane.busy or connection.closed or not self._pool.has_room(slot):
                continue
            if (later := await feed.next()) is None:
                return True
            await self._start(slot, later, lane)
        return False

    async def _start(self, slot: Slot[_Connection], envelope: Envelope, lane: Lane) -> None:
        lane.started(envelope)
        slot.messages += 1
        if slot.connection.client.mail(envelope):
            await self._apace(len(envelope.recipients))


class _AsyncSingle(Single):
    """``Single`` as an asyncio feed."""

    async def next(self) -> Envelope | None:
        return self.take()
