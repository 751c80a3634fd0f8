"""SmtpTransport and AsyncSmtpTransport (the ``driver`` fixture runs each test with both)
against real aiosmtpd servers on 127.0.0.1; every check is server-side."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
import trustme

import notifymail as nm
from smtp_servers import free_port, make_envelope, server_context

PASSWORD = "s3cret-Passw0rd"
USERS = {"robot": PASSWORD}


# --- security modes ---


def test_none_sends_in_plaintext_even_when_starttls_is_offered(driver, smtp_server, server_tls):
    server = smtp_server(starttls=server_tls)
    transport = driver.transport(server.settings(security=nm.Security.NONE))

    delivery = transport.send(make_envelope())

    assert delivery.accepted == ("ann@example.com",)
    assert "STARTTLS" not in server.handler.commands
    assert [message.tls for message in server.handler.messages] == [False]


def test_ssl_delivers_over_tls_from_the_first_byte(driver, smtp_server, server_tls, client_tls):
    server = smtp_server(implicit_tls=server_tls, users=USERS)
    settings = server.settings(username="robot", password=PASSWORD)

    driver.transport(settings, ssl_context=client_tls).send(make_envelope())

    assert server.handler.commands[0] == "EHLO"
    assert "STARTTLS" not in server.handler.commands
    assert [message.tls for message in server.handler.messages] == [True]
    assert [login.tls for login in server.handler.logins] == [True]


def test_starttls_upgrades_then_says_ehlo_again_before_auth(
    driver, smtp_server, server_tls, client_tls
):
    server = smtp_server(starttls=server_tls, users=USERS)
    settings = server.settings(username="robot", password=PASSWORD)

    driver.transport(settings, ssl_context=client_tls).send(make_envelope())

    assert server.handler.commands[:4] == ["EHLO", "STARTTLS", "EHLO", "AUTH"]
    assert [message.tls for message in server.handler.messages] == [True]


def test_tls_mode_upgrades_when_the_server_offers_starttls(
    driver, smtp_server, server_tls, client_tls
):
    server = smtp_server(starttls=server_tls)

    driver.transport(server.settings(security="tls"), ssl_context=client_tls).send(make_envelope())

    assert "STARTTLS" in server.handler.commands
    assert [message.tls for message in server.handler.messages] == [True]


def test_starttls_required_sends_nothing_to_a_server_without_it(driver, smtp_server, client_tls):
    # The server offers AUTH in plaintext, so a careless client would log in.
    server = smtp_server(users=USERS, auth_require_tls=False)
    settings = server.settings(security="starttls", username="robot", password=PASSWORD)

    with pytest.raises(nm.TlsError, match="does not offer STARTTLS") as caught:
        driver.transport(settings, ssl_context=client_tls).send(make_envelope())

    assert caught.value.retryable is False
    assert server.handler.commands == ["EHLO"]
    assert server.handler.logins == []
    assert server.handler.messages == []


def test_tls_mode_without_starttls_sends_in_plaintext_only_without_credentials(
    driver, smtp_server, client_tls, caplog
):
    server = smtp_server()
    transport = driver.transport(server.settings(security="tls"), ssl_context=client_tls)

    with caplog.at_level(logging.WARNING, logger=driver.logger):
        transport.send(make_envelope())

    assert [message.tls for message in server.handler.messages] == [False]
    warnings = [r for r in caplog.records if r.name == driver.logger]
    assert len(warnings) == 1
    assert "does not offer STARTTLS" in warnings[0].getMessage()


def test_tls_mode_without_starttls_never_sends_credentials(driver, smtp_server, client_tls):
    server = smtp_server(users=USERS, auth_require_tls=False)
    settings = server.settings(security="tls", username="robot", password=PASSWORD)

    with pytest.raises(nm.TlsError, match="never sent unencrypted"):
        driver.transport(settings, ssl_context=client_tls).send(make_envelope())

    assert "AUTH" not in server.handler.commands
    assert server.handler.logins == []
    assert server.handler.messages == []


def test_none_with_credentials_warns_each_time_it_authenticates_in_plaintext(
    driver, smtp_server, caplog
):
    server = smtp_server(users=USERS, auth_require_tls=False)
    transport = driver.transport(server.settings(username="robot", password=PASSWORD))

    with caplog.at_level(logging.WARNING, logger=driver.logger):
        transport.send(make_envelope())
        transport.send(make_envelope())

    assert [login.tls for login in server.handler.logins] == [False, False]
    plaintext = [r for r in caplog.records if "without encryption" in r.getMessage()]
    assert len(plaintext) == 2
    assert len(server.handler.messages) == 2


# --- certificates ---


def test_certificate_from_an_unknown_ca_is_refused(driver, smtp_server, server_tls):
    server = smtp_server(starttls=server_tls, users=USERS)
    settings = server.settings(username="robot", password=PASSWORD)

    with pytest.raises(nm.TlsError, match="not trusted") as caught:
        driver.transport(settings).send(make_envelope())  # system trust store only

    assert caught.value.retryable is False
    assert server.handler.logins == []
    assert server.handler.messages == []


def test_certificate_for_another_host_name_is_refused(driver, smtp_server, tls_ca, client_tls):
    server = smtp_server(implicit_tls=server_context(tls_ca, "mail.other.example"))

    with pytest.raises(nm.TlsError, match="not trusted"):
        driver.transport(server.settings(), ssl_context=client_tls).send(make_envelope())

    assert server.handler.messages == []


def test_cafile_setting_trusts_a_private_ca(driver, smtp_server, server_tls, ca_file):
    server = smtp_server(implicit_tls=server_tls)

    driver.transport(server.settings(cafile=str(ca_file))).send(make_envelope())

    assert len(server.handler.messages) == 1


@pytest.mark.parametrize("content", [None, b"not a certificate\n"])
def test_cafile_that_cannot_be_loaded_is_a_config_error(driver, tmp_path: Path, content):
    cafile = tmp_path / "ca.pem"
    if content is not None:
        cafile.write_bytes(content)
    settings = nm.SmtpSettings(host="127.0.0.1", security="ssl", cafile=str(cafile))

    with pytest.raises(nm.ConfigError, match="cafile") as caught:
        driver.transport(settings)

    assert caught.value.field == "cafile"


def test_a_given_ssl_context_replaces_the_default(driver, smtp_server, server_tls):
    other = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    trustme.CA().configure_trust(other)
    server = smtp_server(implicit_tls=server_tls)

    with pytest.raises(nm.TlsError):
        driver.transport(server.settings(), ssl_context=other).send(make_envelope())


# --- authentication ---


def test_wrong_password_is_authentication_failed_with_the_reply(
    driver, smtp_server, server_tls, client_tls
):
    server = smtp_server(starttls=server_tls, users=USERS)
    settings = server.settings(username="robot", password="wrong-password")

    with pytest.raises(nm.AuthenticationFailed) as caught:
        driver.transport(settings, ssl_context=client_tls).send(make_envelope())

    assert caught.value.reply is not None
    assert caught.value.reply.code == 535
    assert caught.value.retryable is False
    assert "MAIL" not in server.handler.commands


def test_credentials_without_auth_offered_is_authentication_failed(
    driver, smtp_server, server_tls, client_tls
):
    server = smtp_server(starttls=server_tls)
    settings = server.settings(username="robot", password=PASSWORD)

    with pytest.raises(nm.AuthenticationFailed, match="does not offer AUTH"):
        driver.transport(settings, ssl_context=client_tls).send(make_envelope())

    assert "MAIL" not in server.handler.commands


def test_password_never_appears_in_log_records_or_errors(
    driver, smtp_server, server_tls, client_tls, caplog
):
    plain = smtp_server(users=USERS, auth_require_tls=False)
    secure = smtp_server(starttls=server_tls, users={"robot": "another-Passw0rd"})
    caplog.set_level(logging.DEBUG)

    driver.transport(plain.settings(username="robot", password=PASSWORD)).send(make_envelope())
    with pytest.raises(nm.AuthenticationFailed) as caught:
        driver.transport(
            secure.settings(username="robot", password=PASSWORD), ssl_context=client_tls
        ).send(make_envelope())

    texts = [record.getMessage() for record in caplog.records]
    assert any("robot" in text for text in texts)  # the records are there to search
    assert not [text for text in texts if PASSWORD in text]
    assert PASSWORD not in str(caught.value)
    assert PASSWORD not in repr(caught.value)
    assert PASSWORD not in str(caught.value.reply)


# --- timeouts and broken connections ---


def test_server_that_never_greets_fails_to_connect_within_the_timeout(driver, silent_server):
    server = silent_server()
    start = time.monotonic()

    with pytest.raises(nm.ConnectionFailed, match="did not answer") as caught:
        driver.transport(server.settings(timeout=0.5)).send(make_envelope())

    assert time.monotonic() - start < 0.5 + 0.4
    assert caught.value.retryable is True


def test_server_silent_after_its_greeting_is_a_temporary_failure(driver, silent_server):
    server = silent_server(greeting=b"220 mail.test ESMTP\r\n")
    start = time.monotonic()

    with pytest.raises(nm.TemporaryFailure, match="stopped answering") as caught:
        driver.transport(server.settings(timeout=0.5)).send(make_envelope())

    assert time.monotonic() - start < 0.5 + 0.4
    assert caught.value.retryable is True


def test_refused_connection_is_a_retryable_connection_failure(driver):
    settings = nm.SmtpSettings(host="127.0.0.1", port=free_port(), timeout=1.0)

    with pytest.raises(nm.ConnectionFailed) as caught:
        driver.transport(settings).send(make_envelope())

    assert caught.value.retryable is True


def test_one_connection_serves_every_message_of_send_many(driver, smtp_server):
    server = smtp_server()
    envelopes = [make_envelope(subject=f"n{n}") for n in range(3)]

    deliveries = driver.transport(server.settings()).send_many(envelopes)

    assert [d.message_id for d in deliveries] == [e.message_id for e in envelopes]
    assert server.handler.connections == 1
    assert server.handler.commands.count("EHLO") == 1
    assert len(server.handler.messages) == 3


@pytest.mark.parametrize("drop_reply", [None, "421 4.4.2 Idle timeout, closing"])
def test_server_dropping_the_kept_connection_between_messages_loses_none_and_doubles_none(
    driver, smtp_server, drop_reply
):
    server = smtp_server()
    server.handler.drop_after = 1
    server.handler.drop_reply = drop_reply
    envelopes = [make_envelope(subject=f"n{n}") for n in range(3)]

    driver.transport(server.settings()).send_many(envelopes)

    received = [m.content for m in server.handler.messages]
    assert received == [e.raw for e in envelopes]
    assert server.handler.connections == 3


@pytest.mark.parametrize("how", ["close", "silence"])
def test_reply_lost_after_end_of_data_is_never_sent_again(driver, smtp_server, how):
    server = smtp_server()
    server.handler.lose_data_reply = how
    first, second = make_envelope(subject="first"), make_envelope(subject="second")
    transport = driver.transport(server.settings(timeout=0.5))

    with transport:
        with pytest.raises(nm.ConnectionFailed, match="not sent again") as caught:
            transport.send(first)
        server.handler.lose_data_reply = None
        transport.send(second)

    assert caught.value.retryable is False
    assert [m.content for m in server.handler.messages] == [first.raw, second.raw]
    assert server.handler.connections == 2  # the broken connection was not reused


# --- replies ---


def test_partial_refusal_reports_each_refused_recipient_with_its_reply(driver, smtp_server):
    server = smtp_server()
    server.handler.refuse["bob@example.com"] = "550 5.1.1 No such user"
    envelope = make_envelope(recipients=("ann@example.com", "bob@example.com", "cy@example.com"))

    delivery = driver.transport(server.settings()).send(envelope)

    assert delivery.accepted == ("ann@example.com", "cy@example.com")
    assert dict(delivery.refused) == {"bob@example.com": nm.Reply(550, "5.1.1 No such user")}
    assert not delivery.ok
    assert server.handler.messages[0].recipients == ("ann@example.com", "cy@example.com")


@pytest.mark.parametrize(
    ("first", "second", "error"),
    [
        ("450 4.2.1 Mailbox busy", "550 5.1.1 No such user", nm.TemporaryFailure),
        ("550 5.1.1 No such user", "450 4.2.1 Mailbox busy", nm.PermanentFailure),
    ],
)
def test_every_recipient_refused_fails_by_the_first_refusal_and_resets(
    driver, smtp_server, first, second, error
):
    server = smtp_server()
    server.handler.refuse.update({"ann@example.com": first, "bob@example.com": second})
    transport = driver.transport(server.settings())

    with transport:
        with pytest.raises(error) as caught:
            transport.send(make_envelope(recipients=("ann@example.com", "bob@example.com")))
        transport.send(make_envelope(recipients=("cy@example.com",)))

    assert str(caught.value.reply) == first
    assert {a: str(r) for a, r in caught.value.refused.items()} == {
        "ann@example.com": first,
        "bob@example.com": second,
    }
    assert "DATA" in server.handler.commands
    assert server.handler.commands.index("RSET") < server.handler.commands.index("DATA")
    assert server.handler.connections == 1
    assert [m.recipients for m in server.handler.messages] == [("cy@example.com",)]


@pytest.mark.parametrize(
    ("reply", "error", "retryable"),
    [
        ("451 4.3.0 Try again later", nm.TemporaryFailure, True),
        ("421 4.3.2 Shutting down", nm.TemporaryFailure, True),
        ("554 5.6.0 Message rejected", nm.PermanentFailure, False),
    ],
)
def test_refusal_at_the_end_of_data_maps_by_code_class(
    driver, smtp_server, reply, error, retryable
):
    server = smtp_server()
    server.handler.data_replies.append(reply)

    with pytest.raises(error) as caught:
        driver.transport(server.settings()).send(make_envelope())

    assert str(caught.value.reply) == reply
    assert caught.value.retryable is retryable
    assert server.handler.messages == []


def test_refused_sender_is_an_error_with_the_reply(driver, smtp_server):
    server = smtp_server()
    server.handler.mail_reply = "553 5.7.1 Sender not allowed"

    with pytest.raises(nm.PermanentFailure) as caught:
        driver.transport(server.settings()).send(make_envelope())

    assert caught.value.reply == nm.Reply(553, "5.7.1 Sender not allowed")
    assert "RCPT" not in server.handler.commands


# --- what goes on the wire ---


def test_non_ascii_local_part_uses_smtputf8_when_offered(driver, smtp_server):
    server = smtp_server(smtputf8=True)
    envelope = make_envelope(recipients=("jörg@example.com",))

    delivery = driver.transport(server.settings()).send(envelope)

    assert delivery.accepted == ("jörg@example.com",)
    received = server.handler.messages[0]
    assert "SMTPUTF8" in received.mail_options
    assert received.recipients == ("jörg@example.com",)
    assert received.content == envelope.raw


def test_non_ascii_local_part_fails_before_mail_from_without_smtputf8(driver, smtp_server):
    server = smtp_server(smtputf8=False)

    with pytest.raises(nm.PermanentFailure, match="needs SMTPUTF8, which the server"):
        driver.transport(server.settings()).send(make_envelope(recipients=("jörg@example.com",)))

    assert "MAIL" not in server.handler.commands
    assert server.handler.messages == []


def test_a_reply_to_needing_smtputf8_fails_cleanly_without_the_extension(driver, smtp_server):
    server = smtp_server(smtputf8=False)
    sender = nm.SenderSettings(from_address="alerts@example.com", reply_to=("jörg@example.com",))
    settings = nm.EmailSettings(sender=sender, smtp=server.settings())
    mailer = driver.mailer(settings, sleep=lambda seconds: None)
    message = nm.Message(to=["ann@example.com"], subject="Reset", text="Reset it.")

    with pytest.raises(nm.PermanentFailure, match="an address in the headers needs SMTPUTF8"):
        mailer.send(message)
    report = mailer.notify(nm.Notification(["ann@example.com"], "Alert", text="Hi."))

    assert isinstance(report.failed["ann@example.com"], nm.PermanentFailure)
    assert server.handler.messages == []


def test_international_domain_goes_on_the_wire_as_a_labels(driver, smtp_server):
    server = smtp_server(smtputf8=False)
    envelope = make_envelope(sender="alerts@bücher.example", recipients=("ann@bücher.example",))

    delivery = driver.transport(server.settings()).send(envelope)

    assert delivery.accepted == ("ann@bücher.example",)
    received = server.handler.messages[0]
    assert received.mail_from == "alerts@xn--bcher-kva.example"
    assert received.recipients == ("ann@xn--bcher-kva.example",)


def test_lines_starting_with_a_dot_survive_the_trip(driver, smtp_server):
    server = smtp_server()
    envelope = make_envelope(body=".\n..two dots\n.leading\nmiddle . dot\n.\n")

    driver.transport(server.settings()).send(envelope)

    assert server.handler.messages[0].content == envelope.raw


def test_ehlo_name_is_the_local_address_literal_unless_given(driver, smtp_server):
    server = smtp_server()

    driver.transport(server.settings()).send(make_envelope())
    driver.transport(server.settings(), local_hostname="app.example.org").send(make_envelope())

    assert server.handler.ehlo_names == ["[127.0.0.1]", "app.example.org"]


def test_local_hostname_with_a_line_break_is_a_config_error(driver):
    settings = nm.SmtpSettings(host="127.0.0.1")

    with pytest.raises(nm.ConfigError) as caught:
        driver.transport(settings, local_hostname="evil\r\nRCPT TO:<x@example.com>")

    assert caught.value.field == "local_hostname"


def test_connection_dropped_during_auth_is_a_retryable_connection_failure(driver):
    """A server that hangs up on AUTH is an outage, not refused credentials."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve_one() -> None:
        connection, _ = listener.accept()
        with connection, connection.makefile("rb") as lines:
            connection.sendall(b"220 hangs-up.example ESMTP\r\n")
            lines.readline()  # EHLO
            connection.sendall(b"250-hangs-up.example\r\n250 AUTH PLAIN LOGIN\r\n")
            lines.readline()  # AUTH: hang up without a reply

    server = threading.Thread(target=serve_one, daemon=True)
    server.start()
    smtp = nm.SmtpSettings(
        host="127.0.0.1", port=port, username="bob", password="hunter22", timeout=2
    )
    try:
        with pytest.raises(nm.ConnectionFailed) as caught:
            driver.transport(smtp).send(make_envelope())
    finally:
        server.join(timeout=5)
        listener.close()
    assert caught.value.retryable
    assert "hunter22" not in str(caught.value)
