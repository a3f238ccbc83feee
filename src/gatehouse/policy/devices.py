"""Trusted-device cookies: a browser that signed in to an account before keeps signing in.

After a successful sign-in the portal sets ``gatehouse_device``: the device id the
Authentication service issued with its ``ok``, an expiry, and an HMAC over both and the
account's user name, under a key derived from the portal's CSRF key (every Policy service
behind the same Access Points shares it). At the next sign-in to that account the id goes
with the password check, and the Authentication service, which honours only ids it issued
for that account, counts that browser's attempts on their own counter, so failures from
elsewhere cannot lock it out (docs/operations.md, "Brute-force protection"). A cookie for
another account, expired or not signed by us is ignored: the browser is then just another
client.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import datetime, timedelta

COOKIE_NAME = "gatehouse_device"
#: How long a browser stays trusted after its last successful sign-in.
LIFETIME = timedelta(days=90)
_VALUE = re.compile(r"^([A-Za-z0-9_-]{11})\.([0-9]{1,12})\.([A-Za-z0-9_-]{43})$")


class DeviceCookies:
    """Issues and checks device cookies under one key."""

    def __init__(self, portal_key: bytes, lifetime: timedelta = LIFETIME) -> None:
        self._key = hmac.new(portal_key, b"gatehouse-device-cookie-key", hashlib.sha256).digest()
        self.lifetime = lifetime

    def _mac(self, username: str, device: str, expires: int) -> str:
        message = f"gatehouse-device:{device}:{expires}:{username}".encode()
        mac = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def issue(self, username: str, device: str, now: datetime) -> str:
        """A cookie value carrying ``device`` for ``username``, valid for the lifetime."""
        expires = int((now + self.lifetime).timestamp())
        return f"{device}.{expires}.{self._mac(username, device, expires)}"

    def device(self, cookie: str | None, username: str, now: datetime) -> str | None:
        """The device id of ``cookie`` if we signed it for ``username`` and it has not expired."""
        if not cookie:
            return None
        match = _VALUE.match(cookie)
        if match is None:
            return None
        device, expires_text, mac = match.groups()
        expires = int(expires_text)
        if expires <= now.timestamp():
            return None
        if not hmac.compare_digest(self._mac(username, device, expires), mac):
            return None
        return device
