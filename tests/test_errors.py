"""The error tree of SPEC.md section 0: shapes, defaults and constructors."""

from __future__ import annotations

import pytest

import notifymail as nm


@pytest.mark.parametrize(
    ("error", "bases"),
    [
        (nm.ConfigError, (nm.NotifymailError, ValueError)),
        (nm.FeatureNotAvailable, (nm.ConfigError,)),
        (nm.InvalidMessage, (nm.NotifymailError, ValueError)),
        (nm.PermissionDenied, (nm.NotifymailError,)),
        (nm.RecipientNotAllowed, (nm.NotifymailError,)),
        (nm.InvalidToken, (nm.NotifymailError,)),
        (nm.DeliveryError, (nm.NotifymailError,)),
        (nm.ConnectionFailed, (nm.DeliveryError,)),
        (nm.TlsError, (nm.DeliveryError,)),
        (nm.AuthenticationFailed, (nm.DeliveryError,)),
        (nm.TemporaryFailure, (nm.DeliveryError,)),
        (nm.PermanentFailure, (nm.DeliveryError,)),
    ],
)
def test_error_tree(error: type[Exception], bases: tuple[type[Exception], ...]) -> None:
    for base in bases:
        assert issubclass(error, base)


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (nm.ConnectionFailed, True),
        (nm.TemporaryFailure, True),
        (nm.TlsError, False),
        (nm.AuthenticationFailed, False),
        (nm.PermanentFailure, False),
        (nm.DeliveryError, False),
    ],
)
def test_delivery_errors_know_whether_they_are_retryable(
    error: type[nm.DeliveryError], retryable: bool
) -> None:
    instance = error("message")
    assert instance.retryable is retryable
    assert instance.reply is None
    assert instance.deliveries == ()


def test_delivery_error_carries_its_reply_and_can_override_retryable() -> None:
    reply = nm.Reply(451, "4.3.0 try later")
    error = nm.ConnectionFailed("reply lost after DATA", reply=reply, retryable=False)
    assert error.reply is reply
    assert error.retryable is False
    assert str(error) == "reply lost after DATA"


def test_temporary_failure_from_a_message_alone() -> None:
    error = nm.TemporaryFailure("451 try later")
    assert str(error) == "451 try later"
    assert error.retryable


def test_config_error_fields() -> None:
    error = nm.ConfigError(
        "MB_EMAIL_SMTP_PORT: 'x' is not a port", field="smtp.port", env_var="MB_EMAIL_SMTP_PORT"
    )
    assert (error.field, error.env_var) == ("smtp.port", "MB_EMAIL_SMTP_PORT")
    assert nm.ConfigError("plain").field is None


def test_feature_not_available_names_its_feature() -> None:
    error = nm.FeatureNotAvailable("nope", feature=nm.Feature.EMAIL_ALLOW_LIST, field="x")
    assert error.feature is nm.Feature.EMAIL_ALLOW_LIST
    assert error.field == "x"
    assert error.env_var is None


def test_recipient_not_allowed_refused_is_read_only() -> None:
    error = nm.RecipientNotAllowed("no", refused={"a@b.com": "domain not approved"})
    assert dict(error.refused) == {"a@b.com": "domain not approved"}
    with pytest.raises(TypeError):
        error.refused["x"] = "y"  # type: ignore[index]


def test_reply_renders_as_the_server_said_it() -> None:
    assert str(nm.Reply(550, "5.1.1 No such user")) == "550 5.1.1 No such user"
    assert nm.Reply(421, "bye").is_transient
    assert nm.Reply(554, "no").is_permanent
