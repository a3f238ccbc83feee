"""CSRF tokens of the console's forms, derived from the browser's own secret.

A signed-in browser's forms carry ``HMAC(session secret, "csrf")``; the sign-in form, before
there is a session, ``HMAC(pre-session secret, "csrf")`` where the pre-session secret is a
random cookie set with the form. Both cookies are HttpOnly and SameSite=Strict: another site
can neither read the secret nor compute the value, and no key is kept on the server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

FIELD = "csrf"


def csrf_token(secret: str) -> str:
    digest = hmac.new(secret.encode("utf-8"), b"gatehouse-console-csrf", hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode("ascii")


def csrf_valid(secret: str | None, given: str | None) -> bool:
    if not secret or not given:
        return False
    return hmac.compare_digest(csrf_token(secret), given)
