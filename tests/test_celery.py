"""notifymail.celery with a real redis-server, real ``celery worker`` processes and a real
SMTP server, all on 127.0.0.1: what arrives is counted at the server.

The workers run ``celery_app.py``; ``celery_cluster.py`` starts and stops the processes.
Sizes: the exactly-once test sends 2,000 recipients. The kill test sends 400: each kill
lands while the killed worker is delivering, whatever the total, so more recipients would
only add time. The rate test sends 200 recipients at 50 a second: four windows full to
the limit, which is what the bound is about.

The tests that need nothing special share one cluster of two workers (concurrency 2 each);
each uses recipients and keys of its own. The workers' mailers share a suppression list,
a ``SqliteSuppressions`` file the tests write to as the host would.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

import notifymail as nm
from celery_cluster import RedisServer, StampingHandler, Workers, busiest_second, wait_until
from notifymail._compose import compose_notification
from notifymail.celery import CeleryOutbox, CeleryStatus
from smtp_servers import SmtpServer, start_smtp_server

SETTINGS = nm.EmailSettings(sender=nm.SenderSettings(from_address="reports@example.com"))


def envelopes(recipients: Sequence[str], subject: str = "Weekly revenue") -> list[nm.Envelope]:
    """What ``Mailer.enqueue`` hands the outbox for a notification to ``recipients``."""
    notification = nm.Notification(list(recipients), subject, "New results.\n")
    batches = nm.plan_delivery(notification.recipients, nm.InMemoryDirectory(()), SETTINGS)
    return compose_notification(notification, SETTINGS.active_sender, batches)


def outsiders(count: int, prefix: str = "reader") -> list[str]:
    return [f"{prefix}-{n}@example.org" for n in range(count)]


@dataclass
class Cluster:
    """Redis, an SMTP server, worker processes (none started yet) and the host's side;
    ``suppressions`` is the path of the suppression list the workers' mailers share."""

    redis: RedisServer
    smtp: SmtpServer
    handler: StampingHandler
    workers: Workers
    host_app: Celery
    suppressions: Path
    outboxes: list[CeleryOutbox] = field(default_factory=list)

    def outbox(self, **settings: Any) -> CeleryOutbox:
        """The host's outbox on this cluster; ``settings`` override the test defaults."""
        values: dict[str, Any] = {"lease": 2.0, "min_backoff": 0.2, "max_backoff": 0.5}
        values.update(settings)
        outbox = CeleryOutbox(self.host_app, redis_url=self.redis.url, **values)
        self.outboxes.append(outbox)
        return outbox

    def settle(self, outbox: CeleryOutbox, key: str, timeout: float) -> CeleryStatus:
        """Wait until no recipient of ``key`` is pending; return the final status."""
        try:
            wait_until(lambda: outbox.status(key).pending == 0, timeout, f"{key} to settle")
        except AssertionError as error:
            raise AssertionError(f"{error}: {outbox.status(key)}\n{self.workers.logs()}") from None
        return outbox.status(key)

    def unpark(self, queue: str) -> None:
        """Hand the tasks waiting in ``queue``, which no worker consumes, to the workers,
        oldest first. A task retried goes back to ``queue``: unpark only those that will
        not be retried."""
        for _ in range(self.redis.client.llen(queue)):
            self.redis.client.rpoplpush(queue, "notifymail")


@contextlib.contextmanager
def running_cluster(directory: Path, *, rate: int | None = None) -> Iterator[Cluster]:
    """Start Redis and an SMTP server (and, through ``workers``, workers); stop them all."""
    with contextlib.ExitStack() as stack:
        redis_server = RedisServer(directory)
        stack.callback(redis_server.stop)
        handler = StampingHandler()
        smtp = start_smtp_server(handler=handler)
        stack.callback(smtp.stop)
        suppressions = directory / "suppressions.db"
        nm.SqliteSuppressions(suppressions).close()  # made once, before the workers share it
        environment = {
            "NMTEST_BROKER": redis_server.url,
            "NMTEST_SMTP_PORT": str(smtp.port),
            "NMTEST_SUPPRESSIONS": str(suppressions),
        }
        if rate is not None:
            environment["NMTEST_RATE"] = str(rate)
        workers = Workers(directory, environment)
        stack.callback(workers.stop_all)
        host_app = Celery("host", broker=redis_server.url)
        stack.callback(host_app.close)
        cluster = Cluster(redis_server, smtp, handler, workers, host_app, suppressions)
        yield cluster
        for outbox in cluster.outboxes:
            outbox.close()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two workers, concurrency 2 each, shared by the tests that need nothing special."""
    with running_cluster(tmp_path_factory.mktemp("celery")) as cluster:
        cluster.workers.start("one", concurrency=2)
        cluster.workers.start("two", concurrency=2)
        yield cluster


def test_two_workers_deliver_every_recipient_exactly_once(shared: Cluster) -> None:
    outbox = shared.outbox()
    recipients = outsiders(2000, "reader")
    queued = outbox.enqueue(envelopes(recipients), key="revenue-2000")
    assert (queued.envelopes, queued.recipients, queued.new) == (2000, 2000, True)

    status = shared.settle(outbox, "revenue-2000", timeout=90)

    assert status == CeleryStatus(accepted=2000)
    delivered = shared.handler.delivered("reader-")
    assert set(delivered) == set(recipients)
    assert set(delivered.values()) == {1}
    # Both workers took part.
    clients = {s.client.partition("-")[0] for s in shared.handler.stamps if s.address in delivered}
    assert clients == {"one", "two"}


def test_a_second_enqueue_with_the_same_key_sends_nothing(shared: Cluster) -> None:
    # No worker consumes this queue: what enqueue published stays there to be counted.
    outbox = shared.outbox(queue="parked-idempotent")
    first = outbox.enqueue(envelopes(outsiders(3, "twice")), key="twice")
    again = outbox.enqueue(envelopes(outsiders(3, "twice")), key="twice")

    assert first.new
    assert not again.new
    assert (again.id, again.key, again.envelopes, again.recipients) == (
        first.id,
        "twice",
        3,
        3,
    )
    assert shared.redis.client.llen("parked-idempotent") == 3
    assert outbox.status("twice") == CeleryStatus(pending=3)


def test_a_task_message_shows_monitoring_neither_the_redis_url_nor_the_message(
    shared: Cluster,
) -> None:
    outbox = shared.outbox(queue="parked-repr")
    outbox.enqueue(envelopes(["shown@example.org"]), key="shown")
    (message,) = shared.redis.client.lrange("parked-repr", 0, -1)
    headers = json.loads(message)["headers"]

    assert headers["task"] == "notifymail.deliver"
    assert headers["kwargsrepr"] == "{'key': 'shown', 'index': 0}"


def test_status_of_an_unknown_key_is_all_zero(shared: Cluster) -> None:
    assert shared.outbox().status("never-enqueued") == CeleryStatus()


def test_a_redelivered_task_skips_recipients_already_accepted(shared: Cluster) -> None:
    parked = shared.outbox(queue="parked-redelivery")
    parked.enqueue(envelopes(["again@example.org"]), key="redelivered")
    (message,) = shared.redis.client.lrange("parked-redelivery", 0, -1)
    # The broker hands the same message out three times, as after workers died holding it.
    for _ in range(3):
        shared.redis.client.lpush("notifymail", message)

    status = shared.settle(parked, "redelivered", timeout=30)
    wait_until(lambda: shared.redis.client.llen("notifymail") == 0, 10, "the copies to be taken")
    time.sleep(0.5)  # the last copy to run (it sends nothing)

    assert status == CeleryStatus(accepted=1)
    assert shared.handler.delivered("again@") == {"again@example.org": 1}


def test_a_task_that_finds_a_live_claim_waits_for_it_to_expire(shared: Cluster) -> None:
    outbox = shared.outbox()
    # A claim on the envelope without an outcome, as a worker that died mid-send leaves it.
    shared.redis.client.set("notifymail:claimed:claim:0", "a-dead-task", px=1500)
    expires = time.monotonic() + 1.5
    outbox.enqueue(envelopes(["claimed@example.org"]), key="claimed")

    assert shared.settle(outbox, "claimed", timeout=30) == CeleryStatus(accepted=1)
    (rcpt,) = shared.handler.rcpts("claimed@example.org")
    assert rcpt >= expires - 0.05  # not beside the claim's holder: after it expired


def test_a_4xx_refusal_is_retried_with_backoff_and_a_5xx_refusal_is_final(
    shared: Cluster,
) -> None:
    shared.handler.transient["slow@example.org"] = 2
    shared.handler.refuse["gone@example.org"] = "550 5.1.1 No such user"
    outbox = shared.outbox(min_backoff=0.3, max_backoff=0.6)
    recipients = ["slow@example.org", "gone@example.org", "fine@example.org"]
    outbox.enqueue(envelopes(recipients), key="mixed")

    assert shared.settle(outbox, "mixed", timeout=30) == CeleryStatus(accepted=2, refused=1)
    first, second, third = shared.handler.rcpts("slow@example.org")
    assert second - first >= 0.3  # min_backoff
    assert third - second >= 0.6  # doubled, and capped at max_backoff
    assert len(shared.handler.rcpts("gone@example.org")) == 1  # 5xx: never again
    assert shared.handler.delivered("slow@") == {"slow@example.org": 1}
    assert shared.handler.delivered("fine@") == {"fine@example.org": 1}


def test_a_recipient_still_refused_after_max_lifetime_is_recorded_failed(shared: Cluster) -> None:
    shared.handler.transient["never@example.org"] = 1000
    outbox = shared.outbox(min_backoff=0.2, max_backoff=0.2, max_lifetime=1.5)
    outbox.enqueue(envelopes(["never@example.org"]), key="expired")
    enqueued = time.monotonic()

    assert shared.settle(outbox, "expired", timeout=30) == CeleryStatus(failed=1)
    tries = shared.handler.rcpts("never@example.org")
    assert 2 <= len(tries) <= 8  # retried every 0.2 s or so, for 1.5 s
    # No attempt starts after max_lifetime (0.1 s for the way from the worker to the
    # server; the next attempt would have come 0.2 s later).
    assert max(tries) < enqueued + 1.5 + 0.1


# --- the suppression list at delivery time: the workers' mailers share a SqliteSuppressions

HOLDERS = ("sub-ann@example.com", "sub-bob@example.com", "sub-cat@example.com")


def host_mailer(outbox: CeleryOutbox, suppressions: nm.Suppressions) -> nm.Mailer:
    """The host's mailer: the holders are account holders, who share one envelope."""
    people = nm.InMemoryDirectory(nm.Person(address) for address in HOLDERS)
    return nm.Mailer(
        SETTINGS,
        transport=nm.MemoryTransport(),
        directory=people,
        suppressions=suppressions,
        outbox=outbox,
    )


def with_kwargs(message: bytes, change: Callable[[dict[str, Any]], object]) -> bytes:
    """The task message with its kwargs changed by ``change``, as another version sends it."""
    task = json.loads(message)
    args, kwargs, embed = json.loads(base64.b64decode(task["body"]))
    change(kwargs)
    task["body"] = base64.b64encode(json.dumps([args, kwargs, embed]).encode()).decode()
    return json.dumps(task).encode()


def without_the_notification_flag(message: bytes) -> bytes:
    """A task message as a version before the flag sent it: the same kwargs without it."""
    return with_kwargs(message, lambda kwargs: kwargs.pop("notification"))


def test_recipients_suppressed_after_the_enqueue_are_never_sent_and_count_as_suppressed(
    shared: Cluster,
) -> None:
    outbox = shared.outbox(queue="parked-suppressed")  # held there until unparked
    recipients = [*HOLDERS, "sub-dee@partner.example", "sub-eve@client.example"]
    with nm.SqliteSuppressions(shared.suppressions) as suppressions:
        mailer = host_mailer(outbox, suppressions)
        queued = mailer.enqueue(nm.Notification(recipients, "Drop", text="-12%"), key="later")
        assert (queued.envelopes, queued.recipients) == (3, 5)  # the holders share one
        suppressions.add("Sub-Bob@Example.com", "unsubscribed")  # one of an envelope's three
        suppressions.add("sub-eve@client.example", "unsubscribed")  # an envelope's only one
        shared.unpark("parked-suppressed")

        status = shared.settle(outbox, "later", timeout=30)

    assert status == CeleryStatus(accepted=3, suppressed=2)
    assert shared.handler.delivered("sub-") == {
        "sub-ann@example.com": 1,
        "sub-cat@example.com": 1,
        "sub-dee@partner.example": 1,
    }
    assert shared.handler.rcpts("sub-bob@example.com") == []
    assert shared.handler.rcpts("sub-eve@client.example") == []


def test_system_mail_is_delivered_to_a_suppressed_address(shared: Cluster) -> None:
    outbox = shared.outbox()
    with nm.SqliteSuppressions(shared.suppressions) as suppressions:
        suppressions.add("sys-bob@example.org", "unsubscribed")
        reset = nm.Message(["sys-bob@example.org"], "Reset your password", text="Here.")
        host_mailer(outbox, suppressions).enqueue(reset, key="reset")

        status = shared.settle(outbox, "reset", timeout=30)

    assert status == CeleryStatus(accepted=1)
    assert shared.handler.delivered("sys-") == {"sys-bob@example.org": 1}


def test_a_task_from_before_the_notification_flag_is_delivered_unfiltered(
    shared: Cluster,
) -> None:
    outbox = shared.outbox(queue="parked-old")
    with nm.SqliteSuppressions(shared.suppressions) as suppressions:
        alert = nm.Notification(["old-bob@example.org"], "Drop", text="-12%")
        host_mailer(outbox, suppressions).enqueue(alert, key="old-task")
        suppressions.add("old-bob@example.org", "unsubscribed")
    (message,) = shared.redis.client.lrange("parked-old", 0, -1)
    shared.redis.client.lpush("notifymail", without_the_notification_flag(message))

    assert shared.settle(outbox, "old-task", timeout=30) == CeleryStatus(accepted=1)
    assert shared.handler.delivered("old-") == {"old-bob@example.org": 1}


def test_a_task_from_a_later_version_with_an_argument_unknown_here_is_delivered(
    shared: Cluster,
) -> None:
    outbox = shared.outbox(queue="parked-new")
    alert = nm.Notification(["new-bob@example.org"], "Drop", text="-1%")
    host_mailer(outbox, nm.InMemorySuppressions()).enqueue(alert, key="new-task")
    (message,) = shared.redis.client.lrange("parked-new", 0, -1)
    later = with_kwargs(message, lambda kwargs: kwargs.update(priority="high"))
    shared.redis.client.lpush("notifymail", later)

    assert shared.settle(outbox, "new-task", timeout=30) == CeleryStatus(accepted=1)
    assert shared.handler.delivered("new-") == {"new-bob@example.org": 1}


def test_a_notification_waits_while_the_suppression_list_fails_and_is_then_delivered(
    shared: Cluster,
) -> None:
    outbox = shared.outbox()
    down = shared.suppressions.with_name(f"{shared.suppressions.name}.down")
    down.touch()  # the workers' lookups fail now (see celery_app.Suppressions)
    with nm.SqliteSuppressions(shared.suppressions) as suppressions:
        alert = nm.Notification(["broken-ann@example.org"], "Drop", text="-12%")
        host_mailer(outbox, suppressions).enqueue(alert, key="broken")
    wait_until(
        lambda: "broken #0: the suppression list failed" in shared.workers.logs(),
        10,
        "a lookup to fail",
    )
    assert outbox.status("broken") == CeleryStatus(pending=1)
    down.unlink()

    assert shared.settle(outbox, "broken", timeout=30) == CeleryStatus(accepted=1)
    assert shared.handler.delivered("broken-") == {"broken-ann@example.org": 1}


def test_a_5_1_1_refusal_seen_by_a_worker_joins_its_suppression_list_as_a_hard_bounce(
    shared: Cluster,
) -> None:
    shared.handler.refuse["bounce-gone@example.org"] = "550 5.1.1 No such user"
    outbox = shared.outbox()
    with nm.SqliteSuppressions(shared.suppressions) as suppressions:
        alert = nm.Notification(
            ["bounce-gone@example.org", "bounce-fine@example.org"], "Drop", text="-12%"
        )
        host_mailer(outbox, suppressions).enqueue(alert, key="bounced")

        status = shared.settle(outbox, "bounced", timeout=30)
        # Written right after the outcomes that settle waits for.
        wait_until(
            lambda: suppressions.is_suppressed("bounce-gone@example.org"), 10, "the hard bounce"
        )
        reasons = [suppressions.reason(f"bounce-{name}@example.org") for name in ("gone", "fine")]

    assert status == CeleryStatus(accepted=1, refused=1)
    assert reasons == ["hard bounce", None]


def test_a_worker_killed_mid_run_twice_loses_nothing_and_repeats_at_most_one_envelope_per_kill(
    tmp_path: Path,
) -> None:
    # The victim has one pool process, so a kill ends exactly one delivering process.
    # Both kills land while the victim holds a task, which is what acks_late and the
    # records in Redis answer for: the first at a random RCPT of a transaction, before
    # its DATA; the second right after the end of DATA, the one moment at which a repeat
    # is possible: the server takes the message and the worker dies before it can record
    # the outcome. (A kill in the instant Celery's Redis transport is fetching the next
    # message can lose that message in the broker; docs/celery.md says what to monitor.)
    with running_cluster(tmp_path) as cluster:
        outbox = cluster.outbox()
        recipients = outsiders(400, "killed")
        outbox.enqueue(envelopes(recipients), key="killed")
        killed: list[tuple[str, ...]] = []

        def start_victim() -> tuple[str, Callable[[], None]]:
            victim = cluster.workers.start("victim", concurrency=1)
            return victim, cluster.workers.killer("victim")

        victim, kill = start_victim()
        at = random.randrange(30, 60)

        def kill_at_a_random_rcpt(client: str, address: str) -> None:
            stamps = cluster.handler.stamps
            if client == victim and not killed and sum(s.client == victim for s in stamps) >= at:
                kill()
                killed.append((address,))

        cluster.handler.at_rcpt = kill_at_a_random_rcpt
        wait_until(lambda: bool(killed), 30, "the kill at a random RCPT")
        cluster.handler.at_rcpt = None
        cluster.workers.kill("victim")
        assert outbox.status("killed").pending > 0  # killed mid-run

        victim, kill = start_victim()
        in_flight: list[tuple[str, ...]] = []

        def kill_at_end_of_data(client: str, rcpts: tuple[str, ...]) -> None:
            if client == victim and not in_flight:
                kill()
                in_flight.append(rcpts)

        cluster.handler.at_end_of_data = kill_at_end_of_data
        wait_until(lambda: bool(in_flight), 30, "the kill at the end of DATA")
        cluster.workers.kill("victim")
        assert outbox.status("killed").pending > 0

        cluster.workers.start("victim", concurrency=1)
        cluster.workers.start("steady", concurrency=2)

        status = cluster.settle(outbox, "killed", timeout=60)

        assert status == CeleryStatus(accepted=400)
        delivered = cluster.handler.delivered("killed-")
        assert set(delivered) == set(recipients)  # none lost
        repeated = {r: n for r, n in delivered.items() if n > 1}
        assert len(repeated) <= 2, repeated  # two kills
        assert set(repeated.values()) == {2}, repeated
        assert set(in_flight[0]) <= set(repeated)  # the envelope after its DATA went again


def test_the_rate_limit_holds_at_the_server_across_four_worker_processes(tmp_path: Path) -> None:
    with running_cluster(tmp_path, rate=50) as cluster:
        outbox = cluster.outbox()
        outbox.enqueue(envelopes(outsiders(200, "paced")), key="paced")
        cluster.workers.start("one", concurrency=2)
        cluster.workers.start("two", concurrency=2)

        assert cluster.settle(outbox, "paced", timeout=60) == CeleryStatus(accepted=200)

        stamps = cluster.handler.stamps
        assert busiest_second(stamps) <= 50
        assert busiest_second(stamps) >= 40  # paced at the limit, not far below it
        assert max(s.time for s in stamps) - min(s.time for s in stamps) >= 3.0
        assert {s.client.partition("-")[0] for s in stamps} == {"one", "two"}


def test_import_notifymail_loads_neither_celery_nor_redis() -> None:
    code = (
        "import sys, notifymail\n"
        "for name in notifymail.__all__: getattr(notifymail, name)\n"
        "print(sorted(m for m in ('celery', 'kombu', 'redis') if m in sys.modules))\n"
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_notifymail_celery_without_the_extra_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['celery'] = None  # as if not installed\n"
        "try:\n"
        "    import notifymail.celery\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "pip install 'notifymail[celery]'" in result.stdout


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"lease": 0}, "lease"),
        ({"max_lifetime": -1.0}, "max_lifetime"),
        ({"min_backoff": 0.0}, "min_backoff"),
        ({"min_backoff": 10.0, "max_backoff": 5.0}, "max_backoff"),
        ({"queue": ""}, "queue"),
    ],
)
def test_outbox_settings_are_checked(settings: dict[str, Any], field: str) -> None:
    app = Celery("host")
    try:
        with pytest.raises(nm.ConfigError, match=f"^{field}: ") as raised:
            CeleryOutbox(app, redis_url="redis://127.0.0.1:1/0", **settings)
    finally:
        app.close()
    assert raised.value.field == field
