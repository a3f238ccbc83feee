"""What a token is, independent of where it came from: its parameters and an imported token.

Every importer (otpauth:// URI, PSKC, CSV) returns the same :class:`ImportedToken`, so the
command and the API that store tokens handle one shape. Allowed values are the issue's: HOTP or
TOTP, SHA-1/SHA-256/SHA-512, 6 or 8 digits, 30 or 60 s; anything else is refused here, once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gatehouse.oath.errors import ParamsError

TokenType = Literal["hotp", "totp"]
Algorithm = Literal["sha1", "sha256", "sha512"]

TOKEN_TYPES: tuple[TokenType, ...] = ("hotp", "totp")
#: HMAC hashes RFC 6238 section 1.2 allows; the names are also hashlib's.
ALGORITHMS: tuple[Algorithm, ...] = ("sha1", "sha256", "sha512")
DIGITS = (6, 8)
PERIODS = (30, 60)


def parse_type(value: str) -> TokenType:
    """``hotp`` or ``totp``, any case."""
    name = value.strip().lower()
    if name not in TOKEN_TYPES:
        raise ParamsError("type", f"must be hotp or totp, not {value!r}")
    return name


def parse_algorithm(value: str) -> Algorithm:
    """``sha1``, ``sha256`` or ``sha512``, any case, with or without a dash (``SHA-256``)."""
    name = value.strip().lower().replace("-", "")
    if name not in ALGORITHMS:
        raise ParamsError("algorithm", f"must be sha1, sha256 or sha512, not {value!r}")
    return name


def parse_digits(value: str | int) -> int:
    """6 or 8, from an int or a string of ASCII digits."""
    number = _integer(value)
    if number not in DIGITS:
        raise ParamsError("digits", f"must be 6 or 8, not {value!r}")
    return number


def parse_period(value: str | int) -> int:
    """30 or 60 seconds, from an int or a string of ASCII digits."""
    number = _integer(value)
    if number not in PERIODS:
        raise ParamsError("period", f"must be 30 or 60 (seconds), not {value!r}")
    return number


def _integer(value: str | int) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = value.strip()
    return int(text) if text.isascii() and text.isdigit() else None


@dataclass(frozen=True, slots=True)
class TokenParams:
    """How a token computes its codes; checked on construction so no bad value travels on.

    ``period`` only matters to TOTP; HOTP tokens keep the default.
    """

    type: TokenType = "totp"
    algorithm: Algorithm = "sha1"
    digits: int = 6
    period: int = 30

    def __post_init__(self) -> None:
        # Canonical spellings only: the parse_* helpers above turn user input into these.
        if self.type not in TOKEN_TYPES:
            raise ParamsError("type", f"must be hotp or totp, not {self.type!r}")
        if self.algorithm not in ALGORITHMS:
            raise ParamsError(
                "algorithm", f"must be sha1, sha256 or sha512, not {self.algorithm!r}"
            )
        if type(self.digits) is not int or self.digits not in DIGITS:
            raise ParamsError("digits", f"must be 6 or 8, not {self.digits!r}")
        if type(self.period) is not int or self.period not in PERIODS:
            raise ParamsError("period", f"must be 30 or 60 (seconds), not {self.period!r}")


@dataclass(frozen=True, slots=True)
class ImportedToken:
    """One token read from an import source, not yet stored.

    ``serial`` is None when the source names none (an otpauth:// URI): the caller assigns one.
    ``counter`` is the next HOTP counter (0 for TOTP). The secret is left out of ``repr`` so a
    logged token does not leak its seed.
    """

    serial: str | None
    secret: bytes = field(repr=False)
    params: TokenParams
    counter: int = 0
    issuer: str | None = None
    account: str | None = None


#: What :func:`gatehouse.oath.keyuri.parse_uri` returns: the same type as the file importers.
ParsedToken = ImportedToken
