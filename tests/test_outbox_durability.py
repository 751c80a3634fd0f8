"""What the outbox syncs to disk, as docs/outbox.md states it: enqueues and leases are
committed with ``synchronous=FULL``, attempts' outcomes with ``synchronous=NORMAL``, in a
WAL file of 1 KiB pages."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import notifymail as nm

SETTINGS = nm.EmailSettings(sender=nm.SenderSettings(from_address="alerts@example.com"))


def test_enqueues_and_leases_are_synced_and_outcomes_are_written_unsynced(tmp_path: Path) -> None:
    path = tmp_path / "mail.db"
    statements: list[str] = []
    with nm.SqliteOutbox(path) as outbox:
        # The connection's own setting is only observable from inside: trace its statements.
        connection = outbox._connection
        assert connection is not None
        assert connection.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
        connection.set_trace_callback(statements.append)
        mailer = nm.Mailer(SETTINGS, transport=nm.MemoryTransport(), outbox=outbox)
        mailer.enqueue(
            nm.Notification([f"guest{i}@example.org" for i in range(60)], "Hi", text=".")
        )
        mailer.deliver_queued()
        mailer.enqueue(nm.Notification(["late@example.org"], "Hi", text="."))

    mode = "FULL"
    modes: dict[str, set[str]] = {"enqueue": set(), "lease": set(), "outcome": set()}
    for statement in statements:
        if statement.startswith("PRAGMA synchronous = "):
            mode = statement.removeprefix("PRAGMA synchronous = ")
        elif statement.startswith("INSERT INTO outbox_envelope"):
            modes["enqueue"].add(mode)
        elif statement.startswith("UPDATE outbox_envelope SET state = "):  # values bound
            modes["outcome" if " attempts = " in statement else "lease"].add(mode)
    assert modes == {"enqueue": {"FULL"}, "lease": {"FULL"}, "outcome": {"NORMAL"}}

    other = sqlite3.connect(path)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert other.execute("PRAGMA page_size").fetchone() == (1024,)
    finally:
        other.close()
