"""The sans-I/O mailer core: the hand-over generator, the throttle, the single attempt
and the dispatch of a notification's envelopes, driven by hand, with no transport, clock
or sleep behind them.
"""

from __future__ import annotations

import pytest

import notifymail as nm
from notifymail._delivery import (
    Attempt,
    Dispatch,
    Handed,
    HandOver,
    Throttle,
    hand_over,
    says_throttling,
)
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


# --- the dispatch of a notification ---


def envelopes(count: int) -> list[nm.Envelope]:
    return [envelope(f"user{n}@example.com") for n in range(count)]


def delivered(sent: nm.Envelope) -> nm.Delivery:
    return nm.Delivery(sent.message_id, sent.recipients)


def test_the_dispatch_hands_out_first_attempts_in_order_and_reports_them() -> None:
    batch = envelopes(3)
    dispatch = Dispatch(batch, RETRY, workers=1)

    taken = [dispatch.take(0.0, ready_only=True) for _ in batch]

    assert [attempt.envelope for attempt in taken if attempt] == batch
    assert dispatch.take(0.0, ready_only=True) is None
    for sent in batch:
        dispatch.done(sent, delivered(sent), 0.0)
    assert dispatch.take(0.0, ready_only=False) is None  # nothing left: the worker stops
    assert [handed.accepted for handed in dispatch.handed] == [e.recipients for e in batch]


def test_a_retry_waits_its_delay_while_the_other_envelopes_go_out() -> None:
    first, second = envelopes(2)
    dispatch = Dispatch([first, second], RETRY, workers=1)
    assert dispatch.take(0.0, ready_only=False) == Attempt(first, 0.0)
    dispatch.done(first, nm.ConnectionFailed("reset"), 10.0)

    assert dispatch.take(10.0, ready_only=True) == Attempt(second, 0.0)
    dispatch.done(second, delivered(second), 10.2)
    assert dispatch.take(10.2, ready_only=True) is None  # the retry is not due yet
    waiting = dispatch.take(10.2, ready_only=False)  # an idle worker waits for it
    assert waiting is not None
    assert waiting.envelope is first
    assert waiting.wait == pytest.approx(0.8)
    dispatch.done(first, delivered(first), 11.0)

    accepted = [address for handed in dispatch.handed for address in handed.accepted]
    assert sorted(accepted) == sorted((*first.recipients, *second.recipients))
    assert dispatch.take(11.0, ready_only=False) is None


def test_a_retry_whose_delay_is_over_goes_before_the_next_first_attempt() -> None:
    first, second, third = envelopes(3)
    dispatch = Dispatch([first, second, third], RETRY, workers=1)
    dispatch.take(0.0, ready_only=False)
    dispatch.done(first, nm.TemporaryFailure("451 later"), 0.0)
    dispatch.take(0.0, ready_only=True)

    assert dispatch.take(1.0, ready_only=True) == Attempt(first, 0.0)
    assert dispatch.take(1.0, ready_only=True) == Attempt(third, 0.0)


def test_an_envelope_given_back_unsent_is_the_next_one_out() -> None:
    first, second = envelopes(2)
    dispatch = Dispatch([first, second], RETRY, workers=1)
    dispatch.take(0.0, ready_only=True)

    dispatch.give_back(first)  # the throttle said wait, and the connection could not

    assert dispatch.take(0.0, ready_only=True) == Attempt(first, 0.0)


def test_a_throttling_reply_sends_one_worker_home_never_the_last() -> None:
    batch = envelopes(4)
    dispatch = Dispatch(batch, RETRY, workers=2)
    first, second = (dispatch.take(0.0, ready_only=False) for _ in range(2))
    assert first is not None
    assert second is not None
    busy = nm.TemporaryFailure("421 too busy", reply=nm.Reply(421, "4.7.0 Too many connections"))
    dispatch.done(first.envelope, busy, 0.0)
    dispatch.done(second.envelope, busy, 0.0)  # 1 worker is the floor

    assert dispatch.take(0.0, ready_only=False) is None  # one worker too many: it stops
    remaining = dispatch.take(0.0, ready_only=False)
    assert remaining is not None  # the other goes on with everything that is left


def test_a_throttling_reply_is_found_in_the_error_or_a_recipients_refusal() -> None:
    busy = nm.Reply(421, "4.7.0 Too many connections")
    error = nm.TemporaryFailure(str(busy), reply=busy)
    refused = nm.Delivery("<1@example.com>", (RECIPIENTS[0],), {RECIPIENTS[1]: busy})
    unknown = nm.Delivery(
        "<1@example.com>", (RECIPIENTS[0],), {RECIPIENTS[1]: nm.Reply(550, "5.1.1 No")}
    )

    assert says_throttling(error)
    assert says_throttling(refused)
    assert not says_throttling(unknown)
    assert not says_throttling(nm.Delivery("<1@example.com>", RECIPIENTS))
