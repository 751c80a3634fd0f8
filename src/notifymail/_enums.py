"""The str-enums of the settings, in a leaf module so that ``errors`` can name a
``Feature`` without importing the settings (nothing here imports notifymail).

Every enum parses case-insensitively, ignoring surrounding space and ``_`` versus ``-``:
``Security(" TLS ")`` is ``Security.TLS``.
"""

from __future__ import annotations

from enum import Enum

from typing_extensions import Self

__all__ = ["Feature", "Hosting", "Plan", "Security", "SuggestionMode"]


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
