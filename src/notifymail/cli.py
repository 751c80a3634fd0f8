"""The ``notifymail`` command: send a test email, verify the SMTP server, show the settings.

Settings come from the Metabase-compatible ``MB_*`` variables. With no SMTP server
configured, ``send-test`` prints the message it would send, so it works on a fresh
machine. It is for a person at a terminal: ``send-test`` and ``verify`` make one attempt,
bounded by the timeout, and say on stderr what they are doing. Exit status: 0 success,
1 a failed delivery or verification, 2 a bad or missing setting or argument, 130
interrupted (Ctrl-C); errors go to stderr as one line, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from enum import Enum
from typing import TYPE_CHECKING

from notifymail import __version__
from notifymail.errors import ConfigError, DeliveryError, InvalidMessage
from notifymail.mailer import DeliveryReport, Mailer
from notifymail.message import validate_recipients
from notifymail.settings import EmailSettings, Secret, SmtpSettings
from notifymail.transport.console import ConsoleTransport
from notifymail.transport.smtp import SmtpTransport
from notifymail.verify import verify_smtp

if TYPE_CHECKING:
    from notifymail.outbox import SqliteOutbox

__all__ = ["main"]

PLACEHOLDER_SENDER = "notifications@example.com"
_FROM_VARIABLE = "MB_EMAIL_FROM_ADDRESS"
_MAX_TIMEOUT = 3600.0
INTERRUPTED = 130  # 128 + SIGINT, as shells report a command ended by Ctrl-C


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
    except KeyboardInterrupt:
        _error("interrupted")
        return INTERRUPTED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="notifymail",
        description="Notification email, configured by the MB_EMAIL_* environment variables.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    one_attempt = argparse.ArgumentParser(add_help=False)
    one_attempt.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="how long the server may take to answer each step, instead of smtp.timeout",
    )

    send_test = commands.add_parser(
        "send-test",
        parents=[one_attempt],
        help="send a test email (printed instead when no SMTP server is configured)",
    )
    send_test.add_argument("--to", required=True, metavar="ADDR", help="the recipient")
    send_test.set_defaults(command=_send_test)

    verify = commands.add_parser(
        "verify",
        parents=[one_attempt],
        help="connect to the SMTP server, set up TLS and log in; send nothing",
    )
    verify.add_argument(
        "--autocorrect",
        action="store_true",
        help="if the security mode fails, try tls, starttls and ssl and report what works",
    )
    verify.set_defaults(command=_verify)

    config = commands.add_parser("config", help="show the effective settings, password masked")
    config.set_defaults(command=_config)
    _add_outbox_commands(commands)
    return parser


def _seconds(text: str) -> float:
    """The ``--timeout`` argument: seconds, more than 0 and at most an hour."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= _MAX_TIMEOUT:  # also false for nan
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds more than 0 and at most {_MAX_TIMEOUT:g}"
        )
    return seconds


def _send_test(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    validate_recipients((args.to,), "--to")
    settings, placeholder = _load(environ)
    smtp = settings.active_smtp
    if smtp is None:
        _note(
            "No SMTP server configured (MB_EMAIL_SMTP_HOST is not set): "
            "printing the message instead of sending it."
        )
        if placeholder:
            _note(
                f"{_FROM_VARIABLE} is not set: using the placeholder sender {PLACEHOLDER_SENDER}."
            )
        mailer = Mailer(settings, transport=ConsoleTransport(stream=sys.stdout))
        return _report_failures(mailer.send_test_email(args.to))
    smtp = _with_timeout(smtp, args.timeout)
    _note(f"connecting to {_describe(smtp)} to send a test email to {args.to} ...")
    report = Mailer(_one_attempt(settings), transport=SmtpTransport(smtp)).send_test_email(args.to)
    if report.ok:
        print(f"Sent a test email to {args.to}.")
    return _report_failures(report)


def _verify(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    settings, _ = _load(environ, sends=False)
    smtp = _with_timeout(_server(settings, "verify"), args.timeout)
    _note(f"connecting to {_describe(smtp)} to log in and quit; nothing is sent ...")
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


def _server(settings: EmailSettings, command: str) -> SmtpSettings:
    """The active SMTP server, which ``command`` cannot do without."""
    smtp = settings.active_smtp
    if smtp is None:
        raise ConfigError(
            f"MB_EMAIL_SMTP_HOST is not set; {command} needs an SMTP server",
            field="smtp.host",
            env_var="MB_EMAIL_SMTP_HOST",
        )
    return smtp


def _with_timeout(smtp: SmtpSettings, timeout: float | None) -> SmtpSettings:
    return smtp if timeout is None else dataclasses.replace(smtp, timeout=timeout)


def _one_attempt(settings: EmailSettings) -> EmailSettings:
    """``settings`` without retries: a person at a terminal wants the outcome now."""
    retry = dataclasses.replace(settings.delivery.retry, max_attempts=1)
    return dataclasses.replace(
        settings, delivery=dataclasses.replace(settings.delivery, retry=retry)
    )


def _describe(smtp: SmtpSettings) -> str:
    """``host:port (security, timeout N s)``, for the line saying what is being done."""
    return f"{smtp.host}:{smtp.effective_port} ({smtp.security.value}, timeout {smtp.timeout:g} s)"


def _security_variable(settings: EmailSettings) -> str:
    """The variable that sets the security of the server ``verify`` checked."""
    if not settings.deployment.is_cloud:
        return "MB_EMAIL_SMTP_SECURITY"
    if settings.use_custom_smtp:
        return "MB_EMAIL_SMTP_SECURITY_OVERRIDE"
    return "MB_EMAIL_MANAGED_SMTP_SECURITY"


def _config(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    settings, placeholder = _load(environ)
    if placeholder:
        _note(
            f"{_FROM_VARIABLE} is not set: showing the placeholder sender "
            f"{PLACEHOLDER_SENDER}, which send-test uses while no SMTP server is configured."
        )
    for name, value in _settings_lines("", settings):
        print(f"{name}: {value}")
    active = settings.active_smtp
    server = "(none)" if active is None else f"{active.host}:{active.effective_port}"
    print(f"active_smtp: {server}")
    sender = settings.active_sender.from_address
    print(f"active_sender.from_address: {sender}{' (placeholder)' if placeholder else ''}")
    return 0


def _load(environ: Mapping[str, str], *, sends: bool = True) -> tuple[EmailSettings, bool]:
    """The settings, and whether the placeholder sender stands in for a missing from address.

    ``send-test`` and ``config`` accept the same setups: the placeholder only while no
    SMTP server is configured, since nothing then leaves the machine. ``sends=False``
    (``verify``, which sends nothing) accepts it with a server too.
    """
    try:
        return EmailSettings.from_env(environ), False
    except ConfigError as error:
        if error.env_var != _FROM_VARIABLE or environ.get(_FROM_VARIABLE, "").strip():
            raise
        settings = EmailSettings.from_env({**environ, _FROM_VARIABLE: PLACEHOLDER_SENDER})
        if sends and settings.active_smtp is not None:
            raise
        return settings, True


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


def _note(message: str) -> None:
    """A line on stderr saying what the tool is doing, for the person watching."""
    print(message, file=sys.stderr, flush=True)


def _error(message: str) -> None:
    print(f"notifymail: {message}", file=sys.stderr)


# --- the outbox: `worker` and `outbox status|dead|retry|purge` ------------------------

_OUTBOX_VARIABLE = "NOTIFYMAIL_OUTBOX"


def _add_outbox_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(  # SUPPRESS: `outbox --outbox P status` and `outbox status --outbox P`
        "--outbox",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help=f"the outbox file (default: ${_OUTBOX_VARIABLE})",
    )

    worker = commands.add_parser(
        "worker",
        parents=[where],
        help="deliver the outbox's mail until interrupted (Ctrl-C, or SIGTERM)",
    )
    worker.add_argument(
        "--poll-interval",
        type=_seconds,
        default=1.0,
        metavar="SECONDS",
        help="how often to look for mail while there is none (default: 1)",
    )
    worker.set_defaults(command=_worker)

    outbox = commands.add_parser("outbox", parents=[where], help="inspect and manage the outbox")
    actions = outbox.add_subparsers(title="actions", required=True, metavar="ACTION")
    actions.add_parser(
        "status", parents=[where], help="how many envelopes are in each state"
    ).set_defaults(command=_outbox_status)
    actions.add_parser(
        "dead", parents=[where], help="list dead envelopes: id, key, enqueued, recipients, error"
    ).set_defaults(command=_outbox_dead)
    retry = actions.add_parser(
        "retry", parents=[where], help="put dead envelopes back in the queue"
    )
    retry.add_argument("ids", nargs="+", metavar="ID", help="ids from `outbox dead`")
    retry.set_defaults(command=_outbox_retry)
    purge = actions.add_parser(
        "purge", parents=[where], help="remove sent and dead envelopes finished long ago"
    )
    purge.add_argument(
        "--older-than", type=_age, required=True, metavar="SECONDS", help="their age, in seconds"
    )
    purge.set_defaults(command=_outbox_purge)


def _age(text: str) -> float:
    """The ``--older-than`` argument: seconds, 0 or more."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds < math.inf:  # also false for nan
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds, 0 or more")
    return seconds


def _open_outbox(
    args: argparse.Namespace, environ: Mapping[str, str], *, create: bool
) -> SqliteOutbox:
    """The outbox at ``--outbox`` or ``$NOTIFYMAIL_OUTBOX``; only the worker creates one."""
    from notifymail.outbox import SqliteOutbox

    given = getattr(args, "outbox", None)
    path = given or environ.get(_OUTBOX_VARIABLE, "").strip()
    variable = None if given else _OUTBOX_VARIABLE
    if not path:
        raise ConfigError(
            f"{_OUTBOX_VARIABLE} is not set; give the outbox file with --outbox PATH or"
            f" {_OUTBOX_VARIABLE}",
            env_var=_OUTBOX_VARIABLE,
        )
    label = variable or "--outbox"
    if not create and not os.path.exists(path):
        raise ConfigError(f"{label}: {path}: no such outbox file", env_var=variable)
    try:
        return SqliteOutbox(path)
    except ConfigError as error:
        raise ConfigError(f"{label}: {error}", field=error.field, env_var=variable) from None


def _worker(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    import logging
    import signal
    import threading

    from notifymail.worker import OutboxWorker

    settings = EmailSettings.from_env(environ)
    smtp = _server(settings, "the worker")
    with _open_outbox(args, environ, create=True) as outbox:
        mailer = Mailer(settings, outbox=outbox)
        _note(f"delivering {outbox.path} through {_describe(smtp)}; Ctrl-C or SIGTERM stops")
        stop = threading.Event()

        def stop_gracefully(signum: int, frame: object) -> None:
            _note("SIGTERM: stopping after this batch")
            stop.set()

        progress = logging.StreamHandler(sys.stderr)
        progress.setFormatter(logging.Formatter("notifymail worker: %(message)s"))
        log = logging.getLogger("notifymail.worker")
        log.addHandler(progress)
        level = log.level
        log.setLevel(logging.INFO)
        previous = signal.signal(signal.SIGTERM, stop_gracefully)
        try:
            OutboxWorker(mailer, poll_interval=args.poll_interval).run(stop)
        finally:
            signal.signal(signal.SIGTERM, previous)
            log.removeHandler(progress)
            log.setLevel(level)
    return 0


def _outbox_status(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    with _open_outbox(args, environ, create=False) as outbox:
        status = outbox.status()
    for item in dataclasses.fields(status):
        print(f"{item.name}: {getattr(status, item.name)}")
    return 0


def _outbox_dead(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from datetime import datetime, timezone

    with _open_outbox(args, environ, create=False) as outbox:
        dead = outbox.dead()
    for mail in dead:
        enqueued = datetime.fromtimestamp(mail.enqueued_at, timezone.utc).isoformat(
            timespec="seconds"
        )
        recipients = ",".join(mail.recipients)
        print(f"{mail.id}\t{mail.key}\t{enqueued}\t{recipients}\t{mail.last_error}")
    if not dead:
        _note("no dead mail")
    return 0


def _outbox_retry(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    with _open_outbox(args, environ, create=False) as outbox:
        count = outbox.retry(args.ids)
    print(f"{count} of {len(args.ids)} envelope(s) back in the queue")
    if count < len(args.ids):
        _error("the other ids are not dead envelopes (see `notifymail outbox dead`)")
        return 1
    return 0


def _outbox_purge(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    with _open_outbox(args, environ, create=False) as outbox:
        removed = outbox.purge(args.older_than)
    print(f"removed {removed} envelope(s) finished more than {args.older_than:g} s ago")
    return 0
