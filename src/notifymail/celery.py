"""Delivery past one machine: the outbox on a host's own Celery workers.

A host that outgrows one machine already runs a task queue. Celery brings the queue and
the redelivery of a killed worker's task (``acks_late``); it does not bring what mail
needs on top of that, so this module keeps it in Redis, where every worker sees it:

- each recipient's outcome, so that a redelivered task never sends to a recipient who
  accepted;
- a claim (a lease) per envelope, so that a redelivered copy never sends beside a live one;
- the ``max_recipients_per_second`` window, because Celery's ``rate_limit`` is per worker
  and N workers would send N times the quota.

A notification's task also asks the worker mailer's suppression list again before it
sends, as ``deliver_queued`` does for the SQLite outbox: someone may have unsubscribed
since the enqueue.

Imported by name only (``import notifymail.celery``): ``import notifymail`` never loads
Celery or Redis.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, cast

try:
    import redis
    from celery import Celery, Task
except ImportError as error:  # pragma: no cover - the extra is installed for the tests
    raise ImportError(
        "notifymail.celery needs Celery and Redis: pip install 'notifymail[celery]'"
    ) from error

from notifymail._delivery import record_hard_bounces, split_suppressed
from notifymail._queue import Queued, backoff
from notifymail.errors import ConfigError, DeliveryError
from notifymail.values import Delivery, Envelope

if TYPE_CHECKING:
    from notifymail._delivery import Suppressions
    from notifymail.mailer import Mailer

__all__ = ["TASK_NAME", "CeleryOutbox", "CeleryStatus", "register"]

logger = logging.getLogger("notifymail.celery")

TASK_NAME = "notifymail.deliver"
_KEEP = 7 * 86400  # seconds every record is kept after its last write
_WINDOW = 1.0  # seconds: the rate limit's moving window
# A slot of the window taken for a send that has not come back (a killed worker's) is
# freed after this long; a live send returns well within it (each socket operation is
# bounded by the SMTP timeout).
_IN_FLIGHT = 60.0
_MICRO = 1_000_000

# KEYS[1] the job record. ARGV: the new record, seconds to keep it.
# Returns the earlier record, or nothing when this one was stored.
_CREATE = """
local earlier = redis.call('GET', KEYS[1])
if earlier then return earlier end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return false
"""

# KEYS[1] the claim. ARGV: token, lease in ms.
# Returns 0 when claimed, else the ms until the live claim expires.
_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
return math.max(redis.call('PTTL', KEYS[1]), 1)
"""

# KEYS[1] the claim. ARGV: token. Releases the claim only if it is still this token's.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
"""

# KEYS[1] outcomes (field "index recipient" -> "state detail"), KEYS[2] counts per state.
# ARGV: seconds to keep, then (field, state, detail) triples. An outcome is written once.
_RECORD = """
for i = 2, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1] .. ' ' .. ARGV[i + 2]) == 1 then
    redis.call('HINCRBY', KEYS[2], ARGV[i + 1], 1)
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
"""

# KEYS[1] the window, a sorted set of slots scored by the microsecond each one's second
# starts. ARGV: limit, recipients, window, in-flight hold (both in microseconds), token.
# Returns 0 when the recipients took their slots, else the microseconds to wait.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit, n = tonumber(ARGV[1]), tonumber(ARGV[2])
local window, hold = tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count == 0 or count + n <= limit then
  for i = 1, n do redis.call('ZADD', KEYS[1], now + hold, ARGV[5] .. ':' .. i) end
  redis.call('PEXPIRE', KEYS[1], math.ceil((hold + window) / 1000))
  return 0
end
local must_leave = math.min(count + n - limit, count)
local slot = redis.call('ZRANGE', KEYS[1], must_leave - 1, must_leave - 1, 'WITHSCORES')
return math.max(tonumber(slot[2]) + window - now, 1)
"""

# KEYS[1] the window. ARGV: recipients, token. The send is over: each slot's second
# starts now.
_FINISH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i = 1, tonumber(ARGV[1]) do redis.call('ZADD', KEYS[1], 'XX', now, ARGV[2] .. ':' .. i) end
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class CeleryStatus:
    """How many recipients of one enqueue key are in each state.

    ``suppressed`` counts a notification's recipients left out because they were on the
    worker mailer's suppression list when their task ran: never sent, never retried.
    ``pending`` counts those not yet settled: queued, being sent, or waiting for a retry.
    """

    accepted: int = 0
    refused: int = 0
    failed: int = 0
    suppressed: int = 0
    pending: int = 0


def _client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url, socket_timeout=30.0, socket_connect_timeout=10.0)


class _Records:
    """The Redis records of enqueued jobs: the job, each recipient's outcome, the claims."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._create = client.register_script(_CREATE)
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)
        self._record = client.register_script(_RECORD)

    @staticmethod
    def _key(key: str, part: str) -> str:
        return f"notifymail:{key}:{part}"

    def create(self, key: str, job: Mapping[str, object]) -> dict[str, Any] | None:
        """Store ``job`` under ``key`` unless a job is there; return that earlier job."""
        earlier = self._create(keys=[self._key(key, "job")], args=[json.dumps(job), _KEEP])
        return None if earlier is None else cast("dict[str, Any]", json.loads(earlier))

    def status(self, key: str) -> tuple[dict[str, Any] | None, dict[str, int]]:
        """The job under ``key`` (None when unknown) and its count of recipients per state."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self._key(key, "job"))
        pipe.hgetall(self._key(key, "counts"))
        job, counts = pipe.execute()
        return (
            None if job is None else json.loads(job),
            {state.decode(): int(count) for state, count in counts.items()},
        )

    def claim(self, key: str, index: int, token: str, lease: float) -> float:
        """Claim envelope ``index`` for ``lease`` seconds: 0.0, or the seconds until the
        live claim of another task expires."""
        claim = self._key(key, f"claim:{index}")
        wait = self._claim(keys=[claim], args=[token, max(1, round(lease * 1000))])
        return int(wait) / 1000

    def release(self, key: str, index: int, token: str) -> None:
        self._release(keys=[self._key(key, f"claim:{index}")], args=[token])

    def settled(self, key: str, index: int, recipients: Sequence[str]) -> set[str]:
        """The recipients of envelope ``index`` whose outcome is recorded."""
        fields = [f"{index} {recipient}" for recipient in recipients]
        values = self.client.hmget(self._key(key, "outcomes"), fields)
        return {r for r, value in zip(recipients, values, strict=True) if value is not None}

    def record(self, key: str, index: int, outcomes: Mapping[str, tuple[str, str]]) -> None:
        """Record each recipient's final ``(state, detail)``; a recorded one stays as it was."""
        if not outcomes:
            return
        args: list[str | int] = [_KEEP]
        for recipient, (state, detail) in outcomes.items():
            args += [f"{index} {recipient}", state, detail]
        keys = [self._key(key, "outcomes"), self._key(key, "counts")]
        self._record(keys=keys, args=args)


class _RateWindow:
    """``max_recipients_per_second`` across every worker: a moving window in Redis.

    A recipient takes a slot right before its envelope is handed to the transport and
    keeps it until one second after the transport returns. So the server never sees more
    than the limit in one second, whatever the delays on the way: the recipients that
    reached it within one second all held their slots at once, when the last arrived.
    The time is the Redis server's, so machines need not agree on theirs.
    """

    def __init__(self, client: redis.Redis, key: str, rate: int) -> None:
        self._key = key
        self._rate = rate
        self._acquire = client.register_script(_ACQUIRE)
        self._finish = client.register_script(_FINISH)

    @contextmanager
    def slots(self, recipients: int, *, timeout: float) -> Iterator[None]:
        """Wait for ``recipients`` slots (for at most ``timeout`` seconds, then raise
        ``_Busy``), hold them through the block, and for one second after it."""
        token = uuid.uuid4().hex
        args = [self._rate, recipients, round(_WINDOW * _MICRO), round(_IN_FLIGHT * _MICRO)]
        give_up = time.monotonic() + timeout
        while wait := int(self._acquire(keys=[self._key], args=[*args, token])) / _MICRO:
            if time.monotonic() >= give_up:
                raise _Busy(_WINDOW)
            # The wait is exact for slots whose send has ended; one still in flight frees
            # when its send ends, which may be any moment: look again soon.
            time.sleep(min(wait, 0.05))
        try:
            yield
        finally:
            self._finish(keys=[self._key], args=[recipients, token])


class _Busy(Exception):
    """The envelope must wait ``wait`` seconds for something other than a failed delivery
    (another task's claim, the rate window, a suppression list that did not answer)."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"busy for {wait:.3f} s")
        self.wait = wait


@dataclass(frozen=True, slots=True, kw_only=True)
class _Job:
    """One task's arguments: an envelope of the job enqueued under ``key``."""

    envelope: dict[str, object]
    key: str
    index: int
    redis_url: str
    enqueued_at: float
    lease: float
    max_lifetime: float
    min_backoff: float
    max_backoff: float
    attempt: int = 1  # failed attempts so far, plus one; waiting for a claim is none
    # A notification's envelope, which the suppression list applies to. An older
    # version's task does not say: delivered unfiltered, as system mail is.
    notification: bool = False

    @classmethod
    def read(cls, arguments: Mapping[str, Any]) -> _Job:
        """The task's arguments. One that only a later version knows is left out, so
        that a worker not yet upgraded still delivers what a newer one enqueued."""
        known = {field.name for field in fields(cls)}
        return cls(**{name: value for name, value in arguments.items() if name in known})

    @property
    def deadline(self) -> float:
        return self.enqueued_at + self.max_lifetime


class CeleryOutbox:
    """An outbox whose envelopes are delivered by the host's Celery workers.

    ``enqueue`` sends one ``notifymail.deliver`` task per envelope to ``queue``; workers
    run it once [`register`][notifymail.celery.register] has added it to their app.
    ``redis_url`` is where the records live (each recipient's outcome, the claims, the
    rate window); the tasks carry it, and the settings below, to the workers. A claim
    without an outcome expires after ``lease`` seconds. A retryable failure is tried
    again after ``min_backoff`` seconds, doubling per attempt up to ``max_backoff``, plus
    up to 10% jitter; a recipient still undelivered ``max_lifetime`` seconds after
    ``enqueue`` is recorded as failed.
    """

    def __init__(
        self,
        app: Celery,
        *,
        redis_url: str,
        queue: str = "notifymail",
        lease: float = 300.0,
        max_lifetime: float = 86400.0,
        min_backoff: float = 60.0,
        max_backoff: float = 3600.0,
    ) -> None:
        for name, value in (
            ("lease", lease),
            ("max_lifetime", max_lifetime),
            ("min_backoff", min_backoff),
        ):
            if not value > 0:
                raise ConfigError(
                    f"{name}: {value!r} is not a number of seconds above 0", field=name
                )
        if not max_backoff >= min_backoff:
            raise ConfigError(
                f"max_backoff: {max_backoff!r} is below min_backoff ({min_backoff!r})",
                field="max_backoff",
            )
        if not queue:
            raise ConfigError("queue: a Celery queue name is required", field="queue")
        self.app = app
        self.redis_url = redis_url
        self.queue = queue
        self.lease = lease
        self.max_lifetime = max_lifetime
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self._records = _Records(_client(redis_url))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(queue={self.queue!r})"

    def enqueue(
        self, envelopes: Sequence[Envelope], *, key: str, notification: bool = False
    ) -> Queued:
        """Send one task per envelope, once per ``key``.

        A second call with the same key (within the week its record is kept) sends
        nothing and returns the first call's record with ``new=False``.
        ``notification``: the envelopes are a notification's, whose recipients the
        worker asks its mailer's suppression list about again before sending.
        """
        job = {
            "id": uuid.uuid4().hex,
            "envelopes": len(envelopes),
            "recipients": sum(len(envelope.recipients) for envelope in envelopes),
            "enqueued_at": time.time(),
        }
        earlier = self._records.create(key, job)
        if earlier is not None:
            return _queued(key, earlier, new=False)
        settings = {
            "key": key,
            "redis_url": self.redis_url,
            "enqueued_at": job["enqueued_at"],
            "lease": self.lease,
            "max_lifetime": self.max_lifetime,
            "min_backoff": self.min_backoff,
            "max_backoff": self.max_backoff,
            "notification": notification,
        }
        with self.app.producer_or_acquire() as producer:
            for index, envelope in enumerate(envelopes):
                self.app.send_task(
                    TASK_NAME,
                    kwargs={"envelope": envelope.to_dict(), "index": index, **settings},
                    kwargsrepr=_kwargsrepr(key, index),
                    queue=self.queue,
                    serializer="json",
                    ignore_result=True,
                    producer=producer,
                )
        logger.info("enqueued %s: %d envelope(s)", key, len(envelopes))
        return _queued(key, job, new=True)

    def status(self, key: str) -> CeleryStatus:
        """How many recipients enqueued under ``key`` are accepted, refused, failed,
        suppressed, pending.

        All zero for a key never enqueued, or whose record has expired.
        """
        job, counts = self._records.status(key)
        if job is None:
            return CeleryStatus()
        settled = {state: counts.get(state, 0) for state in _SETTLED}
        return CeleryStatus(**settled, pending=int(job["recipients"]) - sum(settled.values()))

    def close(self) -> None:
        """Close the connections to Redis (the broker's are Celery's)."""
        self._records.client.close()


_SETTLED = ("accepted", "refused", "failed", "suppressed")  # the outcomes `record` writes
_LISTED = "on the suppression list"  # the detail of a suppressed outcome


def _kwargsrepr(key: str, index: int) -> str:
    """What monitoring shows of a task's arguments: not the Redis URL, which may hold a
    password, nor the message."""
    return f"{{'key': {key!r}, 'index': {index}}}"


def _queued(key: str, job: Mapping[str, Any], *, new: bool) -> Queued:
    return Queued(
        id=str(job["id"]),
        key=key,
        envelopes=int(job["envelopes"]),
        recipients=int(job["recipients"]),
        new=new,
    )


class _Worker:
    """What a worker process keeps between tasks: one mailer, whose connection stays
    open, and the Redis records and rate window of each Redis URL."""

    def __init__(self, mailer_factory: Callable[[], Mailer]) -> None:
        self._mailer_factory = mailer_factory
        self._lock = threading.Lock()
        self._mailer: Mailer | None = None
        self._records: dict[str, tuple[_Records, _RateWindow | None]] = {}

    def _resources(self, redis_url: str) -> tuple[Mailer, _Records, _RateWindow | None]:
        with self._lock:  # a threads pool shares one worker
            if self._mailer is None:
                self._mailer = self._mailer_factory()
                self._mailer.__enter__()
            mailer = self._mailer
            if redis_url not in self._records:
                client = _client(redis_url)
                rate = mailer.settings.delivery.max_recipients_per_second
                window = None if rate is None else _RateWindow(client, _window_key(mailer), rate)
                self._records[redis_url] = (_Records(client), window)
            return (mailer, *self._records[redis_url])

    def deliver(self, job: _Job) -> float | None:
        """Deliver what is unsettled of ``job``'s envelope once.

        Returns the seconds until the next attempt, or None when every recipient is
        settled. Raises ``_Busy`` when another task holds the envelope or the rate window
        stays full: come back later, and it does not count as an attempt.
        """
        mailer, records, window = self._resources(job.redis_url)
        token = uuid.uuid4().hex
        wait = records.claim(job.key, job.index, token, job.lease)
        if wait:
            raise _Busy(wait)
        try:
            return self._attempt(job, mailer, records, window)
        finally:
            records.release(job.key, job.index, token)

    def _attempt(
        self, job: _Job, mailer: Mailer, records: _Records, window: _RateWindow | None
    ) -> float | None:
        envelope = Envelope.from_dict(job.envelope)
        settled = records.settled(job.key, job.index, envelope.recipients)
        pending = tuple(r for r in envelope.recipients if r not in settled)
        if not pending:
            return None
        if time.time() >= job.deadline:
            reason = f"not delivered within max_lifetime ({job.max_lifetime:g} s)"
            records.record(job.key, job.index, dict.fromkeys(pending, ("failed", reason)))
            return None
        suppressions = mailer.suppressions if job.notification else None
        if suppressions is not None:
            pending = _leave_out(job, suppressions, records, pending)
            if not pending:
                return None
        envelope = envelope.with_recipients(pending)
        try:
            if window is None:
                delivery = mailer.transport.send(envelope)
            else:
                with window.slots(len(pending), timeout=job.lease / 2):
                    delivery = mailer.transport.send(envelope)
        except DeliveryError as error:
            if not error.refused:  # the envelope as a whole failed
                if error.retryable:
                    return _deferred(job, records, pending, str(error))
                records.record(job.key, job.index, dict.fromkeys(pending, ("failed", str(error))))
                return None
            # The server refused every recipient: the same as a delivery to no one.
            delivery = Delivery(envelope.message_id, accepted=(), refused=error.refused)
        outcomes = dict.fromkeys(delivery.accepted, ("accepted", ""))
        transient = {r: str(reply) for r, reply in delivery.refused.items() if reply.is_transient}
        outcomes.update(
            (r, ("refused", str(reply)))
            for r, reply in delivery.refused.items()
            if r not in transient
        )
        records.record(job.key, job.index, outcomes)
        if suppressions is not None:
            record_hard_bounces(delivery.refused, suppressions.add)
        if transient:
            return _deferred(job, records, tuple(transient), next(iter(transient.values())))
        return None


def _leave_out(
    job: _Job, suppressions: Suppressions, records: _Records, pending: Sequence[str]
) -> tuple[str, ...]:
    """The recipients of ``pending`` to send to: those on the suppression list now are
    recorded as suppressed, done with. A list that cannot be asked makes the task wait
    (``_Busy``) rather than send to someone who may have left, or lose the envelope."""
    try:
        kept, _ = split_suppressed(pending, suppressions.is_suppressed)
    except Exception as error:
        logger.warning(
            "%s #%d: the suppression list failed, retrying: %r", job.key, job.index, error
        )
        raise _Busy(job.min_backoff) from error
    left_out = set(pending).difference(kept)
    records.record(job.key, job.index, dict.fromkeys(left_out, ("suppressed", _LISTED)))
    return tuple(kept)


def _deferred(
    job: _Job, records: _Records, recipients: Sequence[str], reason: str
) -> float | None:
    """The backoff before the next attempt; None, with the recipients recorded as failed,
    when that attempt would come after ``max_lifetime``."""
    wait = backoff(job.attempt, min_backoff=job.min_backoff, max_backoff=job.max_backoff)
    if time.time() + wait < job.deadline:
        logger.info(
            "%s #%d: attempt %d failed, next in %.1f s: %s",
            job.key,
            job.index,
            job.attempt,
            wait,
            reason,
        )
        return wait
    records.record(job.key, job.index, dict.fromkeys(recipients, ("failed", reason)))
    logger.warning(
        "%s #%d: %d recipient(s) failed for good: %s", job.key, job.index, len(recipients), reason
    )
    return None


def _window_key(mailer: Mailer) -> str:
    """One window per relay account: two relays' quotas are not one."""
    smtp = mailer.settings.active_smtp
    if smtp is None:
        return "notifymail:rate"
    return f"notifymail:rate:{smtp.host}:{smtp.effective_port}:{smtp.username or ''}"


def _retry(task: Task[Any, Any], job: _Job, countdown: float, **kwargs: Any) -> Exception:
    """Celery's retry of ``task`` in ``countdown`` seconds, shown as ``_kwargsrepr`` shows it."""
    retry: Callable[..., Exception] = task.retry  # its stub omits the publishing options
    shown = _kwargsrepr(job.key, job.index)
    return retry(countdown=countdown, max_retries=None, kwargsrepr=shown, **kwargs)


def register(app: Celery, mailer_factory: Callable[[], Mailer]) -> Task[Any, Any]:
    """Register the ``notifymail.deliver`` task on the host's Celery ``app``.

    ``mailer_factory()`` builds the worker's [`Mailer`][notifymail.Mailer], once per worker
    process, on its first task; its transport hands the envelopes over, its
    ``max_recipients_per_second`` is held across all workers, and its ``suppressions``
    (if any) are asked about a notification's recipients right before they are sent and
    are given its 5.1.1 refusals as hard bounces. Returns the task.
    """
    worker = _Worker(mailer_factory)

    def deliver(task: Task[Any, Any], /, **arguments: Any) -> None:
        job = _Job.read(arguments)
        try:
            retry_in = worker.deliver(job)
        except _Busy as busy:
            raise _retry(task, job, busy.wait) from None
        except redis.RedisError as error:
            # Without its records the task cannot tell what is settled: try again later
            # rather than fail, which Celery would acknowledge and so lose.
            logger.warning("%s #%d: Redis failed, retrying: %s", job.key, job.index, error)
            raise _retry(task, job, job.min_backoff) from error
        if retry_in is not None:
            raise _retry(task, job, retry_in, kwargs={**arguments, "attempt": job.attempt + 1})

    return app.task(
        name=TASK_NAME,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
        serializer="json",
        max_retries=None,
    )(deliver)
