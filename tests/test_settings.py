"""Every validation rule of the settings dataclasses, with the message it gives."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

import notifymail as nm

MANAGED = nm.ManagedService(
    smtp=nm.SmtpSettings(host="smtp.managed.example", security=nm.Security.STARTTLS),
    from_address="notifications@managed.example",
)
SENDER = nm.SenderSettings(from_address="alerts@example.com", from_name="Acme Alerts")
CLOUD_PRO = nm.Deployment(hosting=nm.Hosting.CLOUD, plan=nm.Plan.PRO)


def cloud(**fields: Any) -> nm.EmailSettings:
    fields.setdefault("deployment", CLOUD_PRO)
    return nm.EmailSettings(sender=SENDER, managed=MANAGED, **fields)


# --- enums ---


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tls", nm.Security.TLS),
        ("TLS", nm.Security.TLS),
        (" tls ", nm.Security.TLS),
        ("StartTLS", nm.Security.STARTTLS),
        ("none", nm.Security.NONE),
    ],
)
def test_security_parses_case_insensitively(text: str, expected: nm.Security) -> None:
    assert nm.Security(text) is expected


def test_enums_are_str_with_lower_case_values() -> None:
    assert nm.Security.TLS.value == "tls"
    assert isinstance(nm.Security.TLS, str)
    assert nm.Hosting.SELF_HOSTED.value == "self-hosted"
    assert nm.Hosting("SELF_HOSTED") is nm.Hosting.SELF_HOSTED
    assert nm.Feature("Email-Allow-List") is nm.Feature.EMAIL_ALLOW_LIST
    assert f"{nm.Plan.PRO}" == "pro"


def test_unknown_enum_value_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="'tsl' is not a valid Security"):
        nm.Security("tsl")


# --- SmtpSettings ---


@pytest.mark.parametrize(
    ("security", "port"),
    [
        (nm.Security.NONE, 25),
        (nm.Security.SSL, 465),
        (nm.Security.TLS, 587),
        (nm.Security.STARTTLS, 587),
    ],
)
def test_effective_port_defaults_by_security(security: nm.Security, port: int) -> None:
    smtp = nm.SmtpSettings(host="smtp.example.com", security=security)
    assert smtp.port is None
    assert smtp.effective_port == port


def test_explicit_port_wins_over_default() -> None:
    smtp = nm.SmtpSettings(host="smtp.example.com", port=2525, security=nm.Security.SSL)
    assert smtp.effective_port == 2525


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"port": 0}, "port", "port: 0 is not a port number (1-65535)"),
        ({"port": 65536}, "port", "port: 65536 is not a port number (1-65535)"),
        ({"port": "25"}, "port", "port: '25' is not a port number (1-65535)"),
        ({"port": True}, "port", "port: True is not a port number (1-65535)"),
        ({"timeout": 0}, "timeout", "timeout: 0 is not a number > 0"),
        ({"timeout": -1.5}, "timeout", "timeout: -1.5 is not a number > 0"),
        ({"timeout": float("inf")}, "timeout", "timeout: inf is not a finite number"),
        (
            {"security": "tsl"},
            "security",
            "security: 'tsl' is not a security mode (none, ssl, tls, starttls)",
        ),
        ({"host": ""}, "host", "host: must not be empty"),
        ({"host": "smtp example.com"}, "host", "is not a host name or IP address"),
        (
            {"host": "smtp.example.com\r\nX: y"},
            "host",
            "host: must not contain a line break, NUL or control character",
        ),
        (
            {"username": "bob\n"},
            "username",
            "username: must not contain a line break, NUL or control character",
        ),
        (
            {"cafile": "/etc/ca\0"},
            "cafile",
            "cafile: must not contain a line break, NUL or control character",
        ),
        (
            {"max_connections": 0},
            "max_connections",
            "max_connections: 0 is not a number of connections (1-64)",
        ),
        (
            {"max_connections": 65},
            "max_connections",
            "max_connections: 65 is not a number of connections (1-64)",
        ),
        (
            {"max_connections": "2"},
            "max_connections",
            "max_connections: '2' is not a number of connections",
        ),
        (
            {"port": 10**5000},
            "port",
            "port: a number of more than 30 digits is not a port number (1-65535)",
        ),
        (
            {"timeout": 10**5000},
            "timeout",
            "timeout: a number of more than 30 digits is too large",
        ),
        ({"password": "pw"}, "username", "a password needs a username"),
    ],
)
def test_smtp_settings_refuse_bad_values(fields: dict[str, Any], field: str, message: str) -> None:
    fields.setdefault("host", "smtp.example.com")
    with pytest.raises(nm.ConfigError) as info:
        nm.SmtpSettings(**fields)
    assert message in str(info.value)
    assert str(info.value).startswith(f"{field}: ")
    assert info.value.field == field
    assert info.value.env_var is None


def test_password_with_line_break_is_refused_without_showing_it() -> None:
    with pytest.raises(nm.ConfigError) as info:
        nm.SmtpSettings(host="smtp.example.com", username="bob", password="hunter2\r\nRCPT")
    assert info.value.field == "password"
    assert "hunter2" not in str(info.value)


def test_str_password_is_wrapped_in_a_secret() -> None:
    smtp = nm.SmtpSettings(host="smtp.example.com", username="bob", password="hunter22")
    assert isinstance(smtp.password, nm.Secret)
    assert smtp.password.reveal() == "hunter22"


def test_empty_username_and_password_mean_unset() -> None:
    smtp = nm.SmtpSettings(host="smtp.example.com", username="", password="")
    assert smtp.username is None
    assert smtp.password is None


def test_credentials_are_allowed_with_security_none() -> None:
    smtp = nm.SmtpSettings(host="relay.internal", username="bob", password="hunter22")
    assert smtp.security is nm.Security.NONE
    assert smtp.has_credentials


def test_settings_are_frozen() -> None:
    smtp = nm.SmtpSettings(host="smtp.example.com")
    with pytest.raises(dataclasses.FrozenInstanceError):
        smtp.port = 25  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        SENDER.from_address = "x@example.com"  # type: ignore[misc]


def test_settings_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        nm.SmtpSettings("smtp.example.com")  # type: ignore[misc]


def test_replace_revalidates() -> None:
    smtp = nm.SmtpSettings(host="smtp.example.com", port=587)
    with pytest.raises(nm.ConfigError, match="port: 70000 is not a port number"):
        dataclasses.replace(smtp, port=70000)
    assert dataclasses.replace(smtp, port=2525).effective_port == 2525


def test_replace_revalidates_the_whole_email_settings() -> None:
    settings = nm.EmailSettings(sender=SENDER)
    with pytest.raises(nm.FeatureNotAvailable):
        dataclasses.replace(settings, recipients=nm.RecipientPolicy(approved_domains="acme.com"))


def test_host_is_stripped() -> None:
    assert nm.SmtpSettings(host="  smtp.example.com ").host == "smtp.example.com"


# --- SenderSettings ---


def test_sender_address_is_normalised() -> None:
    sender = nm.SenderSettings(from_address="Alerts@EXAMPLE.com")
    assert sender.from_address == "Alerts@example.com"


def test_internationalised_domain_kept_in_unicode_form() -> None:
    assert nm.SenderSettings(from_address="a@xn--bcher-kva.ch").from_address == "a@bücher.ch"
    assert nm.SenderSettings(from_address="a@BÜCHER.ch").from_address == "a@bücher.ch"


@pytest.mark.parametrize(
    "name", ['Acme, Inc. "Alerts"', "Zoë's Reports", "=?utf-8?q?x?=", "a <b@c.com>"]
)
def test_from_name_allows_any_printable_text(name: str) -> None:
    assert nm.SenderSettings(from_address="a@example.com", from_name=name).from_name == name


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"from_address": "not an address"}, "from_address", "is not a valid email address"),
        ({"from_address": "a@localhost"}, "from_address", "It should have a period"),
        (
            {"from_address": "a@b.com\r\nBcc: x@y.com"},
            "from_address",
            "a line break, NUL or control character",
        ),
        (
            {"from_name": "Acme\r\nBcc: x@y.com"},
            "from_name",
            "a line break, NUL or control character",
        ),
        (
            {"from_name": "Acme\x85Bcc: x@y.com"},
            "from_name",
            "a line break, NUL or control character",
        ),
        ({"from_name": "Acme\u2028Bcc"}, "from_name", "a line break, NUL or control character"),
        ({"reply_to": ("ok@example.com", "bad@")}, "reply_to", "'bad@' is not a valid email"),
        ({"reply_to": "ok@example.com"}, "reply_to", "must be a tuple of addresses, not a str"),
    ],
)
def test_sender_settings_refuse_bad_values(
    fields: dict[str, Any], field: str, message: str
) -> None:
    fields.setdefault("from_address", "alerts@example.com")
    with pytest.raises(nm.ConfigError, match=message) as info:
        nm.SenderSettings(**fields)
    assert info.value.field == field


def test_reply_to_is_a_normalised_tuple_without_duplicates() -> None:
    sender = nm.SenderSettings(
        from_address="a@example.com",
        reply_to=["help@EXAMPLE.com", "help@example.com", "Help@example.com"],
    )
    assert sender.reply_to == ("help@example.com",)


# --- DeliverySettings and RetryPolicy ---


def test_delivery_defaults() -> None:
    delivery = nm.DeliverySettings()
    assert delivery.bcc_enabled is True
    assert delivery.max_recipients_per_message == 50
    assert delivery.max_recipients_per_second is None
    assert delivery.retry == nm.RetryPolicy()


def test_zero_recipients_per_second_means_no_throttle() -> None:
    assert nm.DeliverySettings(max_recipients_per_second=0).max_recipients_per_second is None


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"max_recipients_per_message": -1}, "max_recipients_per_message"),
        ({"max_recipients_per_second": -5}, "max_recipients_per_second"),
        ({"bcc_enabled": "yes"}, "bcc_enabled"),
        ({"retry": 3}, "retry"),
        ({"max_recipients_per_message": 10**5000}, "max_recipients_per_message"),
    ],
)
def test_delivery_settings_refuse_bad_values(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(nm.ConfigError) as info:
        nm.DeliverySettings(**fields)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"max_attempts": 0}, "max_attempts", "0 is not a number of attempts (1 or more)"),
        ({"initial_interval": 0}, "initial_interval", "0 is not a number > 0"),
        ({"max_interval": -1}, "max_interval", "-1 is not a number > 0"),
        ({"multiplier": 0.5}, "multiplier", "0.5 is not a number >= 1"),
        ({"jitter": -0.1}, "jitter", "-0.1 is not a number >= 0"),
        ({"jitter": 1.5}, "jitter", "1.5 is not a fraction between 0 and 1"),
    ],
)
def test_retry_policy_refuses_insane_values(
    fields: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(nm.ConfigError) as info:
        nm.RetryPolicy(**fields)
    assert info.value.field == field
    assert str(info.value) == f"{field}: {message}"


def test_retry_delay_grows_exponentially_and_is_capped() -> None:
    policy = nm.RetryPolicy(initial_interval=0.5, multiplier=2, jitter=0, max_interval=3)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_retry_delay_never_overflows_for_late_retries() -> None:
    policy = nm.RetryPolicy(multiplier=10, max_attempts=10_000, jitter=0)
    assert policy.delay(5_000) == policy.max_interval


def test_retry_delay_jitter_stays_within_its_fraction_and_the_cap() -> None:
    policy = nm.RetryPolicy(initial_interval=1, multiplier=2, jitter=0.1, max_interval=30)
    assert policy.delay(1, rand=lambda: 0.0) == pytest.approx(0.9)
    assert policy.delay(1, rand=lambda: 1.0) == pytest.approx(1.1)
    assert policy.delay(50, rand=lambda: 1.0) == 30


# --- RecipientPolicy ---


def test_approved_domains_are_normalised() -> None:
    policy = nm.RecipientPolicy(
        approved_domains=" Acme.COM ,xn--bcher-kva.ch,, acme.com,BÜCHER.ch"
    )
    assert policy.approved_domains == ("acme.com", "bücher.ch")


def test_approved_domains_accept_a_tuple() -> None:
    assert nm.RecipientPolicy(approved_domains=("a.com", "B.com")).approved_domains == (
        "a.com",
        "b.com",
    )


@pytest.mark.parametrize("domain", ["not a domain", "a..com", "user@acme.com", "localhost"])
def test_invalid_approved_domain_is_named(domain: str) -> None:
    with pytest.raises(nm.ConfigError, match=repr(domain).replace(".", r"\.")) as info:
        nm.RecipientPolicy(approved_domains=f"acme.com,{domain}")
    assert info.value.field == "approved_domains"


def test_suggestion_mode_parses_strings() -> None:
    assert nm.RecipientPolicy(suggestions="GROUP").suggestions is nm.SuggestionMode.GROUP


# --- Deployment and plan gating ---


@pytest.mark.parametrize(
    ("hosting", "plan", "message"),
    [
        (nm.Hosting.CLOUD, nm.Plan.OSS, "oss is self-hosted only"),
        (nm.Hosting.SELF_HOSTED, nm.Plan.STARTER, "starter is Cloud only"),
    ],
)
def test_plan_and_hosting_must_match(hosting: nm.Hosting, plan: nm.Plan, message: str) -> None:
    with pytest.raises(nm.ConfigError, match=message) as info:
        nm.Deployment(hosting=hosting, plan=plan)
    assert info.value.field == "plan"


@pytest.mark.parametrize(
    ("hosting", "plan", "features"),
    [
        ("self-hosted", "oss", set()),
        ("self-hosted", "pro", {"email-allow-list", "email-restrict-recipients", "advanced-permissions"}),
        ("self-hosted", "enterprise", {"email-allow-list", "email-restrict-recipients", "advanced-permissions"}),
        ("cloud", "starter", set()),
        ("cloud", "pro", {"email-allow-list", "email-restrict-recipients", "advanced-permissions", "cloud-custom-smtp"}),
        ("cloud", "enterprise", {"email-allow-list", "email-restrict-recipients", "advanced-permissions", "cloud-custom-smtp"}),
    ],
)  # fmt: skip
def test_entitlements_by_plan_and_hosting(hosting: str, plan: str, features: set[str]) -> None:
    deployment = nm.Deployment(hosting=nm.Hosting(hosting), plan=nm.Plan(plan))
    assert nm.entitlements(deployment) == {nm.Feature(f) for f in features}


def test_cloud_needs_the_managed_service() -> None:
    with pytest.raises(nm.ConfigError, match="Cloud needs the managed SMTP service") as info:
        nm.EmailSettings(sender=SENDER, deployment=CLOUD_PRO)
    assert info.value.field == "managed"


def test_self_hosted_refuses_the_managed_service() -> None:
    with pytest.raises(nm.ConfigError, match="on Cloud only") as info:
        nm.EmailSettings(sender=SENDER, managed=MANAGED)
    assert info.value.field == "managed"


@pytest.mark.parametrize(
    ("recipients", "feature", "message"),
    [
        (
            nm.RecipientPolicy(approved_domains="acme.com"),
            nm.Feature.EMAIL_ALLOW_LIST,
            "approved_domains needs the email-allow-list feature (Pro or Enterprise)",
        ),
        (
            nm.RecipientPolicy(suggestions=nm.SuggestionMode.GROUP),
            nm.Feature.EMAIL_RESTRICT_RECIPIENTS,
            "suggestions needs the email-restrict-recipients feature (Pro or Enterprise)",
        ),
    ],
)
@pytest.mark.parametrize(
    "deployment",
    [nm.Deployment(), nm.Deployment(hosting=nm.Hosting.CLOUD, plan=nm.Plan.STARTER)],
    ids=["oss", "starter"],
)
def test_gated_setting_on_a_plan_without_the_feature_is_refused(
    recipients: nm.RecipientPolicy, feature: nm.Feature, message: str, deployment: nm.Deployment
) -> None:
    managed = MANAGED if deployment.is_cloud else None
    with pytest.raises(nm.FeatureNotAvailable) as info:
        nm.EmailSettings(
            sender=SENDER, deployment=deployment, managed=managed, recipients=recipients
        )
    assert info.value.feature is feature
    assert str(info.value).startswith(message)
    assert isinstance(info.value, nm.ConfigError)


def test_gated_settings_are_kept_on_a_plan_with_the_feature() -> None:
    recipients = nm.RecipientPolicy(approved_domains="acme.com", suggestions="none")
    settings = nm.EmailSettings(
        sender=SENDER, deployment=nm.Deployment(plan=nm.Plan.PRO), recipients=recipients
    )
    assert settings.recipients.approved_domains == ("acme.com",)
    assert settings.recipients.suggestions is nm.SuggestionMode.NONE


def test_custom_smtp_needs_the_cloud_custom_smtp_feature() -> None:
    custom = nm.SmtpSettings(host="smtp.customer.example", security=nm.Security.SSL)
    starter = nm.Deployment(hosting=nm.Hosting.CLOUD, plan=nm.Plan.STARTER)
    with pytest.raises(nm.FeatureNotAvailable) as info:
        cloud(deployment=starter, smtp=custom, use_custom_smtp=True)
    assert info.value.feature is nm.Feature.CLOUD_CUSTOM_SMTP
    assert info.value.field == "use_custom_smtp"
    assert "(Pro or Enterprise on Cloud)" in str(info.value)


def test_custom_smtp_on_self_hosted_is_refused() -> None:
    with pytest.raises(nm.FeatureNotAvailable):
        nm.EmailSettings(
            sender=SENDER,
            deployment=nm.Deployment(plan=nm.Plan.ENTERPRISE),
            smtp=nm.SmtpSettings(host="smtp.example.com"),
            use_custom_smtp=True,
        )


def test_custom_smtp_toggle_needs_a_server() -> None:
    with pytest.raises(nm.ConfigError, match="needs the custom server in smtp") as info:
        cloud(use_custom_smtp=True)
    assert info.value.field == "use_custom_smtp"


@pytest.mark.parametrize(
    ("smtp", "field", "message"),
    [
        (
            nm.SmtpSettings(host="smtp.c.example", port=25, security=nm.Security.TLS),
            "smtp.port",
            "25 is not allowed for a custom server on Cloud (465, 587, 2525)",
        ),
        (
            nm.SmtpSettings(host="smtp.c.example"),
            "smtp.security",
            "none is not allowed for a custom server on Cloud",
        ),
        (
            nm.SmtpSettings(host="smtp.c.example", security=nm.Security.SSL, port=25),
            "smtp.port",
            "25 is not allowed for a custom server on Cloud",
        ),
        (
            nm.SmtpSettings(host="smtp.c.example", port=587),
            "smtp.security",
            "none is not allowed for a custom server on Cloud (ssl, tls, starttls)",
        ),
    ],
)
@pytest.mark.parametrize("toggled", [True, False])
def test_cloud_custom_server_rules_apply_whether_toggled_or_not(
    smtp: nm.SmtpSettings, field: str, message: str, toggled: bool
) -> None:
    with pytest.raises(nm.ConfigError) as info:
        cloud(smtp=smtp, use_custom_smtp=toggled)
    assert info.value.field == field
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("port", "security"),
    [(465, nm.Security.SSL), (587, nm.Security.STARTTLS), (2525, nm.Security.TLS), (None, nm.Security.TLS)],
)  # fmt: skip
def test_cloud_custom_server_allowed_ports(port: int | None, security: nm.Security) -> None:
    smtp = nm.SmtpSettings(host="smtp.c.example", port=port, security=security)
    assert cloud(smtp=smtp, use_custom_smtp=True).active_smtp == smtp


# --- the active server and sender ---


def test_self_hosted_sends_through_its_own_server_as_its_own_sender() -> None:
    smtp = nm.SmtpSettings(host="smtp.example.com")
    settings = nm.EmailSettings(sender=SENDER, smtp=smtp)
    assert settings.active_smtp is smtp
    assert settings.active_sender == SENDER


def test_self_hosted_without_a_server_has_no_active_smtp() -> None:
    assert nm.EmailSettings(sender=SENDER).active_smtp is None


def test_cloud_managed_service_forces_its_from_address_only() -> None:
    sender = nm.SenderSettings(
        from_address="me@customer.example",
        from_name="Customer",
        reply_to=("help@customer.example",),
    )
    settings = nm.EmailSettings(sender=sender, deployment=CLOUD_PRO, managed=MANAGED)
    assert settings.active_smtp is MANAGED.smtp
    assert settings.active_sender == nm.SenderSettings(
        from_address="notifications@managed.example",
        from_name="Customer",
        reply_to=("help@customer.example",),
    )


def test_cloud_custom_server_sends_as_the_customer() -> None:
    custom = nm.SmtpSettings(host="smtp.customer.example", security=nm.Security.SSL)
    settings = cloud(smtp=custom, use_custom_smtp=True)
    assert settings.active_smtp is custom
    assert settings.active_sender == SENDER


def test_cloud_custom_server_set_but_toggled_off_is_not_used() -> None:
    custom = nm.SmtpSettings(host="smtp.customer.example", security=nm.Security.SSL)
    settings = cloud(smtp=custom)
    assert settings.active_smtp is MANAGED.smtp


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sender", "alerts@example.com"),
        ("deployment", "cloud"),
        ("smtp", "smtp.example.com"),
        ("delivery", None),
        ("use_custom_smtp", "no"),
    ],
)
def test_email_settings_refuse_wrong_types(field: str, value: object) -> None:
    fields: dict[str, Any] = {"sender": SENDER, field: value}
    with pytest.raises(nm.ConfigError) as info:
        nm.EmailSettings(**fields)
    assert info.value.field == field


def test_max_connections_defaults_to_one_and_takes_up_to_64() -> None:
    assert nm.SmtpSettings(host="smtp.example.com").max_connections == 1
    assert nm.SmtpSettings(host="smtp.example.com", max_connections=64).max_connections == 64
