"""The SMTP client core with no socket at all: feed the server's bytes, read the client's.

Each test is a transcript: what the client wrote, what the server answered, the events.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest

import notifymail as nm
from notifymail.protocol import (
    MAX_REPLY_LINES,
    NEED_DATA,
    PIPELINE_WINDOW,
    Closed,
    Delivered,
    Event,
    Failed,
    Ready,
    ReplyCode,
    SmtpClient,
    StartTls,
    State,
    Step,
    error_for,
)
from smtp_servers import make_envelope

GREETING = b"220 mail.example.com ESMTP\r\n"
EHLO = b"EHLO client.example\r\n"
PLAIN_EHLO_REPLY = b"250-mail.example.com\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
PIPELINING_EHLO_REPLY = b"250-mail.example.com\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
PASSWORD = "pa55-Word"


def b64(text: str) -> bytes:
    return base64.b64encode(text.encode())


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def client(
    *,
    security: str = "none",
    username: str | None = None,
    password: str | None = None,
    oauth2_token: Callable[[], str] | None = None,
    clock: Callable[[], float] | None = None,
) -> SmtpClient:
    smtp = nm.SmtpSettings(
        host="mail.example.com",
        port=25,
        security=security,
        username=username,
        password=password,
        timeout=5.0,
    )
    core = SmtpClient(
        smtp,
        local_hostname="client.example",
        oauth2_token=oauth2_token,
        clock=clock or Clock(),
    )
    core.connected("192.0.2.7")
    return core


def exchange(core: SmtpClient, server: bytes) -> Event:
    """Feed ``server``'s bytes; return the first event that is not NEED_DATA."""
    core.receive_data(server)
    return core.next_event()


def sent(core: SmtpClient) -> bytes:
    return core.data_to_send()


def ready(core: SmtpClient, ehlo_reply: bytes = PLAIN_EHLO_REPLY) -> Ready:
    assert core.next_event() is NEED_DATA
    assert exchange(core, GREETING) is NEED_DATA
    assert sent(core) == EHLO
    event = exchange(core, ehlo_reply)
    assert isinstance(event, Ready)
    return event


def in_transaction(
    envelope: nm.Envelope | None = None, *, ehlo_reply: bytes = PLAIN_EHLO_REPLY
) -> SmtpClient:
    """A ready client that has begun ``envelope``'s transaction and waits for replies."""
    core = client()
    ready(core, ehlo_reply)
    core.mail(envelope or make_envelope())
    sent(core)
    assert core.next_event() is NEED_DATA
    return core


# --- greeting, EHLO, HELO ---


def test_the_client_waits_for_the_greeting_then_says_ehlo_and_reads_the_extensions():
    core = client()
    assert sent(core) == b""
    assert core.next_event() is NEED_DATA

    assert exchange(core, b"220 mail.exa") is NEED_DATA  # a reply arrives in pieces
    assert sent(core) == b""
    assert exchange(core, b"mple.com ESMTP\r\n") is NEED_DATA
    assert sent(core) == EHLO
    event = exchange(core, b"250-mail.example.com\r\n250-SIZE 1000\r\n250 AUTH=LOGIN PLAIN\r\n")

    assert event == Ready({"SIZE": "1000", "AUTH": "LOGIN PLAIN"}, encrypted=False)
    assert core.state is State.READY


def test_the_default_ehlo_name_is_the_address_literal_of_the_local_end():
    smtp = nm.SmtpSettings(host="mail.example.com")
    ipv4, ipv6 = SmtpClient(smtp), SmtpClient(smtp)
    ipv4.connected("192.0.2.7")
    ipv6.connected("2001:db8::7%eth0")
    for core in (ipv4, ipv6):
        core.receive_data(GREETING)
        core.next_event()

    assert (sent(ipv4), sent(ipv6)) == (b"EHLO [192.0.2.7]\r\n", b"EHLO [IPv6:2001:db8::7]\r\n")


def test_an_old_server_refusing_ehlo_gets_helo_and_no_extensions():
    core = client()
    core.next_event()
    exchange(core, GREETING)
    sent(core)

    assert exchange(core, b"502 5.5.2 Command not recognised\r\n") is NEED_DATA
    assert sent(core) == b"HELO client.example\r\n"
    assert exchange(core, b"250 mail.example.com\r\n") == Ready({}, encrypted=False)


@pytest.mark.parametrize(
    ("greeting", "retryable"),
    [(b"421 4.3.2 Busy\r\n", True), (b"554 5.3.2 No service for you\r\n", False)],
)
def test_a_refused_greeting_is_a_connection_failure_by_its_code(greeting, retryable):
    core = client()
    core.next_event()

    event = exchange(core, greeting)

    assert isinstance(event, Failed)
    assert isinstance(event.error, nm.ConnectionFailed)
    assert event.error.retryable is retryable
    assert event.error.reply == nm.Reply(int(greeting[:3]), greeting[4:-2].decode())
    assert core.state is State.CLOSED
    assert sent(core) == b""


# --- STARTTLS and SSL ---


def test_starttls_hands_off_to_the_driver_then_says_ehlo_again():
    core = client(security="starttls")
    core.next_event()
    exchange(core, GREETING)
    sent(core)
    assert exchange(core, b"250-mail.example.com\r\n250 STARTTLS\r\n") is NEED_DATA
    assert sent(core) == b"STARTTLS\r\n"

    assert exchange(core, b"220 2.0.0 Ready to start TLS\r\n") == StartTls()
    core.tls_started()

    assert sent(core) == EHLO
    assert core.next_event() is NEED_DATA
    event = exchange(core, b"250-mail.example.com\r\n250 AUTH PLAIN\r\n")
    assert event == Ready({"AUTH": "PLAIN"}, encrypted=True)


def test_plaintext_after_the_reply_to_starttls_fails_the_connection():
    """Bytes sent with the 220 would pass for the first replies after TLS (response
    injection); the connection is given up before the handshake."""
    core = client(security="starttls")
    core.next_event()
    exchange(core, GREETING)
    sent(core)
    exchange(core, b"250-mail.example.com\r\n250 STARTTLS\r\n")
    sent(core)

    event = exchange(core, b"220 Go ahead\r\n250-mail.example.com\r\n250 AUTH PLAIN\r\n")

    assert isinstance(event, Failed)
    assert isinstance(event.error, nm.TlsError)
    assert "more than its reply to STARTTLS" in str(event.error)
    assert core.state is State.CLOSED


def test_ssl_asks_for_tls_before_reading_the_greeting():
    core = client(security="ssl")

    assert core.next_event() == StartTls()
    assert sent(core) == b""
    core.tls_started()
    assert core.next_event() is NEED_DATA
    assert exchange(core, GREETING) is NEED_DATA
    assert sent(core) == EHLO


@pytest.mark.parametrize(
    ("security", "message"),
    [
        ("starttls", "does not offer STARTTLS, which security starttls requires"),
        ("tls", "credentials are never sent unencrypted"),
    ],
)
def test_no_starttls_offered_sends_no_credentials_and_nothing_more(security, message):
    core = client(security=security, username="robot", password=PASSWORD)
    core.next_event()
    exchange(core, GREETING)
    sent(core)

    event = exchange(core, b"250-mail.example.com\r\n250 AUTH PLAIN\r\n")

    assert isinstance(event, Failed)
    assert isinstance(event.error, nm.TlsError)
    assert message in str(event.error)
    assert sent(core) == b""
    assert core.state is State.CLOSED


# --- AUTH ---


def _to_auth(core: SmtpClient, ehlo_reply: bytes) -> bytes:
    core.next_event()
    exchange(core, GREETING)
    sent(core)
    assert exchange(core, ehlo_reply) is NEED_DATA
    return sent(core)


def test_auth_plain_sends_the_initial_response():
    core = client(username="robot", password=PASSWORD)

    auth = _to_auth(core, b"250-mail.example.com\r\n250 AUTH LOGIN PLAIN\r\n")

    assert auth == b"AUTH PLAIN " + b64(f"\0robot\0{PASSWORD}") + b"\r\n"
    assert isinstance(exchange(core, b"235 2.7.0 Authentication successful\r\n"), Ready)


def test_auth_login_answers_each_challenge():
    core = client(username="robot", password=PASSWORD)

    assert _to_auth(core, b"250-mail.example.com\r\n250 AUTH LOGIN\r\n") == b"AUTH LOGIN\r\n"
    assert exchange(core, b"334 VXNlcm5hbWU6\r\n") is NEED_DATA
    assert sent(core) == b64("robot") + b"\r\n"
    assert exchange(core, b"334 UGFzc3dvcmQ6\r\n") is NEED_DATA
    assert sent(core) == b64(PASSWORD) + b"\r\n"
    assert isinstance(exchange(core, b"235 2.7.0 OK\r\n"), Ready)


def test_xoauth2_sends_the_username_and_the_current_token_and_no_password():
    tokens = iter(["ya29.first-token"])
    core = client(
        username="robot@example.com", password=PASSWORD, oauth2_token=lambda: next(tokens)
    )

    auth = _to_auth(core, b"250-mail.example.com\r\n250 AUTH LOGIN PLAIN XOAUTH2\r\n")

    expected = b64("user=robot@example.com\x01auth=Bearer ya29.first-token\x01\x01")
    assert auth == b"AUTH XOAUTH2 " + expected + b"\r\n"
    assert PASSWORD.encode() not in auth
    assert isinstance(exchange(core, b"235 2.7.0 Accepted\r\n"), Ready)


def test_a_refused_xoauth2_token_answers_the_error_challenge_empty_then_fails_and_quits():
    core = client(username="robot@example.com", password=PASSWORD, oauth2_token=lambda: "bad")
    _to_auth(core, b"250-mail.example.com\r\n250 AUTH XOAUTH2\r\n")
    challenge = b64('{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}')

    assert exchange(core, b"334 " + challenge + b"\r\n") is NEED_DATA
    assert sent(core) == b"\r\n"  # the empty response RFC 7628 asks for
    assert exchange(core, b"535 5.7.8 Username and Password not accepted\r\n") is NEED_DATA
    assert sent(core) == b"QUIT\r\n"  # one attempt per connection, then QUIT
    event = exchange(core, b"221 2.0.0 Bye\r\n")

    assert isinstance(event, Failed)
    assert isinstance(event.error, nm.AuthenticationFailed)
    assert event.error.reply == nm.Reply(535, "5.7.8 Username and Password not accepted")
    assert "the OAuth2 token for 'robot@example.com'" in str(event.error)
    assert core.state is State.CLOSED


def test_a_refused_password_is_one_attempt_then_quit_with_the_password_masked():
    core = client(username="robot", password=PASSWORD)
    _to_auth(core, b"250-mail.example.com\r\n250 AUTH PLAIN LOGIN\r\n")

    echoed = f"535 5.7.8 Bad: {PASSWORD} {b64(PASSWORD).decode()}\r\n".encode()
    assert exchange(core, echoed) is NEED_DATA
    assert sent(core) == b"QUIT\r\n"  # never LOGIN after PLAIN
    event = exchange(core, b"221 Bye\r\n")

    assert isinstance(event, Failed)
    assert event.error.reply == nm.Reply(535, "5.7.8 Bad: ********** **********")
    assert PASSWORD not in str(event.error)


def test_no_auth_offered_with_credentials_fails_before_sending_anything():
    core = client(username="robot", password=PASSWORD)
    core.next_event()
    exchange(core, GREETING)
    sent(core)

    event = exchange(core, PLAIN_EHLO_REPLY)

    assert isinstance(event, Failed)
    assert isinstance(event.error, nm.AuthenticationFailed)
    assert "does not offer AUTH" in str(event.error)
    assert sent(core) == b""


def test_more_challenges_than_responses_are_cancelled():
    core = client(username="robot", password=PASSWORD)
    _to_auth(core, b"250-mail.example.com\r\n250 AUTH PLAIN\r\n")

    exchange(core, b"334 \r\n")
    assert sent(core) == b64(f"\0robot\0{PASSWORD}") + b"\r\n"
    exchange(core, b"334 \r\n")
    assert sent(core) == b"*\r\n"


# --- the transaction ---


def test_pipelined_mail_rcpt_and_data_go_out_in_one_write_and_replies_are_per_recipient():
    core = client()
    ready(core, PIPELINING_EHLO_REPLY)
    envelope = make_envelope(recipients=("ann@example.com", "bob@example.com", "cy@example.com"))

    core.mail(envelope)

    assert sent(core) == (
        b"MAIL FROM:<alerts@example.com>\r\n"
        b"RCPT TO:<ann@example.com>\r\n"
        b"RCPT TO:<bob@example.com>\r\n"
        b"RCPT TO:<cy@example.com>\r\n"
        b"DATA\r\n"
    )
    assert core.next_event() is NEED_DATA
    replies = b"250 OK\r\n250 OK\r\n550 5.1.1 No such user\r\n251 Forwarded\r\n354 Go\r\n"
    assert exchange(core, replies) is NEED_DATA
    assert sent(core) == envelope.raw + b".\r\n"
    event = exchange(core, b"250 2.0.0 Queued\r\n")

    assert event == Delivered(
        nm.Delivery(
            envelope.message_id,
            accepted=("ann@example.com", "cy@example.com"),
            refused={"bob@example.com": nm.Reply(550, "5.1.1 No such user")},
        )
    )
    assert core.state is State.READY


def test_without_pipelining_each_command_waits_for_the_reply_before_it():
    core = client()
    ready(core)
    core.mail(make_envelope(recipients=("ann@example.com", "bob@example.com")))

    assert sent(core) == b"MAIL FROM:<alerts@example.com>\r\n"
    assert core.next_event() is NEED_DATA
    exchange(core, b"250 OK\r\n")
    assert sent(core) == b"RCPT TO:<ann@example.com>\r\n"
    exchange(core, b"250 OK\r\n")
    assert sent(core) == b"RCPT TO:<bob@example.com>\r\n"
    exchange(core, b"250 OK\r\n")
    assert sent(core) == b"DATA\r\n"


def test_the_core_says_when_what_it_has_to_send_includes_a_message():
    """Commands are not the point of no return; a message's content and its end of DATA
    are, and a driver may hold them back (``has_message_to_send``) until it is ready."""
    core = client()
    ready(core)
    core.mail(make_envelope(recipients=("ann@example.com",)))
    for reply in (b"250 OK\r\n", b"250 OK\r\n"):  # MAIL, RCPT: DATA comes next
        assert core.has_data_to_send
        assert not core.has_message_to_send
        sent(core)
        exchange(core, reply)
    assert sent(core) == b"DATA\r\n"
    exchange(core, b"354 Go\r\n")
    assert core.has_message_to_send
    assert sent(core).endswith(b"\r\n.\r\n")
    assert not core.has_message_to_send


def test_at_most_a_hundred_commands_are_written_ahead_of_their_replies():
    core = client()
    ready(core, PIPELINING_EHLO_REPLY)
    recipients = tuple(f"user{i}@example.com" for i in range(150))
    core.mail(make_envelope(recipients=recipients))

    first = sent(core)
    assert first.count(b"\r\n") == PIPELINE_WINDOW
    core.next_event()
    assert exchange(core, b"250 OK\r\n" * (PIPELINE_WINDOW - 1)) is NEED_DATA
    assert sent(core) == b""  # one reply still owed: nothing more yet
    exchange(core, b"250 OK\r\n")
    assert sent(core).count(b"\r\n") == 152 - PIPELINE_WINDOW  # the rest, DATA included


def test_dot_stuffing_doubles_leading_dots_and_ends_with_crlf_dot_crlf():
    core = client()
    ready(core)
    envelope = nm.Envelope(
        "a@example.com", ("b@example.com",), raw=b"Subject: x\r\n\r\n.one\r\n..two\r\nend"
    )
    core.mail(envelope)
    sent(core)
    core.next_event()
    for reply in (b"250 OK\r\n", b"250 OK\r\n"):
        exchange(core, reply)
        sent(core)
    exchange(core, b"354 Go\r\n")

    assert sent(core) == b"Subject: x\r\n\r\n..one\r\n...two\r\nend\r\n.\r\n"


def test_envelopes_sharing_a_body_each_send_it_dot_stuffed_and_declare_8bitmime():
    body = ".first line\r\nnaïve\r\n.second\r\nend".encode()
    envelopes = [
        nm.Envelope._composed(
            "a@example.com",
            (to,),
            f"Subject: x\r\nTo: {to}\r\n\r\n".encode(),
            body,
            smtputf8=False,
        )
        for to in ("b@example.com", "c@example.com")
    ]
    core = client()
    ready(core)
    for envelope in envelopes:
        core.mail(envelope)
        assert sent(core).startswith(b"MAIL FROM:<a@example.com> BODY=8BITMIME\r\n")
        core.next_event()
        for reply in (b"250 OK\r\n", b"250 OK\r\n"):
            exchange(core, reply)
            sent(core)
        exchange(core, b"354 Go\r\n")
        head = f"Subject: x\r\nTo: {envelope.recipients[0]}\r\n\r\n".encode()
        assert sent(core) == head + "..first line\r\nnaïve\r\n..second\r\nend\r\n.\r\n".encode()
        assert isinstance(exchange(core, b"250 Queued\r\n"), Delivered)


def test_smtputf8_and_8bitmime_are_declared_on_mail_from_when_offered():
    core = client()
    ready(core)

    core.mail(make_envelope(recipients=("jörg@example.com",), body="Grüße\n"))

    assert sent(core) == b"MAIL FROM:<alerts@example.com> SMTPUTF8 BODY=8BITMIME\r\n"


def test_an_envelope_needing_smtputf8_fails_before_mail_when_the_server_lacks_it():
    core = client()
    ready(core, PIPELINING_EHLO_REPLY)

    core.mail(make_envelope(recipients=("ann@example.com", "jörg@example.com")))

    assert sent(core) == b""
    event = core.next_event()
    assert isinstance(event, Failed)
    assert isinstance(event.error, nm.PermanentFailure)
    assert "jörg@example.com needs SMTPUTF8" in str(event.error)
    assert core.state is State.READY


def test_domains_go_out_as_a_labels():
    core = client()
    ready(core, PIPELINING_EHLO_REPLY)

    core.mail(make_envelope(sender="a@bücher.example", recipients=("b@bücher.example",)))

    assert b"MAIL FROM:<a@xn--bcher-kva.example>\r\nRCPT TO:<b@xn--bcher-kva.example>" in sent(
        core
    )


def test_every_recipient_refused_pipelined_ends_an_accepted_data_empty_then_resets():
    core = in_transaction(
        make_envelope(recipients=("ann@example.com", "bob@example.com")),
        ehlo_reply=PIPELINING_EHLO_REPLY,
    )

    replies = b"250 OK\r\n450 4.2.1 Busy\r\n550 5.1.1 No such user\r\n354 Go ahead anyway\r\n"
    assert exchange(core, replies) is NEED_DATA
    assert sent(core) == b".\r\n"  # the end of DATA alone, never the message
    assert exchange(core, b"554 5.5.1 No valid recipients\r\n") is NEED_DATA
    assert sent(core) == b"RSET\r\n"
    event = exchange(core, b"250 OK\r\n")

    assert isinstance(event, Failed)
    assert isinstance(event.error, nm.TemporaryFailure)  # by the first refusal
    assert event.error.refused == {
        "ann@example.com": nm.Reply(450, "4.2.1 Busy"),
        "bob@example.com": nm.Reply(550, "5.1.1 No such user"),
    }
    assert core.state is State.READY


def test_a_refused_sender_reads_the_replies_owed_and_needs_no_reset():
    core = in_transaction(ehlo_reply=PIPELINING_EHLO_REPLY)

    event = exchange(core, b"553 5.7.1 Sender refused\r\n503 Need MAIL\r\n503 Need MAIL\r\n")

    assert isinstance(event, Failed)
    assert event.error.reply == nm.Reply(553, "5.7.1 Sender refused")
    assert sent(core) == b""
    assert core.state is State.READY


@pytest.mark.parametrize("step", ["mail", "rcpt", "data", "end"])
def test_421_anywhere_closes_the_connection(step):
    core = in_transaction(ehlo_reply=PIPELINING_EHLO_REPLY)
    replies = {
        "mail": [b"421 4.3.2 Closing\r\n"],
        "rcpt": [b"250 OK\r\n", b"421 4.3.2 Closing\r\n"],
        "data": [b"250 OK\r\n", b"250 OK\r\n", b"421 4.3.2 Closing\r\n"],
        "end": [b"250 OK\r\n", b"250 OK\r\n", b"354 Go\r\n", b"421 4.3.2 Closing\r\n"],
    }[step]

    event = exchange(core, b"".join(replies))

    assert isinstance(event, Failed)
    assert event.error.reply is not None
    assert event.error.reply.code == ReplyCode.SERVICE_NOT_AVAILABLE
    assert event.error.retryable
    assert core.state is State.CLOSED


def test_a_lost_reply_after_the_end_of_data_is_never_retryable():
    core = client()
    ready(core)
    core.mail(make_envelope())
    for reply in (b"250 OK\r\n", b"250 OK\r\n", b"354 Go\r\n"):
        sent(core)
        core.next_event()
        core.receive_data(reply)
    core.next_event()
    assert sent(core).endswith(b"\r\n.\r\n")

    core.receive_data(b"")  # the server closed the connection
    event = core.next_event()

    assert isinstance(event, Failed)
    assert isinstance(event.error, nm.ConnectionFailed)
    assert event.error.retryable is False
    assert "not sent again" in str(event.error)
    assert core.state is State.CLOSED


def test_a_kept_connection_dropped_at_mail_from_may_be_reopened_once():
    core = in_transaction(ehlo_reply=PIPELINING_EHLO_REPLY)
    assert isinstance(exchange(core, b"250 OK\r\n250 OK\r\n354 Go\r\n"), type(NEED_DATA))
    sent(core)
    assert isinstance(exchange(core, b"250 Queued\r\n"), Delivered)

    core.mail(make_envelope())  # the second envelope on this connection
    sent(core)
    core.next_event()
    core.receive_data(b"")

    event = core.next_event()
    assert isinstance(event, Failed)
    assert event.reconnect is True
    assert isinstance(event.error, nm.ConnectionFailed)


def test_the_first_envelope_of_a_connection_is_never_marked_for_reconnection():
    core = in_transaction()

    event = exchange(core, b"421 4.3.2 Closing\r\n")

    assert isinstance(event, Failed)
    assert event.reconnect is False


# --- pipelining across messages (RFC 2920 3.1) ---


def awaiting_end_of_data(envelope: nm.Envelope) -> SmtpClient:
    """A pipelining client whose ``envelope`` is on its way: only its end of DATA's
    reply is owed, and its content not yet taken for writing."""
    core = in_transaction(envelope, ehlo_reply=PIPELINING_EHLO_REPLY)
    assert exchange(core, b"250 OK\r\n250 OK\r\n354 Go\r\n") is NEED_DATA
    return core


def test_the_next_envelope_goes_out_in_the_same_write_as_the_message_before_it():
    first, second = make_envelope(subject="first"), make_envelope(subject="second")
    core = awaiting_end_of_data(first)
    assert core.can_mail_ahead

    assert core.mail(second) is True

    assert not core.can_mail_ahead  # one envelope ahead at most
    assert sent(core) == (
        first.raw + b".\r\n" + b"MAIL FROM:<alerts@example.com>\r\n"
        b"RCPT TO:<ann@example.com>\r\nDATA\r\n"
    )
    assert core.next_event() is NEED_DATA
    events = [exchange(core, b"250 Queued\r\n250 OK\r\n250 OK\r\n354 Go\r\n")]
    assert isinstance(events[0], Delivered)
    assert events[0].delivery.message_id == first.message_id
    assert core.next_event() is NEED_DATA
    assert sent(core) == second.raw + b".\r\n"  # the second message only after its 354
    second_done = exchange(core, b"250 Queued\r\n")
    assert isinstance(second_done, Delivered)
    assert second_done.delivery.message_id == second.message_id
    assert core.state is State.READY


def test_no_envelope_goes_ahead_without_pipelining_or_before_the_message_is_due():
    plain = in_transaction()  # no PIPELINING offered
    for reply in (b"250 OK\r\n", b"250 OK\r\n", b"354 Go\r\n"):
        assert not plain.can_mail_ahead
        exchange(plain, reply)
    assert not plain.can_mail_ahead
    pipelined = in_transaction(ehlo_reply=PIPELINING_EHLO_REPLY)
    assert not pipelined.can_mail_ahead  # MAIL, RCPT and DATA still owe their replies

    with pytest.raises(RuntimeError, match="in state sending"):
        pipelined.mail(make_envelope())


def test_a_refused_message_ends_its_transaction_and_the_one_queued_behind_goes_on():
    core = awaiting_end_of_data(make_envelope())
    second = make_envelope(subject="second")
    core.mail(second)
    sent(core)
    core.next_event()

    refused = exchange(core, b"554 5.6.0 Rejected\r\n250 OK\r\n250 OK\r\n354 Go\r\n")

    assert isinstance(refused, Failed)
    assert refused.error.reply == nm.Reply(554, "5.6.0 Rejected")
    assert core.next_event() is NEED_DATA
    assert sent(core) == second.raw + b".\r\n"  # no RSET: the reply ended the transaction
    assert isinstance(exchange(core, b"250 Queued\r\n"), Delivered)


@pytest.mark.parametrize("how", [b"", b"421 4.3.2 Closing\r\n"])
def test_a_connection_lost_at_the_end_of_data_fails_the_message_for_good_and_the_next_for_now(
    how,
):
    core = awaiting_end_of_data(make_envelope())
    core.mail(make_envelope(subject="second"))
    sent(core)
    core.next_event()

    core.receive_data(how)  # b"": the server closed the connection
    first, second = core.next_event(), core.next_event()

    assert isinstance(first, Failed)
    assert first.error.retryable is (how != b"")  # a lost reply is never retried
    assert first.reconnect is False
    assert isinstance(second, Failed)
    assert isinstance(second.error, nm.ConnectionFailed)
    assert second.error.retryable is True
    assert second.reconnect is True  # nothing of it was taken: it may go on a new connection
    assert core.state is State.CLOSED


def test_an_envelope_queued_ahead_that_needs_smtputf8_fails_after_the_one_before_it():
    first = make_envelope()
    core = awaiting_end_of_data(first)

    assert core.mail(make_envelope(recipients=("jörg@example.com",))) is False

    assert sent(core) == first.raw + b".\r\n"
    assert core.next_event() is NEED_DATA
    done, refused = exchange(core, b"250 Queued\r\n"), core.next_event()
    assert isinstance(done, Delivered)
    assert isinstance(refused, Failed)
    assert "needs SMTPUTF8" in str(refused.error)
    assert core.state is State.READY


def test_a_reply_timeout_counts_from_the_last_write():
    clock = Clock()
    core = client(clock=clock)
    ready(core, PIPELINING_EHLO_REPLY)
    core.mail(make_envelope())
    assert core.next_event() is NEED_DATA
    clock.now += 4.0  # the driver waited (the throttle) before writing
    sent(core)

    assert core.next_event() is NEED_DATA
    assert core.time_left() == 5.0


def test_quit_ends_in_closed():
    core = client()
    ready(core)

    core.quit()

    assert sent(core) == b"QUIT\r\n"
    assert core.next_event() is NEED_DATA
    assert exchange(core, b"221 Bye\r\n") == Closed()
    assert core.state is State.CLOSED


# --- hostile replies ---


def test_a_reply_of_too_many_lines_fails_the_connection_with_a_typed_error():
    core = client()
    core.next_event()
    exchange(core, GREETING)
    sent(core)

    event = exchange(core, b"250-x\r\n" * (MAX_REPLY_LINES + 1))

    assert isinstance(event, Failed)
    assert isinstance(event.error, nm.ConnectionFailed)
    assert f"more than {MAX_REPLY_LINES} lines" in str(event.error)
    assert core.state is State.CLOSED


def test_an_endless_line_fails_the_connection_once_it_outgrows_a_reply():
    core = client()
    core.next_event()
    for _ in range(2):
        core.receive_data(b"2" * 40_000)
        event = core.next_event()

    assert isinstance(event, Failed)
    assert "longer than 65536 bytes" in str(event.error)


def test_a_malformed_reply_fails_the_connection():
    core = client()
    core.next_event()

    event = exchange(core, b"HTTP/1.1 400 Bad Request\r\n")

    assert isinstance(event, Failed)
    assert "malformed reply line 'HTTP/1.1 400 Bad Request'" in str(event.error)


def test_control_characters_in_a_reply_are_escaped_and_its_text_stays_one_line():
    core = in_transaction()

    event = exchange(core, b"550-5.7.1 bad\rline\x1b[2J\x00\x07\r\n550 second \xff line\r\n")

    assert isinstance(event, Failed)
    text = str(event.error)
    assert event.error.reply == nm.Reply(
        550, "5.7.1 bad\\rline\\x1b[2J\\x00\\x07 second \\xff line"
    )
    assert text.isprintable()


def test_a_long_reply_is_capped_in_the_error():
    core = in_transaction()

    event = exchange(core, b"550 " + b"x" * 5000 + b"\r\n")

    assert isinstance(event, Failed)
    assert event.error.reply is not None
    assert len(event.error.reply.text) < 600
    assert event.error.reply.text.endswith("[...]")


# --- the deadline ---


def test_the_timeout_is_a_deadline_for_the_whole_reply_not_for_each_read():
    clock = Clock()
    core = client(clock=clock)
    assert core.next_event() is NEED_DATA
    assert core.time_left() == 5.0

    clock.now += 3.0
    core.receive_data(b"220 slow")  # a byte now and then does not restart the clock
    assert core.next_event() is NEED_DATA
    assert core.time_left() == 2.0
    clock.now += 2.5
    assert core.time_left() == 0.0

    core.receive_data(b" greeting\r\n")
    core.next_event()
    assert core.time_left() == 5.0  # the next reply has a deadline of its own


def test_a_timeout_before_the_greeting_is_a_connection_failure_and_after_it_temporary():
    before, after = client(), client()
    before.next_event()
    after.next_event()
    exchange(after, GREETING)

    before.connection_failed(TimeoutError())
    after.connection_failed(TimeoutError())

    first, second = before.next_event(), after.next_event()
    assert isinstance(first, Failed)
    assert isinstance(second, Failed)
    assert isinstance(first.error, nm.ConnectionFailed)
    assert "did not answer within the timeout of 5 s (the greeting)" in str(first.error)
    assert isinstance(second.error, nm.TemporaryFailure)
    assert "stopped answering during EHLO (timeout 5 s)" in str(second.error)
    assert isinstance(first.error.__cause__, TimeoutError)


# --- the one error mapping ---


@pytest.mark.parametrize(
    ("failure", "step", "error_class", "retryable"),
    [
        (nm.Reply(451, "4.3.0 Try later"), Step.MAIL, nm.TemporaryFailure, True),
        (nm.Reply(554, "5.6.0 No"), Step.END_OF_DATA, nm.PermanentFailure, False),
        (nm.Reply(454, "4.7.0 TLS unavailable"), Step.STARTTLS, nm.TlsError, False),
        (nm.Reply(454, "4.7.0 Try later"), Step.AUTH, nm.AuthenticationFailed, True),
        (nm.Reply(535, "5.7.8 Bad"), Step.AUTH, nm.AuthenticationFailed, False),
        (
            ConnectionResetError(104, "Connection reset by peer"),
            Step.RCPT,
            nm.ConnectionFailed,
            True,
        ),
        (EOFError(), Step.DATA, nm.ConnectionFailed, True),
        (ConnectionResetError(104, "reset"), Step.END_OF_DATA, nm.ConnectionFailed, False),
        (TimeoutError(), Step.END_OF_DATA, nm.ConnectionFailed, False),
    ],
)
def test_error_for_maps_replies_and_io_failures_to_the_error_tree(
    failure, step, error_class, retryable
):
    error = error_for(failure, step, server="mail.example.com:25", timeout=5.0)

    assert type(error) is error_class
    assert error.retryable is retryable
    assert str(error).startswith("mail.example.com:25")
