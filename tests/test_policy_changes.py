"""apply_changes: the admin form's save, keyed by Metabase setting names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

import notifymail as nm

ADMIN = nm.Person("admin@example.com", is_admin=True)
SENDER = nm.SenderSettings(from_address="reports@example.com", from_name="Reports")
SERVER = nm.SmtpSettings(
    host="mail.example.com",
    port=587,
    security=nm.Security.STARTTLS,
    username="mailer",
    password="hunter2-secret",
)
MANAGED = nm.ManagedService(
    smtp=nm.SmtpSettings(host="smtp.operator.example", port=587, security=nm.Security.STARTTLS),
    from_address="noreply@operator.example",
)
SELF_HOSTED = nm.EmailSettings(
    deployment=nm.Deployment(plan=nm.Plan.PRO), sender=SENDER, smtp=SERVER
)
OSS = nm.EmailSettings(sender=SENDER, smtp=SERVER)
CLOUD = nm.EmailSettings(
    deployment=nm.Deployment(hosting=nm.Hosting.CLOUD, plan=nm.Plan.PRO),
    sender=SENDER,
    smtp=SERVER,
    managed=MANAGED,
)
STARTER = nm.EmailSettings(
    deployment=nm.Deployment(hosting=nm.Hosting.CLOUD, plan=nm.Plan.STARTER),
    sender=SENDER,
    managed=MANAGED,
)

Get = Callable[[nm.EmailSettings], Any]


def _smtp(settings: nm.EmailSettings) -> nm.SmtpSettings:
    assert settings.smtp is not None
    return settings.smtp


def _password(settings: nm.EmailSettings) -> str | None:
    password = _smtp(settings).password
    return None if password is None else password.reveal()


# (setting name, value as a form sends it, what to read back, expected)
SELF_HOSTED_CHANGES = [
    ("email-smtp-host", " relay.example.org ", lambda s: _smtp(s).host, "relay.example.org"),
    ("email-smtp-port", "2525", lambda s: _smtp(s).port, 2525),
    ("email-smtp-port", 465, lambda s: _smtp(s).port, 465),
    ("email-smtp-security", "SSL", lambda s: _smtp(s).security, nm.Security.SSL),
    ("email-smtp-username", "robot", lambda s: _smtp(s).username, "robot"),
    ("email-smtp-password", "n3w-pass", _password, "n3w-pass"),
    ("email-from-address", "Ops@Example.ORG", lambda s: s.sender.from_address, "Ops@example.org"),
    ("email-from-name", 'Reports, "Inc."', lambda s: s.sender.from_name, 'Reports, "Inc."'),
    (
        "email-reply-to",
        "a@example.com, b@example.org",
        lambda s: s.sender.reply_to,
        ("a@example.com", "b@example.org"),
    ),
    ("email-reply-to", ["a@example.com"], lambda s: s.sender.reply_to, ("a@example.com",)),
    ("bcc-enabled?", "false", lambda s: s.delivery.bcc_enabled, False),
    ("bcc-enabled?", False, lambda s: s.delivery.bcc_enabled, False),
    (
        "subscription-allowed-domains",
        "Example.com, xn--bcher-kva.de",
        lambda s: s.recipients.approved_domains,
        ("example.com", "bücher.de"),
    ),
    (
        "subscription-allowed-domains",
        ["example.com"],
        lambda s: s.recipients.approved_domains,
        ("example.com",),
    ),
    ("user-visibility", "group", lambda s: s.recipients.suggestions, nm.SuggestionMode.GROUP),
    (
        "email-max-recipients-per-message",
        "10",
        lambda s: s.delivery.max_recipients_per_message,
        10,
    ),
    ("email-max-recipients-per-second", 5, lambda s: s.delivery.max_recipients_per_second, 5),
]


# A new host, port or security needs the password entered again (see
# test_a_new_host_needs_the_password_again and its port-or-security twin).
_PASSWORD_AGAIN = {
    **{
        f"email-smtp-{field}": {"email-smtp-password": "new-pass-word"}
        for field in ("host", "port", "security")
    },
    **{
        f"email-smtp-{field}-override": {"email-smtp-password-override": "new-pass-word"}
        for field in ("host", "port", "security")
    },
}


@pytest.mark.parametrize(
    ("name", "value", "read", "expected"),
    [pytest.param(*case, id=f"{case[0]}={case[1]!r}") for case in SELF_HOSTED_CHANGES],
)
def test_each_setting_name_sets_its_field(
    name: str, value: object, read: Get, expected: object
) -> None:
    changes = {name: value, **_PASSWORD_AGAIN.get(name, {})}
    updated = nm.apply_changes(SELF_HOSTED, changes, ADMIN)
    assert read(updated) == expected
    assert read(SELF_HOSTED) != expected  # the change is visible, the original untouched


CLEARED = [
    ("email-smtp-port", lambda s: _smtp(s).port, None),
    ("email-from-name", lambda s: s.sender.from_name, None),
    ("email-reply-to", lambda s: s.sender.reply_to, ()),
    ("bcc-enabled?", lambda s: s.delivery.bcc_enabled, True),
    ("subscription-allowed-domains", lambda s: s.recipients.approved_domains, ()),
    ("user-visibility", lambda s: s.recipients.suggestions, nm.SuggestionMode.ALL),
    ("email-max-recipients-per-message", lambda s: s.delivery.max_recipients_per_message, 50),
    ("email-max-recipients-per-second", lambda s: s.delivery.max_recipients_per_second, None),
    ("email-smtp-host", lambda s: s.smtp, None),
]


@pytest.mark.parametrize("empty", [None, "", "  "], ids=["none", "empty", "blank"])
@pytest.mark.parametrize(
    ("name", "read", "default"), [pytest.param(*case, id=case[0]) for case in CLEARED]
)
def test_none_or_empty_clears_a_setting_back_to_its_default(
    name: str, read: Get, default: object, empty: object
) -> None:
    start = nm.apply_changes(
        SELF_HOSTED,
        {
            "email-reply-to": "a@example.com",
            "bcc-enabled?": False,
            "subscription-allowed-domains": "example.com",
            "user-visibility": "none",
            "email-max-recipients-per-message": 7,
            "email-max-recipients-per-second": 3,
        },
        ADMIN,
    )
    assert read(start) != default
    assert read(nm.apply_changes(start, {name: empty}, ADMIN)) == default


def test_clearing_the_username_and_password_together_removes_the_credentials() -> None:
    updated = nm.apply_changes(
        SELF_HOSTED, {"email-smtp-username": None, "email-smtp-password": None}, ADMIN
    )
    assert not _smtp(updated).has_credentials
    assert _smtp(updated).host == "mail.example.com"


def test_the_masked_password_keeps_the_stored_one() -> None:
    # Metabase: the form shows the masked password and sends it back unchanged.
    masked = SERVER.password.masked() if SERVER.password else ""
    updated = nm.apply_changes(
        SELF_HOSTED, {"email-smtp-password": masked, "email-smtp-username": "robot"}, ADMIN
    )
    assert _password(updated) == "hunter2-secret"
    assert _smtp(updated).username == "robot"


def test_the_masked_form_of_a_short_password_keeps_it_too() -> None:
    current = nm.apply_changes(SELF_HOSTED, {"email-smtp-password": "abc"}, ADMIN)
    updated = nm.apply_changes(current, {"email-smtp-password": "**********"}, ADMIN)
    assert _password(updated) == "abc"


def test_a_server_can_be_set_up_from_nothing() -> None:
    bare = nm.EmailSettings(sender=SENDER)
    updated = nm.apply_changes(
        bare,
        {
            "email-smtp-host": "relay.example.org",
            "email-smtp-port": "465",
            "email-smtp-security": "ssl",
            "email-smtp-username": "u",
            "email-smtp-password": "p4ssword",
        },
        ADMIN,
    )
    assert _smtp(updated) == nm.SmtpSettings(
        host="relay.example.org", port=465, security="ssl", username="u", password="p4ssword"
    )


def test_clearing_the_host_while_setting_another_server_field_names_the_host() -> None:
    with pytest.raises(nm.ConfigError) as caught:
        nm.apply_changes(SELF_HOSTED, {"email-smtp-host": None, "email-smtp-port": 25}, ADMIN)
    assert caught.value.field == "email-smtp-host"
    assert "email-smtp-port" in str(caught.value)


def test_a_server_field_without_any_host_names_the_host() -> None:
    with pytest.raises(nm.ConfigError) as caught:
        nm.apply_changes(nm.EmailSettings(sender=SENDER), {"email-smtp-port": 25}, ADMIN)
    assert caught.value.field == "email-smtp-host"


INVALID = [
    ("email-smtp-port", "abc"),
    ("email-smtp-port", "-1"),
    ("email-smtp-port", 70000),
    ("email-smtp-port", True),
    ("email-smtp-security", "tls1.3"),
    ("email-smtp-host", "mail example.com"),
    ("email-smtp-username", None),  # the password stays: both or neither
    ("email-smtp-password", 1234),
    ("email-from-address", "not-an-address"),
    ("email-from-address", None),
    ("email-from-name", "Reports\r\nBcc: x@evil.example"),
    ("email-reply-to", "a@example.com, b@@example.com"),
    ("email-reply-to", 42),
    ("bcc-enabled?", "maybe"),
    ("bcc-enabled?", 1),
    ("subscription-allowed-domains", "example.com, bad domain"),
    ("user-visibility", "some"),
    ("email-max-recipients-per-message", -1),
    ("email-max-recipients-per-message", "ten"),
    ("email-max-recipients-per-second", 2.5),
    ("no-such-setting", "x"),
]


@pytest.mark.parametrize(
    ("name", "value"), [pytest.param(*case, id=f"{case[0]}={case[1]!r}") for case in INVALID]
)
def test_an_invalid_value_is_a_config_error_naming_the_setting(name: str, value: object) -> None:
    with pytest.raises(nm.ConfigError) as caught:
        nm.apply_changes(SELF_HOSTED, {name: value}, ADMIN)
    assert caught.value.field == name
    assert str(caught.value).startswith(name)
    assert "\n" not in str(caught.value)


def test_a_bad_password_never_appears_in_the_error() -> None:
    with pytest.raises(nm.ConfigError) as caught:
        nm.apply_changes(SELF_HOSTED, {"email-smtp-password": "topsecret\nvalue"}, ADMIN)
    assert caught.value.field == "email-smtp-password"
    assert "topsecret" not in str(caught.value)
    assert "topsecret" not in repr(caught.value)


def test_nothing_changes_unless_every_value_is_valid() -> None:
    with pytest.raises(nm.ConfigError) as caught:
        nm.apply_changes(
            SELF_HOSTED,
            {
                "email-smtp-host": "relay.example.org",
                "email-from-name": "New name",
                "email-max-recipients-per-message": 10,
                "email-smtp-port": "not a port",
            },
            ADMIN,
        )
    assert caught.value.field == "email-smtp-port"
    assert _smtp(SELF_HOSTED).host == "mail.example.com"
    assert SELF_HOSTED.sender.from_name == "Reports"


# --- permission -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actor", "current"),
    [
        pytest.param(nm.Person("u@example.com"), SELF_HOSTED, id="plain-user"),
        pytest.param(
            nm.Person("a@example.com", is_admin=True, active=False),
            SELF_HOSTED,
            id="inactive-admin",
        ),
        # Settings access is an advanced permission: a paid feature.
        pytest.param(
            nm.Person("s@example.com", settings_access=True), OSS, id="settings-access-oss"
        ),
    ],
)
def test_only_someone_who_may_manage_email_can_save(
    actor: nm.Person, current: nm.EmailSettings
) -> None:
    # An invalid value is not reported to someone who may not save at all.
    with pytest.raises(nm.PermissionDenied):
        nm.apply_changes(current, {"email-smtp-port": "abc"}, actor)


def test_settings_access_may_save_with_advanced_permissions() -> None:
    actor = nm.Person("s@example.com", settings_access=True)
    assert (
        nm.apply_changes(SELF_HOSTED, {"email-from-name": "Ops"}, actor).sender.from_name == "Ops"
    )


# --- features -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "name", "value", "feature"),
    [
        pytest.param(
            OSS,
            "subscription-allowed-domains",
            "example.com",
            nm.Feature.EMAIL_ALLOW_LIST,
            id="allow-list-oss",
        ),
        pytest.param(
            OSS,
            "user-visibility",
            "group",
            nm.Feature.EMAIL_RESTRICT_RECIPIENTS,
            id="visibility-oss",
        ),
        pytest.param(
            STARTER,
            "user-visibility",
            "none",
            nm.Feature.EMAIL_RESTRICT_RECIPIENTS,
            id="visibility-starter",
        ),
        pytest.param(
            STARTER,
            "smtp-override-enabled",
            True,
            nm.Feature.CLOUD_CUSTOM_SMTP,
            id="custom-smtp-starter",
        ),
    ],
)
def test_a_gated_value_without_the_feature_is_refused(
    current: nm.EmailSettings, name: str, value: object, feature: nm.Feature
) -> None:
    # Stricter than Metabase, which hides the field: a restriction an admin believes is
    # on must never be silently off.
    changes: dict[str, object] = {name: value}
    if name == "smtp-override-enabled":
        changes["email-smtp-host-override"] = "smtp.customer.example"
        changes["email-smtp-port-override"] = 587
        changes["email-smtp-security-override"] = "starttls"
    with pytest.raises(nm.FeatureNotAvailable) as caught:
        nm.apply_changes(current, changes, ADMIN)
    assert caught.value.feature is feature
    assert caught.value.field == name
    assert str(caught.value).startswith(name)


def test_the_default_of_a_gated_setting_is_fine_without_the_feature() -> None:
    updated = nm.apply_changes(
        OSS, {"subscription-allowed-domains": None, "user-visibility": "all"}, ADMIN
    )
    assert updated.recipients == nm.RecipientPolicy()


# --- Cloud versus self-hosted names ---------------------------------------------------

CLOUD_CHANGES = [
    (
        "email-smtp-host-override",
        "smtp.customer.example",
        lambda s: _smtp(s).host,
        "smtp.customer.example",
    ),
    ("email-smtp-port-override", "2525", lambda s: _smtp(s).port, 2525),
    ("email-smtp-security-override", "ssl", lambda s: _smtp(s).security, nm.Security.SSL),
    ("email-smtp-username-override", "robot", lambda s: _smtp(s).username, "robot"),
    ("email-smtp-password-override", "n3w-pass", _password, "n3w-pass"),
    ("smtp-override-enabled", "true", lambda s: s.use_custom_smtp, True),
    ("email-from-name", "Ops", lambda s: s.sender.from_name, "Ops"),
]


@pytest.mark.parametrize(
    ("name", "value", "read", "expected"),
    [pytest.param(*case, id=case[0]) for case in CLOUD_CHANGES],
)
def test_on_cloud_the_override_names_set_the_customers_server(
    name: str, value: object, read: Get, expected: object
) -> None:
    changes = {name: value, **_PASSWORD_AGAIN.get(name, {})}
    updated = nm.apply_changes(CLOUD, changes, ADMIN)
    assert read(updated) == expected
    assert updated.managed == MANAGED  # no setting name reaches the operator's service


def test_switching_cloud_to_the_customers_server_makes_it_active() -> None:
    updated = nm.apply_changes(CLOUD, {"smtp-override-enabled": True}, ADMIN)
    assert updated.active_smtp == SERVER
    assert (
        nm.apply_changes(updated, {"smtp-override-enabled": None}, ADMIN).active_smtp
        == MANAGED.smtp
    )


def test_cloud_override_without_a_customer_server_names_the_toggle() -> None:
    with pytest.raises(nm.ConfigError) as caught:
        nm.apply_changes(
            CLOUD, {"email-smtp-host-override": None, "smtp-override-enabled": True}, ADMIN
        )
    assert caught.value.field == "smtp-override-enabled"


def test_cloud_rules_for_the_customer_server_name_the_override_setting() -> None:
    with pytest.raises(nm.ConfigError) as caught:
        nm.apply_changes(CLOUD, {"email-smtp-port-override": 25}, ADMIN)
    assert caught.value.field == "email-smtp-port-override"
    assert str(caught.value).startswith("email-smtp-port-override")


@pytest.mark.parametrize(
    ("current", "name"),
    [
        *[
            pytest.param(CLOUD, f"email-smtp-{field}", id=f"cloud-plain-{field}")
            for field in ("host", "port", "security", "username", "password")
        ],
        *[
            pytest.param(SELF_HOSTED, f"email-smtp-{field}-override", id=f"self-override-{field}")
            for field in ("host", "port", "security", "username", "password")
        ],
        pytest.param(SELF_HOSTED, "smtp-override-enabled", id="self-override-enabled"),
    ],
)
def test_names_of_the_other_hosting_are_refused(current: nm.EmailSettings, name: str) -> None:
    with pytest.raises(nm.ConfigError) as caught:
        nm.apply_changes(current, {name: "x"}, ADMIN)
    assert caught.value.field == name
    assert "Cloud" in str(caught.value) or "self-hosted" in str(caught.value)


@pytest.mark.parametrize("password", [None, "masked"], ids=["omitted", "masked"])
def test_a_new_host_needs_the_password_again(password: str | None) -> None:
    # Stricter than Metabase: someone who may edit the form cannot send the stored
    # password to a server of their own by changing the host alone.
    changes: dict[str, object] = {"email-smtp-host": "smtp.attacker.example"}
    if password == "masked":
        stored = _smtp(SELF_HOSTED).password
        assert stored is not None
        changes["email-smtp-password"] = stored.masked()
    with pytest.raises(nm.ConfigError) as caught:
        nm.apply_changes(SELF_HOSTED, changes, ADMIN)
    assert caught.value.field == "email-smtp-password"
    assert "hunter2" not in str(caught.value)


def test_the_same_host_in_another_case_keeps_the_password() -> None:
    host = _smtp(SELF_HOSTED).host.upper()
    updated = nm.apply_changes(SELF_HOSTED, {"email-smtp-host": host}, ADMIN)
    assert _smtp(updated).password == _smtp(SELF_HOSTED).password


@pytest.mark.parametrize("password", [None, "masked"], ids=["omitted", "masked"])
@pytest.mark.parametrize(
    ("current", "changes"),
    [
        pytest.param(SELF_HOSTED, {"email-smtp-port": 25}, id="port"),
        pytest.param(SELF_HOSTED, {"email-smtp-security": "none"}, id="security"),
        pytest.param(
            SELF_HOSTED, {"email-smtp-port": 2525, "email-smtp-security": "tls"}, id="both"
        ),
        pytest.param(CLOUD, {"email-smtp-port-override": 2525}, id="cloud-port"),
        pytest.param(CLOUD, {"email-smtp-security-override": "ssl"}, id="cloud-security"),
    ],
)
def test_a_new_port_or_security_needs_the_password_again_too(
    current: nm.EmailSettings, changes: dict[str, object], password: str | None
) -> None:
    # Security none and a port of the editor's choosing on the same host would send
    # the stored credentials in plaintext to whoever listens there.
    password_name = "email-smtp-password" + ("-override" if current is CLOUD else "")
    if password == "masked":
        stored = _smtp(current).password
        assert stored is not None
        changes = {**changes, password_name: stored.masked()}
    with pytest.raises(nm.ConfigError) as caught:
        nm.apply_changes(current, changes, ADMIN)
    assert caught.value.field == password_name
    assert "hunter2" not in str(caught.value)


def test_a_new_port_with_the_password_entered_again_or_cleared_is_saved() -> None:
    entered = nm.apply_changes(
        SELF_HOSTED, {"email-smtp-port": 25, "email-smtp-password": "an0ther-pass"}, ADMIN
    )
    assert (_smtp(entered).port, _password(entered)) == (25, "an0ther-pass")
    cleared = nm.apply_changes(
        SELF_HOSTED,
        {"email-smtp-port": 25, "email-smtp-username": None, "email-smtp-password": None},
        ADMIN,
    )
    assert (_smtp(cleared).port, _smtp(cleared).has_credentials) == (25, False)


def test_the_same_effective_port_keeps_the_password() -> None:
    # 587 is the default port of starttls: clearing the explicit 587 changes nothing.
    updated = nm.apply_changes(SELF_HOSTED, {"email-smtp-port": None}, ADMIN)
    assert _smtp(updated).effective_port == 587
    assert _password(updated) == "hunter2-secret"


# --- one parser for the form and the environment --------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"), [("yes", True), ("OFF", False), ("1", True), ("no", False)]
)
def test_the_form_reads_booleans_as_the_environment_does(text: str, expected: bool) -> None:
    updated = nm.apply_changes(OSS, {"bcc-enabled?": not expected}, ADMIN)
    assert (
        nm.apply_changes(updated, {"bcc-enabled?": text}, ADMIN).delivery.bcc_enabled is expected
    )


def test_the_form_reads_a_json_list_as_the_environment_does() -> None:
    updated = nm.apply_changes(
        SELF_HOSTED, {"email-reply-to": '["a@example.com", "b@example.org"]'}, ADMIN
    )
    assert updated.sender.reply_to == ("a@example.com", "b@example.org")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("email-smtp-port", "9" * 5000),
        ("email-smtp-port", 10**5000),
        ("email-max-recipients-per-message", "9" * 5000),
        ("email-max-recipients-per-second", 10**5000),
        ("email-reply-to", "[" * 100_000),
    ],
    ids=["port-digits", "port-int", "count-digits", "count-int", "deep-json"],
)
def test_a_hostile_size_is_a_config_error_naming_the_setting(name: str, value: object) -> None:
    with pytest.raises(nm.ConfigError) as caught:
        nm.apply_changes(SELF_HOSTED, {name: value, **_PASSWORD_AGAIN.get(name, {})}, ADMIN)
    assert caught.value.field == name
    assert "\n" not in str(caught.value)
    assert len(str(caught.value)) < 200


def test_an_unknown_setting_name_says_what_it_was_probably_meant_to_be() -> None:
    with pytest.raises(nm.ConfigError) as caught:
        nm.apply_changes(SELF_HOSTED, {"email-smtp-securty": "ssl"}, ADMIN)
    assert str(caught.value) == (
        "email-smtp-securty: is not an email setting; did you mean email-smtp-security?"
    )


# --- the stored password never follows a new destination unasked ------------------------


@hypothesis_settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(
    host=st.sampled_from([None, "mail.example.com", "MAIL.example.com", "smtp.evil.example"]),
    port=st.sampled_from([None, "", 25, 587, "2525", 465]),
    security=st.sampled_from([None, "", "none", "starttls", "TLS", "ssl"]),
    password=st.sampled_from(["omitted", "masked"]),
)
def test_a_kept_password_only_ever_goes_to_the_same_host_port_and_security(
    host: str | None, port: object, security: str | None, password: str
) -> None:
    changes: dict[str, object] = {}
    for name, value in (("host", host), ("port", port), ("security", security)):
        if value is not None:
            changes[f"email-smtp-{name}"] = value
    if password == "masked":
        changes["email-smtp-password"] = "**********et"
    try:
        updated = nm.apply_changes(SELF_HOSTED, changes, ADMIN)
    except nm.ConfigError as error:
        refused: nm.ConfigError | None = error
    else:
        refused = None
    if refused is not None:
        assert refused.field == "email-smtp-password"
        return
    before, after = _smtp(SELF_HOSTED), _smtp(updated)
    assert after.password == before.password
    assert (after.host.lower(), after.effective_port, after.security) == (
        before.host.lower(),
        before.effective_port,
        before.security,
    )
