"""What only the asyncio driver promises: the event loop keeps running while it sends.

A probe task ticks every 10 ms and records the longest gap between two ticks; it must
stay under 50 ms while ``AsyncMailer.notify`` sends thousands of messages, or while it
or ``AsyncMailer.verify`` waits on a server that never answers. The objects the test session made before are frozen out of
the garbage collector's way meanwhile: a full collection of a large test process's heap
takes as long as the stall to catch, and would be the session's, not the driver's.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import threading
import time
from collections.abc import Awaitable
from typing import TypeVar

import pytest

import notifymail as nm
from smtp_servers import FaultyServer, ScriptedServer

SENDER = nm.SenderSettings(from_address="alerts@example.com")
TICK = 0.010
STALL = 0.050

T = TypeVar("T")


async def longest_stall(work: Awaitable[T]) -> tuple[float, T]:
    """Run ``work`` beside a task that ticks every 10 ms; the longest gap between ticks."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(TICK)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    gc.collect()
    gc.freeze()
    ticking = asyncio.ensure_future(probe())
    try:
        report = await work
    finally:
        done.set()
        await ticking
        gc.unfreeze()
    return max(gaps), report


def settings(smtp: nm.SmtpSettings, **delivery: object) -> nm.EmailSettings:
    return nm.EmailSettings(
        sender=SENDER,
        smtp=smtp,
        delivery=nm.DeliverySettings(**delivery),  # type: ignore[arg-type]
    )


def test_the_loop_never_stalls_while_notify_sends_two_thousand_messages():
    recipients = [f"guest{i}@example.net" for i in range(2000)]
    with FaultyServer(pipelining=True) as server:
        mailer = nm.AsyncMailer(settings(server.settings(timeout=5.0)))
        notification = nm.Notification(recipients, "Weekly", text="Up.\n")

        stall, report = asyncio.run(longest_stall(mailer.notify(notification)))

    assert report.ok
    assert len(server.transactions) == 2000
    assert stall < STALL, f"the event loop stalled for {stall * 1000:.0f} ms"


@pytest.mark.parametrize("suppressions", [None, nm.InMemorySuppressions()])
def test_notify_starts_a_thread_only_to_read_a_suppression_list(suppressions):
    mailer = nm.AsyncMailer(
        settings(nm.SmtpSettings(host="127.0.0.1", port=25)),
        transport=nm.AsyncMemoryTransport(),
        suppressions=suppressions,
    )
    notification = nm.Notification(["ann@example.net", "bob@example.net"], "Weekly", text=".")

    async def notify_counting_threads() -> tuple[nm.DeliveryReport, set[threading.Thread]]:
        before = set(threading.enumerate())
        report = await mailer.notify(notification)
        return report, set(threading.enumerate()) - before

    report, new_threads = asyncio.run(notify_counting_threads())

    assert sorted(report.accepted) == ["ann@example.net", "bob@example.net"]
    assert len(new_threads) == (0 if suppressions is None else 1)  # the loop's one worker


@pytest.mark.parametrize("greeting", [None, b"220 mail.test ESMTP\r\n"])
def test_the_loop_never_stalls_while_notify_waits_on_a_server_that_never_answers(
    silent_server, greeting
):
    server = silent_server(greeting)
    retry = nm.RetryPolicy(max_attempts=3, initial_interval=0.05, max_interval=0.1)
    mailer = nm.AsyncMailer(settings(server.settings(timeout=0.2, max_connections=4), retry=retry))
    notification = nm.Notification([f"guest{i}@example.net" for i in range(8)], "Weekly", text=".")
    started = time.monotonic()

    stall, report = asyncio.run(longest_stall(mailer.notify(notification)))

    assert set(report.failed) == set(notification.recipients)
    assert all(error.retryable for error in report.failed.values())
    assert time.monotonic() - started < 3.0  # 4 connections wait at once, never 8 in turn
    assert stall < STALL, f"the event loop stalled for {stall * 1000:.0f} ms"


async def verify_counting_threads(
    mailer: nm.AsyncMailer,
) -> tuple[float, nm.VerifyResult, set[threading.Thread]]:
    """``verify(autocorrect=True)`` beside the ticking task: the longest stall, the
    result, and the threads that appeared meanwhile. A worker thread (``to_thread``)
    would still be alive afterwards, idle in the loop's pool."""
    before = set(threading.enumerate())
    stall, result = await longest_stall(mailer.verify(autocorrect=True))
    return stall, result, set(threading.enumerate()) - before


NO_ANSWER = dict.fromkeys(("host", "port"), "Wrong host or port (no answer within 0.2 s)")


@pytest.mark.parametrize("greeting", [None, b"220 mail.test ESMTP\r\n"])
def test_the_loop_never_stalls_while_verify_waits_on_a_server_that_never_answers(
    silent_server, client_tls, greeting
):
    server = silent_server(greeting)
    smtp = server.settings(timeout=0.2)
    transport = nm.AsyncSmtpTransport(smtp, ssl_context=client_tls)
    mailer = nm.AsyncMailer(settings(smtp), transport=transport)

    # Every mode in turn (plain, TLS, STARTTLS, SSL), each waiting out the timeout.
    stall, result, new_threads = asyncio.run(verify_counting_threads(mailer))

    assert dict(result.errors) == NO_ANSWER
    assert len(server.accepted) == 4  # one connection per mode
    assert new_threads == set()
    assert stall < STALL, f"the event loop stalled for {stall * 1000:.0f} ms"


def test_verify_starts_no_thread_when_it_checks_the_settings_server_itself(silent_server):
    server = silent_server(b"220 mail.test ESMTP\r\n")
    # A memory transport has nothing to check: verify checks the settings' server.
    mailer = nm.AsyncMailer(
        settings(server.settings(timeout=0.2)), transport=nm.AsyncMemoryTransport()
    )

    _, result, new_threads = asyncio.run(verify_counting_threads(mailer))

    assert dict(result.errors) == NO_ANSWER
    assert len(server.accepted) == 4
    assert new_threads == set()


def test_a_cancelled_notify_closes_its_connections_and_frees_them(silent_server):
    server = silent_server(b"220 mail.test ESMTP\r\n")
    transport = nm.AsyncSmtpTransport(server.settings(timeout=5.0, max_connections=2))
    mailer = nm.AsyncMailer(settings(server.settings()), transport=transport)
    notification = nm.Notification(["ann@example.net", "bob@example.net"], "Weekly", text=".")

    async def cancel_midway() -> None:
        sending = asyncio.ensure_future(mailer.notify(notification))
        while len(server.accepted) < 2:  # both connections wait for the reply to EHLO
            await asyncio.sleep(0.01)
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending

    asyncio.run(cancel_midway())  # an unclosed connection would fail the test (warning)

    assert transport._pool.acquire() is True  # both places free again


def test_a_delivery_cancelled_while_it_waits_for_a_free_connection_takes_no_place(silent_server):
    server = silent_server(b"220 mail.test ESMTP\r\n")
    transport = nm.AsyncSmtpTransport(server.settings(timeout=5.0, max_connections=1))
    envelope = nm.Envelope(sender="a@example.com", recipients=("b@example.net",), raw=b"x\r\n")

    async def cancel_both() -> None:
        first = asyncio.ensure_future(transport.deliver(envelope))
        while len(server.accepted) < 1:  # the one connection waits for the reply to EHLO
            await asyncio.sleep(0.01)
        second = asyncio.ensure_future(transport.deliver(envelope))
        await asyncio.sleep(0.05)  # the second waits for the connection the first holds
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        assert not first.done()  # the first, untouched, still waits for the server
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first

    asyncio.run(cancel_both())  # an unclosed connection would fail the test (warning)

    assert len(server.accepted) == 1  # the second never connected
    assert transport._pool.acquire() is True  # the one place is free again


def test_a_server_flooding_an_idle_connection_fills_no_more_than_the_buffer_limit():
    from notifymail.transport import asyncsmtp

    flooded = threading.Event()

    def script(server: ScriptedServer, connection: socket.socket) -> None:
        connection.sendall(b"220 x ESMTP\r\n")
        server.read_line(connection)
        connection.sendall(b"250 x\r\n")
        chunk = b"250-" + b"x" * 65531 + b"\r\n"  # a reply nobody asked for, endless
        with contextlib.suppress(OSError):
            for _ in range(64):  # 4 MiB offered; the client stops reading after its limit
                connection.settimeout(0.5)
                connection.sendall(chunk)
        flooded.set()
        while server.read_line(connection):
            pass

    async def open_and_wait() -> int:
        transport = nm.AsyncSmtpTransport(server.settings(timeout=5.0))
        await transport.open()
        try:
            while not flooded.is_set():
                await asyncio.sleep(0.01)
            (slot,) = transport._pool._idle
            return len(slot.connection._received)
        finally:
            await transport.close()

    with ScriptedServer(script) as server:
        buffered = asyncio.run(open_and_wait())

    assert 0 < buffered <= asyncsmtp._BUFFER_LIMIT + 256 * 1024  # one read past the limit
