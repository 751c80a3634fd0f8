"""Emptying an outbox, written once for both facades.

``deliver_queued`` is a loop of decisions (claim a batch, leave out the suppressed,
check each lease, attempt, record the outcome, defer the rest when the server is down,
give back what was not sent) around two kinds of I/O: the outbox's blocking store
calls, and the attempts through the transport. `drain` is a generator that yields each
batch's instructions and is sent the answers, as ``_delivery.hand_over`` is: a
`StoreCall` to make, or a `Send` of a `Claimed`.

A `Claimed` is handed out as a notification's ``Dispatch`` is, and makes the store calls
of each envelope itself, the moment its outcome is known, so that the outcome is
committed before the next message's end of DATA goes out. Both mailers give the batch
to their transport as a feed, so the next message's commands are pipelined behind the
one before it; ``AsyncMailer`` makes the batch's calls in a thread of its own, off the
event loop, and its transport waits for each outcome's recording before the next end
of DATA.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
from collections import deque
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

from notifymail._address import address_key
from notifymail._delivery import (
    Attempt,
    DeliveryReport,
    Handed,
    Suppressions,
    Tally,
    record_hard_bounces,
    split_suppressed,
)
from notifymail._queue import Claim, DeliveryQueue, Settled
from notifymail.errors import ConnectionFailed, DeliveryError
from notifymail.values import Delivery, Envelope

__all__ = ["Claimed", "Drain", "Send", "StoreCall", "advance", "drain", "server_unavailable"]

logger = logging.getLogger("notifymail.mailer")

CLAIM = 50  # envelopes claimed at a time


@dataclass(frozen=True, slots=True)
class StoreCall:
    """An instruction of `drain`: make this (blocking) call to the outbox."""

    call: Callable[[], Any]


@dataclass(frozen=True, slots=True)
class Send:
    """An instruction of `drain`: deliver ``batch``, taking envelopes until it has none."""

    batch: Claimed


Drain = Generator["StoreCall | Send", Any, DeliveryReport]


def drain(queue: DeliveryQueue, limit: int | None, suppressions: Suppressions | None) -> Drain:
    """Deliver the due envelopes of ``queue``, at most ``limit``: yields instructions.

    Envelopes are claimed in batches. With ``suppressions``, recipients on the list now
    are left out of each batch before it is sent, and recipients refused as unknown
    (5.1.1) are added to it. A batch's store calls are its own (see `Claimed`). If the
    driver throws an error in (an interrupt), the batch's claims not yet recorded are
    given back first. Returns what was settled.
    """
    tally = Tally()
    suppress = None if suppressions is None else suppressions.add
    attempted = 0
    while limit is None or attempted < limit:
        wanted = CLAIM if limit is None else min(CLAIM, limit - attempted)
        claims: list[Claim] = yield StoreCall(functools.partial(queue.claim, wanted))
        if not claims:
            break
        attempted += len(claims)
        batch = Claimed(queue, claims, tally, suppress)
        try:
            if suppressions is not None:
                yield StoreCall(functools.partial(batch.leave_out, suppressions.is_suppressed))
            yield Send(batch)
        except GeneratorExit:
            raise
        except BaseException:
            yield StoreCall(batch.release)
            raise
        if batch.stopped:
            break
    return tally.report()


class Claimed:
    """The envelopes of one claim, handed out in turn, each outcome recorded as soon as
    it is known: the ``Handing`` a mailer's feed takes envelopes from.

    Its methods block on the outbox: `take` checks the lease, `done` records the outcome
    (and adds a notification's hard bounces to the suppression list), `leave_out` asks
    the list. Once the server is unavailable (no connection, or 421), the envelopes not
    yet handed out are deferred unsent, as Postfix does, and `take` hands out nothing more.
    """

    def __init__(
        self,
        queue: DeliveryQueue,
        claims: Sequence[Claim],
        tally: Tally,
        suppress: Callable[[str, str], object] | None,
    ) -> None:
        self._queue = queue
        self._tally = tally
        self._suppress = suppress
        self._waiting: deque[Claim] = deque(claims)
        self._out: dict[int, Claim] = {}  # handed out, by id() of the envelope
        self._left_out: dict[str, tuple[str, ...]] = {}  # suppressed, by claim id
        self.stopped = False

    def leave_out(self, is_suppressed: Callable[[str], bool]) -> None:
        """Ask the suppression list about the batch's recipients (each address once):
        an envelope whose recipients are all on it is settled unsent, one with some on
        it is narrowed to the others."""
        recipients = (c.envelope.recipients for c in self._waiting if c.notification)
        _, listed = split_suppressed(itertools.chain.from_iterable(recipients), is_suppressed)
        if not listed:
            return
        keys = set(map(address_key, listed))
        waiting: deque[Claim] = deque()
        for claim in self._waiting:
            envelope = claim.envelope
            out: tuple[str, ...] = ()  # system mail: the list does not apply
            if claim.notification:
                out = tuple(r for r in envelope.recipients if address_key(r) in keys)
            if len(out) == len(envelope.recipients):
                self._settle(claim, None, suppressed=out)
                continue
            if out:
                kept = [r for r in envelope.recipients if r not in out]
                self._left_out[claim.id] = out
                waiting.append(dataclasses.replace(claim, envelope=envelope.with_recipients(kept)))
            else:
                waiting.append(claim)
        self._waiting = waiting

    def take(self, now: float, *, ready_only: bool) -> Attempt | None:
        """The next envelope whose lease this worker still holds; None when none is left."""
        while self._waiting and not self.stopped:
            claim = self._waiting.popleft()
            if self._queue.holds(claim):
                self._out[id(claim.envelope)] = claim
                return Attempt(claim.envelope)
        return None

    def give_back(self, envelope: Envelope) -> None:
        """An envelope `take` gave that was not sent after all (the throttle said wait)."""
        self._waiting.appendleft(self._out.pop(id(envelope)))

    def prepare(self) -> None:
        """While the server works: have the outbox work out the likely outcome of the
        envelopes handed out (`DeliveryQueue.anticipate`), so that recording it costs
        less once it is known. Their bytes came from storage: nothing to serialise."""
        for claim in self._out.values():
            self._queue.anticipate(claim)

    def done(self, envelope: Envelope, outcome: Delivery | DeliveryError, now: float) -> None:
        """Record what became of an envelope `take` gave; stop at an unavailable server."""
        self._settle(self._out[id(envelope)], outcome)
        del self._out[id(envelope)]
        if self.stopped or not server_unavailable(outcome):
            return
        self.stopped = True
        logger.info(
            "outbox: the server is unavailable (%s); %d envelope(s) deferred",
            outcome,
            len(self._waiting),
        )
        while self._waiting:
            self._settle(self._waiting[0], outcome)
            self._waiting.popleft()

    def follow(
        self, envelope: Envelope, outcome: Delivery | DeliveryError, now: float
    ) -> Attempt | None:
        """`done`, then `take`: one envelope after the other, in one blocking call."""
        self.done(envelope, outcome, now)
        return self.take(now, ready_only=False)

    def release(self) -> None:
        """Give back the claims whose outcome is not recorded: handed out, or still
        waiting. A store call of its own, so that it comes after any recording under way."""
        if unsettled := [*self._out.values(), *self._waiting]:
            self._queue.release(unsettled)

    def _settle(
        self,
        claim: Claim,
        outcome: Delivery | DeliveryError | None,
        *,
        suppressed: tuple[str, ...] | None = None,
    ) -> None:
        if suppressed is None:
            suppressed = self._left_out.get(claim.id, ())
        settled = self._queue.settle(claim, outcome, suppressed=suppressed)
        self._left_out.pop(claim.id, None)
        handed = _handed(settled, outcome)
        if self._suppress is not None and handed.refused and claim.notification:
            record_hard_bounces(handed.refused, self._suppress)  # not system mail's
        self._tally.add(handed)


def advance(
    plan: Drain, answer: object, error: BaseException | None
) -> StoreCall | Send | DeliveryReport:
    """The plan's next instruction, given the last one's ``answer`` or ``error``; its
    report once it is done. Thrown in, an error lets the plan give back what it holds
    before it raises the error again."""
    try:
        return plan.send(answer) if error is None else plan.throw(error)
    except StopIteration as done:
        report: DeliveryReport = done.value
        return report


def server_unavailable(outcome: Delivery | DeliveryError) -> bool:
    """Whether ``outcome`` says the server, not this envelope, is the trouble."""
    if not isinstance(outcome, DeliveryError) or outcome.refused or not outcome.retryable:
        return False
    return isinstance(outcome, ConnectionFailed) or (
        outcome.reply is not None and outcome.reply.code == 421
    )


def _handed(settled: Settled, result: Delivery | DeliveryError | None) -> Handed:
    return Handed(
        deliveries=(result,) if isinstance(result, Delivery) else (),
        accepted=settled.accepted,
        refused=settled.refused,
        failed=settled.failed,
        error=None,
        suppressed=settled.suppressed,
    )
