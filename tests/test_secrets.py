"""The SMTP password never shows: not in a log record (all of notifymail's logging at DEBUG,
through a whole failing session), a repr, an exception's text or traceback, or the output
of the command line tool.
"""

from __future__ import annotations

import base64
import logging
import traceback
from collections.abc import Iterator

import pytest

import notifymail as nm
from notifymail import cli
from smtp_servers import FaultyServer, RecordingHandler

PASSWORD = "Tr0ub4dor&3-horse-Battery"
WRONG_FOR_SERVER = {"robot": "something-else-entirely"}
RIGHT_FOR_SERVER = {"robot": PASSWORD}
SENDER = nm.SenderSettings(from_address="alerts@example.com")


def _forms(secret: str) -> list[str]:
    """The password as it could leak: as is, and base64 as AUTH PLAIN and LOGIN send it."""
    return [
        secret,
        base64.b64encode(secret.encode()).decode(),
        base64.b64encode(f"\0robot\0{secret}".encode()).decode(),
    ]


class _Everything(logging.Handler):
    """Keeps every record of the ``notifymail`` logger tree, formatted every way."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))  # message, exception and stack included
        self.texts.append(repr(record.args))
        self.texts.append(repr(record.__dict__))


@pytest.fixture
def captured() -> Iterator[_Everything]:
    handler = _Everything()
    logger = logging.getLogger("notifymail")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _error_texts(error: BaseException) -> list[str]:
    texts = [str(error), repr(error), "".join(traceback.format_exception(error))]
    seen = error
    while seen.__context__ is not None or seen.__cause__ is not None:  # chained, shown or not
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
        texts += [str(seen), repr(seen)]
    return texts


def assert_no_password(texts: list[str]) -> None:
    assert texts
    for text in texts:
        for form in _forms(PASSWORD):
            assert form not in text


def test_a_whole_failing_session_never_shows_the_password(
    driver, smtp_server, server_tls, client_tls, captured
):
    texts: list[str] = []
    wrong_auth = smtp_server(starttls=server_tls, users=WRONG_FOR_SERVER)
    plaintext = smtp_server(users=WRONG_FOR_SERVER, auth_require_tls=False)
    echoing = smtp_server(
        users=WRONG_FOR_SERVER,
        auth_require_tls=False,
        handler=RecordingHandler(echo_credentials=True),
    )
    lost = smtp_server(
        starttls=server_tls,
        users=RIGHT_FOR_SERVER,
        handler=RecordingHandler(lose_data_reply="close"),
    )
    cases = [
        (wrong_auth.settings(username="robot", password=PASSWORD), client_tls),  # 535 over TLS
        (plaintext.settings(username="robot", password=PASSWORD), None),  # 535 in plaintext
        (echoing.settings(username="robot", password=PASSWORD), None),  # 535 echoing it back
        (wrong_auth.settings(username="robot", password=PASSWORD), None),  # untrusted certificate
        (lost.settings(username="robot", password=PASSWORD), client_tls),  # reply lost
    ]
    with FaultyServer({"mail": ["drop"] * 10}) as dropping:  # no AUTH offered at all
        cases.append((dropping.settings(username="robot", password=PASSWORD), None))
        for smtp, context in cases:
            settings = nm.EmailSettings(
                sender=SENDER,
                smtp=smtp,
                delivery=nm.DeliverySettings(retry=nm.RetryPolicy(max_attempts=2)),
            )
            transport = driver.transport(smtp, ssl_context=context)
            mailer = driver.mailer(settings, transport=transport, sleep=lambda seconds: None)
            texts += [repr(smtp), str(smtp), repr(settings), repr(transport), repr(mailer)]
            with pytest.raises(nm.DeliveryError) as caught:
                mailer.send(nm.Message(["ann@example.com"], "Reset", text="x\n"))
            texts += _error_texts(caught.value)
            report = mailer.notify(nm.Notification(["ann@example.com"], "Alert", text="x\n"))
            texts.append(repr(report))
            for error in report.failed.values():
                texts += _error_texts(error)
            for result in (
                nm.verify_smtp(smtp, autocorrect=True, ssl_context=context),
                mailer.verify(autocorrect=True),  # through the transport's own probe
            ):
                texts += [repr(result), str(result.errors)]

    assert len(captured.texts) > 20  # the session did log, at every level
    assert_no_password(texts + captured.texts)
    # The servers did receive the password: the test would see it if anything repeated it.
    assert any(login.username == "robot" for login in wrong_auth.handler.logins)
    assert [m.tls for m in lost.handler.messages] == [True, True]


def test_the_command_line_tool_never_prints_the_password(
    smtp_server, monkeypatch, capsys, captured
):
    server = smtp_server(
        users=WRONG_FOR_SERVER,
        auth_require_tls=False,
        handler=RecordingHandler(echo_credentials=True),
    )
    environment = {
        "MB_EMAIL_SMTP_HOST": "127.0.0.1",
        "MB_EMAIL_SMTP_PORT": str(server.port),
        "MB_EMAIL_SMTP_SECURITY": "none",
        "MB_EMAIL_SMTP_USERNAME": "robot",
        "MB_EMAIL_SMTP_PASSWORD": PASSWORD,
        "MB_EMAIL_FROM_ADDRESS": "alerts@example.com",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    statuses = [
        cli.main(["config"]),
        cli.main(["verify"]),
        cli.main(["verify", "--autocorrect"]),
        cli.main(["send-test", "--to", "ann@example.com"]),
    ]
    monkeypatch.setenv("MB_EMAIL_SMTP_PORT", "not-a-port")
    statuses.append(cli.main(["send-test", "--to", "ann@example.com"]))
    output = capsys.readouterr()

    assert statuses == [0, 1, 1, 1, 2]
    assert "robot" in output.out + output.err  # the tool did talk about the account
    assert_no_password([output.out, output.err, *captured.texts])


def test_a_config_error_about_the_password_never_repeats_it(monkeypatch, capsys):
    bad = PASSWORD + "\x00"
    with pytest.raises(nm.ConfigError) as caught:
        nm.SmtpSettings(host="mail.example.com", username="robot", password=bad)
    assert_no_password(_error_texts(caught.value))
    monkeypatch.setenv("MB_EMAIL_SMTP_HOST", "mail.example.com")
    monkeypatch.setenv("MB_EMAIL_SMTP_PASSWORD", PASSWORD)  # without a username
    monkeypatch.setenv("MB_EMAIL_FROM_ADDRESS", "alerts@example.com")
    assert cli.main(["config"]) == 2
    output = capsys.readouterr()
    assert "MB_EMAIL_SMTP" in output.err
    assert_no_password([output.out, output.err])


def test_a_server_repeating_the_password_in_its_refusal_never_gets_it_into_the_error(
    driver, smtp_server
):
    server = smtp_server(
        users=WRONG_FOR_SERVER,
        auth_require_tls=False,
        handler=RecordingHandler(echo_credentials=True),
    )
    transport = driver.transport(server.settings(username="robot", password=PASSWORD))

    with pytest.raises(nm.AuthenticationFailed) as caught:
        transport.open()

    assert caught.value.reply == nm.Reply(535, "5.7.8 Bad credentials: robot **********")
    assert caught.value.__context__ is None
    assert_no_password(_error_texts(caught.value))
