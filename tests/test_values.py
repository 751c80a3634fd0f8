"""Envelope from raw bytes and its JSON-safe form: what an outbox or a broker stores."""

from __future__ import annotations

import json
from email.message import EmailMessage

import pytest

import notifymail as nm
from notifymail._compose import compose

SENDER = nm.SenderSettings(from_address="alerts@example.com", from_name="Alerts")


def composed() -> nm.Envelope:
    message = nm.Message(to=["ann@example.com"], subject="Résumé", text="Hello\n.dot line\n")
    return compose(message, SENDER)


def test_to_dict_round_trip_gives_byte_identical_raw() -> None:
    envelope = composed()
    data = json.loads(json.dumps(envelope.to_dict()))
    again = nm.Envelope.from_dict(data)
    assert again.raw == envelope.raw
    assert again.sender == envelope.sender
    assert again.recipients == envelope.recipients
    assert again.message_id == envelope.message_id != ""
    assert data["version"] == 1


def test_an_envelope_from_raw_sends_its_bytes_with_crlf_line_ends() -> None:
    envelope = nm.Envelope("a@example.com", ["b@example.com"], raw=b"Subject: x\n\nbody\n")
    assert envelope.raw == b"Subject: x\r\n\r\nbody\r\n"
    assert envelope.message["Subject"] == "x"


def test_message_id_is_read_from_raw_without_parsing_the_body() -> None:
    raw = b"Message-ID:\r\n <abc@example.com>\r\nSubject: x\r\n\r\nMessage-ID: <no@body>\r\n"
    envelope = nm.Envelope("a@example.com", ["b@example.com"], raw=raw)
    assert envelope.message_id == "<abc@example.com>"


def test_a_utf8_envelope_keeps_needing_smtputf8_after_the_round_trip() -> None:
    message = nm.Message(
        to=["ann@example.com"], reply_to=["jürgen@example.com"], subject="s", text="t"
    )
    envelope = compose(message, SENDER)
    assert envelope.needs_smtputf8
    assert nm.Envelope.from_dict(envelope.to_dict()).needs_smtputf8


def test_exactly_one_of_message_and_raw() -> None:
    with pytest.raises(TypeError, match="exactly one"):
        nm.Envelope("a@example.com", ["b@example.com"])
    with pytest.raises(TypeError, match="exactly one"):
        nm.Envelope("a@example.com", ["b@example.com"], EmailMessage(), raw=b"x")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ([], "mapping"),
        ({"version": 2}, "unknown version"),
        ({"version": 1, "sender": 1, "recipients": [], "raw": "", "smtputf8": False}, "sender"),
        (
            {"version": 1, "sender": "a@b.c", "recipients": "x@y.z", "raw": "", "smtputf8": False},
            "recipients",
        ),
        (
            {
                "version": 1,
                "sender": "a@b.c",
                "recipients": ["x@y.z"],
                "raw": "!!",
                "smtputf8": False,
            },
            "base64",
        ),
        (
            {
                "version": 1,
                "sender": "a@b.c",
                "recipients": ["x@y.z"],
                "raw": "",
                "smtputf8": "no",
            },
            "smtputf8",
        ),
    ],
)
def test_from_dict_refuses_a_malformed_dict(data: object, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        nm.Envelope.from_dict(data)  # type: ignore[arg-type]


def test_from_dict_refuses_an_address_that_would_break_a_command() -> None:
    data = composed().to_dict()
    data["recipients"] = ["x@example.com>\r\nRCPT TO:<y@evil.example"]
    with pytest.raises(nm.InvalidMessage, match="RCPT TO"):
        nm.Envelope.from_dict(data)


def test_an_envelope_is_immutable() -> None:
    envelope = composed()
    with pytest.raises(AttributeError, match="immutable"):
        envelope.recipients = ("eve@example.com",)  # type: ignore[misc]


@pytest.mark.parametrize(
    "address", ["ann@\u0300example.com", "ann@ex\u200dample.com", "ann@" + "ü" * 70 + ".com"]
)
def test_an_envelope_with_a_domain_idna_cannot_write_is_refused_when_made(address: str) -> None:
    with pytest.raises(nm.InvalidMessage, match="IDNA"):
        nm.Envelope("alerts@example.com", [address], raw=b"Subject: x\r\n\r\nx\r\n")
    with pytest.raises(nm.InvalidMessage, match="IDNA"):
        nm.Envelope(address, ["ann@example.com"], raw=b"Subject: x\r\n\r\nx\r\n")


def test_a_retry_envelope_of_a_composed_one_has_the_same_bytes() -> None:
    envelope = composed()
    again = envelope.with_recipients(["bob@example.com"])
    assert again.raw == envelope.raw
    assert again.message_id == envelope.message_id
    assert again.recipients == ("bob@example.com",)
    with pytest.raises(nm.InvalidMessage):
        envelope.with_recipients(["bob@example.com\r\nRCPT TO:<x@evil.example>"])


def test_the_message_id_composition_gives_is_the_one_its_header_holds() -> None:
    envelope = composed()
    from_bytes = nm.Envelope(envelope.sender, envelope.recipients, raw=envelope.raw)
    assert envelope.message_id == from_bytes.message_id
    assert envelope.message_id.startswith("<")
    assert envelope.message_id.endswith("@example.com>")
    assert envelope.with_recipients(["bob@example.com"]).message_id == envelope.message_id


@pytest.mark.parametrize(
    ("recipient", "needed"),
    [("ann@example.com", False), ("ann@bücher.de", False), ("jösé@example.com", True)],
)
def test_only_a_non_ascii_local_part_needs_smtputf8_in_an_envelope_from_bytes(
    recipient: str, needed: bool
) -> None:
    envelope = nm.Envelope("alerts@example.com", [recipient], raw=b"Subject: x\r\n\r\nx\r\n")
    assert envelope.needs_smtputf8 is needed


def test_an_envelope_from_bytes_names_the_message_id_its_bytes_hold() -> None:
    raw = b"Message-ID: <sent@example.com>\r\nSubject: x\r\n\r\nbody\r\n"
    parsed_first = nm.Envelope("a@example.com", ["b@example.com"], raw=raw)
    parsed_first.message.replace_header("Message-ID", "<edited@example.com>")
    read_first = nm.Envelope("a@example.com", ["b@example.com"], raw=raw)
    assert read_first.message_id == "<sent@example.com>"
    read_first.message.replace_header("Message-ID", "<edited@example.com>")
    assert parsed_first.message_id == read_first.message_id == "<sent@example.com>"


def test_an_envelope_from_a_message_reads_its_message_id_each_time() -> None:
    message = EmailMessage()
    message["Subject"] = "x"
    message["Message-ID"] = "<first@example.com>"
    envelope = nm.Envelope("a@example.com", ["b@example.com"], message)
    assert envelope.message_id == "<first@example.com>"
    message.replace_header("Message-ID", "<second@example.com>")
    assert envelope.message_id == "<second@example.com>"
