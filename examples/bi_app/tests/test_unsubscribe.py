"""The unsubscribe endpoint: RFC 8058's one-click POST unsubscribes, a GET never does."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

import notifymail as nm
from bi_app.app import SUBSCRIPTIONS_LIST, BiApp

from .conftest import Call

ONE_CLICK = b"List-Unsubscribe=One-Click"


def path_of(url: str) -> str:
    """The path and query of ``url``, as a WSGI server passes them on."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def notify(call: Call, recipients: str, route: str = "/alerts") -> dict[str, Any]:
    status, body = call(
        "POST",
        route,
        {
            "creator": "ann@acme.example",
            "recipients": recipients,
            "subject": "Revenue dropped",
            "text": "Revenue dropped 12% this week.",
        },
    )
    assert status == "200 OK"
    answer: dict[str, Any] = body
    return answer


def test_the_one_click_post_unsubscribes_and_later_alerts_skip_the_recipient(
    call: Call, app: BiApp, notifymail_suppressions: nm.Suppressions, mail_outbox: list[nm.Sent]
) -> None:
    url = app.unsubscribe_url("bob@acme.example")

    status, page = call("POST", path_of(url), body=ONE_CLICK)

    assert status == "200 OK"
    assert "bob@acme.example is unsubscribed" in page
    assert notifymail_suppressions.is_suppressed("bob@acme.example")
    body = notify(call, "ann@acme.example, bob@acme.example")
    assert body["suppressed"] == ["bob@acme.example"]
    assert body["accepted"] == ["ann@acme.example"]
    assert [sent.recipients for sent in mail_outbox] == [("ann@acme.example",)]


def test_a_subscription_mails_each_recipient_a_one_click_link_that_unsubscribes_them(
    call: Call, notifymail_suppressions: nm.Suppressions, mail_outbox: list[nm.Sent]
) -> None:
    body = notify(call, "ann@acme.example, bob@acme.example", "/subscriptions")

    assert sorted(body["accepted"]) == ["ann@acme.example", "bob@acme.example"]
    assert [sent.recipients for sent in mail_outbox] == [
        ("ann@acme.example",),
        ("bob@acme.example",),
    ]  # a message each: each carries its own link
    bobs = mail_outbox[1].message
    assert bobs["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert bobs["List-Id"] == f"<{SUBSCRIPTIONS_LIST}>"
    link = str(bobs["List-Unsubscribe"])
    assert link.startswith("<https://bi.acme.example/unsubscribe?token=")
    assert link.endswith(">")

    status, _ = call("POST", path_of(link[1:-1]), body=ONE_CLICK)  # what Gmail does

    assert status == "200 OK"
    assert notifymail_suppressions.is_suppressed("bob@acme.example")
    assert not notifymail_suppressions.is_suppressed("ann@acme.example")
    mail_outbox.clear()
    again = notify(call, "ann@acme.example, bob@acme.example", "/subscriptions")
    assert again["suppressed"] == ["bob@acme.example"]
    assert [sent.recipients for sent in mail_outbox] == [("ann@acme.example",)]


def test_the_reason_names_the_list(
    call: Call, app: BiApp, notifymail_suppressions: nm.InMemorySuppressions
) -> None:
    call("POST", path_of(app.unsubscribe_url("bob@acme.example")), body=ONE_CLICK)

    assert (
        notifymail_suppressions.reason("bob@acme.example")
        == f"unsubscribed from {SUBSCRIPTIONS_LIST}"
    )


def test_a_multipart_one_click_post_unsubscribes_too(
    call: Call, app: BiApp, notifymail_suppressions: nm.Suppressions
) -> None:
    body = (
        b"--b0undary\r\n"
        b'Content-Disposition: form-data; name="List-Unsubscribe"\r\n'
        b"\r\n"
        b"One-Click\r\n"
        b"--b0undary--\r\n"
    )

    status, _ = call(
        "POST",
        path_of(app.unsubscribe_url("bob@acme.example")),
        body=body,
        content_type="multipart/form-data; boundary=b0undary",
    )

    assert status == "200 OK"
    assert notifymail_suppressions.is_suppressed("bob@acme.example")


def test_following_the_link_shows_a_confirmation_and_unsubscribes_nobody(
    call: Call, app: BiApp, notifymail_suppressions: nm.Suppressions
) -> None:
    url = app.unsubscribe_url("bob@acme.example")

    for _ in range(3):  # a person, then two link scanners
        status, page = call("GET", path_of(url))
        assert status == "200 OK"

    assert not notifymail_suppressions.is_suppressed("bob@acme.example")
    assert "Unsubscribe bob@acme.example?" in page
    assert '<form method="post"' in page
    assert '<input type="hidden" name="List-Unsubscribe" value="One-Click">' in page
    assert f'action="{path_of(url)}"' in page


def test_the_confirmation_pages_button_makes_the_one_click_post(
    call: Call, app: BiApp, notifymail_suppressions: nm.Suppressions
) -> None:
    _, page = call("GET", path_of(app.unsubscribe_url("bob@acme.example")))
    action = page.partition('action="')[2].partition('"')[0]

    status, _ = call("POST", action, {"List-Unsubscribe": "One-Click"})

    assert status == "200 OK"
    assert notifymail_suppressions.is_suppressed("bob@acme.example")


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_an_altered_or_foreign_token_is_refused_and_unsubscribes_nobody(
    call: Call, app: BiApp, notifymail_suppressions: nm.Suppressions, method: str
) -> None:
    good = path_of(app.unsubscribe_url("bob@acme.example"))
    other = nm.UnsubscribeTokens("someone else's secret, 32 bytes")
    forged = path_of(other.url("https://bi.acme.example/unsubscribe", "bob@acme.example", "x"))

    for path in (good[:-1] + ("A" if good[-1] != "A" else "B"), forged, "/unsubscribe"):
        status, page = call(method, path, body=ONE_CLICK)
        assert status == "400 Bad Request"
        assert "not valid" in page

    assert not notifymail_suppressions.is_suppressed("bob@acme.example")


def test_a_post_without_the_one_click_body_unsubscribes_nobody(
    call: Call, app: BiApp, notifymail_suppressions: nm.Suppressions
) -> None:
    path = path_of(app.unsubscribe_url("bob@acme.example"))

    for body in (b"", b"List-Unsubscribe=Yes", b"unsubscribe=1"):
        status, _ = call("POST", path, body=body)
        assert status == "400 Bad Request"

    assert not notifymail_suppressions.is_suppressed("bob@acme.example")


def test_unsubscribe_links_are_https_and_carry_a_signed_token(app: BiApp) -> None:
    url = app.unsubscribe_url("bob@acme.example")

    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "bi.acme.example", "/unsubscribe")
    assert parts.query.startswith("token=")
    assert app.unsubscribe_tokens.verify(parts.query.removeprefix("token=")) == (
        "bob@acme.example",
        SUBSCRIPTIONS_LIST,
    )


def test_other_methods_are_refused(call: Call) -> None:
    status, body = call("PUT", "/unsubscribe")
    assert (status, body) == ("405 Method Not Allowed", {"error": "use GET or POST"})
