"""notifymail's SQLite file: durable settings, shared by its tables, and nobody else's
file ever written to."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

import notifymail as nm
from notifymail._sqlite import APPLICATION_ID, FILE_VERSION, open_database
from notifymail.outbox import SqliteOutbox

SUPPRESSIONS = ("CREATE TABLE IF NOT EXISTS suppression (address TEXT PRIMARY KEY)",)


def files_beside(path: Path) -> set[str]:
    return {child.name for child in path.parent.iterdir()}


def test_a_new_file_is_marked_as_notifymails_and_is_durable(tmp_path: Path) -> None:
    path = tmp_path / "mail.db"
    connection = open_database(path, SUPPRESSIONS)
    try:
        assert connection.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)
        assert connection.execute("PRAGMA user_version").fetchone() == (FILE_VERSION,)
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert connection.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
        assert connection.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    finally:
        connection.close()


def test_the_outbox_and_another_notifymail_table_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "mail.db"
    connection = open_database(path, SUPPRESSIONS)
    connection.execute("INSERT INTO suppression VALUES ('ann@example.com')")
    connection.close()
    with SqliteOutbox(path) as outbox:
        assert outbox.status().queued == 0
    again = open_database(path, SUPPRESSIONS)
    try:
        assert again.execute("SELECT address FROM suppression").fetchall() == [
            ("ann@example.com",)
        ]
        tables = {row[0] for row in again.execute("SELECT name FROM sqlite_master")}
        assert {"suppression", "outbox_envelope", "outbox_item"} <= tables
    finally:
        again.close()


@pytest.mark.parametrize("round_", range(5))
def test_connections_opening_a_new_file_at_once_all_succeed(tmp_path: Path, round_: int) -> None:
    path = tmp_path / "mail.db"
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def open_it() -> None:
        start.wait()
        try:
            SqliteOutbox(path).close()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=open_it) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    with SqliteOutbox(path) as outbox:
        assert outbox.status() == nm.OutboxStatus(queued=0, deferred=0, sending=0, sent=0, dead=0)


@pytest.mark.parametrize(
    "content",
    [
        b"#!/bin/sh\necho precious script\n",
        b"SQLite format 2\x00" + b"\x00" * 200,
        b"SQLite",  # shorter than a header
        bytes(range(256)) * 16,
    ],
    ids=["text", "other-header", "truncated", "binary"],
)
def test_a_file_that_is_not_sqlite_is_refused_and_left_as_it_is(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    with pytest.raises(nm.ConfigError, match="not an SQLite database") as caught:
        SqliteOutbox(path)
    assert str(path) in str(caught.value)
    assert path.read_bytes() == content
    assert files_beside(path) == {"notes.txt"}


def test_another_applications_database_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE users (name TEXT)")
    connection.execute("INSERT INTO users VALUES ('ann')")
    connection.commit()
    connection.close()
    content = path.read_bytes()
    with pytest.raises(nm.ConfigError, match="another application") as caught:
        SqliteOutbox(path)
    assert str(path) in str(caught.value)
    assert path.read_bytes() == content
    assert files_beside(path) == {"app.db"}


def test_an_empty_database_marked_by_another_application_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA application_id = 1234")
    connection.close()
    content = path.read_bytes()
    with pytest.raises(nm.ConfigError, match=r"application_id 0x4d2"):
        SqliteOutbox(path)
    assert path.read_bytes() == content


def test_a_corrupt_outbox_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "mail.db"
    with SqliteOutbox(path) as outbox:
        outbox.enqueue(
            [
                nm.Envelope("a@example.com", [f"u{i}@example.com"], raw=b"x" * 900)
                for i in range(50)
            ],
            key="k",
        )
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    content = bytearray(path.read_bytes())
    page = 4096
    assert len(content) > 4 * page
    content[2 * page : 4 * page] = b"\xa5" * (2 * page)  # the header and schema intact
    path.write_bytes(bytes(content))
    with pytest.raises(nm.ConfigError, match="the database is corrupt") as caught:
        SqliteOutbox(path)
    assert str(path) in str(caught.value)
    assert path.read_bytes() == bytes(content)


def test_a_file_from_a_newer_notifymail_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mail.db"
    SqliteOutbox(path).close()
    connection = sqlite3.connect(path)
    connection.execute(f"PRAGMA user_version = {FILE_VERSION + 1}")
    connection.close()
    with pytest.raises(nm.ConfigError, match="newer notifymail"):
        SqliteOutbox(path)


def test_a_directory_or_a_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(nm.ConfigError, match="is a directory") as caught:
        SqliteOutbox(tmp_path)
    assert caught.value.field == "path"
    missing = tmp_path / "no" / "such" / "mail.db"
    with pytest.raises(nm.ConfigError, match="cannot be used") as caught:
        SqliteOutbox(missing)
    assert str(missing) in str(caught.value)
