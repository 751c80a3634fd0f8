"""EmailSettings.from_env: every MB_* variable, good and bad, and the variable named at fault."""

from __future__ import annotations

import pytest

import notifymail as nm
from notifymail._table import ROWS
from notifymail.env import outbox_path

# Every variable that sets a settings field, and the field it sets.
ENV_VARIABLES = {row.variable: row.path for row in ROWS if row.path is not None}
BASE = {"MB_EMAIL_FROM_ADDRESS": "alerts@example.com"}
SMTP = {**BASE, "MB_EMAIL_SMTP_HOST": "smtp.example.com"}
CLOUD = {
    **BASE,
    "MB_EMAIL_HOSTING": "cloud",
    "MB_EMAIL_PLAN": "pro",
    "MB_EMAIL_MANAGED_SMTP_HOST": "smtp.managed.example",
    "MB_EMAIL_MANAGED_SMTP_SECURITY": "starttls",
    "MB_EMAIL_MANAGED_FROM_ADDRESS": "notifications@managed.example",
}


def from_env(**variables: str) -> nm.EmailSettings:
    return nm.EmailSettings.from_env(variables)


def test_minimal_environment_has_no_smtp_server() -> None:
    settings = nm.EmailSettings.from_env(BASE)
    assert settings.smtp is None
    assert settings.active_smtp is None
    assert settings.sender == nm.SenderSettings(from_address="alerts@example.com")
    assert settings.deployment == nm.Deployment()
    assert settings.delivery == nm.DeliverySettings()
    assert settings.recipients == nm.RecipientPolicy()


def test_smtp_variables() -> None:
    settings = from_env(
        **SMTP,
        MB_EMAIL_SMTP_PORT="2525",
        MB_EMAIL_SMTP_SECURITY="STARTTLS",
        MB_EMAIL_SMTP_USERNAME="bob",
        MB_EMAIL_SMTP_PASSWORD="hunter22",
    )
    assert settings.smtp == nm.SmtpSettings(
        host="smtp.example.com",
        port=2525,
        security=nm.Security.STARTTLS,
        username="bob",
        password=nm.Secret("hunter22"),
    )


def test_sender_variables() -> None:
    settings = from_env(
        MB_EMAIL_FROM_ADDRESS="Alerts@Example.com",
        MB_EMAIL_FROM_NAME='Acme, Inc. "Alerts"',
        MB_EMAIL_REPLY_TO="help@example.com, ops@example.com",
    )
    assert settings.sender == nm.SenderSettings(
        from_address="Alerts@example.com",
        from_name='Acme, Inc. "Alerts"',
        reply_to=("help@example.com", "ops@example.com"),
    )


def test_reply_to_as_a_json_list() -> None:
    settings = from_env(**BASE, MB_EMAIL_REPLY_TO='["help@example.com", "ops@example.com"]')
    assert settings.sender.reply_to == ("help@example.com", "ops@example.com")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("FALSE", False), ("yes", True), ("no", False), ("1", True), ("0", False)],
)
def test_bcc_enabled_booleans(text: str, expected: bool) -> None:
    assert from_env(**BASE, MB_BCC_ENABLED=text).delivery.bcc_enabled is expected


def test_delivery_variables() -> None:
    settings = from_env(
        **BASE,
        MB_EMAIL_MAX_RECIPIENTS_PER_MESSAGE="0",
        MB_EMAIL_MAX_RECIPIENTS_PER_SECOND="14",
    )
    assert settings.delivery.max_recipients_per_message == 0
    assert settings.delivery.max_recipients_per_second == 14


def test_recipient_variables_on_a_plan_with_the_features() -> None:
    settings = from_env(
        **BASE,
        MB_EMAIL_PLAN="enterprise",
        MB_SUBSCRIPTION_ALLOWED_DOMAINS="Acme.com, partner.example",
        MB_USER_VISIBILITY="group",
    )
    assert settings.recipients.approved_domains == ("acme.com", "partner.example")
    assert settings.recipients.suggestions is nm.SuggestionMode.GROUP


def test_cloud_variables() -> None:
    settings = from_env(
        **CLOUD,
        MB_EMAIL_SMTP_HOST_OVERRIDE="smtp.customer.example",
        MB_EMAIL_SMTP_PORT_OVERRIDE="465",
        MB_EMAIL_SMTP_SECURITY_OVERRIDE="ssl",
        MB_EMAIL_SMTP_USERNAME_OVERRIDE="me",
        MB_EMAIL_SMTP_PASSWORD_OVERRIDE="s3cret-pass",
        MB_SMTP_OVERRIDE_ENABLED="true",
    )
    assert settings.deployment == nm.Deployment(hosting=nm.Hosting.CLOUD, plan=nm.Plan.PRO)
    assert settings.managed == nm.ManagedService(
        smtp=nm.SmtpSettings(host="smtp.managed.example", security=nm.Security.STARTTLS),
        from_address="notifications@managed.example",
    )
    assert settings.use_custom_smtp is True
    assert settings.active_smtp == nm.SmtpSettings(
        host="smtp.customer.example",
        port=465,
        security=nm.Security.SSL,
        username="me",
        password="s3cret-pass",
    )


def test_managed_variables_with_credentials() -> None:
    settings = from_env(
        **CLOUD,
        MB_EMAIL_MANAGED_SMTP_PORT="2587",
        MB_EMAIL_MANAGED_SMTP_USERNAME="operator",
        MB_EMAIL_MANAGED_SMTP_PASSWORD="operator-pass",
    )
    assert settings.managed is not None
    assert settings.managed.smtp.effective_port == 2587
    assert settings.managed.smtp.username == "operator"
    assert settings.active_sender.from_address == "notifications@managed.example"


def test_deployment_argument_wins_over_variables() -> None:
    settings = nm.EmailSettings.from_env(
        {**BASE, "MB_EMAIL_HOSTING": "cloud", "MB_EMAIL_PLAN": "starter"},
        deployment=nm.Deployment(plan=nm.Plan.PRO),
    )
    assert settings.deployment == nm.Deployment(plan=nm.Plan.PRO)


def test_empty_variables_count_as_unset() -> None:
    settings = from_env(
        **BASE,
        MB_EMAIL_SMTP_HOST="",
        MB_EMAIL_SMTP_PORT=" ",
        MB_BCC_ENABLED="",
        MB_EMAIL_FROM_NAME="",
    )
    assert settings.smtp is None
    assert settings.delivery.bcc_enabled is True
    assert settings.sender.from_name is None


def test_environ_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MB_EMAIL_FROM_ADDRESS", "env@example.com")
    monkeypatch.setenv("MB_EMAIL_SMTP_HOST", "smtp.env.example")
    settings = nm.EmailSettings.from_env()
    assert settings.sender.from_address == "env@example.com"
    assert settings.smtp is not None
    assert settings.smtp.host == "smtp.env.example"


@pytest.mark.parametrize(
    ("variables", "env_var", "message"),
    [
        ({"MB_EMAIL_SMTP_PORT": "abc"}, "MB_EMAIL_SMTP_PORT", "MB_EMAIL_SMTP_PORT: 'abc' is not a port number (1-65535)"),
        ({"MB_EMAIL_SMTP_PORT": "0"}, "MB_EMAIL_SMTP_PORT", "MB_EMAIL_SMTP_PORT: 0 is not a port number (1-65535)"),
        ({"MB_EMAIL_SMTP_PORT": "70000"}, "MB_EMAIL_SMTP_PORT", "MB_EMAIL_SMTP_PORT: 70000 is not a port number (1-65535)"),
        ({"MB_EMAIL_SMTP_PORT": "-1"}, "MB_EMAIL_SMTP_PORT", "MB_EMAIL_SMTP_PORT: '-1' is not a port number (1-65535)"),
        ({"MB_EMAIL_SMTP_SECURITY": "tsl"}, "MB_EMAIL_SMTP_SECURITY", "MB_EMAIL_SMTP_SECURITY: 'tsl' is not a security mode (none, ssl, tls, starttls)"),
        ({"MB_EMAIL_SMTP_HOST": "smtp example"}, "MB_EMAIL_SMTP_HOST", "MB_EMAIL_SMTP_HOST: 'smtp example' is not a host name or IP address"),
        ({"MB_EMAIL_SMTP_PASSWORD": "pw"}, "MB_EMAIL_SMTP_USERNAME", "MB_EMAIL_SMTP_USERNAME: a password needs a username"),
        ({"MB_EMAIL_FROM_ADDRESS": "nobody"}, "MB_EMAIL_FROM_ADDRESS", "MB_EMAIL_FROM_ADDRESS: 'nobody' is not a valid email address"),
        ({"MB_EMAIL_REPLY_TO": "ok@example.com,bad@"}, "MB_EMAIL_REPLY_TO", "MB_EMAIL_REPLY_TO: 'bad@' is not a valid email address"),
        ({"MB_EMAIL_REPLY_TO": "[1, 2]"}, "MB_EMAIL_REPLY_TO", "MB_EMAIL_REPLY_TO: is not a JSON list of addresses"),
        ({"MB_EMAIL_REPLY_TO": "[oops"}, "MB_EMAIL_REPLY_TO", "MB_EMAIL_REPLY_TO: is not a JSON list of addresses"),
        ({"MB_BCC_ENABLED": "maybe"}, "MB_BCC_ENABLED", "MB_BCC_ENABLED: 'maybe' is not a boolean (true/false/yes/no/1/0)"),
        ({"MB_EMAIL_MAX_RECIPIENTS_PER_MESSAGE": "ten"}, "MB_EMAIL_MAX_RECIPIENTS_PER_MESSAGE", "MB_EMAIL_MAX_RECIPIENTS_PER_MESSAGE: 'ten' is not a count (0 or more)"),
        ({"MB_EMAIL_MAX_RECIPIENTS_PER_SECOND": "1.5"}, "MB_EMAIL_MAX_RECIPIENTS_PER_SECOND", "MB_EMAIL_MAX_RECIPIENTS_PER_SECOND: '1.5' is not a count (0 or more)"),
        ({"MB_SUBSCRIPTION_ALLOWED_DOMAINS": "acme.com"}, "MB_SUBSCRIPTION_ALLOWED_DOMAINS", "MB_SUBSCRIPTION_ALLOWED_DOMAINS needs the email-allow-list feature (Pro or Enterprise)"),
        ({"MB_EMAIL_PLAN": "pro", "MB_SUBSCRIPTION_ALLOWED_DOMAINS": "acme.com,a..b"}, "MB_SUBSCRIPTION_ALLOWED_DOMAINS", "MB_SUBSCRIPTION_ALLOWED_DOMAINS: 'a..b' is not a valid domain"),
        ({"MB_USER_VISIBILITY": "group"}, "MB_USER_VISIBILITY", "MB_USER_VISIBILITY needs the email-restrict-recipients feature (Pro or Enterprise)"),
        ({"MB_USER_VISIBILITY": "friends"}, "MB_USER_VISIBILITY", "MB_USER_VISIBILITY: 'friends' is not a user visibility (all, group, none)"),
        ({"MB_EMAIL_HOSTING": "moon"}, "MB_EMAIL_HOSTING", "MB_EMAIL_HOSTING: 'moon' is not a hosting (self-hosted, cloud)"),
        ({"MB_EMAIL_PLAN": "gold"}, "MB_EMAIL_PLAN", "MB_EMAIL_PLAN: 'gold' is not a plan (oss, starter, pro, enterprise)"),
        ({"MB_EMAIL_PLAN": "starter"}, "MB_EMAIL_PLAN", "MB_EMAIL_PLAN: starter is Cloud only"),
        ({"MB_EMAIL_HOSTING": "cloud"}, "MB_EMAIL_PLAN", "MB_EMAIL_PLAN: oss is self-hosted only"),
        ({"MB_EMAIL_SMTP_HOST_OVERRIDE": "smtp.c.example"}, "MB_EMAIL_SMTP_HOST_OVERRIDE", "MB_EMAIL_SMTP_HOST_OVERRIDE: is for Cloud deployments"),
        ({"MB_SMTP_OVERRIDE_ENABLED": "true"}, "MB_SMTP_OVERRIDE_ENABLED", "MB_SMTP_OVERRIDE_ENABLED: is for Cloud deployments"),
        ({"MB_EMAIL_MANAGED_SMTP_HOST": "m.example", "MB_EMAIL_MANAGED_FROM_ADDRESS": "n@m.example"}, "MB_EMAIL_MANAGED_SMTP_HOST", "MB_EMAIL_MANAGED_SMTP_HOST: the managed SMTP service exists on Cloud only"),
    ],
)  # fmt: skip
def test_bad_self_hosted_value_names_its_variable(
    variables: dict[str, str], env_var: str, message: str
) -> None:
    with pytest.raises(nm.ConfigError) as info:
        nm.EmailSettings.from_env({**SMTP, **variables})
    assert info.value.env_var == env_var
    assert info.value.field == ENV_VARIABLES[env_var]
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    ("variables", "env_var", "message"),
    [
        ({"MB_EMAIL_SMTP_HOST": "smtp.example.com"}, "MB_EMAIL_SMTP_HOST", "MB_EMAIL_SMTP_HOST: is for self-hosted deployments"),
        ({"MB_EMAIL_SMTP_HOST_OVERRIDE": "c.example", "MB_EMAIL_SMTP_PORT_OVERRIDE": "25", "MB_EMAIL_SMTP_SECURITY_OVERRIDE": "tls"}, "MB_EMAIL_SMTP_PORT_OVERRIDE", "MB_EMAIL_SMTP_PORT_OVERRIDE: 25 is not allowed for a custom server on Cloud (465, 587, 2525)"),
        ({"MB_EMAIL_SMTP_HOST_OVERRIDE": "c.example", "MB_EMAIL_SMTP_PORT_OVERRIDE": "587"}, "MB_EMAIL_SMTP_SECURITY_OVERRIDE", "MB_EMAIL_SMTP_SECURITY_OVERRIDE: none is not allowed for a custom server on Cloud"),
        ({"MB_EMAIL_SMTP_HOST_OVERRIDE": "c.example", "MB_EMAIL_SMTP_PORT_OVERRIDE": "x"}, "MB_EMAIL_SMTP_PORT_OVERRIDE", "MB_EMAIL_SMTP_PORT_OVERRIDE: 'x' is not a port number (1-65535)"),
        ({"MB_SMTP_OVERRIDE_ENABLED": "true"}, "MB_SMTP_OVERRIDE_ENABLED", "MB_SMTP_OVERRIDE_ENABLED: needs the custom server in smtp"),
        ({"MB_EMAIL_PLAN": "starter", "MB_EMAIL_SMTP_HOST_OVERRIDE": "c.example", "MB_EMAIL_SMTP_SECURITY_OVERRIDE": "ssl", "MB_SMTP_OVERRIDE_ENABLED": "yes"}, "MB_SMTP_OVERRIDE_ENABLED", "MB_SMTP_OVERRIDE_ENABLED needs the cloud-custom-smtp feature (Pro or Enterprise on Cloud)"),
        ({"MB_SMTP_OVERRIDE_ENABLED": "sure"}, "MB_SMTP_OVERRIDE_ENABLED", "MB_SMTP_OVERRIDE_ENABLED: 'sure' is not a boolean"),
        ({"MB_EMAIL_MANAGED_SMTP_HOST": ""}, "MB_EMAIL_MANAGED_SMTP_HOST", "MB_EMAIL_MANAGED_SMTP_HOST: is not set, but MB_EMAIL_MANAGED_SMTP_SECURITY and MB_EMAIL_MANAGED_FROM_ADDRESS are"),
        ({"MB_EMAIL_MANAGED_FROM_ADDRESS": ""}, "MB_EMAIL_MANAGED_FROM_ADDRESS", "MB_EMAIL_MANAGED_FROM_ADDRESS: is not set, but MB_EMAIL_MANAGED_SMTP_HOST and MB_EMAIL_MANAGED_SMTP_SECURITY are"),
        ({"MB_EMAIL_MANAGED_FROM_ADDRESS": "nope"}, "MB_EMAIL_MANAGED_FROM_ADDRESS", "MB_EMAIL_MANAGED_FROM_ADDRESS: 'nope' is not a valid email address"),
        ({"MB_EMAIL_MANAGED_SMTP_PORT": "99999"}, "MB_EMAIL_MANAGED_SMTP_PORT", "MB_EMAIL_MANAGED_SMTP_PORT: 99999 is not a port number (1-65535)"),
        ({"MB_EMAIL_MANAGED_SMTP_SECURITY": "plain"}, "MB_EMAIL_MANAGED_SMTP_SECURITY", "MB_EMAIL_MANAGED_SMTP_SECURITY: 'plain' is not a security mode (none, ssl, tls, starttls)"),
    ],
)  # fmt: skip
def test_bad_cloud_value_names_its_variable(
    variables: dict[str, str], env_var: str, message: str
) -> None:
    with pytest.raises(nm.ConfigError) as info:
        nm.EmailSettings.from_env({**CLOUD, **variables})
    assert info.value.env_var == env_var
    assert str(info.value).startswith(message)


def test_cloud_without_managed_service_names_its_variable() -> None:
    with pytest.raises(nm.ConfigError) as info:
        from_env(**BASE, MB_EMAIL_HOSTING="cloud", MB_EMAIL_PLAN="pro")
    assert info.value.env_var == "MB_EMAIL_MANAGED_SMTP_HOST"
    assert "Cloud needs the managed SMTP service" in str(info.value)


def test_missing_from_address_names_its_variable() -> None:
    with pytest.raises(nm.ConfigError) as info:
        nm.EmailSettings.from_env({"MB_EMAIL_SMTP_HOST": "smtp.example.com"})
    assert info.value.env_var == "MB_EMAIL_FROM_ADDRESS"
    assert str(info.value) == ("MB_EMAIL_FROM_ADDRESS: is not set; it is required")


def test_feature_error_from_env_keeps_its_feature() -> None:
    with pytest.raises(nm.FeatureNotAvailable) as info:
        from_env(**BASE, MB_SUBSCRIPTION_ALLOWED_DOMAINS="acme.com")
    assert info.value.feature is nm.Feature.EMAIL_ALLOW_LIST
    assert info.value.env_var == "MB_SUBSCRIPTION_ALLOWED_DOMAINS"


def test_password_from_env_never_in_an_error() -> None:
    with pytest.raises(nm.ConfigError) as info:
        from_env(**SMTP, MB_EMAIL_SMTP_PASSWORD="hunter2-secret", MB_EMAIL_SMTP_PORT="x")
    assert "hunter2-secret" not in str(info.value)
    assert "hunter2-secret" not in repr(info.value)


def test_unrelated_variables_are_ignored() -> None:
    settings = from_env(**BASE, PATH="/usr/bin", MB_DB_TYPE="postgres")
    assert settings.smtp is None


# --- names notifymail does not know ---


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        ("MB_EMAIL_SMTP_SECURTY", "MB_EMAIL_SMTP_SECURTY: unknown variable; did you mean MB_EMAIL_SMTP_SECURITY?"),
        ("MB_SMTP_OVERIDE_ENABLED", "MB_SMTP_OVERIDE_ENABLED: unknown variable; did you mean MB_SMTP_OVERRIDE_ENABLED?"),
        ("NOTIFYMAIL_SMTP_TIMOUT", "NOTIFYMAIL_SMTP_TIMOUT: unknown variable; did you mean NOTIFYMAIL_SMTP_TIMEOUT?"),
        ("MB_EMAIL_FROM_ADRESS", "MB_EMAIL_FROM_ADRESS: unknown variable; did you mean MB_EMAIL_FROM_ADDRESS?"),
        ("NOTIFYMAIL_COLOUR", "NOTIFYMAIL_COLOUR: unknown variable"),
    ],
)  # fmt: skip
def test_an_unknown_variable_of_ours_is_refused_with_what_it_was_meant_to_be(
    variable: str, message: str
) -> None:
    # A typo must never quietly turn encryption off: MB_EMAIL_SMTP_SECURTY=starttls
    # used to send in plaintext.
    with pytest.raises(nm.ConfigError) as info:
        nm.EmailSettings.from_env({**SMTP, variable: "starttls"})
    assert str(info.value) == message
    assert info.value.env_var == variable


def test_metabases_other_variables_and_empty_unknown_ones_are_left_alone() -> None:
    settings = from_env(
        **SMTP, MB_DB_TYPE="postgres", MB_JETTY_PORT="3000", MB_EMAIL_SMTP_SECURTY=""
    )
    assert settings.smtp is not None


# --- notifymail's own variables ---


def test_notifymail_variables_set_their_fields() -> None:
    settings = from_env(
        **SMTP,
        NOTIFYMAIL_SMTP_TIMEOUT="2.5",
        NOTIFYMAIL_SMTP_CAFILE="/etc/ssl/private-ca.pem",
        NOTIFYMAIL_SMTP_MAX_CONNECTIONS="8",
        NOTIFYMAIL_RETRY_MAX_ATTEMPTS="1",
        NOTIFYMAIL_OUTBOX="/var/lib/notifymail/outbox.db",
    )
    assert settings.smtp is not None
    assert (settings.smtp.timeout, settings.smtp.cafile) == (2.5, "/etc/ssl/private-ca.pem")
    assert settings.smtp.max_connections == 8
    assert settings.delivery.retry == nm.RetryPolicy(max_attempts=1)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("NOTIFYMAIL_SMTP_TIMEOUT", "soon", "NOTIFYMAIL_SMTP_TIMEOUT: 'soon' is not a number"),
        ("NOTIFYMAIL_SMTP_TIMEOUT", "0", "NOTIFYMAIL_SMTP_TIMEOUT: 0.0 is not a number > 0"),
        ("NOTIFYMAIL_SMTP_MAX_CONNECTIONS", "0", "NOTIFYMAIL_SMTP_MAX_CONNECTIONS: 0 is not a number of connections (1-64)"),
        ("NOTIFYMAIL_SMTP_MAX_CONNECTIONS", "65", "NOTIFYMAIL_SMTP_MAX_CONNECTIONS: 65 is not a number of connections (1-64)"),
        ("NOTIFYMAIL_RETRY_MAX_ATTEMPTS", "0", "NOTIFYMAIL_RETRY_MAX_ATTEMPTS: 0 is not a number of attempts (1 or more)"),
        ("NOTIFYMAIL_SMTP_CAFILE", "/etc/ca\x00.pem", "NOTIFYMAIL_SMTP_CAFILE: must not contain a line break"),
    ],
)  # fmt: skip
def test_a_bad_notifymail_value_names_its_variable(
    variable: str, value: str, message: str
) -> None:
    with pytest.raises(nm.ConfigError) as info:
        nm.EmailSettings.from_env({**SMTP, variable: value})
    assert info.value.env_var == variable
    assert info.value.field == ENV_VARIABLES[variable]
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    "variables",
    [{"MB_EMAIL_SMTP_PORT": "2525"}, {"NOTIFYMAIL_SMTP_TIMEOUT": "3"}],
    ids=["port", "timeout"],
)
def test_a_server_variable_without_the_host_names_the_host(variables: dict[str, str]) -> None:
    with pytest.raises(nm.ConfigError) as info:
        nm.EmailSettings.from_env({**BASE, **variables})
    assert info.value.env_var == "MB_EMAIL_SMTP_HOST"
    assert str(info.value) == f"MB_EMAIL_SMTP_HOST: is not set, but {next(iter(variables))} is"


def test_outbox_path_reads_notifymail_outbox() -> None:
    assert outbox_path({"NOTIFYMAIL_OUTBOX": " /var/lib/mail.db "}) == "/var/lib/mail.db"
    assert outbox_path({"NOTIFYMAIL_OUTBOX": ""}) is None
    assert outbox_path({}) is None
    with pytest.raises(nm.ConfigError) as info:
        outbox_path({"NOTIFYMAIL_OUTBOX": "mail\n.db"})
    assert info.value.env_var == "NOTIFYMAIL_OUTBOX"


# --- hostile sizes: a typed, one-line error, never ValueError or RecursionError ---


@pytest.mark.parametrize(
    "variable",
    [
        "MB_EMAIL_SMTP_PORT",
        "MB_EMAIL_MAX_RECIPIENTS_PER_MESSAGE",
        "MB_EMAIL_MAX_RECIPIENTS_PER_SECOND",
        "NOTIFYMAIL_SMTP_MAX_CONNECTIONS",
        "NOTIFYMAIL_RETRY_MAX_ATTEMPTS",
        "NOTIFYMAIL_SMTP_TIMEOUT",
    ],
)
def test_a_5000_digit_number_is_a_config_error_of_one_short_line(variable: str) -> None:
    with pytest.raises(nm.ConfigError) as info:
        nm.EmailSettings.from_env({**SMTP, variable: "9" * 5000})
    assert info.value.env_var == variable
    assert "\n" not in str(info.value)
    assert len(str(info.value)) < 200


@pytest.mark.parametrize("variable", ["MB_EMAIL_REPLY_TO", "MB_SUBSCRIPTION_ALLOWED_DOMAINS"])
def test_a_list_nested_100000_deep_is_a_config_error_not_a_recursion_error(
    variable: str,
) -> None:
    with pytest.raises(nm.ConfigError) as info:
        nm.EmailSettings.from_env({**SMTP, "MB_EMAIL_PLAN": "pro", variable: "[" * 100_000})
    assert info.value.env_var == variable
    assert str(info.value).startswith(f"{variable}: is not a JSON list of")


def test_allowed_domains_read_a_json_list_too() -> None:
    settings = from_env(
        **BASE, MB_EMAIL_PLAN="pro", MB_SUBSCRIPTION_ALLOWED_DOMAINS='["Acme.com", "b.example"]'
    )
    assert settings.recipients.approved_domains == ("acme.com", "b.example")


@pytest.mark.parametrize(("text", "expected"), [("on", True), ("OFF", False), (" Yes ", True)])
def test_on_and_off_are_booleans_too(text: str, expected: bool) -> None:
    assert from_env(**BASE, MB_BCC_ENABLED=text).delivery.bcc_enabled is expected


# --- a private certificate authority, from the environment ---


def test_notifymail_smtp_cafile_trusts_a_private_ca(smtp_server, server_tls, ca_file) -> None:
    server = smtp_server(implicit_tls=server_tls)
    settings = from_env(
        **BASE,
        MB_EMAIL_SMTP_HOST="127.0.0.1",
        MB_EMAIL_SMTP_PORT=str(server.port),
        MB_EMAIL_SMTP_SECURITY="ssl",
        NOTIFYMAIL_SMTP_CAFILE=str(ca_file),
    )
    assert nm.Mailer(settings).send_test_email("ann@example.com").ok
    assert len(server.handler.messages) == 1


def test_ssl_cert_file_trusts_a_private_ca_without_cafile(
    smtp_server, server_tls, ca_file, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = smtp_server(implicit_tls=server_tls)
    settings = from_env(
        **BASE,
        MB_EMAIL_SMTP_HOST="127.0.0.1",
        MB_EMAIL_SMTP_PORT=str(server.port),
        MB_EMAIL_SMTP_SECURITY="ssl",
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    assert nm.Mailer(settings).send_test_email("ann@example.com").ok
    assert len(server.handler.messages) == 1
