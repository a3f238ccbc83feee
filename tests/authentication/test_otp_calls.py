"""The OTP calls' wire formats, both directions from one declaration each."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gatehouse.authentication.calls import (
    OTP_CONFIRM,
    OTP_ENROL,
    OTP_STATUS,
    OTP_VERIFY,
    ConfirmRequest,
    EnrolAnswer,
    EnrolRequest,
    OtpAnswer,
    OtpRequest,
    StatusAnswer,
    StatusRequest,
)
from gatehouse.internal.calls import Call
from gatehouse.internal.errors import ServiceError
from gatehouse.trust.identity import ADMINISTRATION, POLICY

ATTEMPT = "Abc_def-0123456789"


@pytest.mark.parametrize(
    ("call", "value"),
    [
        (OTP_VERIFY, OtpRequest("alice", "123456", "192.0.2.1", ATTEMPT)),
        (OTP_VERIFY, OtpRequest("alice", "", "2001:db8::1", "x" * 64)),
        (OTP_ENROL, EnrolRequest("alice", "Example Corp")),
        (OTP_ENROL, EnrolRequest("alice", "")),
        (OTP_CONFIRM, ConfirmRequest("alice", "TOTP0A", "12345678", "192.0.2.1", ATTEMPT)),
        (OTP_STATUS, StatusRequest("alice")),
    ],
)
def test_requests_round_trip(call: Call[Any, Any], value: object) -> None:
    assert call.request.decode(call.request.encode(value)) == value


@pytest.mark.parametrize(
    ("call", "value"),
    [
        (OTP_VERIFY, OtpAnswer("ok", "T1")),
        (OTP_VERIFY, OtpAnswer("invalid")),
        (OTP_VERIFY, OtpAnswer("locked", retry_after=300.0)),
        (OTP_VERIFY, OtpAnswer("locked")),
        (OTP_VERIFY, OtpAnswer("no_token")),
        (OTP_CONFIRM, OtpAnswer("ok", "T1")),
        (OTP_CONFIRM, OtpAnswer("locked")),
        (OTP_ENROL, EnrolAnswer("T1", "otpauth://totp/x:alice?secret=AAAA", "AAAA")),
        (OTP_STATUS, StatusAnswer(2, "T9", True)),
        (OTP_STATUS, StatusAnswer(0, None, False)),
    ],
)
def test_answers_round_trip(call: Call[Any, Any], value: object) -> None:
    assert call.answer.decode(call.answer.encode(value)) == value


def test_the_wire_shapes() -> None:
    assert orjson.loads(OTP_VERIFY.answer.encode(OtpAnswer("locked", retry_after=60.0))) == {
        "result": "locked",
        "retry_after": 60,
    }
    assert orjson.loads(OTP_VERIFY.answer.encode(OtpAnswer("locked"))) == {"result": "locked"}
    assert orjson.loads(OTP_VERIFY.answer.encode(OtpAnswer("ok", "T1"))) == {
        "result": "ok",
        "serial": "T1",
    }
    assert "AAAA" not in repr(EnrolAnswer("T1", "u", "AAAA"))  # the seed is never logged


def test_requests_are_checked_and_name_the_field() -> None:
    body = {"username": "alice", "code": "1", "client_ip": "::ffff:192.0.2.1", "attempt": ATTEMPT}
    assert OTP_VERIFY.request.decode(orjson.dumps(body)).client_ip == "192.0.2.1"
    # Any string is a code (a malformed one is a wrong one), cut at 64 characters.
    assert OTP_VERIFY.request.decode(orjson.dumps({**body, "code": "x" * 500})).code == "x" * 64
    for bad, message in [
        ({**body, "attempt": "a" * 15}, "attempt: must be 16-64"),
        ({**body, "attempt": "a" * 15 + "!"}, "attempt: must be 16-64"),
        ({**body, "code": None}, "code: must be a string"),
        ({**body, "username": "u" * 257}, "username: longer than 256"),
        ({"username": "alice", "code": "1", "attempt": ATTEMPT}, "client_ip: missing"),
    ]:
        with pytest.raises(ServiceError, match=message):
            OTP_VERIFY.request.decode(orjson.dumps(bad))
    with pytest.raises(ServiceError, match="issuer: at most 64 characters, without ':'"):
        OTP_ENROL.request.decode(orjson.dumps({"username": "a", "issuer": "x:y"}))
    confirm = {**body, "serial": ""}
    with pytest.raises(ServiceError, match="serial: 1-64 characters"):
        OTP_CONFIRM.request.decode(orjson.dumps(confirm))


def test_answers_that_do_not_decode() -> None:
    for bad in [{"result": "maybe"}, {}]:
        with pytest.raises(ValueError, match="unknown result"):
            OTP_VERIFY.answer.decode(orjson.dumps(bad))
    with pytest.raises(ValueError, match="unknown result 'no_token'"):
        OTP_CONFIRM.answer.decode(orjson.dumps({"result": "no_token"}))
    with pytest.raises(ValueError, match="active"):
        OTP_STATUS.answer.decode(orjson.dumps({"active": -1, "enrol_required": False}))
    with pytest.raises(ValueError, match="serial, uri and secret"):
        OTP_ENROL.answer.decode(orjson.dumps({"serial": "T1", "uri": "u"}))
    # A bad retry_after reads as none rather than refusing the answer.
    answer = OTP_VERIFY.answer.decode(orjson.dumps({"result": "locked", "retry_after": "soon"}))
    assert answer == OtpAnswer("locked")


def test_only_policy_services_may_call() -> None:
    """And the Administration service may check an administrator's code (console sign-in);
    enrolling and confirming tokens stays the Policy service's."""
    assert OTP_VERIFY.roles == {POLICY, ADMINISTRATION}
    for call in (OTP_ENROL, OTP_CONFIRM, OTP_STATUS):
        assert call.roles == {POLICY}
    for call in (OTP_VERIFY, OTP_ENROL, OTP_CONFIRM, OTP_STATUS):
        assert call.retry_safe
