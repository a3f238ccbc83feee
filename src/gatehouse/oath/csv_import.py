"""CSV token import: ``serial, hex seed, type[, digits[, period[, algorithm]]]`` per line.

The format hardware-token vendors ship seed lists in. Digits, period and algorithm default to
6, 30 and sha1 when left out or empty; the period is ignored for HOTP. Blank lines and lines
starting with ``#`` (a header, say) are skipped. Errors name the line and the column, e.g.
``line 4, column 2 (seed): not hexadecimal``, and refuse the whole file.
"""

from __future__ import annotations

import csv
import string
from typing import NoReturn

from gatehouse.oath.errors import OathImportError, ParamsError, SeedError
from gatehouse.oath.seeds import check_seed_length
from gatehouse.oath.token_spec import (
    ImportedToken,
    TokenParams,
    parse_algorithm,
    parse_digits,
    parse_period,
    parse_type,
)

COLUMNS = ("serial", "seed", "type", "digits", "period", "algorithm")
_REQUIRED = 3


def parse_csv(text: str) -> list[ImportedToken]:
    """Every token in the file, or an :class:`OathImportError` naming the first bad cell."""
    tokens: list[ImportedToken] = []
    line_of_serial: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cells = [cell.strip() for cell in next(csv.reader([line]))]
        token = _read_row(cells, number)
        assert token.serial is not None
        if token.serial in line_of_serial:
            _fail(
                number, 1, f"serial {token.serial!r} is also on line {line_of_serial[token.serial]}"
            )
        line_of_serial[token.serial] = number
        tokens.append(token)
    return tokens


def _read_row(cells: list[str], number: int) -> ImportedToken:
    if not _REQUIRED <= len(cells) <= len(COLUMNS):
        raise OathImportError(
            f"line {number}",
            f"{len(cells)} columns; expected {_REQUIRED} to {len(COLUMNS)}: {', '.join(COLUMNS)}",
        )
    cells += [""] * (len(COLUMNS) - len(cells))
    serial, seed_hex, type_text, digits_text, period_text, algorithm_text = cells
    if not serial:
        _fail(number, 1, "empty")
    seed = _hex(seed_hex, number)
    try:
        check_seed_length(seed)
    except SeedError as exc:
        _fail(number, 2, str(exc))
    column = 3
    try:
        token_type = parse_type(type_text)
        column = 4
        digits = parse_digits(digits_text or "6")
        column = 5
        period = parse_period(period_text or "30") if token_type == "totp" else 30
        column = 6
        algorithm = parse_algorithm(algorithm_text or "sha1")
    except ParamsError as exc:
        _fail(number, column, exc.message)
    return ImportedToken(serial, seed, TokenParams(token_type, algorithm, digits, period))


def _hex(text: str, number: int) -> bytes:
    """The seed's bytes; an error says where the hex breaks without echoing the seed."""
    compact = "".join(text.split())
    bad = next((i for i, c in enumerate(compact, 1) if c not in string.hexdigits), None)
    if not compact or bad is not None:
        where = f" (character {bad})" if bad else ""
        header = " (a header line must start with #)" if number == 1 else ""
        _fail(number, 2, f"not hexadecimal{where}{header}")
    if len(compact) % 2:
        _fail(number, 2, f"an odd number ({len(compact)}) of hex digits")
    return bytes.fromhex(compact)


def _fail(number: int, column: int, message: str) -> NoReturn:
    raise OathImportError(f"line {number}, column {column} ({COLUMNS[column - 1]})", message)
