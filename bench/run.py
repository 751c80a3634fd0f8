"""notifymail side by side with the standard library and Django, in one run, on one machine.

    python bench/run.py [--quick] [--json PATH]

Eight measurements, each against its alternatives. Every SMTP case runs against sinks
this script starts on 127.0.0.1, each in a process of its own: ``asyncio``, a minimal
server that answers at once so that it does not hide the client's cost (it offers
PIPELINING and, as RFC 2920 3.2 asks and Postfix does, sends the replies to a group of
pipelined commands together), ``aiosmtpd``, a real server (it does not pipeline), and
``delay``, which takes 10 ms to answer each MAIL, RCPT and end of DATA, as a distant
relay does. The broadcast and asyncio cases also run against ``asyncio-each``, the
minimal server writing each reply on its own, for comparison. Contenders take
turns, round after round, and the best round of each counts, so a slow moment of the
machine does not fall on one of them alone. The table ends with the ratios the targets
are stated in; the exit status is 1 when one is missed.

1. compose: a text+HTML message with From name and Reply-To, built and serialised; and
   a 2,000-recipient notification with and without one-click unsubscribe, per envelope.
2. broadcast: one notification to N outsiders (a message each) over one connection.
3. distinct: N different password-reset messages, built and sent.
4. audience: one alert to N account holders under BCC, 50 per message.
5. asyncio: the broadcast through ``AsyncMailer``, beside ``Mailer`` and aiosmtplib
   sending the same messages one by one, over one connection.
6. pool: the broadcast through the ``delay`` sink with 1 connection and with 8, through
   both mailers (seconds; one round each, the slow case takes a minute).
7. import: ``import notifymail`` against ``import smtplib``, in fresh interpreters.
8. policy: ``plan_delivery``, ``check_recipients``, ``suggest_recipients`` at scale; the
   growth from 10,000 to 100,000 gives k in t ~ n^k (1 linear, about 1.1 for a sort).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import smtplib
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from email import policy as email_policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import policy_scale  # the bench directory is on sys.path when this script runs
from sinks import running_sink

import notifymail as nm
from notifymail._address import normalize_address
from notifymail._compose import compose, compose_notification

SENDER_ADDRESS = "reports@example.com"
SENDER = nm.SenderSettings(
    from_address=SENDER_ADDRESS, from_name="Example Reports", reply_to=("support@example.com",)
)
SUBJECT = "Weekly revenue dashboard"
TEXT = "Hello,\n\nYour subscription 'Weekly revenue' has new results.\n\n" + (
    "Region  Revenue  Change\n" + "north   12,400   +3.1%\n" * 20
)
HTML = (
    "<html><body><p>Hello,</p><p>Your subscription has new results.</p><table>"
    + "<tr><td>north</td><td>12,400</td><td>+3.1%</td></tr>" * 20
    + "</table></body></html>"
)


@dataclass(frozen=True)
class Sizes:
    compose: int
    broadcast: int
    per_connection: int
    distinct: int
    audience: int
    pool: int
    imports: int
    policy: tuple[int, ...]
    repeat: int


FULL = Sizes(2_000, 2_000, 500, 2_000, 20_000, 2_000, 21, (10_000, 100_000), 5)
QUICK = Sizes(400, 400, 100, 400, 5_000, 400, 11, (10_000, 100_000), 3)

Contenders = Mapping[str, Callable[[], object]]


def race(contenders: Contenders, repeat: int) -> dict[str, float]:
    """The best wall time of each contender, in seconds, taking turns ``repeat`` times."""
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(repeat):
        for name, run in contenders.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def _now() -> datetime:
    return datetime.now(timezone.utc)


# --- the alternatives ---


def configure_django(port: int) -> None:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
            EMAIL_HOST="127.0.0.1",
            EMAIL_PORT=port,
        )
        django.setup()
    settings.EMAIL_PORT = port


def django_message(to: str, subject: str = SUBJECT, bcc: tuple[str, ...] = ()) -> Any:
    from django.core.mail import EmailMultiAlternatives

    message = EmailMultiAlternatives(
        subject,
        TEXT,
        f'"Example Reports" <{SENDER_ADDRESS}>',
        to=[to] if to else [],
        bcc=list(bcc),
        reply_to=["support@example.com"],
    )
    message.attach_alternative(HTML, "text/html")
    return message


def django_send(port: int, messages: list[Any]) -> None:
    from django.core.mail import get_connection

    configure_django(port)
    sent = get_connection().send_messages(messages)
    assert sent == len(messages)


def stdlib_message(to: str, subject: str = SUBJECT, text: str = TEXT, html: str = HTML) -> bytes:
    """The standard library's modern API: ``EmailMessage`` with ``email.policy.SMTP``."""
    message = EmailMessage(policy=email_policy.SMTP)
    message["From"] = Address("Example Reports", "reports", "example.com")
    message["To"] = to
    message["Reply-To"] = "support@example.com"
    message["Subject"] = subject
    message["Date"] = format_datetime(_now())
    message["Message-ID"] = make_msgid(domain="example.com")
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message.as_bytes()


def bare_smtplib(port: int, envelopes: list[tuple[list[str], bytes]]) -> None:
    """The floor: prebuilt bytes handed to ``sendmail`` over one connection."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="bench.localhost") as connection:
        for recipients, raw in envelopes:
            connection.sendmail(SENDER_ADDRESS, recipients, raw)


def email_settings(port: int, connections: int = 1) -> nm.EmailSettings:
    smtp = nm.SmtpSettings(host="127.0.0.1", port=port, max_connections=connections)
    return nm.EmailSettings(sender=SENDER, smtp=smtp)


def mailer(port: int, directory: nm.Directory | None = None, connections: int = 1) -> nm.Mailer:
    return nm.Mailer(email_settings(port, connections), directory=directory)


def async_notify(port: int, recipients: list[str], connections: int = 1) -> nm.DeliveryReport:
    """``AsyncMailer.notify`` on a loop of its own, as an asyncio application runs it."""

    reports: list[nm.DeliveryReport] = []

    async def run() -> None:
        sender = nm.AsyncMailer(email_settings(port, connections))
        notification = nm.Notification(recipients, SUBJECT, text=TEXT, html=HTML)
        async with sender:
            reports.append(await sender.notify(notification))

    # Not the main task's result: asyncio.run, restoring the SIGINT handler that names
    # the main task, formats its repr, result included (3.11), which for a report of
    # 2,000 addresses costs 5 ms of a run that an application, in a loop that lasts,
    # never pays.
    asyncio.run(run())
    return reports[0]


def aiosmtplib_each(port: int, envelopes: list[tuple[list[str], bytes]]) -> None:
    """aiosmtplib, the asyncio client a user would pick, sending one message after another
    over one connection."""
    import aiosmtplib

    async def run() -> None:
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=port, local_hostname="bench.localhost", start_tls=False
        )
        async with client:
            for recipients, raw in envelopes:
                await client.sendmail(SENDER_ADDRESS, recipients, raw)

    asyncio.run(run())


# --- 1. compose ---


def bench_compose(sizes: Sizes) -> dict[str, float]:
    """Microseconds per message, built and serialised."""
    count = sizes.compose
    addresses = [f"user{index}@example.org" for index in range(count)]

    def notifymail_message() -> None:
        normalize_address.cache_clear()
        for address in addresses:
            message = nm.Message(to=(address,), subject=SUBJECT, text=TEXT, html=HTML)
            assert compose(message, SENDER).raw

    def notifymail_notification() -> None:
        normalize_address.cache_clear()
        notification = nm.Notification(addresses, SUBJECT, text=TEXT, html=HTML)
        batches = [nm.Batch((address,), hidden=False) for address in notification.recipients]
        for envelope in compose_notification(notification, SENDER, batches):
            assert envelope.raw

    def stdlib() -> None:
        for address in addresses:
            assert stdlib_message(address)

    def django() -> None:
        for address in addresses:
            assert django_message(address).message().as_bytes(linesep="\r\n")

    configure_django(25)
    contenders = {
        "notifymail Message": notifymail_message,
        "notifymail Notification, per envelope": notifymail_notification,
        "stdlib EmailMessage": stdlib,
        "Django EmailMultiAlternatives": django,
    }
    race(contenders, 1)  # warm up: imports, caches
    return {name: s / count * 1e6 for name, s in race(contenders, sizes.repeat).items()}


UNSUBSCRIBE_RECIPIENTS = 2_000


def bench_unsubscribe(sizes: Sizes) -> dict[str, float]:
    """Microseconds per envelope of a notification to 2,000 people, composed and serialised,
    without and with ``unsubscribe`` (an envelope each either way: every one an outsider)."""
    addresses = [f"guest{index}@example.org" for index in range(UNSUBSCRIBE_RECIPIENTS)]
    plain = nm.Notification(addresses, SUBJECT, text=TEXT, html=HTML)
    batches = nm.plan_delivery(
        plain.recipients, nm.InMemoryDirectory(()), nm.EmailSettings(sender=SENDER)
    )
    signed = nm.Notification(
        addresses,
        SUBJECT,
        text=TEXT,
        html=HTML,
        unsubscribe=lambda address: f"https://bi.example.com/unsubscribe?t={address}.a1B2c3D4e5",
        list_id="weekly-revenue.bi.example.com",
    )

    def compose_all(notification: nm.Notification) -> Callable[[], None]:
        def run() -> None:
            envelopes = compose_notification(notification, SENDER, batches)
            assert len(envelopes) == UNSUBSCRIBE_RECIPIENTS
            for envelope in envelopes:
                assert envelope.raw

        return run

    contenders = {
        "notifymail Notification, per envelope": compose_all(plain),
        "with unsubscribe and List-Id, per envelope": compose_all(signed),
    }
    race(contenders, 1)
    seconds = race(contenders, sizes.repeat)
    return {name: s / UNSUBSCRIBE_RECIPIENTS * 1e6 for name, s in seconds.items()}


# --- 2, 3, 4: delivery over one connection ---


def bench_broadcast(port: int, sizes: Sizes) -> dict[str, float]:
    """Messages per second: one notification to outsiders, a message each."""
    count = sizes.broadcast
    outsiders = [f"guest{index}@example.org" for index in range(count)]
    raw = stdlib_message(outsiders[0])
    few = outsiders[: sizes.per_connection]

    def notify(recipients: list[str]) -> Callable[[], None]:
        def run() -> None:
            normalize_address.cache_clear()
            sender = mailer(port)
            notification = nm.Notification(recipients, SUBJECT, text=TEXT, html=HTML)
            with sender:
                report = sender.notify(notification)
            assert report.ok
            assert len(report.accepted) == len(recipients)

        return run

    def notify_each(recipients: list[str]) -> Callable[[], None]:
        """A notify call per recipient: each call opens and closes its own connection."""

        def run() -> None:
            normalize_address.cache_clear()
            sender = mailer(port)
            for address in recipients:
                notification = nm.Notification([address], SUBJECT, text=TEXT, html=HTML)
                assert sender.notify(notification).ok

        return run

    seconds = race(
        {
            "bare smtplib, prebuilt bytes": lambda: bare_smtplib(
                port, [([address], raw) for address in outsiders]
            ),
            "notifymail notify": notify(outsiders),
            "Django send_messages": lambda: django_send(
                port, [django_message(address) for address in outsiders]
            ),
        },
        sizes.repeat,
    )
    rates = {name: count / s for name, s in seconds.items()}
    per_message = race({"": notify_each(few)}, sizes.repeat)[""]
    rates["notifymail, a connection per message"] = len(few) / per_message
    return rates


def bench_distinct(port: int, sizes: Sizes) -> dict[str, float]:
    """Messages per second: different password-reset messages, built and sent."""
    people = [f"user{index}@example.org" for index in range(sizes.distinct)]

    def reset(index: int) -> tuple[str, str, str]:
        link = f"https://bi.example.com/reset/{index:08x}"
        return (
            f"Reset your password ({index})",
            f"Hello user {index},\n\nReset your password: {link}\n",
            f"<p>Hello user {index},</p><p><a href='{link}'>Reset your password</a></p>",
        )

    def notifymail() -> None:
        normalize_address.cache_clear()
        sender = mailer(port)
        with sender:
            for index, address in enumerate(people):
                subject, text, html = reset(index)
                sender.send(nm.Message(to=(address,), subject=subject, text=text, html=html))

    def stdlib() -> None:
        bare_smtplib(
            port,
            [([a], stdlib_message(a, *reset(index))) for index, a in enumerate(people)],
        )

    def django() -> None:
        from django.core.mail import EmailMultiAlternatives

        messages = []
        for index, address in enumerate(people):
            subject, text, html = reset(index)
            message = EmailMultiAlternatives(
                subject, text, f'"Example Reports" <{SENDER_ADDRESS}>', to=[address]
            )
            message.attach_alternative(html, "text/html")
            messages.append(message)
        django_send(port, messages)

    seconds = race(
        {
            "stdlib EmailMessage + smtplib": stdlib,
            "notifymail send": notifymail,
            "Django send_messages": django,
        },
        sizes.repeat,
    )
    return {name: len(people) / s for name, s in seconds.items()}


def bench_audience(port: int, sizes: Sizes) -> dict[str, float]:
    """Recipients per second: one alert to account holders, under BCC, 50 per message."""
    holders = [f"user{index}@example.com" for index in range(sizes.audience)]
    directory = nm.InMemoryDirectory(nm.Person(address) for address in holders)
    batches = [holders[start : start + 50] for start in range(0, len(holders), 50)]
    raw = stdlib_message("undisclosed-recipients:;")

    def notifymail() -> None:
        sender = mailer(port, directory)
        with sender:
            report = sender.notify(nm.Notification(holders, SUBJECT, text=TEXT, html=HTML))
        assert len(report.accepted) == len(holders)

    seconds = race(
        {
            "bare smtplib, prebuilt bytes": lambda: bare_smtplib(
                port, [(batch, raw) for batch in batches]
            ),
            "notifymail notify": notifymail,
            "Django send_messages": lambda: django_send(
                port, [django_message("", bcc=tuple(batch)) for batch in batches]
            ),
        },
        sizes.repeat,
    )
    return {name: len(holders) / s for name, s in seconds.items()}


# --- 5, 6: asyncio and the pool ---


def _notify_all(recipients: list[str], report: nm.DeliveryReport) -> None:
    """Every recipient accepted, none twice."""
    assert report.ok
    assert sorted(report.accepted) == sorted(recipients)


def bench_asyncio(port: int, sizes: Sizes) -> dict[str, float]:
    """Messages per second over one connection: AsyncMailer, Mailer, aiosmtplib."""
    outsiders = [f"guest{index}@example.org" for index in range(sizes.broadcast)]
    notification = nm.Notification(outsiders, SUBJECT, text=TEXT, html=HTML)
    batches = [nm.Batch((address,), hidden=False) for address in outsiders]
    envelopes = [
        (list(e.recipients), e.raw) for e in compose_notification(notification, SENDER, batches)
    ]

    def blocking() -> None:
        normalize_address.cache_clear()
        sender = mailer(port)
        with sender:
            _notify_all(outsiders, sender.notify(notification))

    def asynchronous() -> None:
        normalize_address.cache_clear()
        _notify_all(outsiders, async_notify(port, outsiders))

    seconds = race(
        {
            "Mailer notify": blocking,
            "AsyncMailer notify": asynchronous,
            "aiosmtplib, one by one, prebuilt bytes": lambda: aiosmtplib_each(port, envelopes),
        },
        sizes.repeat,
    )
    return {name: len(outsiders) / s for name, s in seconds.items()}


def bench_pool(port: int, sizes: Sizes) -> dict[str, float]:
    """Seconds for one notification to outsiders through the delay sink, by connections."""
    outsiders = [f"guest{index}@example.org" for index in range(sizes.pool)]

    def blocking(connections: int) -> Callable[[], None]:
        def run() -> None:
            sender = mailer(port, connections=connections)
            notification = nm.Notification(outsiders, SUBJECT, text=TEXT, html=HTML)
            with sender:
                _notify_all(outsiders, sender.notify(notification))

        return run

    def asynchronous(connections: int) -> Callable[[], None]:
        return lambda: _notify_all(outsiders, async_notify(port, outsiders, connections))

    return race(
        {
            "Mailer, 1 connection": blocking(1),
            "Mailer, 8 connections": blocking(8),
            "AsyncMailer, 1 connection": asynchronous(1),
            "AsyncMailer, 8 connections": asynchronous(8),
        },
        1,
    )


# --- 7. import time ---

IMPORTS = {
    "import smtplib": "import smtplib",
    "import notifymail": "import notifymail",
    "from notifymail import Mailer, Message, EmailSettings": (
        "from notifymail import Mailer, Message, EmailSettings"
    ),
    "import django.core.mail": "import django.core.mail",
}


def bench_imports(sizes: Sizes) -> dict[str, float]:
    """Milliseconds to import in a fresh interpreter, minus the bare interpreter's start-up;
    the median of the runs, taken in turns."""
    codes = {"bare interpreter": "pass", **IMPORTS}
    times: dict[str, list[float]] = {name: [] for name in codes}
    # With the bytecode cache written, as an installed package has it, even where the
    # environment says PYTHONDONTWRITEBYTECODE; the first run of each writes it.
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": ""}
    for code in codes.values():
        subprocess.run([sys.executable, "-c", code], check=True, env=env)  # noqa: S603
    for _ in range(sizes.imports):
        for name, code in codes.items():
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, env=env)  # noqa: S603
            times[name].append(time.perf_counter() - start)
    bare = statistics.median(times.pop("bare interpreter"))
    return {name: (statistics.median(runs) - bare) * 1e3 for name, runs in times.items()}


# --- 8. policy at scale ---


def bench_policy(sizes: Sizes) -> dict[str, dict[int, float]]:
    """Seconds per call, for each size (``bench/policy_scale.py``'s cases)."""
    settings = policy_scale.settings()
    results: dict[str, dict[int, float]] = {}
    for size in sizes.policy:
        for name, run in policy_scale.cases(size, settings).items():
            results.setdefault(name, {})[size] = policy_scale.best_time(run, sizes.repeat)
    return results


# --- the report ---


@dataclass(frozen=True)
class Target:
    name: str
    value: float
    goal: str
    met: bool


def targets(results: dict[str, Any]) -> list[Target]:
    def ratio(section: str, mine: str, theirs: str) -> float:
        return float(results[section][mine]) / float(results[section][theirs])

    found = []
    value = ratio("compose", "notifymail Message", "Django EmailMultiAlternatives")
    found.append(Target("compose: time per message vs Django", value, "<= 0.7", value <= 0.7))
    value = ratio(
        "unsubscribe",
        "with unsubscribe and List-Id, per envelope",
        "notifymail Notification, per envelope",
    )
    found.append(
        Target("unsubscribe: time per envelope vs without", value, "<= 1.5", value <= 1.5)
    )
    # Pipelining (the asyncio sink offers it) must show; aiosmtpd takes a command at a time.
    goals = {"asyncio": (1.5, 3.0), "aiosmtpd": (0.9, 1.5)}
    for sink, (smtplib_goal, django_goal) in goals.items():
        section = f"broadcast ({sink} sink)"
        value = ratio(section, "notifymail notify", "bare smtplib, prebuilt bytes")
        found.append(
            Target(
                f"broadcast, {sink}: rate vs bare smtplib",
                value,
                f">= {smtplib_goal}",
                value >= smtplib_goal,
            )
        )
        value = ratio(section, "notifymail notify", "Django send_messages")
        found.append(
            Target(
                f"broadcast, {sink}: rate vs Django",
                value,
                f">= {django_goal}",
                value >= django_goal,
            )
        )
        value = ratio(f"distinct ({sink} sink)", "notifymail send", "Django send_messages")
        found.append(Target(f"distinct, {sink}: rate vs Django", value, ">= 1.2", value >= 1.2))
    value = ratio("asyncio (asyncio sink)", "AsyncMailer notify", "Mailer notify")
    found.append(Target("asyncio: AsyncMailer rate vs Mailer", value, ">= 0.9", value >= 0.9))
    value = ratio(
        "asyncio (asyncio sink)", "AsyncMailer notify", "aiosmtplib, one by one, prebuilt bytes"
    )
    found.append(Target("asyncio: AsyncMailer rate vs aiosmtplib", value, ">= 3", value >= 3.0))
    for facade in ("Mailer", "AsyncMailer"):
        value = ratio("pool (delay sink)", f"{facade}, 8 connections", f"{facade}, 1 connection")
        found.append(
            Target(f"pool, {facade}: time with 8 connections vs 1", value, "<= 0.2", value <= 0.2)
        )
    value = ratio("import", "import notifymail", "import smtplib")
    found.append(
        Target("import notifymail: time vs import smtplib", value, "<= 1.5", value <= 1.5)
    )
    policy = results["policy"]
    small, large = min(next(iter(policy.values()))), max(next(iter(policy.values())))
    for name, by_size in policy.items():
        seconds = by_size[large]
        found.append(Target(f"{name} at {large:,}: seconds", seconds, "< 1", seconds < 1.0))
        # t ~ n**k: k is 1 for a linear pass, a little more for a sort, 2 for a scan per item
        k = math.log(seconds / by_size[small]) / math.log(large / small)
        found.append(Target(f"{name}: k in t ~ n^k", k, "<= 1.3", k <= 1.3))
    return found


def comparison(results: dict[str, Any]) -> dict[str, float]:
    """The pipelining ratios again, against the sink that writes each reply on its own."""
    broadcast = results["broadcast (asyncio-each sink)"]
    asynchronous = results["asyncio (asyncio-each sink)"]
    return {
        "broadcast: rate vs bare smtplib": broadcast["notifymail notify"]
        / broadcast["bare smtplib, prebuilt bytes"],
        "AsyncMailer rate vs Mailer": asynchronous["AsyncMailer notify"]
        / asynchronous["Mailer notify"],
        "AsyncMailer rate vs aiosmtplib": asynchronous["AsyncMailer notify"]
        / asynchronous["aiosmtplib, one by one, prebuilt bytes"],
    }


UNITS = {
    "compose": "µs per message",
    "unsubscribe": "µs per envelope",
    "import": "ms",
    "audience": "recipients per second",
    "pool": "seconds",
}


def print_table(results: dict[str, Any], found: list[Target]) -> None:
    for section, values in results.items():
        if section == "policy":
            continue
        unit = next((u for key, u in UNITS.items() if section.startswith(key)), "messages/s")
        print(f"\n{section} [{unit}]")
        for name, value in values.items():
            print(f"  {name:<55} {value:>10,.1f}")
    print("\npolicy [seconds per call]")
    for name, by_size in results["policy"].items():
        cells = "  ".join(f"{size:>7,}: {seconds:6.3f}" for size, seconds in by_size.items())
        print(f"  {name:<35} {cells}")
    print(f"\n{'target':<58} {'value':>7}  {'goal':<16} met")
    for target in found:
        met = "yes" if target.met else "NO"
        print(f"{target.name:<58} {target.value:>7.2f}  {target.goal:<16} {met}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, fewer rounds")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    options = parser.parse_args(argv)
    sizes = QUICK if options.quick else FULL

    started = time.perf_counter()
    results: dict[str, Any] = {"import": bench_imports(sizes)}  # first, while nothing runs
    results["compose"] = bench_compose(sizes)
    results["unsubscribe"] = bench_unsubscribe(sizes)
    for sink in ("asyncio", "aiosmtpd"):
        with running_sink(sink) as port:
            results[f"broadcast ({sink} sink)"] = bench_broadcast(port, sizes)
            results[f"distinct ({sink} sink)"] = bench_distinct(port, sizes)
            results[f"audience ({sink} sink)"] = bench_audience(port, sizes)
            if sink == "asyncio":
                results["asyncio (asyncio sink)"] = bench_asyncio(port, sizes)
    with running_sink("asyncio-each") as port:
        results["broadcast (asyncio-each sink)"] = bench_broadcast(port, sizes)
        results["asyncio (asyncio-each sink)"] = bench_asyncio(port, sizes)
    with running_sink("delay") as port:
        results["pool (delay sink)"] = bench_pool(port, sizes)
    results["policy"] = bench_policy(sizes)
    found = targets(results)
    print_table(results, found)
    compared = comparison(results)
    print("\nthe same ratios against asyncio-each (each reply written on its own), not targets")
    for name, value in compared.items():
        print(f"{name:<58} {value:>7.2f}")
    print(f"\n{time.perf_counter() - started:.0f} s in all")
    if options.json:
        document = {
            "command": "python bench/run.py" + (" --quick" if options.quick else ""),
            "python": platform.python_version(),
            "machine": platform.platform(),
            "sizes": asdict(sizes),
            "results": results,
            "targets": [asdict(target) for target in found],
            "asyncio-each sink, for comparison": compared,
        }
        options.json.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return 0 if all(target.met for target in found) else 1


if __name__ == "__main__":
    raise SystemExit(main())
