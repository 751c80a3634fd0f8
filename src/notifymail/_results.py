"""What a server answered: its reply, and what it did with one envelope.

A leaf module, importing nothing of notifymail's, so that the errors can carry these
values without an import circle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["Delivery", "Reply"]


@dataclass(frozen=True, slots=True)
class Reply:
    """An SMTP reply: ``str(Reply(550, "5.1.1 No such user"))`` is ``"550 5.1.1 No such user"``."""

    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}".rstrip()

    @property
    def is_transient(self) -> bool:
        """A 4xx reply: the same request may succeed later."""
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        """A 5xx reply: the same request will fail again."""
        return 500 <= self.code < 600


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the server did with one envelope: who accepted it and who was refused, and why."""

    message_id: str
    accepted: tuple[str, ...]
    refused: Mapping[str, Reply] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "accepted", tuple(self.accepted))
        object.__setattr__(self, "refused", MappingProxyType(dict(self.refused)))

    @property
    def ok(self) -> bool:
        """True when no recipient was refused."""
        return not self.refused
