"""The adapter's shortcuts on the introspection path (gatehouse.oauth2.adapter): the same
results as the slower code they replace."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from authlib.oauth2.rfc6749 import InsecureTransportError, OAuth2Request

from gatehouse.oauth2.adapter import Request, Work, dumps, unprintable


def test_a_request_has_every_attribute_authlibs_constructor_sets() -> None:
    theirs = OAuth2Request("POST", "https://sso.example.org/token", headers={"A": "b"})
    ours = Request("post", "https://sso.example.org/token", {"A": "b"}, [], [], Work(0))
    missing = set(vars(theirs)) - set(vars(ours))
    assert not missing, f"Authlib's OAuth2Request sets {sorted(missing)}: set them too"
    assert (ours.method, ours.uri, ours.headers.get("a")) == ("POST", theirs.uri, "b")


@pytest.mark.parametrize(
    ("uri", "secure"),
    [
        ("https://sso.example.org/_gatehouse/oauth2/introspect", True),
        ("http://127.0.0.1:8080/_gatehouse/oauth2/introspect", True),
        ("http://localhost/_gatehouse/oauth2/token", True),
        ("http://sso.example.org/_gatehouse/oauth2/introspect", False),
        ("ftp://sso.example.org/x", False),
    ],
)
def test_the_transport_is_checked_as_authlib_does(uri: str, secure: bool) -> None:
    def refused(make: Callable[[], object]) -> bool:
        try:
            make()
        except InsecureTransportError:
            return True
        return False

    assert refused(lambda: OAuth2Request("POST", uri)) is not secure
    for _ in range(2):  # the second time from the kept answer
        assert refused(lambda: Request("POST", uri, {}, [], [], Work(0))) is not secure


@pytest.mark.parametrize(
    ("pairs", "named"),
    [
        ([("token", "a" * 800)], None),
        ([("token", "ok ~!"), ("x", "caf\u00e9")], "x"),
        ([("token", "tab\there")], "token"),
        ([("token", "del\x7f")], "token"),
        ([("t\u00f6ken", "value")], "(a parameter name)"),
        ([], None),
    ],
)
def test_unprintable_names_the_first_parameter_outside_printable_ascii(
    pairs: list[tuple[str, str]], named: str | None
) -> None:
    assert unprintable(pairs) == named


def test_dumps_is_json_and_takes_what_orjson_refuses() -> None:
    data = {"active": True, "scope": "openid profile", "exp": 2_000_000_000, "aud": ["a"]}
    assert json.loads(dumps(data)) == data
    huge = {"n": 2**70}
    assert json.loads(dumps(huge)) == huge
