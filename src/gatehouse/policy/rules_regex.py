"""Header regular expressions that run in linear time: RE2 syntax, a bounded window.

A ``header: {name, matches}`` condition is evaluated on every decision against a value the
client chose (up to 32 KiB), so a backtracking engine would let one request stall a Policy
service (``^(a|aa)+$`` on 39 bytes took 4 s with Python's ``re``). Patterns are compiled with
RE2 (https://github.com/google/re2/wiki/Syntax), whose matching time is linear in the input;
constructs that need backtracking (backreferences, lookaround, atomic groups, possessive
quantifiers) are refused when the configuration is validated, with a message naming the
construct.

Only the first :data:`MATCH_LIMIT` characters of a value are searched. The window keeps its
context: ``$`` and ``\\b`` see that the value goes on, so a match inside the window is a
match of the whole value (an end-anchored pattern never matches a longer value); a match that
would need text past the window is not found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import re2

#: The number of characters of a header value a pattern is searched in.
MATCH_LIMIT = 8192

LINEAR_TIME = "Gatehouse uses linear-time regular expressions (RE2 syntax)"

#: RE2 error prefixes of constructs Python's ``re`` has and RE2 refuses, with their names.
_PERL_OPERATORS = (
    ("(?=", "lookahead (?=...)"),
    ("(?!", "negative lookahead (?!...)"),
    ("(?<=", "lookbehind (?<=...)"),
    ("(?<!", "negative lookbehind (?<!...)"),
    ("(?>", "atomic group (?>...)"),
    ("(?(", "conditional group (?(...)...)"),
    ("(?#", "comment group (?#...)"),
)
_ESCAPES = {
    "\\Z": "\\Z (write \\z for the end of the value)",
    "\\G": "\\G",
    "\\u": "\\u escapes (write \\x{...})",
    "\\U": "\\U escapes (write \\x{...})",
    "\\N": "\\N{...} named characters",
}


class UnsupportedRegex(ValueError):
    """The pattern is invalid or needs a construct RE2 lacks; the message says which."""


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # RE2 would print every refused pattern on stderr
    options.never_capture = True  # only "is there a match" is asked
    return options


@dataclass(frozen=True, slots=True)
class HeaderRegex:
    """A compiled header pattern; equal when the source is."""

    source: str
    compiled: Any = field(compare=False, repr=False)

    def found_in(self, value: str) -> bool:
        """True if the pattern matches somewhere in the first :data:`MATCH_LIMIT` characters.

        One character past the window is passed as context, so the cost is bounded whatever
        the value's length and ``$`` does not match at the cut.
        """
        if len(value) <= MATCH_LIMIT:
            return self.compiled.search(value) is not None
        return self.compiled.search(value[: MATCH_LIMIT + 1], 0, MATCH_LIMIT) is not None


def compile_header_regex(pattern: str) -> HeaderRegex:
    """Compile ``pattern`` with RE2.

    Raises:
        UnsupportedRegex: ``not supported: <construct> — ...`` for what RE2 lacks,
            ``invalid regular expression: ...`` for a pattern no engine would take.
    """
    try:
        return HeaderRegex(pattern, re2.compile(pattern, _options()))
    except re2.error as exc:
        raise UnsupportedRegex(_explain(pattern, _text(exc))) from None


def _text(exc: Exception) -> str:
    detail = exc.args[0] if exc.args else ""
    if isinstance(detail, bytes):
        return detail.decode("utf-8", "replace")
    return str(detail)


def _explain(pattern: str, error: str) -> str:
    construct = _construct(pattern, error)
    if construct is not None:
        return f"not supported: {construct} — {LINEAR_TIME}"
    try:
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        return f"invalid regular expression: {exc}"
    return f"not supported: {error} — {LINEAR_TIME}"


def _construct(pattern: str, error: str) -> str | None:
    """The name of the backtracking-only construct RE2's ``error`` is about, if it is one."""
    kind, _, operand = error.partition(": ")
    if kind == "invalid perl operator":
        for prefix, name in _PERL_OPERATORS:
            if operand.startswith(prefix):
                return name
        if operand.startswith("(?P") and "(?P=" in pattern:
            return "backreference (?P=name)"
        if re.fullmatch(r"\(\?[a-zA-Z-]+", operand):
            return f"flags {operand}) (RE2 knows i, m, s and U)"
        return None
    if kind == "bad repetition operator" and operand.endswith("+"):
        return f"possessive quantifier {operand}"
    if kind == "invalid escape sequence":
        if re.fullmatch(r"\\[1-9]", operand):
            return f"backreference {operand}"
        return _ESCAPES.get(operand)
    return None
