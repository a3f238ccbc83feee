"""The otpauth:// Key URI format authenticator apps scan from a QR code, both directions.

https://github.com/google/google-authenticator/wiki/Key-Uri-Format:
``otpauth://TYPE/ISSUER:ACCOUNT?secret=BASE32&issuer=ISSUER&algorithm=SHA1&digits=6&period=30``
(``counter`` instead of ``period`` for HOTP). Parsing is tolerant where people copy by hand
(lower-case or spaced base32, missing padding) and strict about values, naming the parameter.
"""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from gatehouse.oath.errors import OathImportError, ParamsError, SeedError
from gatehouse.oath.otp import MAX_COUNTER
from gatehouse.oath.seeds import check_seed_length
from gatehouse.oath.token_spec import (
    ParsedToken,
    TokenParams,
    parse_algorithm,
    parse_digits,
    parse_period,
    parse_type,
)

_BASE32 = re.compile(r"[A-Z2-7]*")


def encode_base32(secret: bytes) -> str:
    """Base32 without padding, as the Key URI format and authenticator apps show seeds."""
    return base64.b32encode(secret).decode("ascii").rstrip("=")


def decode_base32(text: str, field: str = "secret") -> bytes:
    """Base32 as people type it: any case, spaces anywhere, padding optional.

    Raises:
        OathImportError: naming ``field`` and the first character that is not base32.
    """
    compact = "".join(text.split()).upper().rstrip("=")
    if not compact:
        raise OathImportError(field, "empty")
    bad = _BASE32.match(compact)
    assert bad is not None  # the pattern matches the empty prefix at least
    if bad.end() != len(compact):
        raise OathImportError(
            field, f"{compact[bad.end()]!r} is not a base32 character (A-Z and 2-7)"
        )
    if len(compact) % 8 in (1, 3, 6):
        raise OathImportError(field, f"{len(compact)} base32 characters cannot encode whole bytes")
    try:
        return base64.b32decode(compact + "=" * (-len(compact) % 8))
    except binascii.Error as exc:
        raise OathImportError(field, f"not base32: {exc}") from None


def build_uri(
    issuer: str, account: str, secret: bytes, params: TokenParams, counter: int = 0
) -> str:
    """The URI an app enrols from; ``issuer`` may be empty, neither may contain a colon."""
    for name, value in (("issuer", issuer), ("account", account)):
        if ":" in value:
            raise ParamsError(
                name, f"must not contain ':' (it separates issuer and account): {value!r}"
            )
    if not account.strip():
        raise ParamsError("account", "empty")
    label = f"{_quote(issuer)}:{_quote(account)}" if issuer else _quote(account)
    query = [("secret", encode_base32(secret))]
    if issuer:
        query.append(("issuer", issuer))
    query += [("algorithm", params.algorithm.upper()), ("digits", str(params.digits))]
    if params.type == "totp":
        query.append(("period", str(params.period)))
    else:
        query.append(("counter", str(counter)))
    return f"otpauth://{params.type}/{label}?" + "&".join(f"{k}={_quote(v)}" for k, v in query)


def parse_uri(uri: str) -> ParsedToken:
    """Read an otpauth:// URI; the token has no serial (the caller assigns one).

    The ``issuer`` parameter wins over the label's prefix when both are given (as apps do).
    """
    parts = urlsplit(uri.strip())
    if parts.scheme.lower() != "otpauth":
        raise OathImportError("scheme", f"expected otpauth://, not {parts.scheme or 'none'!r}")
    prefix, colon, rest = unquote(parts.path.removeprefix("/")).partition(":")
    label_issuer, account = (prefix.strip(), rest.strip()) if colon else ("", prefix.strip())
    if not account:
        raise OathImportError("label", "no account name")
    query: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name.lower() in query:
            raise OathImportError(name, "given more than once")
        query[name.lower()] = value
    try:
        token_type = parse_type(parts.netloc)
        algorithm = parse_algorithm(query.get("algorithm", "SHA1"))
        digits = parse_digits(query.get("digits", "6"))
        period = parse_period(query.get("period", "30")) if token_type == "totp" else 30
        params = TokenParams(token_type, algorithm, digits, period)
    except ParamsError as exc:
        raise OathImportError(exc.field, exc.message) from None
    if "secret" not in query:
        raise OathImportError("secret", "missing")
    secret = decode_base32(query["secret"])
    try:
        check_seed_length(secret)
    except SeedError as exc:
        raise OathImportError("secret", str(exc)) from None
    counter = 0
    if token_type == "hotp":
        if "counter" not in query:
            raise OathImportError("counter", "missing (required for hotp)")
        text = query["counter"]
        if not (text.isascii() and text.isdigit()) or int(text) > MAX_COUNTER:
            raise OathImportError("counter", f"not a counter (0 to 2**64-1): {text!r}")
        counter = int(text)
    issuer = query.get("issuer", "").strip() or label_issuer or None
    return ParsedToken(None, secret, params, counter, issuer=issuer, account=account)


def _quote(value: str) -> str:
    """Percent-encoding with spaces as %20, the format's rule (apps differ on reading '+')."""
    return quote(value, safe="@")
