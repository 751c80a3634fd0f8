"""The durable outbox, measured in one run: what durability costs.

    python bench/outbox.py [--quick] [--json PATH]

1. enqueue: ``Mailer.enqueue`` of one notification to N outsiders (policy, composition
   and one durable transaction, ``synchronous=FULL``), in envelopes per second; and the
   store alone (``SqliteOutbox.enqueue`` of envelopes already composed).
2. drain: ``Mailer.deliver_queued`` emptying that outbox against a direct ``notify`` of
   the same notification on the same sink, in messages per second, on both sinks of
   ``run.py``. Every envelope's outcome is committed (``synchronous=NORMAL``: written,
   not synced) before the next message's end of DATA; each lease of 50 is synced.
3. file size: the outbox file per 1,000 envelopes, queued and after delivery.

Rounds alternate between the contenders and the best round of each counts, as in
``run.py``. The exit status is 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import platform
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from run import HTML, SENDER, SUBJECT, TEXT, Target  # the bench directory is on sys.path
from sinks import running_sink

import notifymail as nm
from notifymail._address import normalize_address
from notifymail._compose import compose_notification
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

    def deliver_queued() -> float:
        with nm.SqliteOutbox(folder / f"drain-{port}-{next(files)}.db") as outbox:
            mailer = nm.Mailer(settings(port), outbox=outbox)
            mailer.enqueue(item)
            start = time.perf_counter()
            report = mailer.deliver_queued()
            seconds = time.perf_counter() - start
            assert len(report.accepted) == count
            assert outbox.status().sent == count, outbox.status()
        return seconds

    seconds = best_of(rounds, {"notify": notify, "deliver_queued": deliver_queued})
    return {name: count / s for name, s in seconds.items()}


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
    enqueue = results["enqueue"]["Mailer.enqueue (policy, composition, storage)"]
    found = [Target("enqueue: envelopes per second", enqueue, ">= 5000", enqueue >= 5000)]
    for sink in ("asyncio", "aiosmtpd"):
        rates = results[f"drain ({sink} sink)"]
        value = rates["deliver_queued"] / rates["notify"]
        found.append(
            Target(f"drain, {sink}: deliver_queued vs notify", value, ">= 0.8", value >= 0.8)
        )
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
            print(f"  {label:<55} {value:>10,.1f}")
    print(f"\n{'target':<45} {'value':>8}  {'goal':<8} met")
    for target in found:
        met = "yes" if target.met else "NO"
        print(f"{target.name:<45} {target.value:>8.2f}  {target.goal:<8} {met}")
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
