"""The loop that empties an outbox: ``deliver_queued`` again and again, in a thread of its
own or in the calling one, until told to stop.

It holds nothing a crash could lose: every envelope's outcome is in the outbox before
the next is sent, and the leases of a killed worker run out so that another (or the same
one, restarted) finishes its work.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from notifymail.errors import ConfigError

if TYPE_CHECKING:
    from notifymail.mailer import DeliveryReport, Mailer

__all__ = ["OutboxWorker"]

logger = logging.getLogger("notifymail.worker")

_BATCH = 50  # envelopes per deliver_queued call: the stop request is seen between calls


class OutboxWorker:
    """Delivers what ``mailer``'s outbox holds, until stopped.

    ``start`` runs it in a background thread and ``stop`` ends it; ``run``
    does the same in the calling thread until ``stop_event`` is set. It checks the
    outbox every ``poll_interval`` seconds while there is nothing to do, and without a
    pause while there is. Each batch delivered is logged at INFO on the
    ``notifymail.worker`` logger. A failure of the outbox or the transport other than a
    ``ConfigError`` is logged and tried again after ``poll_interval``;
    a ``ConfigError`` (a corrupt outbox file) ends the loop.
    """

    def __init__(self, mailer: Mailer, *, poll_interval: float = 1.0) -> None:
        if not poll_interval > 0:
            raise ValueError(f"OutboxWorker.poll_interval: {poll_interval!r} is not > 0")
        self.mailer = mailer
        self.poll_interval = float(poll_interval)
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.mailer!r}, poll_interval={self.poll_interval!r})"

    def start(self) -> None:
        """Run the worker in a background (daemon) thread until ``stop``."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("OutboxWorker.start: the worker is already running")
        self._stop_event.clear()
        self._thread = threading.Thread(
            target=self.run, args=(self._stop_event,), name="notifymail-outbox", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the background thread to stop after its current batch, and wait for it."""
        self._stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self, stop_event: threading.Event) -> None:
        """Deliver batch after batch in the calling thread until ``stop_event`` is set."""
        logger.debug("outbox worker started")
        while not stop_event.is_set():
            busy = False
            try:
                with self.mailer:  # one connection while batches keep coming
                    while not stop_event.is_set() and self._batch():
                        busy = True
            except ConfigError:
                raise
            except Exception:
                logger.exception("outbox worker: delivery failed; trying again shortly")
            if not busy:
                stop_event.wait(self.poll_interval)
        logger.debug("outbox worker stopped")

    def _batch(self) -> bool:
        """Deliver one batch; whether there was anything to deliver."""
        report = self.mailer.deliver_queued(limit=_BATCH)
        if not (report.accepted or report.refused or report.failed or report.deliveries):
            return False
        logger.info("%s", _progress(report))
        return True


def _progress(report: DeliveryReport) -> str:
    """One line saying what a batch did."""
    return (
        f"delivered a batch: {len(report.accepted)} accepted, {len(report.refused)} refused,"
        f" {len(report.failed)} failed"
    )
