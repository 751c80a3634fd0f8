"""The two SMTP drivers behind one blocking interface, so that one test pins a behaviour
of both (the ``driver`` fixture in ``conftest.py`` runs it once each).

``Driver("blocking")`` builds ``SmtpTransport`` and ``Mailer``; ``Driver("asyncio")``
builds ``AsyncSmtpTransport`` and ``AsyncMailer`` and runs every call to completion on
one event loop of its own, so a connection kept by ``with transport:`` lives on the
loop that opened it, as in an application. Closing the driver closes the loop; a
connection left open then fails the test (``ResourceWarning`` is an error).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

import notifymail as nm

T = TypeVar("T")

SMTP_LOGGER = "notifymail.transport.smtp"


class Driver:
    """Builds transports and mailers of one kind: ``"blocking"`` or ``"asyncio"``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.is_async = kind == "asyncio"
        self.logger = "notifymail.transport.asyncsmtp" if self.is_async else SMTP_LOGGER
        self._loop = asyncio.new_event_loop() if self.is_async else None

    def __repr__(self) -> str:
        return self.kind

    def __enter__(self) -> Driver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop is not None:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        return self._loop.run_until_complete(coroutine)

    def transport(self, smtp: nm.SmtpSettings, **options: Any) -> Any:
        """An ``SmtpTransport``, or an ``AsyncSmtpTransport`` called as if blocking."""
        if not self.is_async:
            return nm.SmtpTransport(smtp, **options)
        return _Blocking(self, nm.AsyncSmtpTransport(smtp, **options))

    def mailer(self, settings: nm.EmailSettings, **options: Any) -> Any:
        """A ``Mailer``, or an ``AsyncMailer`` called as if blocking, on a ``transport``
        from ``transport()`` when one is given. A ``sleep`` given is called by the asyncio
        mailer too (it never waits: tests count the waits)."""
        if isinstance(options.get("transport"), _Blocking):
            options["transport"] = options["transport"].target
        if not self.is_async:
            return nm.Mailer(settings, **options)
        sleep = options.pop("sleep", None)
        if sleep is not None:
            options["sleep"] = _awaitable(sleep)
        return _Blocking(self, nm.AsyncMailer(settings, **options))


class _Blocking:
    """An asyncio transport or mailer whose coroutine methods and ``async with`` are
    run to completion on the driver's loop; every other attribute is its own."""

    def __init__(self, driver: Driver, target: Any) -> None:
        self._driver = driver
        self.target = target

    def __repr__(self) -> str:
        return repr(self.target)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.target, name)
        if not asyncio.iscoroutinefunction(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._driver.run(attribute(*args, **kwargs))

        return call

    def __enter__(self) -> _Blocking:
        self._driver.run(self.target.__aenter__())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._driver.run(self.target.__aexit__(exc_type, exc, traceback))


def _awaitable(sleep: Any) -> Any:
    async def asleep(seconds: float) -> None:
        sleep(seconds)

    return asleep
