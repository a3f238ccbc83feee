"""The Policy service's password checks fail over between Authentication services within
the user's own login: an Authentication service that dies while a check is in flight (it
read the request, then its connection dropped) costs the user nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from gatehouse.authentication.calls import VERIFY
from gatehouse.config.failover import FailoverSettings
from gatehouse.internal.client import FailoverClient
from gatehouse.policy.portal import AuthUnavailable
from gatehouse.policy.service import AuthServiceChecker


async def dies_after_reading(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An Authentication service killed mid-request: reads the whole request, answers
    nothing, and its connection is reset."""
    await reader.readuntil(b"\r\n\r\n")
    writer.transport.abort()


async def answers_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    request = orjson.loads(await reader.readexactly(length))
    body = orjson.dumps({"result": "ok", "user": {"username": request["username"]}})
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    writer.close()


def test_a_check_in_flight_on_a_dying_authentication_service_is_answered_by_the_next() -> None:
    async def scenario() -> None:
        dying = await asyncio.start_server(dies_after_reading, "127.0.0.1", 0)
        healthy = await asyncio.start_server(answers_ok, "127.0.0.1", 0)
        urls = [f"http://127.0.0.1:{s.sockets[0].getsockname()[1]}" for s in (dying, healthy)]
        client = FailoverClient.from_settings(urls, FailoverSettings(probe_interval=None))
        checker = AuthServiceChecker(client)
        try:
            verdict = await checker.verify("alice", "secret", "192.0.2.1")
            assert verdict.result == "ok"
            assert verdict.identity is not None
            assert verdict.identity.username == "alice"
            assert client.metrics()["counters"]["failovers"] == 1
        finally:
            await checker.aclose()
            for server in (dying, healthy):
                server.close()
                await server.wait_closed()

    assert VERIFY.path.startswith("/internal/")
    asyncio.run(scenario())


def _answers(
    status: bytes, body: bytes
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 "
            + status
            + b"\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    return answer


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (b"200 OK", b"not json", "authentication service answer"),
        (b"200 OK", b'{"result": "maybe"}', "unknown result"),
        (b"200 OK", b'{"result": "ok"}', "ok without a user"),
        (b"403 Forbidden", b'{"error": "forbidden", "message": "no"}', "answered 403"),
    ],
)
def test_an_answer_that_does_not_decode_is_an_unavailable_service(
    status: bytes, body: bytes, message: str
) -> None:
    async def scenario() -> None:
        server = await asyncio.start_server(_answers(status, body), "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        checker = AuthServiceChecker(
            FailoverClient.from_settings([url], FailoverSettings(probe_interval=None))
        )
        try:
            with pytest.raises(AuthUnavailable, match=message):
                await checker.verify("alice", "secret", "192.0.2.1")
        finally:
            await checker.aclose()
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())
