"""Interrupts and cancellations at the worst moments: every place in the pool is given
back and every connection closed, with both SMTP drivers (real sockets on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from collections.abc import Callable

import pytest

import notifymail as nm
from notifymail.transport._pool import Limits
from smtp_servers import ScriptedServer, make_envelope


def _smtp(
    *,
    quit_silent: bool = False,
    mail_silent: bool = False,
    stop_reading_after_data: bool = False,
    events: dict[str, threading.Event] | None = None,
) -> Callable[[ScriptedServer, socket.socket], None]:
    """A minimal server: greet, EHLO, MAIL/RCPT/DATA; optionally silent at QUIT or MAIL,
    or no longer reading once it said 354 to DATA."""

    def script(server: ScriptedServer, conn: socket.socket) -> None:
        conn.sendall(b"220 test ESMTP\r\n")
        while line := server.read_line(conn):
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                conn.sendall(b"250 test\r\n")
            elif verb == b"QUIT":
                if quit_silent:
                    if events is not None:
                        events["quit"].set()
                    while not server.stopping:
                        time.sleep(0.02)
                    return
                conn.sendall(b"221 bye\r\n")
                return
            elif verb == b"MAIL":
                if mail_silent:
                    assert events is not None
                    events["mail"].set()
                    while not server.stopping:
                        time.sleep(0.02)
                    return
                conn.sendall(b"250 ok\r\n")
            elif verb == b"RCPT":
                conn.sendall(b"250 ok\r\n")
            elif verb == b"DATA":
                conn.sendall(b"354 go\r\n")
                if stop_reading_after_data:
                    while not server.stopping:
                        time.sleep(0.02)
                    return
                while server.read_line(conn) not in (b".\r\n", b""):
                    pass
                conn.sendall(b"250 queued\r\n")
            else:
                conn.sendall(b"500 what\r\n")

    return script


def test_a_cancel_in_the_same_turn_as_a_timeout_still_gives_the_connection_back() -> None:
    """The watchdog resumes the steps, which ask to check the connection in, and the task
    is cancelled in the same turn of the loop: the checkin is still performed."""
    events = {"mail": threading.Event()}
    with ScriptedServer(_smtp(mail_silent=True, events=events)) as server:

        async def main() -> tuple[int, bool]:
            transport = nm.AsyncSmtpTransport(server.settings(timeout=0.3, max_connections=1))
            await transport.open()
            (slot,) = transport._pool._idle
            link = slot.connection
            task = asyncio.ensure_future(transport.deliver(make_envelope()))
            while not events["mail"].is_set():
                await asyncio.sleep(0.01)
            loop = asyncio.get_running_loop()
            loop.call_later(0.35, task.cancel)  # after the read's deadline (0.3 s)
            time.sleep(0.6)  # both timers are due in the same iteration: watchdog first
            with pytest.raises(asyncio.CancelledError):
                await task
            out = transport._pool._out
            still_open = not link.transport.is_closing()
            # A pool of one: the next send waits forever for the leaked place.
            try:  # with the bug: waits for the leaked place until the wait_for gives up
                await asyncio.wait_for(transport.deliver(make_envelope()), 1.0)
            except asyncio.TimeoutError:
                out = (out, "hung")
            except nm.DeliveryError:
                pass  # the server (silent at MAIL) was reached again: no hang
            link.transport.abort()
            return out, still_open

        out, still_open = asyncio.run(main())
    assert (out, still_open) == (0, False)


def test_a_cancel_while_an_expired_connection_quits_gives_the_place_back() -> None:
    events = {"quit": threading.Event()}
    with ScriptedServer(_smtp(quit_silent=True, events=events)) as server:

        async def main() -> int:
            transport = nm.AsyncSmtpTransport(server.settings(timeout=5.0, max_connections=1))
            transport._pool.limits = Limits(idle=0.0)  # every idle connection is stale
            await transport.open()
            with pytest.raises(asyncio.TimeoutError):  # cancelled while QUIT awaits its reply
                await asyncio.wait_for(transport.deliver(make_envelope()), 0.5)
            return transport._pool._out

        out = asyncio.run(main())
    assert out == 0  # the place ACQUIRE gave is free again


def test_a_cancelled_close_still_closes_every_connection() -> None:
    events = {"quit": threading.Event()}
    with ScriptedServer(_smtp(quit_silent=True, events=events)) as server:

        async def main() -> list[bool]:
            transport = nm.AsyncSmtpTransport(server.settings(timeout=5.0, max_connections=2))
            await asyncio.gather(
                transport.deliver(make_envelope()), transport.deliver(make_envelope())
            )
            links = [slot.connection for slot in transport._pool._idle]
            assert len(links) == 2
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(transport.close(), 0.5)
            closing = [link.transport.is_closing() for link in links]
            for link in links:
                link.transport.abort()
            return closing

        closing = asyncio.run(main())
    assert closing == [True, True]


def test_a_connection_whose_server_stopped_reading_is_closed_after_the_timeout() -> None:
    """A server that stops reading in DATA: the buffer never drains, and the connection is
    let go of anyway."""
    with ScriptedServer(_smtp(stop_reading_after_data=True)) as server:

        async def main() -> tuple[bool, int]:
            transport = nm.AsyncSmtpTransport(server.settings(timeout=0.5))
            await transport.open()
            (slot,) = transport._pool._idle
            link = slot.connection
            big = make_envelope(body=("y" * 76 + "\n") * 400_000)  # ~30 MB
            with pytest.raises(nm.DeliveryError):
                await transport.deliver(big)
            await asyncio.sleep(1.0)  # twice the timeout after the Close
            sock = link.transport.get_extra_info("socket")
            return link._closed.done(), sock.fileno()

        done, fileno = asyncio.run(main())
    assert done, f"the connection was never closed (fd {fileno} still open)"


def test_an_interrupt_while_an_expired_connection_quits_gives_the_place_back() -> None:
    events = {"quit": threading.Event()}
    with ScriptedServer(_smtp(quit_silent=True, events=events)) as server:
        transport = nm.SmtpTransport(server.settings(timeout=5.0, max_connections=1))
        transport._pool.limits = Limits(idle=0.0)
        transport.open()

        def interrupt(*_: object) -> None:
            raise KeyboardInterrupt

        old = signal.signal(signal.SIGALRM, interrupt)
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        try:
            with pytest.raises(KeyboardInterrupt):
                transport.deliver(make_envelope())
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        assert transport._pool._out == 0
