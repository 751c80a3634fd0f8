"""The connection pool and pipelining across messages, with both SMTP drivers.

The pool's decisions are tested without a server first (``Pool``, ``Lane``); then both
drivers against ``FaultyServer``, which counts from its side the connections open at
once, each connection's commands, and every recipient's RCPT TO and deliveries.
"""

from __future__ import annotations

import time

import pytest

import notifymail as nm
from drivers import Driver
from notifymail.protocol import Delivered, Failed
from notifymail.transport._pool import Lane, Limits, Pool
from smtp_servers import DROP, LOST, FaultyServer, Slow, assert_accounted_for, make_envelope

SENDER = nm.SenderSettings(from_address="alerts@example.com")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the pool's decisions, without a server ---


def test_the_pool_opens_up_to_its_size_then_makes_callers_wait():
    pool: Pool[str] = Pool(2, Limits(), Clock())

    assert pool.acquire() is True
    first = pool.opened("first")
    assert pool.acquire() is True
    pool.opened("second")
    assert pool.acquire() is False  # two out: wait for one to come back

    assert pool.release(first, broken=False) is True
    assert pool.acquire() is first


def test_the_idle_connection_used_last_is_handed_out_first():
    clock = Clock()
    pool: Pool[str] = Pool(3, Limits(), clock)
    slots = []
    for name in ("a", "b", "c"):
        assert pool.acquire() is True
        slots.append(pool.opened(name))
    for slot in slots:
        clock.now += 1
        pool.release(slot, broken=False)

    assert pool.acquire() is slots[2]  # the others idle on, and expire first


def test_a_connection_is_retired_after_its_hundredth_message():
    pool: Pool[str] = Pool(1, Limits(), Clock())
    pool.acquire()
    slot = pool.opened("connection")
    slot.messages = 99
    assert pool.has_room(slot)

    slot.messages = 100

    assert not pool.has_room(slot)
    assert pool.release(slot, broken=False) is False  # QUIT, and a new one next time
    assert pool.acquire() is True


def test_a_connection_is_retired_after_300_seconds_open():
    clock = Clock()
    pool: Pool[str] = Pool(1, Limits(), clock)
    pool.acquire()
    slot = pool.opened("connection")
    clock.now += 299.9
    assert pool.has_room(slot)

    clock.now += 0.1

    assert not pool.has_room(slot)
    assert pool.release(slot, broken=False) is False


def test_an_idle_connection_expires_after_300_seconds_open_or_30_seconds_idle():
    clock = Clock()
    pool: Pool[str] = Pool(2, Limits(), clock)
    pool.acquire()
    old = pool.opened("old")
    clock.now += 200
    pool.acquire()
    young = pool.opened("young")
    clock.now += 80
    pool.release(old, broken=False)
    pool.release(young, broken=False)
    clock.now += 15
    assert pool.expired() == []

    clock.now += 6  # old: open for 301 s; young: idle for 21 s
    assert pool.expired() == [old]
    clock.now += 9  # young: idle for 30 s
    assert pool.expired() == [young]
    assert pool.acquire() is True


def test_a_broken_connection_is_never_kept():
    pool: Pool[str] = Pool(1, Limits(), Clock())
    pool.acquire()
    slot = pool.opened("connection")

    assert pool.release(slot, broken=True) is False
    assert pool.drain() == []


def test_a_failed_open_frees_its_place():
    pool: Pool[str] = Pool(1, Limits(), Clock())
    assert pool.acquire() is True

    pool.open_failed()

    assert pool.acquire() is True


def test_the_lane_sends_an_envelope_again_once_when_the_server_dropped_the_connection():
    lane = Lane()
    envelope = make_envelope()
    dropped = Failed(nm.ConnectionFailed("closed"), reconnect=True)
    lane.started(envelope)

    assert lane.ended(dropped) is None
    assert lane.again() is envelope
    lane.started(envelope)
    ended = lane.ended(dropped)  # dropped again on the new connection: that is the outcome

    assert ended is not None
    assert ended[0] is envelope
    assert isinstance(ended[1], nm.ConnectionFailed)
    assert lane.again() is None


def test_the_lane_ends_envelopes_in_the_order_they_started():
    lane = Lane()
    first, second = make_envelope(), make_envelope()
    lane.started(first)
    lane.started(second)
    delivery = nm.Delivery(first.message_id, accepted=first.recipients)

    assert lane.ended(Delivered(delivery)) == (first, delivery)
    assert lane.busy
    error = nm.TemporaryFailure("451 later")
    assert lane.ended(Failed(error)) == (second, error)
    assert not lane.busy


# --- both drivers against a server ---


def _mailer(
    driver: Driver,
    server: FaultyServer,
    *,
    connections: int,
    waits: bool = False,
    **delivery: object,
):
    """A mailer on ``server``; it skips the retry policy's waits unless ``waits``."""
    settings = nm.EmailSettings(
        sender=SENDER,
        smtp=server.settings(max_connections=connections, timeout=2.0),
        delivery=nm.DeliverySettings(**delivery),  # type: ignore[arg-type]
    )
    return driver.mailer(settings) if waits else driver.mailer(settings, sleep=lambda s: None)


def _outsiders(count: int) -> list[str]:
    return [f"guest{i}@example.net" for i in range(count)]


def test_concurrency_is_max_connections(driver):
    smtp = nm.SmtpSettings(host="127.0.0.1", max_connections=8)

    assert driver.transport(smtp).concurrency == 8
    assert nm.MemoryTransport().concurrency == 1


def test_eight_connections_deliver_eight_envelopes_at_once_and_never_more(driver):
    recipients = _outsiders(32)
    # Each message waits 0.1 s for its reply: 32 take 3.2 s one at a time, 0.4 s on 8.
    with FaultyServer({"end": [Slow(0.1)] * 32}, pipelining=True) as server:
        started = time.monotonic()
        report = _mailer(driver, server, connections=8).notify(
            nm.Notification(recipients, "Weekly", text="Up.\n")
        )
        elapsed = time.monotonic() - started

    assert report.ok
    assert server.peak == 8
    assert server.connections == 8
    assert elapsed < 1.6
    assert server.delivered == dict.fromkeys(recipients, 1)


@pytest.mark.parametrize("connections", [1, 8])
def test_faults_on_some_pooled_connections_leave_every_recipient_in_one_bucket_once(
    driver, connections
):
    recipients = _outsiders(120)
    faults = {
        "mail": ["ok"] * 7 + [DROP] + ["ok"] * 20 + ["421 4.7.0 Too many connections"],
        "rcpt": ["ok"] * 11 + [DROP] + ["ok"] * 30 + ["421 4.3.2 Closing"],
        "end": ["ok"] * 5 + [LOST] + ["ok"] * 9 + [DROP] + ["ok"] * 40 + [LOST],
    }
    with FaultyServer(faults, pipelining=True) as server:
        report = _mailer(driver, server, connections=connections).notify(
            nm.Notification(recipients, "Weekly", text="Up.\n")
        )

    assert_accounted_for(report, recipients, server, max_attempts=6)
    # The two lost replies and the connection closed after an end of DATA: failed, never
    # sent again (the server may have taken them); every other recipient accepted once.
    assert len(server.unconfirmed) == 2
    assert len(report.failed) == 3
    assert server.unconfirmed < set(report.failed)
    assert all(not error.retryable for error in report.failed.values())
    assert sorted(report.accepted) == sorted(set(recipients) - set(report.failed))


def test_a_connection_carries_at_most_a_hundred_messages_then_says_quit(driver):
    recipients = _outsiders(150)
    with FaultyServer(pipelining=True) as server:
        report = _mailer(driver, server, connections=1).notify(
            nm.Notification(recipients, "Weekly", text="Up.\n")
        )

    assert report.ok
    assert server.connections == 2
    verbs = {1: [], 2: []}
    for arrival in server.arrivals:
        verbs[arrival.connection].append(arrival.line.split(" ")[0])
    assert verbs[1].count("MAIL") == 100
    assert verbs[1][-1] == "QUIT"
    assert verbs[2].count("MAIL") == 50


def test_a_connection_open_too_long_or_idle_too_long_is_replaced_with_a_quit(driver):
    clock = Clock()
    with FaultyServer() as server:
        transport = driver.transport(server.settings())
        transport._pool.clock = clock
        with transport:
            transport.send(make_envelope())
            clock.now += 29
            transport.send(make_envelope())  # idle 29 s: kept
            clock.now += 30
            transport.send(make_envelope())  # idle 30 s: closed, a new one
            clock.now += 301
            transport.send(make_envelope())  # idle again, and open over 300 s

    assert server.connections == 3
    quits = [a.connection for a in server.arrivals if a.line == "QUIT"]
    assert quits == [1, 2, 3]
    assert len(server.transactions) == 4


def test_a_connection_the_server_broke_is_never_handed_out_again(driver):
    with FaultyServer({"rcpt": [DROP]}) as server:
        transport = driver.transport(server.settings())
        with transport:
            with pytest.raises(nm.ConnectionFailed):
                transport.send(make_envelope())
            transport.send(make_envelope())

    assert server.connections == 2
    assert len(server.transactions) == 1


def test_the_throttle_counts_recipients_as_their_mail_from_goes_out_across_connections(
    driver,
):
    recipients = _outsiders(12)
    with FaultyServer(pipelining=True) as server:
        mailer = _mailer(driver, server, connections=4, waits=True, max_recipients_per_second=5)
        started = time.monotonic()
        report = mailer.notify(nm.Notification(recipients, "Weekly", text="Up.\n"))
        elapsed = time.monotonic() - started

    assert report.ok
    # 12 at 5 per second: three windows, the last one opening 2 s after the first.
    assert 1.9 <= elapsed < 3.5


# --- pipelining across messages ---


def _mail_lines(server: FaultyServer) -> list[int]:
    """For each MAIL FROM, the replies the server had sent when it arrived."""
    return [a.answered for a in server.arrivals if a.line.startswith("MAIL")]


@pytest.mark.parametrize("pipelining", [True, False])
def test_the_next_message_follows_the_end_of_data_in_the_same_write_where_pipelining_is_offered(
    driver, pipelining
):
    recipients = _outsiders(3)
    with FaultyServer({"end": [Slow(0.1)] * 3}, pipelining=pipelining) as server:
        report = _mailer(driver, server, connections=1).notify(
            nm.Notification(recipients, "Weekly", text="Up.\n")
        )

    assert report.ok
    # Greeting, EHLO; then per message MAIL, RCPT, 354 and the end of DATA's 250.
    if pipelining:  # each next MAIL FROM arrived before the 250 to the message before it
        assert _mail_lines(server) == [2, 5, 9]
    else:
        assert _mail_lines(server) == [2, 6, 10]
    assert server.delivered == dict.fromkeys(recipients, 1)
    assert server.violations == []


def test_a_lost_reply_with_the_next_message_queued_behind_it_sends_neither_twice(driver):
    recipients = _outsiders(3)
    with FaultyServer({"end": [LOST]}, pipelining=True) as server:
        report = _mailer(driver, server, connections=1).notify(
            nm.Notification(recipients, "Weekly", text="Up.\n")
        )

    first, *rest = recipients
    assert server.unconfirmed == {first}
    assert report.failed[first].retryable is False
    assert sorted(report.accepted) == sorted(rest)  # the queued one went on a new connection
    assert server.connections == 2
    assert_accounted_for(report, recipients, server, max_attempts=1)


class _BreaksOnTheThird(nm.MemoryTransport):
    """Four envelopes at once; the third raises a bug, not a DeliveryError."""

    concurrency = 4

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def deliver(self, envelope: nm.Envelope) -> nm.Delivery:
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("a bug in the transport")
        time.sleep(0.01)
        return super().deliver(envelope)


def test_an_error_in_one_thread_stops_the_others_and_reaches_the_caller():
    transport = _BreaksOnTheThird()
    mailer = nm.Mailer(nm.EmailSettings(sender=SENDER), transport=transport)

    with pytest.raises(RuntimeError, match="a bug in the transport"):
        mailer.notify(nm.Notification(_outsiders(200), "Weekly", text="Up.\n"))

    assert transport.calls < 20  # the other threads stopped taking envelopes
