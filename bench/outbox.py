"""The durable outbox, measured in one run: what durability costs.

    python bench/outbox.py [--quick] [--json PATH]

1. enqueue: ``Mailer.enqueue`` of one notification to N outsiders (policy, composition
   and one durable transaction, ``synchronous=FULL``), in envelopes per second; and the
   store alone (``SqliteOutbox.enqueue`` of envelopes already composed).
2. drain: ``Mailer.deliver_queued`` emptying that outbox against a direct ``notify`` of
   the same notification on the same sink, in messages per second, on both sinks of
   ``run.py``; and the same for ``AsyncMailer``, whose outbox calls run in a thread.
   Every envelope's outcome is committed (``synchronous=NORMAL``: written, not synced)
   before the next message's end of DATA, its record worked out ahead while the server
   answers when every recipient accepts; each lease of 50 has the file synced in a
   thread while its batch is delivered.
   Beside them, two diagnostics (not outboxes: never to be used) show where the time
   goes: the same drain from an outbox that records no outcome, and from one whose
   every outcome is only the one UPDATE, and its commit, that recording must make.
3. file size: the outbox file per 1,000 envelopes, queued and after delivery.

Rounds alternate between the contenders and the best round of each counts, as in
``run.py``. The exit status is 1 when a target is missed: the enqueue rate, and the
drain against ``notify`` on aiosmtpd, a real SMTP server (see `targets`).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import platform
import sqlite3
import tempfile
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from run import HTML, SENDER, SUBJECT, TEXT, Target  # the bench directory is on sys.path
from sinks import running_sink

import notifymail as nm
from notifymail._address import normalize_address
from notifymail._compose import compose_notification
from notifymail._queue import Claim, Settled
from notifymail.policy import plan_delivery


def notification(count: int) -> nm.Notification:
    return nm.Notification(
        [f"guest{index}@example.org" for index in range(count)], SUBJECT, text=TEXT, html=HTML
    )


def settings(port: int = 25) -> nm.EmailSettings:
    return nm.EmailSettings(sender=SENDER, smtp=nm.SmtpSettings(host="127.0.0.1", port=port))


def best_of(rounds: int, contenders: dict[str, Callable[[], float]]) -> dict[str, float]:
    """The least seconds each contender reports (it times its own part), taking turns."""
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(rounds):
        for name, run in contenders.items():
            best[name] = min(best[name], run())
    return best


def bench_enqueue(count: int, rounds: int, folder: Path) -> dict[str, float]:
    """Envelopes per second, durable."""
    item = notification(count)
    mailer_settings = settings()
    envelopes = compose_notification(
        item, SENDER, plan_delivery(item.recipients, nm.InMemoryDirectory(()), mailer_settings)
    )
    files = iter(range(10**6))

    def fresh() -> nm.SqliteOutbox:
        return nm.SqliteOutbox(folder / f"enqueue-{next(files)}.db")

    def mailer_enqueue() -> float:
        normalize_address.cache_clear()
        with fresh() as outbox:
            mailer = nm.Mailer(mailer_settings, transport=nm.MemoryTransport(), outbox=outbox)
            start = time.perf_counter()
            queued = mailer.enqueue(item)
            seconds = time.perf_counter() - start
        assert queued.envelopes == count
        return seconds

    def store_alone() -> float:
        with fresh() as outbox:
            start = time.perf_counter()
            outbox.enqueue(envelopes, key="k")
            return time.perf_counter() - start

    seconds = best_of(
        rounds,
        {
            "Mailer.enqueue (policy, composition, storage)": mailer_enqueue,
            "SqliteOutbox.enqueue (storage alone)": store_alone,
        },
    )
    return {name: count / s for name, s in seconds.items()}


def bench_drain(port: int, count: int, rounds: int, folder: Path) -> dict[str, float]:
    """Messages per second over one connection: from the outbox, and directly."""
    item = notification(count)
    files = iter(range(10**6))

    def notify() -> float:
        normalize_address.cache_clear()
        mailer = nm.Mailer(settings(port))
        start = time.perf_counter()
        with mailer:
            report = mailer.notify(item)
        seconds = time.perf_counter() - start
        assert len(report.accepted) == count
        return seconds

    def deliver_queued(open_outbox: Callable[[Path], nm.SqliteOutbox]) -> Callable[[], float]:
        def run() -> float:
            with open_outbox(folder / f"drain-{port}-{next(files)}.db") as outbox:
                mailer = nm.Mailer(settings(port), outbox=outbox)
                mailer.enqueue(item)
                start = time.perf_counter()
                report = mailer.deliver_queued()
                seconds = time.perf_counter() - start
                assert len(report.accepted) == count
                if not isinstance(outbox, _Diagnostic):
                    assert outbox.status().sent == count, outbox.status()
            return seconds

        return run

    def async_notify() -> float:
        async def run() -> float:
            mailer = nm.AsyncMailer(settings(port))
            start = time.perf_counter()
            async with mailer:
                report = await mailer.notify(item)
            seconds = time.perf_counter() - start
            assert len(report.accepted) == count
            return seconds

        normalize_address.cache_clear()
        return asyncio.run(run())

    def async_deliver_queued() -> float:
        async def run(outbox: nm.SqliteOutbox) -> float:
            mailer = nm.AsyncMailer(settings(port), outbox=outbox)
            await mailer.enqueue(item)
            start = time.perf_counter()
            report = await mailer.deliver_queued()
            seconds = time.perf_counter() - start
            assert len(report.accepted) == count
            return seconds

        with nm.SqliteOutbox(folder / f"drain-{port}-{next(files)}.db") as outbox:
            seconds = asyncio.run(run(outbox))
            assert outbox.status().sent == count, outbox.status()
        return seconds

    seconds = best_of(
        rounds,
        {
            "notify": notify,
            "deliver_queued": deliver_queued(nm.SqliteOutbox),
            _UNRECORDED: deliver_queued(functools.partial(_Diagnostic, bare_update=False)),
            _BARE: deliver_queued(functools.partial(_Diagnostic, bare_update=True)),
            "AsyncMailer.notify": async_notify,
            "AsyncMailer.deliver_queued": async_deliver_queued,
        },
    )
    rates = {name: count / s for name, s in seconds.items()}
    micros = {name: s / count * 1e6 for name, s in seconds.items()}
    return rates | {
        "notify: microseconds per message": micros["notify"],
        "deliver_queued: microseconds per envelope": micros["deliver_queued"],
        "the outbox's part that 0.8x allows": micros["notify"] * (1 / 0.8 - 1),
        "the outbox's part: claims, leases, the rest": micros[_UNRECORDED] - micros["notify"],
        "the outbox's part: recording outcomes": micros["deliver_queued"] - micros[_UNRECORDED],
        "  of which the bare UPDATE and its commit": micros[_BARE] - micros[_UNRECORDED],
        "deliver_queued / notify": rates["deliver_queued"] / rates["notify"],
        "deliver_queued / notify, no outcome recorded": rates[_UNRECORDED] / rates["notify"],
        "deliver_queued / notify, only the bare UPDATE": rates[_BARE] / rates["notify"],
        "AsyncMailer: deliver_queued / notify": rates["AsyncMailer.deliver_queued"]
        / rates["AsyncMailer.notify"],
    }


# Diagnostics, not outboxes: how fast the drain would be if recording an outcome cost
# nothing, and if it cost only the one UPDATE (and its commit) that it must make.
_UNRECORDED = "diagnostic: deliver_queued, no outcome recorded"
_BARE = "diagnostic: deliver_queued, each outcome only a bare UPDATE"


class _Diagnostic(nm.SqliteOutbox):
    """Records no outcome (every envelope stays leased), or with ``bare_update`` records
    each as one fixed UPDATE of the envelope's row, on the connection and committed as
    ``settle`` commits, with none of the bookkeeping around it."""

    def __init__(self, path: Path, *, bare_update: bool) -> None:
        super().__init__(path)
        self._bare_update = bare_update

    def anticipate(self, claim: Claim) -> None:
        """Nothing to work out ahead: `settle` records nothing, or a fixed row."""

    def settle(
        self,
        claim: Claim,
        result: nm.Delivery | nm.DeliveryError | None,
        *,
        suppressed: Collection[str] = (),
    ) -> Settled:
        if self._bare_update:
            with self._database(atomic=False, synced=False) as db:
                db.execute(
                    "UPDATE outbox_envelope SET state = 3, due_at = 0, owner = NULL,"
                    " attempts = 1, finished_at = 0, last_error = coalesce(NULL, last_error),"
                    " recipients = ? WHERE id = ? AND state = 2",
                    ('[["someone@example.org", 1, null, null]]', int(claim.id)),
                )
        return Settled(accepted=result.accepted if isinstance(result, nm.Delivery) else ())


def bench_size(count: int, folder: Path) -> dict[str, float]:
    """Kilobytes of outbox file per 1,000 envelopes (after a checkpoint), and the message."""
    path = folder / "size.db"
    transport = nm.MemoryTransport()
    with nm.SqliteOutbox(path) as outbox:
        mailer = nm.Mailer(settings(), transport=transport, outbox=outbox)
        mailer.enqueue(notification(count))
        queued = _checkpointed_size(path)
        mailer.deliver_queued()
        delivered = _checkpointed_size(path)
    message = len(transport.outbox[0].raw)
    return {
        "queued, KB per 1,000 envelopes": queued / count,
        "delivered (before purge), KB per 1,000 envelopes": delivered / count,
        "one message as sent, KB": message / 1000,
    }


def _checkpointed_size(path: Path) -> float:
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()
    return path.stat().st_size


def targets(results: dict[str, Any]) -> list[Target]:
    """The enqueue rate, and the drain against ``notify`` on a real SMTP server.

    The minimal asyncio sink's ratios are printed with the rest and carry no target: a
    server that answers at once leaves about 19 µs an envelope for the outbox at 0.8,
    less than this outbox's one commit per envelope, made so that a kill repeats at most
    one envelope (docs/performance.md, section 10).
    """
    enqueue = results["enqueue"]["Mailer.enqueue (policy, composition, storage)"]
    found = [Target("enqueue: envelopes per second", enqueue, ">= 5000", enqueue >= 5000)]
    rates = results["drain (aiosmtpd sink)"]
    for facade in ("", "AsyncMailer."):
        value = rates[f"{facade}deliver_queued"] / rates[f"{facade}notify"]
        name = f"drain, aiosmtpd: {facade}deliver_queued vs notify"
        found.append(Target(name, value, ">= 0.8", value >= 0.8))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="400 recipients, 3 rounds")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    options = parser.parse_args(argv)
    count, rounds = (400, 3) if options.quick else (2000, 5)

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="notifymail-bench-") as name:
        folder = Path(name)
        results["enqueue"] = bench_enqueue(count, rounds, folder)
        for sink in ("asyncio", "aiosmtpd"):
            with running_sink(sink) as port:
                results[f"drain ({sink} sink)"] = bench_drain(port, count, rounds, folder)
        results["file size"] = bench_size(count, folder)
    found = targets(results)

    for section, values in results.items():
        print(f"\n{section}")
        for label, value in values.items():
            shown = f"{value:,.2f}" if value < 10 else f"{value:,.1f}"
            print(f"  {label:<60} {shown:>10}")
    print(f"\n{'target':<58} {'value':>8}  {'goal':<8} met")
    for target in found:
        met = "yes" if target.met else "NO"
        print(f"{target.name:<58} {target.value:>8.2f}  {target.goal:<8} {met}")
    if options.json:
        document = {
            "command": "python bench/outbox.py" + (" --quick" if options.quick else ""),
            "python": platform.python_version(),
            "machine": platform.platform(),
            "sqlite": sqlite3.sqlite_version,
            "recipients": count,
            "rounds": rounds,
            "results": results,
            "targets": [target.__dict__ for target in found],
        }
        options.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0 if all(target.met for target in found) else 1


if __name__ == "__main__":
    raise SystemExit(main())
