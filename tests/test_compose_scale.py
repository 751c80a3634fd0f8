"""Composition at scale: time linear in the recipients, memory a small multiple of the body.

Ratios, not absolute times or sizes, so that a slow or busy machine does not fail them:
a quadratic step shows as 16x the time for 4x the recipients, and a Python object per
body line as tens of times the body.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Callable

import pytest

import notifymail as nm
from notifymail._compose import compose, compose_notification
from notifymail.protocol import _dot_stuffed

SENDER = nm.SenderSettings(from_address="alerts@example.com", from_name="Alerts")
MIB = 1024 * 1024


def best_times(runs: list[Callable[[], object]], rounds: int = 5) -> list[float]:
    """The best time of each of ``runs``, taking turns, without the cyclic garbage collector
    (as ``timeit``): its passes cost more the more objects are alive, which is not
    composition's growth, and turns spread a busy moment of the machine over all runs."""
    best = [float("inf")] * len(runs)
    gc.disable()
    try:
        for _ in range(rounds):
            for index, run in enumerate(runs):
                start = time.perf_counter()
                run()
                best[index] = min(best[index], time.perf_counter() - start)
    finally:
        gc.enable()
    return best


def peak_bytes(run: Callable[[], object]) -> int:
    """The most memory ``run`` held at once beyond what was there before it."""
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def people(count: int) -> list[str]:
    return [f"member.{index}@example.com" for index in range(count)]


def test_a_large_to_header_takes_time_linear_in_its_recipients() -> None:
    # System mail to N people, or a CC-mode notification with no batching: one To header.
    # Validating the addresses is timed apart: its cache holds 16,384 addresses.
    def system_mail(addresses: list[str]) -> Callable[[], object]:
        message = nm.Message(addresses, "s", text="x")
        return lambda: compose(message, SENDER).raw

    def cc_notification(addresses: list[str]) -> Callable[[], object]:
        notification = nm.Notification(addresses, "s", text="x")
        batch = [nm.Batch(tuple(addresses), hidden=False)]
        return lambda: compose_notification(notification, SENDER, batch)[0].raw

    for case in (system_mail, cc_notification):
        small, large = best_times([case(people(10_000)), case(people(40_000))])
        # Linear is about 4; the quadratic folding this replaces was 17.
        assert large / small < 10, (case.__name__, small, large)


def test_the_to_header_of_40000_recipients_reads_back_whole() -> None:
    addresses = people(40_000)
    raw = compose(nm.Message(addresses, "s", text="x"), SENDER).raw
    head = raw.partition(b"\r\n\r\n")[0]
    assert max(map(len, head.split(b"\r\n"))) <= 78
    to = head.partition(b"\r\nTo: ")[2].partition(b"\r\nSubject")[0]
    assert to.replace(b"\r\n", b"").decode().split(", ") == addresses


@pytest.mark.parametrize("line", ["a\n", ".\n", "\n", ".." * 40 + "\n", "ü\n"])
def test_a_16_mib_body_costs_a_small_multiple_of_its_size_whatever_its_lines(line: str) -> None:
    body = line * (16 * MIB // len(line.encode()))
    size = len(body.encode())
    message = nm.Message(["ann@example.com"], "Export", text=body)

    def compose_and_serialise() -> None:
        envelope = compose(message, SENDER)
        assert len(envelope.raw) > size

    assert peak_bytes(compose_and_serialise) < 6 * size


@pytest.mark.parametrize("line", ["a\n", ".\n", "..\r\n", "\r"])
def test_a_16_mib_body_reaches_its_wire_bytes_in_a_small_multiple_of_its_size(line: str) -> None:
    # From the host's text to the dot-stuffed bytes of DATA, through an envelope that a
    # queue stored as raw bytes (its line ends normalised again) on the way.
    body = line * (16 * MIB // len(line))
    message = nm.Message(["ann@example.com"], "Export", text=body)

    def to_the_wire() -> None:
        envelope = compose(message, SENDER)
        stored = nm.Envelope(envelope.sender, envelope.recipients, raw=envelope.raw)
        assert _dot_stuffed(stored.raw).endswith(b"\r\n")

    assert peak_bytes(to_the_wire) < 8 * len(body)


def test_raw_bytes_with_bare_line_ends_are_normalised_in_a_small_multiple_of_their_size() -> None:
    raw = b"Subject: x\n\n" + b".\n" * (8 * MIB)
    peak = peak_bytes(lambda: nm.Envelope("a@example.com", ["b@example.com"], raw=raw))
    assert peak < 3 * len(raw)


def test_20000_envelopes_of_a_notification_share_one_body() -> None:
    chart = nm.Attachment("chart.png", bytes(range(256)) * 1024, "image/png", content_id="chart")
    recipients = people(20_000)
    notification = nm.Notification(
        recipients, "Dashboard", html='<img src="cid:chart">', attachments=[chart]
    )
    batches = [nm.Batch((address,), hidden=False) for address in recipients]
    envelopes: list[nm.Envelope] = []

    def compose_all() -> None:
        envelopes.extend(compose_notification(notification, SENDER, batches))

    tracemalloc.start()
    try:
        compose_all()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(envelopes) == 20_000
    body = len(envelopes[0].raw) - len(envelopes[0].raw.partition(b"\r\n\r\n")[0])
    assert body > 256 * 1024
    # One body for all, plus each envelope's own headers and bookkeeping.
    assert held < 2 * body + 20_000 * 2048
