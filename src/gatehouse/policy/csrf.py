"""Cross-site request forgery protection for the portal's forms: a signed double-submit token
bound to the browser's pre-session.

A random token lives in the ``gatehouse_csrf`` cookie (HttpOnly, SameSite=Strict): it is the
browser's pre-session id. Each form carries an HMAC, under a key only the Policy services
know, of that token *and the client address the form was served to*. A POST is accepted when
the form value is the HMAC of the cookie's token and the address the POST comes from. A page
on another site can neither read the value nor forge one; and a cookie-and-value pair an
attacker fetched with their own browser and planted in the victim's (a forced sign-in) is
refused, because it was signed for the attacker's address. Every Policy instance behind the
same Access Points must share the key (the same key file), because the GET and the POST of
one form may reach different instances.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

COOKIE_NAME = "gatehouse_csrf"
FIELD_NAME = "csrf"
KEY_BYTES = 32
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")


class CsrfGuard:
    """Issues and checks double-submit tokens under one HMAC key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("CSRF key must be at least 16 bytes")
        self._key = key

    @staticmethod
    def new_token() -> str:
        return secrets.token_urlsafe(KEY_BYTES)

    @staticmethod
    def well_formed(token: str | None) -> bool:
        return token is not None and _TOKEN.match(token) is not None

    def token_for(self, cookie: str | None) -> str:
        """The cookie token to use for a new form: the browser's own if sound, else a new one."""
        return cookie if cookie is not None and self.well_formed(cookie) else self.new_token()

    def form_value(self, token: str, client: str) -> str:
        """The form's value for the cookie ``token`` served to ``client`` (its address)."""
        message = b"gatehouse-csrf:" + token.encode() + b"\x00" + client.encode()
        mac = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def refusal(self, cookie: str | None, submitted: str | None, client: str) -> str | None:
        """None when ``submitted`` (the form field) signs ``cookie`` (the cookie's token) for
        ``client``, the address the form is sent from; else why not (for the log: it names
        no token or value)."""
        if cookie is None:
            return "the browser sent no CSRF cookie"
        if not self.well_formed(cookie):
            return "the browser's CSRF cookie is malformed"
        if submitted is None:
            return "the form has no CSRF field"
        expected = self.form_value(cookie, client)
        if hmac.compare_digest(expected.encode(), submitted.encode()):
            return None
        return f"the form's CSRF field does not sign the browser's cookie for address {client}"

    def check(self, cookie: str | None, submitted: str | None, client: str) -> bool:
        """True when ``submitted`` signs ``cookie`` for ``client`` (:meth:`refusal`)."""
        return self.refusal(cookie, submitted, client) is None


def load_or_create_key(path: Path) -> bytes:
    """Read the key file, creating it (mode 0600, random) the first time."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(KEY_BYTES))
        try:
            os.link(temp, path)  # atomic: a concurrent first start keeps one key
        except FileExistsError:
            pass
        finally:
            temp.unlink()
        key = path.read_bytes()
    if len(key) < 16:
        raise ValueError(f"{path}: CSRF key file holds fewer than 16 bytes")
    return key
