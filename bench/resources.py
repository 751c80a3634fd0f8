"""Resource check: after 10,000 sends through one Mailer, no growth in open sockets or memory.

Sends system mail and notifications over SmtpTransport to a local sink (``bench/sinks.py``,
in its own process), half inside ``with mailer:`` (one kept connection) and half outside
it (a connection per send), and measures open file descriptors, sockets, traced Python
memory and RSS after a warm-up and at the end. Recipients cycle through a fixed pool, so
the address caches are full after the warm-up and any later growth is a leak.

    python bench/resources.py            # 10,000 sends
    python bench/resources.py --quick    # 1,000 sends

Prints a table and a JSON line; exits 1 if growth after the warm-up exceeds the bounds.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import tracemalloc
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from sinks import running_sink

import notifymail as nm

POOL = 500  # distinct recipients, cycled
MAX_FD_GROWTH = 0
MAX_TRACED_GROWTH = 512 * 1024  # bytes
MAX_RSS_GROWTH = 8 * 1024 * 1024  # bytes


@dataclass(frozen=True)
class Sample:
    label: str
    sends: int
    fds: int
    sockets: int
    traced: int  # bytes allocated by Python and still alive (tracemalloc)
    rss: int  # bytes


def _sample(label: str, sends: int) -> Sample:
    gc.collect()
    fds = os.listdir("/proc/self/fd")
    sockets = 0
    for fd in fds:
        try:
            sockets += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:  # the directory's own descriptor, closed by now
            continue
    rss = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return Sample(label, sends, len(fds), sockets, tracemalloc.get_traced_memory()[0], rss)


def _send(mailer: nm.Mailer, number: int) -> None:
    recipient = f"user{number % POOL}@example.com"
    if number % 2:
        report = mailer.notify(
            nm.Notification([recipient], f"Alert {number % 7}", text="Numbers are up.\n")
        )
    else:
        report = mailer.send(
            nm.Message([recipient], "Reset your password", text="Follow the link.\n")
        )
    if not report.ok:
        raise SystemExit(f"send {number} failed: {report}")


def _round(mailer: nm.Mailer, start: int, count: int, *, kept: bool) -> None:
    if kept:
        with mailer:
            for number in range(start, start + count):
                _send(mailer, number)
    else:
        for number in range(start, start + count):
            _send(mailer, number)


def run(total: int) -> tuple[list[Sample], float]:
    with running_sink("asyncio") as port:
        settings = nm.EmailSettings(
            sender=nm.SenderSettings(from_address="alerts@example.com"),
            smtp=nm.SmtpSettings(host="127.0.0.1", port=port, timeout=10.0),
        )
        mailer = nm.Mailer(settings)
        tracemalloc.start()
        samples = [_sample("start", 0)]
        warm_up = max(POOL * 2, total // 10)
        _round(mailer, 0, warm_up // 2, kept=True)
        _round(mailer, warm_up // 2, warm_up - warm_up // 2, kept=False)
        samples.append(_sample("after warm-up", warm_up))
        started = time.perf_counter()
        done = 0
        rounds = 4
        for index in range(rounds):
            count = total // rounds
            _round(mailer, warm_up + done, count, kept=index % 2 == 0)
            done += count
            samples.append(_sample(f"round {index + 1}", warm_up + done))
        elapsed = time.perf_counter() - started
        tracemalloc.stop()
    return samples, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 sends instead of 10,000")
    total = 1_000 if parser.parse_args().quick else 10_000
    samples, elapsed = run(total)

    print(f"{'':14} {'sends':>7} {'fds':>5} {'sockets':>8} {'traced KiB':>11} {'RSS MiB':>8}")
    for s in samples:
        print(
            f"{s.label:14} {s.sends:7} {s.fds:5} {s.sockets:8} {s.traced / 1024:11.1f} "
            f"{s.rss / 2**20:8.1f}"
        )
    warm, end = samples[1], samples[-1]
    growth = {
        "fds": end.fds - warm.fds,
        "sockets": end.sockets - warm.sockets,
        "traced_bytes": end.traced - warm.traced,
        "rss_bytes": end.rss - warm.rss,
    }
    ok = (
        growth["fds"] <= MAX_FD_GROWTH
        and growth["sockets"] <= MAX_FD_GROWTH
        and growth["traced_bytes"] <= MAX_TRACED_GROWTH
        and growth["rss_bytes"] <= MAX_RSS_GROWTH
    )
    print(
        f"{total} sends in {elapsed:.1f} s after the warm-up; growth since the warm-up: "
        f"{growth['fds']} fds, {growth['sockets']} sockets, "
        f"{growth['traced_bytes'] / 1024:.1f} KiB traced, "
        f"{growth['rss_bytes'] / 2**20:.2f} MiB RSS -> {'ok' if ok else 'TOO MUCH'}"
    )
    print(
        json.dumps(
            {
                "sends": total,
                "seconds": round(elapsed, 2),
                "samples": [asdict(s) for s in samples],
                "growth": growth,
                "bounds": {
                    "fds": MAX_FD_GROWTH,
                    "traced_bytes": MAX_TRACED_GROWTH,
                    "rss_bytes": MAX_RSS_GROWTH,
                },
                "ok": ok,
            }
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
