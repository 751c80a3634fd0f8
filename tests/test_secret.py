"""Secret: the password is never shown by any rendering, and compares by value."""

from __future__ import annotations

import logging
import pickle
import traceback

import pytest

import notifymail as nm

PASSWORD = "correct-horse-battery-staple"


def test_secret_reveals_only_on_request() -> None:
    assert nm.Secret(PASSWORD).reveal() == PASSWORD


@pytest.mark.parametrize(
    "render",
    [repr, str, lambda s: f"{s}", lambda s: f"{s!r}", lambda s: f"{s:>40}", lambda s: "%s" % s],  # noqa: UP031 - percent formatting is what is tested
    ids=["repr", "str", "format", "format-repr", "format-spec", "percent"],
)
def test_secret_never_renders_its_value(render: object) -> None:
    text = render(nm.Secret(PASSWORD))  # type: ignore[operator]
    assert PASSWORD not in text
    assert "**********" in text


@pytest.mark.parametrize(
    ("value", "masked"),
    [("hunter22", "**********22"), ("abcdef", "**********ef"), ("abcde", "**********"), ("", "**********")],
)  # fmt: skip
def test_masked_shows_only_the_last_two_characters(value: str, masked: str) -> None:
    assert nm.Secret(value).masked() == masked


def test_secrets_compare_by_value_and_hash() -> None:
    assert nm.Secret("a") == nm.Secret("a")
    assert nm.Secret("a") != nm.Secret("b")
    assert nm.Secret("a") != "a"
    assert len({nm.Secret("a"), nm.Secret("a"), nm.Secret("b")}) == 2


def test_secret_refuses_non_strings() -> None:
    with pytest.raises(TypeError):
        nm.Secret(1234)  # type: ignore[arg-type]


def test_settings_repr_masks_the_password() -> None:
    smtp = nm.SmtpSettings(host="smtp.example.com", username="bob", password=PASSWORD)
    settings = nm.EmailSettings(sender=nm.SenderSettings(from_address="a@example.com"), smtp=smtp)
    for text in (repr(smtp), str(smtp), repr(settings), f"{settings}"):
        assert PASSWORD not in text
        assert "Secret('**********')" in text


def test_password_never_in_a_log_record(caplog: pytest.LogCaptureFixture) -> None:
    smtp = nm.SmtpSettings(host="smtp.example.com", username="bob", password=PASSWORD)
    logger = logging.getLogger("notifymail.test")
    with caplog.at_level(logging.DEBUG, logger="notifymail"):
        logger.debug("settings %s %r", smtp, smtp.password)
        logger.info("password %s", smtp.password)
    assert caplog.records
    assert PASSWORD not in caplog.text


def test_password_never_in_a_raised_error_or_its_traceback() -> None:
    smtp = nm.SmtpSettings(host="smtp.example.com", username="bob", password=PASSWORD)
    with pytest.raises(nm.ConfigError) as info:
        nm.EmailSettings(
            sender=nm.SenderSettings(from_address="a@example.com"),
            deployment=nm.Deployment(hosting=nm.Hosting.CLOUD, plan=nm.Plan.PRO),
            managed=nm.ManagedService(smtp=smtp, from_address="n@example.com"),
            smtp=nm.SmtpSettings(host="c.example", port=25, username="x", password=PASSWORD),
        )
    rendered = "".join(traceback.format_exception(info.value))
    assert PASSWORD not in rendered
    assert PASSWORD not in repr(info.value)


def test_settings_survive_pickling_without_losing_the_password() -> None:
    smtp = nm.SmtpSettings(host="smtp.example.com", username="bob", password=PASSWORD)
    copy = pickle.loads(pickle.dumps(smtp))  # noqa: S301 - our own bytes
    assert copy == smtp
    assert copy.password is not None
    assert copy.password.reveal() == PASSWORD
