"""Suppression lists (SPEC.md section 11): in memory and in a real SQLite file."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import notifymail as nm


@pytest.fixture(params=["memory", "sqlite"])
def suppressions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[nm.Suppressions]:
    if request.param == "memory":
        yield nm.InMemorySuppressions()
    else:
        with nm.SqliteSuppressions(tmp_path / "mail.db") as store:
            yield store


def test_an_added_address_is_suppressed_until_removed(suppressions: nm.Suppressions) -> None:
    suppressions.add("ann@example.com", "unsubscribed")
    assert suppressions.is_suppressed("ann@example.com")
    assert not suppressions.is_suppressed("bob@example.com")

    suppressions.remove("ann@example.com")
    assert not suppressions.is_suppressed("ann@example.com")


@pytest.mark.parametrize(
    ("added", "asked"),
    [
        ("Ann@Example.COM", "ann@example.com"),
        ("ann@example.com", "ANN@EXAMPLE.COM"),
        ("jörg@bücher.example", "JÖRG@xn--bcher-kva.example"),
        (" ann@example.com ", "ann@example.com"),
    ],
)
def test_addresses_compare_case_insensitively_in_either_domain_form(
    suppressions: nm.Suppressions, added: str, asked: str
) -> None:
    suppressions.add(added, "unsubscribed")
    assert suppressions.is_suppressed(asked)
    suppressions.remove(asked)
    assert not suppressions.is_suppressed(added)


def test_removing_an_address_not_on_the_list_does_nothing(suppressions: nm.Suppressions) -> None:
    suppressions.add("ann@example.com", "unsubscribed")
    suppressions.remove("bob@example.com")
    assert suppressions.is_suppressed("ann@example.com")


@pytest.mark.parametrize("method", ["is_suppressed", "remove"])
def test_an_invalid_address_is_an_invalid_message_naming_it(
    suppressions: nm.Suppressions, method: str
) -> None:
    with pytest.raises(nm.InvalidMessage, match=r"^address: 'not an address'"):
        getattr(suppressions, method)("not an address")
    with pytest.raises(nm.InvalidMessage, match=r"^address: 'not an address'"):
        suppressions.add("not an address", "unsubscribed")


@pytest.mark.parametrize("kind", [nm.InMemorySuppressions, "sqlite"])
def test_adding_again_replaces_the_reason(kind: object, tmp_path: Path) -> None:
    store = (
        nm.SqliteSuppressions(tmp_path / "mail.db")
        if kind == "sqlite"
        else nm.InMemorySuppressions()
    )
    try:
        assert store.reason("ann@example.com") is None
        store.add("ann@example.com", "unsubscribed")
        assert store.reason("ANN@example.com") == "unsubscribed"
        store.add("Ann@example.com", "hard bounce")
        assert store.reason("ann@example.com") == "hard bounce"
    finally:
        if isinstance(store, nm.SqliteSuppressions):
            store.close()


def test_the_list_outlives_the_process_that_wrote_it(tmp_path: Path) -> None:
    path = tmp_path / "mail.db"
    with nm.SqliteSuppressions(path) as store:
        store.add("ann@example.com", "unsubscribed")
        store.add("bob@example.com", "hard bounce")
        store.remove("bob@example.com")

    with nm.SqliteSuppressions(str(path)) as reopened:
        assert reopened.is_suppressed("ann@example.com")
        assert reopened.reason("ann@example.com") == "unsubscribed"
        assert not reopened.is_suppressed("bob@example.com")


def test_the_file_is_in_wal_mode_and_marked_as_notifymails(tmp_path: Path) -> None:
    path = tmp_path / "mail.db"
    nm.SqliteSuppressions(path).close()

    connection = sqlite3.connect(path)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert connection.execute("PRAGMA application_id").fetchone() != (0,)
        assert connection.execute("SELECT count(*) FROM suppressions").fetchone() == (0,)
    finally:
        connection.close()


def make_foreign_database(path: Path, application_id: int) -> None:
    connection = sqlite3.connect(path)
    try:
        connection.execute(f"PRAGMA application_id = {application_id}")
        connection.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        connection.execute("INSERT INTO invoices (total) VALUES (12.5)")
        connection.commit()
    finally:
        connection.close()


@pytest.mark.parametrize("application_id", [0, 1234])
def test_another_programs_database_is_refused_and_left_untouched(
    tmp_path: Path, application_id: int
) -> None:
    path = tmp_path / "invoices.db"
    make_foreign_database(path, application_id)
    before = path.read_bytes()

    with pytest.raises(nm.ConfigError, match="another application") as caught:
        nm.SqliteSuppressions(path)

    assert str(path) in str(caught.value)
    assert caught.value.field == "path"
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["invoices.db"]


def test_a_file_that_is_not_a_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "mail.db"
    path.write_bytes(b"these are my notes, not a database\n" * 200)
    before = path.read_bytes()

    with pytest.raises(nm.ConfigError, match="not an SQLite database") as caught:
        nm.SqliteSuppressions(path)

    assert str(path) in str(caught.value)
    assert path.read_bytes() == before


def test_a_path_in_a_missing_directory_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "mail.db"
    with pytest.raises(nm.ConfigError, match="cannot be used") as caught:
        nm.SqliteSuppressions(path)
    assert str(path) in str(caught.value)


def test_threads_adding_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "mail.db"
    with nm.SqliteSuppressions(path) as shared, nm.SqliteSuppressions(path) as other:
        stores = [shared, shared, other, other]
        start = threading.Barrier(len(stores))

        def add_some(index: int) -> None:
            start.wait(timeout=10)
            for n in range(40):
                stores[index].add(f"t{index}-{n}@example.com", f"thread {index}")
                stores[index].add("everyone@example.com", f"thread {index}")

        threads = [threading.Thread(target=add_some, args=(i,)) for i in range(len(stores))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

        assert not any(thread.is_alive() for thread in threads)
        for index in range(len(stores)):
            assert all(other.is_suppressed(f"T{index}-{n}@example.com") for n in range(40))
        assert other.is_suppressed("everyone@example.com")


ADDER = """
import sys, time
from pathlib import Path
import notifymail as nm

path, name, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
deadline = time.monotonic() + 10
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.001)
with nm.SqliteSuppressions(path) as store:  # both make the new file at once
    for n in range(60):
        store.add(f"{name}-{n}@example.com", name)
        store.add("both@example.com", name)
print("done")
"""


@pytest.mark.parametrize("run", range(5))  # a race: SQLite said "locked" in about 1 run in 6
def test_two_processes_making_and_filling_one_file_at_once_lose_nothing(
    tmp_path: Path, run: int
) -> None:
    path, go = tmp_path / "mail.db", tmp_path / "go"
    processes = [
        subprocess.Popen(  # noqa: S603 - our own interpreter and code
            [sys.executable, "-c", ADDER, str(path), name, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("first", "second")
    ]
    go.touch()
    outputs = [process.communicate(timeout=60) for process in processes]

    assert [process.returncode for process in processes] == [0, 0], outputs
    with nm.SqliteSuppressions(path) as store:
        for name in ("first", "second"):
            assert all(store.reason(f"{name}-{n}@example.com") == name for n in range(60))
        assert store.reason("both@example.com") in {"first", "second"}


def test_the_repr_names_the_file_or_the_count(tmp_path: Path) -> None:
    memory = nm.InMemorySuppressions()
    memory.add("ann@example.com", "unsubscribed")
    assert repr(memory) == "InMemorySuppressions(<1 addresses>)"
    with nm.SqliteSuppressions(tmp_path / "mail.db") as store:
        assert repr(store) == f"SqliteSuppressions({str(tmp_path / 'mail.db')!r})"


def test_a_forked_child_uses_a_connection_of_its_own(tmp_path: Path) -> None:
    script = f"""
import os
import notifymail as nm
store = nm.SqliteSuppressions({str(tmp_path / "mail.db")!r})
store.add("parent@example.com", "unsubscribed")
pid = os.fork()
if pid == 0:
    store.add("child@example.com", "unsubscribed")
    os._exit(0 if store.is_suppressed("parent@example.com") else 1)
_, status = os.waitpid(pid, 0)
print(status, store.is_suppressed("child@example.com"))
store.close()
"""
    result = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.split() == ["0", "True"]


def test_a_closed_list_says_so(tmp_path: Path) -> None:
    store = nm.SqliteSuppressions(tmp_path / "mail.db")
    store.close()
    store.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        store.is_suppressed("ann@example.com")


def test_the_outbox_and_the_list_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "mail.db"
    raw = b"Subject: Hi\r\n\r\nHello\r\n"
    with nm.SqliteOutbox(path) as outbox, nm.SqliteSuppressions(path) as store:
        outbox.enqueue([nm.Envelope("a@example.com", ["b@example.com"], raw=raw)], key="k")
        store.add("c@example.com", "unsubscribed")
    with nm.SqliteSuppressions(path) as store, nm.SqliteOutbox(path) as outbox:
        assert store.is_suppressed("c@example.com")
        assert outbox.status().queued == 1
