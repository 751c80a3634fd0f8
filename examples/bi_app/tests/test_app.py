"""The example application's tests: what it mails, to whom, and what it answers."""

from __future__ import annotations

import notifymail as nm
from bi_app.app import BiApp

from .conftest import Call

RESET_ANSWER = "If an account exists for that address, a reset link is on its way."


def test_password_reset_mails_a_link_to_the_account_holder(
    call: Call, app: BiApp, mail_outbox: list[nm.Sent]
) -> None:
    status, body = call("POST", "/password-reset", {"email": "Ann@acme.example"})

    assert (status, body["message"]) == ("202 Accepted", RESET_ANSWER)
    [sent] = mail_outbox
    assert sent.to == ("ann@acme.example",)
    assert sent.subject == "Reset your password"
    assert sent.text is not None
    assert "https://bi.acme.example/reset?token=token-1" in sent.text
    assert sent.html is not None
    assert 'href="https://bi.acme.example/reset?token=token-1"' in sent.html
    assert app.reset_tokens == {"token-1": "ann@acme.example"}


def test_password_reset_answers_the_same_without_an_account_and_sends_nothing(
    call: Call, app: BiApp, mail_outbox: list[nm.Sent]
) -> None:
    for email in ("nobody@acme.example", "old@acme.example"):
        status, body = call("POST", "/password-reset", {"email": email})
        assert (status, body["message"]) == ("202 Accepted", RESET_ANSWER)
    assert mail_outbox == []
    assert app.reset_tokens == {}


def test_password_reset_when_mail_cannot_be_sent_says_try_later(
    call: Call, app: BiApp, mail_transport: nm.MemoryTransport, mail_outbox: list[nm.Sent]
) -> None:
    mail_transport.fail_next(nm.ConnectionFailed("connection refused"), times=10)

    status, _ = call("POST", "/password-reset", {"email": "ann@acme.example"})

    assert status == "503 Service Unavailable"
    assert mail_outbox == []
    assert app.reset_tokens == {}  # no token for a link no one received


def test_password_reset_without_an_email_is_a_bad_request(call: Call) -> None:
    status, body = call("POST", "/password-reset", {})
    assert (status, body) == ("400 Bad Request", {"error": "email is required"})


def test_alert_shares_one_hidden_message_among_account_holders_and_mails_outsiders_alone(
    call: Call, mail_outbox: list[nm.Sent]
) -> None:
    status, body = call(
        "POST",
        "/alerts",
        {
            "creator": "ann@acme.example",
            "recipients": "ann@acme.example, bob@acme.example, cfo@partner.example",
            "subject": "Revenue dropped",
            "text": "Revenue dropped 12% this week.",
        },
    )

    assert status == "200 OK"
    assert sorted(body["accepted"]) == [
        "ann@acme.example",
        "bob@acme.example",
        "cfo@partner.example",
    ]
    hidden, own = mail_outbox
    assert hidden.recipients == ("ann@acme.example", "bob@acme.example")
    assert hidden.message["To"] == "undisclosed-recipients:;"
    assert b"bob@acme.example" not in hidden.raw
    assert own.to == ("cfo@partner.example",)
    assert b"ann@acme.example" not in own.raw


def test_alert_to_a_domain_that_is_not_approved_is_refused_before_anything_is_sent(
    call: Call, mail_outbox: list[nm.Sent]
) -> None:
    status, body = call(
        "POST",
        "/alerts",
        {
            "creator": "ann@acme.example",
            "recipients": "bob@acme.example, someone@elsewhere.example",
            "subject": "Revenue dropped",
            "text": "Revenue dropped.",
        },
    )

    assert status == "400 Bad Request"
    assert list(body["refused"]) == ["someone@elsewhere.example"]
    assert mail_outbox == []


def test_alert_reports_a_mailbox_the_server_refused(
    call: Call, mail_transport: nm.MemoryTransport
) -> None:
    mail_transport.refuse("bob@acme.example")

    status, body = call(
        "POST",
        "/alerts",
        {
            "creator": "ann@acme.example",
            "recipients": "ann@acme.example, bob@acme.example",
            "subject": "Revenue dropped",
            "text": "Revenue dropped.",
        },
    )

    assert status == "200 OK"
    assert body["accepted"] == ["ann@acme.example"]
    assert body["refused"] == {"bob@acme.example": "550 5.1.1 No such user"}


def test_alert_from_someone_without_an_active_account_is_forbidden(
    call: Call, mail_outbox: list[nm.Sent]
) -> None:
    form = {"recipients": "ann@acme.example", "subject": "Hi", "text": "Hi"}
    for creator in ("stranger@partner.example", "old@acme.example"):
        status, _ = call("POST", "/alerts", {**form, "creator": creator})
        assert status == "403 Forbidden"
    assert mail_outbox == []


def test_suggestions_offer_people_sharing_a_group_but_not_the_everyone_group(
    call: Call,
) -> None:
    assert call("GET", "/suggestions?viewer=ann@acme.example") == (
        "200 OK",
        ["ann@acme.example", "sam@acme.example"],
    )
    status, people = call("GET", "/suggestions?viewer=root@acme.example")
    assert status == "200 OK"
    assert "bob@acme.example" in people
    assert "old@acme.example" not in people


def test_unknown_paths_and_wrong_methods_are_refused(call: Call) -> None:
    assert call("GET", "/nowhere")[0] == "404 Not Found"
    assert call("GET", "/password-reset")[0] == "405 Method Not Allowed"
