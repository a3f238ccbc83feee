"""Which session cookie a request carries: one rule for the Access Point and the portal.

A browser can send the same cookie name twice (a host-only cookie and a domain cookie, or
one planted by a sibling subdomain). If the Access Point enforced one and the portal's
sign-out ended the other, "sign out" would leave the enforced session alive; so a request
with the session cookie more than once is refused by both. A pair is ``name=value``
between semicolons, the name compared after trimming spaces and tabs (as Starlette and
browsers read it). Imports nothing of ours.
"""

from __future__ import annotations

from collections.abc import Iterable

#: What a refused request is told (the Access Point's and the portal's 400 page).
TWO_SESSION_COOKIES = (
    "This request carries the sign-in cookie more than once, so it is not clear which "
    "session it belongs to. Clear this site's cookies in your browser and sign in again."
)


class TwoSessionCookies(ValueError):
    """The request names the session cookie more than once."""


def session_value(fields: Iterable[str], name: str) -> str | None:
    """The value of cookie ``name`` in a request's Cookie field values; None when absent.

    Raises:
        TwoSessionCookies: the cookie appears more than once (in one field or across fields).
    """
    found: str | None = None
    for field in fields:
        for part in field.split(";"):
            key, eq, value = part.partition("=")
            if eq and key.strip(" \t") == name:
                if found is not None:
                    raise TwoSessionCookies(TWO_SESSION_COOKIES)
                found = value.strip(" \t")
    return found
