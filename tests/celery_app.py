"""The Celery app that the test workers run (``celery -A celery_app worker``).

A host's own module would look the same: a Celery app and ``register(app, factory)``.
The tests configure it through the environment of each worker process they start:
``NMTEST_BROKER`` (the Redis URL), ``NMTEST_SMTP_PORT`` (the test's SMTP server on
127.0.0.1), ``NMTEST_RATE`` (``max_recipients_per_second``, optional) and
``NMTEST_VISIBILITY`` (seconds before Redis hands a dead worker's messages to another),
``NMTEST_SUPPRESSIONS`` (the path of a ``SqliteSuppressions`` file the test shares with the
workers, optional; see ``Suppressions``) and ``NMTEST_NAME`` (the EHLO name, so the server can tell the workers
apart).
"""

from __future__ import annotations

import os

from celery import Celery

import notifymail as nm
from notifymail.celery import register

app = Celery("notifymail-tests", broker=os.environ["NMTEST_BROKER"])
app.conf.update(
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    broker_transport_options={
        "visibility_timeout": float(os.environ.get("NMTEST_VISIBILITY", "3")),
        # Look for a dead worker's messages every second, not every 100.
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
        # A worker killed while it holds the restore mutex must not stall the others.
        "unacked_mutex_expire": 5,
    },
)


class Suppressions(nm.SqliteSuppressions):
    """The list the test shares, which fails while the file ``<path>.down`` exists, as a
    host's list on a database that is down would."""

    def is_suppressed(self, address: str) -> bool:
        if os.path.exists(f"{self.path}.down"):
            raise ConnectionError(f"{self.path} is down")
        return super().is_suppressed(address)


def mailer() -> nm.Mailer:
    rate = os.environ.get("NMTEST_RATE")
    settings = nm.EmailSettings(
        sender=nm.SenderSettings(from_address="alerts@example.com"),
        smtp=nm.SmtpSettings(
            host="127.0.0.1", port=int(os.environ["NMTEST_SMTP_PORT"]), timeout=5
        ),
        delivery=nm.DeliverySettings(max_recipients_per_second=int(rate) if rate else None),
    )
    assert settings.smtp is not None
    transport = nm.SmtpTransport(settings.smtp, local_hostname=os.environ["NMTEST_NAME"])
    listed = os.environ.get("NMTEST_SUPPRESSIONS")
    suppressions = None if listed is None else Suppressions(listed)
    return nm.Mailer(settings, transport=transport, suppressions=suppressions)


register(app, mailer)
