"""The public API of SPEC.md: every name importable from ``notifymail`` and in ``__all__``."""

from __future__ import annotations

import importlib
import subprocess
import sys

import notifymail as nm

SPEC_NAMES = {
    # section 0: errors
    "NotifymailError", "ConfigError", "FeatureNotAvailable", "InvalidMessage",
    "PermissionDenied", "RecipientNotAllowed", "DeliveryError", "ConnectionFailed",
    "TlsError", "AuthenticationFailed", "TemporaryFailure", "PermanentFailure",
    # section 1: settings
    "SmtpSettings", "SenderSettings", "DeliverySettings", "RetryPolicy", "RecipientPolicy",
    "Deployment", "ManagedService", "EmailSettings", "Secret",
    "Security", "Hosting", "Plan", "SuggestionMode", "Feature",
    # section 2: policy
    "Person", "Directory", "InMemoryDirectory", "entitlements", "can_manage_email",
    "apply_changes", "check_recipients", "suggest_recipients", "plan_delivery", "Batch",
    # section 3: transports
    "Envelope", "Reply", "Delivery", "Transport", "MemoryTransport", "Sent",
    "ConsoleTransport", "SmtpTransport",
    # section 4: the facade
    "Mailer", "Message", "Notification", "Attachment", "DeliveryReport", "VerifyResult",
    "verify_smtp",
    # section 7: asyncio
    "AsyncTransport", "AsyncSmtpTransport", "AsyncMemoryTransport", "AsyncMailer",
    # section 9: the outbox
    "Outbox", "SqliteOutbox", "Queued", "OutboxStatus", "DeadMail", "OutboxWorker",
    # section 11: subscription mail
    "UnsubscribeTokens", "InvalidToken", "Suppressions", "InMemorySuppressions",
    "SqliteSuppressions",
}  # fmt: skip


def test_all_is_sorted_and_unique() -> None:
    assert list(nm.__all__) == sorted(set(nm.__all__))


def test_every_spec_name_is_exported() -> None:
    assert set(nm.__all__) >= SPEC_NAMES


def test_every_exported_name_is_importable() -> None:
    for name in nm.__all__:
        assert getattr(nm, name) is not None, name


def test_exported_members_say_where_they_live() -> None:
    for name in nm.__all__:
        member = getattr(nm, name)
        module = getattr(member, "__module__", "")
        assert module.startswith("notifymail."), (name, module)
        assert getattr(importlib.import_module(module), name) is member


def test_submodules_list_their_public_names() -> None:
    for module_name in (
        "errors",
        "settings",
        "policy",
        "message",
        "mailer",
        "verify",
        "outbox",
        "worker",
        "suppressions",
        "unsubscribe",
    ):
        module = importlib.import_module(f"notifymail.{module_name}")
        for name in module.__all__:
            assert hasattr(module, name), (module_name, name)


def printed_by(code: str) -> list[str]:
    """The lines ``code`` prints, run by this interpreter in a fresh process."""
    result = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return result.stdout.splitlines()


def test_import_notifymail_leaves_the_heavy_modules_for_first_use() -> None:
    code = (
        "import sys, notifymail\n"
        "heavy = ['smtplib', 'ssl', 'email.message', 'email_validator']\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
        "notifymail.SmtpTransport\n"
        "print('ssl' in sys.modules)\n"
    )
    assert printed_by(code) == ["", "True"]


def test_composing_a_message_loads_no_part_of_the_email_package() -> None:
    # Composition writes headers and MIME itself; the email package is for reading back.
    code = (
        "import sys, notifymail as nm\n"
        "from notifymail._compose import compose\n"
        "logo = nm.Attachment('l.png', b'P', 'image/png', content_id='l')\n"
        "message = nm.Message(['jösé@bücher.de'], 'Olé', text='x', html='<img>',\n"
        "    headers={'X-Tag': 'ü'}, attachments=[logo, nm.Attachment('a.csv', b'x', 'text/csv')])\n"
        "compose(message, nm.SenderSettings(from_address='b@bücher.de', from_name='Ünï')).raw\n"
        "print(sorted(m for m in sys.modules if m.partition('.')[0] == 'email'))\n"
    )
    assert printed_by(code) == ["[]"]
