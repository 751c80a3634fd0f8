"""SqliteOutbox as a store, on real files: all-or-nothing enqueue, keys, leases,
per-recipient outcomes, the backoff schedule, dead mail, purge."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import notifymail as nm
from notifymail.outbox import SqliteOutbox, backoff

MIN, MAX = 60.0, 3600.0
SERVER_BUSY = nm.TemporaryFailure("421 4.3.2 busy", reply=nm.Reply(421, "4.3.2 busy"))


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def envelope(*recipients: str, body: bytes = b"Hello\r\n") -> nm.Envelope:
    raw = b"From: a@example.com\r\nSubject: s\r\nMessage-ID: <m@example.com>\r\n\r\n" + body
    return nm.Envelope("a@example.com", recipients, raw=raw)


def accepted(claim: object) -> nm.Delivery:
    from notifymail._queue import Claim

    assert isinstance(claim, Claim)
    return nm.Delivery(claim.envelope.message_id, claim.envelope.recipients)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def workers(tmp_path: Path, clock: Clock) -> Iterator[tuple[SqliteOutbox, SqliteOutbox]]:
    """Two workers' outboxes on one file, with 10-second leases."""
    path = tmp_path / "mail.db"
    with (
        SqliteOutbox(path, clock=clock, lease=10) as one,
        SqliteOutbox(path, clock=clock, lease=10) as two,
    ):
        yield one, two


@pytest.fixture
def outbox(tmp_path: Path, clock: Clock) -> Iterator[SqliteOutbox]:
    with SqliteOutbox(tmp_path / "mail.db", clock=clock) as store:
        yield store


def test_enqueue_stores_every_envelope_and_counts_recipients(outbox: SqliteOutbox) -> None:
    queued = outbox.enqueue([envelope("a@x.org"), envelope("b@x.org", "c@x.org")], key="k1")
    assert (queued.key, queued.envelopes, queued.recipients, queued.new) == ("k1", 2, 3, True)
    assert outbox.status() == nm.OutboxStatus(queued=2, deferred=0, sending=0, sent=0, dead=0)


def test_the_same_key_twice_stores_nothing_and_returns_the_first_record(
    outbox: SqliteOutbox,
) -> None:
    first = outbox.enqueue([envelope("a@x.org")], key="request-7")
    again = outbox.enqueue([envelope("a@x.org"), envelope("b@x.org")], key="request-7")
    assert again.new is False
    assert (again.id, again.envelopes, again.recipients) == (first.id, 1, 1)
    assert outbox.status().queued == 1


def test_enqueue_is_all_or_nothing(outbox: SqliteOutbox) -> None:
    # SQLite cannot store a lone surrogate: the last envelope fails inside the transaction.
    broken = nm.Envelope("a\udcff@example.com", ["z@x.org"], raw=b"Subject: s\r\n\r\nx\r\n")
    with pytest.raises(UnicodeEncodeError):
        outbox.enqueue([envelope("a@x.org"), envelope("b@x.org"), broken], key="k")
    assert outbox.status().queued == 0
    assert outbox.enqueue([envelope("a@x.org")], key="k").new  # the key was not taken


def test_a_notifications_body_is_stored_once(tmp_path: Path) -> None:
    body = b"x" * 60 + b"\r\n"
    with SqliteOutbox(tmp_path / "mail.db") as outbox:
        outbox.enqueue([envelope(f"u{i}@x.org", body=body * 800) for i in range(500)], key="k")
        claims = outbox.claim(50)
    assert all(claim.envelope.raw.endswith(body * 800) for claim in claims)
    size = sum(path.stat().st_size for path in tmp_path.iterdir())
    assert size < 500 * len(body) * 800 / 20


def test_two_workers_never_hold_the_same_envelope(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "mail.db"
    with SqliteOutbox(path, clock=clock) as one, SqliteOutbox(path, clock=clock) as two:
        one.enqueue([envelope(f"u{i}@x.org") for i in range(120)], key="k")
        held_by_one = {claim.id for claim in one.claim(50) + one.claim(50)}
        held_by_two = {claim.id for claim in two.claim(50)}
        assert len(held_by_one) == 100
        assert len(held_by_two) == 20
        assert not held_by_one & held_by_two
        assert two.claim(50) == []
        assert one.status().sending == 120


def test_an_expired_lease_passes_to_another_worker_and_the_first_stops(
    workers: tuple[SqliteOutbox, SqliteOutbox], clock: Clock
) -> None:
    one, two = workers
    one.enqueue([envelope("a@x.org")], key="k")
    (claim,) = one.claim(10)
    assert one.holds(claim)
    clock.now += 9.9
    assert two.claim(10) == []
    clock.now += 0.2
    (taken,) = two.claim(10)
    assert taken.id == claim.id
    assert not one.holds(claim)
    assert two.holds(taken)


def test_an_attempt_recorded_after_its_lease_was_lost_leaves_the_envelope_to_its_new_holder(
    workers: tuple[SqliteOutbox, SqliteOutbox], clock: Clock
) -> None:
    one, two = workers
    one.enqueue([envelope("a@x.org", "b@x.org")], key="k")
    (slow,) = one.claim(10)
    clock.now += 11
    (taken,) = two.claim(10)
    late = one.settle(slow, nm.Delivery("m", ("a@x.org",), {}))
    assert late.accepted == ("a@x.org",)
    assert late.deferred == ()
    assert one.status().sending == 1  # still the other worker's
    # The one now holding it decides what comes next.
    assert taken.envelope.recipients == ("a@x.org", "b@x.org")
    assert two.settle(taken, accepted(taken)).accepted == ("a@x.org", "b@x.org")
    assert two.status().sent == 1


def test_a_worker_renews_its_leases_once_half_a_lease_has_passed(
    workers: tuple[SqliteOutbox, SqliteOutbox], clock: Clock
) -> None:
    one, two = workers
    one.enqueue([envelope("a@x.org"), envelope("b@x.org")], key="k")
    first, second = one.claim(10)
    clock.now += 6
    assert one.holds(first)  # renewed until now + 10
    one.settle(first, accepted(first))
    clock.now += 8  # 14 after the claim: past the first lease, within the renewed one
    assert two.claim(10) == []
    assert one.holds(second)


def test_accepted_and_5xx_recipients_are_never_tried_again(
    outbox: SqliteOutbox, clock: Clock
) -> None:
    outbox.enqueue([envelope("ok@x.org", "later@x.org", "gone@x.org")], key="k")
    (claim,) = outbox.claim(10)
    settled = outbox.settle(
        claim,
        nm.Delivery(
            "m",
            accepted=("ok@x.org",),
            refused={
                "later@x.org": nm.Reply(450, "4.2.1 mailbox busy"),
                "gone@x.org": nm.Reply(550, "5.1.1 no such user"),
            },
        ),
    )
    assert settled.accepted == ("ok@x.org",)
    assert dict(settled.refused) == {"gone@x.org": nm.Reply(550, "5.1.1 no such user")}
    assert settled.deferred == ("later@x.org",)
    assert outbox.status().deferred == 1
    clock.now += MIN * 1.1
    (again,) = outbox.claim(10)
    assert again.envelope.recipients == ("later@x.org",)
    assert again.attempt == 2
    assert again.envelope.raw == claim.envelope.raw
    done = outbox.settle(again, accepted(again))
    assert done.accepted == ("later@x.org",)
    assert outbox.status().sent == 1


def test_a_retryable_failure_waits_by_the_backoff_schedule(tmp_path: Path, clock: Clock) -> None:
    with SqliteOutbox(tmp_path / "mail.db", clock=clock, min_backoff=10, max_backoff=35) as outbox:
        outbox.enqueue([envelope("a@x.org")], key="k")
        for nominal in (10, 20, 35, 35):
            (claim,) = outbox.claim(10)
            outbox.settle(claim, SERVER_BUSY)
            clock.now += nominal - 0.01
            assert outbox.claim(10) == [], nominal
            clock.now += nominal * 0.1 + 0.01
        (claim,) = outbox.claim(10)
        assert claim.attempt == 5


def test_a_non_retryable_error_makes_the_envelope_dead_at_once(outbox: SqliteOutbox) -> None:
    outbox.enqueue([envelope("a@x.org", "b@x.org")], key="k")
    (claim,) = outbox.claim(10)
    error = nm.AuthenticationFailed("535 5.7.8 bad credentials")
    settled = outbox.settle(claim, error)
    assert dict(settled.failed) == {"a@x.org": error, "b@x.org": error}
    (dead,) = outbox.dead()
    assert dead.recipients == ("a@x.org", "b@x.org")
    assert dead.last_error == "535 5.7.8 bad credentials"
    assert dead.key == "k"


def test_recipients_undelivered_at_max_lifetime_become_dead(tmp_path: Path, clock: Clock) -> None:
    with SqliteOutbox(
        tmp_path / "mail.db", clock=clock, max_lifetime=100, min_backoff=60, max_backoff=60
    ) as outbox:
        outbox.enqueue([envelope("a@x.org", "b@x.org")], key="k")
        (claim,) = outbox.claim(10)
        outbox.settle(claim, nm.Delivery("m", ("a@x.org",), {"b@x.org": nm.Reply(451, "later")}))
        clock.now += 66
        (claim,) = outbox.claim(10)
        assert claim.envelope.recipients == ("b@x.org",)
        outbox.settle(claim, SERVER_BUSY)
        clock.now += 33.99  # the next try is at the end of the lifetime, not after it
        assert outbox.claim(10) == []
        clock.now += 0.01
        (claim,) = outbox.claim(10)
        settled = outbox.settle(claim, SERVER_BUSY)
        assert list(settled.failed) == ["b@x.org"]
        assert settled.deferred == ()
        assert outbox.status().dead == 1
        (dead,) = outbox.dead()
        assert dead.recipients == ("b@x.org",)


OUTCOMES: dict[str, nm.Delivery | nm.DeliveryError] = {
    "all accepted": nm.Delivery("m", ("a@x.org", "b@x.org")),
    "one 4xx, one 5xx": nm.Delivery(
        "m",
        (),
        {"a@x.org": nm.Reply(451, "4.3.0 later"), "b@x.org": nm.Reply(550, "5.1.1 no such user")},
    ),
    "one accepted, one 4xx": nm.Delivery(
        "m", ("a@x.org",), {"b@x.org": nm.Reply(452, "4.2.2 full")}
    ),
    "server busy": SERVER_BUSY,
    "a final error": nm.AuthenticationFailed("535 5.7.8 bad credentials"),
    "b suppressed, a accepted": nm.Delivery("m", ("a@x.org",)),
    "b suppressed, a refused": nm.Delivery("m", (), {"a@x.org": nm.Reply(550, "5.1.1 unknown")}),
    # Not what a transport reports for a suppressed recipient, who is not sent to: the
    # suppression still wins over an anticipated outcome that matches.
    "b suppressed, both accepted": nm.Delivery("m", ("a@x.org", "b@x.org")),
}
_ROW = "SELECT state, attempts, finished_at, last_error, recipients, owner FROM outbox_envelope"


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_an_anticipated_outcome_is_recorded_as_any_other(
    tmp_path: Path, clock: Clock, outcome: str
) -> None:
    """`anticipate` works out the all-accepted record while the server answers; whatever
    the answer, the row and the report are what they would have been without it."""
    suppressed = ("b@x.org",) if outcome.startswith("b suppressed") else ()
    results = []
    for name, anticipated in (("plain.db", False), ("anticipated.db", True)):
        with SqliteOutbox(tmp_path / name, clock=clock, min_backoff=MIN, max_backoff=MIN) as store:
            store.enqueue([envelope("a@x.org", "b@x.org")], key="k")
            (claim,) = store.claim(10)
            started = clock.now
            if anticipated:
                store.anticipate(claim)
                made = store._held[int(claim.id)].anticipated
                assert made is not None
                store.anticipate(claim)  # once is enough
                assert store._held[int(claim.id)].anticipated is made
                assert store.status().sending == 1  # nothing written yet
            clock.now += 5  # the reply comes later
            settled = store.settle(claim, OUTCOMES[outcome], suppressed=suppressed)
            with store._database(write=False) as db:
                row = db.execute(_ROW).fetchone()
                (due,) = db.execute("SELECT due_at FROM outbox_envelope").fetchone()
            clock.now = started
        results.append((settled, row, due))
    (plain, plain_row, plain_due), (anticipated_settled, row, due) = results
    assert anticipated_settled == plain
    assert row == plain_row
    for when in (plain_due, due):
        if row[0] >= 3:  # done: as of the reply, not of the anticipation
            assert when == row[2] == started + 5
        else:  # deferred: by the schedule, whose jitter differs
            assert started + 5 + MIN <= when <= started + 5 + MIN * 1.1


def test_anticipating_a_settled_claim_does_nothing_and_a_lease_lost_after_is_recorded_as_lost(
    workers: tuple[SqliteOutbox, SqliteOutbox], clock: Clock
) -> None:
    one, two = workers
    one.enqueue([envelope("a@x.org"), envelope("b@x.org")], key="k")
    first, second = one.claim(10)
    one.settle(first, accepted(first))
    one.anticipate(first)  # settled already
    one.anticipate(second)
    clock.now += 11
    (taken,) = two.claim(10)  # the lease on the second ran out
    late = one.settle(second, accepted(second))
    assert late.accepted == ("b@x.org",)
    assert one.status() == nm.OutboxStatus(queued=0, deferred=0, sending=1, sent=1, dead=0)
    assert two.settle(taken, accepted(taken)).accepted == ("b@x.org",)
    assert two.status().sent == 2


def test_retry_sends_dead_mail_again_to_those_who_never_got_it(
    outbox: SqliteOutbox, clock: Clock
) -> None:
    outbox.enqueue([envelope("ok@x.org", "bad@x.org")], key="k")
    (claim,) = outbox.claim(10)
    outbox.settle(claim, nm.Delivery("m", ("ok@x.org",), {}))
    # The first attempt accepted one; a later one fails for good.
    clock.now += 1
    outbox.enqueue([envelope("c@x.org")], key="k2")
    (claim2,) = outbox.claim(10)
    outbox.settle(claim2, nm.TlsError("certificate not trusted"))
    (dead,) = outbox.dead()
    assert outbox.retry([dead.id, "999", "not-a-number"]) == 1
    assert outbox.retry([dead.id]) == 0  # no longer dead
    assert outbox.dead() == []
    (again,) = outbox.claim(10)
    assert again.envelope.recipients == ("c@x.org",)
    assert again.attempt == 1


def test_release_puts_unsent_claims_back_due_at_once(outbox: SqliteOutbox) -> None:
    outbox.enqueue([envelope(f"u{i}@x.org") for i in range(3)], key="k")
    claims = outbox.claim(10)
    outbox.release(claims[1:])
    assert outbox.status() == nm.OutboxStatus(queued=2, deferred=0, sending=1, sent=0, dead=0)
    assert not outbox.holds(claims[1])
    assert [claim.id for claim in outbox.claim(10)] == [claim.id for claim in claims[1:]]


def test_purge_removes_old_finished_envelopes_and_their_keys(
    outbox: SqliteOutbox, clock: Clock
) -> None:
    outbox.enqueue([envelope("a@x.org")], key="old")
    (claim,) = outbox.claim(10)
    outbox.settle(claim, accepted(claim))
    clock.now += 1000
    outbox.enqueue([envelope("b@x.org")], key="new")
    (claim,) = outbox.claim(10)
    outbox.settle(claim, accepted(claim))
    outbox.enqueue([envelope("c@x.org")], key="waiting")
    clock.now += 10
    assert outbox.purge(older_than=500) == 1
    assert outbox.status() == nm.OutboxStatus(queued=1, deferred=0, sending=0, sent=1, dead=0)
    assert outbox.enqueue([envelope("a@x.org")], key="old").new
    assert not outbox.enqueue([envelope("b@x.org")], key="new").new
    assert outbox.purge(older_than=0) == 1
    with pytest.raises(ValueError, match="older_than"):
        outbox.purge(older_than=-1)


def test_threads_share_one_outbox(outbox: SqliteOutbox) -> None:
    def enqueue_many(thread: int) -> None:
        for i in range(20):
            outbox.enqueue([envelope(f"u{thread}-{i}@x.org")], key=f"{thread}-{i}")

    threads = [threading.Thread(target=enqueue_many, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert outbox.status().queued == 80


def test_a_forked_child_uses_a_connection_of_its_own(tmp_path: Path) -> None:
    script = f"""
import os
from notifymail import Envelope
from notifymail.outbox import SqliteOutbox
outbox = SqliteOutbox({str(tmp_path / "mail.db")!r})
outbox.enqueue([Envelope("a@x.org", ["b@x.org"], raw=b"s: 1\\r\\n\\r\\nx")], key="parent")
pid = os.fork()
if pid == 0:
    outbox.enqueue([Envelope("a@x.org", ["c@x.org"], raw=b"s: 1\\r\\n\\r\\nx")], key="child")
    os._exit(0)
os.waitpid(pid, 0)
print(outbox.status().queued)
"""
    result = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "2"


def test_a_forked_child_is_not_answerable_for_its_parents_sync(tmp_path: Path) -> None:
    script = f"""
import errno, os, threading, time
from notifymail import Envelope
from notifymail.outbox import SqliteOutbox
parent, fsync = os.getpid(), os.fsync
def failing_in_the_parent(descriptor):
    if os.getpid() == parent:
        raise OSError(errno.EIO, "Input/output error")
    fsync(descriptor)
os.fsync = failing_in_the_parent
outbox = SqliteOutbox({str(tmp_path / "mail.db")!r})
recipients = ("b@x.org", "c@x.org", "d@x.org")
outbox.enqueue([Envelope("a@x.org", [to], raw=b"s: 1\\r\\n\\r\\nx") for to in recipients], key="k")
assert len(outbox.claim(1)) == 1  # its sync fails, in a thread
deadline = time.monotonic() + 30
while threading.active_count() > 1:
    assert time.monotonic() < deadline
    time.sleep(0.01)
pid = os.fork()
if pid == 0:
    claimed = len(outbox.claim(1))
    outbox.close()
    os._exit(0 if claimed == 1 else 1)
_, status = os.waitpid(pid, 0)
try:
    outbox.claim(1)
except OSError as error:
    print(os.waitstatus_to_exitcode(status), error.errno == errno.EIO)
"""
    result = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.split() == ["0", "True"], result.stderr


def test_a_forked_child_claims_while_a_thread_of_its_parent_waits_to(tmp_path: Path) -> None:
    script = f"""
import os, signal, threading, time
from notifymail import Envelope
from notifymail.outbox import SqliteOutbox
parent, fsync, may_end = os.getpid(), os.fsync, threading.Event()
def held_in_the_parent(descriptor):
    if os.getpid() == parent:
        may_end.wait(30)
    fsync(descriptor)
os.fsync = held_in_the_parent
outbox = SqliteOutbox({str(tmp_path / "mail.db")!r})
recipients = ("b@x.org", "c@x.org", "d@x.org")
outbox.enqueue([Envelope("a@x.org", [to], raw=b"s: 1\\r\\n\\r\\nx") for to in recipients], key="k")
assert len(outbox.claim(1)) == 1  # its sync is held
waiting = threading.Thread(target=outbox.claim, args=(1,))
waiting.start()  # holds the claims' lock while it waits for that sync
time.sleep(0.2)
pid = os.fork()
if pid == 0:
    signal.alarm(10)
    claimed = len(outbox.claim(1))
    outbox.close()
    os._exit(0 if claimed == 1 else 1)
_, status = os.waitpid(pid, 0)
may_end.set()
waiting.join()
print(os.waitstatus_to_exitcode(status))
"""
    result = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "0", result.stderr


def test_a_forked_child_reopens_the_same_file_wherever_it_moved(tmp_path: Path) -> None:
    script = f"""
import os
from notifymail import Envelope
from notifymail.outbox import SqliteOutbox
os.chdir({str(tmp_path)!r})
outbox = SqliteOutbox("mail.db")
outbox.enqueue([Envelope("a@x.org", ["b@x.org"], raw=b"s: 1\\r\\n\\r\\nx")], key="k")
os.mkdir("elsewhere")
os.chdir("elsewhere")
pid = os.fork()
if pid == 0:
    os._exit(0 if outbox.status().queued == 1 else 1)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""
    result = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "0", result.stderr
    assert not (tmp_path / "elsewhere" / "mail.db").exists()


def test_a_closed_outbox_says_so(tmp_path: Path) -> None:
    outbox = SqliteOutbox(tmp_path / "mail.db")
    outbox.close()
    with pytest.raises(RuntimeError, match="closed"):
        outbox.status()


@pytest.mark.parametrize(
    ("argument", "value"),
    [("max_lifetime", 0), ("min_backoff", -1), ("lease", float("inf")), ("max_backoff", 1)],
)
def test_settings_out_of_range_are_refused(tmp_path: Path, argument: str, value: float) -> None:
    with pytest.raises(ValueError, match=argument):
        SqliteOutbox(tmp_path / "mail.db", **{argument: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("attempt", "nominal"), [(1, 60), (2, 120), (3, 240), (6, 1920), (7, 3600), (10_000, 3600)]
)
def test_backoff_doubles_from_the_minimum_up_to_the_cap(attempt: int, nominal: float) -> None:
    assert backoff(attempt, min_backoff=MIN, max_backoff=MAX, random=lambda: 0.0) == nominal
    top = backoff(attempt, min_backoff=MIN, max_backoff=MAX, random=lambda: 0.999999)
    assert nominal < top < nominal * 1.1


def test_backoff_jitter_spreads_a_backlog() -> None:
    delays = {round(backoff(3, min_backoff=MIN, max_backoff=MAX), 3) for _ in range(200)}
    assert len(delays) > 100
    assert all(240 <= delay < 264 for delay in delays)
