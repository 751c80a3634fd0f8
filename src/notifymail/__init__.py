"""notifymail: the email side of a host application's notifications.

Settings, recipient policy, transports and one [`Mailer`][notifymail.Mailer] that composes them.
Every public name is importable from here; the submodules are where they live.
"""

import logging
from typing import TYPE_CHECKING

# Each public name is written once, in the form type checkers read as a re-export
# (`Name as Name`); `__all__` and `dir()` are read from these lines (see notifymail._lazy).
from notifymail._enums import Feature as Feature
from notifymail._enums import Hosting as Hosting
from notifymail._enums import Plan as Plan
from notifymail._enums import Security as Security
from notifymail._enums import SuggestionMode as SuggestionMode
from notifymail._lazy import lazy_exports
from notifymail.editing import apply_changes as apply_changes
from notifymail.errors import AuthenticationFailed as AuthenticationFailed
from notifymail.errors import ConfigError as ConfigError
from notifymail.errors import ConnectionFailed as ConnectionFailed
from notifymail.errors import DeliveryError as DeliveryError
from notifymail.errors import FeatureNotAvailable as FeatureNotAvailable
from notifymail.errors import InvalidMessage as InvalidMessage
from notifymail.errors import InvalidToken as InvalidToken
from notifymail.errors import NotifymailError as NotifymailError
from notifymail.errors import PermanentFailure as PermanentFailure
from notifymail.errors import PermissionDenied as PermissionDenied
from notifymail.errors import RecipientNotAllowed as RecipientNotAllowed
from notifymail.errors import TemporaryFailure as TemporaryFailure
from notifymail.errors import TlsError as TlsError
from notifymail.plans import Deployment as Deployment
from notifymail.plans import entitlements as entitlements
from notifymail.policy import Batch as Batch
from notifymail.policy import Directory as Directory
from notifymail.policy import InMemoryDirectory as InMemoryDirectory
from notifymail.policy import Person as Person
from notifymail.policy import can_manage_email as can_manage_email
from notifymail.policy import check_recipients as check_recipients
from notifymail.policy import plan_delivery as plan_delivery
from notifymail.policy import suggest_recipients as suggest_recipients
from notifymail.secret import Secret as Secret
from notifymail.settings import DeliverySettings as DeliverySettings
from notifymail.settings import EmailSettings as EmailSettings
from notifymail.settings import ManagedService as ManagedService
from notifymail.settings import RecipientPolicy as RecipientPolicy
from notifymail.settings import RetryPolicy as RetryPolicy
from notifymail.settings import SenderSettings as SenderSettings
from notifymail.settings import SmtpSettings as SmtpSettings

# Imported on first use: these need the email package, ssl, asyncio or sqlite3.
if TYPE_CHECKING:
    from notifymail.mailer import AsyncMailer as AsyncMailer
    from notifymail.mailer import DeliveryReport as DeliveryReport
    from notifymail.mailer import Mailer as Mailer
    from notifymail.message import Attachment as Attachment
    from notifymail.message import Message as Message
    from notifymail.message import Notification as Notification
    from notifymail.outbox import DeadMail as DeadMail
    from notifymail.outbox import Outbox as Outbox
    from notifymail.outbox import OutboxStatus as OutboxStatus
    from notifymail.outbox import Queued as Queued
    from notifymail.outbox import SqliteOutbox as SqliteOutbox
    from notifymail.suppressions import InMemorySuppressions as InMemorySuppressions
    from notifymail.suppressions import SqliteSuppressions as SqliteSuppressions
    from notifymail.suppressions import Suppressions as Suppressions
    from notifymail.transport.asyncsmtp import AsyncSmtpTransport as AsyncSmtpTransport
    from notifymail.transport.base import AsyncTransport as AsyncTransport
    from notifymail.transport.base import Transport as Transport
    from notifymail.transport.console import ConsoleTransport as ConsoleTransport
    from notifymail.transport.memory import AsyncMemoryTransport as AsyncMemoryTransport
    from notifymail.transport.memory import MemoryTransport as MemoryTransport
    from notifymail.transport.memory import Sent as Sent
    from notifymail.transport.smtp import SmtpTransport as SmtpTransport
    from notifymail.unsubscribe import UnsubscribeTokens as UnsubscribeTokens
    from notifymail.values import Delivery as Delivery
    from notifymail.values import Envelope as Envelope
    from notifymail.values import Reply as Reply
    from notifymail.verify import VerifyResult as VerifyResult
    from notifymail.verify import verify_smtp as verify_smtp
    from notifymail.worker import OutboxWorker as OutboxWorker

__version__ = "0.1.0"

# A library's records are the host's to show: without this handler, a host that never
# configured logging would get the warnings on stderr from logging's last resort.
logging.getLogger("notifymail").addHandler(logging.NullHandler())

if not TYPE_CHECKING:  # a type checker reads the imports instead, and knows every name
    __getattr__, __dir__ = lazy_exports(globals())
