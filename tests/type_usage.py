"""Type-checked by `mypy --strict`, never run: the public API as a host application uses it.

A change that breaks a host's type checking breaks this file first.
"""

from __future__ import annotations

import dataclasses

import notifymail as nm


def settings_from_code() -> nm.EmailSettings:
    smtp = nm.SmtpSettings(
        host="smtp.example.com", security="starttls", password="pw", username="u"
    )
    port: int = smtp.effective_port
    assert port
    sender = nm.SenderSettings(from_address="alerts@example.com", reply_to=("help@example.com",))
    recipients = nm.RecipientPolicy(approved_domains="acme.com, partner.example")
    return nm.EmailSettings(
        sender=sender,
        smtp=smtp,
        deployment=nm.Deployment(plan=nm.Plan.PRO),
        recipients=recipients,
        delivery=nm.DeliverySettings(retry=nm.RetryPolicy(max_attempts=3)),
    )


def settings_from_env() -> nm.EmailSettings:
    settings = nm.EmailSettings.from_env({"MB_EMAIL_FROM_ADDRESS": "a@example.com"})
    return dataclasses.replace(settings, use_custom_smtp=False)


def secret_handling(secret: nm.Secret) -> str:
    return secret.masked() + secret.reveal()


def error_handling() -> str | None:
    try:
        settings_from_env()
    except nm.FeatureNotAvailable as error:
        feature: nm.Feature = error.feature
        return feature.value
    except nm.ConfigError as error:
        return error.env_var or error.field
    return None
