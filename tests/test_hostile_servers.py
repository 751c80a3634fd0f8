"""Hostile and broken servers against the real driver: no secret in a traceback, deadlines
not reset by a dribble, bounded replies, escaped control characters, one AUTH attempt.

Each test runs both drivers (the ``driver`` fixture) against a raw scripted server
(``ScriptedServer``) or a real aiosmtpd server, and checks from the client's error and the
server's records.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import socket
import time
import traceback
import tracemalloc
from collections.abc import Callable

import pytest

import notifymail as nm
from notifymail.transport.base import ASYNC_PACER, PACER
from smtp_servers import OAuth2Handler, ScriptedServer, make_envelope

PASSWORD = "Tr0ub4dor&3-horse-Battery"
TOKEN = "ya29.a0-access-token-secret"
SENDER = nm.SenderSettings(from_address="alerts@example.com")


def _secret_forms() -> list[str]:
    """The secrets as they could leak: as they are, and base64 as each AUTH sends them."""
    return [
        PASSWORD,
        TOKEN,
        base64.b64encode(PASSWORD.encode()).decode(),
        base64.b64encode(f"\0robot\0{PASSWORD}".encode()).decode(),
        base64.b64encode(f"user=robot\x01auth=Bearer {TOKEN}\x01\x01".encode()).decode(),
    ]


_ON_THE_WIRE = {
    "PLAIN": base64.b64encode(f"\0robot\0{PASSWORD}".encode()).decode(),
    "LOGIN": base64.b64encode(PASSWORD.encode()).decode(),
    "XOAUTH2": base64.b64encode(f"user=robot\x01auth=Bearer {TOKEN}\x01\x01".encode()).decode(),
}


def _with_locals(error: BaseException) -> str:
    """The error, its whole chain and every frame's locals, as an error tracker keeps them."""
    exception = traceback.TracebackException(
        type(error), error, error.__traceback__, capture_locals=True
    )
    return "".join(exception.format())


def _auth_then(ending: str, mechanism: str) -> Callable[[ScriptedServer, socket.socket], None]:
    """A server offering ``mechanism`` that, once the client's credentials have arrived,
    hangs up (``"drop"``) or says nothing more (``"silence"``)."""

    def script(server: ScriptedServer, connection: socket.socket) -> None:
        connection.sendall(b"220 hostile.example ESMTP\r\n")
        server.read_line(connection)  # EHLO
        connection.sendall(f"250-hostile.example\r\n250 AUTH {mechanism}\r\n".encode())
        server.read_line(connection)  # AUTH, with the initial response but for LOGIN
        if mechanism == "LOGIN":
            for challenge in (b"334 VXNlcm5hbWU6\r\n", b"334 UGFzc3dvcmQ6\r\n"):
                connection.sendall(challenge)
                server.read_line(connection)
        if ending == "silence":
            while not server.stopping and server.read_line(connection):
                pass
        connection.close()

    return script


# --- issue 12, item 3: no secret in any frame local of the chain ---


@pytest.mark.parametrize("ending", ["drop", "silence"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "XOAUTH2"])
def test_auth_dropped_or_timed_out_leaves_no_secret_in_any_frame_local(driver, ending, mechanism):
    oauth2_token = (lambda: TOKEN) if mechanism == "XOAUTH2" else None
    with ScriptedServer(_auth_then(ending, mechanism)) as server:
        smtp = server.settings(username="robot", password=PASSWORD, timeout=0.5)
        with pytest.raises(nm.DeliveryError) as raised:
            driver.transport(smtp, oauth2_token=oauth2_token).send(make_envelope())
        settings = nm.EmailSettings(
            sender=SENDER,
            smtp=smtp,
            delivery=nm.DeliverySettings(retry=nm.RetryPolicy(max_attempts=1)),
        )
        transport = driver.transport(smtp, oauth2_token=oauth2_token)
        report = driver.mailer(settings, transport=transport).notify(
            nm.Notification(["ann@example.com"], "Alert", text="x\n")
        )
        # Formatted here, with nothing secret among this frame's own locals yet.
        texts = [_with_locals(raised.value), _with_locals(report.failed["ann@example.com"])]
        on_the_wire = server.received.count(_ON_THE_WIRE[mechanism].encode())

    expected = nm.ConnectionFailed if ending == "drop" else nm.TemporaryFailure
    assert isinstance(raised.value, expected)
    assert isinstance(report.failed["ann@example.com"], expected)
    name = type(transport.target if driver.is_async else transport).__name__
    assert all(f"self = {name}(" in text for text in texts)  # locals were captured
    for text in texts:
        for form in _secret_forms():
            assert form not in text
    # The server did receive the secret: the check above would see it if anything kept it.
    assert on_the_wire == 2


# --- issue 12, item 4: the timeout is a deadline, not a bound on each read ---


def test_a_greeting_dribbled_a_byte_at_a_time_fails_within_the_timeout(driver):
    def dribble(server: ScriptedServer, connection: socket.socket) -> None:
        for byte in b"220 slow.example ESMTP\r\n":
            if server.stopping:
                return
            connection.sendall(bytes([byte]))
            time.sleep(0.5)

    with ScriptedServer(dribble) as server:
        start = time.monotonic()
        with pytest.raises(nm.ConnectionFailed, match="did not answer within the timeout"):
            driver.transport(server.settings(timeout=1.0)).send(make_envelope())
        elapsed = time.monotonic() - start

    assert elapsed < 1.5


# --- issue 12, item 5: a reply's size and line count are capped ---


@pytest.mark.parametrize(
    ("line", "cap"),
    [
        (b"250-x\r\n", "more than 100 lines"),
        (b"250-" + b"x" * 1000 + b"\r\n", "longer than 65536"),
    ],
)
def test_an_endless_multiline_reply_fails_typed_without_growing_memory(driver, line, cap):
    sent_lines = []

    def endless(server: ScriptedServer, connection: socket.socket) -> None:
        connection.sendall(b"220 endless.example ESMTP\r\n")
        server.read_line(connection)
        block = line * (10_000 // len(line))
        for count in range(2_000):  # 20 MB at most, bounded either way
            if server.stopping:
                return
            connection.sendall(block)
            sent_lines.append(count)

    with ScriptedServer(endless) as server:
        tracemalloc.start()
        try:
            with pytest.raises(nm.ConnectionFailed, match=cap):
                driver.transport(server.settings()).send(make_envelope())
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()

    assert peak < 2 * 1024 * 1024
    assert sent_lines  # the server did stream


# --- issue 12, item 13: control characters are escaped ---


def test_control_characters_in_a_reply_are_escaped_in_the_error_and_the_log(driver, caplog):
    def hostile(server: ScriptedServer, connection: socket.socket) -> None:
        connection.sendall(b"220 hostile.example ESMTP\r\n")
        server.read_line(connection)
        connection.sendall(b"250 hostile.example\r\n")
        server.read_line(connection)  # MAIL
        connection.sendall(b"550 5.7.1 no\rFAKE\x1b[2J\x1b]0;owned\x07 \x00end\r\n")
        server.read_line(connection)  # QUIT or the end

    caplog.set_level(logging.DEBUG, logger="notifymail")
    with ScriptedServer(hostile) as server, pytest.raises(nm.PermanentFailure) as raised:
        driver.transport(server.settings()).send(make_envelope())

    text = str(raised.value)
    assert "\\rFAKE\\x1b[2J\\x1b]0;owned\\x07 \\x00end" in text
    assert text.isprintable()
    records = [record.getMessage() for record in caplog.records]
    assert any("FAKE" in record for record in records)
    assert all(record.isprintable() for record in records)


# --- issue 12, item 15: one AUTH attempt, then QUIT; warn only when AUTH is sent ---


def test_a_wrong_password_is_one_auth_attempt_then_quit(driver, smtp_server):
    server = smtp_server(users={"robot": "right"}, auth_require_tls=False)
    settings = server.settings(username="robot", password="wrong")

    with pytest.raises(nm.AuthenticationFailed):
        driver.transport(settings).send(make_envelope())

    assert [login.mechanism for login in server.handler.logins] == ["PLAIN"]
    assert server.handler.commands == ["EHLO", "AUTH", "QUIT"]


def test_no_plaintext_warning_when_no_auth_is_sent(driver, smtp_server, caplog):
    server = smtp_server()  # offers no AUTH
    settings = server.settings(username="robot", password=PASSWORD)

    caplog.set_level(logging.WARNING, logger=driver.logger)
    with pytest.raises(nm.AuthenticationFailed, match="does not offer AUTH"):
        driver.transport(settings).send(make_envelope())

    assert not [r for r in caplog.records if "without encryption" in r.getMessage()]
    assert "AUTH" not in server.handler.commands


# --- issue 12, item 14: an invalid international domain is an InvalidMessage ---


def test_an_envelope_with_an_invalid_international_domain_is_invalid_message():
    with pytest.raises(nm.InvalidMessage, match="invalid domain"):
        nm.Envelope("alerts@example.com", ("ann@☃.example",), raw=b"Subject: x\r\n\r\nx\r\n")


# --- XOAUTH2 against a real server ---


def test_xoauth2_logs_in_with_the_token_of_the_moment_and_never_the_password(
    driver, smtp_server, server_tls, client_tls
):
    handler = OAuth2Handler(tokens={"robot": "token-2"})
    server = smtp_server(starttls=server_tls, users={"robot": PASSWORD}, handler=handler)
    tokens = iter(["token-1", "token-2"])
    settings = server.settings(username="robot", password=PASSWORD)
    transport = driver.transport(
        settings, ssl_context=client_tls, oauth2_token=lambda: next(tokens)
    )

    with pytest.raises(nm.AuthenticationFailed, match="refused the OAuth2 token") as raised:
        transport.send(make_envelope())
    transport.send(make_envelope())  # a new connection, a new token

    assert raised.value.reply == nm.Reply(535, "5.7.8 Authentication credentials invalid")
    assert [(login.mechanism, login.tls) for login in handler.logins] == [("XOAUTH2", True)] * 2
    assert handler.commands.count("QUIT") == 2  # after the refusal, and at the end
    assert len(handler.messages) == 1


def test_a_token_provider_that_cannot_be_reached_fails_the_connection_not_the_caller(
    driver, smtp_server, server_tls, client_tls
):
    """The ``oauth2_token`` callable is asked during AUTH; an OSError it raises (its
    identity provider unreachable) is a ``ConnectionFailed`` to retry, like any other
    failure to set up the connection, and nothing is sent."""
    handler = OAuth2Handler(tokens={"robot": TOKEN})
    server = smtp_server(starttls=server_tls, users={"robot": PASSWORD}, handler=handler)
    settings = server.settings(username="robot", password=PASSWORD)

    def unreachable() -> str:
        raise ConnectionRefusedError("identity provider unreachable")

    transport = driver.transport(settings, ssl_context=client_tls, oauth2_token=unreachable)

    with pytest.raises(nm.ConnectionFailed, match="identity provider unreachable") as raised:
        transport.send(make_envelope())
    assert raised.value.retryable
    assert handler.messages == []


def test_verify_through_the_mailer_logs_in_with_its_transports_oauth2_token(
    smtp_server, server_tls, client_tls, driver
):
    handler = OAuth2Handler(tokens={"robot": TOKEN})
    server = smtp_server(starttls=server_tls, users={"robot": PASSWORD}, handler=handler)
    smtp = server.settings(username="robot", password=PASSWORD)
    settings = nm.EmailSettings(sender=SENDER, smtp=smtp)
    transport = driver.transport(smtp, ssl_context=client_tls, oauth2_token=lambda: TOKEN)

    result = driver.mailer(settings, transport=transport).verify()

    assert result.ok
    assert [login.mechanism for login in handler.logins] == ["XOAUTH2"]


def test_the_driver_paces_right_before_each_mail_from(driver):
    calls: list[int] = []
    paced_when_mail_arrived: list[int] = []

    class Recorder:
        """A mailer's throttle that admits everyone and notes when it was asked."""

        def reserve(self, recipients: int) -> float:
            calls.append(recipients)
            return 0.0

    def script(server: ScriptedServer, connection: socket.socket) -> None:
        connection.sendall(b"220 x ESMTP\r\n")
        server.read_line(connection)
        connection.sendall(b"250 x\r\n")
        while line := server.read_line(connection):
            verb = line[:4].upper()
            if verb == b"MAIL":
                paced_when_mail_arrived.append(len(calls))
            if verb == b"DATA":
                connection.sendall(b"354 go\r\n")
                while server.read_line(connection) != b".\r\n":
                    pass
            connection.sendall(b"221 bye\r\n" if verb == b"QUIT" else b"250 ok\r\n")

    envelopes = [make_envelope(recipients=("a@example.com", "b@example.com"))] * 2
    with ScriptedServer(script) as server:
        if driver.is_async:
            transport = nm.AsyncSmtpTransport(server.settings())

            async def send() -> None:
                ASYNC_PACER.set(Recorder())  # type: ignore[arg-type]  # reserve is all it needs
                await transport.send_many(envelopes)

            driver.run(send())
        else:
            transport = nm.SmtpTransport(server.settings())
            token = PACER.set(Recorder())  # type: ignore[arg-type]
            try:
                transport.send_many(envelopes)
            finally:
                PACER.reset(token)

    assert type(transport).paces_at_the_wire is True
    assert nm.Transport.paces_at_the_wire is False
    assert nm.AsyncTransport.paces_at_the_wire is False
    assert calls == [2, 2]
    assert paced_when_mail_arrived == [1, 2]


def test_xoauth2_needs_no_password_in_the_settings(smtp_server, server_tls, client_tls):
    handler = OAuth2Handler(tokens={"robot": TOKEN})
    server = smtp_server(starttls=server_tls, users={"robot": PASSWORD}, handler=handler)
    settings = dataclasses.replace(
        server.settings(username="robot", password=PASSWORD), password=None
    )
    assert settings.password is None

    nm.SmtpTransport(settings, ssl_context=client_tls, oauth2_token=lambda: TOKEN).send(
        make_envelope()
    )

    assert [login.mechanism for login in handler.logins] == ["XOAUTH2"]
    assert len(handler.messages) == 1


def test_a_username_without_password_or_token_is_refused_by_the_transport():
    settings = nm.SmtpSettings(host="smtp.example.com", username="robot")
    with pytest.raises(nm.ConfigError, match=r"^password: a username needs a password") as raised:
        nm.SmtpTransport(settings)
    assert raised.value.field == "password"
