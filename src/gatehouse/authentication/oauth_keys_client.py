"""An Authentication service's OAuth signing keys, as its view names them.

The view (``oauth.keys``, :class:`~gatehouse.config.oauth.SigningKeyView`) carries only the
public key set and the ``kid`` that signs for each algorithm. The private keys come from the
Administration service, over mutual TLS with this service's certificate
(``GET /api/v1/oauth/signing-keys?kid=...``, answered to authentication services only), and
are kept in the service's state directory (0600) so that it restarts, and signs, while Admin
is down. :class:`KeyFollower` fetches only when the view names a kid the file does not hold.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from gatehouse.config.oauth import SigningKeyView
from gatehouse.errors import GatehouseError
from gatehouse.internal.lkg import atomic_write
from gatehouse.oauth2.keys import SigningKeyError, SigningKeys

if TYPE_CHECKING:
    from gatehouse.internal.config_agent import ConfigAgent

log = logging.getLogger("gatehouse.authentication.oauth_keys")

#: The key set in a managed service's state directory.
STATE_FILE = "oauth-signing-keys.json"
PATH = "/api/v1/oauth/signing-keys"
TIMEOUT = 10.0

#: Asks Admin for the private JWKs of these kids.
Fetch = Callable[[Sequence[str]], Awaitable[list[dict[str, Any]]]]


class KeysUnavailable(GatehouseError):
    """The private keys the view names are neither in the state file nor to be had from
    Admin now."""


def _kids(view: SigningKeyView) -> list[str]:
    return sorted(set(view.current.values()))


def _published(view: SigningKeyView) -> list[dict[str, Any]]:
    keys = view.jwks.get("keys")
    return [dict(k) for k in keys if isinstance(k, dict)] if isinstance(keys, list) else []


def build(private: Sequence[dict[str, Any]], view: SigningKeyView) -> SigningKeys:
    """The key set to sign with: the private keys the view makes current, the view's public
    keys for the JWKS and for verification."""
    wanted = set(view.current.values())
    return SigningKeys.from_jwks(
        [k for k in private if k.get("kid") in wanted],
        {str(alg): kid for alg, kid in view.current.items()},
        _published(view),
    )


class KeyFollower:
    """The private keys of one service: its state file, and Admin behind it."""

    def __init__(self, state_file: Path, fetch: Fetch | None) -> None:
        self.state_file = state_file
        self.fetch = fetch

    def _stored(self) -> list[dict[str, Any]]:
        try:
            document = json.loads(self.state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("ignoring the signing key file %s: %s", self.state_file, exc)
            return []
        keys = document.get("keys") if isinstance(document, dict) else None
        return [k for k in keys if isinstance(k, dict)] if isinstance(keys, list) else []

    def cached(self, view: SigningKeyView) -> SigningKeys | None:
        """The keys from the state file when it holds every kid the view makes current."""
        stored = self._stored()
        if not set(_kids(view)) <= {k.get("kid") for k in stored}:
            return None
        try:
            return build(stored, view)
        except SigningKeyError as exc:
            log.warning("the signing key file %s: %s", self.state_file, exc)
            return None

    async def keys_for(self, view: SigningKeyView) -> SigningKeys:
        """The keys the view names: from the state file, else fetched from Admin and saved.

        Raises:
            KeysUnavailable: Admin cannot be asked, does not answer, or lacks a kid.
        """
        cached = self.cached(view)
        if cached is not None:
            return cached
        if self.fetch is None:
            raise KeysUnavailable("the signing keys the view names are not here, and no Admin")
        wanted = _kids(view)
        try:
            fetched = await self.fetch(wanted)
        except GatehouseError as exc:
            raise KeysUnavailable(f"cannot fetch the signing keys from Admin: {exc}") from None
        missing = set(wanted) - {k.get("kid") for k in fetched}
        if missing:
            raise KeysUnavailable(f"Admin does not hold the signing keys {sorted(missing)}")
        try:
            keys = build(fetched, view)
        except SigningKeyError as exc:
            raise KeysUnavailable(f"Admin's signing keys: {exc}") from None
        self._save(fetched, view)
        return keys

    def _save(self, private: list[dict[str, Any]], view: SigningKeyView) -> None:
        wanted = set(view.current.values())
        document = {
            "keys": [k for k in private if k.get("kid") in wanted],
            "current": dict(view.current),
            "published": _published(view),
        }
        self.state_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(self.state_file, json.dumps(document).encode("utf-8"), 0o600)


def admin_fetch(agent: ConfigAgent, timeout: float = TIMEOUT) -> Fetch:
    """Ask the Administration service the agent follows, with this service's certificate."""

    async def fetch(kids: Sequence[str]) -> list[dict[str, Any]]:
        from gatehouse.internal.client import FailoverClient, InternalCallError
        from gatehouse.trust.identity import ADMINISTRATION
        from gatehouse.trust.tls import ClientTLS

        state, credentials = agent.state, agent.credentials
        if state is None or credentials is None:
            raise KeysUnavailable("this service has not enrolled with Admin")
        client = FailoverClient(
            state.admin_urls,
            timeout=timeout,
            tls=ClientTLS(credentials.client, frozenset({ADMINISTRATION})),
        )
        query = urlencode([("kid", kid) for kid in kids])
        try:
            response = await client.call("GET", f"{PATH}?{query}", retry_safe=True)
        except InternalCallError as exc:
            raise KeysUnavailable(f"Admin unreachable: {exc}") from None
        finally:
            await client.aclose()
        if response.status != 200:
            raise KeysUnavailable(f"Admin answered {response.status}: {response.body[:200]!r}")
        try:
            keys = response.json()["keys"]
        except (ValueError, KeyError, TypeError):
            raise KeysUnavailable("Admin's answer is not a key list") from None
        return [k for k in keys if isinstance(k, dict)]

    return fetch


__all__ = [
    "STATE_FILE",
    "Fetch",
    "KeyFollower",
    "KeysUnavailable",
    "admin_fetch",
    "build",
]
