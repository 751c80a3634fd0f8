"""notifymail: the email side of a host application's notifications.

Settings, recipient policy, transports and one :class:`Mailer` that composes them.
Every public name is importable from here; the submodules are where they live.
"""

from notifymail.errors import (
    AuthenticationFailed,
    ConfigError,
    ConnectionFailed,
    DeliveryError,
    FeatureNotAvailable,
    InvalidMessage,
    NotifymailError,
    PermanentFailure,
    PermissionDenied,
    RecipientNotAllowed,
    TemporaryFailure,
    TlsError,
)
from notifymail.settings import (
    DeliverySettings,
    Deployment,
    EmailSettings,
    Feature,
    Hosting,
    ManagedService,
    Plan,
    RecipientPolicy,
    RetryPolicy,
    Secret,
    Security,
    SenderSettings,
    SmtpSettings,
    SuggestionMode,
)
from notifymail.transport.base import Delivery, Envelope, Reply, Transport

__version__ = "0.1.0"

__all__ = [
    "AuthenticationFailed",
    "ConfigError",
    "ConnectionFailed",
    "Delivery",
    "DeliveryError",
    "DeliverySettings",
    "Deployment",
    "EmailSettings",
    "Envelope",
    "Feature",
    "FeatureNotAvailable",
    "Hosting",
    "InvalidMessage",
    "ManagedService",
    "NotifymailError",
    "PermanentFailure",
    "PermissionDenied",
    "Plan",
    "RecipientNotAllowed",
    "RecipientPolicy",
    "Reply",
    "RetryPolicy",
    "Secret",
    "Security",
    "SenderSettings",
    "SmtpSettings",
    "SuggestionMode",
    "TemporaryFailure",
    "TlsError",
    "Transport",
]
