"""The ``notifymail`` command: exit codes, what goes to stdout and stderr, no secrets."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from notifymail.cli import main
from smtp_servers import HOST, SmtpServer, free_port

Env = Callable[..., None]
PASSWORD = "hunter2-secret"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Env:
    """Start from no ``MB_*`` variables; ``env(NAME=value, ...)`` sets some."""
    for name in list(os.environ):
        if name.startswith("MB_"):
            monkeypatch.delenv(name)

    def set_variables(**variables: object) -> None:
        for name, value in variables.items():
            monkeypatch.setenv(name, str(value))

    return set_variables


@pytest.fixture
def system_trusts_the_test_ca(ca_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default trust store (``SSL_CERT_FILE``) is the test CA, as a CLI user sets it."""
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *expected: str) -> None:
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for text in expected:
        assert text in err


# --- send-test ------------------------------------------------------------------------


def test_send_test_without_a_server_prints_the_message_and_says_so(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env()
    code, out, err = run(capsys, "send-test", "--to", "you@example.com")

    assert code == 0
    assert "To: you@example.com" in out
    assert "From: notifications@example.com" in out
    assert "email is set up" in out
    assert (
        "No SMTP server configured (MB_EMAIL_SMTP_HOST is not set): "
        "printing the message instead of sending it." in err
    )
    assert "placeholder sender notifications@example.com" in err


def test_send_test_without_a_server_uses_the_configured_sender(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env(MB_EMAIL_FROM_ADDRESS="bi@acme.example", MB_EMAIL_FROM_NAME="Acme BI")
    code, out, err = run(capsys, "send-test", "--to", "you@example.com")

    assert code == 0
    assert "From: Acme BI <bi@acme.example>" in out
    assert "placeholder" not in err


def test_send_test_through_a_server_delivers_it(
    env: Env, capsys: pytest.CaptureFixture[str], smtp_server: Callable[..., SmtpServer]
) -> None:
    server = smtp_server()
    env(
        MB_EMAIL_SMTP_HOST=HOST,
        MB_EMAIL_SMTP_PORT=server.port,
        MB_EMAIL_FROM_ADDRESS="bi@acme.example",
    )
    code, out, err = run(capsys, "send-test", "--to", "you@example.com")

    assert (code, err) == (0, "")
    assert "Sent a test email to you@example.com" in out
    [received] = server.handler.messages
    assert received.recipients == ("you@example.com",)
    assert received.mail_from == "bi@acme.example"


def test_send_test_refused_by_the_server_exits_1(
    env: Env, capsys: pytest.CaptureFixture[str], smtp_server: Callable[..., SmtpServer]
) -> None:
    server = smtp_server()
    server.handler.refuse["you@example.com"] = "550 5.1.1 No such user"
    env(
        MB_EMAIL_SMTP_HOST=HOST,
        MB_EMAIL_SMTP_PORT=server.port,
        MB_EMAIL_FROM_ADDRESS="bi@acme.example",
    )
    code, out, err = run(capsys, "send-test", "--to", "you@example.com")

    assert code == 1
    assert out == ""
    assert_one_line_error(err, "550 5.1.1 No such user")
    assert server.handler.messages == []


def test_send_test_with_a_server_but_no_sender_names_the_variable(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env(MB_EMAIL_SMTP_HOST="smtp.example.com")
    code, out, err = run(capsys, "send-test", "--to", "you@example.com")

    assert (code, out) == (2, "")
    assert_one_line_error(err, "MB_EMAIL_FROM_ADDRESS")


def test_send_test_to_an_invalid_address_exits_2(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env()
    code, _, err = run(capsys, "send-test", "--to", "not an address")

    assert code == 2
    assert "not an address" in err.splitlines()[-1]
    assert "Traceback" not in err


# --- verify ---------------------------------------------------------------------------


def test_verify_without_a_server_names_mb_email_smtp_host(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env()
    code, out, err = run(capsys, "verify")

    assert (code, out) == (2, "")
    assert_one_line_error(err, "MB_EMAIL_SMTP_HOST")


def test_verify_a_working_server_exits_0(
    env: Env, capsys: pytest.CaptureFixture[str], smtp_server: Callable[..., SmtpServer]
) -> None:
    server = smtp_server()
    env(MB_EMAIL_SMTP_HOST=HOST, MB_EMAIL_SMTP_PORT=server.port)
    code, out, err = run(capsys, "verify")

    assert (code, err) == (0, "")
    assert f"{HOST}:{server.port} works with security none" in out
    assert server.handler.messages == []


@pytest.mark.usefixtures("system_trusts_the_test_ca")
def test_verify_autocorrect_reports_the_security_that_works(
    env: Env,
    capsys: pytest.CaptureFixture[str],
    smtp_server: Callable[..., SmtpServer],
    server_tls: ssl.SSLContext,
) -> None:
    server = smtp_server(starttls=server_tls)  # STARTTLS, not TLS from connect
    env(MB_EMAIL_SMTP_HOST=HOST, MB_EMAIL_SMTP_PORT=server.port, MB_EMAIL_SMTP_SECURITY="ssl")
    assert run(capsys, "verify")[0] == 1
    code, out, err = run(capsys, "verify", "--autocorrect")

    assert (code, err) == (0, "")
    assert "works with security starttls" in out
    assert "set MB_EMAIL_SMTP_SECURITY=starttls" in out


def test_verify_autocorrect_never_recommends_a_mode_weaker_than_the_encrypted_one_configured(
    env: Env, capsys: pytest.CaptureFixture[str], smtp_server: Callable[..., SmtpServer]
) -> None:
    server = smtp_server()  # plain SMTP, no STARTTLS offered: tls would send in plaintext
    env(MB_EMAIL_SMTP_HOST=HOST, MB_EMAIL_SMTP_PORT=server.port, MB_EMAIL_SMTP_SECURITY="starttls")
    code, out, err = run(capsys, "verify", "--autocorrect")

    assert (code, out) == (1, "")
    assert "security: Server does not offer STARTTLS" in err
    assert "=tls" not in err
    assert "=none" not in err
    assert "STARTTLS" not in server.handler.commands
    assert server.handler.messages == []


def test_verify_an_unreachable_server_prints_each_field_error_and_exits_1(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env(MB_EMAIL_SMTP_HOST=HOST, MB_EMAIL_SMTP_PORT=free_port())
    code, out, err = run(capsys, "verify")

    assert (code, out) == (1, "")
    assert "host: Wrong host or port" in err
    assert "port: Wrong host or port" in err
    assert "Traceback" not in err


# --- config ---------------------------------------------------------------------------


def test_config_shows_the_settings_with_the_password_masked(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env(
        MB_EMAIL_SMTP_HOST="smtp.example.com",
        MB_EMAIL_SMTP_SECURITY="starttls",
        MB_EMAIL_SMTP_USERNAME="mailer",
        MB_EMAIL_SMTP_PASSWORD=PASSWORD,
        MB_EMAIL_FROM_ADDRESS="bi@acme.example",
    )
    code, out, err = run(capsys, "config")

    assert (code, err) == (0, "")
    assert PASSWORD not in out
    assert "smtp.password: **********et" in out
    assert "smtp.host: smtp.example.com" in out
    assert "smtp.security: starttls" in out
    assert "active_smtp: smtp.example.com:587" in out
    assert "sender.from_address: bi@acme.example" in out


def test_config_with_a_bad_value_names_the_variable_and_exits_2(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env(
        MB_EMAIL_SMTP_HOST="smtp.example.com",
        MB_EMAIL_SMTP_PORT="abc",
        MB_EMAIL_SMTP_USERNAME="mailer",
        MB_EMAIL_SMTP_PASSWORD=PASSWORD,
        MB_EMAIL_FROM_ADDRESS="bi@acme.example",
    )
    code, out, err = run(capsys, "config")

    assert (code, out) == (2, "")
    assert_one_line_error(err, "MB_EMAIL_SMTP_PORT", "'abc'")
    assert PASSWORD not in err


def test_no_command_is_a_usage_error(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys)
    assert (code, out) == (2, "")
    assert "usage: notifymail" in err


# --- the installed module -------------------------------------------------------------


def test_python_m_notifymail_send_test_works_on_a_fresh_machine() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "notifymail", "send-test", "--to", "you@example.com"],
        env={"PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Envelope-To: you@example.com" in result.stdout
    assert "Subject: Test email from notifymail" in result.stdout
    assert "From: notifications@example.com" in result.stdout
    assert "No SMTP server configured" in result.stderr


@pytest.mark.usefixtures("system_trusts_the_test_ca")
def test_verify_autocorrect_on_cloud_names_the_managed_security_variable(
    env: Env,
    capsys: pytest.CaptureFixture[str],
    smtp_server: Callable[..., SmtpServer],
    server_tls: ssl.SSLContext,
) -> None:
    server = smtp_server(starttls=server_tls)
    env(
        MB_EMAIL_HOSTING="cloud",
        MB_EMAIL_PLAN="starter",
        MB_EMAIL_MANAGED_SMTP_HOST=HOST,
        MB_EMAIL_MANAGED_SMTP_PORT=server.port,
        MB_EMAIL_MANAGED_SMTP_SECURITY="ssl",
        MB_EMAIL_MANAGED_FROM_ADDRESS="noreply@operator.example",
    )
    code, out, _ = run(capsys, "verify", "--autocorrect")

    assert code == 0
    assert "set MB_EMAIL_MANAGED_SMTP_SECURITY=starttls" in out
