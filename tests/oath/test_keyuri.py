"""otpauth:// Key URIs: what apps scan, and what people paste back in."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatehouse.oath.errors import OathImportError, ParamsError
from gatehouse.oath.keyuri import build_uri, decode_base32, encode_base32, parse_uri
from gatehouse.oath.token_spec import ImportedToken, TokenParams

SEED = b"12345678901234567890"
SEED_B32 = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"


def test_base32_of_the_rfc_seed() -> None:
    assert encode_base32(SEED) == SEED_B32
    assert encode_base32(b"\x00" * 16) == "A" * 26  # 16 bytes: padding is dropped


@pytest.mark.parametrize(
    "typed",
    [
        SEED_B32,
        SEED_B32.lower(),
        "gezd gnbv gy3t qojq gezd gnbv gy3t qojq",
        "  GEZDGNBVGY3TQOJQ\tGEZDGNBVGY3TQOJQ\n",
        SEED_B32 + "====",
    ],
)
def test_base32_is_read_as_people_type_it(typed: str) -> None:
    assert decode_base32(typed) == SEED


def test_base32_without_padding_of_an_odd_length() -> None:
    assert decode_base32("AAAAAAAAAAAAAAAAAAAAAAAAAA") == b"\x00" * 16
    assert decode_base32("aaaaaaaaaaaaaaaaaaaaaaaaaa======") == b"\x00" * 16


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("", "secret: empty"),
        ("  ", "secret: empty"),
        ("GEZDGNBVGY3TQOJ1", "secret: '1' is not a base32 character (A-Z and 2-7)"),
        ("GEZDGNBVGY3TQOJ8", "secret: '8' is not a base32 character"),
        ("GEZDG=NBV", "secret: '=' is not a base32 character"),
        ("GEZDGNBVG", "secret: 9 base32 characters cannot encode whole bytes"),
    ],
)
def test_bad_base32_is_named(typed: str, message: str) -> None:
    with pytest.raises(OathImportError) as caught:
        decode_base32(typed)
    assert str(caught.value).startswith(message)


def test_build_a_totp_uri() -> None:
    uri = build_uri("ACME Co", "john.doe@email.com", SEED, TokenParams("totp", "sha256", 8, 60))
    assert uri == (
        "otpauth://totp/ACME%20Co:john.doe@email.com?secret=" + SEED_B32
        + "&issuer=ACME%20Co&algorithm=SHA256&digits=8&period=60"
    )  # fmt: skip


def test_build_a_hotp_uri_names_its_counter() -> None:
    uri = build_uri("", "alice", SEED, TokenParams("hotp", "sha1", 6), counter=42)
    assert uri == f"otpauth://hotp/alice?secret={SEED_B32}&algorithm=SHA1&digits=6&counter=42"


def test_build_refuses_colons_and_an_empty_account() -> None:
    with pytest.raises(ParamsError, match="issuer: must not contain ':'"):
        build_uri("a:b", "alice", SEED, TokenParams())
    with pytest.raises(ParamsError, match="account: must not contain ':'"):
        build_uri("Acme", "al:ice", SEED, TokenParams())
    with pytest.raises(ParamsError, match="account: empty"):
        build_uri("Acme", " ", SEED, TokenParams())


def test_parse_the_key_uri_format_example() -> None:
    token = parse_uri(
        "otpauth://totp/ACME%20Co:john.doe@email.com?secret=HXDMVJECJJWSRB3HWIZR4IFUGFTMXBOZ"
        "&issuer=ACME%20Co&algorithm=SHA1&digits=6&period=30"
    )
    assert token == ImportedToken(
        None,
        base64.b32decode("HXDMVJECJJWSRB3HWIZR4IFUGFTMXBOZ"),
        TokenParams("totp", "sha1", 6, 30),
        0,
        issuer="ACME Co",
        account="john.doe@email.com",
    )


def test_parse_defaults_and_label_forms() -> None:
    token = parse_uri(f"otpauth://TOTP/Example:%20alice@example.com?secret={SEED_B32.lower()}")
    assert token.params == TokenParams("totp", "sha1", 6, 30)
    assert (token.issuer, token.account, token.secret) == ("Example", "alice@example.com", SEED)
    bare = parse_uri(f"otpauth://totp/alice?secret={SEED_B32}")
    assert (bare.issuer, bare.account) == (None, "alice")
    encoded_colon = parse_uri(f"otpauth://totp/Big%20Corp%3Abob?secret={SEED_B32}")
    assert (encoded_colon.issuer, encoded_colon.account) == ("Big Corp", "bob")
    parameter_wins = parse_uri(f"otpauth://totp/Old:bob?secret={SEED_B32}&issuer=New")
    assert parameter_wins.issuer == "New"


def test_parse_hotp_reads_the_counter() -> None:
    token = parse_uri(f"otpauth://hotp/Acme:bob?secret={SEED_B32}&counter=17&algorithm=sha512")
    assert token.params == TokenParams("hotp", "sha512", 6, 30)
    assert token.counter == 17


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        (f"https://totp/a?secret={SEED_B32}", "scheme: expected otpauth://, not 'https'"),
        (f"otpauth://motp/a?secret={SEED_B32}", "type: must be hotp or totp, not 'motp'"),
        (f"otpauth://totp/?secret={SEED_B32}", "label: no account name"),
        (f"otpauth://totp/Acme:?secret={SEED_B32}", "label: no account name"),
        ("otpauth://totp/a?issuer=x", "secret: missing"),
        ("otpauth://totp/a?secret=", "secret: empty"),
        ("otpauth://totp/a?secret=JBSWY3DPEHPK3PXP", "secret: seed is 80 bits; at least 128"),
        ("otpauth://totp/a?secret=JBSWY3DP!HPK3PXP", "secret: '!' is not a base32 character"),
        (f"otpauth://totp/a?secret={SEED_B32}&digits=7", "digits: must be 6 or 8, not '7'"),
        (f"otpauth://totp/a?secret={SEED_B32}&digits=six", "digits: must be 6 or 8"),
        (f"otpauth://totp/a?secret={SEED_B32}&period=45", "period: must be 30 or 60 (seconds)"),
        (f"otpauth://totp/a?secret={SEED_B32}&algorithm=MD5", "algorithm: must be sha1, sha256"),
        (f"otpauth://hotp/a?secret={SEED_B32}", "counter: missing (required for hotp)"),
        (f"otpauth://hotp/a?secret={SEED_B32}&counter=-1", "counter: not a counter"),
        (f"otpauth://hotp/a?secret={SEED_B32}&counter={2**64}", "counter: not a counter"),
        (f"otpauth://totp/a?secret={SEED_B32}&secret={SEED_B32}", "secret: given more than once"),
    ],
)
def test_bad_uris_name_the_parameter(uri: str, message: str) -> None:
    with pytest.raises(OathImportError) as caught:
        parse_uri(uri)
    assert str(caught.value).startswith(message)


def test_period_of_a_hotp_uri_is_ignored() -> None:
    token = parse_uri(f"otpauth://hotp/a?secret={SEED_B32}&counter=0&period=45")
    assert token.params.period == 30


_TEXT = (
    st.text(
        alphabet=st.characters(
            codec="utf-8", exclude_characters=":", exclude_categories=["Cs", "Cc"]
        ),
        min_size=1,
        max_size=20,
    )
    .map(str.strip)
    .filter(bool)
)


@given(
    issuer=st.one_of(st.just(""), _TEXT),
    account=_TEXT,
    secret=st.binary(min_size=16, max_size=64),
    params=st.builds(
        TokenParams,
        type=st.sampled_from(["hotp", "totp"]),
        algorithm=st.sampled_from(["sha1", "sha256", "sha512"]),
        digits=st.sampled_from([6, 8]),
        period=st.sampled_from([30, 60]),
    ),
    counter=st.integers(min_value=0, max_value=2**64 - 1),
)
def test_build_then_parse_round_trips(
    issuer: str, account: str, secret: bytes, params: TokenParams, counter: int
) -> None:
    token = parse_uri(build_uri(issuer, account, secret, params, counter))
    expected_params = (
        params if params.type == "totp" else TokenParams("hotp", params.algorithm, params.digits)
    )
    assert token.params == expected_params
    assert token.secret == secret
    assert (token.issuer, token.account) == (issuer or None, account)
    assert token.counter == (counter if params.type == "hotp" else 0)
