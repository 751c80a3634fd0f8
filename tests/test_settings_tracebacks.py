"""No password in the frame locals of an error raised while settings are built.

Error trackers capture the locals of every frame of a traceback. When a settings object
is built from a ``str`` password and another field fails, through ``from_env`` with a
bad port or through ``apply_changes``, no frame of notifymail's (the half-built object
included) may show the password; the caller's own frame, which holds it anyway, is not
notifymail's to clean.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable

import pytest

import notifymail as nm

PASSWORD = "Tr0ub4dor&3-horse-Battery"


def library_frame_locals(error: BaseException) -> list[str]:
    """Every local of every frame outside this file, over the whole exception chain,
    rendered as ``traceback.TracebackException(..., capture_locals=True)`` renders them."""
    rendered: list[str] = []
    pending: list[BaseException] = [error]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        captured = traceback.TracebackException.from_exception(
            current, capture_locals=True, lookup_lines=False
        )
        for frame in captured.stack:
            if frame.filename != __file__:
                rendered += [f"{name}={value}" for name, value in (frame.locals or {}).items()]
        rendered += [str(current), repr(current)]
        pending += [chained for chained in (current.__cause__, current.__context__) if chained]
    return rendered


def _raised(build: Callable[[], object]) -> nm.ConfigError:
    with pytest.raises(nm.ConfigError) as caught:
        build()
    return caught.value


def test_from_env_with_a_bad_port_shows_the_password_in_no_frame() -> None:
    environ = {
        "MB_EMAIL_FROM_ADDRESS": "alerts@example.com",
        "MB_EMAIL_SMTP_HOST": "smtp.example.com",
        "MB_EMAIL_SMTP_PORT": "not-a-port",
        "MB_EMAIL_SMTP_USERNAME": "robot",
        "MB_EMAIL_SMTP_PASSWORD": PASSWORD,
    }
    error = _raised(lambda: nm.EmailSettings.from_env(environ))
    assert error.env_var == "MB_EMAIL_SMTP_PORT"
    locals_ = library_frame_locals(error)
    assert any("environ" in line or "values" in line for line in locals_)  # frames were seen
    assert not [line for line in locals_ if PASSWORD in line]


@pytest.mark.parametrize(
    "bad",
    [
        {"MB_EMAIL_SMTP_HOST": "smtp example.com"},
        {"MB_EMAIL_SMTP_PORT": "9" * 5000},
        {"MB_EMAIL_PLAN": "gold"},
        {"MB_EMAIL_REPLY_TO": "[" * 100_000},
        {"MB_EMAIL_SMTP_SECURTY": "none"},
    ],
    ids=["host", "huge-port", "plan", "deep-json", "unknown-variable"],
)
def test_from_env_shows_the_password_in_no_frame_whatever_fails(bad: dict[str, str]) -> None:
    environ = {
        "MB_EMAIL_FROM_ADDRESS": "alerts@example.com",
        "MB_EMAIL_SMTP_HOST": "smtp.example.com",
        "MB_EMAIL_SMTP_USERNAME": "robot",
        "MB_EMAIL_SMTP_PASSWORD": PASSWORD,
        **bad,
    }
    error = _raised(lambda: nm.EmailSettings.from_env(environ))
    assert not [line for line in library_frame_locals(error) if PASSWORD in line]


SETTINGS = nm.EmailSettings(
    sender=nm.SenderSettings(from_address="alerts@example.com"),
    smtp=nm.SmtpSettings(host="smtp.example.com", username="robot", password="0ld-password"),
)
ADMIN = nm.Person("admin@example.com", is_admin=True)


@pytest.mark.parametrize(
    "other",
    [
        {"email-smtp-port": "not-a-port"},
        {"email-smtp-host": "smtp example.com"},
        {"email-smtp-username": None},
        {"email-from-address": None},
        {"no-such-setting": 1},
    ],
    ids=["port", "host", "username-cleared", "sender-cleared", "unknown-name"],
)
def test_apply_changes_with_a_new_password_shows_it_in_no_frame(other: dict[str, object]) -> None:
    changes = {"email-smtp-password": PASSWORD, **other}
    error = _raised(lambda: nm.apply_changes(SETTINGS, changes, ADMIN))
    assert not [line for line in library_frame_locals(error) if PASSWORD in line]


def test_a_half_built_smtp_settings_never_shows_a_str_password() -> None:
    # The password is wrapped in a Secret before any other field is checked, so the
    # half-built object in __post_init__ shows it masked.
    error = _raised(
        lambda: nm.SmtpSettings(host="smtp.example.com", port=0, username="u", password=PASSWORD)
    )
    captured = traceback.TracebackException.from_exception(error, capture_locals=True)
    selves = [
        frame.locals["self"]
        for frame in captured.stack
        if frame.locals and "self" in frame.locals and frame.name != "__init__"
    ]
    assert selves, "no frame of the half-built object was captured"
    for shown in selves:
        assert PASSWORD not in shown
        assert "Secret('**********')" in shown
