"""verify against real servers: each failure lands on the form field to fix.

Every behaviour is pinned three ways (the ``verify`` fixture): through ``verify_smtp``,
through ``Mailer.verify`` on an ``SmtpTransport`` and through ``AsyncMailer.verify`` on
an ``AsyncSmtpTransport``, each given the same TLS context; all three give the same
``VerifyResult``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from typing import Protocol

import pytest

import notifymail as nm
from facades import Facade
from smtp_servers import free_port

USERS = {"robot": "s3cret-Passw0rd"}
SENDER = nm.SenderSettings(from_address="alerts@example.com")


class Verify(Protocol):
    def __call__(
        self,
        smtp: nm.SmtpSettings,
        *,
        autocorrect: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> nm.VerifyResult: ...


@pytest.fixture(params=["verify_smtp", "Mailer", "AsyncMailer"])
def verify(request: pytest.FixtureRequest) -> Verify:
    """``verify_smtp``, or a mailer's ``verify`` on an SMTP transport of its kind."""

    def through(
        smtp: nm.SmtpSettings,
        *,
        autocorrect: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> nm.VerifyResult:
        if request.param == "verify_smtp":
            return nm.verify_smtp(smtp, autocorrect=autocorrect, ssl_context=ssl_context)
        settings = nm.EmailSettings(sender=SENDER, smtp=smtp)
        if request.param == "Mailer":
            mailer = nm.Mailer(settings, transport=nm.SmtpTransport(smtp, ssl_context=ssl_context))
            return mailer.verify(autocorrect=autocorrect)
        transport = nm.AsyncSmtpTransport(smtp, ssl_context=ssl_context)
        return asyncio.run(
            nm.AsyncMailer(settings, transport=transport).verify(autocorrect=autocorrect)
        )

    return through


def wrong_host(reason: str) -> dict[str, str]:
    """Metabase's message on both fields, with the precise reason beside it."""
    return dict.fromkeys(("host", "port"), f"Wrong host or port ({reason})")


def test_working_settings_verify_without_sending_anything(
    smtp_server, server_tls, client_tls, verify
):
    server = smtp_server(starttls=server_tls, users=USERS)
    settings = server.settings(username="robot", password=USERS["robot"])

    result = verify(settings, ssl_context=client_tls)

    assert result == nm.VerifyResult(
        ok=True, errors={}, security=nm.Security.STARTTLS, corrected=False
    )
    assert server.handler.commands == ["EHLO", "STARTTLS", "EHLO", "AUTH", "QUIT"]
    assert server.handler.messages == []


def test_wrong_password_is_reported_on_username_and_password(
    smtp_server, server_tls, client_tls, verify
):
    server = smtp_server(starttls=server_tls, users=USERS)
    settings = server.settings(username="robot", password="wrong")

    result = verify(settings, ssl_context=client_tls)

    assert not result.ok
    assert dict(result.errors) == dict.fromkeys(
        ("username", "password"),
        "Wrong username or password "
        "(the server answered 535 5.7.8 Authentication credentials invalid)",
    )


def test_nothing_listening_is_reported_on_host_and_port(verify):
    settings = nm.SmtpSettings(host="127.0.0.1", port=free_port(), timeout=1.0)

    result = verify(settings)

    assert not result.ok
    assert dict(result.errors) == wrong_host("connection refused")
    assert result.security is nm.Security.NONE


def test_silent_server_is_reported_on_host_and_port(silent_server, verify):
    result = verify(silent_server().settings(timeout=0.3))

    assert dict(result.errors) == wrong_host("no answer within 0.3 s")


def test_untrusted_certificate_is_reported_on_security(smtp_server, server_tls, verify):
    server = smtp_server(implicit_tls=server_tls)

    result = verify(server.settings())  # the system store does not know the CA

    assert dict(result.errors) == {
        "security": "TLS certificate not trusted (unable to get local issuer certificate)"
    }


def test_missing_starttls_is_reported_on_security(smtp_server, client_tls, verify):
    server = smtp_server()

    result = verify(server.settings(security="starttls"), ssl_context=client_tls)

    assert dict(result.errors) == {"security": "Server does not offer STARTTLS"}
    assert "MAIL" not in server.handler.commands


def test_autocorrect_finds_the_mode_the_server_speaks(smtp_server, server_tls, client_tls, verify):
    server = smtp_server(starttls=server_tls, users=USERS)
    # SSL against a STARTTLS port: the handshake fails; STARTTLS, tried next, works.
    settings = server.settings(security="ssl", username="robot", password=USERS["robot"])

    result = verify(settings, autocorrect=True, ssl_context=client_tls)

    assert result == nm.VerifyResult(
        ok=True, errors={}, security=nm.Security.STARTTLS, corrected=True
    )


def test_autocorrect_tries_ssl_last(smtp_server, server_tls, client_tls, verify):
    server = smtp_server(implicit_tls=server_tls)
    # Plain SMTP, TLS and STARTTLS all wait for a greeting the TLS port never sends.
    settings = server.settings(security="none", timeout=0.2)

    result = verify(settings, autocorrect=True, ssl_context=client_tls)

    assert (result.ok, result.security, result.corrected) == (True, nm.Security.SSL, True)


def test_autocorrect_keeps_a_working_configured_mode(smtp_server, server_tls, client_tls, verify):
    server = smtp_server(implicit_tls=server_tls)

    result = verify(server.settings(), autocorrect=True, ssl_context=client_tls)

    assert (result.ok, result.security, result.corrected) == (True, nm.Security.SSL, False)


def test_autocorrect_reports_the_configured_modes_errors_when_nothing_works(
    smtp_server, client_tls, verify
):
    # Plain only, AUTH offered in plaintext: STARTTLS is missing, TLS would have to send
    # the password unencrypted, SSL fails its handshake.
    server = smtp_server(users=USERS, auth_require_tls=False)
    settings = server.settings(security="starttls", username="robot", password=USERS["robot"])

    result = verify(settings, autocorrect=True, ssl_context=client_tls)

    assert result == nm.VerifyResult(
        ok=False,
        errors={"security": "Server does not offer STARTTLS"},
        security=nm.Security.STARTTLS,
        corrected=False,
    )
    assert server.handler.logins == []


def test_tls_handshake_with_a_plain_server_is_reported_on_host_and_port(
    smtp_server, client_tls, verify
):
    server = smtp_server()

    result = verify(server.settings(security="ssl"), ssl_context=client_tls)

    assert dict(result.errors) == wrong_host(
        "the server does not speak TLS on connect; try starttls"
    )


def test_verify_result_is_immutable():
    result = nm.VerifyResult(
        ok=False, errors={"host": "x"}, security=nm.Security.NONE, corrected=False
    )

    with pytest.raises(dataclasses.FrozenInstanceError):
        result.ok = True  # type: ignore[misc]
    with pytest.raises(TypeError):
        result.errors["port"] = "y"  # type: ignore[index]


def test_mailer_verify_trusts_the_ca_its_smtp_transport_was_given(
    smtp_server, server_tls, client_tls, driver
):
    server = smtp_server(starttls=server_tls, users=USERS)
    smtp = server.settings(username="robot", password=USERS["robot"])
    settings = nm.EmailSettings(sender=SENDER, smtp=smtp)
    transport = driver.transport(smtp, ssl_context=client_tls)

    assert driver.mailer(settings, transport=transport).verify() == nm.VerifyResult(
        ok=True, errors={}, security=nm.Security.STARTTLS, corrected=False
    )
    assert not driver.mailer(settings).verify().ok  # the system trust store does not know the CA


def test_a_transport_with_nothing_to_check_verifies_the_settings_server(
    smtp_server, server_tls, ca_file, facade: Facade
):
    # A memory transport has no way to a server (its probe says False), so verify
    # checks the settings' server itself: the CA file in the settings, nothing else.
    server = smtp_server(starttls=server_tls, users=USERS)
    smtp = server.settings(username="robot", password=USERS["robot"])
    trusting = nm.EmailSettings(sender=SENDER, smtp=dataclasses.replace(smtp, cafile=str(ca_file)))
    transport = nm.MemoryTransport()

    trusted = facade.mailer(trusting, transport=transport).verify(autocorrect=True)
    untrusted = facade.mailer(
        nm.EmailSettings(sender=SENDER, smtp=smtp), transport=transport
    ).verify()

    assert trusted == nm.VerifyResult(
        ok=True, errors={}, security=nm.Security.STARTTLS, corrected=False
    )
    assert dict(untrusted.errors) == {
        "security": "TLS certificate not trusted (unable to get local issuer certificate)"
    }
    assert server.handler.commands[:5] == ["EHLO", "STARTTLS", "EHLO", "AUTH", "QUIT"]
    assert transport.outbox == []


def test_probe_logs_in_on_a_connection_of_its_own_and_sends_nothing(
    smtp_server, server_tls, client_tls, driver
):
    server = smtp_server(starttls=server_tls, users=USERS)
    smtp = server.settings(username="robot", password=USERS["robot"])
    transport = driver.transport(smtp, ssl_context=client_tls)

    assert transport.probe() is True
    with pytest.raises(nm.TlsError):  # asked to try SSL on the STARTTLS port
        transport.probe(nm.Security.SSL)
    assert server.handler.commands == ["EHLO", "STARTTLS", "EHLO", "AUTH", "QUIT"]
    assert server.handler.messages == []


def test_the_base_transports_have_nothing_to_check():
    assert nm.MemoryTransport().probe() is False
    assert asyncio.run(nm.AsyncMemoryTransport().probe(nm.Security.SSL)) is False
