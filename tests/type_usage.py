"""Type-checked by `mypy --strict`, never run: the public API as a host application uses it.

A change that breaks a host's type checking breaks this file first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl

from celery import Celery

import notifymail as nm
from notifymail.celery import CeleryOutbox, CeleryStatus, register


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
        deployment=nm.Deployment(hosting="self-hosted", plan="pro"),
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


class QueueTransport(nm.Transport):
    """A transport of a host's own: one method to implement."""

    def __init__(self) -> None:
        self.queued: list[bytes] = []

    def deliver(self, envelope: nm.Envelope) -> nm.Delivery:
        self.queued.append(envelope.raw)
        return nm.Delivery(envelope.message_id, envelope.recipients)


def mailer_usage(settings: nm.EmailSettings) -> tuple[nm.DeliveryReport, nm.DeliveryReport]:
    people = nm.InMemoryDirectory([nm.Person("ann@example.com", groups={"sales"})])
    directory: nm.Directory = people
    with nm.Mailer(settings, transport=QueueTransport(), directory=directory) as mailer:
        system = mailer.send(
            nm.Message(
                ["ann@example.com"],
                "Reset your password",
                text="Follow the link.",
                attachments=[nm.Attachment("logo.png", b"\x89PNG", "image/png", "logo")],
            )
        )
        alert = mailer.notify(
            nm.Notification(
                ["ann@example.com"],
                "Alert",
                html="<p>Hi</p>",
                headers={"List-Unsubscribe": "<https://example.com/u>"},
            )
        )
        mailer.notify(
            nm.Notification(
                ["ann@example.com"],
                "Weekly",
                text="Numbers",
                unsubscribe=lambda address: f"https://example.com/u?e={address}",
                list_id="weekly.example.com",
            )
        )
        suggested: list[nm.Person] = mailer.suggest_recipients(nm.Person("ann@example.com"))
        mailer.check_recipients(suggested[0], ["bob@example.com"], existing=())
    return system, alert


def report_usage(report: nm.DeliveryReport) -> list[str]:
    lines = [f"{address}: {reply.code}" for address, reply in report.refused.items()]
    for address, error in report.failed.items():
        retry_later: bool = error.retryable
        lines.append(f"{address}: {error} {retry_later}")
    return lines


def memory_usage() -> str | None:
    transport = nm.MemoryTransport()
    transport.refuse("bob@example.com", reply=nm.Reply(550, "5.1.1 No such user"))
    transport.fail_next(nm.TemporaryFailure("451 try later"), times=2)
    sent: list[nm.Sent] = transport.outbox
    files: tuple[nm.Attachment, ...] = sent[0].attachments if sent else ()
    return sent[0].subject if sent and not files else None


def policy_usage(settings: nm.EmailSettings, actor: nm.Person) -> nm.EmailSettings:
    batches: list[nm.Batch] = nm.plan_delivery(["a@example.com"], nm.InMemoryDirectory(), settings)
    assert all(isinstance(batch.hidden, bool) for batch in batches)
    features: frozenset[nm.Feature] = nm.entitlements(settings.deployment)
    assert nm.can_manage_email(actor, settings.deployment) or not features
    return nm.apply_changes(settings, {"email-smtp-port": 587, "bcc-enabled?": None}, actor)


def smtp_usage(smtp: nm.SmtpSettings) -> nm.Security:
    result: nm.VerifyResult = nm.verify_smtp(smtp, autocorrect=True)
    errors: dict[str, str] = dict(result.errors)
    assert result.ok or errors
    with nm.SmtpTransport(smtp, local_hostname="app.example.com") as transport:
        transport.send_many([])
    return result.security


async def async_smtp_usage(smtp: nm.SmtpSettings, context: ssl.SSLContext) -> int:
    transport = nm.AsyncSmtpTransport(
        smtp, ssl_context=context, local_hostname="app.example.com", oauth2_token=lambda: "t"
    )
    async with transport:
        deliveries: list[nm.Delivery] = await transport.send_many([])
    pooled: nm.AsyncTransport = transport
    assert transport.ssl_context is context or deliveries
    return pooled.concurrency + smtp.max_connections


def subscription_usage(path: str) -> tuple[str, str, bool]:
    tokens = nm.UnsubscribeTokens(nm.Secret("a secret of at least 16 bytes"))
    url: str = tokens.url("https://bi.example.com/unsubscribe", "ann@example.com", "alerts")
    try:
        recipient, list_id = tokens.verify(url.rpartition("token=")[2])
    except nm.InvalidToken:
        recipient, list_id = "", ""
    memory: nm.Suppressions = nm.InMemorySuppressions()
    memory.add(recipient, "unsubscribed")
    with nm.SqliteSuppressions(path) as stored:
        suppressions: nm.Suppressions = stored
        suppressions.remove(recipient)
        why: str | None = stored.reason(recipient)
        assert why is None
        settings = nm.EmailSettings(sender=nm.SenderSettings(from_address="a@example.com"))
        mailer = nm.Mailer(settings, transport=nm.MemoryTransport(), suppressions=stored)
        report = mailer.notify(nm.Notification([recipient], "Alert", text="Hi"))
        skipped: tuple[str, ...] = report.suppressed
        assert nm.AsyncMailer(settings, transport=AsyncQueueTransport(), suppressions=stored)
    return recipient, list_id, memory.is_suppressed(recipient) and not skipped


class AsyncQueueTransport(nm.AsyncTransport):
    """An asyncio transport of a host's own: one coroutine to implement."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    async def deliver(self, envelope: nm.Envelope) -> nm.Delivery:
        await self.queue.put(envelope.raw)
        return nm.Delivery(envelope.message_id, envelope.recipients)


async def async_mailer_usage(settings: nm.EmailSettings) -> list[nm.DeliveryReport]:
    transport: nm.AsyncTransport = AsyncQueueTransport()
    async with nm.AsyncMailer(settings, transport=transport, sleep=asyncio.sleep) as mailer:
        reports = [
            await mailer.send(nm.Message(["ann@example.com"], "Reset", text="Follow the link.")),
            await mailer.notify(nm.Notification(["ann@example.com"], "Alert", text="Hi")),
            await mailer.send_test_email("ann@example.com"),
        ]
        mailer.check_recipients(nm.Person("ann@example.com"), ["bob@example.com"])
        people: list[nm.Person] = mailer.suggest_recipients(nm.Person("ann@example.com"))
        assert people or reports
        result: nm.VerifyResult = await mailer.verify(autocorrect=True)
        assert result.ok or result.errors
        checked: bool = await transport.probe(nm.Security.STARTTLS)
        assert isinstance(checked, bool)
    return reports


class PooledTransport(QueueTransport):
    """A transport that delivers several envelopes at once."""

    @property
    def concurrency(self) -> int:
        return 4


def concurrency_usage(transport: nm.Transport, async_transport: nm.AsyncTransport) -> int:
    at_the_wire: bool = transport.paces_at_the_wire or async_transport.paces_at_the_wire
    assert at_the_wire or PooledTransport().concurrency
    return transport.concurrency + async_transport.concurrency


async def async_memory_usage() -> list[nm.Sent]:
    transport = nm.AsyncMemoryTransport()
    transport.refuse("bob@example.com")
    transport.fail_next(nm.TemporaryFailure("451 try later"))
    async with transport:
        deliveries: list[nm.Delivery] = await transport.send_many([])
        assert not deliveries
    transport.clear()
    return transport.outbox


def celery_usage(app: Celery, settings: nm.EmailSettings, envelopes: list[nm.Envelope]) -> int:
    task = register(app, lambda: nm.Mailer(settings))
    assert task.name
    outbox = CeleryOutbox(app, redis_url="redis://localhost:6379/0", queue="mail", lease=60.0)
    queued = outbox.enqueue(envelopes, key="run-1", notification=True)
    status: CeleryStatus = outbox.status(queued.key)
    store: nm.Outbox = outbox
    nm.Mailer(settings, outbox=store).enqueue(nm.Message(["ann@example.com"], "Hi", text="."))
    outbox.close()
    settled = status.accepted + status.refused + status.failed + status.suppressed
    return status.pending if queued.new else settled


def outbox_usage(settings: nm.EmailSettings, notification: nm.Notification) -> int:
    with nm.SqliteOutbox("mail.db", max_lifetime=3600.0, lease=60.0) as outbox:
        mailer = nm.Mailer(settings, outbox=outbox)
        queued: nm.Queued = mailer.enqueue(notification, key="alert-1")
        report: nm.DeliveryReport = mailer.deliver_queued(limit=100)
        status: nm.OutboxStatus = outbox.status()
        dead: list[nm.DeadMail] = outbox.dead()
        retried: int = outbox.retry([mail.id for mail in dead])
        worker = nm.OutboxWorker(mailer, poll_interval=0.5)
        worker.start()
        worker.stop()
        store: nm.Outbox = outbox
        assert store is outbox
        return queued.envelopes + len(report.accepted) + status.dead + retried
