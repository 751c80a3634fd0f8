"""What both SMTP drivers do, written once, as generators of the I/O they need.

The protocol core keeps SMTP free of I/O; this module does the same one level up, for
the work around the core: take an envelope from the feed, check a connection out of
the pool (opening, securing and logging in a new one), start the transaction paced by
the throttle, write what the core has to send, read within its deadline, hand over to
TLS when told, settle each outcome, queue the next envelope behind the message in
flight where the server pipelines, and check the connection back in.

Every step that waits is yielded as a request (`Read`, `Secure`, `TAKE`, ...) and the
generator is resumed with its result, or with the exception it raised. The blocking
driver performs each request with a socket and a ``threading.Condition``; the asyncio
driver performs on the spot each one that needs no waiting, inside the callback that
received a reply if need be, and awaits the others. A generator is always run to its
end (an exception is thrown into it, never ``close``), so its ``finally`` steps
(checking a connection back in) are performed too.
"""

from __future__ import annotations

import dataclasses
import logging
import ssl
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeAlias, TypeVar

from typing_extensions import override

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
from notifymail.transport._pool import Lane, Limits, Pool, Slot
from notifymail.transport.base import AsyncFeed, Feed, _Lifecycle
from notifymail.values import Delivery, Envelope

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "ACQUIRE",
    "FREED",
    "OPEN",
    "TAKE",
    "Checkin",
    "Close",
    "Connection",
    "Pace",
    "Read",
    "Record",
    "Secure",
    "SmtpDriver",
    "Steps",
    "default_ssl_context",
]


class Connection(Protocol):
    """What the steps need of a driver's connection: the core speaking over it."""

    client: SmtpClient


C = TypeVar("C", bound=Connection)
T = TypeVar("T")
D = TypeVar("D", bound="SmtpDriver[Any]")

# A generator of requests, resumed with each one's result; it returns a T.
Steps: TypeAlias = Generator[Any, Any, T]


@dataclass(frozen=True, slots=True)
class Read(Generic[C]):
    """Write what the core has to send on ``connection``, if anything, straight from
    ``client.data_to_send()`` (AUTH's bytes then sit in no variable a traceback keeps);
    call ``idle`` while the server works; then return what the server sent next (b""
    once it closed), within ``seconds``, else raise TimeoutError.

    One request for both: every write is followed by a read of the replies it asks for.
    """

    connection: C
    seconds: float
    idle: Callable[[], object] | None = None


@dataclass(frozen=True, slots=True)
class Secure(Generic[C]):
    """Wrap ``connection`` in TLS (the core said ``StartTls``), or raise an OSError."""

    connection: C


@dataclass(frozen=True, slots=True)
class Close(Generic[C]):
    """Close ``connection``; a TLS goodbye is awaited within the timeout at most, unless
    ``abort`` (an exception is on its way: close at once)."""

    connection: C
    abort: bool = False


@dataclass(frozen=True, slots=True)
class Checkin(Generic[C]):
    """Give ``slot`` back to the pool; True when it is kept for the next envelope."""

    slot: Slot[C]
    broken: bool


@dataclass(frozen=True, slots=True)
class Record:
    """Wait until the feed has recorded an outcome it was told (an asyncio feed whose
    store blocks records it in a thread). Asked as late as can be: right before the
    next message's content is written (so no end of DATA precedes the commit of the
    outcome before it), before the next outcome is reported, and when the stream ends.
    Meanwhile the next message's commands go out, so the recording takes no round trip
    of its own."""

    recording: asyncio.Future[Any]


@dataclass(frozen=True, slots=True)
class Pace:
    """Wait until ``recipients`` more fit the sending mailer's throttle, if it has one."""

    recipients: int


class _Named:
    """A request with nothing to say but its name."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    @override
    def __repr__(self) -> str:
        return self._name


TAKE = _Named("TAKE")  # the feed's next envelope (it may wait), or None
ACQUIRE = _Named("ACQUIRE")  # the idle slots to close, then acquire's answer once not False
OPEN = _Named("OPEN")  # a new connection, its core told ``connected``; or an OSError
FREED = _Named("FREED")  # opening the connection ACQUIRE allowed failed: free its place


def default_ssl_context(cafile: str | None) -> ssl.SSLContext:
    """``ssl.create_default_context`` with ``cafile``, or a ConfigError naming it."""
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as error:
        reason = error.strerror or str(error)
        raise ConfigError(
            f"cafile: {cafile!r} cannot be loaded as a PEM bundle: {reason}", field="cafile"
        ) from None


class SmtpDriver(_Lifecycle, Generic[C]):
    """What both SMTP transports are given and do alike: the settings, the TLS context,
    the EHLO name and the OAuth2 token checked once; the pool of connections (``C``);
    the core each connection speaks; and the steps from envelopes to outcomes."""

    paces_at_the_wire: ClassVar[bool] = True
    _limits: ClassVar[Limits] = Limits()
    _logger: ClassVar[logging.Logger]

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

    @override
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

    def _sibling(self, kind: type[D], security: Security | None) -> D:
        """A transport of ``kind`` with this one's options, in ``security``: a probe's."""
        smtp = self.smtp if security is None else dataclasses.replace(self.smtp, security=security)
        return kind(
            smtp,
            ssl_context=self._ssl_context,
            local_hostname=self._local_hostname,
            oauth2_token=self._oauth2_token,
        )

    def new_client(self) -> SmtpClient:
        """The protocol core for a new connection."""
        return SmtpClient(
            self.smtp,
            local_hostname=self._local_hostname,
            oauth2_token=self._oauth2_token,
            logger=self._logger,
        )

    # --- the steps ---

    def _open(self) -> Steps[None]:
        """Connect, secure and log in, unless a connection is already open."""
        slot = yield from self._checkout()
        yield from self._checkin(slot, broken=False)

    def _probe(self) -> Steps[bool]:
        """Connect, secure and log in on a new connection, then QUIT."""
        connection = yield from self._connect()
        yield from self._quit(connection)
        return True

    def _stream(self, feed: Feed | AsyncFeed, *, logged: bool, paced: bool) -> Steps[None]:
        """Send what ``feed`` hands out, on one connection at a time, until it is dry;
        ``paced``: a mailer's throttle is to be asked before each MAIL FROM (`Pace`)."""
        lane = Lane()
        dry = False
        while not dry and (envelope := lane.again() or (yield TAKE)):
            self._is_open = True  # close() runs when the outermost block ends
            try:
                slot: Slot[C] = yield from self._checkout()
            except DeliveryError as error:
                yield from self._settle(feed, lane, envelope, error, logged=logged)
                continue
            broken = True
            try:
                dry = yield from self._run(slot, envelope, lane, feed, logged=logged, paced=paced)
                broken = slot.connection.client.state is State.CLOSED
            finally:
                yield from self._checkin(slot, broken=broken)
        yield from self._recorded(lane)

    def _run(
        self,
        slot: Slot[C],
        envelope: Envelope,
        lane: Lane,
        feed: Feed | AsyncFeed,
        *,
        logged: bool,
        paced: bool,
    ) -> Steps[bool]:
        """Send ``envelope``, then what ``feed`` has, over one connection until the feed
        is dry (True) or the connection must go (False)."""
        client = slot.connection.client

        def ahead() -> Steps[None]:
            if self._pool.has_room(slot) and (later := feed.ready()):
                yield from self._start(slot, later, lane, paced=paced)

        yield from self._start(slot, envelope, lane, paced=paced)
        while lane.busy:
            event = yield from self._exchange(slot.connection, ahead, feed.prepare, lane)
            assert isinstance(event, (Delivered, Failed))  # noqa: S101 - what mail() ends in
            if (settled := lane.ended(event)) is not None:
                yield from self._settle(feed, lane, *settled, logged=logged)
            else:
                self._logger.debug("%s closed the kept connection; sending again", self._server)
            if lane.busy or client.state is State.CLOSED or not self._pool.has_room(slot):
                continue
            if (later := (yield TAKE)) is None:
                return True
            yield from self._start(slot, later, lane, paced=paced)
        return False

    def _start(
        self,
        slot: Slot[C],
        envelope: Envelope,
        lane: Lane,
        *,
        paced: bool,
    ) -> Steps[None]:
        lane.started(envelope)
        slot.messages += 1
        if slot.connection.client.mail(envelope) and paced:
            yield Pace(len(envelope.recipients))

    def _exchange(
        self,
        connection: C,
        ahead: Callable[[], Steps[None]] | None = None,
        idle: Callable[[], object] | None = None,
        lane: Lane | None = None,
    ) -> Steps[Event]:
        """Write and read until the core has an event for the caller.

        ``ahead`` runs when the core could queue the next envelope behind the message
        it is about to send (``can_mail_ahead``), before that is written; ``idle`` is
        called after each write, while the server works. A message's content waits for
        the outcome that ``lane`` has being recorded, if any (`Record`).
        """
        client = connection.client
        event: Event | None = None  # none yet: ask the core first
        while True:
            if event is NEED_DATA:
                # Outside the handling of I/O errors below: neither is the connection's.
                if lane is not None and client.has_message_to_send:
                    yield from self._recorded(lane)  # which may take the next envelope
                if ahead is not None and client.can_mail_ahead:
                    yield from ahead()
            elif event is not None and not isinstance(event, StartTls):
                return event
            try:
                if event is NEED_DATA:
                    time_left = client.time_left()
                    if time_left <= 0:
                        raise TimeoutError("timed out")
                    client.receive_data((yield Read(connection, time_left, idle)))
                elif event is not None:
                    yield Secure(connection)
                    client.tls_started()
                event = client.next_event()  # which may ask for an OAuth2 token
            except OSError as error:  # timeouts, resets, TLS and certificate errors
                client.connection_failed(error)
                return client.next_event()

    def _checkout(self) -> Steps[Slot[C]]:
        """A kept connection, or a new one (connected, secured, logged in); waits while
        ``max_connections`` are in use."""
        expired, got = yield ACQUIRE
        try:
            yield from self._quit_all(expired)
        except BaseException:  # an interrupt: give the place back
            if isinstance(got, Slot):
                yield from self._checkin(got, broken=True)
            elif got:
                yield FREED
            raise
        if isinstance(got, Slot):
            return got
        try:
            connection = yield from self._connect()
        except BaseException:
            yield FREED
            raise
        return self._pool.opened(connection)

    def _checkin(self, slot: Slot[C], *, broken: bool) -> Steps[None]:
        """Keep the connection for the next envelope, or close it (QUIT when it is in step)."""
        if (yield Checkin(slot, broken=broken)):
            return
        if broken:
            yield Close(slot.connection, abort=True)
        else:
            self._logger.debug("%s: a connection served its time; closing it", self._server)
            yield from self._quit(slot.connection)

    def _connect(self) -> Steps[C]:
        """A new connection, secured and logged in; or the DeliveryError that stopped it."""
        smtp = self.smtp
        self._logger.info("connecting to %s (security %s)", self._server, smtp.security.value)
        try:
            connection: C = yield OPEN
        except OSError as error:
            client = self.new_client()
            client.connection_failed(error)
            event = client.next_event()
        else:
            try:
                event = yield from self._exchange(connection)
            except BaseException:
                yield Close(connection, abort=True)
                raise
            if isinstance(event, Ready):
                self._logger.debug(
                    "connected to %s (security %s)", self._server, smtp.security.value
                )
                return connection
            yield Close(connection)
        assert isinstance(event, Failed)  # noqa: S101 - setting up ends in Ready or Failed
        raise event.error

    def _quit(self, connection: C) -> Steps[None]:
        """QUIT, wait for its reply within the timeout, close."""
        try:
            connection.client.quit()
            yield from self._exchange(connection)
        finally:
            yield Close(connection)

    def _quit_all(self, slots: Sequence[Slot[C]]) -> Steps[None]:
        """Say QUIT on each of ``slots``' connections and close it; interrupted, close
        them all at once (one closed already stays closed)."""
        try:
            for slot in slots:
                yield from self._quit(slot.connection)
        except BaseException:
            for slot in slots:
                yield Close(slot.connection, abort=True)
            raise

    def _settle(
        self,
        feed: Feed | AsyncFeed,
        lane: Lane,
        envelope: Envelope,
        outcome: Delivery | DeliveryError,
        *,
        logged: bool,
    ) -> Steps[None]:
        """Report an envelope's outcome to ``feed``, logged as ``send`` logs it. A feed
        that records it elsewhere gives its recording, which ``lane`` keeps until the
        next message's content is to go out (see `_exchange`) or the stream ends."""
        if logged:
            if isinstance(outcome, DeliveryError):
                self._log_failure(envelope, outcome)
            else:
                self._log_delivery(outcome)
        # The outcome before first: what its recording decided (the server is down: take
        # nothing more) holds before the feed hears of this one.
        yield from self._recorded(lane)
        lane.recording = feed.done(envelope, outcome)

    def _recorded(self, lane: Lane) -> Steps[None]:
        """Wait until the outcome that ``lane`` has being recorded, if any, is recorded."""
        if (recording := lane.recording) is not None:
            lane.recording = None
            yield Record(recording)
