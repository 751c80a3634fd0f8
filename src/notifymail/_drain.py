"""Emptying an outbox, written once for both facades.

``deliver_queued`` is a loop of decisions (claim, check the lease, attempt, record the
outcome, defer the rest when the server is down, give back what was not sent) around
two kinds of I/O: the outbox's blocking store calls, and one attempt through the
transport. `drain` is a generator that yields each as an instruction and is sent
the answer, as ``_delivery.hand_over`` is: ``Mailer`` runs the instructions with plain
calls, ``AsyncMailer`` runs the store calls in a thread and awaits the attempts.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from notifymail._delivery import Attempt, DeliveryReport, Handed, Tally, record_hard_bounces
from notifymail._queue import Claim, DeliveryQueue, Settled
from notifymail.errors import ConnectionFailed, DeliveryError
from notifymail.values import Delivery

__all__ = ["Drain", "StoreCall", "advance", "drain"]

logger = logging.getLogger("notifymail.mailer")

CLAIM = 50  # envelopes claimed at a time


@dataclass(frozen=True, slots=True)
class StoreCall:
    """An instruction of `drain`: make this (blocking) call to the outbox."""

    call: Callable[[], Any]


Drain = Generator["StoreCall | Attempt", Any, DeliveryReport]


def drain(
    queue: DeliveryQueue, limit: int | None, suppress: Callable[[str, str], object] | None = None
) -> Drain:
    """Deliver the due envelopes of ``queue``, at most ``limit``: yields instructions.

    Each envelope is claimed, checked to be still held, attempted once, and its outcome
    recorded before the next is attempted; with ``suppress`` (a suppression list's
    ``add``), recipients refused as unknown (5.1.1) are added to the list. While the
    server is unavailable the rest of a batch is deferred unsent. If the driver throws
    an error in (an interrupt), the claims not yet recorded are given back first.
    Returns what was settled.
    """
    tally = Tally()
    attempted = 0
    while limit is None or attempted < limit:
        wanted = CLAIM if limit is None else min(CLAIM, limit - attempted)
        claims: list[Claim] = yield StoreCall(functools.partial(queue.claim, wanted))
        if not claims:
            break
        attempted += len(claims)
        unsettled = list(reversed(claims))
        try:
            while unsettled:
                claim = unsettled[-1]
                if not (yield StoreCall(functools.partial(queue.holds, claim))):
                    unsettled.pop()  # another worker took it over
                    continue
                result = yield Attempt(claim.envelope)
                settled = yield StoreCall(functools.partial(queue.settle, claim, result))
                handed = _handed(settled, result)
                if suppress is not None and handed.refused:
                    yield StoreCall(functools.partial(record_hard_bounces, handed, suppress))
                tally.add(handed)
                unsettled.pop()
                if isinstance(result, DeliveryError) and _server_unavailable(result):
                    logger.info(
                        "outbox: the server is unavailable (%s); %d envelope(s) deferred",
                        result,
                        len(unsettled),
                    )
                    while unsettled:
                        claim = unsettled[-1]
                        settled = yield StoreCall(functools.partial(queue.settle, claim, result))
                        tally.add(_handed(settled, result))
                        unsettled.pop()
                    return tally.report()
        except GeneratorExit:
            raise
        except BaseException:
            if unsettled:
                yield StoreCall(functools.partial(queue.release, unsettled))
            raise
    return tally.report()


def advance(
    plan: Drain, answer: object, error: BaseException | None
) -> StoreCall | Attempt | DeliveryReport:
    """The plan's next instruction, given the last one's ``answer`` or ``error``; its
    report once it is done. Thrown in, an error lets the plan give back what it holds
    before it raises the error again."""
    try:
        return plan.send(answer) if error is None else plan.throw(error)
    except StopIteration as done:
        report: DeliveryReport = done.value
        return report


def _server_unavailable(error: DeliveryError) -> bool:
    """Whether ``error`` says the server, not this envelope, is the trouble."""
    if error.refused or not error.retryable:
        return False
    return isinstance(error, ConnectionFailed) or (
        error.reply is not None and error.reply.code == 421
    )


def _handed(settled: Settled, result: Delivery | DeliveryError) -> Handed:
    return Handed(
        deliveries=(result,) if isinstance(result, Delivery) else (),
        accepted=settled.accepted,
        refused=settled.refused,
        failed=settled.failed,
        error=None,
    )
