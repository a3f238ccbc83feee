"""HOTP (RFC 4226) and TOTP (RFC 6238) codes, and the searches that accept a typed code.

https://www.rfc-editor.org/rfc/rfc4226, https://www.rfc-editor.org/rfc/rfc6238

Pure functions: the caller keeps the next counter or the last accepted time step and consumes
the one returned here in a single conditional database statement; single use across instances
is that statement's job, not this module's. Each search computes every candidate and compares
with :func:`hmac.compare_digest` whatever the typed code looks like, so a malformed code
(letters, wrong length, empty) takes the time a wrong one does and answers the same ``None``.
"""

from __future__ import annotations

import hmac

from gatehouse.oath.errors import ParamsError
from gatehouse.oath.token_spec import ALGORITHMS, DIGITS

#: HOTP's counter is an 8-byte big-endian integer (RFC 4226 section 5.1).
MAX_COUNTER = 2**64 - 1


def hotp(secret: bytes, counter: int, digits: int, algorithm: str) -> str:
    """The code for ``counter``: HMAC, dynamic truncation (RFC 4226 section 5.3), zero-padded."""
    _check(digits, algorithm)
    if not 0 <= counter <= MAX_COUNTER:
        raise ValueError(f"counter must be between 0 and 2**64-1, not {counter}")
    return _code(secret, counter, digits, algorithm)


def time_step(now: float, period: int) -> int:
    """The RFC 6238 time step of Unix time ``now`` (T0 = 0): floor(now / period)."""
    if period <= 0:
        raise ValueError(f"period must be a positive number of seconds, not {period}")
    if now < 0:
        raise ValueError(f"time must not be before 1970, not {now}")
    return int(now // period)


def totp(secret: bytes, now: float, period: int, digits: int, algorithm: str) -> str:
    """The TOTP code at Unix time ``now``: HOTP over the time step."""
    return hotp(secret, time_step(now, period), digits, algorithm)


def match_hotp(
    secret: bytes, code: str, counter_next: int, look_ahead: int, digits: int, algorithm: str
) -> int | None:
    """The lowest counter in ``counter_next .. counter_next + look_ahead`` whose code is ``code``.

    None for no match or a malformed code. The caller stores the result + 1 as the next counter.
    """
    _check(digits, algorithm)
    _check_non_negative(counter_next=counter_next, look_ahead=look_ahead)
    probe, well_formed = _probe(code, digits)
    found: int | None = None
    for counter in range(counter_next, min(counter_next + look_ahead, MAX_COUNTER) + 1):
        if hmac.compare_digest(_code(secret, counter, digits, algorithm), probe) and found is None:
            found = counter
    return found if well_formed else None


def match_totp(
    secret: bytes,
    code: str,
    step_now: int,
    window: int,
    last_step: int | None,
    digits: int,
    algorithm: str,
) -> int | None:
    """The step in ``step_now ± window`` whose code is ``code``, never one <= ``last_step``.

    Steps are tried nearest to now first, the earlier before the later at equal distance (a code
    typed late is commoner than a fast clock), so the drift recorded is the smallest that fits.
    ``last_step`` is None (or -1) for a token that never accepted a code. A replay is told
    apart from a wrong code by asking again with ``last_step=None``: a step at or before the
    last accepted one then comes back.
    """
    _check(digits, algorithm)
    _check_non_negative(step_now=step_now, window=window)
    probe, well_formed = _probe(code, digits)
    found: int | None = None
    for step in _nearest_first(step_now, window):
        matched = hmac.compare_digest(_code(secret, step, digits, algorithm), probe)
        if matched and found is None and (last_step is None or step > last_step):
            found = step
    return found if well_formed else None


def resync_hotp(
    secret: bytes,
    code1: str,
    code2: str,
    counter_next: int,
    search: int = 1000,
    *,
    digits: int,
    algorithm: str,
) -> int | None:
    """The counter of ``code2`` when ``code1``, ``code2`` are consecutive codes past a counter.

    Used when a token has been pressed beyond the look-ahead window: two consecutive codes
    are far less likely to match by chance than one. ``code1``'s counter is searched in
    ``counter_next .. counter_next + search``. None when they are not found or malformed.
    """
    _check(digits, algorithm)
    _check_non_negative(counter_next=counter_next, search=search)
    probe1, ok1 = _probe(code1, digits)
    probe2, ok2 = _probe(code2, digits)
    last = min(counter_next + search + 1, MAX_COUNTER)
    codes = [_code(secret, c, digits, algorithm) for c in range(counter_next, last + 1)]
    found: int | None = None
    for offset in range(len(codes) - 1):
        first = hmac.compare_digest(codes[offset], probe1)
        second = hmac.compare_digest(codes[offset + 1], probe2)
        if first and second and found is None:
            found = counter_next + offset + 1
    return found if ok1 and ok2 else None


def _code(secret: bytes, counter: int, digits: int, algorithm: str) -> str:
    mac = hmac.digest(secret, counter.to_bytes(8, "big"), algorithm)
    offset = mac[-1] & 0x0F
    binary = int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFFFFFF
    return str(binary % 10**digits).zfill(digits)


def _probe(code: object, digits: int) -> tuple[str, bool]:
    """What to compare candidates with, and whether ``code`` is well formed.

    A malformed code is swapped for a string no candidate can equal (compare_digest also
    refuses non-ASCII text), so the comparisons still run.
    """
    if isinstance(code, str) and len(code) == digits and code.isascii() and code.isdigit():
        return code, True
    return "-" * digits, False


def _nearest_first(step_now: int, window: int) -> list[int]:
    steps = [step_now]
    for distance in range(1, window + 1):
        steps += [step_now - distance, step_now + distance]
    return [step for step in steps if 0 <= step <= MAX_COUNTER]


def _check(digits: int, algorithm: str) -> None:
    if digits not in DIGITS:
        raise ParamsError("digits", f"must be 6 or 8, not {digits!r}")
    if algorithm not in ALGORITHMS:
        raise ParamsError("algorithm", f"must be sha1, sha256 or sha512, not {algorithm!r}")


def _check_non_negative(**values: int) -> None:
    for name, value in values.items():
        if value < 0:
            raise ValueError(f"{name} must not be negative, not {value}")
