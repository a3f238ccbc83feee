"""Validation errors as sentences for a person: ``(field path, sentence)`` problems.

pydantic's error types are translated here, so no message shows pydantic's wording or the
name of one of our classes; a problem with the whole document has the path ``top level``;
the members of a union are collapsed into one sentence; an unknown field gets a "did you
mean" from the fields the model has at that place.
"""

from __future__ import annotations

import datetime
import difflib
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import ErrorDetails

#: The path of a problem with the whole document.
TOP_LEVEL = "top level"

Loc = tuple[int | str, ...]


def field_path(loc: tuple[int | str, ...]) -> str:
    """Render a pydantic error location as ``resources[2].backends[0]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


# --- values as a person wrote them ---------------------------------------------------------

_MAX_SHOWN = 40


def shown(value: object) -> str:
    """A short rendering of a value from the document, as written in YAML terms."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return repr(value if len(value) <= _MAX_SHOWN else value[: _MAX_SHOWN - 3] + "...")
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, datetime.date | datetime.time):
        return f"a date or time ({value.isoformat()})"
    if isinstance(value, bytes | bytearray):
        return "binary data"
    if isinstance(value, set | frozenset):
        return "a set"
    return "a value of another kind"


# --- pydantic's error types as sentences ---------------------------------------------------

_MAPPING = "a mapping (key: value)"

#: What a type error expected, by pydantic error type.
_EXPECTED = {
    "dict_type": _MAPPING,
    "mapping_type": _MAPPING,
    "model_type": _MAPPING,
    "model_attributes_type": _MAPPING,
    "dataclass_type": _MAPPING,
    "list_type": "a list",
    "tuple_type": "a list",
    "set_type": "a list",
    "frozen_set_type": "a list",
    "iterable_type": "a list",
    "string_type": "a string",
    "string_sub_type": "a string",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "decimal_type": "a number",
    "decimal_parsing": "a number",
    "bool_type": "true/false",
    "bool_parsing": "true/false",
    "none_required": "an empty value",
    "url_type": "a URL",
    "date_type": "a date",
    "date_parsing": "a date",
    "datetime_type": "a date and time",
    "datetime_parsing": "a date and time",
    "time_type": "a time of day",
    "time_parsing": "a time of day",
    "timedelta_type": "a duration",
    "timedelta_parsing": "a duration",
    "bytes_type": "text",
    "is_instance_of": "a value of another kind",
    "invalid-json-value": "plain data (text, a number, true/false, a list or a mapping)",
}


def _choices(expected: object) -> list[str]:
    """``"'a', 'b' or 'c'"`` (pydantic's rendering of a literal's values) as ``[a, b, c]``."""
    text = str(expected)
    parts = re.split(r", | or ", text)
    return [part[1:-1] if len(part) > 1 and part[0] == part[-1] == "'" else part for part in parts]


def _one_of(expected: object) -> str:
    choices = _choices(expected)
    return f"must be {choices[0]}" if len(choices) == 1 else f"must be one of: {', '.join(choices)}"


def _expected(error: Mapping[str, Any]) -> str | None:
    """What the value should have been, for a type mismatch; None for other errors."""
    kind = str(error.get("type", ""))
    if kind in ("literal_error", "enum"):
        choices = _choices(dict(error.get("ctx") or {}).get("expected", ""))
        return choices[0] if len(choices) == 1 else f"one of ({', '.join(choices)})"
    return _EXPECTED.get(kind)


def _count(n: object, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _message(error: Mapping[str, Any], top_level: bool = False) -> str:
    """One pydantic error as a sentence for a person (the path is rendered elsewhere)."""
    kind = str(error.get("type", ""))
    msg = str(error.get("msg", "invalid"))
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    value = error.get("input")
    got = shown(value)
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    if kind in ("value_error", "assertion_error"):
        return msg
    if kind == "missing":
        return "required field missing"
    if kind == "extra_forbidden":
        return "unknown field"
    if top_level and _EXPECTED.get(kind) == _MAPPING:
        return f"expected a mapping of sections (key: value), got {got}"
    if kind in ("literal_error", "enum"):
        return f"{_one_of(ctx.get('expected', ''))}; got {got}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bound, wording = {
            "greater_than": ("gt", "greater than"),
            "greater_than_equal": ("ge", "at least"),
            "less_than": ("lt", "less than"),
            "less_than_equal": ("le", "at most"),
        }[kind]
        return f"must be {wording} {shown(ctx.get(bound))}, got {got}"
    if kind == "multiple_of":
        return f"must be a multiple of {shown(ctx.get('multiple_of'))}, got {got}"
    if kind == "finite_number":
        return f"expected a finite number, got {got}"
    if kind in ("too_short", "too_long"):
        one, many = (
            ("entry", "entries") if ctx.get("field_type") == "Dictionary" else ("item", "items")
        )
        limit = ctx.get("min_length" if kind == "too_short" else "max_length")
        wording = "at least" if kind == "too_short" else "at most"
        return f"must have {wording} {_count(limit, one, many)}, got {ctx.get('actual_length')}"
    if kind == "string_too_short":
        return f"must be at least {_count(ctx.get('min_length'), 'character', 'characters')} long"
    if kind == "string_too_long":
        return f"must be at most {_count(ctx.get('max_length'), 'character', 'characters')} long"
    if kind == "string_pattern_mismatch":
        return f"does not match the pattern {ctx.get('pattern')!s}: {got}"
    if kind == "string_unicode":
        return "expected text, got bytes that are not UTF-8"
    if kind == "int_parsing_size":
        return f"number too large: {got}"
    if kind in ("url_parsing", "url_syntax_violation"):
        return f"not a URL: {got} ({ctx.get('error', 'cannot parse it')})"
    if kind == "url_scheme":
        return f"not a URL with scheme {ctx.get('expected_schemes')}: {got}"
    if kind == "url_too_long":
        return f"URL too long: at most {ctx.get('max_length')} characters"
    expected = _expected(error)
    if expected is not None:
        return f"expected {expected}, got {got}"
    if msg.startswith("Input should be "):  # a pydantic type not listed above
        return f"must be {msg[len('Input should be ') :]}"
    return msg


# --- locations: union members, mapping keys ------------------------------------------------

#: pydantic's names for the members of a union (``function-after[...]``, ``list[str]``,
#: ``literal['a','b']``) and for its scalar types; a model member is named by its class.
_TAG = re.compile(r"^[a-z][a-z-]*\[.*\]$")
_TAG_NAMES = frozenset(
    {"str", "int", "float", "bool", "bytes", "none", "list", "dict", "set", "frozenset"}
    | {"tuple", "decimal", "date", "datetime", "time", "timedelta", "url", "uuid", "any"}
)
_CLASS = re.compile(r"^[A-Z][A-Za-z0-9_]*$")
_KEY = "[key]"


def _is_tag(part: int | str) -> bool:
    return isinstance(part, str) and (
        part in _TAG_NAMES or bool(_TAG.match(part)) or bool(_CLASS.match(part))
    )


_ABSENT = object()


def _child(value: object, part: int | str) -> object:
    if isinstance(value, Mapping):
        return value.get(part, _ABSENT)
    if isinstance(value, list | tuple) and isinstance(part, int) and 0 <= part < len(value):
        return value[part]
    return _ABSENT


@dataclass
class _Located:
    """One error's location split into what is in the document and what is pydantic's."""

    loc: Loc  # the field path, union member names and ``[key]`` left out
    union: Loc | None  # where the outermost union is, for errors inside one
    member: str  # the union member this error belongs to
    deeper: bool  # the member got past the type check (more field parts after the union)
    key: bool  # the error is about a mapping key, not its value


def _locate(loc: Loc, data: object) -> _Located:
    """Walk ``loc`` through ``data``: a part that the data has is a field; a part it has not
    is a field too (missing or unknown), unless it is the name of a union member."""
    out: list[int | str] = []
    union: Loc | None = None
    member = ""
    after = 0
    key = False
    current: object = data
    for part in loc:
        if part == _KEY:
            key = True
            continue
        child = _child(current, part)
        if child is not _ABSENT:
            if isinstance(current, Mapping) and not isinstance(part, str):
                part = str(part)  # a mapping key written as a number: rules.5, not rules[5]
            current = child
        elif _is_tag(part):
            if union is None:
                union, member = tuple(out), str(part)
            continue
        else:
            current = _ABSENT
        out.append(part)
        if union is not None:
            after += 1
    return _Located(tuple(out), union, member, after > 0, key)


# --- the fields a model has at a location, for "did you mean" -----------------------------


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _step(tp: Any, part: int | str) -> Any:
    """The type found at ``part`` inside a value of type ``tp`` (None: not known)."""
    tp = _unwrap(tp)
    if _is_union(tp):
        members = [m for m in get_args(tp) if m is not type(None)]
        for candidate in members:
            if getattr(_unwrap(candidate), "__name__", None) == part:
                return candidate
        for candidate in members:
            found = _step(candidate, part)
            if found is not None:
                return found
        return tp if _is_tag(part) else None
    if _is_model(tp):
        for name, info in tp.model_fields.items():
            if part in (name, info.alias):
                return info.annotation
        return None
    origin, args = get_origin(tp), get_args(tp)
    if origin in (list, tuple, set, frozenset, Sequence) and isinstance(part, int) and args:
        return args[0]
    if origin in (dict, Mapping) and len(args) == 2:
        return args[1]
    return None


def _fields_at(model: type[BaseModel], loc: Loc) -> list[str]:
    """The field names of the model that holds ``loc``'s last part (empty if not known)."""
    tp: Any = model
    for part in loc[:-1]:
        tp = _step(tp, part)
        if tp is None:
            return []
    tp = _unwrap(tp)
    models = [_unwrap(m) for m in get_args(tp)] if _is_union(tp) else [tp]
    names: list[str] = []
    for candidate in models:
        if _is_model(candidate):
            names += [info.alias or name for name, info in candidate.model_fields.items()]
    return names


def _unknown_field(model: type[BaseModel], loc: Loc, found: Loc) -> str:
    name = found[-1] if found else None
    if isinstance(name, str):
        close = difflib.get_close_matches(name, _fields_at(model, loc), n=1, cutoff=0.6)
        if close:
            return f"unknown field; did you mean {close[0]!r}?"
    return "unknown field"


# --- validate ------------------------------------------------------------------------------


def _path(loc: Loc) -> str:
    return field_path(loc) or TOP_LEVEL


def _is_mismatch(error: ErrorDetails) -> bool:
    return _expected(error) is not None


def problems(
    model: type[BaseModel], data: object, errors: list[ErrorDetails]
) -> list[tuple[str, str]]:
    """Every error of validating ``data`` against ``model`` as ``(path, sentence)``; the
    errors of one union become one problem."""
    located = [(error, _locate(tuple(error["loc"]), data)) for error in errors]
    unions: dict[Loc, list[tuple[ErrorDetails, _Located]]] = {}
    for error, where in located:
        if where.union is not None:
            unions.setdefault(where.union, []).append((error, where))
    problems: list[tuple[str, str]] = []
    done: set[Loc] = set()
    for error, where in located:
        if where.union is None:
            problems.append(_problem(model, error, where))
            continue
        if where.union in done:
            continue
        done.add(where.union)
        problems += _union_problems(model, where.union, unions[where.union])
    unique: list[tuple[str, str]] = []
    for problem in problems:
        if problem not in unique:
            unique.append(problem)
    return unique


def _problem(model: type[BaseModel], error: ErrorDetails, where: _Located) -> tuple[str, str]:
    path = _path(where.loc)
    if error["type"] == "extra_forbidden":
        return path, _unknown_field(model, tuple(error["loc"]), where.loc)
    message = _message(error, top_level=not where.loc)
    if where.key and error["type"] not in ("value_error", "assertion_error"):
        message = f"invalid key: {message}"
    return path, message


def _union_problems(
    model: type[BaseModel], loc: Loc, errors: list[tuple[ErrorDetails, _Located]]
) -> list[tuple[str, str]]:
    """A value that matches no member of a union: the problems of the member it came
    closest to (it got past the type check), else one ``expected A or B, got C``."""
    members: dict[str, list[tuple[ErrorDetails, _Located]]] = {}
    for error, where in errors:
        members.setdefault(where.member, []).append((error, where))
    close = [
        found
        for found in members.values()
        if any(where.deeper or not _is_mismatch(error) for error, where in found)
    ]
    if close:
        best = min(close, key=len)
        return [_problem(model, error, where) for error, where in best]
    expected: list[str] = []
    for error, _ in errors:
        wanted = _expected(error) or "another kind of value"
        if wanted not in expected:
            expected.append(wanted)
    got = shown(errors[0][0].get("input"))
    return [(_path(loc), f"expected {' or '.join(expected)}, got {got}")]
