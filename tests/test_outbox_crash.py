"""The outbox's promise under kill -9, with real processes and a real SMTP server: nothing
lost, and at most one envelope repeated per kill; two workers never deliver one envelope
both."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from aiosmtpd.controller import Controller

import notifymail as nm
from smtp_servers import HOST, free_port

WORKER = Path(__file__).with_name("outbox_worker.py")
SETTINGS = nm.EmailSettings(sender=nm.SenderSettings(from_address="alerts@example.com"))
HELD = 0.5  # seconds the server holds its reply to a message it has taken


class TakingHandler:
    """Takes every message, counting per recipient and per worker (its EHLO name).

    ``hold`` (set by the test): the next message is taken, and its 250 held back for a
    while, with ``holding`` set meanwhile: a worker killed then has sent the end of DATA
    and will never see the reply. The server has the message either way.
    """

    def __init__(self, *, pipelining: bool = False) -> None:
        self.pipelining = pipelining
        self.lock = threading.Lock()
        self.taken: Counter[str] = Counter()
        self.by_worker: Counter[str] = Counter()
        self.hold = threading.Event()
        self.holding = threading.Event()

    async def handle_EHLO(  # noqa: N802
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:  # the next message's commands then go out behind the last's
            return [responses[0], "250-PIPELINING", *responses[1:]]
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        with self.lock:
            self.taken.update(envelope.rcpt_tos)
            self.by_worker[session.host_name] += 1
            held = self.hold.is_set()
            self.hold.clear()
        if held:
            self.holding.set()
            await asyncio.sleep(HELD)
        return "250 2.0.0 Queued"

    def total(self) -> int:
        with self.lock:
            return sum(self.taken.values())


@pytest.fixture(params=["one message at a time", "pipelining"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[TakingHandler, int]]:
    handler = TakingHandler(pipelining=request.param == "pipelining")
    controller = Controller(
        handler, hostname=HOST, port=free_port(), server_hostname="mail.test", ready_timeout=5
    )
    controller.start()
    try:
        yield handler, controller.port
    finally:
        controller.stop()


class Workers:
    """Worker processes on one outbox file, forked by ``outbox_worker.py`` on request."""

    def __init__(self, database: Path, port: int, log: IO[str], facade: str) -> None:
        self._launcher = subprocess.Popen(  # noqa: S603 - our own interpreter and script
            [sys.executable, str(WORKER), str(database), str(port), facade],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        self.running: set[int] = set()

    def start(self, name: str) -> int:
        """Start a worker called ``name``; its pid."""
        assert self._launcher.stdin is not None
        assert self._launcher.stdout is not None
        self._launcher.stdin.write(f"{name}\n")
        self._launcher.stdin.flush()
        pid = int(self._launcher.stdout.readline())
        self.running.add(pid)
        return pid

    def kill(self, pid: int) -> None:
        """kill -9."""
        os.kill(pid, signal.SIGKILL)
        self.running.discard(pid)

    def close(self) -> None:
        for pid in list(self.running):
            self.kill(pid)
        assert self._launcher.stdin is not None
        self._launcher.stdin.close()
        self._launcher.wait(timeout=30)
        assert self._launcher.stdout is not None
        self._launcher.stdout.close()


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "mail.db"
    nm.SqliteOutbox(path).close()  # made before the workers race to make it
    return path


@pytest.fixture(params=["Mailer", "AsyncMailer"])
def workers(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    database: Path,
    server: tuple[TakingHandler, int],
) -> Iterator[Workers]:
    """Worker processes of one kind: an OutboxWorker over a Mailer, or an AsyncMailer."""
    with (tmp_path / "workers.log").open("w") as log:
        workers = Workers(database, server[1], log, request.param)
        try:
            yield workers
        finally:
            workers.close()


def wait_until(
    condition: Callable[[], bool], what: str, timeout: float = 60.0, poll: float = 0.005
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(poll)


def enqueue(database: Path, recipients: list[str]) -> None:
    with nm.SqliteOutbox(database) as outbox:
        mailer = nm.Mailer(SETTINGS, transport=nm.MemoryTransport(), outbox=outbox)
        mailer.enqueue(nm.Notification(recipients, "Weekly revenue", text="Up 3%.\n" * 40))


def wait_until_all_sent(database: Path, envelopes: int) -> None:
    done = nm.OutboxStatus(queued=0, deferred=0, sending=0, sent=envelopes, dead=0)
    with nm.SqliteOutbox(database) as outbox:
        wait_until(lambda: outbox.status() == done, "every envelope is sent", poll=0.1)


def test_a_worker_killed_at_random_moments_loses_nothing_and_repeats_one_envelope_per_kill(
    database: Path, server: tuple[TakingHandler, int], workers: Workers
) -> None:
    handler, _ = server
    recipients = [f"guest{i}@example.org" for i in range(2000)]
    enqueue(database, recipients)
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    kills = kills_in_data = 0
    while kills < 20:
        worker = workers.start(f"worker{kills}")
        before = handler.total()
        wait_until(lambda: handler.total() > before, "the worker delivers")  # noqa: B023
        if kills % 2:
            # Kill it between its end of DATA and the server's reply.
            handler.holding.clear()
            handler.hold.set()
            wait_until(handler.holding.is_set, "a reply is held")
            kills_in_data += 1
        else:
            time.sleep(rng.uniform(0, 0.04))  # short: with PIPELINING, 2,000 go in 2 s
        workers.kill(worker)
        kills += 1
        assert handler.total() < len(recipients), "work ran out before the kills did"
    workers.start("last")
    wait_until_all_sent(database, len(recipients))

    repeats = sum(count - 1 for count in handler.taken.values())
    assert set(handler.taken) == set(recipients), f"seed {seed}: lost mail"
    assert max(handler.taken.values()) <= 2, f"seed {seed}"
    # Each kill between the end of DATA and the reply repeats exactly that envelope;
    # another kill can repeat at most the one envelope it interrupted the same way.
    assert kills_in_data <= repeats <= kills, f"seed {seed}: {repeats} repeats"


def test_two_workers_on_one_file_never_deliver_the_same_envelope(
    database: Path, server: tuple[TakingHandler, int], workers: Workers
) -> None:
    handler, _ = server
    recipients = [f"guest{i}@example.org" for i in range(1000)]
    workers.start("one")
    workers.start("two")
    enqueue(database, recipients)
    wait_until_all_sent(database, len(recipients))

    assert handler.taken == Counter(dict.fromkeys(recipients, 1))
    assert set(handler.by_worker) == {"one", "two"}
    assert min(handler.by_worker.values()) > 100, handler.by_worker
