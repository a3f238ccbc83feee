"""What the overview shows per service, gathered from what the Administration service knows
(registration, acknowledgements, certificates: the same as ``gatehouse config status``)
and, for an Access Point, its status listener (the Policy service it uses now, as
``gatehouse cluster status`` reads it; mutual TLS with Admin's own certificate)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from gatehouse.config.access_point import parse_listen

if TYPE_CHECKING:
    from gatehouse.administration.service import AdministrationService

STATUS_TIMEOUT = 1.0
STATUS_PATH = "/_gatehouse/health"
MAX_ANSWER = 64 * 1024
#: A certificate with less than this many days left is shown as a warning.
EXPIRY_WARNING_DAYS = 2


@dataclass(frozen=True, slots=True)
class ServiceRow:
    id: str
    role: str
    node: str
    endpoint: str
    healthy: bool
    running: int | None
    newest: int
    last_ack: datetime | None
    last_error: str | None
    certificate_expires: datetime | None
    certificate_revoked: bool
    #: An Access Point: the Policy service it sends decisions to now (id or URL), "" when
    #: it does not say.
    uses: str = ""

    @property
    def behind(self) -> bool:
        return self.running is None or self.running < self.newest

    def expires_soon(self, now: datetime) -> bool:
        if self.certificate_expires is None:
            return False
        return (self.certificate_expires - now).total_seconds() < EXPIRY_WARNING_DAYS * 86400


async def read_status(
    address: tuple[str, int], context: ssl.SSLContext | None, timeout: float = STATUS_TIMEOUT
) -> dict[str, Any] | None:
    """An Access Point's status answer (None when it does not answer usefully)."""
    host, port = address
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"

    async def ask() -> bytes:
        reader, writer = await asyncio.open_connection(host, port, ssl=context)
        try:
            writer.write(
                f"GET {STATUS_PATH} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            return await reader.read(MAX_ANSWER)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    try:
        raw = await asyncio.wait_for(ask(), timeout)
    except (OSError, TimeoutError, ssl.SSLError):
        return None
    _head, _, body = raw.partition(b"\r\n\r\n")
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None


def _policy_in_use(answer: dict[str, Any] | None, endpoints: dict[str, str]) -> str:
    if not answer:
        return ""
    policy = answer.get("policy")
    using = policy.get("using") if isinstance(policy, dict) else None
    if not isinstance(using, str) or not using:
        return ""
    return endpoints.get(using.rstrip("/"), using)


async def overview_rows(service: AdministrationService) -> list[ServiceRow]:
    """Every registered service, with what its Access Points say."""
    services = await service.services()
    latest = service.latest
    content = latest.content if latest else {}
    endpoints = {
        str(s.get("endpoint", "")).rstrip("/"): str(s.get("id"))
        for s in content.get("services") or []
        if isinstance(s, dict)
    }
    status_of = {
        str(ap.get("id")): ap.get("status_listen")
        for ap in content.get("access_points") or []
        if isinstance(ap, dict)
    }
    context = service.client_context

    async def uses(service_id: str) -> str:
        listen = status_of.get(service_id)
        if not listen:
            return ""
        try:
            address = parse_listen(str(listen))
        except ValueError:
            return ""
        return _policy_in_use(await read_status(address, context), endpoints)

    aps = [s.id for s in services if s.role == "access_point"]
    using = dict(zip(aps, await asyncio.gather(*(uses(a) for a in aps)), strict=True))
    rows = []
    for s in services:
        report = s.last_report
        last_ack = report.at if report else s.last_seen_at
        certificate = s.certificate
        rows.append(
            ServiceRow(
                id=s.id,
                role=s.role,
                node=s.node,
                endpoint=s.endpoint,
                healthy=s.healthy,
                running=s.running_version,
                newest=service.watch.latest,
                last_ack=_parse(last_ack),
                last_error=s.last_error,
                certificate_expires=_parse(certificate.not_after) if certificate else None,
                certificate_revoked=bool(certificate and certificate.revoked),
                uses=using.get(s.id, ""),
            )
        )
    return rows


def _parse(value: datetime | str | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)
