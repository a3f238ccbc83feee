"""A tiny JSON client for the internal endpoints (stdlib only)."""

from __future__ import annotations

import http.client
import json
import ssl
from typing import Any

from tests.support.processes import Service


def call(
    svc: Service, method: str, path: str, body: bytes | None = None
) -> tuple[int, bytes, dict[str, Any]]:
    # An enrolled service listens with mutual TLS: the test gives it the caller's context.
    context: ssl.SSLContext | None = getattr(svc, "tls_context", None)
    conn: http.client.HTTPConnection
    if context is not None:
        conn = http.client.HTTPSConnection(svc.host, svc.port, timeout=15, context=context)
    else:
        conn = http.client.HTTPConnection(svc.host, svc.port, timeout=15)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        content_type = response.getheader("Content-Type", "")
        assert content_type.startswith("application/json"), (response.status, raw)
        return response.status, raw, json.loads(raw)
    finally:
        conn.close()


def verify(
    svc: Service, username: str, password: str, client_ip: str = "192.0.2.10"
) -> dict[str, Any]:
    body = json.dumps({"username": username, "password": password, "client_ip": client_ip})
    status, raw, data = call(svc, "POST", "/internal/v1/password/verify", body.encode())
    assert status == 200, raw
    return data


def verify_raw(svc: Service, username: str, password: str, client_ip: str = "192.0.2.10") -> bytes:
    body = json.dumps({"username": username, "password": password, "client_ip": client_ip})
    status, raw, _ = call(svc, "POST", "/internal/v1/password/verify", body.encode())
    assert status == 200, raw
    return raw
