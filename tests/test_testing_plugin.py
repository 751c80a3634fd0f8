"""The pytest plugin: fixtures a host's tests get just by installing notifymail."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

import notifymail as nm

pytest_plugins = ["pytester"]

HOST_TESTS = """
import time

import notifymail as nm


def alert(*recipients):
    return nm.Notification(list(recipients), "Disk full", text="The disk is full.")


def test_sends_one_alert(mailer, mail_outbox):
    mailer.notify(alert("ops@example.com"))
    assert [sent.to for sent in mail_outbox] == [("ops@example.com",)]


def test_next_test_sees_an_empty_outbox(mail_outbox):
    assert mail_outbox == []


def test_retries_cost_no_real_time(mailer, mail_transport, mail_outbox):
    mail_transport.fail_next(nm.TemporaryFailure("451 try later"), times=5)
    started = time.monotonic()
    report = mailer.notify(alert("ops@example.com"))
    assert report.ok
    assert len(mail_outbox) == 1
    assert time.monotonic() - started < 1.0


def test_expects_mail_that_was_never_sent(mail_outbox):
    assert len(mail_outbox) == 1
"""


def test_host_tests_get_a_fresh_outbox_per_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_host=HOST_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider")
    # The last host test expects mail that was never sent: the outbox is not vacuous.
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*test_expects_mail_that_was_never_sent*"])


def test_host_overrides_the_settings_in_its_conftest(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest
        import notifymail as nm

        @pytest.fixture
        def notifymail_settings():
            return nm.EmailSettings(sender=nm.SenderSettings(from_address="bi@host.example"))

        @pytest.fixture
        def notifymail_directory():
            return nm.InMemoryDirectory([nm.Person("a@host.example"), nm.Person("b@host.example")])
        """
    )
    pytester.makepyfile(
        test_host="""
        import notifymail as nm

        def test_uses_host_settings_and_people(mailer, mail_outbox):
            mailer.notify(nm.Notification(["a@host.example", "b@host.example"], "Hi", text="x"))
            [sent] = mail_outbox
            assert sent.envelope.sender == "bi@host.example"
            assert sent.recipients == ("a@host.example", "b@host.example")
            assert sent.message["To"] == "undisclosed-recipients:;"
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_plugin_is_registered_through_the_entry_point(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.has_plugin("notifymail")


def test_mailer_fixture_delivers_into_mail_outbox(
    mailer: nm.Mailer, mail_transport: nm.MemoryTransport, mail_outbox: list[nm.Sent]
) -> None:
    assert mailer.transport is mail_transport
    assert mail_outbox is mail_transport.outbox
    report = mailer.send_test_email("you@example.com")
    assert report.accepted == ("you@example.com",)
    assert [sent.envelope.sender for sent in mail_outbox] == ["notifications@example.com"]


def test_async_mailer_fixture_delivers_into_mail_outbox_without_a_running_loop(
    async_mailer: nm.AsyncMailer,
    async_mail_transport: nm.AsyncMemoryTransport,
    mail_outbox: list[nm.Sent],
) -> None:
    assert async_mailer.transport is async_mail_transport
    assert async_mail_transport.outbox is mail_outbox
    report = asyncio.run(async_mailer.send_test_email("you@example.com"))
    assert report.accepted == ("you@example.com",)
    assert [sent.envelope.sender for sent in mail_outbox] == ["notifications@example.com"]


ASYNC_HOST_TESTS = """
import asyncio
import time

import notifymail as nm


def test_async_retries_cost_no_real_time(async_mailer, async_mail_transport, mail_outbox):
    async_mail_transport.fail_next(nm.TemporaryFailure("451 try later"), times=5)
    started = time.monotonic()
    report = asyncio.run(
        async_mailer.notify(nm.Notification(["ops@example.com"], "Disk full", text="Full."))
    )
    assert report.ok
    assert [sent.to for sent in mail_outbox] == [("ops@example.com",)]
    assert time.monotonic() - started < 1.0


def test_both_mailers_fill_one_outbox(mailer, async_mailer, mail_outbox):
    mailer.send_test_email("a@example.com")
    asyncio.run(async_mailer.send_test_email("b@example.com"))
    assert [sent.recipients for sent in mail_outbox] == [("a@example.com",), ("b@example.com",)]
"""


def test_host_tests_get_an_async_mailer_on_the_same_outbox(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_async_host=ASYNC_HOST_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_default_settings_are_self_hosted_oss(notifymail_settings: nm.EmailSettings) -> None:
    assert notifymail_settings.deployment == nm.Deployment()
    assert notifymail_settings.active_sender.from_address == "notifications@example.com"
    assert notifymail_settings.active_smtp is None


def test_importing_notifymail_imports_neither_pytest_nor_the_plugin() -> None:
    code = (
        "import sys, notifymail; "
        "print('pytest' in sys.modules, 'notifymail.testing' in sys.modules)"
    )
    result = subprocess.run(  # noqa: S603 - a fixed command line
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.split() == ["False", "False"]


def test_the_mailer_has_no_suppression_list_unless_the_host_gives_one(
    mailer: nm.Mailer, notifymail_suppressions: nm.Suppressions | None
) -> None:
    assert notifymail_suppressions is None
    assert mailer.suppressions is None


def test_host_gives_the_mailer_a_suppression_list_in_its_conftest(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(
        """
        import pytest
        import notifymail as nm

        @pytest.fixture
        def notifymail_suppressions():
            return nm.InMemorySuppressions()
        """
    )
    pytester.makepyfile(
        test_host="""
        import notifymail as nm

        def test_an_unsubscribed_person_gets_no_alert(mailer, notifymail_suppressions, mail_outbox):
            notifymail_suppressions.add("b@host.example", "unsubscribed")
            report = mailer.notify(nm.Notification(["a@host.example", "b@host.example"], "Hi", text="x"))
            assert report.suppressed == ("b@host.example",)
            assert [sent.recipients for sent in mail_outbox] == [("a@host.example",)]
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
