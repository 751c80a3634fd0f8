"""Immutable, validated email settings.

Every class is a frozen, slotted, keyword-only dataclass whose constructor checks its
input and raises [`ConfigError`][notifymail.ConfigError] naming the field at fault, so an
invalid configuration cannot exist. ``dataclasses.replace`` re-validates. Only
[`EmailSettings.from_env`][notifymail.settings.EmailSettings.from_env] reads the
environment (through ``notifymail.env``), and its errors name the variable at fault;
``apply_changes`` (``notifymail.editing``) builds them from the admin form, naming the
setting.

The string under each field documents it; the configuration reference in
docs/configuration.md is generated from these and from the settings table
(``notifymail._table``).
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from typing_extensions import Self

import notifymail._checks as check
from notifymail._address import has_control_character, normalize_domain
from notifymail._checks import Labeller, Validated, build, default_at, field_label
from notifymail._enums import Feature, Hosting, Plan, Security, SuggestionMode
from notifymail._table import gates
from notifymail.env import read_values, snapshot
from notifymail.plans import Deployment, entitlements, require_feature
from notifymail.secret import Secret

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
# Deployment, entitlements, Secret and the enums live in plans, secret and _enums; they
# are re-exported here, the settings' vocabulary, for the modules that import them so.

_DEFAULT_PORTS: Final = {
    Security.NONE: 25,
    Security.SSL: 465,
    Security.TLS: 587,
    Security.STARTTLS: 587,
}
_CLOUD_CUSTOM_PORTS: Final = (465, 587, 2525)
_CLOUD_CUSTOM_SECURITY: Final = (Security.SSL, Security.TLS, Security.STARTTLS)
_MAX_CONNECTIONS: Final = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class SmtpSettings(Validated):
    """An SMTP server and how to talk to it.

    ``port`` stays ``None`` when not given;
    [`effective_port`][notifymail.settings.SmtpSettings.effective_port] supplies the default
    for the security mode. ``password`` may be given as a ``str``; it is kept as a
    [`Secret`][notifymail.Secret]. ``timeout`` bounds every socket operation, in seconds.
    """

    host: str
    """a host name or IP address; no host in the environment means no server"""
    port: int | None = None
    """1-65535; `effective_port` gives the default for the security: none 25, ssl 465,
    tls 587, starttls 587"""
    security: Security = Security.NONE
    """none, ssl, tls, starttls (case-insensitive); see [Security modes](security-modes.md)"""
    username: str | None = None
    """needed with `password`; alone, the transport logs in with an OAuth2 token (XOAUTH2)"""
    password: Secret | None = None
    """a `str` is wrapped in a `Secret`"""
    timeout: float = 10.0
    """seconds, for every socket operation; > 0"""
    cafile: str | None = None
    """a PEM bundle that replaces the system trust store (unset: `SSL_CERT_FILE` works too)"""
    max_connections: int = 1
    """how many connections the transport may hold open to this server at once; 1-64"""

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
            max_connections: int = 1,
        ) -> None: ...

    @classmethod
    def _checked(cls, values: dict[str, Any], label: Labeller) -> dict[str, Any]:
        password = values["password"]
        if password is not None:
            check.instance(label("password"), password, Secret)
            if has_control_character(password.reveal()):
                raise label("password").error(check.NO_CONTROL_CHARACTERS)
        host = check.text(label("host"), values["host"]).strip()
        if any(character.isspace() for character in host) or "/" in host or "@" in host:
            raise label("host").error(f"{check.shown(host)} is not a host name or IP address")
        port = values["port"]
        if port is not None:
            check.integer(label("port"), port, 1, 65535, "a port number (1-65535)")
        username = check.optional_text(label("username"), values["username"])
        if username is None and password is not None:
            raise label("username").error("a password needs a username")
        return {
            "host": host,
            "port": port,
            "security": check.enum(
                label("security"), Security, "a security mode", values["security"]
            ),
            "username": username,
            "password": password,
            "timeout": check.number(
                label("timeout"), values["timeout"], low=0, low_inclusive=False
            ),
            "cafile": check.optional_text(label("cafile"), values["cafile"]),
            "max_connections": check.integer(
                label("max_connections"),
                values["max_connections"],
                1,
                _MAX_CONNECTIONS,
                f"a number of connections (1-{_MAX_CONNECTIONS})",
            ),
        }

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
        return cls._preset(
            "smtp.gmail.com",
            465,
            Security.SSL,
            username=username,
            password=password,
            field="password",
        )

    @classmethod
    def ses(cls, region: str, username: str, password: Secret | str) -> Self:
        """Amazon SES in ``region`` (for example ``eu-west-1``): STARTTLS on 587."""
        label = field_label("region")
        region = check.text(label, region).strip().lower()
        if not region.replace("-", "").isalnum():
            raise label.error(f"{check.shown(region)} is not an AWS region name")
        host = f"email-smtp.{region}.amazonaws.com"
        return cls._preset(
            host, 587, Security.STARTTLS, username=username, password=password, field="password"
        )

    @classmethod
    def mandrill(cls, username: str, api_key: Secret | str) -> Self:
        """Mandrill (Mailchimp Transactional): STARTTLS on 587, an API key as password."""
        return cls._preset(
            "smtp.mandrillapp.com",
            587,
            Security.STARTTLS,
            username=username,
            password=api_key,
            field="api_key",
        )

    @classmethod
    def _preset(
        cls,
        host: str,
        port: int,
        security: Security,
        *,
        username: str,
        password: Secret | str,
        field: str,
    ) -> Self:
        """A provider's server; these providers need a password (or key) with the username."""
        if not password:
            raise field_label(field).error("is required for this provider")
        return cls(host=host, port=port, security=security, username=username, password=password)


@dataclass(frozen=True, slots=True, kw_only=True)
class SenderSettings(Validated):
    """Who the mail is from. ``from_name`` may hold any printable text, commas included."""

    from_address: str
    """validated by email-validator, no DNS"""
    from_name: str | None = None
    """any printable text; quoted or RFC 2047 encoded on output"""
    reply_to: tuple[str, ...] = ()
    """a JSON list or comma-separated in the environment; a bare `str` in code is refused"""

    @classmethod
    def _checked(cls, values: dict[str, Any], label: Labeller) -> dict[str, Any]:
        return {
            "from_address": check.address(label("from_address"), values["from_address"]),
            "from_name": check.optional_text(label("from_name"), values["from_name"]),
            "reply_to": check.addresses(label("reply_to"), values["reply_to"]),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy(Validated):
    """How retryable failures are retried: exponential backoff with jitter, capped.

    ``max_attempts`` counts every attempt, the first included, so 1 means no retry.
    """

    max_attempts: int = 6
    """attempts in all, the first included; >= 1"""
    initial_interval: float = 0.5
    """seconds; > 0"""
    multiplier: float = 2.0
    """>= 1"""
    jitter: float = 0.1
    """fraction, 0-1"""
    max_interval: float = 30.0
    """seconds; > 0; caps every delay, jitter included"""

    @classmethod
    def _checked(cls, values: dict[str, Any], label: Labeller) -> dict[str, Any]:
        jitter = check.number(label("jitter"), values["jitter"], low=0, low_inclusive=True)
        if jitter > 1:
            raise label("jitter").error(f"{check.shown(jitter)} is not a fraction between 0 and 1")
        return {
            "max_attempts": check.integer(
                label("max_attempts"),
                values["max_attempts"],
                1,
                None,
                "a number of attempts (1 or more)",
            ),
            **{
                name: check.number(label(name), values[name], low=0, low_inclusive=False)
                for name in ("initial_interval", "max_interval")
            },
            "multiplier": check.number(
                label("multiplier"), values["multiplier"], low=1, low_inclusive=True
            ),
            "jitter": jitter,
        }

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
class DeliverySettings(Validated):
    """How notifications are addressed and paced.

    ``max_recipients_per_message`` of 0 puts every account holder in one message.
    ``max_recipients_per_second`` of ``None`` (or 0, stored as ``None``) means no
    throttle.
    """

    bcc_enabled: bool = True
    """true/false/yes/no/1/0/on/off in the environment and the form"""
    max_recipients_per_message: int = 50
    """0 = every account holder in one message"""
    max_recipients_per_second: int | None = None
    """`None` or 0 = no throttle (0 is stored as `None`)"""
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @classmethod
    def _checked(cls, values: dict[str, Any], label: Labeller) -> dict[str, Any]:
        per_second = values["max_recipients_per_second"]
        if per_second is not None:
            per_second = _count(label("max_recipients_per_second"), per_second) or None
        check.instance(label("retry"), values["retry"], RetryPolicy)
        return {
            "bcc_enabled": check.boolean(label("bcc_enabled"), values["bcc_enabled"]),
            "max_recipients_per_message": _count(
                label("max_recipients_per_message"), values["max_recipients_per_message"]
            ),
            "max_recipients_per_second": per_second,
            "retry": values["retry"],
        }


def _count(label: check.Label, value: object) -> int:
    return check.integer(label, value, 0, None, "a count (0 or more)")


@dataclass(frozen=True, slots=True, kw_only=True)
class RecipientPolicy(Validated):
    """Which outside domains subscriptions may reach, and whom pickers suggest.

    ``approved_domains`` empty means every domain. A comma-separated ``str`` is accepted.
    Domains are stored lower-cased in their Unicode form, duplicates dropped.
    """

    approved_domains: tuple[str, ...] = ()
    """empty = every domain; a comma-separated `str` is accepted"""
    suggestions: SuggestionMode = SuggestionMode.ALL
    """all, group, none; anything but all needs the feature"""

    if TYPE_CHECKING:

        def __init__(
            self,
            *,
            approved_domains: Iterable[str] | str = (),
            suggestions: SuggestionMode | str = SuggestionMode.ALL,
        ) -> None: ...

    @classmethod
    def _checked(cls, values: dict[str, Any], label: Labeller) -> dict[str, Any]:
        domains_label = label("approved_domains")
        domains: object = values["approved_domains"]
        if isinstance(domains, str):
            domains = domains.split(",")
        elif not isinstance(domains, Iterable):
            raise domains_label.error("must be a tuple of domains or a str")
        normalised: dict[str, None] = {}
        for domain in domains:
            text = check.text(domains_label, domain, empty_ok=True)
            if not text.strip():
                continue
            try:
                normalised[normalize_domain(text)] = None
            except ValueError as error:
                raise domains_label.error(str(error)) from None
        return {
            "approved_domains": tuple(normalised),
            "suggestions": check.enum(
                label("suggestions"), SuggestionMode, "a user visibility", values["suggestions"]
            ),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ManagedService(Validated):
    """The Cloud operator's SMTP service and the from address it forces."""

    smtp: SmtpSettings
    """Cloud only, the operator's"""
    from_address: str
    """forced on mail sent through the managed service"""

    @classmethod
    def _checked(cls, values: dict[str, Any], label: Labeller) -> dict[str, Any]:
        check.instance(label("smtp"), values["smtp"], SmtpSettings)
        return {
            "smtp": values["smtp"],
            "from_address": check.address(label("from_address"), values["from_address"]),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class EmailSettings(Validated):
    """Everything notifymail needs to know, checked as a whole.

    Self-hosted, ``smtp`` is the server. On Cloud, ``managed`` is the operator's service
    and ``smtp`` the customer's own server, used when ``use_custom_smtp`` is on.
    """

    sender: SenderSettings
    deployment: Deployment = field(default_factory=Deployment)
    """a `deployment=` argument to `from_env` wins over its variables"""
    smtp: SmtpSettings | None = None
    """self-hosted: the server; Cloud: the customer's own server"""
    managed: ManagedService | None = None
    """required on Cloud, refused self-hosted"""
    use_custom_smtp: bool = False
    """Cloud toggle; needs `smtp` set"""
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    recipients: RecipientPolicy = field(default_factory=RecipientPolicy)

    @classmethod
    def _checked(cls, values: dict[str, Any], label: Labeller) -> dict[str, Any]:
        for name, kind in (
            ("sender", SenderSettings),
            ("deployment", Deployment),
            ("delivery", DeliverySettings),
            ("recipients", RecipientPolicy),
        ):
            check.instance(label(name), values[name], kind)
        smtp, managed = values["smtp"], values["managed"]
        if smtp is not None:
            check.instance(label("smtp"), smtp, SmtpSettings)
        if managed is not None:
            check.instance(label("managed"), managed, ManagedService)
        use_custom_smtp = check.boolean(label("use_custom_smtp"), values["use_custom_smtp"])

        deployment: Deployment = values["deployment"]
        if deployment.is_cloud:
            if managed is None:
                raise label("managed").error("Cloud needs the managed SMTP service")
            if smtp is not None:
                _check_cloud_custom_server(smtp, label)
        elif managed is not None:
            raise label("managed").error("the managed SMTP service exists on Cloud only")

        for path, feature in gates().items():
            if _value_at(values, path) != default_at(cls, path):
                require_feature(deployment, feature, label(path))
        if use_custom_smtp and smtp is None:
            raise label("use_custom_smtp").error("needs the custom server in smtp")
        return values

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
        """Read the Metabase-compatible ``MB_*`` and notifymail's ``NOTIFYMAIL_*``
        variables (``os.environ`` by default).

        An empty variable counts as unset. ``deployment``, when given, wins over
        ``MB_EMAIL_HOSTING`` and ``MB_EMAIL_PLAN``. A bad value, or an unknown
        ``MB_EMAIL_*``, ``MB_SMTP_*`` or ``NOTIFYMAIL_*`` variable, raises
        [`ConfigError`][notifymail.ConfigError] with ``env_var`` naming the variable.
        """
        variables = snapshot(os.environ if environ is None else environ)
        del environ  # the caller's mapping holds the password: not a local of this frame
        values, label = read_values(variables, deployment)
        return build(cls, values, label)


def _value_at(values: Mapping[str, Any], path: str) -> object:
    name, _, rest = path.partition(".")
    value = values[name]
    for attribute in rest.split(".") if rest else ():
        value = getattr(value, attribute)
    return value


def _check_cloud_custom_server(smtp: SmtpSettings, label: Labeller) -> None:
    if smtp.security not in _CLOUD_CUSTOM_SECURITY:
        raise label("smtp.security").error(
            f"{smtp.security.value} is not allowed for a custom server on Cloud "
            "(ssl, tls, starttls)"
        )
    if smtp.effective_port not in _CLOUD_CUSTOM_PORTS:
        raise label("smtp.port").error(
            f"{smtp.effective_port} is not allowed for a custom server on Cloud (465, 587, 2525)"
        )
