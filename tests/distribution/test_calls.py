"""The Distribution calls' wire formats: recipient checks, errors naming the field, masks."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatehouse.distribution.calls import (
    STATUS,
    SUBMIT,
    MessageStatus,
    SubmitAnswer,
    SubmitRequest,
    check_email,
    check_phone,
    mask_email,
    mask_phone,
    recipient_hint,
)
from gatehouse.internal.errors import ServiceError
from gatehouse.trust.identity import ACCESS_POINT, AUTHENTICATION, POLICY, ROLES


@pytest.mark.parametrize(
    "address",
    ["jane@example.org", "j.doe+codes@mail.example.co.uk", "a_b-c@xn--bcher-kva.example"],
)
def test_good_addresses(address: str) -> None:
    assert check_email(address) is None


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("jane", "NAME@DOMAIN"),
        ("@example.org", "NAME@DOMAIN"),
        ("jane@localhost", "with a dot"),
        ("jane@-bad.example", "host name"),
        ("jane@example.123", "not a host name"),
        ("ja ne@example.org", "spaces"),
        ("jane@example.org\r\nBcc: x@evil.example", "control"),
        ("a..b@example.org", "before '@'"),
        ('"quoted"@example.org', "before '@'"),
        ("x" * 65 + "@example.org", "longer than 64"),
        ("a@" + "b" * 250 + ".org", "longer than 254"),
    ],
)
def test_bad_addresses(address: str, why: str) -> None:
    reason = check_email(address)
    assert reason is not None
    assert why in reason


@pytest.mark.parametrize("number", ["+4915112345678", "+12025550123", "+441"])
def test_good_numbers(number: str) -> None:
    assert check_phone(number) is None


@pytest.mark.parametrize(
    "number", ["015112345678", "+0151123", "+49 151 123", "+1234567890123456", "+", "+49-151"]
)
def test_bad_numbers(number: str) -> None:
    assert check_phone(number) is not None


def test_masks() -> None:
    assert mask_email("jane@example.org") == "j***@example.org"
    assert mask_phone("+4915112345612") == "+49*********12"
    assert recipient_hint("jane@example.org", "+4915112345612") == (
        "j***@example.org, +49*********12"
    )
    assert recipient_hint(None, None) == ""


@given(st.from_regex(r"\+[1-9][0-9]{4,14}", fullmatch=True))
def test_a_masked_number_keeps_only_country_code_and_two_digits(number: str) -> None:
    masked = mask_phone(number)
    assert len(masked) == len(number)
    assert masked[:3] == number[:3]
    assert masked[-2:] == number[-2:]
    assert set(masked[3:-2]) <= {"*"}


def body(**changes: Any) -> bytes:
    data: dict[str, Any] = {
        "key": "k" * 16,
        "purpose": "code",
        "email": "jane@example.org",
        "phone": None,
        "subject": "Your code",
        "text": "123456",
        "channels": ["email", "sms"],
        "ttl": 300,
        "username": "jane",
    }
    data.update(changes)
    return orjson.dumps({k: v for k, v in data.items() if v is not ...})


def test_a_request_round_trips() -> None:
    request = SubmitRequest(
        key="k" * 16,
        purpose="code",
        email="jane@example.org",
        phone="+4915112345678",
        subject="Your code",
        text="code 987654",
        channels=["sms", "email"],
        ttl=120,
        username="jane",
    )
    assert SUBMIT.request.decode(SUBMIT.request.encode(request)) == request
    assert "987654" not in repr(request)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"key": "short"}, "key:"),
        ({"key": "k" * 15 + "/"}, "key:"),
        ({"key": ...}, "key: missing"),
        ({"purpose": "spam"}, "purpose:"),
        ({"email": None, "phone": None}, "email, phone:"),
        ({"email": "not-an-address"}, "email:"),
        ({"phone": "0151 1234"}, "phone:"),
        ({"phone": 4915112345678}, "phone: must be null or a string"),
        ({"subject": "a\r\nBcc: x@evil.example"}, "subject:"),
        ({"subject": "s" * 201}, "subject:"),
        ({"text": ""}, "text: empty"),
        ({"text": "t" * 16385}, "text:"),
        ({"channels": []}, "channels:"),
        ({"channels": ["fax"]}, "channels:"),
        ({"channels": ["email", "email"]}, "channels: email given twice"),
        ({"ttl": 0}, "ttl:"),
        ({"ttl": 86401}, "ttl:"),
        ({"ttl": 1.5}, "ttl:"),
        ({"ttl": True}, "ttl:"),
        ({"username": "u" * 257}, "username:"),
    ],
)
def test_bad_requests_name_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ServiceError) as caught:
        SUBMIT.request.decode(body(**changes))
    assert caught.value.status == 400
    assert caught.value.message.startswith(field)


def test_channels_may_be_left_to_the_configuration() -> None:
    assert SUBMIT.request.decode(body(channels=None)).channels is None


def test_answers_round_trip() -> None:
    answer = SubmitAnswer("a" * 22, "accepted")
    assert SUBMIT.answer.decode(SUBMIT.answer.encode(answer)) == answer
    status = MessageStatus("a" * 22, "sent", "mail", 2, "j***@example.org", None)
    assert STATUS.answer.decode(STATUS.answer.encode(status)) == status
    with pytest.raises(ValueError, match="status"):
        STATUS.answer.decode(
            orjson.dumps({**orjson.loads(STATUS.answer.encode(status)), "status": "lost"})
        )


def test_only_policy_and_authentication_may_submit_or_ask() -> None:
    for call in (SUBMIT, STATUS):
        assert call.roles == {POLICY, AUTHENTICATION}
        assert not call.allows(ACCESS_POINT)
        assert call.retry_safe
    assert "distribution" in ROLES
