"""A password that never shows itself, in a module of its own because settings,
transports and the unsubscribe tokens all hold one."""

from __future__ import annotations

from typing import Final, final

__all__ = ["Secret"]


@final
class Secret:
    """A password that never shows itself: not in ``repr``, ``str``, ``format`` or logs.

    ``reveal()`` returns the value; ``masked()`` is what an admin form displays. Two
    secrets compare equal, in constant time, when their values do.
    """

    __slots__ = ("_value",)
    _STARS: Final = "**********"

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"Secret holds a str, not {type(value).__name__}")
        self._value = value

    def reveal(self) -> str:
        """The secret value itself, for the one place that must send it."""
        return self._value

    def masked(self) -> str:
        """``**********`` and the last two characters; only stars when shorter than six."""
        if len(self._value) < 6:
            return self._STARS
        return self._STARS + self._value[-2:]

    def __repr__(self) -> str:
        return f"Secret('{self._STARS}')"

    def __str__(self) -> str:
        return self._STARS

    def __format__(self, format_spec: str) -> str:
        return format(self._STARS, format_spec)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        import hmac  # here: it loads OpenSSL's hashes, too slow for `import notifymail`

        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __len__(self) -> int:
        return len(self._value)
