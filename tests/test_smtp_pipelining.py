"""SMTP PIPELINING (RFC 2920), seen from the server's side (``FaultyServer``).

Offered PIPELINING, the transport writes MAIL FROM, every RCPT TO and DATA before it
reads a reply; each test of a refusal or a fault runs both ways, pipelined and one
command at a time, and expects the same outcome: the same error, the same refused
recipients, the same deliveries, the connection kept or dropped alike.
``Arrival.answered`` (replies the server had sent when a line arrived) shows what was
batched: a line that arrived before the reply to the one before it was pipelined.
"""

from __future__ import annotations

import pytest

import notifymail as nm
from smtp_servers import LOST, FaultyServer, RecordingHandler, Slow, make_envelope

both_ways = pytest.mark.parametrize("pipelining", [False, True], ids=["one-by-one", "pipelined"])

ANN, BOB, CY = "ann@example.com", "bob@example.com", "cy@example.com"
GREETING_AND_EHLO = 2  # replies sent before the first transaction's first command
HOLD_MAIL_REPLY = Slow(0.2)  # time for anything the client pipelined to arrive


def _transaction_lines(server: FaultyServer) -> list[tuple[str, int]]:
    """Each command line but EHLO and QUIT, with the replies sent before it arrived."""
    return [
        (arrival.line, arrival.answered)
        for arrival in server.arrivals
        if not arrival.line.upper().startswith(("EHLO", "QUIT"))
    ]


def _verbs(server: FaultyServer) -> list[str]:
    return [line.split(" ")[0].upper() for line, _ in _transaction_lines(server)]


# --- what reaches the wire ---


def test_mail_every_rcpt_and_data_arrive_before_any_reply_when_pipelining_is_offered(driver):
    with FaultyServer({"mail": [HOLD_MAIL_REPLY]}, pipelining=True) as server:
        delivery = driver.transport(server.settings()).send(make_envelope(recipients=(ANN, BOB)))

    assert delivery.accepted == (ANN, BOB)
    assert _transaction_lines(server) == [
        ("MAIL FROM:<alerts@example.com>", GREETING_AND_EHLO),
        ("RCPT TO:<ann@example.com>", GREETING_AND_EHLO),
        ("RCPT TO:<bob@example.com>", GREETING_AND_EHLO),
        ("DATA", GREETING_AND_EHLO),
    ]
    assert server.delivered == {ANN: 1, BOB: 1}
    assert server.violations == []


def test_a_server_without_pipelining_gets_one_command_at_a_time(driver):
    with FaultyServer({"mail": [HOLD_MAIL_REPLY]}, pipelining=False) as server:
        delivery = driver.transport(server.settings()).send(make_envelope(recipients=(ANN, BOB)))

    assert delivery.accepted == (ANN, BOB)
    # Each command arrived only after the reply to the one before it.
    assert [answered for _, answered in _transaction_lines(server)] == [2, 3, 4, 5]
    assert server.delivered == {ANN: 1, BOB: 1}


def test_many_recipients_are_pipelined_a_hundred_commands_at_a_time(driver):
    recipients = tuple(f"user{i}@example.com" for i in range(250))
    with FaultyServer({"mail": [HOLD_MAIL_REPLY]}, pipelining=True) as server:
        delivery = driver.transport(server.settings()).send(make_envelope(recipients=recipients))

    assert delivery.accepted == recipients
    answered = [answered for _, answered in _transaction_lines(server)]
    # MAIL, 250 RCPT and DATA: windows of 100, each sent once the one before is answered.
    assert answered[:252] == [2] * 100 + [102] * 100 + [202] * 52
    assert server.delivered == dict.fromkeys(recipients, 1)


def test_smtputf8_and_8bitmime_ride_on_the_pipelined_mail_line(driver):
    envelope = make_envelope(recipients=("jörg@example.com",), body="Grüße\n")
    with FaultyServer({"mail": [HOLD_MAIL_REPLY]}, pipelining=True) as server:
        delivery = driver.transport(server.settings()).send(envelope)

    assert delivery.accepted == ("jörg@example.com",)
    assert _transaction_lines(server) == [
        ("MAIL FROM:<alerts@example.com> SMTPUTF8 BODY=8BITMIME", GREETING_AND_EHLO),
        ("RCPT TO:<jörg@example.com>", GREETING_AND_EHLO),
        ("DATA", GREETING_AND_EHLO),
    ]
    assert server.delivered == {"jörg@example.com": 1}


def test_pipelining_after_starttls_and_auth_with_a_real_server(
    driver, smtp_server, server_tls, client_tls
):
    handler = RecordingHandler(offer_pipelining=True, refuse={BOB: "550 5.1.1 No such user"})
    server = smtp_server(starttls=server_tls, users={"robot": "pw"}, handler=handler)
    settings = server.settings(username="robot", password="pw")
    transport = driver.transport(settings, ssl_context=client_tls)

    with transport:
        partial = transport.send(make_envelope(recipients=(ANN, BOB)))
        with pytest.raises(nm.PermanentFailure):
            transport.send(make_envelope(recipients=(BOB,)))
        whole = transport.send(make_envelope(recipients=(CY,)))

    assert (partial.accepted, tuple(partial.refused), whole.accepted) == ((ANN,), (BOB,), (CY,))
    # aiosmtpd answers the DATA that followed the refused recipient 503; then RSET.
    assert handler.commands == [
        *("EHLO", "STARTTLS", "EHLO", "AUTH"),
        *("MAIL", "RCPT", "RCPT", "DATA"),
        *("MAIL", "RCPT", "DATA", "RSET"),
        *("MAIL", "RCPT", "DATA", "QUIT"),
    ]
    assert [(m.recipients, m.tls) for m in handler.messages] == [((ANN,), True), ((CY,), True)]
    assert handler.connections == 1


# --- refusals and faults: the same outcome either way ---


@both_ways
def test_partial_refusal_reports_each_refused_recipient_and_delivers_to_the_rest(
    driver, pipelining
):
    faults = {"rcpt": ["ok", "550 5.1.1 No such user", "ok"]}
    with FaultyServer(faults, pipelining=pipelining) as server:
        delivery = driver.transport(server.settings()).send(
            make_envelope(recipients=(ANN, BOB, CY))
        )

    assert delivery.accepted == (ANN, CY)
    assert {a: str(r) for a, r in delivery.refused.items()} == {BOB: "550 5.1.1 No such user"}
    assert server.delivered == {ANN: 1, CY: 1}
    assert server.violations == []


@both_ways
def test_every_recipient_refused_fails_by_the_first_refusal_and_keeps_the_connection(
    driver,
    pipelining,
):
    faults = {"rcpt": ["452 4.5.3 Too many", "550 5.1.1 No such user"]}
    with FaultyServer(faults, pipelining=pipelining) as server:
        transport = driver.transport(server.settings())
        with transport:
            with pytest.raises(nm.TemporaryFailure) as caught:
                transport.send(make_envelope(recipients=(ANN, BOB)))
            transport.send(make_envelope(recipients=(CY,)))

    assert str(caught.value.reply) == "452 4.5.3 Too many"
    assert {a: str(r) for a, r in caught.value.refused.items()} == {
        ANN: "452 4.5.3 Too many",
        BOB: "550 5.1.1 No such user",
    }
    # Pipelined, DATA went out with the recipients and was refused (503): no content.
    refused_data = ["DATA"] if pipelining else []
    assert _verbs(server) == [
        "MAIL",
        "RCPT",
        "RCPT",
        *refused_data,
        "RSET",
        "MAIL",
        "RCPT",
        "DATA",
    ]
    assert server.connections == 1
    assert server.delivered == {CY: 1}
    assert server.violations == []


def test_every_recipient_refused_but_data_accepted_sends_only_the_end_of_data(driver):
    faults = {"rcpt": ["550 5.1.1 No such user", "550 5.1.1 No such user"]}
    with FaultyServer(faults, pipelining=True, careless_data=True) as server:
        transport = driver.transport(server.settings())
        with transport:
            with pytest.raises(nm.PermanentFailure) as caught:
                transport.send(make_envelope(recipients=(ANN, BOB)))
            transport.send(make_envelope(recipients=(CY,)))

    assert set(caught.value.refused) == {ANN, BOB}
    assert server.empty_data == [b""]  # the end of DATA alone, never the message
    assert _verbs(server) == ["MAIL", "RCPT", "RCPT", "DATA", "RSET", "MAIL", "RCPT", "DATA"]
    assert server.connections == 1
    assert server.delivered == {CY: 1}


@both_ways
def test_a_refused_sender_reads_every_reply_owed_and_keeps_the_connection(driver, pipelining):
    with FaultyServer({"mail": ["554 5.7.1 Sender refused"]}, pipelining=pipelining) as server:
        transport = driver.transport(server.settings())
        with transport:
            with pytest.raises(nm.PermanentFailure) as caught:
                transport.send(make_envelope(recipients=(ANN, BOB)))
            delivery = transport.send(make_envelope(recipients=(CY,)))

    assert str(caught.value.reply) == "554 5.7.1 Sender refused"
    assert delivery.accepted == (CY,)
    # Pipelined, RCPT and DATA went out with MAIL and were answered 503.
    refused_batch = ["RCPT", "RCPT", "DATA"] if pipelining else []
    assert _verbs(server) == ["MAIL", *refused_batch, "MAIL", "RCPT", "DATA"]
    assert server.connections == 1
    assert server.delivered == {CY: 1}
    assert server.violations == []


@both_ways
@pytest.mark.parametrize("step", ["mail", "rcpt", "data"])
def test_421_anywhere_in_the_batch_drops_the_connection_and_the_next_message_reconnects(
    driver, step, pipelining
):
    with FaultyServer({step: ["421 4.3.2 Closing"]}, pipelining=pipelining) as server:
        transport = driver.transport(server.settings())
        with transport:
            with pytest.raises(nm.TemporaryFailure) as caught:
                transport.send(make_envelope(recipients=(ANN,)))
            delivery = transport.send(make_envelope(recipients=(BOB,)))

    assert caught.value.reply.code == 421
    assert caught.value.retryable is True
    assert delivery.accepted == (BOB,)
    assert server.connections == 2
    assert server.delivered == {BOB: 1}
    assert server.violations == []


@both_ways
@pytest.mark.parametrize("closing", ["421 4.4.2 Idle timeout", "drop"])
def test_a_kept_connection_the_server_closed_is_reopened_once(driver, closing, pipelining):
    with FaultyServer({"mail": ["ok", closing]}, pipelining=pipelining) as server:
        transport = driver.transport(server.settings())
        with transport:
            first = transport.send(make_envelope(recipients=(ANN,)))
            second = transport.send(make_envelope(recipients=(BOB,)))

    assert (first.accepted, second.accepted) == ((ANN,), (BOB,))
    assert server.connections == 2
    assert server.delivered == {ANN: 1, BOB: 1}
    assert server.violations == []


@both_ways
def test_a_lost_reply_to_the_end_of_data_is_not_retryable_and_the_message_never_resent(
    driver,
    pipelining,
):
    with FaultyServer({"end": [LOST]}, pipelining=pipelining) as server:
        transport = driver.transport(server.settings())
        with pytest.raises(nm.ConnectionFailed) as caught:
            transport.send(make_envelope(recipients=(ANN, BOB)))

    assert caught.value.retryable is False
    assert server.delivered == {ANN: 1, BOB: 1}
    assert server.unconfirmed == {ANN, BOB}
    assert server.connections == 1
