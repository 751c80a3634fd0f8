"""Shared fixtures: real SMTP servers on 127.0.0.1 with trustme certificates.

The toolkit (see ``smtp_servers.py`` for the pieces):

- ``tls_ca``: a trustme CA for the whole session; ``server_tls`` a server context with
  its certificate for ``localhost`` and ``127.0.0.1``; ``client_tls`` a client context
  that trusts the CA (and nothing else), to pass as ``ssl_context=``; ``ca_file`` the
  CA as a PEM file, for ``SmtpSettings(cafile=...)``.
- ``smtp_server(...)``: starts an aiosmtpd server (plain, implicit TLS, STARTTLS, with
  or without AUTH users and SMTPUTF8) whose ``RecordingHandler`` records what arrived
  and can be scripted to refuse or drop; ``server.settings(...)`` points SmtpSettings
  at it. Stopped at teardown.
- ``silent_server(greeting=None)``: a raw socket server that accepts and never answers
  (or greets, then goes silent). Stopped at teardown.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from facades import Facade
from smtp_servers import SilentServer, SmtpServer, server_context, start_smtp_server


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def server_tls(tls_ca: trustme.CA) -> ssl.SSLContext:
    return server_context(tls_ca, "localhost", "127.0.0.1")


@pytest.fixture(scope="session")
def client_tls(tls_ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    tls_ca.configure_trust(context)
    return context


@pytest.fixture(scope="session")
def ca_file(tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., SmtpServer]]:
    """Start servers with ``smtp_server(**start_smtp_server_arguments)``."""
    servers: list[SmtpServer] = []

    def start(**kwargs: Any) -> SmtpServer:
        server = start_smtp_server(**kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def silent_server() -> Iterator[Callable[..., SilentServer]]:
    """Start servers with ``silent_server(greeting=None)``."""
    servers: list[SilentServer] = []

    def start(greeting: bytes | None = None) -> SilentServer:
        server = SilentServer(greeting)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(params=["blocking", "asyncio"])
def facade(request: pytest.FixtureRequest) -> Facade:
    """Runs a test once with ``Mailer`` and once with ``AsyncMailer`` (see facades.py)."""
    return Facade(request.param)
