"""The max_recipients_per_second throttle, measured where it matters: at a real server.

Eight threads share one Mailer, and eight tasks one AsyncMailer, each over four pooled
connections, while a busy process beside the test competes for the CPU. The aiosmtpd
server stamps every RCPT TO as it arrives; no one-second window of stamps may hold more
recipients than the limit.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

import notifymail as nm
from smtp_servers import SmtpServer
from test_load import busiest_second

RATE = 16
LANES = 8
PER_LANE = 6  # 48 recipients: three seconds at 16 a second


@pytest.fixture
def busy_neighbour() -> Iterator[None]:
    """A process that keeps one CPU busy for the length of the test."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait(timeout=10)


def recipients(lane: int) -> list[str]:
    return [f"lane{lane}-{n}@partner.example" for n in range(PER_LANE)]


def settings(server: SmtpServer) -> nm.EmailSettings:
    return nm.EmailSettings(
        sender=nm.SenderSettings(from_address="alerts@example.com"),
        smtp=server.settings(timeout=10.0, max_connections=4),
        delivery=nm.DeliverySettings(max_recipients_per_second=RATE),
    )


def assert_paced_at_the_server(server: SmtpServer, reports: list[nm.DeliveryReport]) -> None:
    expected = Counter(r for lane in range(LANES) for r in recipients(lane))
    assert all(report.ok for report in reports)
    assert Counter(r for report in reports for r in report.accepted) == expected
    assert Counter(r for m in server.handler.messages for r in m.recipients) == expected
    stamps = [when for when, _ in server.handler.arrivals]
    assert len(stamps) == len(expected)
    assert busiest_second([(when, 1) for when in stamps]) == RATE  # full, never more
    assert max(stamps) - min(stamps) >= len(expected) / RATE - 1.0  # paced, not bunched


def test_eight_threads_never_put_more_than_the_limit_in_any_second_at_the_server(
    smtp_server: Callable[..., SmtpServer], busy_neighbour: None
) -> None:
    server = smtp_server()
    mailer = nm.Mailer(settings(server))
    reports: list[nm.DeliveryReport] = []
    errors: list[BaseException] = []

    def lane(number: int) -> None:
        try:
            reports.append(mailer.notify(nm.Notification(recipients(number), "Paced", "x\n")))
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=lane, args=(n,)) for n in range(LANES)]
    with mailer:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert_paced_at_the_server(server, reports)


def test_eight_tasks_never_put_more_than_the_limit_in_any_second_at_the_server(
    smtp_server: Callable[..., SmtpServer], busy_neighbour: None
) -> None:
    server = smtp_server()
    mailer = nm.AsyncMailer(settings(server))  # on an AsyncSmtpTransport

    async def main() -> list[nm.DeliveryReport]:
        async with mailer:
            return await asyncio.wait_for(
                asyncio.gather(
                    *(
                        mailer.notify(nm.Notification(recipients(n), "Paced", "x\n"))
                        for n in range(LANES)
                    )
                ),
                timeout=30,
            )

    assert_paced_at_the_server(server, asyncio.run(main()))
