"""Opening notifymail's SQLite file: durable settings, and a refusal to touch anyone else's.

The outbox and the suppression list may share one file, each with tables of its own, so
the file is marked as notifymail's (``PRAGMA application_id``) and versioned as a whole
(``PRAGMA user_version``). A file that is not SQLite, is corrupt, or belongs to another
application raises ``ConfigError`` naming its path, and nothing is
written to it: a wrong path in a setting must never destroy someone's database.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from types import TracebackType

from typing_extensions import Self

from notifymail.errors import ConfigError

__all__ = [
    "APPLICATION_ID",
    "FILE_VERSION",
    "SqliteFile",
    "database_error",
    "open_database",
    "transaction",
]

# "NtfM": what `PRAGMA application_id` holds in every file notifymail made.
APPLICATION_ID = int.from_bytes(b"NtfM", "big")
# The layout of the file as a whole (`PRAGMA user_version`); a newer one is refused.
FILE_VERSION = 1
PAGE_SIZE = 1024  # bytes; see _prepare
BUSY_TIMEOUT = 30.0  # seconds a connection waits for another process's write to end

_HEADER = b"SQLite format 3\x00"


class SqliteFile:
    """A notifymail file held open by one connection that threads share in turn.

    A connection must not be used across ``fork()``: a forked child opens its own on
    first use (the same file, wherever the child has moved to), and `_forked` lets a
    subclass drop what belonged to the parent. A child gets fresh locks at once
    (`_renew_locks`): one that another thread of the parent held at the fork would stay
    held in the child for ever.
    """

    def __init__(self, path: str | os.PathLike[str], schema: Sequence[str]) -> None:
        self.path = os.fspath(path)
        self._absolute_path = os.path.abspath(self.path)
        self._schema = tuple(schema)
        self._lock = threading.Lock()  # held while the connection is in use
        self._connection: sqlite3.Connection | None = open_database(self.path, self._schema)
        self._pid = os.getpid()
        _open_files.add(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"

    def _connected(self) -> sqlite3.Connection:
        """The connection, reopened in a forked child; call it with ``_lock`` held."""
        connection = self._connection
        if connection is None:
            raise RuntimeError(f"{self!r} is closed")
        if os.getpid() != self._pid:
            connection.close()
            connection = self._connection = open_database(self._absolute_path, self._schema)
            self._pid = os.getpid()
            self._forked()
        return connection

    def _forked(self) -> None:
        """Forget what the parent process held (called in a forked child)."""

    def _renew_locks(self) -> None:
        """Replace the locks with fresh ones (called in a forked child, at once)."""
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the connection; the object cannot be used afterwards."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


# The files open in this process, whose locks a forked child renews.
_open_files: weakref.WeakSet[SqliteFile] = weakref.WeakSet()


def _renew_locks_in_child() -> None:
    for file in list(_open_files):
        file._renew_locks()


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_renew_locks_in_child)


def open_database(path: str | os.PathLike[str], schema: Sequence[str]) -> sqlite3.Connection:
    """Open (creating it if missing) the notifymail file at ``path`` and run ``schema``.

    ``schema`` holds ``CREATE ... IF NOT EXISTS`` statements for the caller's own tables;
    other components' tables in the same file are left alone. The connection is in
    autocommit mode (use ``transaction``), WAL, ``synchronous=FULL`` (a caller may
    relax it for its own commits), 1 KiB pages in a new file, may be used
    from any thread (the caller serialises its use), and waits for other writers.
    """
    name = os.fspath(path)
    _check_header(name)
    try:
        connection = sqlite3.connect(
            name, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as error:
        raise _unusable(name, error) from None
    deadline = time.monotonic() + BUSY_TIMEOUT
    pause = 0.001
    try:
        while True:
            try:
                _prepare(connection, name, schema)
                return connection
            except sqlite3.OperationalError as error:
                # Two processes making one new file: SQLite answers "locked" at once,
                # without waiting, when both would change its journal mode or layout.
                if not _locked(error) or time.monotonic() + pause > deadline:
                    raise _unusable(name, error) from None
            time.sleep(pause)
            pause = min(pause * 2, 0.1)
    except BaseException:
        connection.close()
        raise


@contextlib.contextmanager
def transaction(connection: sqlite3.Connection, *, write: bool = True) -> Iterator[None]:
    """One transaction: ``BEGIN IMMEDIATE`` (or a read's ``BEGIN``), committed at the end,
    rolled back if the block raises."""
    connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        yield
    except BaseException:
        connection.rollback()
        raise
    connection.commit()


def database_error(path: str, error: sqlite3.Error) -> Exception:
    """What to raise for ``error`` met while using the file at ``path``.

    A damaged file becomes a ``ConfigError`` naming the path; a
    passing condition (a lock held too long, a full disk) stays the ``sqlite3`` error.
    """
    if type(error) is sqlite3.DatabaseError:  # "malformed", "not a database"
        return _corrupt(path, error)
    return error


def _check_header(path: str) -> None:
    try:
        with open(path, "rb") as file:
            head = file.read(len(_HEADER))
    except FileNotFoundError:
        return  # sqlite3 creates it
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a database file", field="path") from None
    except OSError as error:
        raise _unusable(path, error) from None
    if head and head != _HEADER:
        raise ConfigError(f"{path}: not an SQLite database; it was left as it is", field="path")


def _prepare(connection: sqlite3.Connection, path: str, schema: Sequence[str]) -> None:
    try:
        connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
        with transaction(connection, write=False):  # one snapshot: another may be making it
            _check_identity(connection, path)
        problems = [row[0] for row in connection.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise _corrupt(path, problems[0])
        # Small pages for a new file (an existing one keeps its own): an outbox commits
        # every envelope's outcome, and a commit writes each page it changes in full.
        connection.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        (mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode != "wal":
            raise ConfigError(
                f"{path}: SQLite cannot use write-ahead logging here (journal mode {mode!r});"
                " use a file on a local disk",
                field="path",
            )
        connection.execute("PRAGMA synchronous = FULL")
        with transaction(connection):
            # Again inside the write lock: another process may have made the file meanwhile.
            if _check_identity(connection, path):
                connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                connection.execute(f"PRAGMA user_version = {FILE_VERSION}")
            for statement in schema:
                connection.execute(statement)
    except sqlite3.DatabaseError as error:
        if type(error) is sqlite3.DatabaseError:  # "malformed", "not a database"
            raise _corrupt(path, error) from None
        if isinstance(error, sqlite3.OperationalError) and _locked(error):
            raise  # open_database tries again
        raise _unusable(path, error) from None


def _locked(error: sqlite3.OperationalError) -> bool:
    return "locked" in str(error) or "busy" in str(error)


def _check_identity(connection: sqlite3.Connection, path: str) -> bool:
    """Whether the file is empty, to be made notifymail's; raises if it is someone else's."""
    (application_id,) = connection.execute("PRAGMA application_id").fetchone()
    (version,) = connection.execute("PRAGMA user_version").fetchone()
    if application_id == APPLICATION_ID:
        if version > FILE_VERSION:
            raise ConfigError(
                f"{path}: written by a newer notifymail (file version {version}; this one"
                f" reads up to {FILE_VERSION}); it was left as it is",
                field="path",
            )
        return False
    (objects,) = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    if application_id == 0 and version == 0 and objects == 0:
        return True
    raise ConfigError(
        f"{path}: an SQLite database of another application (application_id"
        f" {application_id:#x}), not notifymail's; it was left as it is",
        field="path",
    )


def _corrupt(path: str, problem: object) -> ConfigError:
    return ConfigError(
        f"{path}: the database is corrupt ({problem}); it was left as it is", field="path"
    )


def _unusable(path: str, error: BaseException) -> ConfigError:
    return ConfigError(f"{path}: cannot be used as a database ({error})", field="path")


class LogSync:
    """Syncs a connection's write-ahead log to disk in a thread of its own, when asked.

    What was written to the log before a sync began is durable when it ends, even a
    commit made without a sync (``synchronous=NORMAL``): asked right after such a
    commit, a sync makes it durable a moment later while the caller goes on. The log is
    the one SQLite names after the database's resolved path (``PRAGMA database_list``),
    held open for as long as this object lives, so that a write error the kernel
    reports once, to the descriptors open at the time, is seen here. SQLite keeps its
    locks on the database file and its ``-shm`` file, never on the log, so closing this
    descriptor cannot release them. One sync at a time: `begin` waits for the last.

    A sync belongs to the process that began it: in a forked child, `wait` and `close`
    neither wait nor raise, and the inherited descriptor is left open (the child may
    have closed what it inherited and reused the number for a file of its own).
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        (database,) = (
            row[2] for row in connection.execute("PRAGMA database_list") if row[1] == "main"
        )
        self.path = f"{database}-wal"
        self._pid = os.getpid()
        self._descriptor = os.open(self.path, os.O_RDWR)
        self._close_descriptor = weakref.finalize(
            self, _close_in_process, self._pid, self._descriptor
        )
        self._directory_synced = False
        self._error: OSError | None = None
        self._thread: threading.Thread | None = None

    def begin(self) -> None:
        """Begin a sync of everything written to the log so far (raises what the
        last one raised, if it was not waited for)."""
        self.wait()
        self._thread = threading.Thread(target=self._sync, name=f"notifymail sync {self.path}")
        try:
            self._thread.start()
        except RuntimeError:  # no thread to be had (interpreter shutdown): sync here
            self._thread = None
            self._sync()

    def wait(self) -> None:
        """Wait for the sync under way; raise ``OSError`` naming the log if it failed."""
        if os.getpid() != self._pid:
            return
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise OSError(error.errno, f"syncing failed: {error.strerror}", self.path)

    def close(self) -> None:
        """Wait for the sync under way, then close the log's descriptor."""
        try:
            self.wait()
        finally:
            self._close_descriptor()

    def _sync(self) -> None:
        try:
            os.fsync(self._descriptor)
        except OSError as error:
            self._error = error
            return
        if not self._directory_synced:
            # The log's own entry in its directory, once, as SQLite does for a log it
            # creates: best effort, as there (not every system can sync a directory).
            self._directory_synced = True
            with contextlib.suppress(OSError):
                directory = os.open(os.path.dirname(self.path), os.O_RDONLY)
                try:
                    os.fsync(directory)
                finally:
                    os.close(directory)


def _close_in_process(pid: int, descriptor: int) -> None:
    """Close ``descriptor`` if this is the process that opened it (see `LogSync`)."""
    if os.getpid() == pid:
        os.close(descriptor)
