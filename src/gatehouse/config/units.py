"""Human-friendly sizes ("64MiB") and durations ("30s") in configuration files."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_FACTORS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_FACTORS = {"": 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "h": 3600.0}


def parse_size(value: object) -> object:
    """Turn ``"64MiB"``, ``"10k"`` or ``1024`` into a byte count (binary units)."""
    if isinstance(value, bool):
        raise ValueError("not a size")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        match = _SIZE.match(value)
        if not match:
            raise ValueError(f"not a size: {value!r} (use e.g. 1024, 64KiB, 10MiB, 1GiB)")
        unit = (match.group(2) or "").lower()[:1]
        return int(match.group(1)) * _SIZE_FACTORS[unit]
    return value


def parse_duration(value: object) -> object:
    """Turn ``"30s"``, ``"250ms"``, ``"5m"`` or a number of seconds into seconds."""
    if isinstance(value, bool):
        raise ValueError("not a duration")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"not a duration: {value!r} (use e.g. 30, 30s, 250ms, 5m)")
        return float(match.group(1)) * _DURATION_FACTORS[match.group(2) or ""]
    return value


ByteSize = Annotated[int, BeforeValidator(parse_size)]
Seconds = Annotated[float, BeforeValidator(parse_duration)]
