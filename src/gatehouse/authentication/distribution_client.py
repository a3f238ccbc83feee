"""The Distribution services as the Authentication service calls them: ``SUBMIT`` and
``STATUS`` (:mod:`gatehouse.distribution.calls`) through one failover client over the
``distribution`` endpoints, preferred first (mutual TLS with the service's credentials)."""

from __future__ import annotations

import asyncio
import contextlib

from gatehouse.authentication.code_checks import DistributionRefused, DistributionUnavailable
from gatehouse.config.failover import FailoverSettings
from gatehouse.distribution.calls import (
    HEALTH,
    STATUS,
    SUBMIT,
    MessageStatus,
    SubmitAnswer,
    SubmitRequest,
)
from gatehouse.internal.calls import CallRefused
from gatehouse.internal.client import FailoverClient, InternalCallError
from gatehouse.trust.identity import DISTRIBUTION
from gatehouse.trust.revocation import Revocations
from gatehouse.trust.tls import ClientTLS, Credentials

#: How long a replaced client waits for the calls still using it.
RETIRE_GRACE = 30.0


class FailoverDistribution:
    """:class:`~gatehouse.authentication.code_checks.Distribution` over a failover client."""

    def __init__(self, client: FailoverClient) -> None:
        self.client = client

    @classmethod
    def of(
        cls,
        urls: list[str],
        credentials: Credentials | None,
        settings: FailoverSettings | None = None,
        revocations: Revocations | None = None,
    ) -> FailoverDistribution:
        """``revocations``: the list the service's config agent keeps; a revoked
        Distribution service is then refused, and dropped at the publish."""
        tls = (
            None
            if credentials is None
            else ClientTLS(credentials.client, frozenset({DISTRIBUTION}), (), revocations)
        )
        client = FailoverClient.from_settings(
            urls,
            settings or FailoverSettings(),
            name="distribution",
            health_path=HEALTH.path,
            tls=tls,
        )
        return cls(client)

    async def submit(self, request: SubmitRequest) -> SubmitAnswer:
        try:
            return await SUBMIT.invoke(self.client, request)
        except InternalCallError as exc:
            raise DistributionUnavailable(str(exc)) from exc
        except CallRefused as exc:
            if exc.status in (400, 422):
                raise DistributionRefused(exc.message) from None
            raise DistributionUnavailable(
                f"distribution answered {exc.status}: {exc.message}"
            ) from None
        except ValueError as exc:
            raise DistributionUnavailable(f"distribution answer: {exc}") from None

    async def status(self, message_id: str) -> MessageStatus:
        try:
            return await STATUS.invoke(self.client, None, params={"id": message_id})
        except (InternalCallError, CallRefused, ValueError) as exc:
            raise DistributionUnavailable(str(exc)) from None

    async def aclose(self, grace: float = 0.0) -> None:
        if grace:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(grace)
        await self.client.aclose()


__all__ = ["RETIRE_GRACE", "FailoverDistribution"]
