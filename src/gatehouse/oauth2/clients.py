"""OAuth clients as the published configuration describes them, and their secrets.

Clients are not in the OAuth2 DB: the Administration service publishes them in the
Authentication services' views. A confidential client's secret is 32 random bytes
(:func:`new_secret`) and only its hash is kept, ``sha256:<hex>``. A plain SHA-256 is enough
for a secret with 256 bits of entropy: no dictionary or brute force reaches it, so a slow
hash would buy nothing and would cost tens of milliseconds of CPU on every token request
(the code exchange goal is 500/s) and would block the event loop the protocol runs on. So
secrets are always made by :func:`new_secret`, never chosen by a person, and no other hash
is accepted.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Final

SHA256_PREFIX: Final = "sha256:"
SECRET_BYTES: Final = 32
GRANT_TYPES: Final = ("authorization_code", "refresh_token", "client_credentials")
AUTH_METHODS: Final = ("client_secret_basic", "client_secret_post", "none")


def new_secret() -> tuple[str, str]:
    """A new client secret and the hash to publish: ``(secret, secret_hash)``."""
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return secret, hash_secret(secret)


def hash_secret(secret: str) -> str:
    return SHA256_PREFIX + hashlib.sha256(secret.encode()).hexdigest()


def check_secret(secret: str, secret_hash: str) -> bool:
    """Whether ``secret`` matches ``secret_hash`` (``sha256:<hex>``), in constant time."""
    if not secret or not secret_hash.startswith(SHA256_PREFIX):
        return False
    return hmac.compare_digest(hash_secret(secret), secret_hash)


@dataclass(frozen=True, slots=True)
class ClientSpec:
    """One client of ``oauth.clients``. Redirect URIs match exactly, nothing else."""

    client_id: str
    name: str = ""
    public: bool = False
    secret_hash: str = ""
    redirect_uris: tuple[str, ...] = ()
    post_logout_redirect_uris: tuple[str, ...] = ()
    grant_types: tuple[str, ...] = ("authorization_code", "refresh_token")
    scopes: tuple[str, ...] = ("openid",)
    token_endpoint_auth_method: str = "client_secret_basic"
    consent: bool = True

    def __post_init__(self) -> None:
        if self.public and self.token_endpoint_auth_method != "none":
            raise ValueError(f"{self.client_id}: a public client authenticates with 'none'")
        if not self.public and self.token_endpoint_auth_method == "none":
            raise ValueError(f"{self.client_id}: a confidential client needs a secret method")
        for grant in self.grant_types:
            if grant not in GRANT_TYPES:
                raise ValueError(f"{self.client_id}: grant_types: unknown grant {grant!r}")
        if self.public and "client_credentials" in self.grant_types:
            raise ValueError(f"{self.client_id}: a public client cannot use client_credentials")

    @property
    def display_name(self) -> str:
        return self.name or self.client_id

    def check_secret(self, secret: str) -> bool:
        return not self.public and check_secret(secret, self.secret_hash)


__all__ = ["ClientSpec", "check_secret", "hash_secret", "new_secret"]
