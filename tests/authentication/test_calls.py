"""The password check's wire formats, both directions from one declaration (``VERIFY``)."""

from __future__ import annotations

import orjson
import pytest

from gatehouse.authentication.calls import (
    VERIFY,
    Account,
    StatusAnswer,
    VerifyAnswer,
    VerifyRequest,
)
from gatehouse.internal.errors import ServiceError

ALICE = Account("alice", "Alice", "alice@example.test", ("admins", "staff"), True)


@pytest.mark.parametrize(
    "request_",
    [
        VerifyRequest("alice", "correct horse", "192.0.2.1"),
        VerifyRequest("alice", "", "2001:db8::1", "abcdefghijk"),
        VerifyRequest("alice", "x", "192.0.2.1", otp=True),
    ],
)
def test_requests_round_trip(request_: VerifyRequest) -> None:
    assert VERIFY.request.decode(VERIFY.request.encode(request_)) == request_


def test_a_request_is_checked_and_its_address_made_canonical() -> None:
    body = {"username": "alice", "password": "x", "client_ip": "::ffff:192.0.2.1"}
    assert VERIFY.request.decode(orjson.dumps(body)).client_ip == "192.0.2.1"
    for bad, message in [
        ({**body, "username": ""}, "username: empty"),
        ({**body, "client_ip": "somewhere"}, "client_ip: not an IP address"),
        ({**body, "device": "short"}, "device: must be null or a device id"),
        ({**body, "otp": "yes"}, "otp: must be true or false"),
        ({"username": "alice", "password": "x"}, "client_ip: missing"),
    ]:
        with pytest.raises(ServiceError, match=message):
            VERIFY.request.decode(orjson.dumps(bad))
    with pytest.raises(ServiceError, match="larger than"):
        VERIFY.request.decode(orjson.dumps({**body, "password": "x" * VERIFY.max_body}))


@pytest.mark.parametrize(
    "answer",
    [
        VerifyAnswer("ok", ALICE, device="abcdefghijk"),
        VerifyAnswer("ok", Account("bob"), device=None),
        VerifyAnswer("ok", ALICE, device="abcdefghijk", otp=StatusAnswer(1, None, False)),
        VerifyAnswer("ok", Account("bob"), otp=StatusAnswer(0, "TOTP0001", True)),
        VerifyAnswer("invalid"),
        VerifyAnswer("locked", retry_after=600),
    ],
)
def test_answers_round_trip(answer: VerifyAnswer) -> None:
    assert VERIFY.answer.decode(VERIFY.answer.encode(answer)) == answer


def test_the_answer_on_the_wire_is_the_documented_one() -> None:
    wire = orjson.loads(VERIFY.answer.encode(VerifyAnswer("ok", ALICE, device="abcdefghijk")))
    assert wire == {
        "result": "ok",
        "user": {
            "username": "alice",
            "display_name": "Alice",
            "email": "alice@example.test",
            "groups": ["admins", "staff"],
            "enabled": True,
        },
        "device": "abcdefghijk",
    }
    assert orjson.loads(VERIFY.answer.encode(VerifyAnswer("locked", retry_after=60))) == {
        "result": "locked",
        "retry_after": 60,
    }


def test_odd_answers_are_read_leniently_or_refused() -> None:
    decode = VERIFY.answer.decode
    assert decode(b'{"result": "locked", "retry_after": -1}').retry_after == 60.0
    odd = decode(b'{"result": "ok", "user": {"username": "a", "groups": ["g", 1]}, "device": 5}')
    assert odd == VerifyAnswer("ok", Account("a", groups=("g",)), device=None)
    # A status that does not decode is left out: the Policy service asks OTP_STATUS itself.
    no_status = decode(b'{"result": "ok", "user": {"username": "a"}, "otp": {"active": -1}}')
    assert no_status.otp is None
    for bad, message in ((b'{"result": "maybe"}', "unknown result"), (b'{"result": "ok"}', "user")):
        with pytest.raises(ValueError, match=message):
            decode(bad)
