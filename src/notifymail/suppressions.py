"""Who must not get subscription mail any more: people who unsubscribed, mailboxes that bounced.

Mail to an address that left a list or no longer exists costs a sender its reputation
with the mailbox providers; a suppression list is checked before every notification and
grows by itself on hard bounces. Addresses are compared as everywhere in notifymail:
case-insensitively, IDNA and Unicode spellings of a domain alike.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from typing import Final, Protocol

from typing_extensions import Self

from notifymail._address import address_key, normalize_address
from notifymail.errors import ConfigError, InvalidMessage

__all__ = ["InMemorySuppressions", "SqliteSuppressions", "Suppressions"]


class Suppressions(Protocol):
    """A suppression list: the addresses notifications are no longer sent to.

    A [`Mailer`][notifymail.Mailer] given one asks ``is_suppressed`` for every recipient
    of a notification before any is handed over, and calls ``add(address, "hard
    bounce")`` when a server refuses an address with the enhanced status 5.1.1. An
    implementation must compare addresses case-insensitively and may be called from
    several threads.
    """

    def is_suppressed(self, address: str) -> bool: ...

    def add(self, address: str, reason: str) -> None: ...

    def remove(self, address: str) -> None: ...


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


# Until the outbox's shared opening helper is on main, the file is opened here.
_APPLICATION_ID: Final = int.from_bytes(b"NtfM", "big")  # PRAGMA application_id, as the outbox's
_BUSY_TIMEOUT: Final = 10.0  # seconds a connection waits for another's lock
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS suppressions (
    address_key TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    reason TEXT NOT NULL,
    added_at REAL NOT NULL
)
"""


def _open(path: str) -> sqlite3.Connection:
    """A connection to notifymail's SQLite file at ``path``, made if new, never taken over.

    A file that is not a database, or a database of another program, is a
    [`ConfigError`][notifymail.ConfigError] naming the path, and is left as it was.
    """
    try:
        connection = sqlite3.connect(
            path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as error:
        raise _unusable(path, error) from None
    try:
        _check_owner(connection, path)  # before WAL, which would rewrite a foreign header
        _use_wal(connection)
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute("BEGIN IMMEDIATE")  # one process makes a new file, the rest wait
        if _check_owner(connection, path) == 0:
            connection.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
        connection.execute(_SCHEMA)
        connection.execute("COMMIT")
    except sqlite3.Error as error:
        connection.close()
        raise _unusable(path, error) from None
    except BaseException:
        connection.close()
        raise
    return connection


def _check_owner(connection: sqlite3.Connection, path: str) -> int:
    """The file's application id, 0 for an empty file; another program's is a ConfigError."""
    # One statement, so the id and the tables are read from the same snapshot of a file
    # another process may be making at this moment.
    application_id, tables = connection.execute(
        "SELECT (SELECT application_id FROM pragma_application_id),"
        " (SELECT count(*) FROM sqlite_master)"
    ).fetchone()
    if application_id == _APPLICATION_ID:
        return _APPLICATION_ID
    if application_id != 0 or tables:
        raise ConfigError(
            f"{path}: an SQLite database of another application, not notifymail's;"
            " it was left as it is",
            field="path",
        )
    return 0


def _unusable(path: str, error: sqlite3.Error) -> ConfigError:
    return ConfigError(f"{path}: cannot be used as a database ({error})", field="path")


def _use_wal(connection: sqlite3.Connection) -> None:
    # Switching a new file to WAL while another process does the same fails at once with
    # "database is locked": SQLite does not wait on its busy timeout there.
    deadline = time.monotonic() + _BUSY_TIMEOUT
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)
        else:
            return


class SqliteSuppressions:
    """A [`Suppressions`][notifymail.Suppressions] in an SQLite file, shared by every
    process that opens it.

    The file may be the outbox's (table ``suppressions``). WAL and ``synchronous=FULL``:
    an address added is on disk before ``add`` returns. ``add`` of an address already on
    the list replaces its reason. Close it (or use it as a context manager) when done.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._connection = _open(self.path)
        self._lock = threading.Lock()  # one connection, shared by the threads

    def is_suppressed(self, address: str) -> bool:
        return self._reason_of(_key(address)) is not None

    def add(self, address: str, reason: str) -> None:
        key, text = _key(address), _reason(reason)
        with self._lock:
            self._connection.execute(
                "INSERT INTO suppressions (address_key, address, reason, added_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (address_key)"
                " DO UPDATE SET reason = excluded.reason, added_at = excluded.added_at",
                (key, normalize_address(address), text, time.time()),
            )

    def remove(self, address: str) -> None:
        key = _key(address)
        with self._lock:
            self._connection.execute("DELETE FROM suppressions WHERE address_key = ?", (key,))

    def reason(self, address: str) -> str | None:
        """Why ``address`` is on the list, or ``None`` when it is not."""
        return self._reason_of(_key(address))

    def _reason_of(self, key: str) -> str | None:
        with self._lock:
            row = self._connection.execute(
                "SELECT reason FROM suppressions WHERE address_key = ?", (key,)
            ).fetchone()
        return None if row is None else str(row[0])

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqliteSuppressions({self.path!r})"
