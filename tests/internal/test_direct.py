"""Calls served straight from ASGI (gatehouse.internal.direct.DirectCalls) answer what their
Starlette routes answer: the same role check (audited), body limit, decoding, errors, and
metrics label; other methods still reach the router."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.types import ASGIApp, Message

from gatehouse.internal.calls import Call, json_codec
from gatehouse.internal.direct import DirectCalls, send_bytes
from gatehouse.internal.errors import Code, ServiceError
from gatehouse.internal.peer import PEER_KEY
from gatehouse.metrics.asgi import RequestMetrics
from gatehouse.metrics.service import HTTP_REQUESTS
from gatehouse.storage.errors import DatabaseUnavailable
from gatehouse.trust.identity import ACCESS_POINT, POLICY, Identity, Peer


@dataclass(frozen=True)
class Echo:
    text: str


def _parse(data: dict[str, Any]) -> Echo:
    text = data.get("text")
    if not isinstance(text, str):
        raise ValueError("text: must be a string")
    return Echo(text)


ECHO = Call(
    "authentication",
    "test_echo",
    "POST",
    "/internal/v1/test/echo",
    json_codec(_parse, lambda e: {"text": e.text}, "`{text}`", max_bytes=64),
    json_codec(_parse, lambda e: {"text": e.text}, "`{text}`"),
    roles=frozenset({POLICY}),
    retry_safe=True,
    summary="a test call",
    max_body=64,
)


async def echo(request: Request, peer: Peer | None, body: Echo) -> Echo:
    if body.text == "refuse":
        raise ServiceError(Code.CONFLICT, "refused on purpose", 409)
    if body.text == "no-db":
        raise DatabaseUnavailable("database unavailable: test")
    if body.text == "crash":
        raise RuntimeError("boom")
    who = peer.role if peer else "-"
    return Echo(f"{body.text} from {who} on {request.app.state.name}")


def _app(direct: bool) -> Starlette:
    middleware = [Middleware(DirectCalls, calls=[(ECHO, echo)])] if direct else []
    app = Starlette(routes=[ECHO.route(echo)], middleware=middleware)
    app.state.name = "app"
    return app


def _peer(role: str) -> Peer:
    return Peer(Identity(role, "x1"), 1, datetime(2100, 1, 1, tzinfo=UTC))


def _call(
    app: ASGIApp, body: bytes, *, method: str = "POST", peer: Peer | str | None = "plain"
) -> tuple[int, dict[bytes, bytes], bytes]:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": ECHO.path,
        "raw_path": ECHO.path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }
    if peer != "plain":
        scope[PEER_KEY] = peer
    chunks = [body[:5], body[5:]]  # a body in two messages
    sent: list[Message] = []

    async def receive() -> Message:
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    data = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), data


CASES = [
    pytest.param(b'{"text": "hello"}', "plain", id="answered"),
    pytest.param(b'{"text": "hello"}', _peer(POLICY), id="allowed role"),
    pytest.param(b'{"text": "hello"}', _peer(ACCESS_POINT), id="refused role"),
    pytest.param(b'{"text": "hello"}', None, id="no certificate"),
    pytest.param(b'{"text": "' + b"x" * 80 + b'"}', "plain", id="body too large"),
    pytest.param(b"not json", "plain", id="not JSON"),
    pytest.param(b'{"text": 1}', "plain", id="refused by the decoder"),
    pytest.param(b'{"text": "refuse"}', "plain", id="service error"),
    pytest.param(b'{"text": "no-db"}', "plain", id="database unavailable"),
    pytest.param(b'{"text": "crash"}', "plain", id="unexpected error"),
]


@pytest.mark.parametrize(("body", "peer"), CASES)
def test_a_direct_call_answers_what_its_route_answers(
    body: bytes, peer: Peer | str | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    routed = _call(_app(direct=False), body, peer=peer)
    routed_logs = [(r.name, r.getMessage()) for r in caplog.records]
    caplog.clear()
    direct = _call(_app(direct=True), body, peer=peer)
    direct_logs = [(r.name, r.getMessage()) for r in caplog.records]
    assert direct[0] == routed[0]
    assert orjson.loads(direct[2]) == orjson.loads(routed[2])
    assert direct[1][b"content-type"] == b"application/json"
    assert int(direct[1][b"content-length"]) == len(direct[2])
    assert direct_logs == routed_logs  # the refusal audited, the crash logged, alike


def test_the_role_check_refuses_and_audits() -> None:
    status, _, body = _call(_app(direct=True), b'{"text": "hi"}', peer=_peer(ACCESS_POINT))
    assert (status, orjson.loads(body)["error"]) == (403, "forbidden")
    status, _, body = _call(_app(direct=True), b'{"text": "hi"}', peer=_peer(POLICY))
    assert (status, orjson.loads(body)) == (200, {"text": "hi from policy on app"})


def test_another_method_goes_to_the_router() -> None:
    status, _, _ = _call(_app(direct=True), b"", method="GET")
    assert status == 405


def test_metrics_label_a_direct_call_by_its_route() -> None:
    def count() -> float:
        return HTTP_REQUESTS.labels(ECHO.path, "POST", "200")._value.get()  # type: ignore[attr-defined,no-any-return]

    before = count()
    status, _, _ = _call(RequestMetrics(_app(direct=True)), b'{"text": "hi"}')
    assert status == 200
    assert count() == before + 1


def test_a_caller_gone_before_its_body_gets_no_answer(caplog: pytest.LogCaptureFixture) -> None:
    app = _app(direct=True)
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": ECHO.path,
        "headers": [],
        "query_string": b"",
        "app": app,
    }
    messages: list[Message] = [{"type": "http.request", "body": b"{", "more_body": True}]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(DirectCalls(app, [(ECHO, echo)])(scope, receive, send))
    assert sent == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_no_content_length_on_a_204() -> None:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(send_bytes(send, 204, [(b"vary", b"Origin")], b""))
    asyncio.run(send_bytes(send, 200, [], b"{}"))
    assert sent[0]["headers"] == [(b"vary", b"Origin")]
    assert sent[2]["headers"] == [(b"content-length", b"2")]
