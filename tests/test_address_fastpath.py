"""The common-address fast path accepts and normalises exactly as email-validator does."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from notifymail._address import _common_normalized, normalize_address

ENCODED_WORD_REFUSAL = "error: the part before the @-sign cannot contain '=?' (an encoded word)"


def validator_says(address: str) -> str:
    """email-validator's verdict: the normalised address, or ``error: <reason>``; and
    notifymail's one rule on top of it, no encoded word's ``=?`` before the @-sign."""
    try:
        normalized = validate_email(address.strip(), check_deliverability=False).normalized
    except EmailNotValidError as error:
        return f"error: {error}"
    return ENCODED_WORD_REFUSAL if "=?" in normalized.rpartition("@")[0] else normalized


def notifymail_says(address: str) -> str:
    normalize_address.cache_clear()  # the per-domain cache is kept, as in real use
    try:
        return normalize_address(address)
    except ValueError as error:
        return f"error: {error}"


LOCAL_CHARACTERS = "aAzZ09.!#$%&'*+/=?^_`{|}~-\"(),:;<>@[\\] ü"
plain_local_parts = st.from_regex(
    r"[A-Za-z0-9_+'=-]{1,10}(\.[A-Za-z0-9_+'=-]{1,5}){0,2}", fullmatch=True
)
local_parts = st.one_of(
    plain_local_parts,
    st.text(LOCAL_CHARACTERS, min_size=0, max_size=12),
    st.sampled_from(["Postmaster", "INFO", "support", "noc", "jösé", "a" * 64, "a" * 65]),
)
labels = st.one_of(
    st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,6}[A-Za-z0-9])?", fullmatch=True),
    st.text("abcXYZ019-üß", min_size=0, max_size=8),
    st.sampled_from(
        ["xn--bcher-kva", "BÜCHER", "ab--cd", "a" * 63, "a" * 64, "_x", "-a", "a-", "例え", "ǅ"]
    ),
)
tlds = st.sampled_from(
    [
        *("com", "ORG", "de", "io", "x1", "123", "test", "local", "localhost", "invalid"),
        *("onion", "arpa", "in-addr.arpa", "example", "xn--p1ai", "рф", "テスト", "c-", ""),
    ]
)
domains = st.builds(
    lambda parts, tld: ".".join([*parts, tld]), st.lists(labels, min_size=0, max_size=3), tlds
)
common_domains = st.builds(
    lambda parts, tld: ".".join([*parts, tld]),
    st.lists(
        st.sampled_from(["example", "MAIL", "bücher", "BÜCHER", "xn--bcher-kva", "a-1", "例え"]),
        min_size=1,
        max_size=2,
    ),
    st.sampled_from(["com", "DE", "org", "рф", "xn--p1ai", "test", "c1"]),
)
addresses = st.one_of(
    st.builds(lambda local, domain: f"{local}@{domain}", plain_local_parts, common_domains),
    st.builds(lambda local, domain: f"{local}@{domain}", local_parts, domains),
    st.text("aZ0.@-_ \tü", max_size=20),
)


@settings(max_examples=800, deadline=None)
@given(addresses)
def test_normalize_address_agrees_with_email_validator(address: str) -> None:
    assert notifymail_says(address) == validator_says(address)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("ann@example.com", "ann@example.com"),
        ("Ann.Lee@EXAMPLE.Com", "Ann.Lee@example.com"),  # local part kept, domain lowered
        ("o'neil+tag@mail-1.example.co.uk", "o'neil+tag@mail-1.example.co.uk"),
        ("Postmaster@example.com", "postmaster@example.com"),  # lower-cased (RFC 2142)
        ("SUPPORT@example.com", "support@example.com"),
        ("ann@BÜCHER.de", "ann@bücher.de"),
        ("ann@xn--bcher-kva.de", "ann@bücher.de"),  # Punycode: the Unicode form
        ("jösé@bücher.de", "jösé@bücher.de"),
        ("a@b.c1", "error"),  # a top-level domain ends with a letter
        ("ann@example", "error"),  # no dot
        ("ann@host.localhost", "error"),  # special-use
        ("ann@x.test", "error"),
        ("ann@10.in-addr.arpa", "error"),
        ("ann@ab--cd.com", "error"),  # reserved R-LDH label
        ("ann..lee@example.com", "error"),
        (".ann@example.com", "error"),
        ("ann@-example.com", "error"),
        ("ann@example-.com", "error"),
        ("ann@" + "a" * 64 + ".com", "error"),  # a label over 63
        ("a" * 65 + "@example.com", "a" * 65 + "@example.com"),  # allowed when not strict
        ("a" * 10 + "@" + ".".join(["b" * 61] * 4) + ".com", "error"),  # address over 254
        ("a@" + ".".join(["b" * 62] * 4) + ".com", "error"),  # domain over 253
        ("a@" + ".".join(["b" * 61] * 4) + ".com", "a@" + ".".join(["b" * 61] * 4) + ".com"),
        (" ann@example.com ", "ann@example.com"),  # stripped
        ('"ann lee"@example.com', "error"),  # quoting is not allowed
        ("ann@[192.0.2.1]", "error"),
        ("Ann <ann@example.com>", "error"),
        ("ann@example.com>", "error"),
    ],
)
def test_common_and_edge_addresses_are_judged_as_email_validator_judges_them(
    address: str, expected: str
) -> None:
    got = notifymail_says(address)
    assert got == validator_says(address)
    if expected == "error":
        assert got.startswith("error: ")
    else:
        assert got == expected


def test_a_control_character_is_refused_even_where_strip_would_remove_it() -> None:
    assert notifymail_says("ann@example.com\x1f").startswith("error: ")


def test_the_fast_path_takes_the_common_address_and_leaves_the_rest() -> None:
    assert _common_normalized("Ann@Example.COM") == "Ann@example.com"
    assert _common_normalized("ann@BÜCHER.de") == "ann@bücher.de"
    for address in (
        "jösé@example.com",  # non-ASCII local part
        "info@example.com",  # lower-cased by email-validator
        "ann@example.local",  # refused domain: email-validator gives the reason
        '"ann"@example.com',
        "a" * 65 + "@example.com",
    ):
        assert _common_normalized(address) is None


@pytest.mark.parametrize(
    "address",
    ["=?utf-8?q?=0D=0ABcc=3A=20x=40evil=2Ecom?=@approved.example", "a=?b@example.com"],
)
def test_a_local_part_that_a_reader_could_decode_as_an_encoded_word_is_refused(
    address: str,
) -> None:
    assert notifymail_says(address) == ENCODED_WORD_REFUSAL
