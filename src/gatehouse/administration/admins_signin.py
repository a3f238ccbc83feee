"""Checking an administrator's password and one-time password with the Authentication
services (``VERIFY`` and ``OTP_VERIFY``, which allow the ``administration`` role), through
one failover client to the Authentication services of the newest published version, over
mutual TLS with the Administration service's own certificate.

The checks, the brute-force lockout and the single use of each code are the Authentication
service's, exactly as for a user of the portal: the Administration service holds no
password hash and no seed.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from gatehouse.authentication.calls import (
    OTP_VERIFY,
    VERIFY,
    OtpRequest,
    VerifyRequest,
)
from gatehouse.internal.calls import CallRefused
from gatehouse.internal.client import FailoverClient, InternalCallError
from gatehouse.trust.identity import AUTHENTICATION
from gatehouse.trust.revocation import Revocations
from gatehouse.trust.tls import ClientTLS

PasswordResult = Literal["ok", "invalid", "locked", "unavailable"]
OtpResult = Literal["ok", "invalid", "locked", "no_token", "unavailable"]


@dataclass(frozen=True, slots=True)
class Check:
    result: str
    retry_after: float | None = None


class CredentialChecker(Protocol):
    async def password(self, username: str, password: str, client_ip: str) -> Check: ...

    async def otp(self, username: str, code: str, client_ip: str, attempt: str) -> Check: ...

    async def aclose(self) -> None: ...


class AuthServiceChecker:
    """A :class:`CredentialChecker` over the Authentication services that ``endpoints``
    names (called per check: the newest version's list; the client is made again when it
    changes). ``revoked`` (Admin's revoked serials, read before each check): a revoked
    Authentication service is refused, like the other services' clients refuse one."""

    def __init__(
        self,
        endpoints: Callable[[], Sequence[str]],
        context: Callable[[], ssl.SSLContext | None],
        timeout: float = 5.0,
        revoked: Callable[[], Awaitable[set[int]]] | None = None,
    ) -> None:
        self._endpoints = endpoints
        self._context = context
        self._timeout = timeout
        self._revoked = revoked
        self._revocations = Revocations()
        self._client: FailoverClient | None = None
        self._urls: tuple[str, ...] = ()
        self._lock = asyncio.Lock()

    async def _current(self) -> FailoverClient | None:
        if self._revoked is not None:
            self._revocations.update(await self._revoked())  # acts only on a changed list
        urls = tuple(self._endpoints())
        async with self._lock:
            if urls != self._urls or self._client is None:
                if self._client is not None:
                    await self._client.aclose()
                    self._client = None
                self._urls = urls
                if urls:
                    context = self._context()
                    tls = (
                        ClientTLS(context, frozenset({AUTHENTICATION}), (), self._revocations)
                        if context
                        else None
                    )
                    self._client = FailoverClient(urls, timeout=self._timeout, tls=tls)
            return self._client

    async def _invoke(self, call: Any, request: Any) -> Any:
        client = await self._current()
        if client is None:
            return None
        try:
            return await call.invoke(client, request)
        except (InternalCallError, CallRefused, ValueError, OSError):
            return None

    async def password(self, username: str, password: str, client_ip: str) -> Check:
        answer = await self._invoke(VERIFY, VerifyRequest(username, password, client_ip))
        if answer is None:
            return Check("unavailable")
        if answer.result == "ok" and (answer.user is None or not answer.user.enabled):
            return Check("invalid")
        return Check(answer.result, answer.retry_after or None)

    async def otp(self, username: str, code: str, client_ip: str, attempt: str) -> Check:
        answer = await self._invoke(OTP_VERIFY, OtpRequest(username, code, client_ip, attempt))
        if answer is None:
            return Check("unavailable")
        return Check(answer.result, answer.retry_after)

    async def aclose(self) -> None:
        async with self._lock:
            if self._client is not None:
                await self._client.aclose()
                self._client = None


def authentication_endpoints(content: dict[str, Any] | None) -> list[str]:
    """The endpoints of the Authentication services of a published configuration."""
    services = (content or {}).get("services") or []
    return [
        str(s["endpoint"])
        for s in services
        if isinstance(s, dict) and s.get("role") == "authentication" and s.get("endpoint")
    ]
