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
  says who accepted it and who did not.
- ``GET /suggestions?viewer=ADDRESS``: the people a recipient picker offers the viewer.

Run it from the ``examples`` directory with ``python -m bi_app.app``; settings come
from the ``MB_*`` variables, and with no SMTP server configured each message is
printed instead of sent.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING
from urllib.parse import parse_qs
from wsgiref.simple_server import make_server

import notifymail as nm

if TYPE_CHECKING:  # wsgiref.types is Python 3.11+; typeshed has the same for 3.10
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

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


class _Answer(Exception):
    """Raised by a handler to answer at once with ``status`` and ``body``."""

    def __init__(self, status: int, body: object) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


class BiApp:
    """The WSGI application. ``token_factory`` makes reset tokens (tests pin it)."""

    def __init__(
        self,
        mailer: nm.Mailer,
        *,
        base_url: str,
        token_factory: Callable[[], str] = lambda: secrets.token_urlsafe(32),
    ) -> None:
        self.mailer = mailer
        self.base_url = base_url.rstrip("/")
        self.token_factory = token_factory
        self.reset_tokens: dict[str, str] = {}  # token -> the account's address

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        routes: dict[str, tuple[str, Callable[[WSGIEnvironment], tuple[int, object]]]] = {
            "/password-reset": ("POST", self.password_reset),
            "/alerts": ("POST", self.alert),
            "/suggestions": ("GET", self.suggestions),
        }
        route = routes.get(environ.get("PATH_INFO", ""))
        try:
            if route is None:
                raise _Answer(404, {"error": "no such page"})
            method, handler = route
            if environ.get("REQUEST_METHOD") != method:
                raise _Answer(405, {"error": f"use {method}"})
            status, body = handler(environ)
        except _Answer as answer:
            status, body = answer.status, answer.body
        payload = json.dumps(body).encode()
        start_response(
            _STATUS[status],
            [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
        )
        return [payload]

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
        }

    def suggestions(self, environ: WSGIEnvironment) -> tuple[int, object]:
        query = parse_qs(environ.get("QUERY_STRING", ""))
        viewer = self.mailer.directory.find(query.get("viewer", [""])[0])
        if viewer is None:
            raise _Answer(403, {"error": "unknown viewer"})
        people = self.mailer.suggest_recipients(viewer, everyone_group="All Users")
        return 200, [person.email for person in people]


def _form(environ: WSGIEnvironment, name: str) -> str:
    """One field of a url-encoded form body; a missing field is a 400."""
    cache = "bi_app.form"
    if cache not in environ:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length).decode("utf-8", "replace")
        environ[cache] = parse_qs(body)
    values: list[str] = environ[cache].get(name, [])
    if not values or not values[0].strip():
        raise _Answer(400, {"error": f"{name} is required"})
    return values[0].strip()


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
    mailer = nm.Mailer(environ_settings, transport=transport, directory=demo_people())
    app = BiApp(mailer, base_url="http://127.0.0.1:8000")
    with make_server("127.0.0.1", 8000, app) as server:
        print("Serving on http://127.0.0.1:8000")
        server.serve_forever()


if __name__ == "__main__":
    main()
