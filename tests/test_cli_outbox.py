"""The outbox on the command line: ``notifymail worker`` and ``notifymail outbox ...``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import notifymail as nm
from notifymail.cli import main
from smtp_servers import HOST, SmtpServer

SETTINGS = nm.EmailSettings(sender=nm.SenderSettings(from_address="bi@acme.example"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def outbox_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An outbox with one sent envelope, one dead one and one queued; $NOTIFYMAIL_OUTBOX."""
    path = tmp_path / "mail.db"
    transport = nm.MemoryTransport()
    with nm.SqliteOutbox(path) as outbox:
        mailer = nm.Mailer(SETTINGS, transport=transport, outbox=outbox)
        mailer.enqueue(nm.Notification(["ok@example.org"], "One", text="x"), key="first")
        mailer.deliver_queued()
        mailer.enqueue(nm.Notification(["bad@example.org"], "Two", text="x"), key="second")
        transport.fail_next(nm.AuthenticationFailed("535 5.7.8 Authentication failed"))
        mailer.deliver_queued()
        mailer.enqueue(nm.Notification(["later@example.org"], "Three", text="x"), key="third")
    monkeypatch.setenv("NOTIFYMAIL_OUTBOX", str(path))
    return path


def test_outbox_status_counts_envelopes_by_state(
    outbox_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "outbox", "status")
    assert (code, err) == (0, "")
    assert out == "queued: 1\ndeferred: 0\nsending: 0\nsent: 1\ndead: 1\n"


def test_outbox_dead_lists_what_was_given_up_on(
    outbox_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "outbox", "dead")
    assert code == 0
    (line,) = out.splitlines()
    envelope_id, key, enqueued, recipients, error = line.split("\t")
    assert (key, recipients, error) == (
        "second",
        "bad@example.org",
        "535 5.7.8 Authentication failed",
    )
    assert enqueued.endswith("+00:00")
    assert envelope_id.isdigit()


def test_outbox_retry_puts_dead_mail_back_and_says_which_ids_were_not(
    outbox_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with nm.SqliteOutbox(outbox_file) as outbox:
        (dead,) = outbox.dead()
    code, out, err = run(capsys, "outbox", "retry", dead.id, "12345")
    assert code == 1
    assert out == "1 of 2 envelope(s) back in the queue\n"
    assert "not dead envelopes" in err
    code, out, _ = run(capsys, "outbox", "--outbox", str(outbox_file), "status")
    assert out.startswith("queued: 2\n")


def test_outbox_purge_removes_finished_envelopes(
    outbox_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "outbox", "purge", "--older-than", "3600")
    assert (code, out) == (0, "removed 0 envelope(s) finished more than 3600 s ago\n")
    code, out, _ = run(capsys, "outbox", "purge", "--older-than", "0")
    assert (code, out) == (0, "removed 2 envelope(s) finished more than 0 s ago\n")
    code, _, err = run(capsys, "outbox", "purge", "--older-than", "-1")
    assert code == 2
    assert "--older-than" in err


def test_without_an_outbox_the_commands_name_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOTIFYMAIL_OUTBOX", raising=False)
    code, out, err = run(capsys, "outbox", "status")
    assert (code, out) == (2, "")
    assert err == (
        "notifymail: NOTIFYMAIL_OUTBOX is not set; give the outbox file with --outbox PATH"
        " or NOTIFYMAIL_OUTBOX\n"
    )


def test_a_missing_file_is_not_created_by_the_outbox_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "typo.db"
    code, _, err = run(capsys, "outbox", "status", "--outbox", str(path))
    assert code == 2
    assert err == f"notifymail: --outbox: {path}: no such outbox file\n"
    assert not path.exists()


def test_a_foreign_file_is_refused_and_left_as_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("do not touch\n")
    monkeypatch.setenv("NOTIFYMAIL_OUTBOX", str(path))
    code, _, err = run(capsys, "outbox", "purge", "--older-than", "0")
    assert code == 2
    assert (
        err
        == f"notifymail: NOTIFYMAIL_OUTBOX: {path}: not an SQLite database; it was left as it is\n"
    )
    assert path.read_text() == "do not touch\n"


# --- the worker, as a process --------------------------------------------------------


def start_worker(server: SmtpServer, outbox: Path, log: Path) -> subprocess.Popen[bytes]:
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "MB_EMAIL_SMTP_HOST": HOST,
        "MB_EMAIL_SMTP_PORT": str(server.port),
        "MB_EMAIL_FROM_ADDRESS": "bi@acme.example",
        "NOTIFYMAIL_OUTBOX": str(outbox),
    }
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "notifymail", "worker", "--poll-interval", "0.05"],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def wait_for_line(log: Path, line: str) -> None:
    deadline = time.monotonic() + 60
    while line not in log.read_text().splitlines():
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("stop_signal", "status", "last_line"),
    [
        (signal.SIGINT, 130, "notifymail: interrupted"),
        (signal.SIGTERM, 0, "SIGTERM: stopping after this batch"),
    ],
)
def test_the_worker_delivers_with_a_line_per_batch_until_stopped(
    tmp_path: Path,
    smtp_server: Callable[..., SmtpServer],
    stop_signal: signal.Signals,
    status: int,
    last_line: str,
) -> None:
    server = smtp_server()
    path = tmp_path / "mail.db"
    recipients = [f"guest{i}@example.org" for i in range(60)]
    with nm.SqliteOutbox(path) as outbox:
        mailer = nm.Mailer(SETTINGS, transport=nm.MemoryTransport(), outbox=outbox)
        mailer.enqueue(nm.Notification(recipients, "Weekly", text="Numbers.\n"))
    log = tmp_path / "worker.log"
    worker = start_worker(server, path, log)
    try:
        # Its last batch reported: a signal now finds it waiting for more.
        wait_for_line(
            log, "notifymail worker: delivered a batch: 10 accepted, 0 refused, 0 failed"
        )
        worker.send_signal(stop_signal)
        assert worker.wait(timeout=30) == status
    finally:
        worker.kill()
        worker.wait()
    lines = log.read_text().splitlines()
    assert lines[0] == (
        f"delivering {path} through {HOST}:{server.port} (none, timeout 10 s);"
        " Ctrl-C or SIGTERM stops"
    )
    assert lines[1:3] == [
        "notifymail worker: delivered a batch: 50 accepted, 0 refused, 0 failed",
        "notifymail worker: delivered a batch: 10 accepted, 0 refused, 0 failed",
    ]
    assert lines[3:] == [last_line]
    assert sorted(r for m in server.handler.messages for r in m.recipients) == sorted(recipients)


def test_the_worker_without_a_server_names_the_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("MB_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MB_EMAIL_FROM_ADDRESS", "bi@acme.example")
    code, _, err = run(capsys, "worker", "--outbox", str(tmp_path / "mail.db"))
    assert code == 2
    assert err == ("notifymail: MB_EMAIL_SMTP_HOST is not set; the worker needs an SMTP server\n")
