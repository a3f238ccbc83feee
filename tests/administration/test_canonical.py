"""Canonical JSON: one byte string per document, stable through a decode and re-encode."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatehouse.administration.canonical import NotCanonical, canonical_json, timestamp


def test_sorted_keys_no_whitespace_utf8() -> None:
    assert canonical_json({"b": 1, "a": [1.0, 0.1, None, True], "é": "ü"}) == (
        '{"a":[1.0,0.1,null,true],"b":1,"é":"ü"}'.encode()
    )


def test_floats_and_ints_stay_apart() -> None:
    assert canonical_json([30, 30.0, 1e20, 1e-7]) == b"[30,30.0,1e+20,1e-7]"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (float("nan"), r"\$\[0\]: nan has no JSON form"),
        (float("inf"), "inf has no JSON form"),
        (2**53, "integer beyond 53 bits"),
        ({1: "x"}, r"\$\[0\]: key 1 is not a string"),
        ({"a": (1, 2)}, r"\$\[0\]\.a: tuple is not a JSON value"),
        (datetime(2030, 1, 1, tzinfo=UTC), "datetime is not a JSON value"),
        (b"x", "bytes is not a JSON value"),
    ],
)
def test_what_has_no_canonical_form_is_refused(value: object, message: str) -> None:
    with pytest.raises(NotCanonical, match=message):
        canonical_json([value])


json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_decoding_and_encoding_again_gives_the_same_bytes(value: Any) -> None:
    encoded = canonical_json(value)
    assert canonical_json(orjson.loads(encoded)) == encoded


def test_timestamp() -> None:
    moment = datetime(2030, 1, 2, 5, 4, 5, 999999, tzinfo=timezone(timedelta(hours=2)))
    assert timestamp(moment) == "2030-01-02T03:04:05Z"
    assert timestamp().endswith("Z")
