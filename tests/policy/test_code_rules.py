"""``email_otp`` and ``sms_otp`` in rules like ``otp``: accepted by ``auth_methods``, the login
URL's ``step`` marker, step-up, and ``Remote-Auth-Methods``."""

from __future__ import annotations

from typing import Any

import pytest

from gatehouse.config.loader import validate
from gatehouse.config.policy import PolicyConfig
from gatehouse.errors import ConfigError
from gatehouse.policy.decision import Allow, Authenticate
from gatehouse.policy.service import login_url
from tests.policy.test_otp_rules import ask, policy, session

RULES = {
    "mail": {"auth_methods": ["password", "email_otp"]},
    "text": {"auth_methods": ["password", "sms_otp"]},
    "either": {"any": [{"auth_methods": ["email_otp"]}, {"auth_methods": ["otp"]}]},
    "two": {"auth_methods": ["password", "otp", "email_otp"]},
}


def test_the_code_methods_are_accepted_in_rules() -> None:
    assert set(policy(RULES).resource_ids) == set(RULES)


@pytest.mark.parametrize(("resource", "step"), [("mail", "email_otp"), ("text", "sms_otp")])
def test_no_session_logs_in_with_the_code_step(resource: str, step: str) -> None:
    decision = ask(policy(RULES), resource, None)
    assert decision == Authenticate(("password", step), step_up=False)
    assert isinstance(decision, Authenticate)
    assert decision.step == step
    url = login_url("/_gatehouse/", "/m/", decision.step)
    assert url == f"/_gatehouse/login?rd=%2Fm%2F&step={step}"


def test_a_password_session_steps_up_to_the_code() -> None:
    decision = ask(policy(RULES), "mail", session("password"))
    assert decision == Authenticate(("email_otp",), step_up=True)
    assert isinstance(decision, Authenticate)
    assert decision.step == "email_otp"


def test_a_session_with_the_code_method_is_let_in_and_says_so() -> None:
    decision = ask(policy(RULES), "mail", session("password", "email_otp"))
    assert isinstance(decision, Allow)
    assert ("Remote-Auth-Methods", "password,email_otp") in decision.headers
    # sms_otp is not email_otp: the rule asked for the e-mail code.
    assert ask(policy(RULES), "mail", session("password", "sms_otp")) == Authenticate(
        ("email_otp",), step_up=True
    )


def test_another_method_can_stand_in_when_the_rule_says_so() -> None:
    assert isinstance(ask(policy(RULES), "either", session("password", "otp")), Allow)
    first = ask(policy(RULES), "either", session("password"))
    assert isinstance(first, Authenticate)
    assert first.step == "email_otp"


def test_two_second_factors_are_asked_one_after_the_other() -> None:
    decision = ask(policy(RULES), "two", session("password"))
    assert isinstance(decision, Authenticate)
    assert decision.step == "otp"
    decision = ask(policy(RULES), "two", session("password", "otp"))
    assert isinstance(decision, Authenticate)
    assert decision.step == "email_otp"


def test_an_unknown_code_method_names_the_field() -> None:
    resources: dict[str, Any] = {"x": {"auth_methods": ["password", "mail_otp"]}}
    with pytest.raises(ConfigError) as info:
        validate(PolicyConfig, {"resources": resources})
    assert "resources.x.auth_methods[1]" in str(info.value)
    assert "email_otp, sms_otp" in str(info.value)
