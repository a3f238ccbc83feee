"""The identity assertion added to an allow decision for a resource that asks for one.

On ``allow`` with a session, for a resource listed in the configuration's
``identity_assertion``, the Policy service signs (:mod:`gatehouse.policy.assertions`) a
token for that resource (``aud``) naming the user, and adds it to the decision's headers
(``identity_headers.assertion``). The Access Point only forwards it. The decision's ``ttl``
is cut to half of the token's remaining lifetime, so an Access Point that caches the
decision (its cache, a connection's memo) never forwards an expired token, and a backend
gets one with at least half its life left.

Claims: ``iss``, ``sub`` (username), ``aud`` (resource id), ``iat``, ``nbf``, ``exp``
(at most :data:`~gatehouse.config.policy.MAX_ASSERTION_TTL` after ``iat``), ``jti``
(random), ``name``, ``email``, ``groups``, ``sid`` (the session's id hash, as in the
events and the admin API; never the session id) and ``amr`` (the methods the session ran).
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from gatehouse.policy.assertions import SigningKey, sign
from gatehouse.policy.decision import Allow, header_safe

if TYPE_CHECKING:
    from gatehouse.config.policy import PolicyConfig
    from gatehouse.policy.sessions import SessionRecord

#: ``iss`` of every assertion.
ISSUER = "gatehouse"
#: The share of a token's remaining lifetime an Access Point may cache the decision.
CACHE_SHARE = 0.5


def assertion_claims(
    record: SessionRecord, resource: str, now: float, ttl: float, issuer: str = ISSUER
) -> dict[str, Any]:
    """The claims of an assertion for ``record`` and ``resource`` issued at ``now``."""
    issued = math.floor(now)
    return {
        "iss": issuer,
        "sub": record.username,
        "aud": resource,
        "iat": issued,
        "nbf": issued,
        "exp": issued + math.ceil(ttl),
        "jti": secrets.token_urlsafe(16),
        "name": record.display_name or None,
        "email": record.email,
        "groups": sorted({g for g in (header_safe(g) for g in record.groups) if g}),
        "sid": record.id_hash,
        "amr": sorted(set(record.methods)),
    }


@dataclass(frozen=True, slots=True)
class AssertionIssuer:
    """Signs assertions for the resources of one configuration version."""

    key: SigningKey
    header: str
    ttl: float
    resources: frozenset[str]
    issuer: str = ISSUER

    @classmethod
    def from_config(cls, config: PolicyConfig, key: SigningKey) -> AssertionIssuer | None:
        """None when no resource asks for an assertion."""
        header = config.identity_headers.assertion
        if not config.identity_assertion or header is None:
            return None
        return cls(key, header, config.policy.assertion_ttl, frozenset(config.identity_assertion))

    def stamp(
        self, decision: Allow, record: SessionRecord | None, resource: str, now: datetime
    ) -> Allow:
        """``decision`` with the assertion added and its ``ttl`` cut, when ``resource`` asks
        for one and the decision was made for ``record`` (a session valid at ``now``)."""
        if resource not in self.resources or record is None:
            return decision
        if now >= record.idle_expires_at or now >= record.absolute_expires_at:
            return decision  # decided as no session
        at = now.timestamp()
        claims = assertion_claims(record, resource, at, self.ttl, self.issuer)
        token = sign(claims, self.key)
        headers = tuple(h for h in decision.headers if h[0].lower() != self.header.lower())
        ttl = min(decision.ttl, max(0.0, (claims["exp"] - at) * CACHE_SHARE))
        return replace(decision, headers=(*headers, (self.header, token)), ttl=ttl)
