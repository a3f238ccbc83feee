"""The Distribution service's HTTP app (Starlette): the routes of its internal calls
(:mod:`gatehouse.distribution.calls`), nothing else. Every answer is JSON; an outbox DB that
is down is waited for (``database.failover_wait``), then answers 503 ``unavailable`` so the
caller fails over; a request that cannot be parsed answers 400 naming the field.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request

from gatehouse.distribution.calls import (
    HEALTH,
    MESSAGE_ID,
    STATUS,
    SUBMIT,
    MessageStatus,
    SubmitAnswer,
    SubmitRequest,
)
from gatehouse.distribution.config import DistributionSettings
from gatehouse.distribution.service import ROLE, Service
from gatehouse.internal.config_agent import ConfigAgent, config_fields
from gatehouse.internal.endpoint import bad_request, http_error, unexpected_error
from gatehouse.trust.identity import Peer

__all__ = ["create_app"]


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


async def health(request: Request, peer: Peer | None, body: None) -> dict[str, object]:
    service = _service(request)
    service.require_ready()
    # While the outbox DB is waited for (a failover), submissions wait for it: this service
    # is up, and its callers must not take it for a dead one.
    await service.db.check_health()
    stats = service.deliverer.stats
    answer: dict[str, object] = {
        "status": "ok",
        "role": ROLE,
        "id": service.started.id,
        **config_fields(service.agent),
        "channels": [sender.name for sender in service.deliverer.senders],
        "channel_problems": service.channel_problems,
        "delivering": service.deliverer.busy,
        "sent": stats.sent,
        "expired": stats.expired,
    }
    if service.agent is not None:
        answer["config"] = service.agent.status().to_json()
    return answer


async def submit(request: Request, peer: Peer | None, parsed: SubmitRequest) -> SubmitAnswer:
    """Accept a message; over mutual TLS only Policy and Authentication services get here."""
    return await _service(request).submit(parsed)


async def status(request: Request, peer: Peer | None, body: None) -> MessageStatus:
    message_id = request.path_params["id"]
    if not MESSAGE_ID.match(message_id):
        raise bad_request("id: not a message id")
    return await _service(request).status(message_id)


def create_app(
    settings: DistributionSettings,
    outbox_db: str,
    keyring: Path,
    home: Path,
    agent: ConfigAgent | None = None,
) -> Starlette:
    """The app; with ``agent``, the service follows Admin while it runs."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service = Service(settings, outbox_db, keyring, home, agent)
        app.state.service = service
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    return Starlette(
        routes=[HEALTH.route(health), SUBMIT.route(submit), STATUS.route(status)],
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: unexpected_error},
    )
