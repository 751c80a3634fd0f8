"""Address and text checks shared by settings, messages and policy.

Every address is validated once (no DNS) and the result cached, so a notification to
20,000 people does not validate the same sender 20,000 times. A common address (a plain
ASCII local part) is validated only as far as its domain, once per domain; every other
address goes to email-validator whole.
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


_SURROGATE = re.compile("[\ud800-\udfff]")


def has_unpaired_surrogate(value: str) -> bool:
    """Whether ``value`` holds a lone surrogate, which no encoding can write."""
    return _SURROGATE.search(value) is not None


# The common address, a dot-atom local part in ASCII at a domain email-validator has
# already accepted, is normalised as email-validator would (the local part unchanged, the
# domain as it normalised it) without validating it again: that costs 25-40 µs, and a
# check of 100,000 new addresses must take well under a second. The domain's verdict is
# email-validator's own, cached per domain: it does not depend on the local part.
# Anything else goes to email-validator, which alone ever refuses an address.
ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"  # RFC 5322 atext, one or more
_DOT_ATOM = re.compile(rf"{ATEXT}(?:\.{ATEXT})*")
_HOST_NAME = re.compile(r"[A-Za-z0-9.\-\u0080-\U0010ffff]+")  # what a domain may hold
_MAX_LOCAL_PART = 64  # longer is refused by email-validator in strict mode: left to it
_MAX_ADDRESS = 254  # bytes, as email-validator counts


@lru_cache(maxsize=4096)
def _domain_forms(domain: str) -> tuple[str, str] | None:
    """``domain`` as email-validator normalises it, and in A-labels; None if it refuses it."""
    from email_validator import EmailNotValidError, validate_email

    try:
        validated = validate_email(f"a@{domain}", check_deliverability=False)
    except EmailNotValidError:
        return None
    return validated.domain, validated.ascii_domain


@lru_cache(maxsize=1)
def _case_insensitive_mailboxes() -> frozenset[str]:
    """The local parts (RFC 2142) that email-validator lower-cases."""
    from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES

    return frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)


def _common_normalized(address: str) -> str | None:
    """``address`` normalised, if it is a common address at an accepted domain; else None."""
    local_part, _, domain = address.rpartition("@")
    if not (_DOT_ATOM.fullmatch(local_part) and _HOST_NAME.fullmatch(domain)):
        return None
    if len(local_part) > _MAX_LOCAL_PART or local_part.lower() in _case_insensitive_mailboxes():
        return None
    forms = _domain_forms(domain)
    if forms is None:
        return None
    normalized = f"{local_part}@{forms[0]}"
    longest = max(
        len(address.encode()), len(normalized.encode()), len(local_part) + 1 + len(forms[1])
    )
    return normalized if longest <= _MAX_ADDRESS else None


@lru_cache(maxsize=16384)
def normalize_address(address: str) -> str:
    """Return ``address`` validated and normalised: domain lower-cased, Unicode form.

    Raises `ValueError` whose text is the reason, for the caller to wrap in the
    error type that fits (``ConfigError``, ``InvalidMessage``, a policy refusal).
    """
    if not isinstance(address, str):
        raise ValueError(f"an address must be a str, not {type(address).__name__}")
    if has_control_character(address):
        raise ValueError("an address cannot contain a line break or NUL")
    candidate = address.strip()
    normalized = _common_normalized(candidate)
    if normalized is None:
        from email_validator import EmailNotValidError, validate_email

        try:
            normalized = validate_email(candidate, check_deliverability=False).normalized
        except EmailNotValidError as error:
            raise ValueError(str(error)) from None
    if "=?" in normalized.rpartition("@")[0]:
        # Legal in SMTP, but mail readers decode it in a To or Cc header as an RFC 2047
        # encoded word, which can hide a line break and a header of its own.
        raise ValueError("the part before the @-sign cannot contain '=?' (an encoded word)")
    return normalized


def needs_smtputf8(address: str) -> bool:
    """Whether ``address`` has a non-ASCII local part, which only SMTPUTF8 can carry.

    A non-ASCII domain does not: it goes on the wire as IDNA A-labels.
    """
    return not address.rpartition("@")[0].isascii()


def domain_of(address: str) -> str:
    """The domain of a normalised address (lower case, Unicode form)."""
    return address.rpartition("@")[2]


@lru_cache(maxsize=16384)
def normalize_domain(domain: str) -> str:
    """Return ``domain`` as `normalize_address` would store it, or raise ValueError."""
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
    if address.isascii():
        return address
    local_part, _, domain = address.rpartition("@")
    return f"{local_part}@{ascii_domain(domain)}"


def address_key(address: str) -> str:
    """A key under which two spellings of one mailbox compare equal.

    Case-insensitive over the whole address, as user directories and most mail systems
    behave in practice; the domain in its Unicode form, so IDNA and Unicode spellings
    match. ``address`` must already be normalised. ``lower()``, not ``casefold()``:
    casefolding maps ``straße.de`` to ``strasse.de``, another domain, so a stranger's
    address would pass for an account holder's.
    """
    return address.lower()
