"""A host application's own unit tests, written only against ``import notifymail as nm``
and the pytest plugin's fixtures, as a host would write them.
"""

from __future__ import annotations

import pytest

import notifymail as nm

ACCOUNT_HOLDERS = ("ann@acme.example", "bob@acme.example", "cat@acme.example")
OUTSIDERS = ("dee@partner.example", "eve@client.example")


@pytest.fixture
def notifymail_settings() -> nm.EmailSettings:
    return nm.EmailSettings(
        sender=nm.SenderSettings(
            from_address="alerts@acme.example",
            from_name="Acme Alerts, Inc.",
            reply_to=("support@acme.example",),
        ),
        delivery=nm.DeliverySettings(bcc_enabled=True),
    )


@pytest.fixture
def notifymail_directory() -> nm.Directory:
    return nm.InMemoryDirectory(
        nm.Person(address, first_name=address.split("@")[0].title()) for address in ACCOUNT_HOLDERS
    )


def send_revenue_alert(mailer: nm.Mailer, recipients: list[str]) -> nm.DeliveryReport:
    """The host's code under test."""
    return mailer.notify(
        nm.Notification(
            recipients,
            "Alert: revenue dropped",
            text="Revenue dropped 12% this week.",
            html="<p>Revenue dropped <b>12%</b> this week.</p>",
            headers={"List-Unsubscribe": "<https://bi.acme.example/unsubscribe/42>"},
        )
    )


def test_alert_to_account_holders_and_outsiders_under_bcc(
    mailer: nm.Mailer, mail_outbox: list[nm.Sent]
) -> None:
    report = send_revenue_alert(mailer, [*ACCOUNT_HOLDERS, *OUTSIDERS])

    assert report.ok
    assert len(mail_outbox) == 3
    hidden, *own = mail_outbox
    assert hidden.recipients == ACCOUNT_HOLDERS
    assert hidden.message["To"] == "undisclosed-recipients:;"
    assert hidden.cc == ()
    for address in (*ACCOUNT_HOLDERS, *OUTSIDERS):
        assert address.encode() not in hidden.raw
    assert [sent.to for sent in own] == [(OUTSIDERS[0],), (OUTSIDERS[1],)]
    for sent in mail_outbox:
        assert sent.subject == "Alert: revenue dropped"
        assert sent.message["From"].addresses[0].display_name == "Acme Alerts, Inc."
        assert sent.message["Reply-To"] == "support@acme.example"
        assert sent.message["List-Unsubscribe"] == "<https://bi.acme.example/unsubscribe/42>"
        assert sent.text is not None
        assert "12%" in sent.text
    assert len({sent.message["Message-ID"] for sent in mail_outbox}) == 3


def test_alert_survives_two_temporary_failures(
    mailer: nm.Mailer, mail_transport: nm.MemoryTransport, mail_outbox: list[nm.Sent]
) -> None:
    mail_transport.fail_next(nm.TemporaryFailure("451 try later"), times=2)
    report = send_revenue_alert(mailer, [*ACCOUNT_HOLDERS, *OUTSIDERS])

    assert report.ok
    delivered = [address for sent in mail_outbox for address in sent.recipients]
    assert sorted(delivered) == sorted((*ACCOUNT_HOLDERS, *OUTSIDERS))


def test_unknown_mailbox_is_reported_and_the_rest_delivered(
    mailer: nm.Mailer, mail_transport: nm.MemoryTransport, mail_outbox: list[nm.Sent]
) -> None:
    mail_transport.refuse("bob@acme.example")
    report = send_revenue_alert(mailer, [*ACCOUNT_HOLDERS, *OUTSIDERS])

    assert list(report.refused) == ["bob@acme.example"]
    assert report.refused["bob@acme.example"].code == 550
    assert sorted(report.accepted) == sorted(
        set(ACCOUNT_HOLDERS + OUTSIDERS) - {"bob@acme.example"}
    )
    assert all("bob@acme.example" not in sent.recipients for sent in mail_outbox)


def test_password_reset_goes_to_one_person(mailer: nm.Mailer, mail_outbox: list[nm.Sent]) -> None:
    mailer.send(nm.Message(["ann@acme.example"], "Reset your password", text="Use this link"))

    [sent] = mail_outbox
    assert sent.to == ("ann@acme.example",)
    assert sent.text is not None
    assert "Use this link" in sent.text


def test_each_test_starts_with_an_empty_outbox(mail_outbox: list[nm.Sent]) -> None:
    assert mail_outbox == []
