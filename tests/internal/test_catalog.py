"""The catalogue of internal calls: docs/internal-api.md carries its role table as generated,
and every internal route of the Policy and Authentication apps is one of its declarations."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.routing import Route

from gatehouse.authentication.app import create_app as authentication_app
from gatehouse.authentication.config import AuthenticationSettings
from gatehouse.distribution.app import create_app as distribution_app
from gatehouse.distribution.config import DistributionSettings
from gatehouse.internal import catalog
from gatehouse.internal.calls import HEALTH_ROLES
from gatehouse.policy import calls as policy_calls
from gatehouse.policy.app import routes as policy_routes
from gatehouse.trust.identity import (
    ACCESS_POINT,
    ADMINISTRATION,
    AUTHENTICATION,
    OPERATOR,
    POLICY,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "internal-api.md"


def test_the_doc_carries_the_generated_role_table() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert catalog.with_table(text) == text, (
        "docs/internal-api.md's role table is stale: run python -m gatehouse.internal.catalog"
    )
    assert catalog.render() in text


def test_the_rewriter_replaces_only_between_the_markers(tmp_path: Path) -> None:
    doc = tmp_path / "api.md"
    doc.write_text(f"before\n{catalog.BEGIN}\nold table\n{catalog.END}\nafter\n")
    assert catalog.main(["--check", str(doc)]) == 1
    assert catalog.main([str(doc)]) == 0
    assert doc.read_text() == f"before\n{catalog.BEGIN}\n{catalog.render()}{catalog.END}\nafter\n"
    assert catalog.main(["--check", str(doc)]) == 0
    doc.write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        catalog.main([str(doc)])


def test_names_are_unique_and_the_roles_are_as_designed() -> None:
    assert len({c.name for c in catalog.ALL}) == len(catalog.ALL)
    roles = {(c.service, c.name): c.roles for c in catalog.ALL}
    assert roles == {
        ("policy", "policy_health"): HEALTH_ROLES,
        ("policy", "decide"): {ACCESS_POINT},
        ("policy", "events"): {ACCESS_POINT},
        ("policy", "list_sessions"): {OPERATOR, ADMINISTRATION},
        ("policy", "end_sessions"): {OPERATOR, ADMINISTRATION},
        ("policy", "revoke_session"): {OPERATOR, ADMINISTRATION},
        ("policy", "portal"): {ACCESS_POINT},
        ("authentication", "authentication_health"): HEALTH_ROLES,
        ("authentication", "verify_password"): {POLICY, ADMINISTRATION},
        ("authentication", "verify_otp"): {POLICY, ADMINISTRATION},
        ("authentication", "enrol_otp"): {POLICY},
        ("authentication", "confirm_otp"): {POLICY},
        ("authentication", "otp_status"): {POLICY},
        ("authentication", "send_code"): {POLICY},
        ("authentication", "code_status"): {POLICY},
        ("authentication", "verify_code"): {POLICY},
        ("authentication", "check_invitation"): {POLICY},
        ("authentication", "enrol_invitation"): {POLICY},
        ("authentication", "confirm_invitation"): {POLICY},
        ("authentication", "oauth_authorize"): {POLICY},
        ("authentication", "oauth_endpoint"): {POLICY},
        ("authentication", "oauth_session_ended"): {POLICY},
        ("authentication", "oauth_id_token_hint"): {POLICY},
        ("authentication", "oauth_bearer"): {POLICY},
        ("authentication", "oauth_consents"): {POLICY},
        ("distribution", "distribution_health"): HEALTH_ROLES,
        ("distribution", "submit_message"): {POLICY, AUTHENTICATION},
        ("distribution", "message_status"): {POLICY, AUTHENTICATION},
    }


def _internal(routes: list[Route]) -> set[tuple[str, str]]:
    return {
        (method, route.path)
        for route in routes
        if route.path.startswith("/internal/")
        for method in route.methods or ()
        if method != "HEAD"
    }


def _declared(service: str) -> set[tuple[str, str]]:
    return {
        (method, c.path)
        for c in catalog.ALL
        if c.service == service and c.path.startswith("/internal/")
        for method in c.methods
    }


def test_every_internal_route_is_declared() -> None:
    policy = [r for r in policy_routes("/_gatehouse/") if isinstance(r, Route)]
    assert _internal(policy) == _declared("policy")
    app = authentication_app(AuthenticationSettings(), "sqlite+aiosqlite:///unused.db")
    auth = [r for r in app.routes if isinstance(r, Route)]
    assert _internal(auth) == _declared("authentication")
    dist = distribution_app(
        DistributionSettings(), "sqlite+aiosqlite:///unused.db", Path("unused.key"), Path(".")
    )
    assert _internal([r for r in dist.routes if isinstance(r, Route)]) == _declared("distribution")


def test_every_portal_route_is_guarded() -> None:
    """The portal's pages are guarded by the portal declaration (``Call.guard``)."""
    portal = [r for r in policy_routes("/_gatehouse/") if r.path.startswith("/_gatehouse/")]
    assert portal
    for route in portal:
        assert isinstance(route, Route)
        assert route.endpoint.__qualname__.startswith("Call.guard"), route.path
    assert policy_calls.PORTAL.roles == {ACCESS_POINT}
    # The OAuth discovery documents, at the issuer's root, are the portal's too.
    well_known = [r for r in policy_routes("/_gatehouse/") if r.path.startswith("/.well-known/")]
    assert len(well_known) == 2
    for route in well_known:
        assert isinstance(route, Route)
        assert route.endpoint.__qualname__.startswith("Call.guard"), route.path
