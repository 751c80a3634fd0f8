"""UnsubscribeTokens (SPEC.md section 11): signed, URL-safe, and refused when touched."""

from __future__ import annotations

import traceback
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

import notifymail as nm

SECRET = "correct horse battery staple, 32b"
BASE = "https://bi.example.com/unsubscribe"
TOKENS = nm.UnsubscribeTokens(SECRET)


def token_of(url: str) -> str:
    (token,) = parse_qs(urlsplit(url).query)["token"]
    return token


GOOD_TOKEN = token_of(TOKENS.url(BASE, "ann@example.com", "alerts.bi.example.com"))

list_ids = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\x85"),
    min_size=1,
    max_size=60,
)
addresses = st.sampled_from(
    [
        "ann@example.com",
        "Bob.Baker+alerts@Example.ORG",
        "jörg@bücher.example",
        "x@xn--bcher-kva.de",
    ]
)


@given(recipient=addresses, list_id=list_ids)
def test_a_token_gives_back_its_recipient_and_list_id(recipient: str, list_id: str) -> None:
    url = TOKENS.url(BASE, recipient, list_id)

    got_recipient, got_list_id = TOKENS.verify(token_of(url))

    assert got_list_id == list_id
    assert got_recipient.lower() == recipient.lower().replace("xn--bcher-kva", "bücher")


def test_the_token_verifies_with_a_secret_given_as_secret_str_or_bytes() -> None:
    for secret in (nm.Secret(SECRET), SECRET, SECRET.encode()):
        assert nm.UnsubscribeTokens(secret).verify(GOOD_TOKEN) == (
            "ann@example.com",
            "alerts.bi.example.com",
        )


def test_the_token_is_url_safe_as_written() -> None:
    url = TOKENS.url(BASE, "jörg@bücher.example", "Ünïcode list 1/2 & more")

    query = urlsplit(url).query
    assert url.isascii()
    assert query.startswith("token=")
    assert "%" not in query  # nothing needed escaping
    assert set(token_of(url)) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
    )


@given(
    position=st.integers(min_value=0, max_value=len(GOOD_TOKEN) - 1),
    replacement=st.characters(blacklist_categories=("Cs",)),
)
def test_any_changed_character_is_refused(position: int, replacement: str) -> None:
    altered = GOOD_TOKEN[:position] + replacement + GOOD_TOKEN[position + 1 :]
    if altered == GOOD_TOKEN:
        replacement = "A" if GOOD_TOKEN[position] != "A" else "B"
        altered = GOOD_TOKEN[:position] + replacement + GOOD_TOKEN[position + 1 :]

    with pytest.raises(nm.InvalidToken):
        TOKENS.verify(altered)


@given(position=st.integers(min_value=0, max_value=len(GOOD_TOKEN) - 1))
def test_a_token_missing_a_character_is_refused(position: int) -> None:
    with pytest.raises(nm.InvalidToken):
        TOKENS.verify(GOOD_TOKEN[:position] + GOOD_TOKEN[position + 1 :])


@given(
    position=st.integers(min_value=0, max_value=len(GOOD_TOKEN)),
    extra=st.characters(blacklist_categories=("Cs",)),
)
def test_a_token_with_a_character_added_is_refused(position: int, extra: str) -> None:
    with pytest.raises(nm.InvalidToken):
        TOKENS.verify(GOOD_TOKEN[:position] + extra + GOOD_TOKEN[position:])


def test_the_low_bits_base64_ignores_are_refused_too() -> None:
    # The signature's last character carries bits the decoder drops: "Dk" and "Dl"
    # decode alike, so only comparing the whole token catches the change.
    last = GOOD_TOKEN[-1]
    sibling = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    index = sibling.index(last)
    twin = sibling[index ^ 1]

    with pytest.raises(nm.InvalidToken):
        TOKENS.verify(GOOD_TOKEN[:-1] + twin)


def test_a_token_made_with_another_secret_is_refused() -> None:
    other = nm.UnsubscribeTokens("another secret of thirty-two b")
    forged = token_of(other.url(BASE, "ann@example.com", "alerts.bi.example.com"))

    with pytest.raises(nm.InvalidToken, match="another secret"):
        TOKENS.verify(forged)


def test_a_forged_recipient_with_the_old_signature_is_refused() -> None:
    other = token_of(TOKENS.url(BASE, "bob@example.com", "alerts.bi.example.com"))
    signature = GOOD_TOKEN.partition(".")[2]

    with pytest.raises(nm.InvalidToken):
        TOKENS.verify(f"{other.partition('.')[0]}.{signature}")


@pytest.mark.parametrize("token", ["", ".", "not-a-token", "a.b.c", "é.é", "====.===="])
def test_what_is_not_a_token_is_refused(token: str) -> None:
    with pytest.raises(nm.InvalidToken):
        TOKENS.verify(token)


def test_existing_query_parameters_are_kept() -> None:
    url = TOKENS.url(f"{BASE}?lang=de&list=weekly#top", "ann@example.com", "alerts")

    parts = urlsplit(url)
    assert parts.scheme == "https"
    assert parts.netloc == "bi.example.com"
    assert parts.path == "/unsubscribe"
    assert parts.fragment == "top"
    assert [name for name, _ in parse_qsl(parts.query)] == ["lang", "list", "token"]
    assert TOKENS.verify(token_of(url)) == ("ann@example.com", "alerts")


@pytest.mark.parametrize(
    ("base_url", "problem"),
    [
        ("http://bi.example.com/unsubscribe", "must be an https URL"),
        ("mailto:unsubscribe@example.com", "must be an https URL"),
        ("https:///unsubscribe", "must be an https URL"),
        ("/unsubscribe", "must be an https URL"),
        ("https://bi.example.com/ab meld", "must be ASCII without spaces"),
        ("https://bi.example.com/abmelden-für-immer", "must be ASCII without spaces"),
        ("https://bi.example.com/u>x", "must be ASCII without spaces"),
        ("https://bi.example.com/u\r\nBcc: x@example.com", "must be ASCII without spaces"),
        ("https://bi.example.com/u?token=mine", "already has a token parameter"),
    ],
)
def test_only_an_https_base_url_that_fits_a_header_is_accepted(
    base_url: str, problem: str
) -> None:
    with pytest.raises(nm.InvalidMessage, match=f"^base_url: .*{problem}") as caught:
        TOKENS.url(base_url, "ann@example.com", "alerts")
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("recipient", "list_id", "field"),
    [
        ("not an address", "alerts", "recipient"),
        ("ann@example.com\r\nBcc: x@example.com", "alerts", "recipient"),
        ("ann@example.com", "", "list_id"),
        ("ann@example.com", "alerts\nlist", "list_id"),
        ("ann@example.com", "alerts\x00", "list_id"),
    ],
)
def test_bad_recipient_or_list_id_names_the_argument(
    recipient: str, list_id: str, field: str
) -> None:
    with pytest.raises(nm.InvalidMessage, match=f"^{field}: "):
        TOKENS.url(BASE, recipient, list_id)


def test_a_short_secret_is_a_config_error_that_does_not_show_it() -> None:
    secret = "tooshort-s3cret"
    with pytest.raises(nm.ConfigError, match="at least 16 bytes") as caught:
        nm.UnsubscribeTokens(secret)

    assert caught.value.field == "secret"
    assert secret not in str(caught.value)
    frames = [frame for frame, _ in traceback.walk_tb(caught.value.__traceback__)]
    ours = [frame for frame in frames if frame.f_globals["__name__"] == "notifymail.unsubscribe"]
    assert ours
    for frame in ours:
        assert all(secret not in repr(value) for value in frame.f_locals.values())


def test_the_secret_never_shows_in_a_repr() -> None:
    tokens = nm.UnsubscribeTokens(SECRET)
    assert SECRET not in repr(tokens)
    assert "secret" in repr(tokens).lower()


def test_a_secret_of_another_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="secret: must be a Secret, str or bytes"):
        nm.UnsubscribeTokens(12345678901234567890)  # type: ignore[arg-type]
