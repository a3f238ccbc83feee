"""Canonical JSON: the one byte string a JSON document is signed and compared as.

``orjson`` with sorted keys and no whitespace, UTF-8 as is (no ``\\u`` escapes). Decoding the
output and encoding it again gives the same bytes, which is what lets a service verify a
signature over a document it received as JSON:

- keys are strings, sorted by code point; duplicate keys cannot occur (they are dict keys);
- integers stay integers and must fit in 53 bits (so JavaScript reads them exactly too);
- floats are written in their shortest round-trip form (``30.0``, ``0.1``, ``1e+20``); a float
  never turns into an integer or back, because ``30.0`` decodes as a float and ``30`` as an
  int. NaN and infinities have no JSON form (orjson would write ``null``) and are refused;
- only dicts, lists, strings, numbers, booleans and null: anything else is refused rather
  than converted, so the signed bytes never depend on a conversion.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import orjson

JSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER


class NotCanonical(ValueError):
    """The value cannot be encoded canonically; the message names where."""


def canonical_json(value: object) -> bytes:
    """Encode ``value`` canonically.

    Raises:
        NotCanonical: a non-string key, a non-finite float, an integer beyond 53 bits or a
            value of another type, with its path (``view.resources[0].x``).
    """
    _check(value, "$")
    try:
        return orjson.dumps(value, option=JSON_OPTIONS)
    except orjson.JSONEncodeError as exc:
        raise NotCanonical(str(exc)) from None


def _check(value: object, path: str) -> None:
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int):
        if abs(value) > 2**53 - 1:
            raise NotCanonical(f"{path}: integer beyond 53 bits")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NotCanonical(f"{path}: {value} has no JSON form")
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check(item, f"{path}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise NotCanonical(f"{path}: key {key!r} is not a string")
            _check(item, f"{path}.{key}")
        return
    raise NotCanonical(f"{path}: {type(value).__name__} is not a JSON value")


def timestamp(moment: datetime | None = None) -> str:
    """ISO 8601 UTC to the second with a ``Z`` (``2030-01-02T03:04:05Z``): how times are
    written in signed envelopes and lock files."""
    moment = (moment or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")
