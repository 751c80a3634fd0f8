"""The settings table in docs/configuration.md, checked against the code so it cannot drift.

The table is parsed as a reader sees it: one row per field, the class named on its
first row. Each claim a row makes is compared with the dataclass, with
``ENV_VARIABLES`` and with what ``EmailSettings.from_env`` really reads.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import notifymail as nm
from notifymail.settings import ENV_VARIABLES

PAGE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"

CLASSES: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        nm.SmtpSettings,
        nm.SenderSettings,
        nm.DeliverySettings,
        nm.RetryPolicy,
        nm.RecipientPolicy,
        nm.Deployment,
        nm.ManagedService,
        nm.EmailSettings,
    )
}
# Where each class sits inside EmailSettings, as ENV_VARIABLES writes field paths.
PREFIXES = {
    "SmtpSettings": ("smtp.", "managed.smtp."),
    "SenderSettings": ("sender.",),
    "DeliverySettings": ("delivery.",),
    "RetryPolicy": ("delivery.retry.",),
    "RecipientPolicy": ("recipients.",),
    "Deployment": ("deployment.",),
    "ManagedService": ("managed.",),
    "EmailSettings": ("",),
}
NOTHING = "—"
_CODE = re.compile(r"`([^`]*)`")
_VARIABLE = re.compile(r"`(MB_[A-Z0-9_]+)`")


@dataclass(frozen=True)
class Row:
    cls: str
    field: str
    default: str
    variables: tuple[str, ...]
    variable_cell: str
    feature: str


def documented_rows() -> list[Row]:
    text = PAGE.read_text(encoding="utf-8")
    table = text.split("## The settings", 1)[1].split("\n## ", 1)[0]
    rows = []
    cls = ""
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 6 or cells[0] == "class" or (set(cells[0]) <= {"-"} and cells[0]):
            continue
        if cells[0]:
            cls = _CODE.fullmatch(cells[0])[1]  # type: ignore[index]
        rows.append(
            Row(
                cls=cls,
                field=_CODE.fullmatch(cells[1])[1],  # type: ignore[index]
                default=cells[2],
                variables=tuple(_VARIABLE.findall(cells[3])),
                variable_cell=cells[3],
                feature=cells[4].strip("`"),
            )
        )
    return rows


ROWS = documented_rows()


def test_the_table_has_a_row_for_every_field_of_every_settings_class() -> None:
    documented = {(row.cls, row.field) for row in ROWS}
    actual = {
        (name, field.name) for name, cls in CLASSES.items() for field in dataclasses.fields(cls)
    }
    assert len(documented) == len(ROWS), "a field is documented twice"
    assert documented == actual


@pytest.mark.parametrize("row", ROWS, ids=lambda row: f"{row.cls}.{row.field}")
def test_documented_default_is_the_fields_default(row: Row) -> None:
    field = next(f for f in dataclasses.fields(CLASSES[row.cls]) if f.name == row.field)
    if row.default == "required":
        assert field.default is dataclasses.MISSING
        assert field.default_factory is dataclasses.MISSING
        return
    expression = _CODE.fullmatch(row.default)
    assert expression is not None, f"default {row.default!r} is not `code` or required"
    documented = eval(expression[1], vars(nm))  # noqa: S307 - the table's own expressions
    if field.default_factory is not dataclasses.MISSING:
        assert documented == field.default_factory()
    else:
        assert documented == field.default
        assert type(documented) is type(field.default)


def _paths(row: Row) -> list[str]:
    return [prefix + row.field for prefix in PREFIXES[row.cls]]


@pytest.mark.parametrize("row", ROWS, ids=lambda row: f"{row.cls}.{row.field}")
def test_documented_variables_set_that_field(row: Row) -> None:
    for variable in row.variables:
        assert variable in ENV_VARIABLES, f"{variable} is not a variable from_env reads"
        path = ENV_VARIABLES[variable]
        assert any(path == p or path.startswith(p + ".") for p in _paths(row)), (
            f"{variable} sets {path}, not {row.cls}.{row.field}"
        )


@pytest.mark.parametrize("row", ROWS, ids=lambda row: f"{row.cls}.{row.field}")
def test_a_field_documented_without_a_variable_has_none(row: Row) -> None:
    if row.variable_cell != NOTHING:
        return
    paths = _paths(row)
    assert [name for name, path in ENV_VARIABLES.items() if path in paths] == []


def test_every_variable_is_documented_on_the_field_it_sets() -> None:
    documented = {variable for row in ROWS for variable in row.variables}
    assert documented == set(ENV_VARIABLES)


# Two environments between them set every variable, each to a value that differs from
# the field's default, so reading them proves where each variable goes.
SELF_HOSTED = {
    "MB_EMAIL_HOSTING": "self-hosted",
    "MB_EMAIL_PLAN": "pro",
    "MB_EMAIL_SMTP_HOST": "smtp.self.example",
    "MB_EMAIL_SMTP_PORT": "2526",
    "MB_EMAIL_SMTP_SECURITY": "ssl",
    "MB_EMAIL_SMTP_USERNAME": "self-user",
    "MB_EMAIL_SMTP_PASSWORD": "self-password",
    "MB_EMAIL_FROM_ADDRESS": "bi@example.com",
    "MB_EMAIL_FROM_NAME": "Acme BI",
    "MB_EMAIL_REPLY_TO": "help@example.com",
    "MB_BCC_ENABLED": "false",
    "MB_EMAIL_MAX_RECIPIENTS_PER_MESSAGE": "7",
    "MB_EMAIL_MAX_RECIPIENTS_PER_SECOND": "9",
    "MB_SUBSCRIPTION_ALLOWED_DOMAINS": "partner.example",
    "MB_USER_VISIBILITY": "group",
}
CLOUD = {
    "MB_EMAIL_HOSTING": "cloud",
    "MB_EMAIL_PLAN": "enterprise",
    "MB_EMAIL_FROM_ADDRESS": "bi@example.com",
    "MB_EMAIL_SMTP_HOST_OVERRIDE": "smtp.customer.example",
    "MB_EMAIL_SMTP_PORT_OVERRIDE": "2525",
    "MB_EMAIL_SMTP_SECURITY_OVERRIDE": "starttls",
    "MB_EMAIL_SMTP_USERNAME_OVERRIDE": "customer-user",
    "MB_EMAIL_SMTP_PASSWORD_OVERRIDE": "customer-password",
    "MB_SMTP_OVERRIDE_ENABLED": "true",
    "MB_EMAIL_MANAGED_SMTP_HOST": "smtp.operator.example",
    "MB_EMAIL_MANAGED_SMTP_PORT": "2465",
    "MB_EMAIL_MANAGED_SMTP_SECURITY": "tls",
    "MB_EMAIL_MANAGED_SMTP_USERNAME": "operator-user",
    "MB_EMAIL_MANAGED_SMTP_PASSWORD": "operator-password",
    "MB_EMAIL_MANAGED_FROM_ADDRESS": "noreply@operator.example",
}
PARSED: dict[str, Callable[[str], object]] = {
    "port": int,
    "security": nm.Security,
    "password": nm.Secret,
    "reply_to": lambda text: (text,),
    "bcc_enabled": lambda text: text == "true",
    "max_recipients_per_message": int,
    "max_recipients_per_second": int,
    "approved_domains": lambda text: (text,),
    "suggestions": nm.SuggestionMode,
    "hosting": nm.Hosting,
    "plan": nm.Plan,
    "use_custom_smtp": lambda text: text == "true",
}


def _at(settings: object, path: str) -> object:
    for name in path.split("."):
        settings = getattr(settings, name)
    return settings


@pytest.mark.parametrize("variable", sorted(ENV_VARIABLES))
def test_from_env_puts_each_variable_where_env_variables_says(variable: str) -> None:
    environ = SELF_HOSTED if variable in SELF_HOSTED else CLOUD
    assert variable in environ, f"add {variable} to one of this test's environments"
    settings = nm.EmailSettings.from_env(environ)
    path = ENV_VARIABLES[variable]
    parse = PARSED.get(path.rpartition(".")[2], str)
    assert _at(settings, path) == parse(environ[variable])


def _with(path: str, value: Any, **settings: Any) -> nm.EmailSettings:
    """Settings on a plan without features, with ``path`` given a non-default value."""
    part, _, name = path.rpartition(".")
    if part == "recipients":
        settings["recipients"] = nm.RecipientPolicy(**{name: value})
    else:
        settings[name] = value
    return nm.EmailSettings(sender=nm.SenderSettings(from_address="bi@example.com"), **settings)


CLOUD_STARTER = {
    "deployment": nm.Deployment(hosting=nm.Hosting.CLOUD, plan=nm.Plan.STARTER),
    "managed": nm.ManagedService(
        smtp=nm.SmtpSettings(host="smtp.operator.example", security="ssl"),
        from_address="noreply@operator.example",
    ),
    "smtp": nm.SmtpSettings(host="smtp.customer.example", security="starttls"),
}
# For each gated field: a value other than its default, and what else its check needs.
GATED: dict[str, tuple[object, dict[str, Any]]] = {
    "recipients.approved_domains": (("partner.example",), {}),
    "recipients.suggestions": (nm.SuggestionMode.GROUP, {}),
    "use_custom_smtp": (True, CLOUD_STARTER),
}


def test_the_documented_gated_settings_are_the_ones_this_test_checks() -> None:
    documented = {
        PREFIXES[row.cls][0] + row.field: nm.Feature(row.feature)
        for row in ROWS
        if row.feature != NOTHING
    }
    assert set(documented) == set(GATED)


@pytest.mark.parametrize(
    "row", [row for row in ROWS if row.feature != NOTHING], ids=lambda row: row.field
)
def test_a_gated_setting_raises_its_documented_feature_without_it(row: Row) -> None:
    path = PREFIXES[row.cls][0] + row.field
    value, extra = GATED[path]
    with pytest.raises(nm.FeatureNotAvailable) as raised:
        _with(path, value, **extra)
    assert raised.value.feature is nm.Feature(row.feature)
