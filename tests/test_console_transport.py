"""ConsoleTransport: a readable rendering of each message, everyone accepted."""

from __future__ import annotations

import io

import pytest

import notifymail as nm
from notifymail._compose import compose

SENDER = nm.SenderSettings(from_address="noreply@bücher.de", from_name="Acme, Inc.")


def envelope(**fields: object) -> nm.Envelope:
    message = nm.Message(
        to=["ann@example.com"],
        subject="Grüße",
        text="Hello ü",
        html="<p>Hello</p>",
        bcc=["bob@example.com"],
        **fields,  # type: ignore[arg-type]
    )
    return compose(message, SENDER)


def test_writes_envelope_headers_and_decoded_bodies_to_the_stream() -> None:
    stream = io.StringIO()
    sent = envelope(attachments=[nm.Attachment("data.csv", b"a,b\n", "text/csv")])
    delivery = nm.ConsoleTransport(stream).send(sent)
    output = stream.getvalue()
    assert output.startswith(
        "Envelope-From: noreply@bücher.de\nEnvelope-To: ann@example.com, bob@example.com\n"
    )
    assert 'From: "Acme, Inc." <noreply@xn--bcher-kva.de>\n' in output
    assert "Subject: Grüße\n" in output
    assert f"Message-ID: {sent.message_id}\n" in output
    assert "[text/plain]\nHello ü\n" in output
    assert "[text/html]\n<p>Hello</p>\n" in output
    assert "[attachment 'data.csv': text/csv, 4 bytes]\n" in output
    assert "Bcc" not in output
    assert output.endswith("-" * 79 + "\n")
    assert delivery.accepted == ("ann@example.com", "bob@example.com")
    assert delivery.ok
    assert delivery.message_id == sent.message_id


def test_each_message_is_followed_by_a_separator() -> None:
    stream = io.StringIO()
    nm.ConsoleTransport(stream).send_many([envelope(), envelope()])
    assert stream.getvalue().count("-" * 79 + "\n") == 2
    assert stream.getvalue().count("Envelope-From:") == 2


def test_default_stream_is_stdout_at_write_time(capsys: pytest.CaptureFixture[str]) -> None:
    transport = nm.ConsoleTransport()
    transport.send(envelope())
    assert "Subject: Grüße" in capsys.readouterr().out


def test_inline_images_are_listed_with_their_content_id() -> None:
    stream = io.StringIO()
    logo = nm.Attachment("logo.png", b"\x89PNG", "image/png", content_id="logo")
    nm.ConsoleTransport(stream).send(envelope(attachments=[logo]))
    assert "[attachment 'logo.png': image/png, 4 bytes, inline <logo>]" in stream.getvalue()
