"""The Mailer facade: composing, batching, retrying, throttling and reporting."""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Iterable, Mapping

import pytest

import notifymail as nm
from facades import Driven, Facade
from notifymail._delivery import Throttle
from notifymail.transport.memory import MemoryTransport

HOLDERS = ("ann@example.com", "bob@example.com", "cat@example.com")
OUTSIDERS = ("dee@partner.example", "eve@client.example")


class FakeClock:
    """Time that passes only when slept through; records every sleep.

    Safe to share by threads and tasks. ``last_read()`` is the last value the calling
    thread or task read (a context variable keeps it apart from the others'), which is
    how a test learns when the throttle (which reads the clock under its lock) admitted
    that thread's or task's recipients.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()
        self._reads: contextvars.ContextVar[float] = contextvars.ContextVar("read")

    def __call__(self) -> float:
        with self._lock:
            self._reads.set(self.now)
            return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds

    def last_read(self) -> float:
        return self._reads.get()


class ScriptedTransport(nm.Transport):
    """Refuses recipients by script: each address pops its next reply until none are left.

    Raises like a real transport when every recipient of an envelope is refused.
    """

    def __init__(self, script: Mapping[str, Iterable[nm.Reply]]) -> None:
        self.script = {address: list(replies) for address, replies in script.items()}
        self.envelopes: list[nm.Envelope] = []

    def deliver(self, envelope: nm.Envelope) -> nm.Delivery:
        self.envelopes.append(envelope)
        refused = {
            address: self.script[address].pop(0)
            for address in envelope.recipients
            if self.script.get(address)
        }
        if len(refused) == len(envelope.recipients):
            first = next(iter(refused.values()))
            error = nm.TemporaryFailure if first.is_transient else nm.PermanentFailure
            raise error(f"every recipient refused: {first}", reply=first, refused=refused)
        accepted = tuple(a for a in envelope.recipients if a not in refused)
        return nm.Delivery(envelope.message_id, accepted, refused)

    def received(self, address: str) -> int:
        return sum(address in e.recipients for e in self.envelopes)


class ClockedMemoryTransport(MemoryTransport):
    """Records, per envelope, when the throttle admitted it and how many recipients it had."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.admitted: list[tuple[float, int]] = []

    def deliver(self, envelope: nm.Envelope) -> nm.Delivery:
        self.admitted.append((self.clock.last_read(), len(envelope.recipients)))
        return super().deliver(envelope)


def settings(
    *,
    per_second: int | None = None,
    retry: nm.RetryPolicy | None = None,
    bcc: bool = True,
    per_message: int = 50,
) -> nm.EmailSettings:
    return nm.EmailSettings(
        sender=nm.SenderSettings(from_address="alerts@example.com", from_name="Alerts"),
        delivery=nm.DeliverySettings(
            bcc_enabled=bcc,
            max_recipients_per_message=per_message,
            max_recipients_per_second=per_second,
            retry=retry or nm.RetryPolicy(),
        ),
    )


def directory(*addresses: str) -> nm.InMemoryDirectory:
    return nm.InMemoryDirectory(nm.Person(address) for address in addresses)


def mailer_on(
    facade: Facade,
    transport: nm.Transport,
    clock: FakeClock,
    email_settings: nm.EmailSettings | None = None,
    holders: Iterable[str] = HOLDERS,
) -> Driven:
    return facade.mailer(
        email_settings or settings(),
        transport=transport,
        directory=directory(*holders),
        clock=clock,
        sleep=clock.sleep,
    )


def alert(*recipients: str) -> nm.Notification:
    return nm.Notification(
        list(recipients or (*HOLDERS, *OUTSIDERS)),
        "Revenue dropped",
        text="Revenue dropped 12%.",
        html="<p>Revenue dropped 12%.</p>",
    )


def max_in_any_window(admitted: list[tuple[float, int]]) -> int:
    """The most recipients admitted in any half-open one-second window."""
    return max(
        sum(count for when, count in admitted if start <= when < start + 1.0)
        for start, _ in admitted
    )


# --- notify: retries -----------------------------------------------------------------


def test_notify_after_two_temporary_failures_delivers_once_to_each_recipient(
    facade: Facade,
) -> None:
    clock = FakeClock()
    transport = MemoryTransport()
    transport.fail_next(nm.TemporaryFailure("451 try later"), times=2)
    report = mailer_on(facade, transport, clock).notify(alert())

    assert report.ok
    assert sorted(report.accepted) == sorted((*HOLDERS, *OUTSIDERS))
    delivered = [address for sent in transport.outbox for address in sent.recipients]
    assert sorted(delivered) == sorted((*HOLDERS, *OUTSIDERS))
    assert len(clock.sleeps) == 2


def test_retry_waits_grow_exponentially_within_the_jitter(facade: Facade) -> None:
    clock = FakeClock()
    transport = MemoryTransport()
    transport.fail_next(nm.ConnectionFailed("connection reset"), times=4)
    retry = nm.RetryPolicy(initial_interval=1.0, multiplier=2.0, jitter=0.1, max_interval=5.0)
    mailer_on(facade, transport, clock, settings(retry=retry)).notify(alert(OUTSIDERS[0]))

    expected = [1.0, 2.0, 4.0, 5.0]
    assert len(clock.sleeps) == 4
    for waited, base in zip(clock.sleeps, expected, strict=True):
        assert base * 0.9 <= waited <= min(base * 1.1, 5.0)


def test_retries_stop_at_max_attempts_and_the_recipients_fail(facade: Facade) -> None:
    clock = FakeClock()
    transport = MemoryTransport()
    error = nm.TemporaryFailure("451 try later", reply=nm.Reply(451, "try later"))
    transport.fail_next(error, times=10)
    mailer = mailer_on(facade, transport, clock, settings(retry=nm.RetryPolicy(max_attempts=3)))
    report = mailer.notify(alert(*HOLDERS))

    assert not report.ok
    assert report.accepted == ()
    assert set(report.failed) == set(HOLDERS)
    assert all(str(failure) == str(error) for failure in report.failed.values())
    assert transport.outbox == []
    assert len(clock.sleeps) == 2


def test_non_retryable_error_is_not_retried_and_other_envelopes_still_go(facade: Facade) -> None:
    clock = FakeClock()
    transport = MemoryTransport()
    transport.fail_next(nm.AuthenticationFailed("535 authentication failed"))
    report = mailer_on(facade, transport, clock).notify(alert())

    assert set(report.failed) == set(HOLDERS)
    assert isinstance(report.failed[HOLDERS[0]], nm.AuthenticationFailed)
    assert sorted(report.accepted) == sorted(OUTSIDERS)
    assert clock.sleeps == []


def test_message_possibly_delivered_after_data_is_not_sent_again(facade: Facade) -> None:
    clock = FakeClock()
    transport = MemoryTransport()
    lost = nm.ConnectionFailed("connection lost after DATA", retryable=False)
    transport.fail_next(lost)
    report = mailer_on(facade, transport, clock).notify(alert(*OUTSIDERS))

    assert set(report.failed) == {OUTSIDERS[0]}
    assert report.failed[OUTSIDERS[0]].retryable is False
    assert [sent.recipients for sent in transport.outbox] == [(OUTSIDERS[1],)]
    assert clock.sleeps == []


# --- notify: refusals ----------------------------------------------------------------


def test_refused_recipient_is_reported_and_the_others_delivered(facade: Facade) -> None:
    clock = FakeClock()
    transport = MemoryTransport()
    no_such_user = nm.Reply(550, "5.1.1 No such user")
    transport.refuse("bob@example.com", reply=no_such_user)
    report = mailer_on(facade, transport, clock).notify(alert())

    assert dict(report.refused) == {"bob@example.com": no_such_user}
    assert sorted(report.accepted) == sorted(set(HOLDERS + OUTSIDERS) - {"bob@example.com"})
    assert report.failed == {}
    assert not report.ok
    assert clock.sleeps == []  # a 5xx refusal is final


def test_temporary_refusal_is_retried_for_that_recipient_only(facade: Facade) -> None:
    clock = FakeClock()
    greylisted = nm.Reply(451, "4.7.1 Greylisted")
    transport = ScriptedTransport({"bob@example.com": [greylisted, greylisted]})
    report = mailer_on(facade, transport, clock).notify(alert(*HOLDERS))

    assert report.ok
    assert sorted(report.accepted) == sorted(HOLDERS)
    assert [e.recipients for e in transport.envelopes] == [
        HOLDERS,
        ("bob@example.com",),
        ("bob@example.com",),
    ]
    assert all(
        transport.received(address) == 1 for address in ("ann@example.com", "cat@example.com")
    )
    retry_message_ids = {e.message_id for e in transport.envelopes}
    assert len(retry_message_ids) == 1  # the same message, only fewer recipients


def test_recipient_still_refused_at_the_end_is_refused_with_the_last_reply(facade: Facade) -> None:
    clock = FakeClock()
    first, last = nm.Reply(451, "4.2.0 Mailbox busy"), nm.Reply(452, "4.2.2 Mailbox full")
    transport = ScriptedTransport({"bob@example.com": [first, first, last]})
    mailer = mailer_on(facade, transport, clock, settings(retry=nm.RetryPolicy(max_attempts=3)))
    report = mailer.notify(alert(*HOLDERS))

    assert dict(report.refused) == {"bob@example.com": last}
    assert set(report.accepted) == {"ann@example.com", "cat@example.com"}
    assert len(transport.envelopes) == 3


def test_every_recipient_is_in_exactly_one_outcome(facade: Facade) -> None:
    clock = FakeClock()
    later = nm.Reply(451, "4.2.0 later")
    transport = ScriptedTransport(
        {
            "bob@example.com": [nm.Reply(550, "5.1.1 no")],
            "cat@example.com": [later, later],
            OUTSIDERS[0]: [nm.Reply(554, "5.7.1 rejected")],
        }
    )
    mailer = mailer_on(facade, transport, clock, settings(retry=nm.RetryPolicy(max_attempts=2)))
    report = mailer.notify(alert())

    assert set(report.accepted) == {"ann@example.com", OUTSIDERS[1]}
    # An outsider alone in its envelope, refused by the server, is refused, not failed.
    assert dict(report.refused) == {
        "bob@example.com": nm.Reply(550, "5.1.1 no"),
        "cat@example.com": later,
        OUTSIDERS[0]: nm.Reply(554, "5.7.1 rejected"),
    }
    assert not report.failed
    outcomes = [*report.accepted, *report.refused, *report.failed]
    assert sorted(outcomes) == sorted((*HOLDERS, *OUTSIDERS))


# --- notify: before anything is sent --------------------------------------------------


def test_invalid_recipient_raises_before_anything_is_sent(facade: Facade) -> None:
    transport = MemoryTransport()
    mailer = mailer_on(facade, transport, FakeClock())
    with pytest.raises(nm.InvalidMessage, match="not an address"):
        mailer.notify(alert("ann@example.com", "not an address"))
    assert transport.outbox == []


def test_header_injection_raises_before_anything_is_sent(facade: Facade) -> None:
    transport = MemoryTransport()
    mailer = mailer_on(facade, transport, FakeClock())
    with pytest.raises(nm.InvalidMessage):
        mailer.notify(
            nm.Notification(
                ["ann@example.com"],
                "Hi",
                text="x",
                headers={"X-Report": "a\r\nBcc: evil@example.com"},
            )
        )
    assert transport.outbox == []


def test_notify_never_raises_a_delivery_error(facade: Facade) -> None:
    transport = MemoryTransport()
    transport.fail_next(nm.TlsError("certificate not trusted"), times=10)
    report = mailer_on(facade, transport, FakeClock()).notify(alert())
    assert set(report.failed) == set(HOLDERS + OUTSIDERS)


# --- notify: addressing ---------------------------------------------------------------


def test_account_holders_share_a_hidden_envelope_and_outsiders_get_their_own(
    facade: Facade,
) -> None:
    transport = MemoryTransport()
    mailer_on(facade, transport, FakeClock()).notify(alert())

    assert [sent.recipients for sent in transport.outbox] == [
        HOLDERS,
        (OUTSIDERS[0],),
        (OUTSIDERS[1],),
    ]
    hidden = transport.outbox[0]
    assert hidden.message["To"] == "undisclosed-recipients:;"
    assert all(address.encode() not in hidden.raw for address in HOLDERS)


def test_cc_mode_lists_account_holders_in_to(facade: Facade) -> None:
    transport = MemoryTransport()
    mailer_on(facade, transport, FakeClock(), settings(bcc=False)).notify(alert(*HOLDERS))
    [sent] = transport.outbox
    assert sorted(sent.to) == sorted(HOLDERS)


# --- throttle -------------------------------------------------------------------------


def test_throttle_holds_the_configured_rate_within_five_percent(facade: Facade) -> None:
    clock = FakeClock()
    transport = ClockedMemoryTransport(clock)
    outsiders = [f"user{i}@partner.example" for i in range(100)]
    report = mailer_on(facade, transport, clock, settings(per_second=10)).notify(alert(*outsiders))

    assert len(report.accepted) == 100
    assert max_in_any_window(transport.admitted) == 10
    counts = [sum(1 for when, _ in transport.admitted if k <= when < k + 1) for k in range(10)]
    assert counts == [10] * 10
    elapsed = transport.admitted[-1][0] - transport.admitted[0][0]
    # 100 recipients at 10 a second: ten full windows, the last starting 9 s after the first.
    assert 9.0 <= elapsed <= 9.0 * 1.05


def test_throttle_counts_recipients_not_envelopes(facade: Facade) -> None:
    clock = FakeClock()
    transport = ClockedMemoryTransport(clock)
    holders = [f"member{i}@example.com" for i in range(12)]
    mailer = mailer_on(facade, transport, clock, settings(per_second=4), holders=holders)
    mailer.notify(alert(*holders))

    assert [count for _, count in transport.admitted] == [4, 4, 4]
    assert [when for when, _ in transport.admitted] == [0.0, 1.0, 2.0]


def test_throttle_holds_across_threads() -> None:
    clock = FakeClock()
    transport = ClockedMemoryTransport(clock)
    mailer = mailer_on(Facade("blocking"), transport, clock, settings(per_second=5))

    def notify(thread: int) -> None:
        mailer.notify(alert(*(f"t{thread}-{i}@partner.example" for i in range(10))))

    threads = [threading.Thread(target=notify, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert len(transport.outbox) == 40
    assert max_in_any_window(transport.admitted) <= 5
    assert max(when for when, _ in transport.admitted) >= 7.0  # 40 recipients: 8 windows


def test_throttle_waits_for_an_empty_window_for_a_batch_above_the_rate() -> None:
    clock = FakeClock()
    throttle = Throttle(3)

    def admit(recipients: int) -> None:  # and hand over at once
        while (wait := throttle.reserve(recipients, clock)) > 0:
            clock.sleep(wait)
        throttle.finish(recipients, clock)

    admit(1)
    admit(5)
    assert clock.now == pytest.approx(1.0)
    admit(1)
    assert clock.now == pytest.approx(2.0)


def test_throttle_applies_to_send(facade: Facade) -> None:
    clock = FakeClock()
    transport = ClockedMemoryTransport(clock)
    mailer = mailer_on(facade, transport, clock, settings(per_second=2))
    for _ in range(3):
        mailer.send(nm.Message(["ann@example.com", "bob@example.com"], "Reset", text="x"))
    assert [when for when, _ in transport.admitted] == [0.0, 1.0, 2.0]


# --- send -----------------------------------------------------------------------------


def reset_message(**extra: object) -> nm.Message:
    return nm.Message(["ann@example.com"], "Reset your password", text="Click here", **extra)  # type: ignore[arg-type]


def test_send_is_one_envelope_with_headers_as_given_and_no_bcc_header(facade: Facade) -> None:
    transport = MemoryTransport()
    mailer = mailer_on(facade, transport, FakeClock(), settings(per_message=1))
    report = mailer.send(
        nm.Message(
            ["ann@example.com"],
            "Invitation",
            text="Join us",
            cc=["bob@example.com"],
            bcc=["audit@example.com"],
        )
    )

    assert report.ok
    [sent] = transport.outbox
    assert sent.recipients == ("ann@example.com", "bob@example.com", "audit@example.com")
    assert sent.to == ("ann@example.com",)
    assert sent.cc == ("bob@example.com",)
    assert b"audit@example.com" not in sent.raw
    assert "Bcc" not in sent.message


def test_send_retries_then_raises_the_delivery_error(facade: Facade) -> None:
    clock = FakeClock()
    transport = MemoryTransport()
    error = nm.ConnectionFailed("connection refused")
    transport.fail_next(error, times=6)
    with pytest.raises(nm.ConnectionFailed) as raised:
        mailer_on(facade, transport, clock).send(reset_message())
    assert str(raised.value) == "connection refused"
    assert len(clock.sleeps) == 5  # six attempts in all
    assert transport.outbox == []


def test_send_succeeds_when_a_retry_does(facade: Facade) -> None:
    clock = FakeClock()
    transport = MemoryTransport()
    transport.fail_next(nm.TemporaryFailure("421 too busy"), times=2)
    report = mailer_on(facade, transport, clock).send(reset_message())
    assert report.accepted == ("ann@example.com",)
    assert len(transport.outbox) == 1


def test_send_reports_a_partial_refusal_instead_of_raising(facade: Facade) -> None:
    transport = MemoryTransport()
    transport.refuse("bob@example.com")
    report = mailer_on(facade, transport, FakeClock()).send(
        nm.Message(["ann@example.com", "bob@example.com"], "Hi", text="x")
    )
    assert report.accepted == ("ann@example.com",)
    assert set(report.refused) == {"bob@example.com"}


def test_send_does_not_retry_a_permanent_failure(facade: Facade) -> None:
    clock = FakeClock()
    transport = MemoryTransport()
    transport.fail_next(nm.PermanentFailure("554 no", reply=nm.Reply(554, "no")))
    with pytest.raises(nm.PermanentFailure):
        mailer_on(facade, transport, clock).send(reset_message())
    assert clock.sleeps == []


def test_send_uses_the_managed_from_address_on_cloud(facade: Facade) -> None:
    cloud = nm.EmailSettings(
        deployment=nm.Deployment(hosting=nm.Hosting.CLOUD, plan=nm.Plan.STARTER),
        sender=nm.SenderSettings(from_address="me@customer.example", from_name="Acme"),
        managed=nm.ManagedService(
            smtp=nm.SmtpSettings(host="smtp.operator.example", security=nm.Security.STARTTLS),
            from_address="noreply@operator.example",
        ),
    )
    transport = MemoryTransport()
    facade.mailer(cloud, transport=transport).send(reset_message())
    [sent] = transport.outbox
    assert sent.envelope.sender == "noreply@operator.example"
    assert sent.message["From"].addresses[0].addr_spec == "noreply@operator.example"
    assert sent.message["From"].addresses[0].display_name == "Acme"


def test_send_test_email_says_email_is_set_up(facade: Facade) -> None:
    transport = MemoryTransport()
    report = mailer_on(facade, transport, FakeClock()).send_test_email("ann@example.com")
    assert report.ok
    [sent] = transport.outbox
    assert sent.recipients == ("ann@example.com",)
    assert sent.text is not None
    assert "set up" in sent.text
    assert sent.html is not None
    assert "set up" in sent.html


# --- construction, policy, verify, context --------------------------------------------


@pytest.mark.parametrize("mailer_class", [nm.Mailer, nm.AsyncMailer])
def test_mailer_without_a_transport_or_server_names_the_smtp_setting(
    mailer_class: type[nm.Mailer | nm.AsyncMailer],
) -> None:
    with pytest.raises(nm.ConfigError, match="smtp") as raised:
        mailer_class(settings())
    assert raised.value.field == "smtp"


def test_mailer_without_a_transport_builds_an_smtp_transport_without_connecting() -> None:
    from notifymail.transport.smtp import SmtpTransport

    with_server = nm.EmailSettings(
        sender=nm.SenderSettings(from_address="alerts@example.com"),
        smtp=nm.SmtpSettings(host="127.0.0.1", port=9),
    )
    assert isinstance(nm.Mailer(with_server).transport, SmtpTransport)


def test_verify_without_a_server_is_a_config_error(facade: Facade) -> None:
    mailer = facade.mailer(settings(), transport=MemoryTransport())
    with pytest.raises(nm.ConfigError, match="smtp"):
        mailer.verify()


def test_check_recipients_uses_the_mailer_settings_and_directory(facade: Facade) -> None:
    pro = nm.EmailSettings(
        deployment=nm.Deployment(plan=nm.Plan.PRO),
        sender=nm.SenderSettings(from_address="alerts@example.com"),
        recipients=nm.RecipientPolicy(approved_domains=("partner.example",)),
    )
    mailer = facade.mailer(pro, transport=MemoryTransport(), directory=directory(*HOLDERS))
    creator = nm.Person("ann@example.com")
    mailer.check_recipients(creator, ["bob@example.com", "dee@partner.example"])
    with pytest.raises(nm.RecipientNotAllowed) as raised:
        mailer.check_recipients(creator, ["eve@client.example"])
    assert set(raised.value.refused) == {"eve@client.example"}
    mailer.check_recipients(creator, ["eve@client.example"], existing=["eve@client.example"])


def test_suggest_recipients_uses_the_mailer_directory(facade: Facade) -> None:
    people = [
        nm.Person("zed@example.com", last_name="Zed"),
        nm.Person("amy@example.com", last_name="Amy"),
    ]
    mailer = facade.mailer(
        settings(), transport=MemoryTransport(), directory=nm.InMemoryDirectory(people)
    )
    suggested = mailer.suggest_recipients(people[0])
    assert [person.email for person in suggested] == ["amy@example.com", "zed@example.com"]


class CountingTransport(MemoryTransport):
    def __init__(self) -> None:
        super().__init__()
        self.opened = 0
        self.closed = 0

    def open(self) -> None:
        self.opened += 1

    def close(self) -> None:
        self.closed += 1


def test_one_connection_serves_every_send_inside_the_with_block(facade: Facade) -> None:
    transport = CountingTransport()
    mailer = mailer_on(facade, transport, FakeClock())

    def inside(mailer: Driven) -> None:
        mailer.send(reset_message())
        mailer.notify(alert())
        assert transport.closed == 0

    mailer.within(inside)
    assert (transport.opened, transport.closed) == (1, 1)
    assert len(transport.outbox) == 4


def test_notify_logs_a_summary_without_the_password(
    facade: Facade, caplog: pytest.LogCaptureFixture
) -> None:
    with_password = nm.EmailSettings(
        sender=nm.SenderSettings(from_address="alerts@example.com"),
        smtp=nm.SmtpSettings(host="127.0.0.1", username="user", password="hunter2-secret"),
    )
    transport = MemoryTransport()
    transport.refuse("bob@example.com")
    mailer = facade.mailer(with_password, transport=transport, directory=directory(*HOLDERS))
    with caplog.at_level(logging.DEBUG, logger="notifymail"):
        mailer.notify(alert())
    summary = [
        r for r in caplog.records if r.name == "notifymail.mailer" and r.levelno == logging.INFO
    ]
    assert len(summary) == 1
    assert "4 accepted, 1 refused, 0 failed" in summary[0].getMessage()
    assert "hunter2" not in caplog.text
    assert "hunter2" not in repr(mailer.mailer)


def test_delivery_report_is_ok_only_when_nothing_was_refused_or_failed() -> None:
    assert nm.DeliveryReport((), ("ann@example.com",), {}, {}).ok
    assert not nm.DeliveryReport((), (), {"ann@example.com": nm.Reply(550, "no")}, {}).ok
    assert not nm.DeliveryReport((), (), {}, {"ann@example.com": nm.ConnectionFailed("x")}).ok


def test_recipient_the_memory_transport_keeps_greylisting_ends_refused(facade: Facade) -> None:
    clock = FakeClock()
    transport = MemoryTransport()
    greylisted = nm.Reply(451, "4.7.1 Greylisted")
    transport.refuse("bob@example.com", reply=greylisted)
    report = mailer_on(facade, transport, clock).notify(alert(*HOLDERS))

    assert dict(report.refused) == {"bob@example.com": greylisted}
    assert report.failed == {}
    assert len(clock.sleeps) == 5  # six attempts for bob in all
    assert [sent.recipients for sent in transport.outbox] == [
        ("ann@example.com", "cat@example.com")
    ]


class UnreachableOnceTransport(CountingTransport):
    def open(self) -> None:
        super().open()
        if self.opened == 1:
            raise nm.ConnectionFailed("connection refused")


def test_a_with_block_whose_connection_fails_at_entry_still_delivers(facade: Facade) -> None:
    transport = UnreachableOnceTransport()
    mailer = mailer_on(facade, transport, FakeClock())
    reports: list[nm.DeliveryReport] = []
    mailer.within(lambda inside: reports.append(inside.notify(alert(*OUTSIDERS))))
    [report] = reports
    assert report.ok
    assert len(transport.outbox) == 2
    assert transport.opened - 1 == transport.closed  # every open that worked was closed


def test_send_raises_when_its_only_recipient_is_refused(facade: Facade) -> None:
    transport = MemoryTransport()
    transport.refuse("ann@example.com")
    mailer = mailer_on(facade, transport, FakeClock())
    with pytest.raises(nm.PermanentFailure) as info:
        mailer.send(nm.Message(to=["ann@example.com"], subject="Reset", text="Reset it"))
    assert dict(info.value.refused) == {"ann@example.com": nm.Reply(550, "5.1.1 No such user")}
    assert transport.outbox == []


def test_with_block_runs_on_when_the_server_is_down_and_sends_connect_on_their_own(
    facade: Facade,
) -> None:
    class DownThenUp(MemoryTransport):
        def __init__(self) -> None:
            super().__init__()
            self.opens = 0

        def open(self) -> None:
            self.opens += 1
            if self.opens == 1:
                raise nm.ConnectionFailed("connection refused")

    transport = DownThenUp()
    mailer = mailer_on(facade, transport, FakeClock())
    reports: list[nm.DeliveryReport] = []
    mailer.within(lambda inside: reports.append(inside.notify(alert(*HOLDERS))))
    [report] = reports
    assert report.ok
    assert transport.opens == 2
    assert mailer.mailer.transport._open_count == 0
