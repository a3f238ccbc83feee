"""The rule condition ``token_scopes_any``: compiled with field paths, makes the Access Points
send ``Authorization``, met by an active token with one of the scopes only, and a decision it
allows is cached no longer than the token's introspection answer stands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gatehouse.authentication.oauth_calls import BearerAnswer
from gatehouse.config.loader import validate
from gatehouse.config.policy import PolicyConfig
from gatehouse.errors import ConfigError
from gatehouse.policy.decision import (
    Allow,
    Authenticate,
    DecisionInput,
    Deny,
    compile_policy,
    decide,
)
from gatehouse.policy.rules import EvalContext, Tri
from gatehouse.policy.rules_compile import compile_rule_set

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
ACTIVE = BearerAnswer(True, "openid api.read", "app1", "alice", int(NOW.timestamp()) + 600)


def _policy(resources: dict[str, Any]) -> Any:
    return compile_policy(validate(PolicyConfig, {"resources": resources}))


def _request(resource: str = "api", authorization: str = "Bearer t") -> DecisionInput:
    return DecisionInput(resource, "GET", "/api/x", "192.0.2.1", {"authorization": authorization})


def test_compiles_and_asks_for_the_authorization_header() -> None:
    rules = compile_rule_set({}, "public", {"api": {"token_scopes_any": ["api.read", "api.write"]}})
    assert "authorization" in rules.header_names
    plain = compile_rule_set({}, "public", {"app": "authenticated"})
    assert "authorization" not in plain.header_names


@pytest.mark.parametrize(
    ("spec", "path", "message"),
    [
        ([], "resources.api.token_scopes_any", "non-empty list"),
        (["api read"], "resources.api.token_scopes_any[0]", "not an OAuth scope"),
        (["ok", 'bad"quote'], "resources.api.token_scopes_any[1]", "not an OAuth scope"),
        ("api.read", "resources.api.token_scopes_any", "non-empty list"),
    ],
)
def test_bad_scopes_are_refused_naming_the_field(spec: object, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        compile_rule_set({}, "public", {"api": {"token_scopes_any": spec}})
    assert any(p == path and message in m for p, m in caught.value.problems), caught.value.problems


def test_met_by_an_active_token_with_one_of_the_scopes_only() -> None:
    rules = compile_rule_set({}, "public", {"api": {"token_scopes_any": ["api.read"]}})
    condition = rules.effective["api"]
    cases = [
        (None, Tri.FALSE),
        (BearerAnswer(False), Tri.FALSE),
        (BearerAnswer(True, "openid api.write", "app1", "alice", 0), Tri.FALSE),
        (ACTIVE, Tri.TRUE),
    ]
    for token, expected in cases:
        assert condition.evaluate(EvalContext(now=NOW, token=token)).value is expected, token


def test_a_browser_is_sent_to_sign_in_when_a_session_would_also_do() -> None:
    policy = _policy({"api": {"any": ["authenticated", {"token_scopes_any": ["api.read"]}]}})
    assert isinstance(decide(policy, _request(authorization=""), None, NOW), Authenticate)
    allowed = decide(policy, _request(), None, NOW, ACTIVE, NOW + timedelta(seconds=30))
    assert isinstance(allowed, Allow)


def test_an_allowed_decision_lasts_no_longer_than_the_token_answer() -> None:
    policy = _policy({"api": {"token_scopes_any": ["api.read"]}})
    until = NOW + timedelta(seconds=12)
    allowed = decide(policy, _request(), None, NOW, ACTIVE, until)
    assert isinstance(allowed, Allow)
    assert allowed.ttl == pytest.approx(12.0)
    denied = decide(policy, _request(), None, NOW, BearerAnswer(False), NOW + timedelta(seconds=5))
    assert isinstance(denied, Deny)
    assert denied.ttl == pytest.approx(5.0)
    assert policy.reads_tokens
    assert not _policy({"app": "authenticated"}).reads_tokens


def test_only_the_resources_whose_rule_reads_a_token_introspect_one() -> None:
    config = validate(
        PolicyConfig,
        {
            "rules": {"api_client": {"token_scopes_any": ["api.read"]}},
            "resources": {
                "api": {"any": ["authenticated", {"rule": "api_client"}]},
                "negated": {"not": {"token_scopes_any": ["x"]}},
                "app": "authenticated",
                "open": "public",
            },
        },
    )
    policy = compile_policy(config)
    assert policy.token_resources == {"api", "negated"}
    assert policy.reads_tokens
