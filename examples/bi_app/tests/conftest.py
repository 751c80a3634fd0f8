"""The host's own fixtures: its email settings and people for notifymail's ``mailer``
fixture, and the application wired to that mailer."""

from __future__ import annotations

import json
from collections.abc import Callable
from io import BytesIO
from typing import Any
from urllib.parse import urlencode
from wsgiref.util import setup_testing_defaults

import pytest

import notifymail as nm
from bi_app.app import BiApp

Call = Callable[..., tuple[str, Any]]


@pytest.fixture
def notifymail_settings() -> nm.EmailSettings:
    return nm.EmailSettings(
        deployment=nm.Deployment(plan=nm.Plan.PRO),
        sender=nm.SenderSettings(from_address="bi@acme.example", from_name="Acme BI"),
        recipients=nm.RecipientPolicy(approved_domains="partner.example", suggestions="group"),
    )


@pytest.fixture
def notifymail_directory() -> nm.Directory:
    return nm.InMemoryDirectory(
        [
            nm.Person("root@acme.example", "Rita", "Root", is_admin=True),
            nm.Person("ann@acme.example", "Ann", "Archer", groups={"All Users", "Sales"}),
            nm.Person("bob@acme.example", "Bob", "Baker", groups={"All Users", "Finance"}),
            nm.Person("sam@acme.example", "Sam", "Seller", groups={"All Users", "Sales"}),
            nm.Person("old@acme.example", "Olga", "Old", active=False),
        ]
    )


@pytest.fixture
def notifymail_suppressions() -> nm.Suppressions:
    return nm.InMemorySuppressions()


@pytest.fixture
def app(mailer: nm.Mailer) -> BiApp:
    return BiApp(
        mailer,
        base_url="https://bi.acme.example",
        token_factory=lambda: "token-1",
        unsubscribe_tokens=nm.UnsubscribeTokens("the bi app's test secret"),
    )


@pytest.fixture
def call(app: BiApp) -> Call:
    """Call the application as a WSGI server would; returns (status, decoded JSON, or the
    HTML page as text). ``body`` and ``content_type`` send a body other than ``form``."""

    def request(
        method: str,
        path: str,
        form: dict[str, str] | None = None,
        *,
        body: bytes | None = None,
        content_type: str = "application/x-www-form-urlencoded",
    ) -> tuple[str, Any]:
        if body is None:
            body = urlencode(form or {}).encode()
        path, _, query = path.partition("?")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": content_type,
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": BytesIO(body),
        }
        setup_testing_defaults(environ)
        answers: list[tuple[str, dict[str, str]]] = []
        chunks = app(environ, lambda status, headers: answers.append((status, dict(headers))))  # type: ignore[arg-type]
        status, headers = answers[0]
        payload = b"".join(chunks)
        if headers["Content-Type"] == "application/json":
            return status, json.loads(payload)
        return status, payload.decode()

    return request
