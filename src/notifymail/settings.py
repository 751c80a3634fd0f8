"""Immutable, validated email settings, and where they come from.

Every class is a frozen, slotted, keyword-only dataclass whose constructor checks its
input and raises [`ConfigError`][notifymail.ConfigError] naming the field at fault, so an
invalid configuration cannot exist. ``dataclasses.replace`` re-validates. Only
[`EmailSettings.from_env`][notifymail.settings.EmailSettings.from_env] reads the environment, and
it names the variable at fault.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import math
import os
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Final, TypeVar, final

from typing_extensions import Self

from notifymail._address import (
    address_key,
    has_control_character,
    normalize_address,
    normalize_domain,
)
from notifymail.errors import ConfigError, FeatureNotAvailable

__all__ = [
    "DeliverySettings",
    "Deployment",
    "EmailSettings",
    "Feature",
    "Hosting",
    "ManagedService",
    "Plan",
    "RecipientPolicy",
    "RetryPolicy",
    "Secret",
    "Security",
    "SenderSettings",
    "SmtpSettings",
    "SuggestionMode",
    "entitlements",
]


class _ParsedEnum(str, Enum):
    """A str enum whose lookup by value ignores case, surrounding space and ``_`` vs ``-``."""

    @classmethod
    def _missing_(cls, value: object) -> Self | None:
        if isinstance(value, str):
            key = value.strip().lower().replace("_", "-")
            for member in cls:
                if member.value == key:
                    return member
        return None

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def choices(cls) -> str:
        """The allowed values, comma-separated, for error messages."""
        return ", ".join(member.value for member in cls)


class Security(_ParsedEnum):
    """How the connection to the SMTP server is protected.

    ``NONE`` plain SMTP; ``SSL`` TLS from the first byte (port 465); ``STARTTLS`` an
    upgrade the server must offer; ``TLS`` an upgrade when offered (Metabase's meaning).
    """

    NONE = "none"
    SSL = "ssl"
    TLS = "tls"
    STARTTLS = "starttls"


class Hosting(_ParsedEnum):
    SELF_HOSTED = "self-hosted"
    CLOUD = "cloud"


class Plan(_ParsedEnum):
    OSS = "oss"
    STARTER = "starter"
    PRO = "pro"
    ENTERPRISE = "enterprise"


class SuggestionMode(_ParsedEnum):
    """Whom recipient pickers suggest: everyone, people sharing a group, or no one."""

    ALL = "all"
    GROUP = "group"
    NONE = "none"


class Feature(_ParsedEnum):
    CLOUD_CUSTOM_SMTP = "cloud-custom-smtp"
    EMAIL_ALLOW_LIST = "email-allow-list"
    EMAIL_RESTRICT_RECIPIENTS = "email-restrict-recipients"
    ADVANCED_PERMISSIONS = "advanced-permissions"


_DEFAULT_PORTS: Final = {
    Security.NONE: 25,
    Security.SSL: 465,
    Security.TLS: 587,
    Security.STARTTLS: 587,
}
_CLOUD_CUSTOM_PORTS: Final = (465, 587, 2525)
_CLOUD_CUSTOM_SECURITY: Final = (Security.SSL, Security.TLS, Security.STARTTLS)
_PAID_FEATURES: Final = frozenset(
    {Feature.EMAIL_ALLOW_LIST, Feature.EMAIL_RESTRICT_RECIPIENTS, Feature.ADVANCED_PERMISSIONS}
)
_FEATURE_PLANS: Final = {
    Feature.CLOUD_CUSTOM_SMTP: "Pro or Enterprise on Cloud",
    Feature.EMAIL_ALLOW_LIST: "Pro or Enterprise",
    Feature.EMAIL_RESTRICT_RECIPIENTS: "Pro or Enterprise",
    Feature.ADVANCED_PERMISSIONS: "Pro or Enterprise",
}


@final
class Secret:
    """A password that never shows itself: not in ``repr``, ``str``, ``format`` or logs.

    ``reveal()`` returns the value; ``masked()`` is what an admin form displays. Two
    secrets compare equal, in constant time, when their values do.
    """

    __slots__ = ("_value",)
    _STARS: Final = "**********"

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"Secret holds a str, not {type(value).__name__}")
        self._value = value

    def reveal(self) -> str:
        """The secret value itself, for the one place that must send it."""
        return self._value

    def masked(self) -> str:
        """``**********`` and the last two characters; only stars when shorter than six."""
        if len(self._value) < 6:
            return self._STARS
        return self._STARS + self._value[-2:]

    def __repr__(self) -> str:
        return f"Secret('{self._STARS}')"

    def __str__(self) -> str:
        return self._STARS

    def __format__(self, format_spec: str) -> str:
        return format(self._STARS, format_spec)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __len__(self) -> int:
        return len(self._value)


# --- field checks: each returns the clean value or raises ConfigError naming the field ---


_NO_CONTROL_CHARACTERS: Final = "must not contain a line break, NUL or control character"


def _invalid(field_name: str, problem: str) -> ConfigError:
    return ConfigError(f"{field_name}: {problem}", field=field_name)


def _text(field_name: str, value: object, *, empty_ok: bool = False) -> str:
    if not isinstance(value, str):
        raise _invalid(field_name, f"must be a str, not {type(value).__name__}")
    if has_control_character(value):
        raise _invalid(field_name, _NO_CONTROL_CHARACTERS)
    if not empty_ok and not value.strip():
        raise _invalid(field_name, "must not be empty")
    return value


def _optional_text(field_name: str, value: object) -> str | None:
    """Text, with ``None`` and the empty string both meaning "not set"."""
    if value is None or value == "":
        return None
    return _text(field_name, value)


def _address(field_name: str, value: object) -> str:
    address = _text(field_name, value)
    try:
        return normalize_address(address)
    except ValueError as error:
        raise _invalid(field_name, f"{address!r} is not a valid email address: {error}") from None


def _addresses(field_name: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        raise _invalid(field_name, "must be a tuple of addresses, not a str")
    if not isinstance(value, Iterable):
        raise _invalid(field_name, f"must be a tuple of addresses, not {type(value).__name__}")
    unique: dict[str, str] = {}
    for item in value:
        address = _address(field_name, item)
        unique.setdefault(address_key(address), address)
    return tuple(unique.values())


_E = TypeVar("_E", bound=_ParsedEnum)


def _enum(enum: type[_E], field_name: str, value: object) -> _E:
    try:
        return enum(value)
    except ValueError:
        raise _invalid(field_name, f"{value!r} is not one of {enum.choices()}") from None


def _integer(field_name: str, value: object, low: int, high: int | None, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _invalid(field_name, f"{value!r} is not {what}")
    if value < low or (high is not None and value > high):
        raise _invalid(field_name, f"{value!r} is not {what}")
    return value


def _port(field_name: str, value: object) -> int:
    return _integer(field_name, value, 1, 65535, "a port number (1-65535)")


def _count(field_name: str, value: object) -> int:
    return _integer(field_name, value, 0, None, "a count (0 or more)")


def _number(field_name: str, value: object, *, low: float, low_inclusive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _invalid(field_name, f"{value!r} is not a finite number")
    if value < low or (value == low and not low_inclusive):
        bound = f">= {low:g}" if low_inclusive else f"> {low:g}"
        raise _invalid(field_name, f"{value!r} is not a number {bound}")
    return float(value)


def _boolean(field_name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise _invalid(field_name, f"{value!r} is not True or False")
    return value


def _instance(field_name: str, value: object, kind: type[Any]) -> None:
    if not isinstance(value, kind):
        raise _invalid(field_name, f"must be a {kind.__name__}, not {type(value).__name__}")


def _set(instance: object, name: str, value: object) -> None:
    """Store a normalised value on a frozen dataclass during its own __post_init__."""
    object.__setattr__(instance, name, value)


# --- the settings ---


@dataclass(frozen=True, slots=True, kw_only=True)
class SmtpSettings:
    """An SMTP server and how to talk to it.

    ``port`` stays ``None`` when not given;
    [`effective_port`][notifymail.settings.SmtpSettings.effective_port] supplies the default
    for the security mode. ``password`` may be given as a ``str``; it is kept as a
    [`Secret`][notifymail.Secret]. ``timeout`` bounds every socket operation, in seconds.
    """

    host: str
    port: int | None = None
    security: Security = Security.NONE
    username: str | None = None
    password: Secret | None = None
    timeout: float = 10.0
    cafile: str | None = None

    if TYPE_CHECKING:

        def __init__(
            self,
            *,
            host: str,
            port: int | None = None,
            security: Security | str = Security.NONE,
            username: str | None = None,
            password: Secret | str | None = None,
            timeout: float = 10.0,
            cafile: str | None = None,
        ) -> None: ...

    def __post_init__(self) -> None:
        host = _text("host", self.host).strip()
        if any(character.isspace() for character in host) or "/" in host or "@" in host:
            raise _invalid("host", f"{host!r} is not a host name or IP address")
        _set(self, "host", host)
        if self.port is not None:
            _port("port", self.port)
        _set(self, "security", _enum(Security, "security", self.security))
        _set(self, "username", _optional_text("username", self.username))
        password = self.password
        if isinstance(password, str):
            password = Secret(password) if password else None
        if password is not None:
            _instance("password", password, Secret)
            if has_control_character(password.reveal()):
                raise _invalid("password", _NO_CONTROL_CHARACTERS)
        _set(self, "password", password)
        if (self.username is None) != (password is None):
            missing = "password" if password is None else "username"
            raise _invalid(missing, "username and password are set together or not at all")
        _set(self, "timeout", _number("timeout", self.timeout, low=0, low_inclusive=False))
        _set(self, "cafile", _optional_text("cafile", self.cafile))

    @property
    def effective_port(self) -> int:
        """``port``, or the usual port for the security mode (25, 465, 587, 587)."""
        return self.port if self.port is not None else _DEFAULT_PORTS[self.security]

    @property
    def has_credentials(self) -> bool:
        return self.username is not None

    @classmethod
    def gmail(cls, username: str, password: Secret | str) -> Self:
        """Gmail or Google Workspace: smtp.gmail.com, SSL on 465, an app password."""
        return cls(
            host="smtp.gmail.com",
            port=465,
            security=Security.SSL,
            username=username,
            password=password,
        )

    @classmethod
    def ses(cls, region: str, username: str, password: Secret | str) -> Self:
        """Amazon SES in ``region`` (for example ``eu-west-1``): STARTTLS on 587."""
        region = _text("region", region).strip().lower()
        if not region.replace("-", "").isalnum():
            raise _invalid("region", f"{region!r} is not an AWS region name")
        return cls(
            host=f"email-smtp.{region}.amazonaws.com",
            port=587,
            security=Security.STARTTLS,
            username=username,
            password=password,
        )

    @classmethod
    def mandrill(cls, username: str, api_key: Secret | str) -> Self:
        """Mandrill (Mailchimp Transactional): STARTTLS on 587, an API key as password."""
        return cls(
            host="smtp.mandrillapp.com",
            port=587,
            security=Security.STARTTLS,
            username=username,
            password=api_key,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SenderSettings:
    """Who the mail is from. ``from_name`` may hold any printable text, commas included."""

    from_address: str
    from_name: str | None = None
    reply_to: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _set(self, "from_address", _address("from_address", self.from_address))
        _set(self, "from_name", _optional_text("from_name", self.from_name))
        _set(self, "reply_to", _addresses("reply_to", self.reply_to))


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How retryable failures are retried: exponential backoff with jitter, capped.

    ``max_attempts`` counts every attempt, the first included, so 1 means no retry.
    """

    max_attempts: int = 6
    initial_interval: float = 0.5
    multiplier: float = 2.0
    jitter: float = 0.1
    max_interval: float = 30.0

    def __post_init__(self) -> None:
        _integer("max_attempts", self.max_attempts, 1, None, "a number of attempts (1 or more)")
        for name in ("initial_interval", "max_interval"):
            _set(self, name, _number(name, getattr(self, name), low=0, low_inclusive=False))
        _set(self, "multiplier", _number("multiplier", self.multiplier, low=1, low_inclusive=True))
        jitter = _number("jitter", self.jitter, low=0, low_inclusive=True)
        if jitter > 1:
            raise _invalid("jitter", f"{self.jitter!r} is not a fraction between 0 and 1")
        _set(self, "jitter", jitter)

    def delay(self, retry: int, *, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number ``retry`` (1 is the first retry).

        ``initial_interval * multiplier ** (retry - 1)``, spread by ``± jitter`` and
        never more than ``max_interval``.
        """
        if retry < 1:
            raise ValueError("retry numbers start at 1")
        base = self.initial_interval
        for _ in range(retry - 1):  # grows until the cap, so no power can overflow
            if base >= self.max_interval:
                break
            base *= self.multiplier
        base = min(base, self.max_interval)
        spread = 1 + self.jitter * (2 * rand() - 1)
        return min(base * spread, self.max_interval)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliverySettings:
    """How notifications are addressed and paced.

    ``max_recipients_per_message`` of 0 puts every account holder in one message.
    ``max_recipients_per_second`` of ``None`` (or 0, stored as ``None``) means no
    throttle.
    """

    bcc_enabled: bool = True
    max_recipients_per_message: int = 50
    max_recipients_per_second: int | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        _boolean("bcc_enabled", self.bcc_enabled)
        _count("max_recipients_per_message", self.max_recipients_per_message)
        if self.max_recipients_per_second is not None:
            per_second = _count("max_recipients_per_second", self.max_recipients_per_second)
            _set(self, "max_recipients_per_second", per_second or None)
        _instance("retry", self.retry, RetryPolicy)


@dataclass(frozen=True, slots=True, kw_only=True)
class RecipientPolicy:
    """Which outside domains subscriptions may reach, and whom pickers suggest.

    ``approved_domains`` empty means every domain. A comma-separated ``str`` is accepted.
    Domains are stored lower-cased in their Unicode form, duplicates dropped.
    """

    approved_domains: tuple[str, ...] = ()
    suggestions: SuggestionMode = SuggestionMode.ALL

    if TYPE_CHECKING:

        def __init__(
            self,
            *,
            approved_domains: Iterable[str] | str = (),
            suggestions: SuggestionMode | str = SuggestionMode.ALL,
        ) -> None: ...

    def __post_init__(self) -> None:
        domains: Iterable[object] = self.approved_domains
        if isinstance(domains, str):
            domains = domains.split(",")
        elif not isinstance(domains, Iterable):
            raise _invalid("approved_domains", "must be a tuple of domains or a str")
        normalised: dict[str, None] = {}
        for domain in domains:
            text = _text("approved_domains", domain, empty_ok=True)
            if not text.strip():
                continue
            try:
                normalised[normalize_domain(text)] = None
            except ValueError as error:
                raise _invalid("approved_domains", str(error)) from None
        _set(self, "approved_domains", tuple(normalised))
        _set(self, "suggestions", _enum(SuggestionMode, "suggestions", self.suggestions))


@dataclass(frozen=True, slots=True, kw_only=True)
class Deployment:
    """Where the host runs and on which plan; together they decide the features."""

    hosting: Hosting = Hosting.SELF_HOSTED
    plan: Plan = Plan.OSS

    if TYPE_CHECKING:

        def __init__(
            self, *, hosting: Hosting | str = Hosting.SELF_HOSTED, plan: Plan | str = Plan.OSS
        ) -> None: ...

    def __post_init__(self) -> None:
        _set(self, "hosting", _enum(Hosting, "hosting", self.hosting))
        _set(self, "plan", _enum(Plan, "plan", self.plan))
        if self.plan is Plan.OSS and self.hosting is Hosting.CLOUD:
            raise _invalid(
                "plan", "oss is self-hosted only; Cloud plans are starter, pro, enterprise"
            )
        if self.plan is Plan.STARTER and self.hosting is Hosting.SELF_HOSTED:
            raise _invalid(
                "plan", "starter is Cloud only; self-hosted plans are oss, pro, enterprise"
            )

    @property
    def is_cloud(self) -> bool:
        return self.hosting is Hosting.CLOUD


def entitlements(deployment: Deployment) -> frozenset[Feature]:
    """The features a deployment's plan includes.

    Pro and Enterprise have the allow list, restricted suggestions and advanced
    permissions everywhere, and a custom SMTP server on Cloud; OSS and Starter none.
    """
    if deployment.plan not in (Plan.PRO, Plan.ENTERPRISE):
        return frozenset()
    if deployment.is_cloud:
        return _PAID_FEATURES | {Feature.CLOUD_CUSTOM_SMTP}
    return _PAID_FEATURES


def _require_feature(deployment: Deployment, feature: Feature, field_name: str) -> None:
    if feature not in entitlements(deployment):
        setting = field_name.rpartition(".")[2]
        raise FeatureNotAvailable(
            f"{setting} needs the {feature.value} feature ({_FEATURE_PLANS[feature]}); "
            f"this deployment is {deployment.plan.value}, {deployment.hosting.value}",
            feature=feature,
            field=field_name,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ManagedService:
    """The Cloud operator's SMTP service and the from address it forces."""

    smtp: SmtpSettings
    from_address: str

    def __post_init__(self) -> None:
        _instance("smtp", self.smtp, SmtpSettings)
        _set(self, "from_address", _address("from_address", self.from_address))


@dataclass(frozen=True, slots=True, kw_only=True)
class EmailSettings:
    """Everything notifymail needs to know, checked as a whole.

    Self-hosted, ``smtp`` is the server. On Cloud, ``managed`` is the operator's service
    and ``smtp`` the customer's own server, used when ``use_custom_smtp`` is on.
    """

    sender: SenderSettings
    deployment: Deployment = field(default_factory=Deployment)
    smtp: SmtpSettings | None = None
    managed: ManagedService | None = None
    use_custom_smtp: bool = False
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    recipients: RecipientPolicy = field(default_factory=RecipientPolicy)

    def __post_init__(self) -> None:
        _instance("sender", self.sender, SenderSettings)
        _instance("deployment", self.deployment, Deployment)
        if self.smtp is not None:
            _instance("smtp", self.smtp, SmtpSettings)
        if self.managed is not None:
            _instance("managed", self.managed, ManagedService)
        _boolean("use_custom_smtp", self.use_custom_smtp)
        _instance("delivery", self.delivery, DeliverySettings)
        _instance("recipients", self.recipients, RecipientPolicy)

        deployment = self.deployment
        if deployment.is_cloud:
            if self.managed is None:
                raise _invalid("managed", "Cloud needs the managed SMTP service")
            if self.smtp is not None:
                _check_cloud_custom_server(self.smtp)
        elif self.managed is not None:
            raise _invalid("managed", "the managed SMTP service exists on Cloud only")

        if self.recipients.approved_domains:
            _require_feature(deployment, Feature.EMAIL_ALLOW_LIST, "recipients.approved_domains")
        if self.recipients.suggestions is not SuggestionMode.ALL:
            _require_feature(
                deployment, Feature.EMAIL_RESTRICT_RECIPIENTS, "recipients.suggestions"
            )
        if self.use_custom_smtp:
            _require_feature(deployment, Feature.CLOUD_CUSTOM_SMTP, "use_custom_smtp")
            if self.smtp is None:
                raise _invalid("use_custom_smtp", "needs the custom server in smtp")

    @property
    def active_smtp(self) -> SmtpSettings | None:
        """The server mail goes through: self-hosted ``smtp``; on Cloud the managed
        service's, or ``smtp`` when ``use_custom_smtp`` is on."""
        if self.managed is None or self.use_custom_smtp:
            return self.smtp
        return self.managed.smtp

    @property
    def active_sender(self) -> SenderSettings:
        """The sender mail goes out as: the managed service forces its from address
        (from name and reply-to stay the customer's); a custom server sends as set."""
        if self.managed is None or self.use_custom_smtp:
            return self.sender
        return dataclasses.replace(self.sender, from_address=self.managed.from_address)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        deployment: Deployment | None = None,
    ) -> EmailSettings:
        """Read the Metabase-compatible ``MB_*`` variables (``os.environ`` by default).

        An empty variable counts as unset. ``deployment``, when given, wins over
        ``MB_EMAIL_HOSTING`` and ``MB_EMAIL_PLAN``. A bad value raises
        [`ConfigError`][notifymail.ConfigError] with ``env_var`` naming the variable.
        """
        return _EnvReader(os.environ if environ is None else environ).settings(deployment)


def _check_cloud_custom_server(smtp: SmtpSettings) -> None:
    if smtp.security not in _CLOUD_CUSTOM_SECURITY:
        raise _invalid(
            "smtp.security",
            f"{smtp.security.value} is not allowed for a custom server on Cloud "
            "(ssl, tls, starttls)",
        )
    if smtp.effective_port not in _CLOUD_CUSTOM_PORTS:
        raise _invalid(
            "smtp.port",
            f"{smtp.effective_port} is not allowed for a custom server on Cloud (465, 587, 2525)",
        )


# --- environment variables ---

_TRUE: Final = frozenset({"true", "yes", "1", "on"})
_FALSE: Final = frozenset({"false", "no", "0", "off"})
SMTP_FIELDS: Final = ("host", "port", "security", "username", "password")


def _smtp_variables(prefix: str, suffix: str = "") -> dict[str, str]:
    return {name: f"{prefix}_{name.upper()}{suffix}" for name in SMTP_FIELDS}


_PLAIN_SMTP: Final = _smtp_variables("MB_EMAIL_SMTP")
_OVERRIDE_SMTP: Final = _smtp_variables("MB_EMAIL_SMTP", "_OVERRIDE")
_MANAGED_SMTP: Final = _smtp_variables("MB_EMAIL_MANAGED_SMTP")

# Every variable and the settings field it sets, so errors name both.
ENV_VARIABLES: Final[Mapping[str, str]] = {
    **{variable: f"smtp.{name}" for name, variable in _PLAIN_SMTP.items()},
    **{variable: f"smtp.{name}" for name, variable in _OVERRIDE_SMTP.items()},
    "MB_SMTP_OVERRIDE_ENABLED": "use_custom_smtp",
    "MB_EMAIL_FROM_ADDRESS": "sender.from_address",
    "MB_EMAIL_FROM_NAME": "sender.from_name",
    "MB_EMAIL_REPLY_TO": "sender.reply_to",
    "MB_BCC_ENABLED": "delivery.bcc_enabled",
    "MB_EMAIL_MAX_RECIPIENTS_PER_MESSAGE": "delivery.max_recipients_per_message",
    "MB_EMAIL_MAX_RECIPIENTS_PER_SECOND": "delivery.max_recipients_per_second",
    "MB_SUBSCRIPTION_ALLOWED_DOMAINS": "recipients.approved_domains",
    "MB_USER_VISIBILITY": "recipients.suggestions",
    "MB_EMAIL_HOSTING": "deployment.hosting",
    "MB_EMAIL_PLAN": "deployment.plan",
    **{variable: f"managed.smtp.{name}" for name, variable in _MANAGED_SMTP.items()},
    "MB_EMAIL_MANAGED_FROM_ADDRESS": "managed.from_address",
}


@contextmanager
def relabel_errors(labels: Mapping[str, str], *, env: bool = False) -> Iterator[None]:
    """Re-label a ConfigError for a field in ``labels`` as one for what the user set.

    ``labels`` maps the field a constructor names (``"port"``, ``"smtp.port"``) to the
    name the user knows: a Metabase setting name, or with ``env`` an environment
    variable, which then also becomes the error's ``env_var``.
    """
    try:
        yield
    except ConfigError as error:
        field_name = error.field or ""
        label = labels.get(field_name)
        if label is None or error.env_var is not None:
            raise
        message = str(error)
        for prefix in (field_name, field_name.rpartition(".")[2]):
            if prefix and message.startswith(prefix):
                message = label + message[len(prefix) :]
                break
        else:
            message = f"{label}: {message}"
        error.args = (message,)
        if env:
            error.field = ENV_VARIABLES[label]
            error.env_var = label
        else:
            error.field = label
        raise


def _blame_variables(variables: Mapping[str, str]) -> AbstractContextManager[None]:
    return relabel_errors(variables, env=True)


class _EnvReader:
    """Parses one environment snapshot; every error names its variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = {
            name: value
            for name, value in environ.items()
            if name.startswith("MB_") and value.strip()
        }

    def _get(self, name: str) -> str | None:
        value = self._environ.get(name)
        return None if value is None else value.strip()

    def _fail(self, name: str, problem: str) -> ConfigError:
        return ConfigError(f"{name}: {problem}", field=ENV_VARIABLES[name], env_var=name)

    def _int(self, name: str, what: str) -> int | None:
        value = self._get(name)
        if value is None:
            return None
        if not (value.isascii() and value.isdigit()):
            raise self._fail(name, f"{value!r} is not {what}")
        return int(value)

    def _bool(self, name: str) -> bool | None:
        value = self._get(name)
        if value is None:
            return None
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise self._fail(name, f"{value!r} is not a boolean (true/false/yes/no/1/0)")

    def _enum(self, enum: type[_E], name: str, what: str) -> _E | None:
        value = self._get(name)
        if value is None:
            return None
        try:
            return enum(value)
        except ValueError:
            raise self._fail(name, f"{value!r} is not {what} ({enum.choices()})") from None

    def _list(self, name: str) -> list[str] | None:
        value = self._get(name)
        if value is None:
            return None
        if value.startswith("["):
            try:
                items = json.loads(value)
            except ValueError as error:
                raise self._fail(name, f"is not a JSON list of addresses ({error})") from None
            if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
                raise self._fail(name, "is not a JSON list of addresses")
            return items
        return [item.strip() for item in value.split(",") if item.strip()]

    def _smtp(self, variables: Mapping[str, str]) -> SmtpSettings | None:
        host = self._get(variables["host"])
        if host is None:
            return None
        with _blame_variables(variables):
            return SmtpSettings(
                host=host,
                port=self._int(variables["port"], "a port number (1-65535)"),
                security=self._enum(Security, variables["security"], "a security mode")
                or Security.NONE,
                username=self._get(variables["username"]),
                password=self._get(variables["password"]),
            )

    def _refuse_any(self, variables: Mapping[str, str], why: str) -> None:
        for name in variables.values():
            if name in self._environ:
                raise self._fail(name, why)

    def _deployment(self) -> Deployment:
        variables = {"hosting": "MB_EMAIL_HOSTING", "plan": "MB_EMAIL_PLAN"}
        with _blame_variables(variables):
            return Deployment(
                hosting=self._enum(Hosting, "MB_EMAIL_HOSTING", "a hosting")
                or Hosting.SELF_HOSTED,
                plan=self._enum(Plan, "MB_EMAIL_PLAN", "a plan") or Plan.OSS,
            )

    def _managed(self) -> ManagedService | None:
        smtp = self._smtp(_MANAGED_SMTP)
        from_address = self._get("MB_EMAIL_MANAGED_FROM_ADDRESS")
        if smtp is None:
            if from_address is not None:
                raise self._fail(
                    _MANAGED_SMTP["host"], "is not set, but MB_EMAIL_MANAGED_FROM_ADDRESS is"
                )
            return None
        if from_address is None:
            raise self._fail(
                "MB_EMAIL_MANAGED_FROM_ADDRESS", "is not set; the managed service needs it"
            )
        with _blame_variables({"from_address": "MB_EMAIL_MANAGED_FROM_ADDRESS"}):
            return ManagedService(smtp=smtp, from_address=from_address)

    def _sender(self) -> SenderSettings:
        from_address = self._get("MB_EMAIL_FROM_ADDRESS")
        if from_address is None:
            raise self._fail(
                "MB_EMAIL_FROM_ADDRESS", "is not set; the sender's address is required"
            )
        with _blame_variables(
            {
                "from_address": "MB_EMAIL_FROM_ADDRESS",
                "from_name": "MB_EMAIL_FROM_NAME",
                "reply_to": "MB_EMAIL_REPLY_TO",
            }
        ):
            return SenderSettings(
                from_address=from_address,
                from_name=self._get("MB_EMAIL_FROM_NAME"),
                reply_to=tuple(self._list("MB_EMAIL_REPLY_TO") or ()),
            )

    def _delivery(self) -> DeliverySettings:
        with _blame_variables(
            {
                "max_recipients_per_message": "MB_EMAIL_MAX_RECIPIENTS_PER_MESSAGE",
                "max_recipients_per_second": "MB_EMAIL_MAX_RECIPIENTS_PER_SECOND",
            }
        ):
            per_message = self._int("MB_EMAIL_MAX_RECIPIENTS_PER_MESSAGE", "a count (0 or more)")
            bcc = self._bool("MB_BCC_ENABLED")
            return DeliverySettings(
                bcc_enabled=True if bcc is None else bcc,
                max_recipients_per_message=50 if per_message is None else per_message,
                max_recipients_per_second=self._int(
                    "MB_EMAIL_MAX_RECIPIENTS_PER_SECOND", "a count (0 or more)"
                ),
            )

    def _recipients(self) -> RecipientPolicy:
        with _blame_variables({"approved_domains": "MB_SUBSCRIPTION_ALLOWED_DOMAINS"}):
            return RecipientPolicy(
                approved_domains=self._get("MB_SUBSCRIPTION_ALLOWED_DOMAINS") or (),
                suggestions=self._enum(SuggestionMode, "MB_USER_VISIBILITY", "a user visibility")
                or SuggestionMode.ALL,
            )

    def settings(self, deployment: Deployment | None) -> EmailSettings:
        deployment = deployment or self._deployment()
        if deployment.is_cloud:
            self._refuse_any(
                _PLAIN_SMTP,
                "is for self-hosted deployments; on Cloud the customer's server is set "
                "with the _OVERRIDE variables",
            )
            smtp_variables = _OVERRIDE_SMTP
            use_custom_smtp = bool(self._bool("MB_SMTP_OVERRIDE_ENABLED"))
        else:
            self._refuse_any(
                {**_OVERRIDE_SMTP, "enabled": "MB_SMTP_OVERRIDE_ENABLED"},
                "is for Cloud deployments; self-hosted, use the MB_EMAIL_SMTP_* variables",
            )
            smtp_variables = _PLAIN_SMTP
            use_custom_smtp = False
        smtp = self._smtp(smtp_variables)
        blame = {f"smtp.{name}": variable for name, variable in smtp_variables.items()}
        blame.update(
            {
                "use_custom_smtp": "MB_SMTP_OVERRIDE_ENABLED",
                "managed": _MANAGED_SMTP["host"],
                "recipients.approved_domains": "MB_SUBSCRIPTION_ALLOWED_DOMAINS",
                "recipients.suggestions": "MB_USER_VISIBILITY",
            }
        )
        with _blame_variables(blame):
            return EmailSettings(
                deployment=deployment,
                sender=self._sender(),
                smtp=smtp,
                managed=self._managed(),
                use_custom_smtp=use_custom_smtp,
                delivery=self._delivery(),
                recipients=self._recipients(),
            )
