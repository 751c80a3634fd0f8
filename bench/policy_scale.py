"""How the recipient policy scales: time per item must stay flat from 10k to 100k.

Run ``python bench/policy_scale.py [--quick]``. Prints a table, then one JSON line.

- ``plan_delivery``: N recipients, 90% account holders (in a directory of N people), 10%
  outsiders, 5% repeated in another case; BCC, 50 per message.
- ``check_recipients``: the same N recipients, approved domains set, nothing existing.
  Account holders pass on the directory's word; every other address is validated, so
  the outsiders' share sets the cost. ``check_recipients (outsiders)`` is the worst case:
  every address new to the directory. A plain ASCII address is checked by notifymail's
  own pattern (about 1 µs); only the others go to email-validator.
- ``suggest_recipients``: a directory of N people (2% inactive), GROUP mode and a viewer
  in two groups; ``(admin)`` is the heavy case, every active person sorted.

Each case is run ``repeat`` times on fresh inputs (the address cache is cleared between
runs, so nothing is measured warm) and the best time is kept.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import time
from collections.abc import Callable

import notifymail as nm
from notifymail._address import normalize_address

SIZES = (10_000, 30_000, 100_000)
DOMAINS = ("example.com", "example.org", "bücher.de", "corp.example", "mail.example.net")


def _people(count: int) -> list[nm.Person]:
    groups = [frozenset({"all", f"team-{index % 40}"}) for index in range(40)]
    return [
        nm.Person(
            f"user{index}@{DOMAINS[index % len(DOMAINS)]}",
            f"First{index % 997}",
            f"Last{index % 1009}",
            groups[index % 40],
            active=index % 50 != 0,
        )
        for index in range(count)
    ]


def _recipients(count: int, *, outsiders_every: int) -> list[str]:
    recipients: list[str] = []
    for index in range(count):
        domain = DOMAINS[index % len(DOMAINS)]
        if index % outsiders_every == 0:
            recipients.append(f"guest{index}@{domain}")
        elif index % 20 == 1:
            recipients.append(f"USER{index - 1}@{domain.upper()}")  # a duplicate
        else:
            recipients.append(f"user{index}@{domain}")
    return recipients


def settings() -> nm.EmailSettings:
    return nm.EmailSettings(
        deployment=nm.Deployment(plan=nm.Plan.PRO),
        sender=nm.SenderSettings(from_address="reports@example.com"),
        recipients=nm.RecipientPolicy(
            approved_domains=DOMAINS[:3], suggestions=nm.SuggestionMode.GROUP
        ),
    )


def best_time(run: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        normalize_address.cache_clear()
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def _check(
    creator: nm.Person,
    recipients: list[str],
    directory: nm.Directory,
    settings: nm.EmailSettings,
) -> None:
    with contextlib.suppress(nm.RecipientNotAllowed):
        nm.check_recipients(creator, recipients, directory, settings)


def cases(size: int, settings: nm.EmailSettings) -> dict[str, Callable[[], object]]:
    people = _people(size)
    directory = nm.InMemoryDirectory(people)
    creator = people[1]
    admin = dataclasses.replace(creator, is_admin=True)
    mixed = _recipients(size, outsiders_every=10)
    new = _recipients(size, outsiders_every=1)
    return {
        "plan_delivery": lambda: nm.plan_delivery(mixed, directory, settings),
        "check_recipients": lambda: _check(creator, mixed, directory, settings),
        "check_recipients (outsiders)": lambda: _check(creator, new, directory, settings),
        "suggest_recipients": lambda: nm.suggest_recipients(
            creator, directory, settings, everyone_group="all"
        ),
        "suggest_recipients (admin)": lambda: nm.suggest_recipients(admin, directory, settings),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run per case, 10k and 30k")
    options = parser.parse_args(argv)
    sizes = SIZES[:2] if options.quick else SIZES
    repeat = 1 if options.quick else 3

    policy_settings = settings()
    results: list[dict[str, object]] = []
    for size in sizes:
        for name, run in cases(size, policy_settings).items():
            seconds = best_time(run, repeat)
            results.append(
                {
                    "case": name,
                    "n": size,
                    "seconds": round(seconds, 4),
                    "us_per_item": round(seconds / size * 1e6, 2),
                }
            )

    print(f"{'case':<30} {'n':>8} {'seconds':>9} {'µs/item':>9}")
    for row in results:
        print(f"{row['case']:<30} {row['n']:>8} {row['seconds']:>9.4f} {row['us_per_item']:>9.2f}")
    print(json.dumps({"benchmark": "policy_scale", "results": results}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
