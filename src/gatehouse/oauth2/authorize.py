"""The authorization endpoint's answers to the Policy service, and the pure decision of
what a valid request still needs (OpenID Connect Core §3.1.2): a sign-in (none yet,
``prompt=login``, ``max_age`` passed, ``acr_values`` asking for MFA the session lacks), the
user's consent, or nothing (a code is issued). With ``prompt=none`` a need becomes the
error ``login_required`` / ``consent_required`` sent back to the client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from gatehouse.oauth2.settings import ACR_MFA, SECOND_FACTORS, has_second_factor
from gatehouse.oauth2.store import ConsentRow
from gatehouse.oauth2.subject import Subject

ConsentAnswer = Literal["granted", "denied"] | None


@dataclass(frozen=True, slots=True)
class Redirect:
    """Send the browser to the client: a code or an error, with ``state`` and ``iss``."""

    location: str
    kind: Literal["redirect"] = "redirect"


@dataclass(frozen=True, slots=True)
class ErrorPage:
    """The client or its redirect URI is not valid: show an error, never redirect."""

    status: int
    error: str
    description: str
    kind: Literal["error_page"] = "error_page"


@dataclass(frozen=True, slots=True)
class Login:
    """Sign in (``methods``: any one of them; ``force``: even with a session) and ask again,
    with ``fresh=True`` after a forced sign-in."""

    methods: tuple[str, ...]
    force: bool
    kind: Literal["login"] = "login"


@dataclass(frozen=True, slots=True)
class Consent:
    """Ask the user to allow ``client_name`` these scopes, and ask again with the answer."""

    client_name: str
    scopes: tuple[str, ...]
    kind: Literal["consent"] = "consent"


AuthorizeOutcome = Redirect | ErrorPage | Login | Consent


def outcome_dict(outcome: AuthorizeOutcome) -> dict[str, Any]:
    """The internal call's answer (lists for tuples)."""
    if isinstance(outcome, Redirect):
        return {"kind": outcome.kind, "location": outcome.location}
    if isinstance(outcome, ErrorPage):
        return {
            "kind": outcome.kind,
            "status": outcome.status,
            "error": outcome.error,
            "description": outcome.description,
        }
    if isinstance(outcome, Login):
        return {"kind": outcome.kind, "methods": list(outcome.methods), "force": outcome.force}
    return {
        "kind": outcome.kind,
        "client_name": outcome.client_name,
        "scopes": list(outcome.scopes),
    }


@dataclass(frozen=True, slots=True)
class Refusal:
    """An OAuth error to redirect back with (the redirect URI is known to be valid)."""

    error: str
    description: str


Need = Login | Consent | Refusal | None


def prompts(params: dict[str, str]) -> set[str]:
    return set(params.get("prompt", "").split())


def login_need(params: dict[str, str], user: Subject | None, now: int, fresh: bool) -> Need:
    """What sign-in the request still needs (None: the session will do)."""
    silent = "none" in prompts(params)
    wants_mfa = ACR_MFA in params.get("acr_values", "").split()
    methods = SECOND_FACTORS if wants_mfa else ("password",)
    if user is None:
        return Refusal("login_required", "No session") if silent else Login(methods, False)
    if "login" in prompts(params) and not fresh:
        return Login(methods, True)
    max_age = params.get("max_age")
    if max_age is not None:
        if not max_age.isdigit():
            return Refusal("invalid_request", "Invalid 'max_age'")
        if now - user.auth_time > int(max_age) and not fresh:
            if silent:
                return Refusal("login_required", "The sign-in is older than max_age")
            return Login(methods, True)
    if wants_mfa and not has_second_factor(user.amr):
        if silent:
            return Refusal("login_required", "A second factor is required")
        return Login(SECOND_FACTORS, False)
    return None


def consent_need(
    params: dict[str, str],
    client_name: str,
    asks_consent: bool,
    scopes: tuple[str, ...],
    standing: ConsentRow | None,
    answer: ConsentAnswer,
) -> Need:
    """Whether the user must still be asked (None: allowed, or the client needs no consent)."""
    if answer == "denied":
        return Refusal("access_denied", "The user denied the request")
    if answer == "granted" or not asks_consent:
        return None
    forced = "consent" in prompts(params)
    if not forced and standing is not None and standing.covers(scopes):
        return None
    if "none" in prompts(params):
        return Refusal("consent_required", "The user has not allowed this client")
    return Consent(client_name, scopes)


__all__ = [
    "AuthorizeOutcome",
    "Consent",
    "ConsentAnswer",
    "ErrorPage",
    "Login",
    "Need",
    "Redirect",
    "Refusal",
    "consent_need",
    "login_need",
    "outcome_dict",
]
