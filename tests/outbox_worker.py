"""Worker processes for the crash tests: each delivers an outbox file to an SMTP server on
127.0.0.1 until it is killed.

    python tests/outbox_worker.py DATABASE PORT [Mailer|AsyncMailer]

Reads worker names from stdin, one a line; for each it forks a worker process and prints
its pid. A worker is an ``OutboxWorker`` over a ``Mailer`` (the default), or an
``AsyncMailer`` calling ``deliver_queued`` again and again on an event loop. notifymail is imported once, here, so a worker starts in milliseconds and a
test can kill and restart many. A worker's name is its EHLO name, so that the server
can tell who delivered what. Leases are short (one second) so that a killed worker's
envelopes pass on quickly. The caller kills the workers; this process reaps them and
ends at the end of its input.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading

import notifymail as nm
from notifymail.transport.smtp import SmtpTransport

POLL_INTERVAL = 0.02  # seconds


def work(database: str, port: int, name: str, facade: str) -> None:
    smtp = nm.SmtpSettings(host="127.0.0.1", port=port, timeout=10.0)
    settings = nm.EmailSettings(
        sender=nm.SenderSettings(from_address="alerts@example.com"), smtp=smtp
    )
    outbox = nm.SqliteOutbox(database, lease=1.0, min_backoff=0.2, max_backoff=1.0)
    if facade == "AsyncMailer":
        transport = nm.AsyncSmtpTransport(smtp, local_hostname=name)
        asyncio.run(drain(nm.AsyncMailer(settings, transport=transport, outbox=outbox)))
    mailer = nm.Mailer(settings, transport=SmtpTransport(smtp, local_hostname=name), outbox=outbox)
    nm.OutboxWorker(mailer, poll_interval=POLL_INTERVAL).run(threading.Event())


async def drain(mailer: nm.AsyncMailer) -> None:
    while True:  # until killed
        await mailer.deliver_queued()
        await asyncio.sleep(POLL_INTERVAL)


def reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def main() -> None:
    database, port = sys.argv[1], int(sys.argv[2])
    facade = sys.argv[3] if len(sys.argv) > 3 else "Mailer"
    for line in sys.stdin:
        reap()
        pid = os.fork()
        if pid == 0:
            try:
                work(database, port, line.strip(), facade)
            finally:
                os._exit(1)
        print(pid, flush=True)
    with contextlib.suppress(ChildProcessError):
        while True:
            os.wait()


if __name__ == "__main__":
    main()
