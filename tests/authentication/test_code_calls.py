"""The code calls' wire formats, both directions from one declaration each; requests are
checked and errors name the field; the code is never in a request's repr."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gatehouse.authentication.calls import (
    CODE_SEND,
    CODE_STATUS,
    CODE_VERIFY,
    CodeSendAnswer,
    CodeSendRequest,
    CodeStatusAnswer,
    CodeStatusRequest,
    CodeVerifyAnswer,
    CodeVerifyRequest,
)
from gatehouse.internal.calls import Call
from gatehouse.internal.errors import ServiceError
from gatehouse.trust.identity import POLICY

KEY = "send-key-0123456789"
MESSAGE = "message-id-0123456789"


@pytest.mark.parametrize(
    ("call", "value"),
    [
        (CODE_SEND, CodeSendRequest("alice", "email_otp", KEY, "192.0.2.1")),
        (CODE_SEND, CodeSendRequest("alice", "sms_otp", "k" * 64, "2001:db8::1")),
        (CODE_STATUS, CodeStatusRequest("alice", MESSAGE)),
        (CODE_VERIFY, CodeVerifyRequest("alice", "email_otp", "123456", "192.0.2.1", KEY)),
    ],
)
def test_requests_round_trip(call: Call[Any, Any], value: object) -> None:
    assert call.request.decode(call.request.encode(value)) == value


@pytest.mark.parametrize(
    ("call", "value"),
    [
        (CODE_SEND, CodeSendAnswer("accepted", MESSAGE, "accepted", "a***@example.org")),
        (CODE_SEND, CodeSendAnswer("accepted", MESSAGE, "sent", "+49*********12")),
        (CODE_SEND, CodeSendAnswer("throttled", retry_after=25.0)),
        (CODE_SEND, CodeSendAnswer("no_contact", message="no e-mail address on file")),
        (
            CODE_STATUS,
            CodeStatusAnswer(MESSAGE, "failed", "a***@example.org", "connection refused"),
        ),
        (CODE_STATUS, CodeStatusAnswer(MESSAGE, "unknown")),
        (CODE_VERIFY, CodeVerifyAnswer("ok")),
        (CODE_VERIFY, CodeVerifyAnswer("expired")),
        (CODE_VERIFY, CodeVerifyAnswer("locked")),
    ],
)
def test_answers_round_trip(call: Call[Any, Any], value: object) -> None:
    assert call.answer.decode(call.answer.encode(value)) == value


def test_policy_services_only_and_retry_safe() -> None:
    for call in (CODE_SEND, CODE_STATUS, CODE_VERIFY):
        assert call.roles == {POLICY}
        assert call.retry_safe


def test_the_code_is_not_in_the_repr() -> None:
    assert "987654" not in repr(CodeVerifyRequest("alice", "email_otp", "987654", "::1", KEY))


@pytest.mark.parametrize(
    ("call", "body", "field"),
    [
        (CODE_SEND, {"method": "email_otp", "key": KEY, "client_ip": "::1"}, "username: missing"),
        (CODE_SEND, {"username": "a", "method": "otp", "key": KEY, "client_ip": "::1"}, "method:"),
        (
            CODE_SEND,
            {"username": "a", "method": "sms_otp", "key": "short", "client_ip": "::1"},
            "key:",
        ),
        (
            CODE_SEND,
            {"username": "a", "method": "sms_otp", "key": KEY, "client_ip": "x"},
            "client_ip:",
        ),
        (CODE_STATUS, {"username": "a", "id": "../etc"}, "id: not a message id"),
        (
            CODE_VERIFY,
            {"username": "a", "method": "email_otp", "code": 1, "client_ip": "::1", "attempt": KEY},
            "code: must be a string",
        ),
        (
            CODE_VERIFY,
            {
                "username": "a",
                "method": "email_otp",
                "code": "1",
                "client_ip": "::1",
                "attempt": "x",
            },
            "attempt:",
        ),
    ],
)
def test_requests_are_checked_and_name_the_field(
    call: Call[Any, Any], body: dict[str, Any], field: str
) -> None:
    with pytest.raises(ServiceError) as info:
        call.request.decode(orjson.dumps(body))
    assert info.value.status == 400
    assert info.value.message.startswith(field)


def test_malformed_answers_are_refused() -> None:
    with pytest.raises(ValueError, match="result"):
        CODE_VERIFY.answer.decode(b'{"result": "maybe"}')
    with pytest.raises(ValueError, match="id"):
        CODE_SEND.answer.decode(b'{"result": "accepted", "id": "x", "status": "sent"}')
    with pytest.raises(ValueError, match="status"):
        CODE_STATUS.answer.decode(b'{"id": "m", "status": "lost"}')
