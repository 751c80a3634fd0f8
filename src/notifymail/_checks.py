"""Field checks for the settings, each told up front what the user calls the value.

A check gets a `Label`: the field's name when a host builds settings in code,
the environment variable when they come from ``from_env``, the Metabase setting name
when they come from the admin form. The error is written once, naming what the user
set; nothing rewrites it afterwards.

`Validated` is the one way a frozen settings class stores its checked values.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar

from notifymail._address import address_key, has_control_character, normalize_address
from notifymail._enums import _ParsedEnum
from notifymail.errors import ConfigError
from notifymail.secret import Secret

__all__ = [
    "NO_CONTROL_CHARACTERS",
    "Label",
    "Labeller",
    "Validated",
    "address",
    "addresses",
    "boolean",
    "enum",
    "field_label",
    "instance",
    "integer",
    "number",
    "optional_text",
    "shown",
    "text",
]

NO_CONTROL_CHARACTERS: Final = "must not contain a line break, NUL or control character"
_SHOWN_LENGTH: Final = 60
_SHOWN_DIGITS: Final = 30
_LARGEST: Final = 2**63 - 1  # no count or interval in mail needs more; repr stays cheap


@dataclass(frozen=True, slots=True)
class Label:
    """What an error calls a value: ``name`` starts its message, ``field`` and
    ``env_var`` become the [`ConfigError`][notifymail.ConfigError]'s attributes."""

    name: str
    field: str
    env_var: str | None = None

    def error(self, problem: str) -> ConfigError:
        return ConfigError(f"{self.name}: {problem}", field=self.field, env_var=self.env_var)


# The label of a field path relative to the object being checked ("port", "smtp.port").
Labeller = Callable[[str], Label]


def field_label(path: str) -> Label:
    """The label of a field set in code: its own name, and its path as ``field``."""
    return Label(path.rpartition(".")[2], path)


def shown(value: object) -> str:
    """``repr(value)`` cut to one short line, for an error message.

    A 5,000-digit int is described, not printed: its ``repr`` would raise ValueError.
    """
    if isinstance(value, int) and abs(value) >= 10**_SHOWN_DIGITS:
        return f"a number of more than {_SHOWN_DIGITS} digits"
    text = repr(value)
    return text if len(text) <= _SHOWN_LENGTH else text[: _SHOWN_LENGTH - 3] + "..."


def text(label: Label, value: object, *, empty_ok: bool = False) -> str:
    if not isinstance(value, str):
        raise label.error(f"must be a str, not {type(value).__name__}")
    if has_control_character(value):
        raise label.error(NO_CONTROL_CHARACTERS)
    if not empty_ok and not value.strip():
        raise label.error("must not be empty")
    return value


def optional_text(label: Label, value: object) -> str | None:
    """Text, with ``None`` and the empty string both meaning "not set"."""
    if value is None or value == "":
        return None
    return text(label, value)


def address(label: Label, value: object) -> str:
    checked = text(label, value)
    try:
        return normalize_address(checked)
    except ValueError as error:
        raise label.error(f"{shown(checked)} is not a valid email address: {error}") from None


def addresses(label: Label, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        raise label.error("must be a tuple of addresses, not a str")
    if not isinstance(value, Iterable):
        raise label.error(f"must be a tuple of addresses, not {type(value).__name__}")
    unique: dict[str, str] = {}
    for item in value:
        checked = address(label, item)
        unique.setdefault(address_key(checked), checked)
    return tuple(unique.values())


_E = TypeVar("_E", bound=_ParsedEnum)


def enum(label: Label, kind: type[_E], what: str, value: object) -> _E:
    try:
        return kind(value)
    except ValueError:
        raise label.error(f"{shown(value)} is not {what} ({kind.choices()})") from None


def integer(label: Label, value: object, low: int, high: int | None, what: str) -> int:
    """An int from ``low`` to ``high`` (no more than 2**63 - 1 when ``high`` is None)."""
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < low
        or (high is not None and value > high)
    ):
        raise label.error(f"{shown(value)} is not {what}")
    if value > _LARGEST:
        raise label.error(f"{shown(value)} is too large")
    return value


def number(label: Label, value: object, *, low: float, low_inclusive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise label.error(f"{shown(value)} is not a number")
    if isinstance(value, int) and abs(value) > _LARGEST:
        raise label.error(f"{shown(value)} is too large")  # float() of it would overflow
    if not math.isfinite(value):
        raise label.error(f"{shown(value)} is not a finite number")
    if value < low or (value == low and not low_inclusive):
        bound = f">= {low:g}" if low_inclusive else f"> {low:g}"
        raise label.error(f"{shown(value)} is not a number {bound}")
    return float(value)


def boolean(label: Label, value: object) -> bool:
    if not isinstance(value, bool):
        raise label.error(f"{shown(value)} is not True or False")
    return value


def instance(label: Label, value: object, kind: type[Any]) -> None:
    if not isinstance(value, kind):
        raise label.error(f"must be a {kind.__name__}, not {type(value).__name__}")


_KINDS: dict[type[Any], dict[str, tuple[object, ...]]] = {}


def _kinds(cls: type[Any]) -> dict[str, tuple[object, ...]]:
    """What each field of dataclass ``cls`` holds: its type and, for a union, each member.
    Resolved once per class."""
    kinds = _KINDS.get(cls)
    if kinds is None:
        hints = typing.get_type_hints(cls)
        kinds = _KINDS[cls] = {
            item.name: (hints[item.name], *typing.get_args(hints[item.name]))
            for item in dataclasses.fields(cls)
        }
    return kinds


_SECRETS: dict[type[Any], tuple[str, ...]] = {}


def secret_fields(cls: type[Any]) -> tuple[str, ...]:
    """The fields of dataclass ``cls`` that hold a [`Secret`][notifymail.Secret]."""
    secrets = _SECRETS.get(cls)
    if secrets is None:
        secrets = _SECRETS[cls] = tuple(
            name for name, kinds in _kinds(cls).items() if Secret in kinds
        )
    return secrets


def as_secrets(cls: type[Any], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with every password given as a ``str`` wrapped in a [`Secret`][notifymail.Secret]
    (the empty string meaning none), before anything else is checked: from then on no
    frame local and no half-built object shows it."""
    for name in secret_fields(cls):
        value = values[name]
        if isinstance(value, str):
            values[name] = Secret(value) if value else None
    return values


class Validated:
    """Base of the frozen settings dataclasses: checks its values, stores the clean ones.

    A subclass implements `_checked`; ``__post_init__`` runs it with field labels,
    and the environment and admin-form readers run it with theirs before building.
    """

    __slots__ = ()

    if TYPE_CHECKING:
        __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    @classmethod
    def _checked(cls, values: dict[str, Any], label: Labeller) -> dict[str, Any]:
        """The clean value of every field, from ``values`` (every field given)."""
        raise NotImplementedError

    def __post_init__(self) -> None:
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        self._store(values, as_secrets(type(self), dict(values)))
        self._store(values, self._checked(values, field_label))

    def _store(self, values: dict[str, Any], checked: dict[str, Any]) -> None:
        """Set each field whose checked value is not the one in ``values``, and note it."""
        for name, value in checked.items():
            if value is not values[name]:
                object.__setattr__(self, name, value)
                values[name] = value


# --- building a tree of settings from values keyed by field path ---

_V = TypeVar("_V", bound=Validated)


def part_types(cls: type[Any]) -> dict[str, type[Validated]]:
    """The fields of dataclass ``cls`` that hold settings of their own, and their class."""
    return {
        name: kind
        for name, kinds in _kinds(cls).items()
        for kind in kinds
        if isinstance(kind, type) and issubclass(kind, Validated)
    }


def default_of(item: dataclasses.Field[Any]) -> object:
    """The field's default (a fresh one from its factory), or ``dataclasses.MISSING``."""
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return item.default


def build(
    cls: type[_V],
    values: Mapping[str, object],
    label: Labeller,
    base: str = "",
    *,
    within: tuple[str, ...] | None = None,
) -> _V:
    """A ``cls`` from ``values`` keyed by field path (``"smtp.port"``), checked with
    ``label``'s names: every error names what the user set.

    A part is built when a value inside it is set or when it is required; an optional
    part (``smtp``) set only in part names its missing field and what was set
    (``within``, the paths set inside the outermost optional part). A path may also
    hold a whole part.
    """
    given: dict[str, Any] = {}
    parts = part_types(cls)
    for item in dataclasses.fields(cls):
        path = base + item.name
        default = default_of(item)
        inside = [key for key in values if key.startswith(f"{path}.")]
        if path in values:
            given[item.name] = values[path]
        elif item.name in parts and (inside or default is dataclasses.MISSING):
            nested = within
            if within is None and default is None:  # optional: named by what is set inside
                nested = tuple(inside)
            given[item.name] = build(parts[item.name], values, label, f"{path}.", within=nested)
        elif default is dataclasses.MISSING:
            if within is None:
                raise label(path).error("is not set; it is required")
            *others, last = [label(key).name for key in within]
            names = f"{', '.join(others)} and {last} are" if others else f"{last} is"
            raise label(path).error(f"is not set, but {names}")
        else:
            given[item.name] = default
    checked = cls._checked(as_secrets(cls, given), lambda name: label(base + name))
    make: Callable[..., _V] = cls
    return make(**{**given, **checked})


def flatten(settings: Validated, base: str = "") -> dict[str, object]:
    """The inverse of `build`: every field that is set, by path."""
    values: dict[str, object] = {}
    parts = part_types(type(settings))
    for item in dataclasses.fields(settings):
        value = getattr(settings, item.name)
        if item.name in parts and isinstance(value, Validated):
            values.update(flatten(value, f"{base}{item.name}."))
        elif value is not None:
            values[base + item.name] = value
    return values


def default_at(cls: type[Any], path: str) -> object:
    """The default of the field at ``path`` inside dataclass ``cls``."""
    name, _, rest = path.partition(".")
    if rest:
        return default_at(part_types(cls)[name], rest)
    return default_of(next(item for item in dataclasses.fields(cls) if item.name == name))
