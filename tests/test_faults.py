"""Faults against a real SMTP server that misbehaves on purpose: nothing lost, nothing doubled.

Every check is made from the server's side (``FaultyServer`` in ``smtp_servers.py``): how
many times each recipient was delivered (the end of DATA acknowledged, or taken with
its reply lost), how many RCPT TO commands each one got, how many connections there
were. For every recipient of a report:

- accepted  <=>  delivered exactly once;
- refused or failed  =>  never delivered, with one permitted exception: the reply to the
  end of DATA was lost after the server took the message. The transport cannot know,
  so it reports the recipients failed with a ``ConnectionFailed`` whose ``retryable``
  is False and never sends the message again (at most once, never twice);
- retries stop at ``RetryPolicy.max_attempts``.

Every test runs with both SMTP drivers (``Mailer`` over ``SmtpTransport``, ``AsyncMailer``
over ``AsyncSmtpTransport``): the ``driver`` fixture, or ``Driver`` built inside the
property tests, whose examples each need a fresh one.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import notifymail as nm
from drivers import Driver
from smtp_servers import (
    DROP,
    FAULT_STEPS,
    LOST,
    FaultAction,
    FaultyServer,
    Slow,
    assert_accounted_for,
)

SENDER = nm.SenderSettings(from_address="alerts@example.com")
MEMBERS = tuple(f"member{i}@example.com" for i in range(4))
DIRECTORY = nm.InMemoryDirectory(nm.Person(email=address) for address in MEMBERS)


def _mailer(
    driver: Driver,
    server: FaultyServer,
    *,
    max_attempts: int = 3,
    timeout: float = 1.0,
    per_message: int = 50,
    sleeps: list[float] | None = None,
    max_connections: int = 1,
) -> nm.Mailer:
    settings = nm.EmailSettings(
        sender=SENDER,
        smtp=server.settings(timeout=timeout, max_connections=max_connections),
        delivery=nm.DeliverySettings(
            max_recipients_per_message=per_message,
            retry=nm.RetryPolicy(max_attempts=max_attempts),
        ),
    )
    waits = [] if sleeps is None else sleeps
    mailer: nm.Mailer = driver.mailer(settings, directory=DIRECTORY, sleep=waits.append)
    return mailer


def _notification(recipients: Iterable[str]) -> nm.Notification:
    return nm.Notification(recipients=tuple(recipients), subject="Weekly numbers", text="Up.\n")


drivers = pytest.mark.parametrize("kind", ["blocking", "asyncio"])

# Every scenario runs against a server with and without PIPELINING (RFC 2920).
both_ways = pytest.mark.parametrize("pipelining", [False, True], ids=["one-by-one", "pipelined"])


# --- any mix of faults ---

_REPLIES: dict[str, list[FaultAction]] = {
    "greet": ["421 4.3.2 Service not available", "554 5.3.2 No service", DROP],
    "ehlo": ["421 4.3.2 Closing", "451 4.3.0 Try later", "554 5.5.1 No", DROP],
    "mail": ["421 4.3.2 Closing", "451 4.3.0 Try later", "452 4.3.1 Full", "554 5.7.1 No", DROP],
    "rcpt": [
        "421 4.3.2 Closing",
        "451 4.3.0 Try later",
        "452 4.5.3 Too many",
        "554 5.7.1 No",
        DROP,
    ],
    "data": ["421 4.3.2 Closing", "451 4.3.0 Try later", "452 4.3.1 Full", "554 5.6.0 No", DROP],
    "end": [
        "421 4.3.2 Closing",
        "451 4.3.0 Try later",
        "452 4.3.1 Full",
        "554 5.6.0 No",
        DROP,
        LOST,
    ],
    "rset": ["421 4.3.2 Closing", "554 5.5.1 No", DROP],
}

fault_scripts = st.fixed_dictionaries(
    {step: st.lists(st.sampled_from(["ok", *_REPLIES[step]]), max_size=4) for step in FAULT_STEPS}
)


@drivers
@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    faults=fault_scripts,
    outsiders=st.integers(min_value=0, max_value=4),
    members=st.integers(min_value=0, max_value=4),
    max_attempts=st.integers(min_value=1, max_value=4),
    per_message=st.integers(min_value=1, max_value=3),
    kept_connection=st.booleans(),
    pipelining=st.booleans(),
)
@example(
    faults={"end": [LOST]},
    outsiders=2,
    members=2,
    max_attempts=3,
    per_message=2,
    kept_connection=True,
    pipelining=True,
)
@example(
    faults={"mail": ["ok", DROP], "end": ["ok", LOST]},
    outsiders=3,
    members=0,
    max_attempts=2,
    per_message=1,
    kept_connection=True,
    pipelining=True,
)
def test_every_recipient_is_accepted_once_or_reported_under_any_faults(  # noqa: PLR0917
    kind, faults, outsiders, members, max_attempts, per_message, kept_connection, pipelining
):
    recipients = [*MEMBERS[:members], *(f"outsider{i}@example.net" for i in range(outsiders))]
    if not recipients:
        recipients = ["only@example.net"]
    with Driver(kind) as driver, FaultyServer(faults, pipelining=pipelining) as server:
        mailer = _mailer(driver, server, max_attempts=max_attempts, per_message=per_message)
        if kept_connection:
            with mailer:
                report = mailer.notify(_notification(recipients))
        else:
            report = mailer.notify(_notification(recipients))

    assert_accounted_for(report, recipients, server, max_attempts)


@drivers
@settings(max_examples=100, deadline=None, derandomize=True, database=None)
@given(
    faults=fault_scripts,
    recipients=st.integers(min_value=1, max_value=3),
    max_attempts=st.integers(min_value=1, max_value=3),
    pipelining=st.booleans(),
)
@example(faults={"end": [LOST]}, recipients=2, max_attempts=3, pipelining=True)
@example(faults={"end": [DROP]}, recipients=1, max_attempts=3, pipelining=False)
@example(
    faults={"rcpt": ["452 4.5.3 Too many"] * 3, "end": [LOST]},
    recipients=2,
    max_attempts=3,
    pipelining=True,
)
def test_send_delivers_once_or_raises_under_any_faults(
    kind, faults, recipients, max_attempts, pipelining
):
    to = [f"user{i}@example.net" for i in range(recipients)]
    sleeps: list[float] = []
    with Driver(kind) as driver, FaultyServer(faults, pipelining=pipelining) as server:
        mailer = _mailer(driver, server, max_attempts=max_attempts, sleeps=sleeps)
        message = nm.Message(to=to, subject="Reset your password", text="Hi.\n")
        try:
            report: nm.DeliveryReport | nm.DeliveryError = mailer.send(message)
        except nm.DeliveryError as error:
            report = error

    if isinstance(report, nm.DeliveryReport):
        assert_accounted_for(report, to, server, max_attempts)
        assert report.accepted
        return
    # Raised only when no recipient accepted: nobody got it, or the reply was lost.
    assert all(server.delivered.get(a, 0) <= 1 for a in to)
    assert all(server.delivered.get(a, 0) == 0 or a in server.unconfirmed for a in to)
    assert server.violations == []
    assert all(server.rcpt_attempts.get(a, 0) <= max_attempts for a in to)
    # A retryable error is raised only once every attempt the policy allows was made.
    assert not report.retryable or len(sleeps) == max_attempts - 1


# --- a disconnect at every step ---


@both_ways
@pytest.mark.parametrize("step", ["greet", "ehlo", "mail", "rcpt", "data", "rset"])
def test_a_disconnect_before_the_end_of_data_is_retried_and_delivered_once(
    driver, step, pipelining
):
    faults: dict[str, list[FaultAction]] = {step: [DROP]}
    if step == "rset":  # RSET follows a failed transaction only
        faults["mail"] = ["451 4.3.0 Try later"]
    recipients = ["ann@example.net", "bob@example.net", *MEMBERS]
    with FaultyServer(faults, pipelining=pipelining) as server:
        report = _mailer(driver, server).notify(_notification(recipients))

    assert report.ok
    assert_accounted_for(report, recipients, server, 3)
    assert all(server.delivered[address] == 1 for address in recipients)


@both_ways
def test_a_disconnect_after_the_end_of_data_fails_that_envelope_and_never_resends_it(
    driver, pipelining
):
    with FaultyServer(pipelining=pipelining, faults={"end": [DROP]}) as server:
        report = _mailer(driver, server).notify(
            _notification(["ann@example.net", "bob@example.net"])
        )

    error = report.failed["ann@example.net"]
    assert isinstance(error, nm.ConnectionFailed)
    assert error.retryable is False
    assert report.accepted == ("bob@example.net",)
    assert server.rcpt_attempts["ann@example.net"] == 1


@both_ways
def test_a_lost_reply_to_the_end_of_data_is_the_one_delivery_reported_failed(driver, pipelining):
    with FaultyServer(pipelining=pipelining, faults={"end": [LOST]}) as server:
        report = _mailer(driver, server).notify(
            _notification(["ann@example.net", "bob@example.net"])
        )

    assert server.delivered == {"ann@example.net": 1, "bob@example.net": 1}
    assert server.unconfirmed == {"ann@example.net"}
    assert report.accepted == ("bob@example.net",)
    assert report.failed["ann@example.net"].retryable is False
    assert_accounted_for(report, ["ann@example.net", "bob@example.net"], server, 3)


@both_ways
def test_a_server_dropping_the_kept_connection_between_messages_is_reconnected_once(
    driver, pipelining
):
    recipients = [f"user{i}@example.net" for i in range(3)]
    # The second MAIL FROM, on the kept connection, finds it closed.
    with FaultyServer(pipelining=pipelining, faults={"mail": ["ok", DROP]}) as server:
        mailer = _mailer(driver, server, max_attempts=1)
        with mailer:
            report = mailer.notify(_notification(recipients))

    assert report.ok
    assert server.connections == 2
    assert_accounted_for(report, recipients, server, 1)


# --- retries stop at the limit ---

_RETRYABLE = [
    ("greet", "421 4.3.2 Service not available"),
    ("greet", DROP),
    ("ehlo", "451 4.3.0 Try later"),
    ("mail", "451 4.3.0 Try later"),
    ("mail", "421 4.3.2 Closing"),
    ("rcpt", "421 4.3.2 Closing"),
    ("rcpt", DROP),
    ("data", "451 4.3.0 Try later"),
    ("end", "451 4.3.0 Try later"),
    ("end", "452 4.3.1 Insufficient storage"),
]


@both_ways
@pytest.mark.parametrize(("step", "fault"), _RETRYABLE)
@pytest.mark.parametrize("max_attempts", [1, 4])
def test_retryable_faults_are_retried_up_to_max_attempts_then_reported(
    driver, step, fault, max_attempts, pipelining
):
    sleeps: list[float] = []
    with FaultyServer(pipelining=pipelining, faults={step: [fault] * 50}) as server:
        report = _mailer(driver, server, max_attempts=max_attempts, sleeps=sleeps).notify(
            _notification(["ann@example.net"])
        )

    error = report.failed["ann@example.net"]
    assert error.retryable is True
    assert len(sleeps) == max_attempts - 1  # a wait before each retry, and no more
    assert server.connections <= max_attempts  # one kept connection, or one per attempt
    assert server.delivered == {}


@both_ways
@pytest.mark.parametrize("max_attempts", [1, 4])
def test_a_recipient_refused_for_now_is_retried_alone_up_to_max_attempts(
    driver, max_attempts, pipelining
):
    first, second = MEMBERS[:2]  # account holders: one envelope for both
    with FaultyServer(
        pipelining=pipelining, faults={"rcpt": ["ok", *["452 4.5.3 Too many"] * 10]}
    ) as server:
        report = _mailer(driver, server, max_attempts=max_attempts).notify(
            _notification([first, second])
        )

    assert report.accepted == (first,)
    assert report.refused[second].code == 452
    assert server.rcpt_attempts == {first: 1, second: max_attempts}
    assert server.delivered == {first: 1}
    assert_accounted_for(report, [first, second], server, max_attempts)


@both_ways
@pytest.mark.parametrize(
    ("step", "fault"),
    [
        ("greet", "554 5.3.2 No service"),
        ("mail", "554 5.7.1 Sender refused"),
        ("data", "554 5.6.0 No"),
        ("end", "554 5.6.0 Message refused"),
        ("end", DROP),
        ("end", LOST),
    ],
)
def test_permanent_faults_and_unconfirmed_ends_are_never_retried(driver, step, fault, pipelining):
    with FaultyServer(pipelining=pipelining, faults={step: [fault] * 5}) as server:
        report = _mailer(driver, server, max_attempts=5).notify(_notification(["ann@example.net"]))

    assert report.failed["ann@example.net"].retryable is False
    assert server.connections == 1
    assert_accounted_for(report, ["ann@example.net"], server, 1)


# --- slow replies near the timeout ---

TIMEOUT = 0.4


@both_ways
@pytest.mark.parametrize("step", ["greet", "ehlo", "mail", "rcpt", "data", "end"])
def test_a_slow_reply_within_the_timeout_is_waited_for(driver, step, pipelining):
    with FaultyServer(pipelining=pipelining, faults={step: [Slow(TIMEOUT / 3)]}) as server:
        report = _mailer(driver, server, timeout=TIMEOUT, max_attempts=1).notify(
            _notification(["ann@example.net"])
        )

    assert report.accepted == ("ann@example.net",)
    assert server.connections == 1


@both_ways
@pytest.mark.parametrize("step", ["greet", "ehlo", "mail", "rcpt", "data"])
def test_a_reply_slower_than_the_timeout_before_the_end_of_data_is_retried(
    driver, step, pipelining
):
    with FaultyServer(pipelining=pipelining, faults={step: [Slow(TIMEOUT + 1.0)]}) as server:
        report = _mailer(driver, server, timeout=TIMEOUT, max_attempts=2).notify(
            _notification(["ann@example.net"])
        )

    assert report.accepted == ("ann@example.net",)
    assert server.connections == 2
    assert server.delivered == {"ann@example.net": 1}


@both_ways
def test_a_reply_slower_than_the_timeout_after_the_end_of_data_is_never_resent(driver, pipelining):
    with FaultyServer(pipelining=pipelining, faults={"end": [Slow(TIMEOUT + 1.0)]}) as server:
        report = _mailer(driver, server, timeout=TIMEOUT, max_attempts=3).notify(
            _notification(["ann@example.net"])
        )

    error = report.failed["ann@example.net"]
    assert isinstance(error, nm.ConnectionFailed)
    assert error.retryable is False
    assert server.connections == 1
    assert_accounted_for(report, ["ann@example.net"], server, 1)
