"""What the outbox syncs to disk, as docs/outbox.md states it: enqueues are committed
with ``synchronous=FULL``, leases and attempts' outcomes with ``synchronous=NORMAL``, in
a WAL file of 1 KiB pages; each claim syncs the log in a thread of its own while its
batch is delivered, and the next claim waits for that sync."""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
from pathlib import Path

import pytest

import notifymail as nm

SETTINGS = nm.EmailSettings(sender=nm.SenderSettings(from_address="alerts@example.com"))


def test_enqueues_are_synced_and_leases_and_outcomes_are_written_unsynced(tmp_path: Path) -> None:
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
    assert modes == {"enqueue": {"FULL"}, "lease": {"NORMAL"}, "outcome": {"NORMAL"}}

    other = sqlite3.connect(path)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert other.execute("PRAGMA page_size").fetchone() == (1024,)
    finally:
        other.close()


def accepted(claim: nm.outbox.Claim) -> nm.Delivery:
    return nm.Delivery(message_id="<m@example.com>", accepted=claim.envelope.recipients)


def test_a_claim_syncs_the_log_while_its_batch_goes_out_and_the_next_claim_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "mail.db"
    synced: list[int] = []  # the inode of each file synced
    ended: list[int] = []
    began, may_end = threading.Semaphore(0), threading.Event()
    fsync = os.fsync

    def held_fsync(descriptor: int) -> None:
        synced.append(os.fstat(descriptor).st_ino)
        began.release()
        may_end.wait(10)
        fsync(descriptor)
        ended.append(descriptor)

    monkeypatch.setattr(os, "fsync", held_fsync)
    with nm.SqliteOutbox(path) as outbox:
        mailer = nm.Mailer(SETTINGS, transport=nm.MemoryTransport(), outbox=outbox)
        mailer.enqueue(
            nm.Notification([f"guest{i}@example.org" for i in range(60)], "Hi", text=".")
        )
        log = os.stat(f"{path}-wal").st_ino

        first = outbox.claim(50)  # returns while its sync is held
        assert len(first) == 50
        assert began.acquire(timeout=10)
        assert synced == [log]
        assert ended == []  # the claim did not wait for its own sync
        for claim in first:
            outbox.settle(claim, accepted(claim))
        second: list[nm.outbox.Claim] = []
        claiming = threading.Thread(target=lambda: second.extend(outbox.claim(50)))
        claiming.start()
        claiming.join(0.3)
        assert claiming.is_alive()  # waiting for the first sync
        assert second == []
        may_end.set()
        claiming.join(10)
        assert len(second) == 10
        assert began.acquire(timeout=10)
        assert synced == [log, log]

        for claim in second:
            outbox.settle(claim, accepted(claim))
        assert outbox.claim(50) == []
        assert began.acquire(timeout=10)
        assert synced == [log, log, log]  # the last outcomes
        assert outbox.claim(50) == []
        assert not began.acquire(timeout=0.2)
        assert synced == [log, log, log]  # nothing new to sync
        assert outbox.status().sent == 60


def test_a_failed_sync_fails_the_next_claim_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def failing_fsync(descriptor: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    path = tmp_path / "mail.db"
    monkeypatch.setattr(os, "fsync", failing_fsync)
    with nm.SqliteOutbox(path) as outbox:
        mailer = nm.Mailer(SETTINGS, transport=nm.MemoryTransport(), outbox=outbox)
        mailer.enqueue(nm.Notification(["a@example.org", "b@example.org"], "Hi", text="."))
        (claim,) = outbox.claim(1)
        with pytest.raises(OSError, match="syncing failed") as caught:
            outbox.claim(1)
        assert caught.value.errno == errno.EIO
        assert caught.value.filename == f"{path}-wal"
        outbox.settle(claim, accepted(claim))  # the lease is still held

        assert len(outbox.claim(1)) == 1  # the error was reported once
        with caplog.at_level(logging.WARNING, logger="notifymail.outbox"):
            outbox.close()  # the sync this claim began fails too: logged, not raised
    assert f"{path}-wal" in caplog.text
    assert "syncing failed" in caplog.text
