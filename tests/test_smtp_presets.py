"""The SmtpSettings presets for well-known providers."""

from __future__ import annotations

import dataclasses

import pytest

import notifymail as nm


def test_gmail_uses_ssl_on_465():
    settings = nm.SmtpSettings.gmail("me@gmail.com", "app-password")

    assert (settings.host, settings.port, settings.security) == (
        "smtp.gmail.com",
        465,
        nm.Security.SSL,
    )
    assert settings.username == "me@gmail.com"
    assert settings.password == nm.Secret("app-password")


@pytest.mark.parametrize("region", ["eu-west-1", " EU-WEST-1 "])
def test_ses_uses_the_regional_endpoint_with_starttls_on_587(region):
    settings = nm.SmtpSettings.ses(region, "AKIAEXAMPLE", "ses-smtp-password")

    assert (settings.host, settings.port, settings.security) == (
        "email-smtp.eu-west-1.amazonaws.com",
        587,
        nm.Security.STARTTLS,
    )
    assert settings.username == "AKIAEXAMPLE"


@pytest.mark.parametrize("region", ["", "eu west 1", "eu-west-1.evil.example", "eu/west"])
def test_ses_refuses_a_region_that_is_not_a_region_name(region):
    with pytest.raises(nm.ConfigError) as caught:
        nm.SmtpSettings.ses(region, "AKIAEXAMPLE", "ses-smtp-password")

    assert caught.value.field == "region"


def test_mandrill_uses_starttls_on_587_with_the_api_key_as_password():
    settings = nm.SmtpSettings.mandrill("any-user", "md-api-key")

    assert (settings.host, settings.port, settings.security) == (
        "smtp.mandrillapp.com",
        587,
        nm.Security.STARTTLS,
    )
    assert settings.password == nm.Secret("md-api-key")


@pytest.mark.parametrize(
    "settings",
    [
        nm.SmtpSettings.gmail("me@gmail.com", "app-password"),
        nm.SmtpSettings.ses("us-east-1", "AKIAEXAMPLE", "app-password"),
        nm.SmtpSettings.mandrill("any-user", "app-password"),
    ],
)
def test_presets_keep_the_password_secret(settings):
    assert isinstance(settings.password, nm.Secret)
    assert "app-password" not in repr(settings)


def test_presets_refuse_a_username_without_a_password():
    with pytest.raises(nm.ConfigError) as caught:
        nm.SmtpSettings.gmail("me@gmail.com", "")

    assert caught.value.field == "password"


def test_a_preset_adjusted_with_replace_is_revalidated():
    settings = nm.SmtpSettings.gmail("me@gmail.com", "app-password")

    slower = dataclasses.replace(settings, timeout=30.0)

    assert (slower.host, slower.port, slower.timeout) == ("smtp.gmail.com", 465, 30.0)
    with pytest.raises(nm.ConfigError) as caught:
        dataclasses.replace(settings, port=0)
    assert caught.value.field == "port"
