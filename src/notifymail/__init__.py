"""notifymail: the email side of a host application's notifications.

Settings, recipient policy, transports and one [`Mailer`][notifymail.Mailer] that composes them.
Every public name is importable from here; the submodules are where they live.
"""

import logging
from typing import TYPE_CHECKING

from notifymail._enums import Feature, Hosting, Plan, Security, SuggestionMode
from notifymail._lazy import lazy_exports
from notifymail.editing import apply_changes
from notifymail.errors import (
    AuthenticationFailed,
    ConfigError,
    ConnectionFailed,
    DeliveryError,
    FeatureNotAvailable,
    InvalidMessage,
    InvalidToken,
    NotifymailError,
    PermanentFailure,
    PermissionDenied,
    RecipientNotAllowed,
    TemporaryFailure,
    TlsError,
)
from notifymail.plans import Deployment, entitlements
from notifymail.policy import (
    Batch,
    Directory,
    InMemoryDirectory,
    Person,
    can_manage_email,
    check_recipients,
    plan_delivery,
    suggest_recipients,
)
from notifymail.secret import Secret
from notifymail.settings import (
    DeliverySettings,
    EmailSettings,
    ManagedService,
    RecipientPolicy,
    RetryPolicy,
    SenderSettings,
    SmtpSettings,
)

if TYPE_CHECKING:
    from notifymail.mailer import AsyncMailer, DeliveryReport, Mailer
    from notifymail.message import Attachment, Message, Notification
    from notifymail.outbox import DeadMail, Outbox, OutboxStatus, Queued, SqliteOutbox
    from notifymail.suppressions import InMemorySuppressions, SqliteSuppressions, Suppressions
    from notifymail.transport.asyncsmtp import AsyncSmtpTransport
    from notifymail.transport.base import AsyncTransport, Transport
    from notifymail.transport.console import ConsoleTransport
    from notifymail.transport.memory import AsyncMemoryTransport, MemoryTransport, Sent
    from notifymail.transport.smtp import SmtpTransport
    from notifymail.unsubscribe import UnsubscribeTokens
    from notifymail.values import Delivery, Envelope, Reply
    from notifymail.verify import VerifyResult, verify_smtp
    from notifymail.worker import OutboxWorker

__version__ = "0.1.0"

# A library's records are the host's to show: without this handler, a host that never
# configured logging would get the warnings on stderr from logging's last resort.
logging.getLogger("notifymail").addHandler(logging.NullHandler())

# Imported on first use (see notifymail._lazy).
_LAZY = {
    "AsyncMailer": "notifymail.mailer",
    "AsyncMemoryTransport": "notifymail.transport.memory",
    "AsyncSmtpTransport": "notifymail.transport.asyncsmtp",
    "AsyncTransport": "notifymail.transport.base",
    "Attachment": "notifymail.message",
    "ConsoleTransport": "notifymail.transport.console",
    "DeadMail": "notifymail.outbox",
    "Delivery": "notifymail.values",
    "DeliveryReport": "notifymail.mailer",
    "Envelope": "notifymail.values",
    "InMemorySuppressions": "notifymail.suppressions",
    "Mailer": "notifymail.mailer",
    "MemoryTransport": "notifymail.transport.memory",
    "Message": "notifymail.message",
    "Notification": "notifymail.message",
    "Outbox": "notifymail.outbox",
    "OutboxStatus": "notifymail.outbox",
    "OutboxWorker": "notifymail.worker",
    "Queued": "notifymail.outbox",
    "Reply": "notifymail.values",
    "Sent": "notifymail.transport.memory",
    "SmtpTransport": "notifymail.transport.smtp",
    "SqliteOutbox": "notifymail.outbox",
    "SqliteSuppressions": "notifymail.suppressions",
    "Suppressions": "notifymail.suppressions",
    "Transport": "notifymail.transport.base",
    "UnsubscribeTokens": "notifymail.unsubscribe",
    "VerifyResult": "notifymail.verify",
    "verify_smtp": "notifymail.verify",
}


__all__ = [
    "AsyncMailer",
    "AsyncMemoryTransport",
    "AsyncSmtpTransport",
    "AsyncTransport",
    "Attachment",
    "AuthenticationFailed",
    "Batch",
    "ConfigError",
    "ConnectionFailed",
    "ConsoleTransport",
    "DeadMail",
    "Delivery",
    "DeliveryError",
    "DeliveryReport",
    "DeliverySettings",
    "Deployment",
    "Directory",
    "EmailSettings",
    "Envelope",
    "Feature",
    "FeatureNotAvailable",
    "Hosting",
    "InMemoryDirectory",
    "InMemorySuppressions",
    "InvalidMessage",
    "InvalidToken",
    "Mailer",
    "ManagedService",
    "MemoryTransport",
    "Message",
    "Notification",
    "NotifymailError",
    "Outbox",
    "OutboxStatus",
    "OutboxWorker",
    "PermanentFailure",
    "PermissionDenied",
    "Person",
    "Plan",
    "Queued",
    "RecipientNotAllowed",
    "RecipientPolicy",
    "Reply",
    "RetryPolicy",
    "Secret",
    "Security",
    "SenderSettings",
    "Sent",
    "SmtpSettings",
    "SmtpTransport",
    "SqliteOutbox",
    "SqliteSuppressions",
    "SuggestionMode",
    "Suppressions",
    "TemporaryFailure",
    "TlsError",
    "Transport",
    "UnsubscribeTokens",
    "VerifyResult",
    "apply_changes",
    "can_manage_email",
    "check_recipients",
    "entitlements",
    "plan_delivery",
    "suggest_recipients",
    "verify_smtp",
]

__getattr__, __dir__ = lazy_exports(globals(), _LAZY, __all__)
