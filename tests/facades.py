"""The blocking and the asyncio facades behind one blocking interface, so that one test
pins a behaviour of both (the ``facade`` fixture in ``conftest.py`` runs it once each).

``Facade.mailer(...)`` builds a ``Mailer``, or an ``AsyncMailer`` whose every call runs
in ``asyncio.run``. Test transports are written once, blocking; the asyncio facade gets
them through ``AsyncOf`` (an ``AsyncTransport`` passed in is used as it is), an
``AsyncTransport`` whose hooks call theirs, so the
transport's own state (its outbox, its counters) is what the test asserts on either way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import notifymail as nm

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


class AsyncOf(nm.AsyncTransport):
    """An asyncio transport that hands each envelope to a blocking test transport."""

    def __init__(self, inner: nm.Transport) -> None:
        self.inner = inner

    async def open(self) -> None:
        self.inner.open()

    async def close(self) -> None:
        self.inner.close()

    @property
    def concurrency(self) -> int:
        return self.inner.concurrency

    async def deliver(self, envelope: nm.Envelope) -> nm.Delivery:
        await asyncio.sleep(0)
        return self.inner.deliver(envelope)


class Driven:
    """A mailer of either kind, called as if it were blocking.

    An ``AsyncMailer``'s calls each run in ``asyncio.run``, or, inside :meth:`within`, on
    the loop that holds its ``async with`` block.
    """

    def __init__(
        self, mailer: nm.Mailer | nm.AsyncMailer, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        self.mailer = mailer
        self._loop = loop

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        result = getattr(self.mailer, name)(*args, **kwargs)
        if not isinstance(self.mailer, nm.AsyncMailer):
            return result
        if self._loop is None:
            return run(result)
        return asyncio.run_coroutine_threadsafe(result, self._loop).result(timeout=30)

    def send(self, message: nm.Message) -> nm.DeliveryReport:
        report: nm.DeliveryReport = self._call("send", message)
        return report

    def notify(self, notification: nm.Notification) -> nm.DeliveryReport:
        report: nm.DeliveryReport = self._call("notify", notification)
        return report

    def enqueue(self, item: nm.Message | nm.Notification, *, key: str | None = None) -> nm.Queued:
        queued: nm.Queued = self._call("enqueue", item, key=key)
        return queued

    def deliver_queued(self, *, limit: int | None = None) -> nm.DeliveryReport:
        report: nm.DeliveryReport = self._call("deliver_queued", limit=limit)
        return report

    def send_test_email(self, to: str) -> nm.DeliveryReport:
        report: nm.DeliveryReport = self._call("send_test_email", to)
        return report

    def verify(self, *, autocorrect: bool = False) -> nm.VerifyResult:
        result: nm.VerifyResult = self._call("verify", autocorrect=autocorrect)
        return result

    def check_recipients(self, *args: Any, **kwargs: Any) -> None:
        self.mailer.check_recipients(*args, **kwargs)

    def suggest_recipients(self, *args: Any, **kwargs: Any) -> list[nm.Person]:
        return self.mailer.suggest_recipients(*args, **kwargs)

    def within(self, body: Callable[[Driven], None]) -> None:
        """Run ``body(self)`` inside the mailer's ``with`` (or ``async with``) block."""
        if isinstance(self.mailer, nm.AsyncMailer):
            mailer = self.mailer

            async def inside() -> None:
                async with mailer as entered:
                    assert entered is mailer
                    here = Driven(mailer, asyncio.get_running_loop())
                    await asyncio.to_thread(body, here)

            run(inside())
        else:
            with self.mailer as entered:
                assert entered is self.mailer
                body(self)


class Facade:
    """Builds mailers of one kind: ``"blocking"`` (Mailer) or ``"asyncio"`` (AsyncMailer)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.is_async = kind == "asyncio"

    def __repr__(self) -> str:
        return self.kind

    def mailer(
        self,
        settings: nm.EmailSettings,
        *,
        transport: nm.Transport | nm.AsyncTransport,
        directory: nm.Directory | None = None,
        suppressions: nm.Suppressions | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], object] | None = None,
        outbox: nm.Outbox | None = None,
    ) -> Driven:
        options: dict[str, Any] = {
            "directory": directory,
            "suppressions": suppressions,
            "outbox": outbox,
        }
        if clock is not None:
            options["clock"] = clock
        if sleep is not None:
            options["sleep"] = _awaitable(sleep) if self.is_async else sleep
        if isinstance(transport, nm.AsyncTransport):
            return Driven(nm.AsyncMailer(settings, transport=transport, **options))
        if self.is_async:
            return Driven(nm.AsyncMailer(settings, transport=AsyncOf(transport), **options))
        return Driven(nm.Mailer(settings, transport=transport, **options))


def _awaitable(sleep: Callable[[float], object]) -> Callable[[float], Coroutine[Any, Any, None]]:
    async def asleep(seconds: float) -> None:
        sleep(seconds)
        await asyncio.sleep(0)

    return asleep


class Blocking:
    """An asyncio transport whose ``send`` and ``send_many`` are called as if blocking;
    every other attribute is the transport's own.
    """

    def __init__(self, transport: nm.AsyncTransport) -> None:
        self.transport = transport

    def send(self, envelope: nm.Envelope) -> nm.Delivery:
        return run(self.transport.send(envelope))

    def send_many(self, envelopes: list[nm.Envelope]) -> list[nm.Delivery]:
        return run(self.transport.send_many(envelopes))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def memory_transport(kind: str) -> Any:
    """A fresh ``MemoryTransport``, or an ``AsyncMemoryTransport`` called as if blocking."""
    return nm.MemoryTransport() if kind == "blocking" else Blocking(nm.AsyncMemoryTransport())
