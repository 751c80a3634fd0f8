"""SMTP sinks for the benchmarks, each run in a process of its own on 127.0.0.1.

``asyncio``: a minimal server that answers every command at once, so the server's cost
does not hide the client's; it offers PIPELINING. ``slow``: the same, but each reply
waits 10 ms, as a relay across a network does, so that a client's concurrency shows.
``delay``: the same, but only the replies to MAIL, RCPT and the end of DATA wait 10 ms,
one command after another on each connection, as a relay that takes that long to accept
a sender, a recipient or a message. ``aiosmtpd``: a real SMTP server with a discarding
handler.

    python bench/sinks.py asyncio 127.0.0.1 2525
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

_EHLO = (
    b"250-sink.localhost\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
    b"250 SIZE 104857600\r\n"
)


_DELAYED = (b"MAIL", b"RCPT", b".")  # the ``delay`` sink's slow replies ("." ends DATA)


async def _handle(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    delay: float = 0.0,
    delayed: tuple[bytes, ...] | None = None,
    grouped: bool = True,
) -> None:
    """Serve one connection; ``delay`` before every reply, or only those to ``delayed``;
    ``grouped``: the replies to pipelined commands go out together (see ``send``)."""
    if delay:  # replies come apart: Nagle's algorithm would hold one for the client's ACK
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    replies: list[bytes] = []

    async def reply(line: bytes, verb: bytes = b"") -> None:
        if delay and (delayed is None or verb in delayed):
            await asyncio.sleep(delay)
        replies.append(line)

    async def send() -> None:
        """Write the replies so far, unless ``grouped`` and another command of the
        client's group is already here: the replies to pipelined commands then go out
        together, as RFC 2920 3.2 asks of a server and as Postfix does (its output is
        flushed when its input runs dry). StreamReader has no public way to ask whether
        a line is waiting: its buffer is peeked at."""
        if replies and (not grouped or b"\n" not in reader._buffer):
            writer.write(b"".join(replies))
            replies.clear()
            await writer.drain()

    try:
        await reply(b"220 sink.localhost ESMTP\r\n")
        while True:
            await send()
            if not (line := await reader.readline()):
                break
            verb = line[:4].upper()
            if verb in (b"EHLO",):
                await reply(_EHLO)
            elif verb == b"DATA":
                await reply(b"354 go ahead\r\n")
                await send()
                await reader.readuntil(b"\r\n.\r\n")
                await reply(b"250 2.0.0 queued\r\n", b".")
            elif verb == b"QUIT":
                await reply(b"221 bye\r\n")
                await send()
                break
            else:
                await reply(b"250 ok\r\n", verb)
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def _serve_asyncio(
    host: str,
    port: int,
    delay: float = 0.0,
    delayed: tuple[bytes, ...] | None = None,
    grouped: bool = True,
) -> None:
    handle = functools.partial(_handle, delay=delay, delayed=delayed, grouped=grouped)
    server = await asyncio.start_server(handle, host, port, limit=2**24)
    async with server:
        await server.serve_forever()


def _serve_aiosmtpd(host: str, port: int) -> None:
    from aiosmtpd.controller import Controller

    class Discard:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:  # noqa: N802
            return "250 2.0.0 queued"

    controller = Controller(Discard(), hostname=host, port=port, enable_SMTPUTF8=True)
    controller.start()
    try:
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
    finally:
        controller.stop()


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (aiosmtpd cannot bind port 0)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def running_sink(kind: str) -> Iterator[int]:
    """Start a sink process of ``kind`` and yield its port; stop it afterwards."""
    port = free_port()
    process = subprocess.Popen(  # noqa: S603 - our own script
        [sys.executable, os.path.abspath(__file__), kind, "127.0.0.1", str(port)],
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                    if probe.recv(64).startswith(b"220"):
                        break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"the {kind} sink did not start") from None
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def main() -> None:
    kind, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if kind in ("asyncio", "asyncio-each", "slow", "delay"):
        delay = 0.0 if kind.startswith("asyncio") else 0.01
        delayed = _DELAYED if kind == "delay" else None
        grouped = kind == "asyncio"
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve_asyncio(host, port, delay, delayed, grouped))
    elif kind == "aiosmtpd":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        _serve_aiosmtpd(host, port)
    else:
        raise SystemExit(f"unknown sink {kind!r}: asyncio, asyncio-each, slow, delay or aiosmtpd")


if __name__ == "__main__":
    main()
