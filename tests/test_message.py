"""Composition: headers, MIME structure, injection, Bcc privacy, IDN and SMTPUTF8."""

from __future__ import annotations

import email
import re
import threading
from datetime import datetime, timedelta, timezone
from email import policy
from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import notifymail as nm
from notifymail._compose import compose, compose_notification
from notifymail._readback import read_back
from notifymail.message import validate_recipients
from notifymail.policy import Batch

SENDER = nm.SenderSettings(from_address="noreply@example.com", from_name="Acme Reports")
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


def parse(envelope: nm.Envelope) -> EmailMessage:
    return read_back(envelope)


def message(**overrides: object) -> nm.Message:
    fields: dict[str, object] = {"to": ["ann@example.com"], "subject": "Hi", "text": "Hello"}
    fields.update(overrides)
    return nm.Message(**fields)  # type: ignore[arg-type]


def notification(**overrides: object) -> nm.Notification:
    fields: dict[str, object] = {
        "recipients": ["ann@example.com"],
        "subject": "Weekly",
        "text": "Numbers",
        "html": "<p>Numbers</p>",
    }
    fields.update(overrides)
    return nm.Notification(**fields)  # type: ignore[arg-type]


def leaf_types(parsed: EmailMessage) -> list[str]:
    return [part.get_content_type() for part in parsed.walk()]


# --- From, Reply-To, Date, Message-ID ---------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "Acme, Inc.",
        'The "Reports" Bot',
        'Müller, "Ünïcode" & Söhne',
        "報告 bot",
        "back\\slash (comment) <angle>",
    ],
)
def test_from_name_with_punctuation_or_non_ascii_round_trips(name: str) -> None:
    sender = nm.SenderSettings(from_address="noreply@example.com", from_name=name)
    envelope = compose(message(), sender)
    assert envelope.raw.isascii()
    (address,) = parse(envelope)["From"].addresses
    assert address.display_name == name
    assert address.addr_spec == "noreply@example.com"


def test_from_without_name_is_the_bare_address() -> None:
    envelope = compose(message(), nm.SenderSettings(from_address="noreply@example.com"))
    assert str(parse(envelope)["From"]) == "noreply@example.com"


def test_reply_to_of_the_message_replaces_the_senders() -> None:
    sender = nm.SenderSettings(from_address="noreply@example.com", reply_to=("help@example.com",))
    parsed = parse(compose(message(reply_to=["owner@example.com"]), sender))
    assert [a.addr_spec for a in parsed["Reply-To"].addresses] == ["owner@example.com"]


def test_reply_to_defaults_to_the_senders() -> None:
    sender = nm.SenderSettings(
        from_address="noreply@example.com", reply_to=("help@example.com", "ops@example.com")
    )
    parsed = parse(compose(message(), sender))
    assert [a.addr_spec for a in parsed["Reply-To"].addresses] == [
        "help@example.com",
        "ops@example.com",
    ]


def test_no_reply_to_header_when_none_is_set() -> None:
    assert "Reply-To" not in parse(compose(message(), SENDER))


def test_date_is_now_with_a_time_zone() -> None:
    date = parse(compose(message(), SENDER))["Date"].datetime
    assert date.tzinfo is not None
    assert abs(datetime.now(timezone.utc) - date) < timedelta(minutes=1)


def test_message_id_is_unique_at_the_from_domain_in_a_labels() -> None:
    sender = nm.SenderSettings(from_address="noreply@bücher.de")
    first, second = (compose(message(), sender) for _ in range(2))
    for envelope in (first, second):
        assert re.fullmatch(r"<[0-9a-f]{32}@xn--bcher-kva\.de>", envelope.message_id)
        assert parse(envelope)["Message-ID"] == envelope.message_id
    assert first.message_id != second.message_id


def test_custom_headers_are_written() -> None:
    parsed = parse(compose(message(headers={"List-Unsubscribe": "<https://x.test/u>"}), SENDER))
    assert parsed["List-Unsubscribe"] == "<https://x.test/u>"


# --- MIME structure ------------------------------------------------------------------------


def test_text_only_is_a_single_text_plain_part() -> None:
    parsed = parse(compose(message(text="Hello ü"), SENDER))
    assert leaf_types(parsed) == ["text/plain"]
    assert parsed.get_content() == "Hello ü\n"


def test_html_only_is_a_single_text_html_part() -> None:
    parsed = parse(compose(message(text=None, html="<p>Hi</p>"), SENDER))
    assert leaf_types(parsed) == ["text/html"]


def test_text_and_html_become_multipart_alternative() -> None:
    parsed = parse(compose(message(text="Plain", html="<b>Rich</b>"), SENDER))
    assert leaf_types(parsed) == ["multipart/alternative", "text/plain", "text/html"]
    assert parsed.get_body(("plain",)).get_content() == "Plain\n"  # type: ignore[union-attr]
    assert parsed.get_body(("html",)).get_content() == "<b>Rich</b>\n"  # type: ignore[union-attr]


def test_attachments_wrap_the_body_in_multipart_mixed() -> None:
    csv = nm.Attachment("report.csv", b"a,b\r\n1,2\r\n", "text/csv")
    parsed = parse(compose(message(html="<p>x</p>", attachments=[csv]), SENDER))
    assert leaf_types(parsed) == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "text/csv",
    ]
    (part,) = parsed.iter_attachments()
    assert part.get_filename() == "report.csv"
    assert part.get_content_disposition() == "attachment"
    assert part.get_payload(decode=True) == b"a,b\r\n1,2\r\n"


def test_inline_image_is_related_to_the_html_with_its_content_id() -> None:
    logo = nm.Attachment("logo.png", PNG, "image/png", content_id="<logo@acme>")
    assert logo.content_id == "logo@acme"
    parsed = parse(compose(message(html='<img src="cid:logo@acme">', attachments=[logo]), SENDER))
    assert leaf_types(parsed) == [
        "multipart/alternative",
        "text/plain",
        "multipart/related",
        "text/html",
        "image/png",
    ]
    image = next(p for p in parsed.walk() if p.get_content_type() == "image/png")
    assert image["Content-ID"] == "<logo@acme>"
    assert image.get_content_disposition() == "inline"
    assert image.get_payload(decode=True) == PNG


def test_non_ascii_filename_round_trips() -> None:
    attachment = nm.Attachment('Résumé "final", v2.pdf', b"%PDF", "application/pdf")
    parsed = parse(compose(message(attachments=[attachment]), SENDER))
    assert [p.get_filename() for p in parsed.iter_attachments()] == ['Résumé "final", v2.pdf']


def test_raw_uses_crlf_line_ends_only() -> None:
    logo = nm.Attachment("logo.png", PNG, "image/png", content_id="logo")
    envelope = compose(
        message(text="a\nb\r\nc", html="<p>x</p>\n" * 50, attachments=[logo]), SENDER
    )
    raw = envelope.raw
    assert b"\r\n" in raw
    assert raw.count(b"\n") == raw.count(b"\r\n") == raw.count(b"\r")


def test_non_ascii_bodies_are_7bit_on_the_wire() -> None:
    envelope = compose(message(text="Grüße " * 40, html="<p>€</p>"), SENDER)
    assert envelope.raw.isascii()
    parsed = parse(envelope)
    assert parsed.get_body(("plain",)).get_content() == "Grüße " * 40 + "\n"  # type: ignore[union-attr]


# --- Validation and header injection --------------------------------------------------------

LINE_BREAKERS = st.sampled_from(["\r", "\n", "\0", "\r\n", "\x0b", "\x85", "\u2028"])


@st.composite
def injected(draw: st.DrawFn) -> str:
    return draw(st.text(max_size=10)) + draw(LINE_BREAKERS) + draw(st.text(max_size=10))


@settings(max_examples=50, deadline=None)
@given(injected())
def test_line_breaks_in_the_subject_are_refused(value: str) -> None:
    with pytest.raises(nm.InvalidMessage, match="subject"):
        message(subject=value)


@settings(max_examples=50, deadline=None)
@given(injected())
def test_line_breaks_in_custom_header_values_are_refused(value: str) -> None:
    with pytest.raises(nm.InvalidMessage, match="X-Tag"):
        notification(headers={"X-Tag": value})


@settings(max_examples=50, deadline=None)
@given(injected())
def test_line_breaks_in_attachment_filenames_are_refused(value: str) -> None:
    with pytest.raises(nm.InvalidMessage, match="filename"):
        nm.Attachment(value, b"x", "text/plain")


@settings(max_examples=50, deadline=None)
@given(injected())
def test_line_breaks_in_content_ids_are_refused(value: str) -> None:
    with pytest.raises(nm.InvalidMessage, match="content_id"):
        nm.Attachment("a.png", b"x", "image/png", content_id=value)


@settings(max_examples=50, deadline=None)
@given(st.builds("{}{}{}".format, st.text(max_size=5), st.sampled_from("\r\n\0"), st.text()))
def test_line_breaks_in_the_from_name_are_a_config_error(value: str) -> None:
    with pytest.raises(nm.ConfigError) as info:
        nm.SenderSettings(from_address="noreply@example.com", from_name=value)
    assert info.value.field == "from_name"


@pytest.mark.parametrize("name", ["Acme\x0bBot", "Acme\x85Bot", "Acme\u2028Bot", "Acme\x7fBot"])
def test_other_control_characters_in_the_from_name_are_refused_by_the_settings(name: str) -> None:
    with pytest.raises(nm.ConfigError) as info:
        nm.SenderSettings(from_address="noreply@example.com", from_name=name)
    assert info.value.field == "from_name"


def test_line_break_in_a_mimetype_is_refused() -> None:
    with pytest.raises(nm.InvalidMessage, match="mimetype"):
        nm.Attachment("a.txt", b"x", "text/plain\r\nBcc: evil@example.com")


@pytest.mark.parametrize("name", ["X Tag", "X:Tag", "", "Tägg", "X-Tag\r\n"])
def test_invalid_custom_header_names_are_refused(name: str) -> None:
    with pytest.raises(nm.InvalidMessage, match="not a header name"):
        message(headers={name: "v"})


@pytest.mark.parametrize(
    "name",
    [
        "From",
        "to",
        "CC",
        "Bcc",
        "Message-ID",
        "Date",
        "Content-Type",
        "MIME-Version",
        "Resent-To",
    ],
)
def test_structural_headers_cannot_be_overridden(name: str) -> None:
    with pytest.raises(nm.InvalidMessage, match="cannot be overridden"):
        message(headers={name: "x@example.com"})


def test_a_bare_string_of_recipients_is_refused() -> None:
    with pytest.raises(nm.InvalidMessage, match="to: must be a list"):
        nm.Message("ann@example.com", "Hi", text="x")


def test_an_invalid_address_names_the_field_and_the_address() -> None:
    with pytest.raises(nm.InvalidMessage, match=r"cc: 'not-an-address' is not a valid address"):
        message(cc=["not-an-address"])


def test_validate_recipients_normalises_the_domain() -> None:
    assert validate_recipients(["Ann@EXAMPLE.com"], "to") == ("Ann@example.com",)


def test_a_message_needs_a_body() -> None:
    with pytest.raises(nm.InvalidMessage, match="text or an html body"):
        message(text=None)


def test_a_message_needs_a_recipient() -> None:
    with pytest.raises(nm.InvalidMessage, match="at least one recipient"):
        message(to=[])


def test_an_inline_image_needs_an_html_body() -> None:
    logo = nm.Attachment("logo.png", PNG, "image/png", content_id="logo")
    with pytest.raises(nm.InvalidMessage, match="needs an html body"):
        message(attachments=[logo])


@pytest.mark.parametrize("mimetype", ["pdf", "multipart/mixed", "message/rfc822", "a/b/c"])
def test_unsupported_mimetypes_are_refused(mimetype: str) -> None:
    with pytest.raises(nm.InvalidMessage, match="mimetype"):
        nm.Attachment("a", b"x", mimetype)


def test_fields_are_stored_immutable() -> None:
    headers = {"X-Tag": "a"}
    built = message(to=["ann@example.com"], headers=headers)
    headers["X-Tag"] = "b"
    assert built.to == ("ann@example.com",)
    assert built.headers["X-Tag"] == "a"
    with pytest.raises(TypeError):
        built.headers["X-Tag"] = "c"  # type: ignore[index]


# --- Recipients: envelope versus headers --------------------------------------------------


def test_system_mail_envelope_has_everyone_once_and_no_bcc_header() -> None:
    built = message(
        to=["ann@example.com", "bob@example.com"],
        cc=["Ann@Example.com", "cat@example.com"],
        bcc=["dan@example.com", "BOB@example.com"],
    )
    envelope = compose(built, SENDER)
    assert envelope.sender == "noreply@example.com"
    assert envelope.recipients == (
        "ann@example.com",
        "bob@example.com",
        "cat@example.com",
        "dan@example.com",
    )
    parsed = parse(envelope)
    assert [a.addr_spec for a in parsed["To"].addresses] == ["ann@example.com", "bob@example.com"]
    assert [a.addr_spec for a in parsed["Cc"].addresses] == ["Ann@example.com", "cat@example.com"]
    assert "Bcc" not in parsed
    assert b"dan@example.com" not in envelope.raw


def test_a_message_to_bcc_alone_is_addressed_to_undisclosed_recipients() -> None:
    envelope = compose(message(to=[], bcc=["dan@example.com"]), SENDER)
    assert envelope.recipients == ("dan@example.com",)
    assert str(parse(envelope)["To"]) == "undisclosed-recipients:;"
    assert b"dan@example.com" not in envelope.raw


def batch_addresses() -> st.SearchStrategy[list[str]]:
    local = st.from_regex(r"[a-z][a-z0-9._-]{0,15}[a-z0-9]", fullmatch=True).filter(
        lambda s: ".." not in s
    )
    domain = st.from_regex(r"[a-z][a-z0-9]{0,10}\.(com|org|de)", fullmatch=True)
    return st.lists(st.builds("{}@{}".format, local, domain), min_size=2, max_size=8, unique=True)


@settings(max_examples=40, deadline=None)
@given(batch_addresses())
def test_a_hidden_batch_names_no_recipient_in_its_bytes(addresses: list[str]) -> None:
    built = notification(recipients=addresses, text="Hi", html=None)
    (envelope,) = compose_notification(built, SENDER, [Batch(tuple(addresses), hidden=True)])
    assert set(envelope.recipients) == set(addresses)
    raw = envelope.raw.lower()
    for address in addresses:
        assert address.encode() not in raw
    parsed = parse(envelope)
    assert str(parsed["To"]) == "undisclosed-recipients:;"
    assert "Cc" not in parsed
    assert "Bcc" not in parsed


def test_a_visible_batch_lists_every_recipient_in_to() -> None:
    addresses = ("ann@example.com", "bob@example.com")
    (envelope,) = compose_notification(
        notification(recipients=addresses), SENDER, [Batch(addresses, hidden=False)]
    )
    parsed = parse(envelope)
    assert tuple(a.addr_spec for a in parsed["To"].addresses) == addresses
    assert "Cc" not in parsed


def test_notification_envelopes_share_one_body_and_parse_to_the_same_parts() -> None:
    logo = nm.Attachment("logo.png", PNG, "image/png", content_id="logo")
    csv = nm.Attachment("data.csv", b"x,y\n", "text/csv")
    batches = [
        Batch(("ann@example.com", "bob@example.com"), hidden=True),
        Batch(("cat@example.com", "dan@example.com"), hidden=False),
        Batch(("eve@outside.org",), hidden=False),
    ]
    built = notification(
        recipients=[a for b in batches for a in b.recipients],
        html='<img src="cid:logo">',
        attachments=[logo, csv],
        headers={"List-Unsubscribe": "<https://x.test/u>"},
    )
    envelopes = compose_notification(built, SENDER, batches)
    assert [e.recipients for e in envelopes] == [b.recipients for b in batches]
    assert len({e.raw.split(b"\r\n\r\n", 1)[1] for e in envelopes}) == 1
    bodies = []
    for envelope in envelopes:
        parsed = parse(envelope)
        assert parsed["Subject"] == "Weekly"
        assert parsed["List-Unsubscribe"] == "<https://x.test/u>"
        bodies.append(
            [(p.get_content_type(), p.get_payload(decode=True)) for p in parsed.walk()][1:]
        )
        assert b"\r\n" in envelope.raw
    assert bodies[0] == bodies[1] == bodies[2]
    assert len({e.message_id for e in envelopes}) == 3
    assert [str(parse(e)["To"]) for e in envelopes] == [
        "undisclosed-recipients:;",
        "cat@example.com, dan@example.com",
        "eve@outside.org",
    ]


def test_envelopes_sharing_a_body_serialise_concurrently_without_interference() -> None:
    built = notification(attachments=[nm.Attachment("a.bin", bytes(5000), "application/zip")])
    batches = [Batch((f"user{i}@example.com",), hidden=False) for i in range(40)]
    envelopes = compose_notification(built, SENDER, batches)
    threads = [threading.Thread(target=lambda e=e: e.raw) for e in envelopes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    bodies = {e.raw.split(b"\r\n\r\n", 1)[1] for e in envelopes}
    assert len(bodies) == 1


# --- Internationalised addresses ----------------------------------------------------------


def test_idn_domains_go_in_headers_as_a_labels() -> None:
    sender = nm.SenderSettings(from_address="noreply@bücher.de", reply_to=("help@bücher.de",))
    envelope = compose(message(to=["ann@münchen.de"], cc=["bob@bücher.de"]), sender)
    assert envelope.recipients == ("ann@münchen.de", "bob@bücher.de")
    assert envelope.sender == "noreply@bücher.de"
    assert not envelope.needs_smtputf8
    assert envelope.raw.isascii()
    parsed = parse(envelope)
    assert parsed["From"].addresses[0].addr_spec == "noreply@xn--bcher-kva.de"
    assert parsed["To"].addresses[0].addr_spec == "ann@xn--mnchen-3ya.de"
    assert parsed["Cc"].addresses[0].addr_spec == "bob@xn--bcher-kva.de"
    assert parsed["Reply-To"].addresses[0].addr_spec == "help@xn--bcher-kva.de"


def test_non_ascii_local_part_makes_the_message_smtputf8() -> None:
    envelope = compose(message(to=["jösé@bücher.de"], subject="Olé"), SENDER)
    assert envelope.needs_smtputf8
    assert "jösé@bücher.de".encode() in envelope.raw
    parsed = parse(envelope)
    assert parsed["To"].addresses[0].addr_spec == "jösé@bücher.de"
    assert parsed["Subject"] == "Olé"


def test_non_ascii_reply_to_alone_makes_the_message_smtputf8() -> None:
    envelope = compose(message(reply_to=["jösé@example.com"]), SENDER)
    assert envelope.needs_smtputf8
    assert parse(envelope)["Reply-To"].addresses[0].addr_spec == "jösé@example.com"


def test_parsed_raw_with_policy_default_matches_envelope() -> None:
    envelope = compose(message(), SENDER)
    parsed = email.message_from_bytes(envelope.raw, policy=policy.default)
    assert parsed["Message-ID"] == envelope.message_id
    assert parsed["MIME-Version"] == "1.0"


# --- The envelope is finished bytes ------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "fields"),
    [
        ("ann@example.com", {"text": "plain only ü"}),
        ("ann@bücher.de", {"html": "<p>x</p>" * 30}),
        (
            "jösé@example.com",
            {
                "html": '<img src="cid:logo">',
                "attachments": [
                    nm.Attachment("logo.png", PNG, "image/png", content_id="logo"),
                    nm.Attachment("Résumé.pdf", b"%PDF" * 100, "application/pdf"),
                ],
            },
        ),
    ],
)
def test_the_message_of_a_composed_envelope_is_its_bytes_read_back(
    to: str, fields: dict[str, object]
) -> None:
    sender = nm.SenderSettings(from_address="noreply@example.com", from_name="Ünï, Inc.")
    built = message(to=[to], headers={"X-Tag": "ü " * 60}, **fields)
    envelope = compose(built, sender)
    wire = policy.SMTPUTF8 if envelope.needs_smtputf8 else policy.SMTP
    parsed = email.message_from_bytes(envelope.raw, policy=wire)
    assert envelope.message.items() == parsed.items()
    assert envelope.message["X-Tag"] == "ü " * 60
    assert envelope.message["From"].addresses[0].display_name == "Ünï, Inc."
    assert [p.get_content_type() for p in envelope.message.walk()] == [
        p.get_content_type() for p in parsed.walk()
    ]
    assert nm.Envelope.from_dict(envelope.to_dict()).raw == envelope.raw


def test_a_retry_envelope_keeps_the_composed_bytes() -> None:
    envelope = compose(message(to=["ann@example.com", "bob@example.com"]), SENDER)
    retry = envelope.with_recipients(("bob@example.com",))
    assert retry.recipients == ("bob@example.com",)
    assert retry.raw == envelope.raw


# --- Attachments: charset, and unpaired surrogates ------------------------------------


def test_a_text_attachment_in_utf8_is_labelled_utf8() -> None:
    csv = nm.Attachment("export.csv", "Name,Stadt\nJürgen,Köln\n".encode(), "text/csv")
    assert csv.mimetype == "text/csv; charset=utf-8"
    (part,) = parse(compose(message(attachments=[csv]), SENDER)).iter_attachments()
    assert part.get_content_type() == "text/csv"
    assert part.get_param("charset") == "utf-8"
    assert part.get_content() == "Name,Stadt\nJürgen,Köln\n"
    assert part.get_payload(decode=True) == csv.content


@pytest.mark.parametrize(
    ("mimetype", "stored"),
    [
        ("text/plain; charset=utf-8", "text/plain; charset=utf-8"),
        ('Text/Plain;charset="ISO-8859-1"', "text/plain; charset=iso-8859-1"),
        ("text/plain", "text/plain"),  # not UTF-8: no label rather than a wrong one
        ("application/pdf", "application/pdf"),
    ],
)
def test_a_charset_parameter_is_accepted_and_bytes_that_are_not_utf8_get_no_label(
    mimetype: str, stored: str
) -> None:
    attachment = nm.Attachment("a.txt", b"caf\xe9", mimetype)
    assert attachment.mimetype == stored
    (part,) = parse(compose(message(attachments=[attachment]), SENDER)).iter_attachments()
    assert part.get_param("charset") == (stored.partition("charset=")[2] or None)
    assert part.get_payload(decode=True) == b"caf\xe9"


@pytest.mark.parametrize(
    "mimetype", ["application/pdf; charset=utf-8", "text/csv; header=present", "text/plain;"]
)
def test_other_mimetype_parameters_are_refused(mimetype: str) -> None:
    with pytest.raises(nm.InvalidMessage, match="mimetype"):
        nm.Attachment("a", b"x", mimetype)


@pytest.mark.parametrize(
    ("field", "build"),
    [
        ("subject", lambda: message(subject="a\ud800")),
        ("text", lambda: message(text="a\udfff b")),
        ("html", lambda: message(html="<p>\ud800</p>")),
        ("filename", lambda: nm.Attachment("a\ud800.pdf", b"x", "application/pdf")),
        ("X-Tag", lambda: message(headers={"X-Tag": "\udc80"})),
        ("to", lambda: message(to=["a\ud800@example.com"])),
    ],
)
def test_an_unpaired_surrogate_is_refused_when_the_message_is_made(field: str, build) -> None:
    with pytest.raises(nm.InvalidMessage, match=field):
        build()


def test_an_unpaired_surrogate_in_the_from_name_is_refused_before_sending() -> None:
    sender = nm.SenderSettings(from_address="noreply@example.com", from_name="Acme \ud800")
    with pytest.raises(nm.InvalidMessage, match="From: from_name"):
        compose(message(), sender)
