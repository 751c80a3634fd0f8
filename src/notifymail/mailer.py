"""The facades a host application talks to, [`Mailer`][notifymail.Mailer] and its asyncio
twin [`AsyncMailer`][notifymail.AsyncMailer]: they decide (policy), compose (message) and
hand over (transport), retrying and pacing the hand-over by the rules of the shared core
(``_delivery``), and do nothing else themselves.
"""

from __future__ import annotations

import asyncio
import functools
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from importlib import import_module
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar, cast

from typing_extensions import Self

from notifymail._compose import compose, compose_notification, notification_envelopes
from notifymail._delivery import (
    Attempt,
    DeliveryReport,
    Dispatch,
    Handed,
    Handing,
    Suppressions,
    Tally,
    Throttle,
    hand_over,
    log_summary,
    record_hard_bounces,
    send_report,
    split_suppressed,
)
from notifymail._drain import Claimed, Drain, Send, advance, drain, server_unavailable
from notifymail._queue import DeliveryQueue, Outbox, Queued
from notifymail.errors import ConfigError, DeliveryError
from notifymail.message import Message, Notification
from notifymail.policy import (
    Directory,
    InMemoryDirectory,
    Person,
    check_recipients,
    plan_delivery,
    suggest_recipients,
)
from notifymail.transport.base import (
    ASYNC_PACER,
    PACER,
    AsyncTransport,
    Transport,
    finished,
    uncancelled,
)
from notifymail.values import Delivery, Envelope

if TYPE_CHECKING:
    from notifymail.policy import Batch
    from notifymail.settings import EmailSettings, SmtpSettings
    from notifymail.verify import VerifyResult

__all__ = ["AsyncMailer", "DeliveryReport", "Mailer"]

_T = TypeVar("_T", Transport, AsyncTransport)

# An asyncio notify composes its envelopes this many at a time, yielding to the event
# loop in between, so a notification to thousands never holds the loop for long.
_COMPOSE_CHUNK = 200


class _Facade(Generic[_T]):
    """What both facades share: their settings, transport, directory, suppression list,
    outbox, throttle and policy."""

    def __init__(  # noqa: PLR0917 - private; both facades pass everything, in this order
        self,
        settings: EmailSettings,
        transport: _T,
        directory: Directory | None,
        suppressions: Suppressions | None,
        clock: Callable[[], float],
        outbox: Outbox | None,
    ) -> None:
        self.settings = settings
        self.transport: _T = transport
        self.directory: Directory = directory if directory is not None else InMemoryDirectory(())
        self.suppressions = suppressions
        self.outbox = outbox
        self._clock = clock
        rate = settings.delivery.max_recipients_per_second
        self._throttle = None if rate is None else Throttle(rate)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(transport={type(self.transport).__name__})"

    def check_recipients(
        self, creator: Person, recipients: Iterable[str], *, existing: Iterable[str] = ()
    ) -> None:
        """[`check_recipients`][notifymail.check_recipients] with this mailer's settings and
        directory."""
        check_recipients(creator, recipients, self.directory, self.settings, existing=existing)

    def suggest_recipients(
        self, viewer: Person, *, everyone_group: str | None = None
    ) -> list[Person]:
        """[`suggest_recipients`][notifymail.suggest_recipients] with this mailer's settings
        and directory."""
        return suggest_recipients(
            viewer, self.directory, self.settings, everyone_group=everyone_group
        )

    def _without_suppressed(self, notification: Notification) -> tuple[list[str], tuple[str, ...]]:
        """The recipients to send to, and those on the suppression list."""
        if self.suppressions is None:
            return list(notification.recipients), ()
        return split_suppressed(notification.recipients, self.suppressions.is_suppressed)

    def _batches(self, recipients: Iterable[str]) -> list[Batch]:
        return plan_delivery(recipients, self.directory, self.settings)

    def _record_hard_bounces(self, handed: Handed) -> None:
        if self.suppressions is not None and handed.refused:
            record_hard_bounces(handed.refused, self.suppressions.add)

    def _record_all_hard_bounces(self, handed: Iterable[Handed]) -> None:
        for each in handed:
            self._record_hard_bounces(each)

    def _dispatch(self, envelopes: Sequence[Envelope]) -> tuple[Dispatch, int]:
        """The envelopes' dispatch, and how many workers hand them over at once: as many
        as the transport's concurrency, and no more than there are envelopes."""
        workers = max(1, min(self.transport.concurrency, len(envelopes)))
        return Dispatch(envelopes, self.settings.delivery.retry, workers=workers), workers

    def _enqueue(self, item: Message | Notification, key: str | None) -> Queued:
        """Compose ``item`` and store its envelopes: ``enqueue``, blocking."""
        outbox = self._outbox()
        if isinstance(item, Message):
            envelopes = [compose(item, self.settings.active_sender)]
        elif isinstance(item, Notification):
            recipients, _ = self._without_suppressed(item)  # never stored, never sent
            batches = self._batches(recipients)
            envelopes = compose_notification(item, self.settings.active_sender, batches)
        else:
            raise TypeError(f"enqueue: expected a Message or a Notification, not {item!r}")
        key = uuid.uuid4().hex if key is None else key
        notification = isinstance(item, Notification)  # the list is asked again at delivery
        return outbox.enqueue(envelopes, key=key, notification=notification)

    def _drain(self, limit: int | None) -> Drain:
        """The plan of a ``deliver_queued`` (see `drain`)."""
        queue = self._outbox()
        if not isinstance(queue, DeliveryQueue):
            raise ConfigError(
                f"outbox: deliver_queued needs an outbox that workers claim from, such as"
                f" SqliteOutbox; {type(queue).__name__} is delivered by its own workers",
                field="outbox",
            )
        if limit is not None and limit < 0:
            raise ValueError(f"deliver_queued: limit must be >= 0, not {limit!r}")
        return drain(queue, limit, self.suppressions)

    def _outbox(self) -> Outbox:
        if self.outbox is None:
            raise ConfigError(
                "outbox: this mailer has no outbox; pass Mailer(..., outbox=SqliteOutbox(path))",
                field="outbox",
            )
        return self.outbox


class Mailer(_Facade[Transport]):
    """Sends system mail and notifications for a host application.

    Without ``transport`` it builds an SMTP transport for ``settings.active_smtp``.
    ``directory`` tells account holders from outsiders (empty by default: everyone is an
    outsider). With ``suppressions``, a notification is never handed to an address on that
    list, and addresses a server refuses as unknown (5.1.1) are added to it; system mail
    (``send``) neither reads nor writes it. ``clock`` and ``sleep`` pace retries and the
    throttle; tests inject fakes. ``outbox`` (a [`SqliteOutbox`][notifymail.SqliteOutbox],
    say) is where `enqueue` keeps mail for `deliver_queued` to deliver.
    Use it as a context manager to keep one connection for every send inside the block.
    A mailer may be shared by threads; the ``max_recipients_per_second`` throttle then
    holds across all of them.
    """

    def __init__(
        self,
        settings: EmailSettings,
        *,
        transport: Transport | None = None,
        directory: Directory | None = None,
        suppressions: Suppressions | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
        outbox: Outbox | None = None,
    ) -> None:
        if transport is None:
            smtp = _active_smtp(settings)
            from notifymail.transport.smtp import SmtpTransport

            transport = SmtpTransport(smtp)
        super().__init__(settings, transport, directory, suppressions, clock, outbox)
        self._sleep = sleep

    def __enter__(self) -> Self:
        """Keep one connection for every send inside the block (opened by the first)."""
        self.transport.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.transport.__exit__(exc_type, exc, traceback)

    def send(self, message: Message) -> DeliveryReport:
        """Send system mail (a password reset, an invitation) as one envelope.

        Retryable errors are retried; partial refusals come back in the report. Raises the
        [`DeliveryError`][notifymail.DeliveryError] when no recipient could be handed the message.
        """
        envelope = compose(message, self.settings.active_sender)
        with self:  # one connection for the retries too
            return send_report(self._hand_over(envelope))

    def notify(self, notification: Notification) -> DeliveryReport:
        """Send an alert or subscription to its recipients, batched by the delivery policy.

        Recipients on the suppression list are left out before any is handed over (the
        report's ``suppressed``). The body is composed once. Each envelope waits for the
        throttle, and retryable errors and 4xx recipient refusals are retried by the
        retry policy, never to a recipient that already accepted. Never raises
        [`DeliveryError`][notifymail.DeliveryError]: what failed is in the report. An
        invalid address or header raises [`InvalidMessage`][notifymail.InvalidMessage]
        before anything is sent.
        """
        recipients, suppressed = self._without_suppressed(notification)
        batches = self._batches(recipients)
        envelopes = compose_notification(notification, self.settings.active_sender, batches)
        with self:  # one connection for every envelope, even outside the host's block
            report = self._hand_over_all(envelopes, suppressed)
        log_summary(len(envelopes), report)
        return report

    def enqueue(self, item: Message | Notification, *, key: str | None = None) -> Queued:
        """Compose ``item`` and store its envelopes in the outbox, for a worker to deliver.

        The delivery policy and composition run here, so an invalid item raises
        [`InvalidMessage`][notifymail.InvalidMessage] and stores nothing. Every envelope is
        stored, or none. A ``key`` enqueued before stores nothing and returns the first
        record with ``new=False``, so a host's retried request never sends twice; without
        a key, a fresh unique one is made.
        """
        return self._enqueue(item, key)

    def deliver_queued(self, *, limit: int | None = None) -> DeliveryReport:
        """Deliver envelopes that are due in the outbox, at most ``limit`` of them.

        Each envelope is claimed under a lease (no other worker gets it), tried once
        through this mailer's transport and throttle, and its outcome committed before
        the next message's end of DATA is sent: on one connection, whatever the
        transport's concurrency, the next message's commands pipelined behind the one
        before it when the server offers PIPELINING. The outbox decides what comes next:
        accepted and 5xx-refused recipients are done, retryable failures wait by its
        backoff, and recipients past ``max_lifetime`` are dead. While the server is
        unreachable (no connection, or 421) the rest of the batch is deferred unsent,
        as Postfix does. With ``suppressions``, recipients on the list now are left out
        (an envelope with no one left is settled without being sent) and done with.

        Returns what happened in this call: ``accepted``, ``refused`` (final),
        ``failed`` (dead) and ``suppressed``; recipients deferred for a later attempt
        are in none of them. An error of the outbox's (for ``SqliteOutbox``, an
        ``sqlite3`` error, or an ``OSError`` when syncing its file failed) is raised
        once the batch in hand is given back; what was delivered before it is recorded.
        """
        plan = self._drain(limit)
        answer: object = None
        error: BaseException | None = None
        with self:  # one connection for the whole call
            while not isinstance(step := advance(plan, answer, error), DeliveryReport):
                answer, error = None, None
                try:
                    if isinstance(step, Send):
                        self._send_batch(step.batch)
                    else:
                        answer = step.call()
                except BaseException as raised:
                    error = raised
        return step

    def send_test_email(self, to: str) -> DeliveryReport:
        """Send a short message to ``to`` saying that email is set up."""
        return self.send(_test_message(to))

    def verify(self, *, autocorrect: bool = False) -> VerifyResult:
        """Check the active SMTP server (connect, TLS, login, quit) without sending.

        The check goes through the mailer's transport when it has a server to check
        ([`probe`][notifymail.transport.base.Transport.probe]), so a private CA or an OAuth2 token
        given to it counts here too; otherwise through an SMTP transport for the settings.
        """
        from notifymail.verify import verify_smtp, verify_transport

        smtp = self.settings.active_smtp
        if smtp is None:
            raise _no_server()
        result = verify_transport(self.transport, smtp, autocorrect=autocorrect)
        return verify_smtp(smtp, autocorrect=autocorrect) if result is None else result

    def _hand_over_all(
        self, envelopes: list[Envelope], suppressed: tuple[str, ...]
    ) -> DeliveryReport:
        """Hand envelopes over through the transport's connections, as many at once as
        its concurrency, each in a thread of its own taking the next envelope it can."""
        dispatch, workers = self._dispatch(envelopes)
        feed = _Feed(dispatch, self._throttle, self._clock, self._sleep)
        _in_threads(lambda: self.transport._send_feed(feed), workers, dispatch.close)
        self._record_all_hard_bounces(dispatch.handed)
        return _report(dispatch.handed, suppressed)

    def _send_batch(self, batch: Claimed) -> None:
        """Hand a batch of the outbox's envelopes over on one connection, in this thread;
        the batch records each outcome as the transport reports it."""
        self.transport._send_feed(_Feed(batch, self._throttle, self._clock, self._sleep))

    def _hand_over(self, envelope: Envelope) -> Handed:
        """Deliver one envelope with the retry policy (see `hand_over`)."""
        plan = hand_over(envelope, self.settings.delivery.retry)
        step = next(plan)
        while True:
            if step.wait:
                self._sleep(step.wait)
            try:
                step = plan.send(self._attempt(step.envelope))
            except StopIteration as done:
                handed: Handed = done.value
                return handed

    def _attempt(self, envelope: Envelope) -> Delivery | DeliveryError:
        """Hand ``envelope`` to the transport once: the throttle applies, no retry.

        Returns the transport's [`DeliveryError`][notifymail.DeliveryError] instead of raising it.
        Outside a ``with`` block of the mailer, the transport opens and closes around it.
        """
        pacer = (
            None if self._throttle is None else _Pacer(self._throttle, self._clock, self._sleep)
        )
        token = PACER.set(pacer)
        try:
            return self.transport.send(envelope)
        except DeliveryError as error:
            return error
        finally:
            PACER.reset(token)
            if pacer is not None:
                pacer.finish()


class AsyncMailer(_Facade[AsyncTransport]):
    """The asyncio twin of [`Mailer`][notifymail.Mailer]: the same policy, composition,
    report, retries, throttle and errors, awaited, never blocking the event loop.

    Without ``transport`` it builds an ``AsyncSmtpTransport`` for ``settings.active_smtp``.
    ``sleep`` is awaited for retries and the throttle. Creating one needs no running event
    loop. Use it with ``async with`` to keep one connection for every send inside the
    block; tasks may share it, and the throttle holds across all of them.
    ``check_recipients`` and ``suggest_recipients`` are the same plain methods as on
    [`Mailer`][notifymail.Mailer]. With an ``outbox``, ``await enqueue(...)`` and
    ``await deliver_queued(...)`` work as on ``Mailer``, the outbox's calls in a thread.
    """

    def __init__(
        self,
        settings: EmailSettings,
        *,
        transport: AsyncTransport | None = None,
        directory: Directory | None = None,
        suppressions: Suppressions | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        outbox: Outbox | None = None,
    ) -> None:
        if transport is None:
            smtp = _active_smtp(settings)
            # The asyncio SMTP driver, imported only by the mailers that need it.
            driver = import_module("notifymail.transport.asyncsmtp").AsyncSmtpTransport
            transport = cast(AsyncTransport, driver(smtp))
        super().__init__(settings, transport, directory, suppressions, clock, outbox)
        self._sleep = sleep

    async def __aenter__(self) -> Self:
        """Keep one connection for every send inside the block (opened by the first)."""
        await self.transport.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.transport.__aexit__(exc_type, exc, traceback)

    async def send(self, message: Message) -> DeliveryReport:
        """Send system mail as one envelope, as [`send`][notifymail.mailer.Mailer.send] does."""
        envelope = compose(message, self.settings.active_sender)
        async with self:  # one connection for the retries too
            return send_report(await self._hand_over(envelope))

    async def notify(self, notification: Notification) -> DeliveryReport:
        """Send an alert or subscription to its recipients, as
        [`Mailer.notify`][notifymail.mailer.Mailer.notify] does; the suppression list is
        read and written in a worker thread, off the event loop."""
        if self.suppressions is None:  # nothing to read: no thread
            recipients, suppressed = self._without_suppressed(notification)
        else:
            recipients, suppressed = await asyncio.to_thread(
                self._without_suppressed, notification
            )
        batches = self._batches(recipients)
        envelopes: list[Envelope] = []
        sender = self.settings.active_sender
        for envelope in notification_envelopes(notification, sender, batches):
            envelopes.append(envelope)
            if len(envelopes) % _COMPOSE_CHUNK == 0:
                await asyncio.sleep(0)
        async with self:  # one connection for every envelope, even outside the host's block
            report = await self._hand_over_all(envelopes, suppressed)
        log_summary(len(envelopes), report)
        return report

    async def enqueue(self, item: Message | Notification, *, key: str | None = None) -> Queued:
        """Compose and store ``item``, as [`Mailer.enqueue`][notifymail.mailer.Mailer.enqueue]
        does; composition and the outbox's transaction run in a thread, off the loop."""
        return await asyncio.to_thread(self._enqueue, item, key)

    async def deliver_queued(self, *, limit: int | None = None) -> DeliveryReport:
        """Deliver what is due in the outbox, as
        [`Mailer.deliver_queued`][notifymail.mailer.Mailer.deliver_queued] does: on one
        connection, the next message's commands pipelined behind the one before it, each
        outcome committed before the next message's end of DATA. The outbox's and the
        suppression list's calls run in one thread of the call's own, one at a time,
        never on the event loop (but ``anticipate``, which never waits); the attempts
        run on the loop."""
        plan = self._drain(limit)
        answer: object = None
        error: BaseException | None = None
        # A cancellation that came during a store call: the plan is given the call's
        # answer (the envelopes it leased), then the cancellation, at its next step.
        cancelled: asyncio.CancelledError | None = None
        store = _StoreThread()
        try:
            async with self:  # one connection for the whole call
                while not isinstance(step := advance(plan, answer, error), DeliveryReport):
                    answer, error = None, None
                    if cancelled is not None:
                        error, cancelled = cancelled, None
                        continue
                    try:
                        if isinstance(step, Send):
                            await self._send_batch(step.batch, store)
                        else:
                            answer, cancelled = await store.answer(step.call)
                    except BaseException as raised:
                        error = raised
        finally:
            store.close()
        if cancelled is not None:
            raise cancelled
        return step

    async def send_test_email(self, to: str) -> DeliveryReport:
        """Send a short message to ``to`` saying that email is set up."""
        return await self.send(_test_message(to))

    async def verify(self, *, autocorrect: bool = False) -> VerifyResult:
        """Check the active SMTP server (connect, TLS, login, quit) without sending, as
        `Mailer.verify` does, on the event loop: no thread, no blocking call.

        The check goes through the mailer's transport when it has a server to check
        ([`probe`][notifymail.transport.base.AsyncTransport.probe]), so a private CA or an
        OAuth2 token given to it counts here too; otherwise through an asyncio SMTP
        transport for the settings.
        """
        from notifymail.verify import verify_async_transport, verify_smtp_async

        smtp = _active_smtp(self.settings)
        result = await verify_async_transport(self.transport, smtp, autocorrect=autocorrect)
        return await verify_smtp_async(smtp, autocorrect=autocorrect) if result is None else result

    async def _hand_over_all(
        self, envelopes: list[Envelope], suppressed: tuple[str, ...]
    ) -> DeliveryReport:
        """Hand envelopes over as [`Mailer`][notifymail.Mailer] does, in tasks; the
        suppression list is written in a worker thread, off the event loop."""
        dispatch, workers = self._dispatch(envelopes)
        feed = _AsyncFeed(dispatch, self._throttle, self._clock, self._sleep)
        await _in_tasks([self.transport._send_feed(feed) for _ in range(workers)])
        bounced = [handed for handed in dispatch.handed if handed.refused]
        if bounced and self.suppressions is not None:
            await asyncio.to_thread(self._record_all_hard_bounces, bounced)
        return _report(dispatch.handed, suppressed)

    async def _send_batch(self, batch: Claimed, store: _StoreThread) -> None:
        """Hand a batch of the outbox's envelopes over on one connection, as `Mailer`
        does; the batch's calls (lease, outcome, suppression list) run in ``store``."""
        feed = _AsyncBatchFeed(batch, store, self._throttle, self._clock, self._sleep)
        await self.transport._send_feed(feed)

    async def _hand_over(self, envelope: Envelope) -> Handed:
        """Deliver one envelope with the retry policy (see `hand_over`)."""
        plan = hand_over(envelope, self.settings.delivery.retry)
        step = next(plan)
        while True:
            if step.wait:
                await self._sleep(step.wait)
            try:
                step = plan.send(await self._attempt(step.envelope))
            except StopIteration as done:
                handed: Handed = done.value
                return handed

    async def _attempt(self, envelope: Envelope) -> Delivery | DeliveryError:
        """Hand ``envelope`` to the transport once, as `Mailer._attempt` does."""
        pacer = (
            None
            if self._throttle is None
            else _AsyncPacer(self._throttle, self._clock, self._sleep)
        )
        token = ASYNC_PACER.set(pacer)
        try:
            return await self.transport.send(envelope)
        except DeliveryError as error:
            return error
        finally:
            ASYNC_PACER.reset(token)
            if pacer is not None:
                pacer.finish()


class _Reservations:
    """One attempt's view of its mailer's throttle: what it admitted, to finish after."""

    def __init__(self, throttle: Throttle, clock: Callable[[], float]) -> None:
        self._throttle = throttle
        self._clock = clock
        self._admitted = 0

    def reserve(self, recipients: int) -> float:
        wait = self._throttle.reserve(recipients, self._clock)
        if not wait:
            self._admitted += recipients
        return wait

    def finish(self) -> None:
        if self._admitted:
            self._throttle.finish(self._admitted, self._clock)
            self._admitted = 0


class _Pacer(_Reservations):
    """The `Pacer` a ``Mailer`` installs for one attempt."""

    def __init__(
        self, throttle: Throttle, clock: Callable[[], float], sleep: Callable[[float], object]
    ) -> None:
        super().__init__(throttle, clock)
        self._sleep = sleep

    def wait(self, seconds: float) -> None:
        self._sleep(seconds)


class _AsyncPacer(_Reservations):
    """The asyncio pacer an ``AsyncMailer`` installs for one attempt."""

    def __init__(
        self,
        throttle: Throttle,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[object]],
    ) -> None:
        super().__init__(throttle, clock)
        self._sleep = sleep

    async def wait(self, seconds: float) -> None:
        await self._sleep(seconds)


class _FeedBase:
    """A notification's `Dispatch` (or a batch of the outbox's envelopes) as the
    transport sees it: envelopes to take, outcomes to report. The throttle admits an
    envelope's recipients when its connection takes it, right before its MAIL FROM is
    written, and counts them until a second after it is done with (`Throttle.finish`)."""

    def __init__(
        self, dispatch: Handing, throttle: Throttle | None, clock: Callable[[], float]
    ) -> None:
        self._dispatch = dispatch
        self._throttle = throttle
        self._clock = clock

    def ready(self) -> Envelope | None:
        attempt = self._take_ready()
        if attempt is None:
            return None
        if self._admit(attempt.envelope) > 0:  # the caller cannot wait: it waits its turn
            self._give_back(attempt)
            return None
        return attempt.envelope

    def prepare(self) -> None:
        self._dispatch.prepare()

    def _record(self, envelope: Envelope, outcome: Delivery | DeliveryError) -> None:
        """Tell the dispatch what became of ``envelope``; the throttle counts its
        recipients a second more."""
        self._finish(envelope)
        self._dispatch.done(envelope, outcome, self._clock())

    def _finish(self, envelope: Envelope) -> None:
        if self._throttle is not None:
            self._throttle.finish(len(envelope.recipients), self._clock)

    def _take_ready(self) -> Attempt | None:
        return self._dispatch.take(self._clock(), ready_only=True)

    def _give_back(self, attempt: Attempt) -> None:
        self._dispatch.give_back(attempt.envelope)

    def _take(self) -> Attempt | None:
        return self._dispatch.take(self._clock(), ready_only=False)

    def _admit(self, envelope: Envelope) -> float:
        """0 once the throttle admitted ``envelope``'s recipients, else the wait first."""
        if self._throttle is None:
            return 0.0
        return self._throttle.reserve(len(envelope.recipients), self._clock)


class _Feed(_FeedBase):
    """The blocking feed: waits with the mailer's ``sleep``."""

    def __init__(
        self,
        dispatch: Handing,
        throttle: Throttle | None,
        clock: Callable[[], float],
        sleep: Callable[[float], object],
    ) -> None:
        super().__init__(dispatch, throttle, clock)
        self._sleep = sleep

    def next(self) -> Envelope | None:
        attempt = self._take()
        if attempt is None:
            return None
        if attempt.wait > 0:
            self._sleep(attempt.wait)
        while (wait := self._admit(attempt.envelope)) > 0:
            self._sleep(wait)
        return attempt.envelope

    def done(self, envelope: Envelope, outcome: Delivery | DeliveryError) -> None:
        self._record(envelope, outcome)


class _AsyncFeed(_FeedBase):
    """The asyncio feed of a notification: awaits the mailer's ``sleep``."""

    def __init__(
        self,
        dispatch: Handing,
        throttle: Throttle | None,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[object]],
    ) -> None:
        super().__init__(dispatch, throttle, clock)
        self._sleep = sleep

    async def next(self) -> Envelope | None:
        attempt = await self._next_attempt()
        if attempt is None:
            return None
        if attempt.wait > 0:
            await self._sleep(attempt.wait)
        while (wait := self._admit(attempt.envelope)) > 0:
            await self._sleep(wait)
        return attempt.envelope

    def done(
        self, envelope: Envelope, outcome: Delivery | DeliveryError
    ) -> asyncio.Future[Any] | None:
        self._record(envelope, outcome)
        return None

    async def _next_attempt(self) -> Attempt | None:
        return self._take()


class _AsyncBatchFeed(_AsyncFeed):
    """A batch of the outbox's envelopes as an asyncio feed. `Claimed`'s calls block on
    the store, so they run in the drain's `_StoreThread`, off the event loop, and the
    feed keeps envelopes taken ahead: ``next`` takes two, and recording an outcome also
    takes the next (`Claimed.follow`, one call for both).

    While an outcome is recorded the connection goes on with the next message, all but
    its content (see ``_driver.Record``): ``ready`` and ``next`` hand out what was taken
    ahead (``next`` asks the store only when nothing was, its call queued behind the
    recording), and ``prepare`` waits its turn. The batch is the store thread's until
    the recording is done; the feed's own state is the loop's."""

    def __init__(
        self,
        batch: Claimed,
        store: _StoreThread,
        throttle: Throttle | None,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[object]],
    ) -> None:
        super().__init__(batch, throttle, clock, sleep)
        self._batch = batch
        self._store = store
        self._taken: deque[Attempt] = deque()  # taken ahead, not handed out
        self._recording: asyncio.Future[Any] | None = None

    def done(self, envelope: Envelope, outcome: Delivery | DeliveryError) -> asyncio.Future[Any]:
        self._finish(envelope)
        back: list[Attempt] = []
        if server_unavailable(outcome):  # the batch stops: what was taken ahead is deferred
            back, self._taken = list(self._taken), deque()
        recording = self._store.submit(
            functools.partial(self._follow, back, envelope, outcome, self._clock())
        )
        recording.add_done_callback(self._took)  # before the transport's own callback
        self._recording = recording
        return recording

    def prepare(self) -> None:
        if self._recording is None or self._recording.done():
            super().prepare()

    def _follow(
        self,
        back: list[Attempt],
        envelope: Envelope,
        outcome: Delivery | DeliveryError,
        now: float,
    ) -> Attempt | None:
        """Give ``back`` back, record ``envelope``'s outcome and take the next envelope
        (in the store's thread)."""
        for attempt in reversed(back):
            self._batch.give_back(attempt.envelope)
        return self._batch.follow(envelope, outcome, now)

    def _took(self, recording: asyncio.Future[Any]) -> None:
        failed = recording.cancelled() or recording.exception() is not None
        if not failed and (attempt := recording.result()) is not None:
            self._taken.append(attempt)

    def _take_ready(self) -> Attempt | None:
        return self._taken.popleft() if self._taken else None

    def _give_back(self, attempt: Attempt) -> None:
        self._taken.appendleft(attempt)

    async def _next_attempt(self) -> Attempt | None:
        if (attempt := self._take_ready()) is not None:
            return attempt
        taken = await self._store.call(functools.partial(self._take_two, self._clock()))
        attempt, following = cast("tuple[Attempt | None, Attempt | None]", taken)
        if following is not None:
            self._taken.append(following)
        return attempt

    def _take_two(self, now: float) -> tuple[Attempt | None, Attempt | None]:
        """The envelope to send, and the one to queue behind it (in the store's thread)."""
        first = self._batch.take(now, ready_only=False)
        return first, None if first is None else self._batch.take(now, ready_only=False)


def _report(handed: Iterable[Handed], suppressed: tuple[str, ...]) -> DeliveryReport:
    """The report of a notification: what became of each envelope, and who was left out."""
    tally = Tally(suppressed)
    for each in handed:
        tally.add(each)
    return tally.report()


def _in_threads(work: Callable[[], None], count: int, stop: Callable[[], None]) -> None:
    """Run ``work`` in ``count`` threads at once (this one among them); at the first
    exception in any of them (Ctrl-C in this one), ``stop`` the others' work, wait for
    them, and raise it."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as error:  # raised in the calling thread below
            stop()
            errors.append(error)

    threads = [threading.Thread(target=run, name="notifymail-send") for _ in range(count - 1)]
    for thread in threads:
        thread.start()
    try:
        work()
    except BaseException:
        stop()
        raise
    finally:
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]


async def _in_tasks(work: list[Coroutine[Any, Any, None]]) -> None:
    """Await ``work`` in tasks at once; at the first exception, or a cancellation, cancel
    the rest and raise it."""
    if len(work) == 1:
        await work[0]
        return
    tasks = [asyncio.ensure_future(coroutine) for coroutine in work]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _StoreThread:
    """A thread of its own for an asyncio drain's blocking calls to the outbox, made one
    at a time in the order asked. Handing a call over is a queue's put and a wake-up of
    the event loop: far less than a task of the default executor, which counts when
    every envelope's outcome makes one."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._calls: queue.SimpleQueue[_StoreCall | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="notifymail-outbox", daemon=True)
        self._thread.start()

    def submit(self, function: Callable[[], object]) -> asyncio.Future[Any]:
        """Have ``function`` called in the thread, after the calls submitted before it;
        the future gives what it returns (or raises). Never cancel it."""
        result: asyncio.Future[Any] = self._loop.create_future()
        self._calls.put((function, result))
        return result

    async def answer(
        self, function: Callable[[], object]
    ) -> tuple[object, asyncio.CancelledError | None]:
        """What ``function`` returns (or raises), called in the thread, and the caller's
        cancellation if one came meanwhile: a cancelled caller still waits for the call
        to end, so that the outbox is never used by two calls at once behind the
        drain's back, and what the call did (a lease) is not lost."""
        return await uncancelled(self.submit(function))

    async def call(self, function: Callable[[], object]) -> object:
        """`answer`'s value; a cancellation that came meanwhile is raised after the call."""
        return await finished(self.submit(function))

    def close(self) -> None:
        """Let the thread end once the calls asked are made."""
        self._calls.put(None)

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            function, result = call
            try:
                value = function()
            except BaseException as error:  # raised where the call was awaited
                self._loop.call_soon_threadsafe(result.set_exception, error)
            else:
                self._loop.call_soon_threadsafe(result.set_result, value)


_StoreCall: TypeAlias = "tuple[Callable[[], object], asyncio.Future[Any]]"


def _active_smtp(settings: EmailSettings) -> SmtpSettings:
    smtp = settings.active_smtp
    if smtp is None:
        raise _no_server()
    return smtp


def _no_server() -> ConfigError:
    return ConfigError(
        "smtp: no SMTP server is configured (set smtp, or MB_EMAIL_SMTP_HOST)", field="smtp"
    )


def _test_message(to: str) -> Message:
    return Message(
        to=(to,), subject="Test email from notifymail", text=_TEST_TEXT, html=_TEST_HTML
    )


_TEST_TEXT = (
    "Your email settings work.\n\n"
    "This is a test message sent by notifymail to confirm that email is set up.\n"
)
_TEST_HTML = (
    "<p><strong>Your email settings work.</strong></p>\n"
    "<p>This is a test message sent by notifymail to confirm that email is set up.</p>\n"
)
