"""The ``notifymail`` command: exit codes, what goes to stdout and stderr, no secrets."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import notifymail as nm
from notifymail.cli import main
from smtp_servers import HOST, SilentServer, SmtpServer, free_port

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


def progress_line(port: int, doing: str, *, security: str = "none", timeout: str = "10") -> str:
    """The line ``send-test`` or ``verify`` prints on stderr before connecting."""
    return f"connecting to {HOST}:{port} ({security}, timeout {timeout} s) to {doing} ...\n"


def env_for_server(env: Env, port: int) -> None:
    """A self-hosted setup sending as bi@acme.example through 127.0.0.1:``port``."""
    env(MB_EMAIL_SMTP_HOST=HOST, MB_EMAIL_SMTP_PORT=port, MB_EMAIL_FROM_ADDRESS="bi@acme.example")


SENDING = "send a test email to you@example.com"
VERIFYING = "log in and quit; nothing is sent"


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
    env_for_server(env, server.port)
    code, out, err = run(capsys, "send-test", "--to", "you@example.com")

    assert (code, err) == (0, progress_line(server.port, SENDING))
    assert "Sent a test email to you@example.com" in out
    [received] = server.handler.messages
    assert received.recipients == ("you@example.com",)
    assert received.mail_from == "bi@acme.example"


def test_send_test_refused_by_the_server_exits_1(
    env: Env, capsys: pytest.CaptureFixture[str], smtp_server: Callable[..., SmtpServer]
) -> None:
    server = smtp_server()
    server.handler.refuse["you@example.com"] = "550 5.1.1 No such user"
    env_for_server(env, server.port)
    code, out, err = run(capsys, "send-test", "--to", "you@example.com")

    assert code == 1
    assert out == ""
    progress, error = err.split("\n", 1)
    assert f"{progress}\n" == progress_line(server.port, SENDING)
    assert_one_line_error(error, "550 5.1.1 No such user")
    assert server.handler.messages == []


def test_send_test_with_a_server_but_no_sender_names_the_variable(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env(MB_EMAIL_SMTP_HOST="smtp.example.com")
    code, out, err = run(capsys, "send-test", "--to", "you@example.com")

    assert (code, out) == (2, "")
    assert_one_line_error(err, "MB_EMAIL_FROM_ADDRESS")


def test_send_test_to_an_invalid_address_prints_only_its_error_and_exits_2(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env()
    code, out, err = run(capsys, "send-test", "--to", "not an address")

    assert (code, out) == (2, "")
    assert_one_line_error(err, "--to: 'not an address' is not a valid address")


def test_send_test_makes_one_attempt_when_the_server_says_try_later(
    env: Env, capsys: pytest.CaptureFixture[str], smtp_server: Callable[..., SmtpServer]
) -> None:
    server = smtp_server()
    server.handler.mail_reply = "451 4.3.0 Try again later"
    env_for_server(env, server.port)
    code, out, err = run(capsys, "send-test", "--to", "you@example.com")

    assert (code, out) == (1, "")
    assert "451 4.3.0 Try again later" in err.splitlines()[-1]
    assert server.handler.commands.count("MAIL") == 1
    assert server.handler.connections == 1


@pytest.mark.parametrize("command", [["send-test", "--to", "you@example.com"], ["verify"]])
def test_a_server_that_never_answers_ends_the_command_within_the_timeout(
    command: list[str],
    env: Env,
    capsys: pytest.CaptureFixture[str],
    silent_server: Callable[..., SilentServer],
) -> None:
    server = silent_server()
    env_for_server(env, server.port)
    started = time.monotonic()
    code, out, err = run(capsys, *command, "--timeout", "0.5")
    elapsed = time.monotonic() - started

    assert (code, out) == (1, "")
    assert err.startswith(f"connecting to {HOST}:{server.port} (none, timeout 0.5 s) to ")
    assert "Traceback" not in err
    assert len(server.accepted) == 1  # one attempt, no retry
    assert 0.4 < elapsed < 3  # the default (10 s, six attempts) would take over a minute


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan", "inf", "3601", ""])
@pytest.mark.parametrize("command", [["send-test", "--to", "you@example.com"], ["verify"]])
def test_a_bad_timeout_names_the_option_and_exits_2(
    command: list[str], value: str, env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env(MB_EMAIL_SMTP_HOST=HOST, MB_EMAIL_FROM_ADDRESS="bi@acme.example")
    code, out, err = run(capsys, *command, "--timeout", value)

    assert (code, out) == (2, "")
    assert f"argument --timeout: {value!r} is not a number of seconds" in err
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
    code, out, err = run(capsys, "verify", "--timeout", "5")

    assert (code, err) == (0, progress_line(server.port, VERIFYING, timeout="5"))
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

    assert (code, err) == (0, progress_line(server.port, VERIFYING, security="ssl"))
    assert "works with security starttls" in out
    assert "set MB_EMAIL_SMTP_SECURITY=starttls" in out


def test_verify_autocorrect_never_recommends_a_mode_weaker_than_the_encrypted_one_configured(
    env: Env, capsys: pytest.CaptureFixture[str], smtp_server: Callable[..., SmtpServer]
) -> None:
    server = smtp_server()  # plain SMTP, no STARTTLS offered: tls would send in plaintext
    env(MB_EMAIL_SMTP_HOST=HOST, MB_EMAIL_SMTP_PORT=server.port, MB_EMAIL_SMTP_SECURITY="starttls")
    code, out, err = run(capsys, "verify", "--autocorrect")

    assert (code, out) == (1, "")
    assert err.startswith(progress_line(server.port, VERIFYING, security="starttls"))
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


@pytest.mark.parametrize("command", [("send-test", "--to", "you@example.com"), ("verify",)])
def test_a_typo_in_a_variable_name_sends_nothing_and_names_it(
    env: Env, capsys: pytest.CaptureFixture[str], command: tuple[str, ...]
) -> None:
    # MB_EMAIL_SMTP_SECURTY=starttls used to be ignored: the test email went out in
    # plaintext and the command exited 0.
    env(
        MB_EMAIL_SMTP_HOST="smtp.example.com",
        MB_EMAIL_SMTP_SECURTY="starttls",
        MB_EMAIL_FROM_ADDRESS="bi@acme.example",
    )
    code, out, err = run(capsys, *command)

    assert (code, out) == (2, "")
    assert_one_line_error(
        err, "MB_EMAIL_SMTP_SECURTY: unknown variable; did you mean MB_EMAIL_SMTP_SECURITY?"
    )
    assert "connecting" not in err  # nothing was tried


def test_config_without_a_sender_shows_the_placeholder_and_says_so(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env()
    code, out, err = run(capsys, "config")

    assert code == 0
    assert "active_smtp: (none)" in out
    assert "active_sender.from_address: notifications@example.com (placeholder)" in out
    assert_one_line_error(err, "MB_EMAIL_FROM_ADDRESS is not set", "placeholder sender")


@pytest.mark.parametrize(
    "variables",
    [
        {},
        {"MB_EMAIL_SMTP_HOST": "smtp.example.com"},
        {"MB_EMAIL_FROM_ADDRESS": "bi@acme.example"},
        {"MB_EMAIL_SMTP_HOST": "smtp.example.com", "MB_EMAIL_FROM_ADDRESS": "nope"},
    ],
    ids=["nothing", "server-without-sender", "sender-without-server", "bad-sender"],
)
def test_config_and_send_test_accept_the_same_incomplete_setups(
    variables: dict[str, str], env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env(**variables)
    config_code, _, config_err = run(capsys, "config")
    # --timeout so that a setup send-test accepts with a server fails fast (nothing listens).
    send_code, _, send_err = run(
        capsys, "send-test", "--to", "you@example.com", "--timeout", "0.5"
    )

    assert (config_code == 2) == (send_code == 2)
    if config_code == 2:  # refused by both, with the same line
        assert config_err == send_err


def test_version_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--version")
    assert (code, out, err) == (0, f"notifymail {nm.__version__}\n", "")


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


def test_ctrl_c_while_waiting_for_the_server_ends_with_one_line_and_status_130(
    silent_server: Callable[..., SilentServer],
) -> None:
    server = silent_server()
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "MB_EMAIL_SMTP_HOST": HOST,
        "MB_EMAIL_SMTP_PORT": str(server.port),
        "MB_EMAIL_FROM_ADDRESS": "bi@acme.example",
    }
    command = ["send-test", "--to", "you@example.com", "--timeout", "60"]
    with subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "notifymail", *command],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        deadline = time.monotonic() + 30
        while not server.accepted and time.monotonic() < deadline:  # it is waiting now
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)

    assert process.returncode == 130
    assert out == ""
    assert err == (
        f"connecting to {HOST}:{server.port} (none, timeout 60 s) to {SENDING} ...\n"
        "notifymail: interrupted\n"
    )
