"""A plain WSGI application that sends password resets and alerts through notifymail.

It stands in for a host application: the people are a ``notifymail.InMemoryDirectory``
(a real host would back ``Directory`` with its user table), the mail goes through a
``notifymail.Mailer``, and every rule about who may receive what is notifymail's.

Routes (forms are ``application/x-www-form-urlencoded``, answers JSON):

- ``POST /password-reset`` (``email``): mails a reset link to an account holder. The
  answer is the same whether or not the account exists, so the form cannot be used
  to find out who has one.
- ``POST /alerts`` (``creator``, ``recipients`` comma-separated, ``subject``, ``text``):
  checks the recipients against the approved domains, then sends the alert; the answer
  says who accepted it, who did not, and who was left out as unsubscribed.
- ``POST /subscriptions`` (the same fields): a dashboard subscription, sent as
  subscription mail: each recipient gets a message of their own with a one-click
  unsubscribe link (``List-Unsubscribe``, RFC 8058) and ``List-Id``.
- ``GET /suggestions?viewer=ADDRESS``: the people a recipient picker offers the viewer.
- ``POST /unsubscribe?token=TOKEN`` with ``List-Unsubscribe=One-Click`` (form-encoded
  or ``multipart/form-data``): RFC 8058's one-click unsubscribe, as a mail client
  sends it. The token names the recipient and the list; the recipient goes on the
  mailer's suppression list, so no later alert reaches them. Answers an HTML page.
- ``GET /unsubscribe?token=TOKEN``: a page asking to confirm, with a button that makes
  the same POST. It never unsubscribes: mail security scanners follow every link.

Run it from the ``examples`` directory with ``python -m bi_app.app``; settings come
from the ``MB_*`` variables, and with no SMTP server configured each message is
printed instead of sent. The suppression list is the SQLite file ``bi_app.db``, and
unsubscribe links are signed with ``BI_APP_SECRET`` (a fresh random secret if unset,
so links die with the process).
"""

from __future__ import annotations

import html
import json
import logging
import os
import secrets
from collections.abc import Callable, Iterable
from email import policy
from email.parser import BytesParser
from typing import TYPE_CHECKING
from urllib.parse import parse_qs
from wsgiref.simple_server import make_server

import notifymail as nm

if TYPE_CHECKING:  # wsgiref.types is Python 3.11+; typeshed has the same for 3.10
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    Handler = Callable[[WSGIEnvironment], tuple[int, object]]

logger = logging.getLogger("bi_app")

_STATUS = {
    200: "200 OK",
    202: "202 Accepted",
    400: "400 Bad Request",
    403: "403 Forbidden",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    503: "503 Service Unavailable",
}
_RESET_ANSWER = "If an account exists for that address, a reset link is on its way."
SUBSCRIPTIONS_LIST = "subscriptions.bi.example.com"  # the List-Id of dashboard subscriptions
_BAD_LINK = (
    "<h1>This unsubscribe link is not valid</h1><p>Copy the whole link from the message.</p>"
)


class _Answer(Exception):
    """Raised by a handler to answer at once with ``status`` and ``body``."""

    def __init__(self, status: int, body: object) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


class BiApp:
    """The WSGI application. ``token_factory`` makes reset tokens (tests pin it);
    ``unsubscribe_tokens`` signs unsubscribe links (a fresh random secret by default).
    Unsubscribing needs a mailer with a suppression list."""

    def __init__(
        self,
        mailer: nm.Mailer,
        *,
        base_url: str,
        token_factory: Callable[[], str] = lambda: secrets.token_urlsafe(32),
        unsubscribe_tokens: nm.UnsubscribeTokens | None = None,
    ) -> None:
        self.mailer = mailer
        self.base_url = base_url.rstrip("/")
        self.token_factory = token_factory
        self.reset_tokens: dict[str, str] = {}  # token -> the account's address
        self.unsubscribe_tokens = unsubscribe_tokens or nm.UnsubscribeTokens(
            secrets.token_bytes(32)
        )

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        routes: dict[str, dict[str, Handler]] = {
            "/password-reset": {"POST": self.password_reset},
            "/alerts": {"POST": self.alert},
            "/subscriptions": {"POST": self.subscription},
            "/suggestions": {"GET": self.suggestions},
            "/unsubscribe": {"GET": self.confirm_unsubscribe, "POST": self.unsubscribe},
        }
        methods = routes.get(environ.get("PATH_INFO", ""))
        try:
            if methods is None:
                raise _Answer(404, {"error": "no such page"})
            handler = methods.get(environ.get("REQUEST_METHOD", ""))
            if handler is None:
                raise _Answer(405, {"error": f"use {' or '.join(methods)}"})
            status, body = handler(environ)
        except _Answer as answer:
            status, body = answer.status, answer.body
        if isinstance(body, str):  # a page for a person
            content_type, payload = "text/html; charset=utf-8", _page(body).encode()
        else:
            content_type, payload = "application/json", json.dumps(body).encode()
        start_response(
            _STATUS[status],
            [("Content-Type", content_type), ("Content-Length", str(len(payload)))],
        )
        return [payload]

    def unsubscribe_url(self, recipient: str) -> str:
        """The one-click unsubscribe URL of ``recipient`` for dashboard subscriptions."""
        return self.unsubscribe_tokens.url(
            f"{self.base_url}/unsubscribe", recipient, SUBSCRIPTIONS_LIST
        )

    # --- the handlers ---

    def password_reset(self, environ: WSGIEnvironment) -> tuple[int, object]:
        email = _form(environ, "email")
        person = self.mailer.directory.find(email)
        if person is None or not person.active:
            return 202, {"message": _RESET_ANSWER}
        token = self.token_factory()
        link = f"{self.base_url}/reset?token={token}"
        try:
            self.mailer.send(
                nm.Message(
                    [person.email],
                    "Reset your password",
                    text=f"Hello {person.first_name or person.email},\n\n"
                    f"Reset your password here: {link}\n\n"
                    "If you did not ask for this, ignore this message.",
                    html=f"<p>Hello {person.first_name or person.email},</p>"
                    f'<p><a href="{link}">Reset your password</a></p>'
                    "<p>If you did not ask for this, ignore this message.</p>",
                )
            )
        except nm.DeliveryError as error:
            logger.warning("password reset for %s not sent: %s", person.email, error)
            return 503, {"error": "email cannot be sent right now, try again later"}
        self.reset_tokens[token] = person.email
        return 202, {"message": _RESET_ANSWER}

    def alert(self, environ: WSGIEnvironment) -> tuple[int, object]:
        return self._notify(environ)

    def subscription(self, environ: WSGIEnvironment) -> tuple[int, object]:
        return self._notify(environ, unsubscribe=self.unsubscribe_url, list_id=SUBSCRIPTIONS_LIST)

    def _notify(
        self,
        environ: WSGIEnvironment,
        *,
        unsubscribe: Callable[[str], str] | None = None,
        list_id: str | None = None,
    ) -> tuple[int, object]:
        creator = self.mailer.directory.find(_form(environ, "creator"))
        if creator is None or not creator.active:
            raise _Answer(403, {"error": "only account holders may create alerts"})
        recipients = [item.strip() for item in _form(environ, "recipients").split(",")]
        try:
            self.mailer.check_recipients(creator, [r for r in recipients if r])
            notification = nm.Notification(
                [r for r in recipients if r],
                _form(environ, "subject"),
                text=_form(environ, "text"),
                unsubscribe=unsubscribe,
                list_id=list_id,
            )
        except nm.RecipientNotAllowed as error:
            return 400, {"error": "recipients not allowed", "refused": dict(error.refused)}
        except nm.InvalidMessage as error:
            return 400, {"error": str(error)}
        report = self.mailer.notify(notification)
        return 200, {
            "accepted": list(report.accepted),
            "refused": {address: str(reply) for address, reply in report.refused.items()},
            "failed": {address: str(error) for address, error in report.failed.items()},
            "suppressed": list(report.suppressed),
        }

    def suggestions(self, environ: WSGIEnvironment) -> tuple[int, object]:
        viewer = self.mailer.directory.find(_query(environ, "viewer"))
        if viewer is None:
            raise _Answer(403, {"error": "unknown viewer"})
        people = self.mailer.suggest_recipients(viewer, everyone_group="All Users")
        return 200, [person.email for person in people]

    def confirm_unsubscribe(self, environ: WSGIEnvironment) -> tuple[int, object]:
        """A page with a button; following the link alone changes nothing."""
        token = _query(environ, "token")
        try:
            recipient, list_id = self.unsubscribe_tokens.verify(token)
        except nm.InvalidToken:
            return 400, _BAD_LINK
        action = html.escape(f"/unsubscribe?token={token}")
        return 200, (
            f"<h1>Unsubscribe {html.escape(recipient)}?</h1>"
            f"<p>You will get no more mail from {html.escape(list_id)}.</p>"
            f'<form method="post" action="{action}">'
            '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
            '<button type="submit">Unsubscribe</button></form>'
        )

    def unsubscribe(self, environ: WSGIEnvironment) -> tuple[int, object]:
        """RFC 8058's one-click POST (and the confirmation page's button)."""
        token = _query(environ, "token")
        if _form_fields(environ).get("List-Unsubscribe") != ["One-Click"]:
            return 400, "<h1>Not a one-click unsubscribe request</h1>"
        try:
            recipient, list_id = self.unsubscribe_tokens.verify(token)
        except nm.InvalidToken:
            return 400, _BAD_LINK
        suppressions = self.mailer.suppressions
        if suppressions is None:
            return 503, "<h1>Unsubscribing is not possible right now</h1>"
        suppressions.add(recipient, f"unsubscribed from {list_id}")
        logger.info("%s unsubscribed from %s", recipient, list_id)
        return 200, f"<h1>{html.escape(recipient)} is unsubscribed</h1>"


def _query(environ: WSGIEnvironment, name: str) -> str:
    """One query parameter (empty when missing)."""
    return parse_qs(environ.get("QUERY_STRING", "")).get(name, [""])[0]


def _form_fields(environ: WSGIEnvironment) -> dict[str, list[str]]:
    """The fields of a form body, url-encoded or ``multipart/form-data``, read once.

    RFC 8058 allows either encoding for the one-click POST, and mail providers use both.
    """
    cache = "bi_app.form"
    if cache not in environ:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        content_type = environ.get("CONTENT_TYPE", "")
        if content_type.startswith("multipart/form-data"):
            environ[cache] = _multipart_fields(content_type, body)
        else:
            environ[cache] = parse_qs(body.decode("utf-8", "replace"))
    fields: dict[str, list[str]] = environ[cache]
    return fields


def _multipart_fields(content_type: str, body: bytes) -> dict[str, list[str]]:
    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    fields: dict[str, list[str]] = {}
    if message.is_multipart():
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if isinstance(name, str):
                fields.setdefault(name, []).append(part.get_payload(decode=True).decode())
    return fields


def _form(environ: WSGIEnvironment, name: str) -> str:
    """One field of a form body; a missing field is a 400."""
    values = _form_fields(environ).get(name, [])
    if not values or not values[0].strip():
        raise _Answer(400, {"error": f"{name} is required"})
    return values[0].strip()


def _page(body: str) -> str:
    return f'<!doctype html><html lang="en"><meta charset="utf-8"><title>BI</title>{body}</html>'


def demo_people() -> nm.InMemoryDirectory:
    return nm.InMemoryDirectory(
        [
            nm.Person("admin@example.com", "Ada", "Admin", is_admin=True),
            nm.Person("ann@example.com", "Ann", "Archer", groups={"All Users", "Sales"}),
            nm.Person("bob@example.com", "Bob", "Baker", groups={"All Users", "Finance"}),
        ]
    )


def main() -> None:
    """Serve the application on http://127.0.0.1:8000 until interrupted."""
    logging.basicConfig(level=logging.INFO)
    environ_settings = nm.EmailSettings.from_env()
    transport = nm.ConsoleTransport() if environ_settings.active_smtp is None else None
    secret = os.environ.get("BI_APP_SECRET") or secrets.token_urlsafe(32)
    with nm.SqliteSuppressions("bi_app.db") as suppressions:
        mailer = nm.Mailer(
            environ_settings,
            transport=transport,
            directory=demo_people(),
            suppressions=suppressions,
        )
        # Unsubscribe links must be https (RFC 8058): put a TLS proxy in front of it.
        app = BiApp(
            mailer,
            base_url="https://127.0.0.1:8000",
            unsubscribe_tokens=nm.UnsubscribeTokens(nm.Secret(secret)),
        )
        with make_server("127.0.0.1", 8000, app) as server:
            print("Serving on http://127.0.0.1:8000")
            server.serve_forever()


if __name__ == "__main__":
    main()
