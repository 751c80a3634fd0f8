"""notifymail side by side with the standard library and Django, in one run, on one machine.

    python bench/run.py [--quick] [--json PATH]

Six measurements, each against its alternatives; every SMTP case runs against sinks this
script starts on 127.0.0.1 (``asyncio``, a minimal server that answers at once so it
does not hide the client's cost, and ``aiosmtpd``, a real server), each in its own
process. The table ends with the ratios the performance targets are stated in.

1. compose: a text+HTML message with From name and Reply-To, built and serialised.
2. broadcast: one notification to N outsiders (a message each) over one connection.
3. distinct: N different password-reset messages, built and sent.
4. audience: one alert to N account holders under BCC, 50 per message.
5. import: ``import notifymail`` against ``import smtplib``, in fresh interpreters.
6. policy: ``plan_delivery``, ``check_recipients``, ``suggest_recipients`` at scale.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import smtplib
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from email import policy as email_policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import policy_scale  # noqa: E402 - the bench directory is not a package
from sinks import running_sink  # noqa: E402

import notifymail as nm  # noqa: E402
from notifymail._address import normalize_address  # noqa: E402
from notifymail.message import compose  # noqa: E402

SENDER = nm.SenderSettings(
    from_address="reports@example.com",
    from_name="Example Reports",
    reply_to=("support@example.com",),
)
SUBJECT = "Weekly revenue dashboard"
TEXT = "Hello,\n\nYour subscription 'Weekly revenue' has new results.\n" + (
    "Region  Revenue  Change\n" + "north   12,400   +3.1%\n" * 20
)
HTML = "<html><body><p>Hello,</p><p>Your subscription has new results.</p><table>" + (
    "<tr><td>north</td><td>12,400</td><td>+3.1%</td></tr>" * 20
) + "</table></body></html>"


@dataclass(frozen=True)
class Sizes:
    compose: int
    broadcast: int
    per_connection: int
    distinct: int
    audience: int
    imports: int
    policy: tuple[int, ...]
    repeat: int


FULL = Sizes(2_000, 2_000, 500, 2_000, 20_000, 15, (10_000, 100_000), 3)
QUICK = Sizes(500, 500, 100, 500, 5_000, 7, (10_000, 100_000), 1)


def best_of(repeat: int, run: Callable[[], object]) -> float:
    """The best wall time of ``repeat`` runs, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


# --- Django, configured in-process for its SMTP backend ---


def _django(port: int) -> None:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
            EMAIL_HOST="127.0.0.1",
            EMAIL_PORT=port,
            DEFAULT_CHARSET="utf-8",
        )
        django.setup()
    settings.EMAIL_PORT = port


def django_message(to: str, subject: str = SUBJECT, bcc: tuple[str, ...] = ()) -> object:
    from django.core.mail import EmailMultiAlternatives

    message = EmailMultiAlternatives(
        subject,
        TEXT,
        '"Example Reports" <reports@example.com>',
        to=[to] if to else [],
        bcc=list(bcc),
        reply_to=["support@example.com"],
    )
    message.attach_alternative(HTML, "text/html")
    return message


def django_connection(port: int) -> object:
    from django.core.mail import get_connection

    _django(port)
    return get_connection(host="127.0.0.1", port=port)


# --- the standard library's modern API ---


def stdlib_message(to: str, subject: str = SUBJECT) -> EmailMessage:
    message = EmailMessage(policy=email_policy.SMTP)
    message["From"] = Address("Example Reports", "reports", "example.com")
    message["To"] = to
    message["Reply-To"] = "support@example.com"
    message["Subject"] = subject
    message["Date"] = format_datetime(nm_now())
    message["Message-ID"] = make_msgid(domain="example.com")
    message.set_content(TEXT)
    message.add_alternative(HTML, subtype="html")
    return message


def nm_now() -> object:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)


# --- 1. compose ---


def bench_compose(sizes: Sizes) -> dict[str, float]:
    """Microseconds per message, built and serialised."""
    count = sizes.compose
    addresses = [f"user{index}@example.org" for index in range(count)]

    def notifymail_compose() -> None:
        for address in addresses:
            message = nm.Message(to=(address,), subject=SUBJECT, text=TEXT, html=HTML)
            _ = compose(message, SENDER).raw

    def notifymail_notification() -> None:
        notification = nm.Notification(addresses, SUBJECT, text=TEXT, html=HTML)
        batches = [nm.Batch((address,), hidden=False) for address in notification.recipients]
        from notifymail.message import compose_notification

        for envelope in compose_notification(notification, SENDER, batches):
            _ = envelope.raw

    def stdlib_compose() -> None:
        for address in addresses:
            _ = stdlib_message(address).as_bytes()

    def django_compose() -> None:
        for address in addresses:
            _ = django_message(address).message().as_bytes(linesep="\r\n")  # type: ignore[attr-defined]

    _django(25)
    results = {}
    for name, run in (
        ("notifymail Message", notifymail_compose),
        ("notifymail Notification (per envelope)", notifymail_notification),
        ("stdlib EmailMessage", stdlib_compose),
        ("Django EmailMultiAlternatives", django_compose),
    ):
        run()  # warm up: imports, caches of the header registry
        normalize_address.cache_clear()
        results[name] = best_of(sizes.repeat, run) / count * 1e6
    return results


# --- 2, 3, 4: delivery over one connection ---


def _settings(port: int, **delivery: object) -> nm.EmailSettings:
    return nm.EmailSettings(
        sender=SENDER,
        smtp=nm.SmtpSettings(host="127.0.0.1", port=port),
        delivery=nm.DeliverySettings(**delivery),  # type: ignore[arg-type]
    )


def _bare_smtplib(port: int, envelopes: list[tuple[list[str], bytes]]) -> None:
    with smtplib.SMTP("127.0.0.1", port, local_hostname="bench.localhost") as connection:
        for recipients, raw in envelopes:
            connection.sendmail("reports@example.com", recipients, raw)


def bench_broadcast(port: int, sizes: Sizes) -> dict[str, float]:
    """Messages per second: one notification, a message per outsider."""
    count = sizes.broadcast
    outsiders = [f"guest{index}@example.org" for index in range(count)]
    raw = stdlib_message(outsiders[0]).as_bytes()
    prebuilt = [([address], raw) for address in outsiders]

    def notifymail_broadcast(recipients: list[str], keep_open: bool) -> Callable[[], None]:
        mailer = nm.Mailer(_settings(port))

        def run() -> None:
            notification = nm.Notification(recipients, SUBJECT, text=TEXT, html=HTML)
            with mailer if keep_open else contextlib.nullcontext():
                report = mailer.notify(notification)
            assert report.ok and len(report.accepted) == len(recipients)

        return run

    def django_broadcast() -> None:
        connection = django_connection(port)
        sent = connection.send_messages([django_message(a) for a in outsiders])  # type: ignore[attr-defined]
        assert sent == count

    few = outsiders[: sizes.per_connection]
    rates = {
        "bare smtplib, prebuilt bytes": count / best_of(sizes.repeat, lambda: _bare_smtplib(port, prebuilt)),
        "notifymail notify": count / best_of(sizes.repeat, notifymail_broadcast(outsiders, True)),
        "Django send_messages": count / best_of(sizes.repeat, django_broadcast),
        "notifymail, a connection per message": len(few)
        / best_of(sizes.repeat, notifymail_broadcast(few, False)),
    }
    return rates


def bench_distinct(port: int, sizes: Sizes) -> dict[str, float]:
    """Messages per second: different password-reset messages, built and sent."""
    count = sizes.distinct
    people = [f"user{index}@example.org" for index in range(count)]

    def reset_text(index: int) -> str:
        return f"Hello user {index},\n\nReset your password: https://bi.example.com/reset/{index:08x}\n"

    def reset_html(index: int) -> str:
        return f"<p>Hello user {index},</p><p><a href='https://bi.example.com/reset/{index:08x}'>Reset</a></p>"

    def notifymail_distinct() -> None:
        normalize_address.cache_clear()
        mailer = nm.Mailer(_settings(port))
        with mailer:
            for index, address in enumerate(people):
                message = nm.Message(
                    to=(address,),
                    subject=f"Reset your password ({index})",
                    text=reset_text(index),
                    html=reset_html(index),
                )
                mailer.send(message)

    def stdlib_distinct() -> None:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="bench.localhost") as connection:
            for index, address in enumerate(people):
                message = EmailMessage(policy=email_policy.SMTP)
                message["From"] = Address("Example Reports", "reports", "example.com")
                message["To"] = address
                message["Subject"] = f"Reset your password ({index})"
                message["Date"] = format_datetime(nm_now())
                message["Message-ID"] = make_msgid(domain="example.com")
                message.set_content(reset_text(index))
                message.add_alternative(reset_html(index), subtype="html")
                connection.sendmail("reports@example.com", [address], message.as_bytes())

    def django_distinct() -> None:
        from django.core.mail import EmailMultiAlternatives

        connection = django_connection(port)
        messages = []
        for index, address in enumerate(people):
            message = EmailMultiAlternatives(
                f"Reset your password ({index})",
                reset_text(index),
                '"Example Reports" <reports@example.com>',
                to=[address],
            )
            message.attach_alternative(reset_html(index), "text/html")
            messages.append(message)
        assert connection.send_messages(messages) == count  # type: ignore[attr-defined]

    return {
        "stdlib EmailMessage + smtplib": count / best_of(sizes.repeat, stdlib_distinct),
        "notifymail send": count / best_of(sizes.repeat, notifymail_distinct),
        "Django send_messages": count / best_of(sizes.repeat, django_distinct),
    }


def bench_audience(port: int, sizes: Sizes) -> dict[str, float]:
    """Recipients per second: one alert to account holders, BCC, 50 per message."""
    count = sizes.audience
    holders = [f"user{index}@example.com" for index in range(count)]
    directory = nm.InMemoryDirectory(nm.Person(address) for address in holders)
    batches = [holders[start : start + 50] for start in range(0, count, 50)]
    raw = stdlib_message("undisclosed-recipients:;").as_bytes()

    def notifymail_audience() -> None:
        mailer = nm.Mailer(_settings(port), directory=directory)
        with mailer:
            report = mailer.notify(nm.Notification(holders, SUBJECT, text=TEXT, html=HTML))
        assert len(report.accepted) == count

    def django_audience() -> None:
        connection = django_connection(port)
        messages = [django_message("", bcc=tuple(batch)) for batch in batches]
        assert connection.send_messages(messages) == len(batches)  # type: ignore[attr-defined]

    return {
        "bare smtplib, prebuilt bytes": count
        / best_of(sizes.repeat, lambda: _bare_smtplib(port, [(b, raw) for b in batches])),
        "notifymail notify": count / best_of(sizes.repeat, notifymail_audience),
        "Django send_messages": count / best_of(sizes.repeat, django_audience),
    }


# --- 5. import time ---


def bench_imports(sizes: Sizes) -> dict[str, float]:
    """Milliseconds to import, in a fresh interpreter, minus the bare interpreter's start."""

    def median_ms(code: str) -> float:
        times = []
        for _ in range(sizes.imports):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)  # noqa: S603
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1e3

    bare = median_ms("pass")
    return {
        name: median_ms(code) - bare
        for name, code in (
            ("import smtplib", "import smtplib"),
            ("import notifymail", "import notifymail"),
            ("import django.core.mail", "import django.core.mail"),
        )
    }


# --- 6. policy at scale ---


def bench_policy(sizes: Sizes) -> dict[str, dict[int, float]]:
    """Seconds per call, for each size."""
    settings = policy_scale._settings()
    results: dict[str, dict[int, float]] = {}
    for size in sizes.policy:
        for name, run in policy_scale._cases(size, settings).items():
            results.setdefault(name, {})[size] = policy_scale._time(run, sizes.repeat)
    return results


# --- the report ---


@dataclass(frozen=True)
class Target:
    name: str
    ratio: float
    goal: str
    met: bool


def targets(results: dict[str, dict[str, object]]) -> list[Target]:
    def ratio(section: str, mine: str, theirs: str) -> float:
        values = results[section]
        return float(values[mine]) / float(values[theirs])  # type: ignore[arg-type]

    found = []
    compose_vs_django = ratio("compose", "notifymail Message", "Django EmailMultiAlternatives")
    found.append(Target("compose time vs Django", compose_vs_django, "<= 0.7", compose_vs_django <= 0.7))
    for sink in ("asyncio", "aiosmtpd"):
        section = f"broadcast ({sink} sink)"
        floor = ratio(section, "notifymail notify", "bare smtplib, prebuilt bytes")
        found.append(Target(f"broadcast rate vs bare smtplib, {sink}", floor, ">= 0.9", floor >= 0.9))
        django = ratio(section, "notifymail notify", "Django send_messages")
        found.append(Target(f"broadcast rate vs Django, {sink}", django, ">= 1.5", django >= 1.5))
        section = f"distinct ({sink} sink)"
        distinct = ratio(section, "notifymail send", "Django send_messages")
        found.append(Target(f"distinct rate vs Django, {sink}", distinct, ">= 1.2", distinct >= 1.2))
    imports = ratio("import", "import notifymail", "import smtplib")
    found.append(Target("import time vs smtplib", imports, "<= 1.5", imports <= 1.5))
    policy = results["policy"]
    largest = max(next(iter(policy.values())))  # type: ignore[call-overload]
    smallest = min(next(iter(policy.values())))  # type: ignore[call-overload]
    for name, by_size in policy.items():
        seconds = by_size[largest]  # type: ignore[index]
        growth = (seconds / largest) / (by_size[smallest] / smallest)  # type: ignore[index]
        ok = seconds < 1.0 and growth < 1.5
        found.append(Target(f"{name}, {largest:,} (s; per-item growth {growth:.2f}x)", seconds, "< 1 s, linear", ok))
    return found


def print_table(results: dict[str, dict[str, object]], found: list[Target]) -> None:
    units = {
        "compose": "µs/message",
        "import": "ms",
        "audience": "recipients/s",
    }
    for section, values in results.items():
        if section == "policy":
            continue
        unit = next((u for key, u in units.items() if section.startswith(key)), "messages/s")
        print(f"\n{section} [{unit}]")
        for name, value in values.items():
            print(f"  {name:<45} {float(value):>12,.1f}")  # type: ignore[arg-type]
    print("\npolicy [seconds]")
    for name, by_size in results["policy"].items():
        cells = "  ".join(f"{size:>7,}: {seconds:.3f}" for size, seconds in by_size.items())  # type: ignore[attr-defined]
        print(f"  {name:<45} {cells}")
    print(f"\n{'target':<62} {'value':>8}  {'goal':<14} met")
    for target in found:
        print(f"{target.name:<62} {target.ratio:>8.2f}  {target.goal:<14} {'yes' if target.met else 'NO'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, one run each")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    options = parser.parse_args(argv)
    sizes = QUICK if options.quick else FULL

    results: dict[str, dict[str, object]] = {}
    results["import"] = bench_imports(sizes)  # first, while the machine is quiet
    results["compose"] = bench_compose(sizes)
    for sink in ("asyncio", "aiosmtpd"):
        with running_sink(sink) as port:
            results[f"broadcast ({sink} sink)"] = bench_broadcast(port, sizes)
            results[f"distinct ({sink} sink)"] = bench_distinct(port, sizes)
            results[f"audience ({sink} sink)"] = bench_audience(port, sizes)
    results["policy"] = bench_policy(sizes)  # type: ignore[assignment]
    found = targets(results)
    print_table(results, found)
    if options.json:
        document = {
            "command": " ".join(["python", "bench/run.py", *(argv or sys.argv[1:])]),
            "quick": options.quick,
            "python": platform.python_version(),
            "machine": platform.platform(),
            "results": results,
            "targets": [target.__dict__ for target in found],
        }
        options.json.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return 0 if all(target.met for target in found) else 1


if __name__ == "__main__":
    raise SystemExit(main())
