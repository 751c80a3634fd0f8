"""Address and text checks shared by settings, messages and policy.

Every address is validated once by email-validator (no DNS) and the result cached, so a
notification to 20,000 people does not validate the same sender 20,000 times.
email-validator is imported on first use: it costs more start-up time than smtplib.
"""

from __future__ import annotations

import re
from functools import lru_cache

# CR, LF and NUL are the characters of header injection. The other C0 controls but TAB,
# DEL, and what str.splitlines() breaks on are refused too: the email package either
# rejects them in mid-value or writes them raw into a header.
_CONTROL_CHARACTER = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")


def has_control_character(value: str) -> bool:
    """Whether ``value`` holds a line break, NUL or another control character (TAB is fine)."""
    return _CONTROL_CHARACTER.search(value) is not None


@lru_cache(maxsize=16384)
def normalize_address(address: str) -> str:
    """Return ``address`` validated and normalised: domain lower-cased, Unicode form.

    Raises :class:`ValueError` whose text is the reason, for the caller to wrap in the
    error type that fits (``ConfigError``, ``InvalidMessage``, a policy refusal).
    """
    if not isinstance(address, str):
        raise ValueError(f"an address must be a str, not {type(address).__name__}")
    if has_control_character(address):
        raise ValueError("an address cannot contain a line break or NUL")
    from email_validator import EmailNotValidError, validate_email

    try:
        validated = validate_email(address.strip(), check_deliverability=False)
    except EmailNotValidError as error:
        raise ValueError(str(error)) from None
    return validated.normalized


def domain_of(address: str) -> str:
    """The domain of a normalised address (lower case, Unicode form)."""
    return address.rpartition("@")[2]


@lru_cache(maxsize=16384)
def normalize_domain(domain: str) -> str:
    """Return ``domain`` as :func:`normalize_address` would store it, or raise ValueError."""
    if not isinstance(domain, str):
        raise ValueError(f"a domain must be a str, not {type(domain).__name__}")
    candidate = domain.strip()
    if not candidate or "@" in candidate:
        raise ValueError(f"{domain!r} is not a domain name")
    try:
        return domain_of(normalize_address(f"postmaster@{candidate}"))
    except ValueError as error:
        reason = str(error).replace("The part after the @-sign", "The domain")
        raise ValueError(f"{domain!r} is not a valid domain: {reason}") from None


@lru_cache(maxsize=16384)
def ascii_domain(domain: str) -> str:
    """The domain in IDNA A-labels, as it goes on the wire."""
    if domain.isascii():
        return domain
    from email_validator import validate_email

    return validate_email(f"postmaster@{domain}", check_deliverability=False).ascii_domain


def wire_address(address: str) -> str:
    """``address`` with its domain in A-labels; the local part is left as it is."""
    local_part, _, domain = address.rpartition("@")
    return f"{local_part}@{ascii_domain(domain)}"


def address_key(address: str) -> str:
    """A key under which two spellings of one mailbox compare equal.

    Case-insensitive over the whole address, as user directories and most mail systems
    behave in practice; the domain in its Unicode form, so IDNA and Unicode spellings
    match. ``address`` must already be normalised.
    """
    return address.casefold()
