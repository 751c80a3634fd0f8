"""A durable outbox: envelopes kept on disk until delivered, so nothing is lost across an
SMTP outage or a crash.

The host hands a notification to the outbox and returns at once; a worker delivers it,
retrying for as long as the outbox says (doubling delays with jitter, as Postfix's queue
does). Each envelope's outcome is committed before the next one's end of DATA is sent,
so a worker killed at any instant can repeat at most the one envelope whose end of DATA
had gone out and whose outcome was not yet committed; accepted recipients are never
tried again.

``SqliteOutbox`` is the embedded store: one SQLite file in WAL mode, shared safely by
several processes on one machine. What it stores is synced to disk before the call
returns (``synchronous=FULL``); a lease and an outcome are committed without a sync
(``synchronous=NORMAL``), which a killed process cannot undo, and each lease has the
file synced while its batch is delivered, so that a power cut can undo at most two
batches of a worker's outcomes: see ``SqliteOutbox``.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from notifymail._queue import Claim, DeliveryQueue, Outbox, Queued, Settled, backoff
from notifymail._sqlite import LogSync, SqliteFile, database_error, transaction
from notifymail.errors import DeliveryError, TemporaryFailure, error_for_reply
from notifymail.values import Delivery, Envelope, Reply

__all__ = [
    "DeadMail",
    "DeliveryQueue",
    "Outbox",
    "OutboxStatus",
    "Queued",
    "SqliteOutbox",
    "backoff",
]

logger = logging.getLogger("notifymail.outbox")


class _State(IntEnum):
    """An envelope's state; the first three still have recipients to deliver to."""

    QUEUED = 0  # never attempted
    DEFERRED = 1  # attempted, waiting for its next attempt
    SENDING = 2  # leased by a worker
    SENT = 3  # every recipient accepted or refused
    DEAD = 4  # some recipient failed for good


class _Outcome(IntEnum):
    """A recipient's state."""

    PENDING = 0
    ACCEPTED = 1
    REFUSED = 2
    FAILED = 3
    SUPPRESSED = 4  # on the suppression list when its turn came: never sent


# A recipient in the `recipients` column: [address, outcome, reply code, reply text].
_Recipient = list[Any]

# `due_at` is when a queued or deferred envelope may next be attempted, and when a
# leased one's lease runs out: either way, a worker may claim it from that moment. The
# recipients' outcomes live in the envelope's own row, so that recording an attempt
# rewrites one row and one index entry: the commit after each envelope is the cost of
# delivering from an outbox, and it grows with the pages it writes.
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS outbox_item (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        key TEXT NOT NULL UNIQUE,
        enqueued_at REAL NOT NULL,
        envelopes INTEGER NOT NULL,
        recipients INTEGER NOT NULL
    )""",
    # A notification's body is the same in all its envelopes: stored once, joined to
    # each envelope's own head to give the bytes to send.
    """CREATE TABLE IF NOT EXISTS outbox_body (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        data BLOB NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS outbox_envelope (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        item_id INTEGER NOT NULL,
        state INTEGER NOT NULL,
        due_at REAL NOT NULL,
        owner TEXT,
        attempts INTEGER NOT NULL,
        enqueued_at REAL NOT NULL,
        lifetime_from REAL NOT NULL,
        finished_at REAL,
        last_error TEXT,
        recipients TEXT NOT NULL,
        sender TEXT NOT NULL,
        smtputf8 INTEGER NOT NULL,
        head BLOB NOT NULL,
        body_id INTEGER,
        notification INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS outbox_envelope_due ON outbox_envelope (due_at) WHERE state <= 2",
    "CREATE INDEX IF NOT EXISTS outbox_envelope_item ON outbox_envelope (item_id)",
)

_CLAIM_BATCH = 50  # envelopes leased per transaction


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxStatus:
    """How many envelopes are in each state.

    ``queued``: waiting for their first attempt; ``deferred``: waiting for a retry;
    ``sending``: leased by a worker; ``sent``: done, every recipient accepted, refused
    or suppressed;
    ``dead``: some recipient could not be delivered (see ``SqliteOutbox.dead``).
    """

    queued: int
    deferred: int
    sending: int
    sent: int
    dead: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadMail:
    """An envelope given up on: ``recipients`` never got it; ``last_error`` says why.

    ``id`` is what ``SqliteOutbox.retry`` takes; ``key`` is the enqueue's key.
    ``enqueued_at`` is a time from the outbox's clock (seconds since the epoch).
    """

    id: str
    key: str
    recipients: tuple[str, ...]
    last_error: str
    enqueued_at: float


class SqliteOutbox(SqliteFile):
    """The embedded outbox: one SQLite file, safe for several processes on one machine.

    ``max_lifetime``: seconds after enqueue when undelivered recipients become dead.
    ``min_backoff``, ``max_backoff``: the retry delay doubles from the one to the other,
    plus up to 10% jitter (see ``backoff``). ``lease``: seconds a worker holds an
    envelope before another may take it over; it must exceed twice the longest one
    delivery can take. ``clock`` gives seconds since the epoch; tests inject a fake.

    The file is created if missing. A corrupt file, a file that is not SQLite, or
    another application's database raises ``ConfigError`` naming the
    path, and is left as it is. One object may be shared by threads; a forked child
    opens a connection of its own on first use. ``close`` it when done.

    Durability: the file is in WAL mode. ``enqueue`` and the managing calls commit
    with ``synchronous=FULL``: synced to disk when they return, so an enqueued envelope
    survives a power cut. ``claim`` (a lease) and ``settle`` (an attempt's outcome)
    commit with ``synchronous=NORMAL``: written to the file, not synced. A killed
    process loses no commit, so a SIGKILLed worker repeats at most the one envelope
    whose end of DATA was on its way. A ``claim`` also has the write-ahead log synced,
    in a thread of its own, while its batch is delivered: its leases and every outcome
    before them (no sync when nothing was written since the last). Claims are made one
    at a time, each after that sync of the one before has ended (raising ``OSError``,
    once, if it failed). So a power cut or an OS crash can undo at most the outcomes of
    a worker's last two batches, 100 envelopes, which are then sent again.
    No envelope is ever lost; a lease that a power cut undoes is harmless, since its
    worker, on the same machine, stopped with it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_lifetime: float = 86400.0,
        min_backoff: float = 60.0,
        max_backoff: float = 3600.0,
        lease: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        for name, value in (
            ("max_lifetime", max_lifetime),
            ("min_backoff", min_backoff),
            ("max_backoff", max_backoff),
            ("lease", lease),
        ):
            if not (isinstance(value, (int, float)) and 0 < value < float("inf")):
                raise ValueError(f"SqliteOutbox.{name}: {value!r} is not a positive number")
        if max_backoff < min_backoff:
            raise ValueError(
                f"SqliteOutbox.max_backoff: {max_backoff!r} is below min_backoff ({min_backoff!r})"
            )
        super().__init__(path, _SCHEMA)
        self.max_lifetime = float(max_lifetime)
        self.min_backoff = float(min_backoff)
        self.max_backoff = float(max_backoff)
        self.lease = float(lease)
        self._clock = clock
        self._owner = _owner_token()
        # The envelopes this worker holds, by id, as they were claimed: no other worker
        # can take one over before its lease runs out, so checking a lease needs no read
        # and recording an attempt needs no read either.
        self._held: dict[int, _Held] = {}
        # The connection while it commits without syncing (see `_database`).
        self._unsynced: sqlite3.Connection | None = None
        # Claims are made one at a time, each after the sync of the log that the one
        # before began (see `claim`); `_changes_synced`: the connection's count of rows
        # written (`total_changes`) when that sync began.
        self._claiming = threading.Lock()
        self._log: LogSync | None = None
        self._changes_synced = 0

    def _forked(self) -> None:
        self._owner = _owner_token()
        self._held = {}
        self._unsynced = None
        self._log = None  # the parent's sync
        self._changes_synced = 0  # counted on the child's own connection

    def _renew_locks(self) -> None:
        super()._renew_locks()
        self._claiming = threading.Lock()

    def close(self) -> None:
        """Close the connection, once a claim under way and the sync it began are done
        (a failed sync is logged)."""
        with self._claiming:
            with self._lock:
                log, self._log = self._log, None
            if log is not None:
                try:
                    log.close()
                except OSError as error:
                    logger.warning("outbox: %s", error)
            super().close()

    def _wait_for_log(self) -> LogSync:
        """The log's sync, once the one the last claim began has ended (raising
        ``OSError`` if it failed)."""
        with self._lock:
            connection = self._connected()  # a forked child forgets its parent's first
            if self._log is None:
                self._log = LogSync(connection)
            log = self._log
        log.wait()
        return log

    # -- storing ------------------------------------------------------------------

    def enqueue(
        self, envelopes: Sequence[Envelope], *, key: str, notification: bool = False
    ) -> Queued:
        """Store ``envelopes`` under ``key`` in one transaction: all of them, or none.

        When ``key`` was enqueued before, nothing is stored and the first enqueue's
        record comes back with ``new=False``. Durable (synced to disk) when it returns.
        ``notification``: the envelopes are a notification's, which the suppression
        list is asked about again when they are delivered.
        """
        if not isinstance(key, str) or not key:
            raise ValueError(f"enqueue: key must be a non-empty str, not {key!r}")
        rows: list[tuple[Envelope, str, bytes, bytes]] = []
        recipients = 0
        for envelope in envelopes:
            unique = list(dict.fromkeys(envelope.recipients))
            recipients += len(unique)
            listed = json.dumps([[address, _Outcome.PENDING, None, None] for address in unique])
            head, separator, body = envelope.raw.partition(b"\r\n\r\n")
            rows.append((envelope, listed, head + separator, body))
        with self._database() as db:
            found = db.execute(
                "SELECT id, envelopes, recipients FROM outbox_item WHERE key = ?", (key,)
            ).fetchone()
            if found is not None:
                return Queued(
                    id=str(found[0]), key=key, envelopes=found[1], recipients=found[2], new=False
                )
            now = self._clock()
            item = db.execute(
                "INSERT INTO outbox_item (key, enqueued_at, envelopes, recipients)"
                " VALUES (?, ?, ?, ?)",
                (key, now, len(rows), recipients),
            ).lastrowid
            bodies: dict[bytes, int | None] = {b"": None}
            for _, _, _, body in rows:
                if body not in bodies:
                    bodies[body] = db.execute(
                        "INSERT INTO outbox_body (data) VALUES (?)", (body,)
                    ).lastrowid
            db.executemany(
                "INSERT INTO outbox_envelope (item_id, state, due_at, attempts, enqueued_at,"
                " lifetime_from, recipients, sender, smtputf8, head, body_id, notification)"
                " VALUES (?, 0, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        item,
                        now,
                        now,
                        now,
                        listed,
                        envelope.sender,
                        envelope.needs_smtputf8,
                        head,
                        bodies[body],
                        notification,
                    )
                    for envelope, listed, head, body in rows
                ],
            )
        logger.debug("enqueued %s: %d envelope(s), %d recipient(s)", key, len(rows), recipients)
        return Queued(id=str(item), key=key, envelopes=len(rows), recipients=recipients, new=True)

    # -- delivering (what Mailer.deliver_queued drives) ---------------------------

    def claim(self, limit: int) -> list[Claim]:
        """Lease up to ``limit`` due envelopes (at most 50 at a time) to this worker.

        Due: queued or deferred ones whose time has come, and leased ones whose lease
        ran out (their worker died). Each comes with only its undelivered recipients.
        Waits for the sync that the last claim began; begins another (see the class's
        note on durability).
        """
        limit = min(limit, _CLAIM_BATCH)
        if limit <= 0:
            return []
        with self._claiming:
            log = self._wait_for_log()
            claims: list[Claim] = []
            try:
                self._lease(limit, claims)
                with self._lock:
                    changes = self._connected().total_changes
                    if changes != self._changes_synced:
                        # Durable while the batch is delivered: the leases, and every
                        # outcome recorded before them.
                        log.begin()
                        self._changes_synced = changes
            except BaseException:
                # Interrupted (Ctrl-C) once the leases may be committed, before the
                # caller has them: given back, not held until they run out.
                if claims:
                    try:
                        self.release(claims)
                    except Exception as error:  # the interrupt is what the caller hears of
                        logger.warning(
                            "outbox %s: %d lease(s) kept until they run out: %s",
                            self.path,
                            len(claims),
                            error,
                        )
                raise
        return claims

    def _lease(self, limit: int, claims: list[Claim]) -> None:
        """Lease due envelopes (a transaction, not synced), finishing those found fully
        recorded; each claim is added to ``claims`` as it is made, so that the caller
        knows what to give back if it is interrupted."""
        with self._database(synced=False) as db:
            now = self._clock()
            rows = db.execute(
                "SELECT id, attempts, lifetime_from, recipients, sender, smtputf8, head, body_id,"
                " notification FROM outbox_envelope WHERE state <= 2 AND due_at <= ?"
                " ORDER BY due_at LIMIT ?",
                (now, limit),
            ).fetchall()
            # A notification's envelopes share one body: read once, shared by the
            # envelopes as composition's are.
            bodies: dict[int | None, bytes] = {None: b""}
            for body_id in {row[7] for row in rows} - bodies.keys():
                found = db.execute("SELECT data FROM outbox_body WHERE id = ?", (body_id,))
                bodies[body_id] = found.fetchone()[0]
            finished = []
            for row in rows:
                envelope_id, attempts, lifetime_from, listed, sender, utf8, head, body_id = row[:8]
                recipients = json.loads(listed)
                pending = tuple(r[0] for r in recipients if r[1] == _Outcome.PENDING)
                if not pending:
                    # Recorded in full by a worker that had lost its lease meanwhile.
                    finished.append((_final_state(recipients), now, envelope_id))
                    continue
                # Stored by `enqueue` from an envelope's finished bytes and checked
                # addresses: nothing to check or convert again.
                envelope = Envelope._composed(
                    sender, pending, head, bodies[body_id], smtputf8=bool(utf8)
                )
                claims.append(
                    Claim(
                        id=str(envelope_id),
                        envelope=envelope,
                        attempt=attempts + 1,
                        notification=bool(row[8]),
                    )
                )
                self._held[envelope_id] = _Held(
                    until=now + self.lease,
                    recipients=recipients,
                    attempts=attempts,
                    lifetime_from=lifetime_from,
                )
            db.executemany(
                "UPDATE outbox_envelope SET state = 2, due_at = ?, owner = ? WHERE id = ?",
                [(now + self.lease, self._owner, int(claim.id)) for claim in claims],
            )
            db.executemany(
                "UPDATE outbox_envelope SET state = ?, finished_at = ?, owner = NULL WHERE id = ?",
                finished,
            )

    def holds(self, claim: Claim) -> bool:
        """Whether this worker still holds ``claim``, with at least half a lease to go.

        Renews this worker's leases once half of one has passed, so that a long batch
        keeps them; False when the lease ran out and another worker took it over.
        """
        envelope_id = int(claim.id)
        now = self._clock()
        with self._lock:
            held = self._held.get(envelope_id)
        if held is None:
            return False
        if held.until - now >= self.lease / 2:
            return True
        with self._database() as db:
            # Taking an envelope over changes its owner, in a write like this one; an
            # envelope keeps its owner only while leased.
            db.execute(
                "UPDATE outbox_envelope SET due_at = ? WHERE state <= 2 AND owner = ?",
                (now + self.lease, self._owner),
            )
            mine = {
                row[0]
                for row in db.execute(
                    "SELECT id FROM outbox_envelope WHERE state <= 2 AND owner = ?",
                    (self._owner,),
                )
            }
            for key in list(self._held):
                if key in mine:
                    self._held[key].until = now + self.lease
                else:
                    del self._held[key]
        return envelope_id in mine

    def anticipate(self, claim: Claim) -> None:
        """Work out, while the server answers, what `settle` records if every recipient of
        ``claim`` accepts: the usual outcome then costs `settle` only its one write."""
        if not self._lock.acquire(blocking=False):
            return  # the store is busy: this is no time to wait
        try:
            held = self._held.get(int(claim.id))
        finally:
            self._lock.release()
        if held is not None and held.anticipated is None:
            pending = tuple(r[0] for r in held.recipients if r[1] == _Outcome.PENDING)
            recording = self._recording(
                held, accepted=pending, refused={}, error=None, suppressed=(), now=self._clock()
            )
            if recording.due is None:  # done, whenever written: nothing depends on the time
                held.anticipated = recording

    def settle(
        self,
        claim: Claim,
        result: Delivery | DeliveryError | None,
        *,
        suppressed: Collection[str] = (),
    ) -> Settled:
        """Record what one attempt did with ``claim`` and decide what comes next.

        Accepted recipients are done; a 5xx refusal is final; a 4xx refusal or a
        retryable error defers the recipients it concerns (see ``backoff``); a
        non-retryable error, or ``max_lifetime`` reached, makes them dead.
        ``suppressed`` recipients (on the suppression list at delivery time) are done,
        never sent; ``result`` is None when no one was left to send to. Committed
        without a sync to disk (see the class's note on durability).
        """
        envelope_id = int(claim.id)
        error: DeliveryError | None = None
        accepted: tuple[str, ...] = ()
        refused: Mapping[str, Reply] = {}
        if isinstance(result, Delivery):
            accepted, refused = result.accepted, result.refused
        elif result is not None:
            error, refused = result, result.refused
        with self._database(atomic=False, synced=False) as db:
            held = self._held.pop(envelope_id, None)
            if held is not None:
                # One statement, one transaction: what was read at the claim is still
                # true while the lease holds, and the statement checks that it does.
                now = self._clock()
                recording = held.anticipated
                # Anticipated: every recipient accepted, in the order of the envelope's
                # (and so of its RCPT TO commands); a claim always has one to send to.
                if recording is None or recording.settled.accepted != accepted or suppressed:
                    recording = self._recording(
                        held,
                        accepted=accepted,
                        refused=refused,
                        error=error,
                        suppressed=suppressed,
                        now=now,
                    )
                due = recording.due
                changed = db.execute(
                    "UPDATE outbox_envelope SET state = ?, due_at = ?, owner = NULL,"
                    " attempts = ?, finished_at = ?, last_error = coalesce(?, last_error),"
                    " recipients = ? WHERE id = ? AND owner = ? AND state = 2",
                    (
                        recording.state,
                        now if due is None else due,
                        held.attempts + 1,
                        now if due is None else None,
                        recording.last_error,
                        recording.recipients,
                        envelope_id,
                        self._owner,
                    ),
                ).rowcount
                if changed:
                    return recording.settled
            # The lease ran out during this attempt and another worker took the envelope
            # over: record who accepted and who refused for good, leave it the rest.
            logger.warning("outbox: lost the lease on envelope %s while sending", claim.id)
            with transaction(db):
                row = db.execute(
                    "SELECT recipients FROM outbox_envelope WHERE id = ?", (envelope_id,)
                ).fetchone()
                if row is None:
                    return Settled()
                recipients = json.loads(row[0])
                done_suppressed = _suppress(recipients, suppressed)
                done_accepted, done_refused, _ = _record(recipients, accepted, refused)
                db.execute(
                    "UPDATE outbox_envelope SET recipients = ? WHERE id = ?",
                    (json.dumps(recipients), envelope_id),
                )
        return Settled(accepted=done_accepted, refused=done_refused, suppressed=done_suppressed)

    def _recording(
        self,
        held: _Held,
        *,
        accepted: Iterable[str],
        refused: Mapping[str, Reply],
        error: DeliveryError | None,
        suppressed: Collection[str],
        now: float,
    ) -> _Recording:
        """What an attempt with this outcome makes of ``held``'s row (left as it is)."""
        recipients = [list(r) for r in held.recipients]
        done_suppressed = _suppress(recipients, suppressed)
        done_accepted, done_refused, later = _record(recipients, accepted, refused)
        pending = [r for r in recipients if r[1] == _Outcome.PENDING]
        expires = held.lifetime_from + self.max_lifetime
        failed: dict[str, DeliveryError] = {}
        if error is not None and not error.refused and not error.retryable:
            failed = {r[0]: error for r in pending}
        elif pending and now >= expires:
            failed = {r[0]: _expired(r[0], later.get(r[0]), error) for r in pending}
        for recipient in pending:
            if recipient[0] in failed:
                recipient[1] = _Outcome.FAILED
        due: float | None = None
        if pending and not failed:
            state = _State.DEFERRED
            wait = backoff(
                held.attempts + 1, min_backoff=self.min_backoff, max_backoff=self.max_backoff
            )
            due = min(now + wait, expires)
        else:
            state = _final_state(recipients)
        return _Recording(
            state=state,
            due=due,
            last_error=_last_error(error, later, failed),
            recipients=json.dumps(recipients),
            settled=Settled(
                accepted=done_accepted,
                refused=done_refused,
                failed=failed,
                deferred=() if failed else tuple(r[0] for r in pending),
                suppressed=done_suppressed,
            ),
        )

    def release(self, claims: Iterable[Claim]) -> None:
        """Give back envelopes leased and not sent (a worker stopping), due at once."""
        ids = [int(claim.id) for claim in claims]
        if not ids:
            return
        with self._database() as db:
            now = self._clock()
            db.executemany(
                "UPDATE outbox_envelope SET state = CASE WHEN attempts = 0 THEN 0 ELSE 1 END,"
                " due_at = ?, owner = NULL WHERE id = ? AND owner = ? AND state = 2",
                [(now, envelope_id, self._owner) for envelope_id in ids],
            )
            for envelope_id in ids:
                self._held.pop(envelope_id, None)

    # -- managing ---------------------------------------------------------------

    def status(self) -> OutboxStatus:
        """How many envelopes are queued, deferred, being sent, sent and dead."""
        with self._database(write=False) as db:
            counts = dict(db.execute("SELECT state, count(*) FROM outbox_envelope GROUP BY state"))
        return OutboxStatus(**{state.name.lower(): counts.get(state, 0) for state in _State})

    def dead(self) -> list[DeadMail]:
        """Every dead envelope, oldest first, with the recipients that never got it."""
        with self._database(write=False) as db:
            rows = db.execute(
                "SELECT e.id, i.key, e.recipients, e.last_error, e.enqueued_at"
                " FROM outbox_envelope e JOIN outbox_item i ON i.id = e.item_id"
                " WHERE e.state = 4 ORDER BY e.id"
            ).fetchall()
        return [
            DeadMail(
                id=str(envelope_id),
                key=key,
                recipients=tuple(r[0] for r in json.loads(listed) if r[1] == _Outcome.FAILED),
                last_error=last_error or "",
                enqueued_at=enqueued_at,
            )
            for envelope_id, key, listed, last_error, enqueued_at in rows
        ]

    def retry(self, ids: Iterable[str]) -> int:
        """Put dead envelopes back in the queue, due now, with a fresh ``max_lifetime``.

        Only the recipients that never got them are sent again. Returns how many
        envelopes went back; ids of envelopes that are not dead are ignored.
        """
        wanted = [int(text) for text in map(str, ids) if text.strip().isdigit()]
        count = 0
        with self._database() as db:
            now = self._clock()
            for envelope_id in wanted:
                row = db.execute(
                    "SELECT recipients FROM outbox_envelope WHERE id = ? AND state = 4",
                    (envelope_id,),
                ).fetchone()
                if row is None:
                    continue
                recipients = json.loads(row[0])
                for recipient in recipients:
                    if recipient[1] == _Outcome.FAILED:
                        recipient[1:] = [_Outcome.PENDING, None, None]
                db.execute(
                    "UPDATE outbox_envelope SET state = 0, due_at = ?, attempts = 0,"
                    " lifetime_from = ?, finished_at = NULL, recipients = ? WHERE id = ?",
                    (now, now, json.dumps(recipients), envelope_id),
                )
                count += 1
        logger.info("outbox: %d dead envelope(s) back in the queue", count)
        return count

    def purge(self, older_than: float) -> int:
        """Remove sent and dead envelopes finished more than ``older_than`` seconds ago.

        Also forgets the keys of items with nothing left, so that such a key may be
        enqueued again. Returns how many envelopes were removed.
        """
        if not (isinstance(older_than, (int, float)) and older_than >= 0):
            raise ValueError(f"purge: older_than must be seconds >= 0, not {older_than!r}")
        with self._database() as db:
            cutoff = self._clock() - older_than
            removed = db.execute(
                "DELETE FROM outbox_envelope WHERE state >= 3 AND finished_at <= ?", (cutoff,)
            ).rowcount
            db.execute(
                "DELETE FROM outbox_body WHERE id NOT IN"
                " (SELECT body_id FROM outbox_envelope WHERE body_id IS NOT NULL)"
            )
            db.execute(
                "DELETE FROM outbox_item WHERE enqueued_at <= ? AND NOT EXISTS"
                " (SELECT 1 FROM outbox_envelope e WHERE e.item_id = outbox_item.id)",
                (cutoff,),
            )
        logger.info("outbox: purged %d envelope(s)", removed)
        return removed

    @contextmanager
    def _database(
        self, *, write: bool = True, atomic: bool = True, synced: bool = True
    ) -> Iterator[sqlite3.Connection]:
        """The connection, for one thread at a time; in one transaction if ``atomic``,
        else each statement is a transaction of its own. Commits are synced to disk
        (``synchronous=FULL``) unless ``synced`` is False (``NORMAL``)."""
        with self._lock:
            connection = self._connected()
            try:
                if (self._unsynced is connection) != (not synced):
                    # Per connection, and kept until changed: switched only when a batch
                    # of outcomes begins or ends.
                    mode = "FULL" if synced else "NORMAL"
                    connection.execute(f"PRAGMA synchronous = {mode}")
                    self._unsynced = None if synced else connection
                if atomic:
                    with transaction(connection, write=write):
                        yield connection
                else:
                    yield connection
            except sqlite3.Error as error:
                raise database_error(self.path, error) from None


@dataclass(slots=True, kw_only=True)
class _Held:
    """An envelope this worker holds: its lease's end, its row as claimed, and the
    recording of its likely outcome once `SqliteOutbox.anticipate` has made it."""

    until: float
    recipients: list[_Recipient]
    attempts: int
    lifetime_from: float
    anticipated: _Recording | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class _Recording:
    """What `SqliteOutbox.settle` writes to an envelope's row after an attempt, and
    reports. ``due``: when to try again; None when the envelope is done, and `settle`
    writes its own time as ``due_at`` and ``finished_at``."""

    state: _State
    due: float | None
    last_error: str | None
    recipients: str  # the `recipients` column, as JSON
    settled: Settled


def _suppress(recipients: list[_Recipient], addresses: Collection[str]) -> tuple[str, ...]:
    """Mark, in ``recipients``, those pending that are in ``addresses`` as suppressed;
    returns them."""
    if not addresses:
        return ()
    done = []
    for recipient in recipients:
        if recipient[1] == _Outcome.PENDING and recipient[0] in addresses:
            recipient[1] = _Outcome.SUPPRESSED
            done.append(recipient[0])
    return tuple(done)


def _record(
    recipients: list[_Recipient], accepted: Iterable[str], refused: Mapping[str, Reply]
) -> tuple[tuple[str, ...], dict[str, Reply], dict[str, Reply]]:
    """Mark, in ``recipients``, who of those pending accepted and who refused for good.

    Returns the newly accepted, the newly refused for good (5xx), and the refused for
    now (4xx, their reply noted; still pending).
    """
    pending = {r[0]: r for r in recipients if r[1] == _Outcome.PENDING}
    done_accepted = []
    for address in accepted:
        recipient = pending.pop(address, None)
        if recipient is not None:
            recipient[1] = _Outcome.ACCEPTED
            done_accepted.append(address)
    done_refused: dict[str, Reply] = {}
    later: dict[str, Reply] = {}
    for address, reply in refused.items():
        recipient = pending.get(address)
        if recipient is None:
            continue
        recipient[2:] = [reply.code, reply.text]
        if reply.is_transient:
            later[address] = reply
        else:
            recipient[1] = _Outcome.REFUSED
            done_refused[address] = reply
    return tuple(done_accepted), done_refused, later


def _owner_token() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex[:12]}"


def _final_state(recipients: list[_Recipient]) -> _State:
    dead = any(recipient[1] == _Outcome.FAILED for recipient in recipients)
    return _State.DEAD if dead else _State.SENT


def _expired(address: str, reply: Reply | None, error: DeliveryError | None) -> DeliveryError:
    """The error a recipient dies of when ``max_lifetime`` has run out."""
    if reply is not None:
        return error_for_reply(f"{address}: still refused at the end of max_lifetime", reply)
    if error is not None:
        return error
    return TemporaryFailure(f"{address}: not delivered within max_lifetime")


def _last_error(
    error: DeliveryError | None, later: dict[str, Reply], failed: dict[str, DeliveryError]
) -> str | None:
    if error is not None and not error.refused:
        return str(error)
    if later:
        address, reply = next(iter(later.items()))
        return f"{address}: {reply}"
    if failed:
        return str(next(iter(failed.values())))
    return None
