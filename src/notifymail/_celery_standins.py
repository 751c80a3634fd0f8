"""Stand-ins for what ``values.py`` and ``outbox.py`` will provide, until they land.

``notifymail.celery`` imports these four names from here alone, so the swap is one import
line there (``Queued`` and ``backoff`` from ``notifymail.outbox``) plus the two
``envelope_*_dict`` calls becoming ``Envelope.to_dict()`` and ``Envelope.from_dict()``;
then this module is deleted.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Queued:
    """What ``enqueue`` stored: ``new`` is False when the key had been enqueued before."""

    id: str
    key: str
    envelopes: int
    recipients: int
    new: bool


def backoff(
    attempt: int,
    *,
    min_backoff: float,
    max_backoff: float,
    random: Callable[[], float] = random.random,
) -> float:
    """Seconds before attempt ``attempt + 1``: doubling from ``min_backoff``, capped, +10%."""
    return min(min_backoff * 2.0 ** (attempt - 1), max_backoff) * (1 + 0.1 * random())
