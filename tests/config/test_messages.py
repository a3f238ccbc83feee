"""Configuration errors are sentences for a person: pydantic's error types translated in one
place (:func:`gatehouse.config.loader.validate`), and YAML with a repeated key refused."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import AfterValidator, AnyHttpUrl, BaseModel, ConfigDict, Field

from gatehouse.administration.document import parse_config, parse_text
from gatehouse.administration.model import InstallationConfig
from gatehouse.administration.service import AdministrationConfig
from gatehouse.authentication.config import AuthenticationConfig
from gatehouse.config.access_point import AccessPointConfig
from gatehouse.config.loader import load_file, load_yaml, parse_yaml, validate
from gatehouse.config.policy import PolicyConfig
from gatehouse.errors import ConfigError

BANNED = ("Input should", "pydantic", "Field required", "Extra inputs", "instance of")


def problems(model: type[BaseModel], data: object) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        validate(model, data, "mine.yaml")
    for path, message in info.value.problems:
        assert path, info.value.problems
        assert not any(text in message for text in BANNED), message
        assert model.__name__ not in message, message
    return info.value.problems


# --- the whole document --------------------------------------------------------------------

MODELS = [InstallationConfig, AccessPointConfig, PolicyConfig, AuthenticationConfig]


@pytest.mark.parametrize("model", [*MODELS, AdministrationConfig], ids=lambda m: m.__name__)
@pytest.mark.parametrize(
    ("data", "got"),
    [([1, 2], "a list"), ("resources", "'resources'"), (5, "5"), (True, "true")],
)
def test_a_document_that_is_not_a_mapping(model: type[BaseModel], data: object, got: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(model, data, "mine.yaml")
    assert str(info.value) == (
        f"mine.yaml: top level: expected a mapping of sections (key: value), got {got}"
    )


def test_a_yaml_file_that_is_a_list_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("- id: ap1\n- id: ps1\n")
    with pytest.raises(ConfigError) as info:
        load_file(AccessPointConfig, path)
    assert str(info.value) == (
        f"{path}: top level: expected a mapping of sections (key: value), got a list"
    )


# --- pydantic's error types ----------------------------------------------------------------


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


def _even(value: int) -> int:
    if value % 2:
        raise ValueError(f"not an even number: {value}")
    return value


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    port: int
    name: str = "x"


class Other(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str


class Sample(BaseModel):
    """Every kind of field the translation has to cover."""

    model_config = ConfigDict(extra="forbid")
    inner: Inner = Inner(port=1)
    items: list[str] = []
    name: str = ""
    count: int = Field(default=1, ge=1, le=10)
    ratio: float = Field(default=0.5, gt=0, lt=1)
    enabled: bool = False
    mode: Literal["fast", "slow"] = "fast"
    colour: Colour = Colour.RED
    url: AnyHttpUrl | None = None
    tags: list[str] = Field(default_factory=lambda: ["a"], min_length=1, max_length=2)
    label: str = Field(default="abc", min_length=2, max_length=5)
    limits: dict[str, int] = {}
    either: int | list[str] = 0
    checked: Annotated[int, AfterValidator(_even)] | str = 0
    target: Inner | Other | None = None


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        ({"inner": [1]}, "inner", "expected a mapping (key: value), got a list"),
        ({"inner": "x"}, "inner", "expected a mapping (key: value), got 'x'"),
        ({"items": "a, b"}, "items", "expected a list, got 'a, b'"),
        ({"items": {"a": 1}}, "items", "expected a list, got a mapping"),
        ({"name": 5}, "name", "expected a string, got 5"),
        ({"name": None}, "name", "expected a string, got an empty value"),
        ({"name": ["a"]}, "name", "expected a string, got a list"),
        ({"count": "abc"}, "count", "expected a whole number, got 'abc'"),
        ({"count": 1.5}, "count", "expected a whole number, got 1.5"),
        ({"count": [1]}, "count", "expected a whole number, got a list"),
        ({"ratio": "half"}, "ratio", "expected a number, got 'half'"),
        ({"ratio": {}}, "ratio", "expected a number, got a mapping"),
        ({"enabled": "maybe"}, "enabled", "expected true/false, got 'maybe'"),
        ({"enabled": [True]}, "enabled", "expected true/false, got a list"),
        ({"mode": "quick"}, "mode", "must be one of: fast, slow; got 'quick'"),
        ({"colour": "green"}, "colour", "must be one of: red, blue; got 'green'"),
        ({"inner": {}}, "inner.port", "required field missing"),
        ({"nmae": "x"}, "nmae", "unknown field; did you mean 'name'?"),
        ({"zzz": "x"}, "zzz", "unknown field"),
        ({"inner": {"port": 1, "prot": 2}}, "inner.prot", "unknown field; did you mean 'port'?"),
        ({"count": 0}, "count", "must be at least 1, got 0"),
        ({"count": 11}, "count", "must be at most 10, got 11"),
        ({"ratio": 0}, "ratio", "must be greater than 0, got 0"),
        ({"ratio": 1.5}, "ratio", "must be less than 1, got 1.5"),
        ({"tags": []}, "tags", "must have at least 1 item, got 0"),
        ({"tags": ["a", "b", "c"]}, "tags", "must have at most 2 items, got 3"),
        ({"label": "a"}, "label", "must be at least 2 characters long"),
        ({"label": "abcdef"}, "label", "must be at most 5 characters long"),
        ({"url": "nope"}, "url", "not a URL: 'nope' (relative URL without a base)"),
        ({"url": "ftp://x"}, "url", "not a URL with scheme 'http' or 'https': 'ftp://x'"),
        ({"url": 5}, "url", "expected a URL, got 5"),
        ({"limits": {"a": "many"}}, "limits.a", "expected a whole number, got 'many'"),
        ({"limits": {5: 1}}, "limits.5", "invalid key: expected a string, got 5"),
        # a union: one sentence, the members' names (int, list[str], ...) not in the path
        ({"either": {"a": 1}}, "either", "expected a whole number or a list, got a mapping"),
        ({"either": ["a", 1]}, "either[1]", "expected a string, got 1"),
        ({"checked": 3}, "checked", "not an even number: 3"),
        ({"checked": [3]}, "checked", "expected a whole number or a string, got a list"),
        ({"target": 5}, "target", "expected a mapping (key: value), got 5"),
        ({"target": {"port": "x"}}, "target.port", "expected a whole number, got 'x'"),
        ({"target": {"path": 1}}, "target.path", "expected a string, got 1"),
    ],
)
def test_pydantic_errors_become_sentences(data: object, path: str, message: str) -> None:
    assert problems(Sample, data) == [(path, message)]


def test_long_values_are_shortened() -> None:
    [(path, message)] = problems(Sample, {"count": "x" * 100})
    assert path == "count"
    assert message == f"expected a whole number, got '{'x' * 37}...'"


def test_our_own_sentences_are_kept() -> None:
    data = {"resources": [{"id": "a", "backends": ["nope"]}], "access_point": {"workers": 0}}
    assert problems(AccessPointConfig, data) == [
        ("access_point.workers", "must be at least 1, got 0"),
        ("resources[0].backends[0]", "not a URL: 'nope' (expected http://host[:port][/path])"),
    ]


def test_a_bad_mapping_key_is_named_by_the_key() -> None:
    assert problems(PolicyConfig, {"rules": {"bad name": "public"}}) == [
        ("rules.bad name", "not a rule name: 'bad name' (letters, digits, '.', '_', '-')")
    ]


def test_an_unknown_section_suggests_the_closest() -> None:
    assert problems(InstallationConfig, {"resource": []}) == [
        ("resource", "unknown field; did you mean 'resources'?")
    ]
    assert problems(PolicyConfig, {"rules": {}, "sesions": {}}) == [
        ("sesions", "unknown field; did you mean 'sessions'?")
    ]


def test_a_draft_that_is_a_list_is_refused_at_the_top_level() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("- services\n- resources\n")
    assert info.value.problems == [
        ("top level", "expected a mapping of sections (key: value), got a list")
    ]


# --- YAML: one safe loader, duplicate keys refused -----------------------------------------

DUPLICATE_TOP = """\
global_rule: public
rules:
  staff: {groups_any: [staff]}
resources: []

rules:
  admins: {groups_any: [admins]}
"""

DUPLICATE_NESTED = """\
resources:
  - id: wiki
    backends: ["http://10.0.0.1:8000"]
  - id: docs
    path_prefix: /docs
    backends: ["http://10.0.0.2:8000"]
    path_prefix: /documents
"""


@pytest.mark.parametrize("parse", [parse_yaml, parse_text], ids=["parse_yaml", "parse_text"])
def test_duplicate_keys_are_refused_with_line_and_column(parse: object) -> None:
    assert callable(parse)
    with pytest.raises(ConfigError) as info:
        parse(DUPLICATE_TOP, "mine.yaml")
    assert str(info.value) == (
        "mine.yaml: top level: line 6, column 1: duplicate key 'rules' (first at line 2)"
    )
    with pytest.raises(ConfigError) as info:
        parse(DUPLICATE_NESTED, "mine.yaml")
    assert info.value.problems == [
        ("resources[1]", "line 7, column 5: duplicate key 'path_prefix' (first at line 5)")
    ]


def test_load_yaml_refuses_duplicate_keys(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("login:\n  title: A\n  title: B\n")
    with pytest.raises(ConfigError) as info:
        load_yaml(path)
    assert str(info.value) == (
        f"{path}: login: line 3, column 3: duplicate key 'title' (first at line 2)"
    )


def test_the_first_duplicate_in_the_document_is_reported() -> None:
    text = "a: {x: 1, x: 2}\nb: 1\nb: 2\n"
    with pytest.raises(ConfigError) as info:
        parse_yaml(text, "f")
    assert info.value.problems == [("a", "line 1, column 11: duplicate key 'x' (first at line 1)")]


def test_keys_that_only_look_alike_are_not_duplicates() -> None:
    assert parse_yaml("'1': a\n1: b\n") == {"1": "a", 1: "b"}
    assert parse_yaml("true: c\n'true': d\n") == {True: "c", "true": "d"}
    with pytest.raises(ConfigError) as info:
        parse_yaml("on: 1\ntrue: 2\n", "f")  # both are YAML 1.1 booleans
    assert info.value.problems == [
        ("top level", "line 2, column 1: duplicate key true (first at line 1)")
    ]


def test_safe_load_semantics_are_kept() -> None:
    assert parse_yaml("") == {}
    assert parse_yaml("# only a comment\n") == {}
    assert parse_yaml("[1, 2]") == [1, 2]
    assert parse_yaml('{"json": [true, null, 1.5]}') == {"json": [True, None, 1.5]}
    # anchors, aliases and merge keys: an explicit key overrides a merged one
    text = "base: &b {port: 1, host: h}\nother:\n  <<: *b\n  port: 2\nsame: *b\n"
    assert parse_yaml(text) == {
        "base": {"port": 1, "host": "h"},
        "other": {"port": 2, "host": "h"},
        "same": {"port": 1, "host": "h"},
    }
    with pytest.raises(ConfigError, match="invalid YAML"):
        parse_yaml("!!python/object/apply:os.system ['true']\n", "f")
    with pytest.raises(ConfigError, match=r"^f: line 2, column 1: invalid YAML:"):
        parse_yaml("a: [\n", "f")
    with pytest.raises(ConfigError, match="invalid YAML"):
        parse_yaml("a: 1\n---\nb: 2\n", "f")


def test_a_recursive_alias_does_not_hang() -> None:
    data = parse_yaml("a: &x [1, *x]\n")
    assert isinstance(data, dict)
    assert data["a"][0] == 1
