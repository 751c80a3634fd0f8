"""notifymail's log records reach a terminal only through the host's own logging set-up,
and docs/logging.md names every logger the library uses."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Sends a message that fails (so the transport logs a warning) once before and once after
# configuring logging, with a marker on stderr between the two.
SCRIPT = """
import logging
import sys

import notifymail as nm


def send_a_refused_message():
    transport = nm.MemoryTransport()
    transport.fail_next(nm.PermanentFailure("550 5.7.1 Message rejected"))
    settings = nm.EmailSettings(sender=nm.SenderSettings(from_address="bi@example.com"))
    try:
        nm.Mailer(settings, transport=transport).send(
            nm.Message(["ann@example.com"], "Welcome", text="Your account is ready.")
        )
    except nm.PermanentFailure:
        return
    raise AssertionError("the scripted failure did not happen")


send_a_refused_message()
print("-- logging configured --", file=sys.stderr)
logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
send_a_refused_message()
"""


def test_a_warning_in_a_script_without_logging_set_up_prints_nothing() -> None:
    result = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    before, after = result.stderr.split("-- logging configured --\n")

    assert before == ""
    # The same failure, once the script has configured logging, is logged as a warning.
    assert after.startswith("WARNING notifymail.transport: ")
    assert "550 5.7.1 Message rejected" in after


def test_the_logging_page_lists_every_logger_the_library_uses() -> None:
    used = {
        name
        for path in (ROOT / "src" / "notifymail").rglob("*.py")
        for name in re.findall(r"getLogger\(\s*\"([\w.]+)\"", path.read_text(encoding="utf-8"))
    }
    page = (ROOT / "docs" / "logging.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(notifymail[\w.]*)` \|", page, re.MULTILINE))

    assert "notifymail.transport.smtp" in used
    assert documented == used
