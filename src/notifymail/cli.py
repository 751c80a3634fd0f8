"""The ``notifymail`` command: send a test email, verify the SMTP server, show the settings.

Settings come from the Metabase-compatible ``MB_*`` variables. With no SMTP server
configured, ``send-test`` prints the message it would send, so it works on a fresh
machine. Exit status: 0 success, 1 a failed delivery or verification, 2 a bad or
missing setting or argument; errors go to stderr as one line, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from enum import Enum

from notifymail.errors import ConfigError, DeliveryError, InvalidMessage
from notifymail.mailer import DeliveryReport, Mailer
from notifymail.settings import EmailSettings, Secret
from notifymail.transport.console import ConsoleTransport
from notifymail.verify import verify_smtp

__all__ = ["main"]

PLACEHOLDER_SENDER = "notifications@example.com"
_FROM_VARIABLE = "MB_EMAIL_FROM_ADDRESS"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line tool and return its exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse has printed usage or help
        return exit_.code if isinstance(exit_.code, int) else 2
    command: Callable[[argparse.Namespace, Mapping[str, str]], int] = args.command
    try:
        return command(args, os.environ)
    except (ConfigError, InvalidMessage) as error:
        _error(str(error))
        return 2
    except DeliveryError as error:
        _error(f"delivery failed: {error}")
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="notifymail",
        description="Notification email, configured by the MB_EMAIL_* environment variables.",
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    send_test = commands.add_parser(
        "send-test",
        help="send a test email (printed instead when no SMTP server is configured)",
    )
    send_test.add_argument("--to", required=True, metavar="ADDR", help="the recipient")
    send_test.set_defaults(command=_send_test)

    verify = commands.add_parser(
        "verify", help="connect to the SMTP server, set up TLS and log in; send nothing"
    )
    verify.add_argument(
        "--autocorrect",
        action="store_true",
        help="if the security mode fails, try tls, starttls and ssl and report what works",
    )
    verify.set_defaults(command=_verify)

    config = commands.add_parser("config", help="show the effective settings, password masked")
    config.set_defaults(command=_config)
    return parser


def _send_test(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    settings, missing_sender = _load(environ)
    if settings.active_smtp is not None:
        if missing_sender is not None:
            raise missing_sender
        report = Mailer(settings).send_test_email(args.to)
        if report.ok:
            print(f"Sent a test email to {args.to}.")
        return _report_failures(report)
    print(
        "No SMTP server configured (MB_EMAIL_SMTP_HOST is not set): "
        "printing the message instead of sending it.",
        file=sys.stderr,
    )
    if missing_sender is not None:
        print(
            f"{_FROM_VARIABLE} is not set: using the placeholder sender {PLACEHOLDER_SENDER}.",
            file=sys.stderr,
        )
    mailer = Mailer(settings, transport=ConsoleTransport(stream=sys.stdout))
    return _report_failures(mailer.send_test_email(args.to))


def _verify(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    settings, _ = _load(environ)  # verify sends nothing, so the sender does not matter
    smtp = settings.active_smtp
    if smtp is None:
        raise ConfigError(
            "MB_EMAIL_SMTP_HOST is not set; verify needs an SMTP server",
            field="smtp.host",
            env_var="MB_EMAIL_SMTP_HOST",
        )
    result = verify_smtp(smtp, autocorrect=args.autocorrect)
    server = f"{smtp.host}:{smtp.effective_port}"
    if not result.ok:
        for field_name, message in result.errors.items():
            _error(f"{field_name}: {message}")
        _error(f"verify failed for {server}")
        return 1
    print(f"{server} works with security {result.security.value}.")
    if result.corrected:
        print(
            f"The configured security {smtp.security.value} did not work: "
            f"set {_security_variable(settings)}={result.security.value}."
        )
    return 0


def _security_variable(settings: EmailSettings) -> str:
    """The variable that sets the security of the server ``verify`` checked."""
    if not settings.deployment.is_cloud:
        return "MB_EMAIL_SMTP_SECURITY"
    if settings.use_custom_smtp:
        return "MB_EMAIL_SMTP_SECURITY_OVERRIDE"
    return "MB_EMAIL_MANAGED_SMTP_SECURITY"


def _config(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    settings = EmailSettings.from_env(environ)
    for name, value in _settings_lines("", settings):
        print(f"{name}: {value}")
    active = settings.active_smtp
    server = "(none)" if active is None else f"{active.host}:{active.effective_port}"
    print(f"active_smtp: {server}")
    print(f"active_sender.from_address: {settings.active_sender.from_address}")
    return 0


def _load(environ: Mapping[str, str]) -> tuple[EmailSettings, ConfigError | None]:
    """The settings, with the placeholder sender when the from address alone is missing.

    Returns the error the missing from address raised, for commands that need a sender.
    """
    try:
        return EmailSettings.from_env(environ), None
    except ConfigError as error:
        if error.env_var != _FROM_VARIABLE or environ.get(_FROM_VARIABLE, "").strip():
            raise
        settings = EmailSettings.from_env({**environ, _FROM_VARIABLE: PLACEHOLDER_SENDER})
        return settings, error


def _report_failures(report: DeliveryReport) -> int:
    for address, reply in report.refused.items():
        _error(f"{address}: refused: {reply}")
    for address, error in report.failed.items():
        _error(f"{address}: failed: {error}")
    return 0 if report.ok else 1


def _settings_lines(prefix: str, value: object) -> Iterator[tuple[str, str]]:
    """``(dotted name, shown value)`` for every field, passwords masked."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for item in dataclasses.fields(value):
            yield from _settings_lines(f"{prefix}{item.name}.", getattr(value, item.name))
        return
    name = prefix.rstrip(".")
    if isinstance(value, Secret):
        yield name, value.masked()
    elif isinstance(value, Enum):
        yield name, str(value.value)
    elif isinstance(value, tuple):
        yield name, ", ".join(map(str, value)) or "(none)"
    elif value is None:
        yield name, "(not set)"
    else:
        yield name, str(value)


def _error(message: str) -> None:
    print(f"notifymail: {message}", file=sys.stderr)
