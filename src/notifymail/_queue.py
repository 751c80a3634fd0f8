"""The outbox's contract, low in the stack so that the mailer drives any store without
importing one.

An ``Outbox`` keeps finished envelopes until they are delivered: the SQLite file of
``notifymail.outbox``, or a task broker (``notifymail.celery``). A store that a
worker claims work from (a ``DeliveryQueue``) also hands out leases and records each
envelope's outcome. ``backoff`` is the retry schedule every store follows.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from notifymail.errors import DeliveryError
    from notifymail.values import Delivery, Envelope, Reply

__all__ = ["Claim", "DeliveryQueue", "Outbox", "Queued", "Settled", "backoff"]

JITTER = 0.1  # at most this fraction of the delay is added at random

# Past this many doublings every delay is capped anyway; stopping there avoids a float
# overflow after a few thousand attempts.
_MAX_DOUBLINGS = 64


def backoff(
    attempt: int,
    *,
    min_backoff: float,
    max_backoff: float,
    random: Callable[[], float] = _random.random,
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1 for the first).

    ``min_backoff`` doubled per attempt, capped at ``max_backoff``, plus up to 10% at
    random, so that a backlog deferred at one moment does not all come due at once (as
    Postfix does). Never less than the schedule: attempt 1 waits ``min_backoff`` or a
    little more.
    """
    doublings = min(max(attempt, 1) - 1, _MAX_DOUBLINGS)
    delay = min(min_backoff * 2.0**doublings, max_backoff)
    return delay * (1 + JITTER * random())


@dataclass(frozen=True, slots=True, kw_only=True)
class Queued:
    """What ``enqueue`` stored: ``envelopes`` holding ``recipients`` in all.

    ``new`` is False when the key had been enqueued before: nothing was stored, and this
    is the first enqueue's record.
    """

    id: str
    key: str
    envelopes: int
    recipients: int
    new: bool


class Outbox(Protocol):
    """Keeps envelopes until they are delivered.

    ``enqueue`` stores every envelope of one item, or none; a ``key`` seen before stores
    nothing and returns the first record with ``new=False``. ``notification`` says
    that the envelopes are a notification's, whose recipients the suppression list is
    asked about again when they are delivered; system mail (a ``Message``) is
    ``False``, and the list never applies to it. The mailer always passes it.
    """

    def enqueue(
        self, envelopes: Sequence[Envelope], *, key: str, notification: bool = False
    ) -> Queued:
        """Store ``envelopes`` under ``key``, all or none; ``notification``: they are a
        notification's."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """An envelope a worker holds under a lease: ``envelope`` has only the recipients
    still to deliver; ``attempt`` is 1 for the first try. ``notification``: the
    envelope is a notification's, which the suppression list applies to (system mail
    it does not)."""

    id: str
    envelope: Envelope
    attempt: int
    notification: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Settled:
    """What recording one attempt's outcome decided, per recipient.

    ``accepted``, ``refused`` (a final 5xx), ``failed`` (dead: a final error, or
    ``max_lifetime`` reached) and ``suppressed`` (on the suppression list when it was
    their turn: never sent, never tried again) are done; ``deferred`` will be tried again.
    """

    accepted: tuple[str, ...] = ()
    refused: Mapping[str, Reply] = field(default_factory=dict)
    failed: Mapping[str, DeliveryError] = field(default_factory=dict)
    deferred: tuple[str, ...] = ()
    suppressed: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "refused", MappingProxyType(dict(self.refused)))
        object.__setattr__(self, "failed", MappingProxyType(dict(self.failed)))


@runtime_checkable
class DeliveryQueue(Outbox, Protocol):
    """An outbox that workers claim envelopes from, one lease per envelope."""

    def claim(self, limit: int) -> list[Claim]:
        """Lease up to ``limit`` envelopes that are due; no other worker gets them."""
        ...

    def holds(self, claim: Claim) -> bool:
        """Whether this worker's lease on ``claim`` is still good: check before sending."""
        ...

    def anticipate(self, claim: Claim) -> None:
        """``claim``'s message is on its way: called while the server answers, so that a
        store can work out ahead what `settle` will most likely record (every recipient
        accepted) and take less time between that answer and the next message. Every
        store defines it; one with nothing to work out does nothing. It must never wait
        (no I/O, no lock it cannot take at once): an ``AsyncMailer`` calls it on its
        event loop."""
        ...

    def settle(
        self,
        claim: Claim,
        result: Delivery | DeliveryError | None,
        *,
        suppressed: Collection[str] = (),
    ) -> Settled:
        """Record, durably, what one attempt did, and decide what comes next.

        ``suppressed``: recipients of the claim left out because they were on the
        suppression list at delivery time; they are done. ``result`` is None when
        nothing was sent (every recipient was suppressed).
        """
        ...

    def release(self, claims: Iterable[Claim]) -> None:
        """Give back leased envelopes that were not sent, due at once."""
        ...
