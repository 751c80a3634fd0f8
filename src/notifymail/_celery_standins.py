"""Stand-ins for what ``values.py`` and ``outbox.py`` will provide, until they land.

``notifymail.celery`` imports these four names from here alone, so the swap is one import
line there (``Queued`` and ``backoff`` from ``notifymail.outbox``) plus the two
``envelope_*_dict`` calls becoming ``Envelope.to_dict()`` and ``Envelope.from_dict()``;
then this module is deleted.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email import policy
from email.parser import BytesParser
from typing import cast

from notifymail.transport.base import Envelope


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


def envelope_to_dict(envelope: Envelope) -> dict[str, object]:
    return {
        "version": 1,
        "sender": envelope.sender,
        "recipients": list(envelope.recipients),
        "raw": base64.b64encode(envelope.raw).decode("ascii"),
        "smtputf8": envelope.smtputf8,
    }


def envelope_from_dict(data: Mapping[str, object]) -> Envelope:
    if data.get("version") != 1:
        raise ValueError(f"envelope: unknown version {data.get('version')!r}")
    raw = base64.b64decode(cast(str, data["raw"]))
    message = BytesParser(policy=policy.default).parsebytes(raw)
    return Envelope(
        cast(str, data["sender"]),
        tuple(cast("list[str]", data["recipients"])),
        message,
        smtputf8=bool(data["smtputf8"]),
    )
