"""A pytest plugin, so a host application's tests see what would have been sent.

Registered through the ``pytest11`` entry point, it gives every test a fresh
``mail_outbox`` and a ``mailer`` (and an ``async_mailer`` for asyncio code) wired to it;
no test ever monkeypatches smtplib. Override ``notifymail_settings``,
``notifymail_directory`` or ``notifymail_suppressions`` in a host's ``conftest.py`` to
test with its own settings, people and suppression list. Both mailers run on a fake
clock, so retries and the throttle cost a test no real time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from notifymail.mailer import AsyncMailer, Mailer
from notifymail.policy import Directory, InMemoryDirectory
from notifymail.settings import EmailSettings, SenderSettings
from notifymail.transport.memory import AsyncMemoryTransport, MemoryTransport, Sent

if TYPE_CHECKING:
    from notifymail.suppressions import Suppressions

__all__ = [
    "async_mail_transport",
    "async_mailer",
    "mail_outbox",
    "mail_transport",
    "mailer",
    "notifymail_directory",
    "notifymail_settings",
    "notifymail_suppressions",
]


class _FakeClock:
    """Time that passes only when slept through."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def notifymail_settings() -> EmailSettings:
    """The ``mailer``'s settings: self-hosted OSS, from notifications@example.com."""
    return EmailSettings(sender=SenderSettings(from_address="notifications@example.com"))


@pytest.fixture
def notifymail_directory() -> Directory:
    """The ``mailer``'s directory of account holders: empty, so everyone is an outsider."""
    return InMemoryDirectory()


@pytest.fixture
def notifymail_suppressions() -> Suppressions | None:
    """The mailers' suppression list: none; return an ``InMemorySuppressions`` to test one."""
    return None


@pytest.fixture
def mail_transport() -> MemoryTransport:
    """A fresh [`MemoryTransport`][notifymail.MemoryTransport]; script failures with ``fail_next``
    and ``refuse``."""
    return MemoryTransport()


@pytest.fixture
def mail_outbox(mail_transport: MemoryTransport) -> list[Sent]:
    """Everything ``mailer`` handed over during this test, one [`Sent`][notifymail.Sent] per
    envelope."""
    return mail_transport.outbox


@pytest.fixture
def mailer(
    notifymail_settings: EmailSettings,
    notifymail_directory: Directory,
    notifymail_suppressions: Suppressions | None,
    mail_transport: MemoryTransport,
) -> Mailer:
    """A [`Mailer`][notifymail.Mailer] on ``mail_transport``, with retries and throttling on a fake
    clock."""
    clock = _FakeClock()
    return Mailer(
        notifymail_settings,
        transport=mail_transport,
        directory=notifymail_directory,
        suppressions=notifymail_suppressions,
        clock=clock,
        sleep=clock.sleep,
    )


@pytest.fixture
def async_mail_transport(mail_outbox: list[Sent]) -> AsyncMemoryTransport:
    """A fresh [`AsyncMemoryTransport`][notifymail.AsyncMemoryTransport] whose outbox is
    ``mail_outbox``."""
    transport = AsyncMemoryTransport()
    transport.outbox = mail_outbox  # one outbox, whichever mailer a test uses
    return transport


@pytest.fixture
def async_mailer(
    notifymail_settings: EmailSettings,
    notifymail_directory: Directory,
    notifymail_suppressions: Suppressions | None,
    async_mail_transport: AsyncMemoryTransport,
) -> AsyncMailer:
    """An [`AsyncMailer`][notifymail.AsyncMailer] on ``async_mail_transport``, on a fake clock.

    Creating it needs no running event loop; await its methods in the test's own loop.
    """
    clock = _FakeClock()
    return AsyncMailer(
        notifymail_settings,
        transport=async_mail_transport,
        directory=notifymail_directory,
        suppressions=notifymail_suppressions,
        clock=clock,
        sleep=clock.asleep,
    )
