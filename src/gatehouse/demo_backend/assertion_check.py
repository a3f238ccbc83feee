"""The demo backend's check of Gatehouse's signed identity assertion (``--jwks-url``).

What a backend that does not trust its Access Point does: every request must carry the
assertion header, signed by a key of the Policy services' published key set
(``/_gatehouse/jwks.json``), for this backend's audience (its resource id), not expired.
The key set is cached; a token naming a key the cache lacks makes it fetch the set again,
at most once per :data:`REFETCH_INTERVAL` (so forged kids cannot make it hammer the
Policy services).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterable
from typing import Any

from gatehouse.policy.assertions import AssertionInvalid, UnknownKey, verify

DEFAULT_HEADER = "Gatehouse-Assertion"
#: The least time between two fetches of the key set.
REFETCH_INTERVAL = 10.0
#: How long a fetched key set is used before it is fetched again (the endpoint's max-age).
MAX_AGE = 300.0
FETCH_TIMEOUT = 5.0
MAX_KEY_SET = 1 << 20


class KeySetUnavailable(Exception):
    """The key set could not be fetched and none is cached."""


def _fetch(url: str) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT) as response:
        document = json.loads(response.read(MAX_KEY_SET))
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK set")
    return document


class AssertionCheck:
    """Checks the assertion header of requests for ``audience`` against ``jwks_url``."""

    def __init__(self, jwks_url: str, audience: str, header: str = DEFAULT_HEADER) -> None:
        self.jwks_url = jwks_url
        self.audience = audience
        self.header = header.lower().encode("latin-1")
        self._keys: dict[str, Any] | None = None
        self._fetched_at = -REFETCH_INTERVAL
        self._lock = asyncio.Lock()

    async def _refresh(self, after: float) -> None:
        """Fetch the key set unless it was fetched at ``after`` or later, or too recently."""
        async with self._lock:
            now = time.monotonic()
            if self._fetched_at > after or now - self._fetched_at < REFETCH_INTERVAL:
                return
            self._fetched_at = now
            try:
                self._keys = await asyncio.to_thread(_fetch, self.jwks_url)
            except (OSError, ValueError) as exc:
                if self._keys is None:
                    raise KeySetUnavailable(f"key set {self.jwks_url}: {exc}") from None

    async def claims(self, headers: Iterable[tuple[bytes, bytes]]) -> dict[str, Any]:
        """The verified claims of the request's assertion.

        Raises:
            AssertionInvalid: missing, twice, or not valid (the message says why).
            KeySetUnavailable: no key set to check against.
        """
        values = [v for name, v in headers if name.lower() == self.header]
        if not values:
            raise AssertionInvalid("no identity assertion")
        if len(values) > 1:
            raise AssertionInvalid("more than one identity assertion")
        token = values[0].decode("latin-1")
        seen = self._fetched_at
        if self._keys is None or time.monotonic() - seen >= MAX_AGE:
            await self._refresh(seen)
        assert self._keys is not None
        try:
            return verify(token, self._keys, self.audience, time.time())
        except UnknownKey:
            await self._refresh(seen)  # a new Policy service's key?
            return verify(token, self._keys, self.audience, time.time())
