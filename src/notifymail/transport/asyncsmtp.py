"""The asyncio SMTP transport: a driver on the event loop over the same protocol core.

Everything SMTP is ``notifymail.protocol``'s and the steps from envelopes to outcomes
are ``notifymail.transport._driver``'s, exactly as for the blocking ``SmtpTransport``;
this module only performs what those steps ask without blocking the event loop. Each
connection is an ``asyncio.BufferedProtocol`` (`_Link`), not a pair of streams: a
reply is handed to the steps inside the callback that received it, and whatever needs
no waiting (the next envelope queued behind the message in flight, the writes) is done
right there, so a message that lets the next one go costs one turn of the loop and no
task switch. What
waits (the feed's next envelope, a free connection, connecting, TLS, the throttle) is
awaited by the task that runs the steps. No thread is started and no blocking socket
call is made.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
from collections.abc import Awaitable
from typing import Any, Generic, TypeVar

from typing_extensions import override

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
    Record,
    Secure,
    SmtpDriver,
    Steps,
)
from notifymail.transport._pool import Single
from notifymail.transport.base import ASYNC_PACER, AsyncFeed, AsyncPacer, AsyncTransport
from notifymail.values import Delivery, Envelope

__all__ = ["AsyncSmtpTransport"]

T = TypeVar("T")

# What a connection keeps of what arrived while its steps did something else, before it
# stops reading from the socket: a server that talks out of turn cannot fill memory.
_BUFFER_LIMIT = 1 << 20
# What one read takes from the socket, into the connection's own buffer. A plain
# Protocol is handed a new bytes object per read, for which asyncio allocates 256 KiB:
# above malloc's threshold, a mapping made and unmapped each time, 8 us a read here.
_READ_SIZE = 1 << 16

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


class _Link(asyncio.BufferedProtocol):
    """One connection: its asyncio transport, the protocol core speaking over it, what
    arrived while nothing read, and the run of steps waiting for the server, if any."""

    def __init__(self, client: SmtpClient, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self._loop = loop
        self._received = bytearray()
        self._buffer = memoryview(bytearray(_READ_SIZE))  # the socket reads into it
        self._lost = False
        self._error: Exception | None = None
        self._closed: asyncio.Future[None] = loop.create_future()
        self._writable: asyncio.Future[None] | None = None  # set while writing is paused
        # The run waiting for the server and the deadline of its read, watched by one
        # timer that is moved only when it goes off early: a timer per read would cost
        # a heap entry per reply.
        self._reader: _Run[Any] | None = None
        self._deadline = 0.0
        self._watchdog: asyncio.TimerHandle | None = None

    # --- asyncio.BufferedProtocol ---

    @override
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - a stream connection
        self.transport = transport

    @override
    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    @override
    def buffer_updated(self, nbytes: int) -> None:
        data = bytes(self._buffer[:nbytes])
        if (reader := self._reader) is not None:
            self._reader = None
            reader.advance(data)
            return
        self._received += data
        if len(self._received) > _BUFFER_LIMIT and self.transport is not None:
            self.transport.pause_reading()

    @override
    def eof_received(self) -> bool:
        return False  # close: SMTP has nothing to say once the server has stopped

    @override
    def connection_lost(self, exc: Exception | None) -> None:
        self._lost, self._error = True, exc
        if not self._closed.done():
            self._closed.set_result(None)
        self.resume_writing()
        if (reader := self._reader) is not None:
            self._reader = None
            if exc is None:
                reader.advance(b"")
            else:
                reader.advance(error=exc)

    @override
    def pause_writing(self) -> None:
        self._writable = self._loop.create_future()

    @override
    def resume_writing(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    # --- what the steps ask ---

    def flush(self) -> bool:
        """Write what the core has to send, if anything; False when the transport's
        buffer is full (await ``writable``)."""
        client = self.client
        if client.has_data_to_send and not self._lost:  # as a socket: the read meets the end
            assert self.transport is not None  # noqa: S101 - set once connected
            self.transport.write(client.data_to_send())
        return self._writable is None

    async def writable(self) -> None:
        """Wait until the transport's buffer drained below its limit."""
        if self._writable is not None:
            await asyncio.shield(self._writable)

    def read(self, reader: _Run[Any], seconds: float) -> bytes | None:
        """What arrived already, or b"" once the server closed; None: ``reader`` is
        resumed when something arrives, or with TimeoutError after ``seconds``."""
        if self._received:
            data = bytes(self._received)
            self._received.clear()
            if self.transport is not None and not self._lost:
                self.transport.resume_reading()
            return data
        if self._lost:
            if self._error is not None:
                raise self._error
            return b""
        self._reader = reader
        self._deadline = self._loop.time() + seconds
        if self._watchdog is None:
            self._watchdog = self._loop.call_at(self._deadline, self._watch)
        return None

    def stop_reading(self) -> None:
        """The run waiting for the server gives up (it was cancelled)."""
        self._reader = None

    def _watch(self) -> None:
        """The watchdog went off: fail the read if its deadline has passed."""
        self._watchdog = None
        reader = self._reader
        if reader is None:  # no read under way: the next one sets the watchdog again
            return
        if self._loop.time() < self._deadline:
            self._watchdog = self._loop.call_at(self._deadline, self._watch)
            return
        self._reader = None
        reader.advance(error=TimeoutError("timed out"))

    async def start_tls(self, context: ssl.SSLContext) -> None:
        """Put TLS on the connection, checking the certificate against the server's name."""
        # Plaintext that arrived before the handshake is never read as a reply sent over
        # TLS (the core refuses what came with the reply to STARTTLS, in the same read).
        self._received.clear()
        assert self.transport is not None  # noqa: S101 - set once connected
        transport = await self._loop.start_tls(
            self.transport, self, context, server_hostname=self.client.smtp.host
        )
        if transport is None:  # the connection closed during the handshake
            raise ConnectionResetError("the connection closed during the TLS handshake")
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - a stream connection
        self.transport = transport

    async def close(self, *, abort: bool = False) -> None:
        """Close; a TLS goodbye is awaited within the timeout at most, unless ``abort``."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        transport = self.transport
        if transport is None:
            return
        if abort:
            transport.abort()
            return
        transport.close()
        try:
            await _within(self.client.smtp.timeout, asyncio.shield(self._closed))
        except BaseException as error:
            # The buffer never drained (a server that stopped reading), or no TLS goodbye,
            # or an interrupt: let go of the socket now.
            transport.abort()
            if not isinstance(error, (OSError, TimeoutError, ssl.SSLError)):
                raise


def _gives_back(request: object) -> bool:
    """Whether ``request`` returns what the steps took (a place, a connection), or
    finishes what they began (an outcome being recorded): performed even when cancelled."""
    return request is FREED or isinstance(request, (Checkin, Close, Record))


class _Run(Generic[T]):
    """One run of a driver's steps on the event loop.

    ``advance`` resumes the steps and performs each request that needs no waiting on
    the spot: a write and a read of what arrived already, the throttle when it admits
    at once. A read that must wait leaves the run with the connection, whose
    ``buffer_updated`` (or watchdog, or ``connection_lost``) calls ``advance`` again; an
    outcome being recorded (`Record`) leaves it with the recording's future, whose
    callback does. Any other request wakes the task awaiting ``result``, which awaits it
    through the transport and resumes the steps with what it gave.
    """

    def __init__(
        self,
        transport: AsyncSmtpTransport,
        steps: Steps[T],
        feed: AsyncFeed | None,
        pacer: AsyncPacer | None,
    ) -> None:
        self._transport = transport
        self._steps = steps
        self._feed = feed
        self._pacer = pacer
        self._reading: _Link | None = None
        self._recording: asyncio.Future[Any] | None = None  # see `Record`
        self._waiting: object = None  # the request for the task
        self._wake: asyncio.Future[None] | None = None
        self._done = False
        self._cancelled: asyncio.CancelledError | None = None  # to throw in, see result
        self._value: Any = None
        self._error: BaseException | None = None

    def advance(self, value: object = None, error: BaseException | None = None) -> None:
        """Resume the steps with ``value`` (or throw ``error`` into them)."""
        self._reading = None
        steps = self._steps
        while True:
            try:
                request = steps.send(value) if error is None else steps.throw(error)
            except StopIteration as stop:
                self._finish(stop.value, None)
                return
            except BaseException as failure:
                self._finish(None, failure)
                return
            value = error = None
            if self._cancelled is not None and not _gives_back(request):
                error, self._cancelled = self._cancelled, None  # instead of the request
                continue
            try:
                if type(request) is Read and request.connection.flush():
                    value = self._read(request)
                    if value is None:
                        return  # the connection resumes the steps
                    continue
                if isinstance(request, Pace) and (
                    self._pacer is None or not self._pacer.reserve(request.recipients)
                ):
                    continue
                if type(request) is Record:
                    self._recording = request.recording
                    request.recording.add_done_callback(self._recorded)
                    return  # the recording resumes the steps
            except BaseException as failure:
                error = failure
                continue
            self._waiting = request
            self._wake_task()
            return

    async def result(self) -> T:
        """Run the steps to their end; what they return, or raise.

        A cancellation is thrown into the steps where they wait, so that they check
        their connection back in; but a request that gives something back (a checkin,
        a close, a freed place) already asked for is performed first, and the
        cancellation thrown in at the next request that waits.
        """
        transport = self._transport
        self.advance()
        while not self._done:
            request, self._waiting = self._waiting, None
            if request is None:  # the steps wait for the server
                self._wake = asyncio.get_running_loop().create_future()
                try:
                    await self._wake
                except asyncio.CancelledError as cancel:
                    if self._done:
                        raise
                    if self._reading is not None:
                        self._reading.stop_reading()
                    if self._recording is not None:  # it resumes the steps; then the cancel
                        self._cancelled = cancel
                    elif _gives_back(self._waiting):
                        self._cancelled = cancel  # thrown in after it, see advance
                    else:
                        self._waiting = None  # the steps get the cancellation instead
                        self.advance(error=cancel)
                continue
            value: object
            try:
                if type(request) is Read:  # written; the buffer is full: drain, then read
                    await _within(transport.smtp.timeout, request.connection.writable())
                    if (value := self._read(request)) is None:
                        continue  # the connection resumes the steps
                else:
                    value = await transport._wait_for(request, self._feed, self._pacer)
            except BaseException as failure:
                self.advance(error=failure)
            else:
                self.advance(value)
        if self._cancelled is not None:  # never thrown in: the steps ended first
            raise self._cancelled from self._error
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[no-any-return]  # the steps' T

    def _read(self, request: Read[_Link]) -> bytes | None:
        """Call the read's ``idle``, then take what arrived already; None: the run waits
        for the connection to resume it."""
        if request.idle is not None:
            request.idle()
        value = request.connection.read(self, request.seconds)
        if value is None:
            self._reading = request.connection
        return value

    def _recorded(self, recording: asyncio.Future[Any]) -> None:
        """The outcome the steps wait for is recorded (or failed to be): resume them."""
        self._recording = None
        if recording.cancelled():  # by no one in notifymail; the steps end with it
            self.advance(error=asyncio.CancelledError())
        else:
            self.advance(error=recording.exception())

    def _finish(self, value: object, error: BaseException | None) -> None:
        self._done, self._value, self._error = True, value, error
        self._wake_task()

    def _wake_task(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)


class AsyncSmtpTransport(SmtpDriver[_Link], AsyncTransport):
    """Delivers over SMTP from asyncio code, through up to ``smtp.max_connections``
    connections, keeping every promise of [`SmtpTransport`][notifymail.SmtpTransport]
    (security modes, certificate checks, timeouts, pipelining, SMTPUTF8, never twice
    after the end of DATA, per-recipient results).

    It never blocks the event loop: connections are asyncio transports, waits are
    awaited, and no thread is started. With ``max_connections`` above 1, that many tasks deliver
    at once, each on a connection of its own (``concurrency``). The options are those
    of ``SmtpTransport``; ``oauth2_token`` is called on the event loop, so it should
    return a token it already holds. Creating one needs no running event loop.
    """

    _logger = logging.getLogger("notifymail.transport.asyncsmtp")
    _condition: asyncio.Condition | None = None  # made in the loop, on first use

    @override
    async def open(self) -> None:
        """Connect, secure and log in, unless a connection is already open."""
        await self._drive(self._open())

    @override
    async def close(self) -> None:
        """Say QUIT on every connection kept, and close them."""
        await self._drive(self._quit_all(self._pool.drain()))

    @override
    async def probe(self, security: Security | None = None) -> bool:
        """Connect, secure and log in on a connection of its own, then QUIT; send nothing.

        ``security`` tries another mode on the same server (``smtp.port``, or that
        mode's default port when ``port`` is not set).
        """
        other = self._sibling(AsyncSmtpTransport, security)
        return await other._drive(other._probe())

    @override
    async def deliver(self, envelope: Envelope) -> Delivery:
        """One SMTP transaction on a kept connection or a new one."""
        single = _AsyncSingle(envelope)
        await self._drive(
            self._stream(single, logged=False, paced=ASYNC_PACER.get() is not None), single
        )
        return single.result()

    @override
    async def _deliver_feed(self, feed: AsyncFeed) -> None:
        """A mailer's envelopes, each following the one before on the same connection."""
        async with self._slot():
            await self._drive(
                self._stream(feed, logged=True, paced=ASYNC_PACER.get() is not None), feed
            )

    async def _drive(self, steps: Steps[T], feed: AsyncFeed | None = None) -> T:
        """Run ``steps`` to their end on the event loop (see `_Run`)."""
        return await _Run(self, steps, feed, ASYNC_PACER.get()).result()

    async def _wait_for(
        self, request: object, feed: AsyncFeed | None, pacer: AsyncPacer | None
    ) -> object:
        """Await what ``request`` asks (see ``notifymail.transport._driver``); its result."""
        if request is TAKE:
            assert feed is not None  # noqa: S101 - only a stream takes, and it has a feed
            return await feed.next()
        if isinstance(request, Pace):
            assert pacer is not None  # noqa: S101 - a Pace waits only on a pacer
            while wait := pacer.reserve(request.recipients):
                await pacer.wait(wait)
        elif request is ACQUIRE:
            vacancy = self._vacancy()
            async with vacancy:
                expired = self._pool.expired()
                while (got := self._pool.acquire()) is False:
                    await vacancy.wait()
            return expired, got
        elif isinstance(request, Checkin):
            kept = self._pool.release(request.slot, broken=request.broken)
            await self._notify()
            return kept
        elif request is FREED:
            self._pool.open_failed()
            await self._notify()
        elif request is OPEN:
            return await self._connect_link()
        elif isinstance(request, Secure):
            assert self._ssl_context is not None  # noqa: S101 - security other than none has one
            await _within(self.smtp.timeout, request.connection.start_tls(self._ssl_context))
        elif isinstance(request, Close):
            await request.connection.close(abort=request.abort)
        else:
            raise AssertionError(f"no such request: {request!r}")
        return None

    def _vacancy(self) -> asyncio.Condition:
        if self._condition is None:
            self._condition = asyncio.Condition()
        return self._condition

    async def _notify(self) -> None:
        vacancy = self._vacancy()
        async with vacancy:
            vacancy.notify()

    async def _connect_link(self) -> _Link:
        smtp = self.smtp
        loop = asyncio.get_running_loop()
        client = self.new_client()
        transport, link = await _within(
            smtp.timeout,
            loop.create_connection(lambda: _Link(client, loop), smtp.host, smtp.effective_port),
        )
        try:
            client.connected(str(transport.get_extra_info("sockname")[0]))
        except BaseException:
            transport.abort()
            raise
        return link


class _AsyncSingle(Single):
    """``Single`` as an asyncio feed."""

    async def next(self) -> Envelope | None:
        return self.take()
