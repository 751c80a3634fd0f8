"""Fan-out through Celery: one notification to N outsiders, 4 worker processes against 1.

    python bench/celery_fanout.py [--recipients 2000] [--json PATH]

Needs the ``celery`` extra and Debian's ``redis-server``. Each run starts a fresh
``redis-server`` on 127.0.0.1 (the broker and notifymail's records) and the ``slow`` sink
of ``sinks.py``, which waits 10 ms before each reply as a relay across a network does;
enqueues the notification through ``CeleryOutbox`` (one task per outsider); starts one
``celery worker`` with 1, then 4, prefork processes; and times from the first recipient
accepted to the last, so that the worker's start-up is left out of both. The target: 4
processes in at most 0.35x the time of 1. Exit status 1 when it is missed.

This module is also the workers' app (``celery -A celery_fanout worker``), configured by
``NMBENCH_BROKER`` and ``NMBENCH_SMTP_PORT``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from celery import Celery
from sinks import free_port, running_sink

import notifymail as nm
from notifymail._compose import compose_notification
from notifymail.celery import CeleryOutbox, register

BENCH = Path(__file__).parent
TARGET = 0.35
SENDER = nm.SenderSettings(from_address="reports@example.com")

app = Celery("notifymail-bench", broker=os.environ.get("NMBENCH_BROKER"))
app.conf.update(worker_prefetch_multiplier=1, worker_hijack_root_logger=False)


def mailer() -> nm.Mailer:
    smtp = nm.SmtpSettings(host="127.0.0.1", port=int(os.environ["NMBENCH_SMTP_PORT"]))
    return nm.Mailer(nm.EmailSettings(sender=SENDER, smtp=smtp))


register(app, mailer)


@contextlib.contextmanager
def running_redis(directory: str) -> Iterator[str]:
    """A fresh redis-server on 127.0.0.1, nothing saved; yields its URL."""
    port = free_port()
    server = subprocess.Popen(  # noqa: S603 - Debian's redis-server, fixed arguments
        [shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1",
         "--port", str(port), "--save", "", "--appendonly", "no", "--dir", directory],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(0.2)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=10)


def envelopes(count: int) -> list[nm.Envelope]:
    settings = nm.EmailSettings(sender=SENDER)
    recipients = [f"reader-{n}@example.org" for n in range(count)]
    notification = nm.Notification(recipients, "Weekly revenue", "New results.\n")
    batches = nm.plan_delivery(recipients, nm.InMemoryDirectory(()), settings)
    return compose_notification(notification, SENDER, batches)


def fan_out(processes: int, count: int, smtp_port: int) -> float:
    """Seconds from the first recipient accepted to the last, with ``processes``."""
    with tempfile.TemporaryDirectory() as directory, running_redis(directory) as url:
        host = Celery("host", broker=url)
        outbox = CeleryOutbox(host, redis_url=url)
        outbox.enqueue(envelopes(count), key="fan-out")
        worker = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "celery", "-A", "celery_fanout", "worker",
             "-P", "prefork", "-c", str(processes), "-Q", "notifymail", "-l", "WARNING",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=BENCH,
            env={**os.environ, "PYTHONPATH": str(BENCH), "NMBENCH_BROKER": url,
                 "NMBENCH_SMTP_PORT": str(smtp_port)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            started = finished = None
            deadline = time.monotonic() + 600
            while finished is None and time.monotonic() < deadline:
                status = outbox.status("fan-out")
                now = time.monotonic()
                if started is None and status.accepted:
                    started = now
                if status.pending == 0:
                    finished = now
                time.sleep(0.02)
            if started is None or finished is None or status.accepted != count:
                raise SystemExit(f"{processes} process(es): not delivered in time: {status}")
            return finished - started
        finally:
            worker.kill()
            worker.wait(timeout=10)
            outbox.close()
            host.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=2000)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with running_sink("slow") as smtp_port:
        one = fan_out(1, args.recipients, smtp_port)
        four = fan_out(4, args.recipients, smtp_port)
    ratio = four / one
    print(f"{args.recipients} outsiders, sink replying after 10 ms each")
    print(f"  1 worker process:  {one:7.2f} s  ({args.recipients / one:6.0f} recipients/s)")
    print(f"  4 worker processes: {four:6.2f} s  ({args.recipients / four:6.0f} recipients/s)")
    print(f"  ratio 4/1: {ratio:.3f} (target <= {TARGET})")
    result = {"recipients": args.recipients, "one": one, "four": four, "ratio": ratio}
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
