"""What the outbox syncs to disk, as docs/outbox.md states it: enqueues are committed
with ``synchronous=FULL``, leases and attempts' outcomes with ``synchronous=NORMAL``, in
a WAL file of 1 KiB pages; each claim syncs the log in a thread of its own while its
batch is delivered, and the next claim waits for that sync."""

from __future__ import annotations

import errno
import gc
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
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


def enqueue(outbox: nm.SqliteOutbox, count: int) -> None:
    mailer = nm.Mailer(SETTINGS, transport=nm.MemoryTransport(), outbox=outbox)
    mailer.enqueue(
        nm.Notification([f"guest{i}@example.org" for i in range(count)], "Hi", text=".")
    )


class HeldSyncs:
    """Stands in for ``os.fsync`` (then calls it): notes which file each sync is of, and
    the log's size when its sync began, and holds each sync of the log until let go."""

    def __init__(self, database: Path) -> None:
        self.log = os.path.realpath(f"{database}-wal")
        self.began = threading.Semaphore(0)  # released as each sync of the log begins
        self.synced: list[str] = []  # "log" or "directory"
        self.sizes: list[int] = []  # the log's, as each of its syncs began
        self._fsync = os.fsync
        self._permits = threading.Semaphore(0)
        self._free = threading.Event()

    def let_go(self) -> None:
        """Let the sync of the log under way, or the next one, end."""
        self._permits.release()

    def let_all_go(self) -> None:
        self._free.set()

    def __call__(self, descriptor: int) -> None:
        status = os.fstat(descriptor)
        if status.st_ino == os.stat(self.log).st_ino:
            self.synced.append("log")
            self.sizes.append(status.st_size)
            self.began.release()
            deadline = time.monotonic() + 30
            while not (self._free.is_set() or self._permits.acquire(timeout=0.01)):
                assert time.monotonic() < deadline
        else:
            assert status.st_ino == os.stat(os.path.dirname(self.log)).st_ino
            self.synced.append("directory")
        self._fsync(descriptor)


@pytest.fixture
def held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldSyncs]:
    syncs = HeldSyncs(tmp_path / "mail.db")
    monkeypatch.setattr(os, "fsync", syncs)
    yield syncs
    syncs.let_all_go()


def test_a_claim_syncs_the_log_while_its_batch_goes_out_and_the_next_claim_waits(
    tmp_path: Path, held: HeldSyncs
) -> None:
    with nm.SqliteOutbox(tmp_path / "mail.db") as outbox:
        enqueue(outbox, 60)
        first = outbox.claim(50)  # returns while its sync is held
        assert len(first) == 50
        assert held.began.acquire(timeout=10)
        assert held.synced == ["log"]
        assert held.sizes == [os.stat(held.log).st_size]  # the leases were in the log
        for claim in first:
            outbox.settle(claim, accepted(claim))
        second: list[nm.outbox.Claim] = []
        claiming = threading.Thread(target=lambda: second.extend(outbox.claim(50)))
        claiming.start()
        claiming.join(0.3)
        assert claiming.is_alive()  # waiting for the first sync
        assert second == []
        held.let_all_go()
        claiming.join(10)
        assert len(second) == 10
        assert held.began.acquire(timeout=10)
        assert held.synced == ["log", "directory", "log"]  # the directory once

        for claim in second:
            outbox.settle(claim, accepted(claim))
        assert outbox.claim(50) == []
        assert held.began.acquire(timeout=10)
        assert held.synced[-1] == "log"  # the last outcomes
        assert outbox.claim(50) == []
        assert not held.began.acquire(timeout=0.2)  # nothing new to sync
        assert outbox.status().sent == 60


def test_claims_from_several_threads_each_wait_for_the_sync_before_them(
    tmp_path: Path, held: HeldSyncs
) -> None:
    with nm.SqliteOutbox(tmp_path / "mail.db") as outbox:
        enqueue(outbox, 30)
        assert len(outbox.claim(10)) == 10
        assert held.began.acquire(timeout=10)
        claimed: list[int] = []
        threads = [
            threading.Thread(target=lambda: claimed.append(len(outbox.claim(10))))
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(0.3)
        assert claimed == []  # both wait for the first sync
        held.let_go()
        assert held.began.acquire(timeout=10)  # one of them claimed, and its sync began
        deadline = time.monotonic() + 10
        while not claimed:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        for thread in threads:
            thread.join(0.3)
        assert claimed == [10]  # the other waits for that sync
        held.let_all_go()
        for thread in threads:
            thread.join(10)
        assert claimed == [10, 10]
        assert held.began.acquire(timeout=10)
        assert held.synced.count("log") == 3  # one sync per claim
        assert outbox.status().sending == 30


@pytest.mark.parametrize("opened_as", ["a symlink", "a relative path"])
def test_the_log_synced_is_the_one_sqlite_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, held: HeldSyncs, opened_as: str
) -> None:
    held.let_all_go()
    if opened_as == "a symlink":
        (tmp_path / "link.db").symlink_to(tmp_path / "mail.db")
        outbox = nm.SqliteOutbox(tmp_path / "link.db")
    else:
        monkeypatch.chdir(tmp_path)
        outbox = nm.SqliteOutbox("mail.db")
        monkeypatch.chdir("/")  # as a daemon does after it opened its files
    with outbox:
        enqueue(outbox, 1)
        assert len(outbox.claim(1)) == 1
        assert held.began.acquire(timeout=10)
    assert held.synced[0] == "log"
    assert not os.path.exists(tmp_path / "link.db-wal")


def test_a_claim_that_cannot_start_a_thread_syncs_the_log_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, held: HeldSyncs
) -> None:
    def no_thread(thread: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    held.let_all_go()
    with nm.SqliteOutbox(tmp_path / "mail.db") as outbox:
        enqueue(outbox, 1)
        monkeypatch.setattr(threading.Thread, "start", no_thread)
        assert len(outbox.claim(1)) == 1
        assert held.synced == ["log", "directory"]  # before the claim returned


def test_a_failed_sync_fails_the_next_claim_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def failing_fsync(descriptor: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    path = tmp_path / "mail.db"
    monkeypatch.setattr(os, "fsync", failing_fsync)
    with nm.SqliteOutbox(path) as outbox:
        enqueue(outbox, 2)
        (claim,) = outbox.claim(1)
        with pytest.raises(OSError, match="syncing failed") as caught:
            outbox.claim(1)  # before it leases anything
        assert caught.value.errno == errno.EIO
        assert caught.value.filename == os.path.realpath(f"{path}-wal")
        assert outbox.status().sending == 1
        outbox.settle(claim, accepted(claim))  # the lease is still held

        assert len(outbox.claim(1)) == 1  # the error was reported once
        with caplog.at_level(logging.WARNING, logger="notifymail.outbox"):
            outbox.close()  # the sync this claim began fails too: logged, not raised
    assert os.path.realpath(f"{path}-wal") in caplog.text
    assert "syncing failed" in caplog.text


def test_an_outbox_not_closed_leaves_no_descriptor_open(tmp_path: Path) -> None:
    def descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    before, threads = descriptors(), threading.active_count()
    outbox = nm.SqliteOutbox(tmp_path / "mail.db")
    enqueue(outbox, 1)
    assert len(outbox.claim(1)) == 1
    assert descriptors() > before
    del outbox
    deadline = time.monotonic() + 10
    while threading.active_count() > threads:  # the sync the claim began
        assert time.monotonic() < deadline
        time.sleep(0.01)
    gc.collect()
    assert descriptors() == before
