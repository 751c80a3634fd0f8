"""The sans-I/O mailer core: the hand-over generator, the throttle and the single attempt,
driven by hand, with no transport, clock or sleep behind them.
"""

from __future__ import annotations

import pytest

import notifymail as nm
from notifymail._delivery import Attempt, Handed, HandOver, Throttle, hand_over
from notifymail.transport.memory import MemoryTransport

SENDER = "alerts@example.com"
RECIPIENTS = ("ann@example.com", "bob@example.com")
RETRY = nm.RetryPolicy(max_attempts=3, initial_interval=1.0, multiplier=2.0, jitter=0.0)


def envelope(*recipients: str) -> nm.Envelope:
    raw = b"Message-ID: <1@example.com>\r\nSubject: x\r\n\r\nbody\r\n"
    return nm.Envelope(SENDER, recipients or RECIPIENTS, raw=raw)


def finish(plan: HandOver, outcome: nm.Delivery | nm.DeliveryError) -> Handed:
    with pytest.raises(StopIteration) as done:
        plan.send(outcome)
    handed: Handed = done.value.value
    return handed


def test_the_first_attempt_sends_the_whole_envelope_without_waiting() -> None:
    plan = hand_over(envelope(), RETRY)
    first = next(plan)
    assert first == Attempt(envelope(), 0.0)
    handed = finish(plan, nm.Delivery("<1@example.com>", RECIPIENTS))
    assert handed.accepted == RECIPIENTS
    assert handed.error is None
    assert len(handed.deliveries) == 1


def test_a_retryable_error_asks_for_the_same_envelope_after_the_policy_delay() -> None:
    plan = hand_over(envelope(), RETRY)
    next(plan)
    second = plan.send(nm.ConnectionFailed("connection reset"))
    assert second == Attempt(envelope(), 1.0)
    third = plan.send(nm.TemporaryFailure("451 later"))
    assert third == Attempt(envelope(), 2.0)
    error = nm.TemporaryFailure("451 still later")
    handed = finish(plan, error)
    assert handed.failed == dict.fromkeys(RECIPIENTS, error)
    assert handed.error is error
    assert handed.accepted == ()


def test_a_4xx_refusal_asks_again_for_that_recipient_alone() -> None:
    plan = hand_over(envelope(), RETRY)
    next(plan)
    later = nm.Reply(451, "4.2.0 later")
    again = plan.send(nm.Delivery("<1@example.com>", (RECIPIENTS[0],), {RECIPIENTS[1]: later}))
    assert again.envelope.recipients == (RECIPIENTS[1],)
    assert again.wait == 1.0
    handed = finish(plan, nm.Delivery("<1@example.com>", (RECIPIENTS[1],)))
    assert handed.accepted == RECIPIENTS
    assert handed.refused == {}


def test_a_non_retryable_error_ends_the_hand_over_at_once() -> None:
    plan = hand_over(envelope(), RETRY)
    next(plan)
    handed = finish(plan, nm.TlsError("certificate not trusted"))
    assert set(handed.failed) == set(RECIPIENTS)


def test_the_throttle_answers_how_long_to_wait_and_never_sleeps() -> None:
    now = [0.0]

    def clock() -> float:
        return now[0]

    throttle = Throttle(3)
    assert throttle.reserve(2, clock) == 0.0
    throttle.finish(2, clock)
    assert throttle.reserve(2, clock) == pytest.approx(1.0)
    now[0] = 0.25
    assert throttle.reserve(1, clock) == 0.0
    throttle.finish(1, clock)
    assert throttle.reserve(1, clock) == pytest.approx(0.75)
    now[0] = 1.0
    assert throttle.reserve(3, clock) == pytest.approx(0.25)
    now[0] = 1.25
    assert throttle.reserve(3, clock) == 0.0


def test_the_throttle_counts_a_hand_over_until_a_second_after_it_ends() -> None:
    now = [0.0]

    def clock() -> float:
        return now[0]

    throttle = Throttle(2)
    assert throttle.reserve(2, clock) == 0.0
    now[0] = 5.0  # a hand-over that took five seconds: still counted while under way
    assert throttle.reserve(1, clock) == pytest.approx(1.0)
    throttle.finish(2, clock)
    now[0] = 5.5
    assert throttle.reserve(1, clock) == pytest.approx(0.5)
    now[0] = 6.0
    assert throttle.reserve(2, clock) == 0.0


def test_a_single_attempt_returns_the_error_and_never_retries() -> None:
    transport = MemoryTransport()
    error = nm.TemporaryFailure("451 try later")
    transport.fail_next(error, times=2)
    slept: list[float] = []
    settings = nm.EmailSettings(sender=nm.SenderSettings(from_address=SENDER))
    mailer = nm.Mailer(settings, transport=transport, sleep=slept.append)
    outcome = mailer._attempt(envelope())
    assert isinstance(outcome, nm.TemporaryFailure)
    assert str(outcome) == "451 try later"
    assert slept == []
    assert transport.outbox == []


def test_a_single_attempt_waits_for_the_throttle() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    settings = nm.EmailSettings(
        sender=nm.SenderSettings(from_address=SENDER),
        delivery=nm.DeliverySettings(max_recipients_per_second=2),
    )
    transport = MemoryTransport()
    mailer = nm.Mailer(settings, transport=transport, clock=lambda: now[0], sleep=sleep)
    first = mailer._attempt(envelope())
    second = mailer._attempt(envelope())
    assert isinstance(first, nm.Delivery)
    assert isinstance(second, nm.Delivery)
    assert second.accepted == RECIPIENTS
    assert now[0] == pytest.approx(1.0)
    assert len(transport.outbox) == 2
