"""Header regular expressions: linear time, a bounded window, refusals that name the construct."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatehouse.config.loader import load_file
from gatehouse.config.policy import PolicyConfig
from gatehouse.errors import ConfigError
from gatehouse.policy.rules import EvalContext, Tri
from gatehouse.policy.rules_compile import compile_rule_set
from gatehouse.policy.rules_regex import (
    LINEAR_TIME,
    MATCH_LIMIT,
    UnsupportedRegex,
    compile_header_regex,
)

NOW = datetime(2024, 6, 12, 10, 0, tzinfo=UTC)
HEADER_MAX = 32 * 1024  # the largest header value an Access Point passes on


def header_value(pattern: str, value: str) -> Tri:
    spec = {"header": {"name": "X-Team", "matches": pattern}}
    condition = compile_rule_set({}, "public", {"r": spec}).resources["r"]
    return condition.evaluate(EvalContext(now=NOW, headers={"x-team": value})).value


def in_thread(call: object, seconds: float) -> list[object]:
    """Run ``call`` on a daemon thread; the list holds its result if it finished in time."""
    assert callable(call)
    done: list[object] = []
    thread = threading.Thread(target=lambda: done.append(call()), daemon=True)
    thread.start()
    thread.join(seconds)
    return done


# -- linear time ----------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["^(a|aa)+$", "^(a+)+$", "(x+x+)+y", "^(\\w+\\s?)*$"])
def test_backtracking_patterns_finish_on_the_largest_header(pattern: str) -> None:
    # Python's re takes seconds on 39 bytes of these and would not finish on 32 KiB; the
    # bound is generous so that a slow machine cannot fail it, and no benchmark is implied.
    value = "a" * (HEADER_MAX - 1) + "!"
    done = in_thread(lambda: header_value(pattern, value), 5.0)
    assert done == [Tri.FALSE]


def test_a_short_backtracking_case_answers_like_re_would() -> None:
    assert header_value("^(a|aa)+$", "a" * 20) is Tri.TRUE
    assert header_value("^(a|aa)+$", "a" * 20 + "!") is Tri.FALSE


# -- the window -----------------------------------------------------------------------------


def test_only_the_first_8_kib_are_searched() -> None:
    assert MATCH_LIMIT == 8192
    inside = "x" * (MATCH_LIMIT - 6) + "needle" + "x" * 100
    outside = "x" * MATCH_LIMIT + "needle"
    assert header_value("needle", inside) is Tri.TRUE
    assert header_value("needle", outside) is Tri.FALSE


def test_the_cut_is_not_the_end_of_the_value() -> None:
    exact = "a" * MATCH_LIMIT
    longer = "a" * (MATCH_LIMIT + 1)
    assert header_value("^a+$", exact) is Tri.TRUE
    assert header_value("^a+$", longer) is Tri.FALSE  # $ does not match at the cut
    assert header_value("^a+\\b", longer) is Tri.FALSE  # nor does a word boundary
    assert header_value("^a+", longer) is Tri.TRUE


def test_the_window_counts_characters_not_bytes() -> None:
    value = "é" * (MATCH_LIMIT - 1) + "!" + "é" * 10
    assert header_value("!", value) is Tri.TRUE
    assert header_value("^é+!", value) is Tri.TRUE


@given(st.text(alphabet="ab!é", max_size=40), st.sampled_from(["a+b", "^(a|b)*!$", "é", "^$"]))
def test_short_values_match_as_with_re(value: str, pattern: str) -> None:
    expected = Tri.TRUE if re.search(pattern, value) else Tri.FALSE
    assert header_value(pattern, value) is expected


# -- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "construct"),
    [
        ("^CN=(?=admin)", "lookahead (?=...)"),
        ("^CN=(?!guest)", "negative lookahead (?!...)"),
        ("(?<=CN=)admin", "lookbehind (?<=...)"),
        ("(?<!x)admin", "negative lookbehind (?<!...)"),
        ("(a)\\1", "backreference \\1"),
        ("(?P<t>a)(?P=t)", "backreference (?P=name)"),
        ("(?>a+)b", "atomic group (?>...)"),
        ("a++b", "possessive quantifier ++"),
        ("a*+b", "possessive quantifier *+"),
        ("(a)?(?(1)b|c)", "conditional group (?(...)...)"),
        ("a(?#note)", "comment group (?#...)"),
        ("(?x) a b", "flags (?x) (RE2 knows i, m, s and U)"),
        ("admin\\Z", "\\Z (write \\z for the end of the value)"),
        ("\\u00e9", "\\u escapes (write \\x{...})"),
    ],
)
def test_backtracking_constructs_are_refused_by_name(pattern: str, construct: str) -> None:
    with pytest.raises(ConfigError) as info:
        compile_rule_set({"teams": {"header": {"name": "X-Team", "matches": pattern}}})
    assert info.value.problems == [
        ("rules.teams.header.matches", f"not supported: {construct} — {LINEAR_TIME}")
    ]


def test_the_message_reads_as_documented() -> None:
    with pytest.raises(UnsupportedRegex) as info:
        compile_header_regex("(?=x)")
    assert str(info.value) == (
        "not supported: lookahead (?=...) — "
        "Gatehouse uses linear-time regular expressions (RE2 syntax)"
    )


@pytest.mark.parametrize("pattern", ["(", "a)", "[a-", "*a", "a{2,1}"])
def test_broken_patterns_are_invalid_not_unsupported(pattern: str) -> None:
    with pytest.raises(UnsupportedRegex, match=r"^invalid regular expression: "):
        compile_header_regex(pattern)


def test_what_only_re2_refuses_is_named_with_re2s_reason() -> None:
    with pytest.raises(UnsupportedRegex) as info:
        compile_header_regex("a{1001}")
    assert str(info.value) == f"not supported: invalid repetition size: {{1001}} — {LINEAR_TIME}"


@pytest.mark.parametrize(
    "pattern", ["^CN=[a-z]+$", "(?i)^blue$", "(?P<team>red|blue)", "^a\\z", "\\d{3}", "(?s).+"]
)
def test_ordinary_patterns_compile(pattern: str) -> None:
    assert compile_header_regex(pattern).source == pattern


def test_equal_sources_give_equal_conditions() -> None:
    assert compile_header_regex("^a$") == compile_header_regex("^a$")
    assert compile_header_regex("^a$") != compile_header_regex("^b$")


def test_a_policy_file_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "rules:\n  teams: {header: {name: X-Team, matches: '^(?!guest)'}}\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError) as info:
        load_file(PolicyConfig, path)
    assert str(info.value) == (
        f"{path}: rules.teams.header.matches: not supported: negative lookahead (?!...) — "
        f"{LINEAR_TIME}"
    )


def test_refusals_print_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UnsupportedRegex):
        compile_header_regex("(?=x)")
    assert capfd.readouterr() == ("", "")
