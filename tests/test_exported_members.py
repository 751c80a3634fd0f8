"""The public API of SPEC.md: every name importable from ``notifymail`` and in ``__all__``."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import notifymail as nm
from notifymail._lazy import re_exports

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("notifymail", "notifymail.transport")

SPEC_NAMES = {
    # section 0: errors
    "NotifymailError", "ConfigError", "FeatureNotAvailable", "InvalidMessage",
    "PermissionDenied", "RecipientNotAllowed", "DeliveryError", "ConnectionFailed",
    "TlsError", "AuthenticationFailed", "TemporaryFailure", "PermanentFailure",
    # section 1: settings
    "SmtpSettings", "SenderSettings", "DeliverySettings", "RetryPolicy", "RecipientPolicy",
    "Deployment", "ManagedService", "EmailSettings", "Secret",
    "Security", "Hosting", "Plan", "SuggestionMode", "Feature",
    # section 2: policy
    "Person", "Directory", "InMemoryDirectory", "entitlements", "can_manage_email",
    "apply_changes", "check_recipients", "suggest_recipients", "plan_delivery", "Batch",
    # section 3: transports
    "Envelope", "Reply", "Delivery", "Transport", "MemoryTransport", "Sent",
    "ConsoleTransport", "SmtpTransport",
    # section 4: the facade
    "Mailer", "Message", "Notification", "Attachment", "DeliveryReport", "VerifyResult",
    "verify_smtp",
    # section 7: asyncio
    "AsyncTransport", "AsyncSmtpTransport", "AsyncMemoryTransport", "AsyncMailer",
    # section 9: the outbox
    "Outbox", "SqliteOutbox", "Queued", "OutboxStatus", "DeadMail", "OutboxWorker",
    # section 11: subscription mail
    "UnsubscribeTokens", "InvalidToken", "Suppressions", "InMemorySuppressions",
    "SqliteSuppressions",
}  # fmt: skip


def test_all_is_sorted_and_unique() -> None:
    assert list(nm.__all__) == sorted(set(nm.__all__))


def test_every_spec_name_is_exported() -> None:
    assert set(nm.__all__) >= SPEC_NAMES


def test_every_exported_name_is_importable() -> None:
    for name in nm.__all__:
        assert getattr(nm, name) is not None, name


@pytest.mark.parametrize("package", PACKAGES)
def test_all_lists_the_re_exports_each_from_the_module_its_import_names(package: str) -> None:
    module = importlib.import_module(package)
    exports = re_exports(ast.parse(Path(module.__file__ or "").read_bytes()))
    assert module.__all__ == sorted(exports)
    assert set(module.__all__) <= set(dir(module))
    for name, home in exports.items():
        assert getattr(module, name) is getattr(importlib.import_module(home), name), name


def test_a_re_export_is_an_import_of_a_name_as_itself_at_any_depth() -> None:
    source = textwrap.dedent(
        """
        from typing import TYPE_CHECKING
        from a import Eager as Eager
        from a import helper
        from a import Renamed as Other
        if TYPE_CHECKING:
            from b.c import Lazy as Lazy
            from b import only_for_annotations
        """
    )
    assert re_exports(ast.parse(source)) == {"Eager": "a", "Lazy": "b.c"}


def test_an_unknown_name_is_an_attribute_error_naming_it() -> None:
    with pytest.raises(AttributeError, match="module 'notifymail' has no attribute 'Mailr'"):
        nm.Mailr  # type: ignore[attr-defined]  # noqa: B018


def test_type_checkers_see_each_exported_name_with_its_own_type(tmp_path: Path) -> None:
    """``mypy --strict`` (no implicit re-export) types ``from notifymail import X`` and
    ``notifymail.X`` as X itself, and a name notifymail does not export is an error."""
    lines = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        lines.append(f"import {package}")
        for name in module.__all__:
            lines += [f"from {package} import {name}", f"reveal_type({name})"]
            lines.append(f"reveal_type({package}.{name})")
    lines.append("notifymail.NoSuchName")
    usage = tmp_path / "usage.py"
    usage.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = subprocess.run(  # noqa: S603 - our own interpreter and mypy
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--cache-dir",
            str(tmp_path / "cache"),
            str(usage),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    revealed = re.findall(r'Revealed type is "(.*)"', result.stdout)
    errors = [line for line in result.stdout.splitlines() if ": error: " in line]
    assert len(errors) == 1, result.stdout
    assert errors[0].startswith(f"{usage}:{len(lines)}: error: ")
    assert '"NoSuchName"' in errors[0]
    assert len(revealed) == 2 * sum(len(importlib.import_module(p).__all__) for p in PACKAGES)
    assert "Any" not in revealed
    assert revealed[::2] == revealed[1::2]


def test_exported_members_say_where_they_live() -> None:
    for name in nm.__all__:
        member = getattr(nm, name)
        module = getattr(member, "__module__", "")
        assert module.startswith("notifymail."), (name, module)
        assert getattr(importlib.import_module(module), name) is member


def test_submodules_list_their_public_names() -> None:
    for module_name in (
        "errors",
        "settings",
        "policy",
        "message",
        "mailer",
        "verify",
        "outbox",
        "worker",
        "suppressions",
        "unsubscribe",
    ):
        module = importlib.import_module(f"notifymail.{module_name}")
        for name in module.__all__:
            assert hasattr(module, name), (module_name, name)


def printed_by(code: str) -> list[str]:
    """The lines ``code`` prints, run by this interpreter in a fresh process."""
    result = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return result.stdout.splitlines()


def test_import_notifymail_leaves_the_heavy_modules_for_first_use() -> None:
    code = (
        "import sys, notifymail\n"
        "heavy = ['smtplib', 'ssl', 'email.message', 'email_validator', 'asyncio', 'sqlite3']\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
        "notifymail.SmtpTransport\n"
        "print('ssl' in sys.modules)\n"
    )
    assert printed_by(code) == ["", "True"]


def test_import_notifymail_imports_no_module_of_a_name_it_imports_on_first_use() -> None:
    code = (
        "import ast, sys, notifymail\n"
        "from notifymail._lazy import re_exports\n"
        "exports = re_exports(ast.parse(open(notifymail.__file__, 'rb').read()))\n"
        "later = {exports[name] for name in notifymail.__all__ if name not in vars(notifymail)}\n"
        "print(sorted(later))\n"
        "print(sorted(later & set(sys.modules)))\n"
    )
    later, imported = printed_by(code)
    assert "'notifymail.mailer'" in later
    assert "'notifymail.outbox'" in later
    assert imported == "[]"


def test_composing_a_message_loads_no_part_of_the_email_package() -> None:
    # Composition writes headers and MIME itself; the email package is for reading back.
    code = (
        "import sys, notifymail as nm\n"
        "from notifymail._compose import compose\n"
        "logo = nm.Attachment('l.png', b'P', 'image/png', content_id='l')\n"
        "message = nm.Message(['jösé@bücher.de'], 'Olé', text='x', html='<img>',\n"
        "    headers={'X-Tag': 'ü'}, attachments=[logo, nm.Attachment('a.csv', b'x', 'text/csv')])\n"
        "compose(message, nm.SenderSettings(from_address='b@bücher.de', from_name='Ünï')).raw\n"
        "print(sorted(m for m in sys.modules if m.partition('.')[0] == 'email'))\n"
    )
    assert printed_by(code) == ["[]"]


def test_the_names_imported_on_first_use_resolve_from_a_zip_archive(tmp_path: Path) -> None:
    import zipfile

    package = Path(nm.__file__).parent
    archive = tmp_path / "notifymail.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for source in package.rglob("*.py"):
            bundle.write(source, source.relative_to(package.parent).as_posix())
    code = (
        f"import sys; sys.path.insert(0, {str(archive)!r}); import notifymail; "
        "assert '.zip' in notifymail.__file__, notifymail.__file__; "
        "print(notifymail.Mailer.__module__, len(notifymail.__all__))"
    )
    command = [sys.executable, "-I", "-c", code]
    result = subprocess.run(command, capture_output=True, text=True, check=True)  # noqa: S603
    assert result.stdout.split() == ["notifymail.mailer", str(len(nm.__all__))]
