"""Who must not get subscription mail any more: people who unsubscribed, mailboxes that bounced.

Mail to an address that left a list or no longer exists costs a sender its reputation
with the mailbox providers; a suppression list is checked before every notification and
grows by itself on hard bounces. The protocol, [`Suppressions`][notifymail.Suppressions],
lives with the mailer that applies it (``_delivery``); the lists that ship live here.
Addresses are compared as everywhere in notifymail: case-insensitively, IDNA and Unicode
spellings of a domain alike.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from typing import Final

from notifymail._address import address_key, normalize_address
from notifymail._delivery import Suppressions
from notifymail._sqlite import SqliteFile, database_error
from notifymail.errors import InvalidMessage

__all__ = ["InMemorySuppressions", "SqliteSuppressions", "Suppressions"]


def _key(address: str) -> str:
    """The key of ``address``; an invalid address is an `InvalidMessage` naming it."""
    try:
        return address_key(normalize_address(address))
    except ValueError as error:
        raise InvalidMessage(f"address: {address!r} is not a valid address: {error}") from None


def _reason(reason: str) -> str:
    if not isinstance(reason, str):
        raise InvalidMessage(f"reason: must be a str, not {type(reason).__name__}")
    return reason


class InMemorySuppressions:
    """A [`Suppressions`][notifymail.Suppressions] in a dict, for tests and for hosts that
    keep their own store.

    ``add`` of an address already on the list replaces its reason. ``reason(address)``
    says why an address is on the list (``None`` when it is not).
    """

    def __init__(self) -> None:
        self._reasons: dict[str, str] = {}
        self._lock = threading.Lock()

    def is_suppressed(self, address: str) -> bool:
        return _key(address) in self._reasons

    def add(self, address: str, reason: str) -> None:
        key, text = _key(address), _reason(reason)
        with self._lock:
            self._reasons[key] = text

    def remove(self, address: str) -> None:
        key = _key(address)
        with self._lock:
            self._reasons.pop(key, None)

    def reason(self, address: str) -> str | None:
        return self._reasons.get(_key(address))

    def __repr__(self) -> str:
        return f"InMemorySuppressions(<{len(self._reasons)} addresses>)"


_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS suppressions (
    address_key TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    reason TEXT NOT NULL,
    added_at REAL NOT NULL
)
"""


class SqliteSuppressions(SqliteFile):
    """A [`Suppressions`][notifymail.Suppressions] in an SQLite file, shared by every
    process that opens it.

    The file may be the outbox's (table ``suppressions``). WAL and ``synchronous=FULL``:
    an address added is on disk before ``add`` returns. ``add`` of an address already on
    the list replaces its reason. One object may be shared by threads; a forked child
    opens a connection of its own. Close it (or use it as a context manager) when done.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path, [_SCHEMA])

    def is_suppressed(self, address: str) -> bool:
        return self._reason_of(_key(address)) is not None

    def add(self, address: str, reason: str) -> None:
        key, text = _key(address), _reason(reason)
        self._execute(
            "INSERT INTO suppressions (address_key, address, reason, added_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (address_key)"
            " DO UPDATE SET reason = excluded.reason, added_at = excluded.added_at",
            (key, normalize_address(address), text, time.time()),
        )

    def remove(self, address: str) -> None:
        self._execute("DELETE FROM suppressions WHERE address_key = ?", (_key(address),))

    def reason(self, address: str) -> str | None:
        """Why ``address`` is on the list, or ``None`` when it is not."""
        return self._reason_of(_key(address))

    def _reason_of(self, key: str) -> str | None:
        row = self._execute("SELECT reason FROM suppressions WHERE address_key = ?", (key,))
        return None if row is None else str(row[0])

    def _execute(self, sql: str, parameters: tuple[object, ...]) -> tuple[object, ...] | None:
        """Run one statement (autocommit, so durable when it returns); its first row."""
        with self._lock:
            connection = self._connected()
            try:
                row: tuple[object, ...] | None = connection.execute(sql, parameters).fetchone()
            except sqlite3.Error as error:
                raise database_error(self.path, error) from None
        return row
