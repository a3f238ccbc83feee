"""The Access Point's status listener (``status_listen``) in tests: where it is and what it
answers. The public ``/_gatehouse/health`` says only up or down; the details are here."""

from __future__ import annotations

import http.client
import json
import ssl
from typing import Any

from tests.support.processes import Service, free_port

STATUS_PATH = "/_gatehouse/health"


def status_settings(port: int | None = None) -> dict[str, str]:
    """The AP setting of a status listener on loopback (a free port unless given)."""
    return {"status_listen": f"127.0.0.1:{port or free_port()}"}


def status_port(service: Service) -> int:
    """The status port a test gave ``service`` (``service.status_port``)."""
    port = getattr(service, "status_port", None)
    assert isinstance(port, int), f"{service.args} was started without a status_listen"
    return port


def status_request(
    port: int,
    method: str = "GET",
    path: str = STATUS_PATH,
    context: ssl.SSLContext | None = None,
    timeout: float = 5.0,
) -> tuple[int, bytes]:
    """``(status, body)`` of one request to the status listener on ``port``."""
    conn: http.client.HTTPConnection
    if context is not None:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def ap_status(
    where: Service | int, context: ssl.SSLContext | None = None, path: str = STATUS_PATH
) -> dict[str, Any]:
    """The details an AP's status listener answers (200 expected): id, configuration
    version and source, and where its decisions go (``policy``)."""
    port = where if isinstance(where, int) else status_port(where)
    status, body = status_request(port, path=path, context=context)
    assert status == 200, (status, body[:300])
    answer: dict[str, Any] = json.loads(body)
    return answer
