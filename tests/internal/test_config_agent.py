"""The config agent: pure decisions from tables, then the whole loop over real HTTP on
loopback.

End to end, the agent (in the test's event loop, as in a service) follows a real
``gatehouse administration`` process, configured through its API: published versions, join
tokens, the services table where acks land. A TCP relay between them plays the network: cut
it to keep the agent from Admin, or let it rewrite what Admin sends.

What a real Admin never sends (an envelope for another service, an old version replayed,
garbage, a field the service's model does not know) comes from a stand-in: Starlette +
uvicorn in the test's loop, over TLS with a CA of its own, implementing the contract's
service endpoints (CA, register, long-poll config, ack, renew, docs/internal-api.md) with keys
and views from ``gatehouse.administration``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from unittest.mock import ANY

import orjson
import pytest
import uvicorn
import uvloop
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gatehouse.administration.document import parse_config
from gatehouse.administration.signing import (
    Ed25519PrivateKey,
    generate_private_key,
    public_key_pem,
    sign_version,
    sign_view,
    timestamp,
)
from gatehouse.administration.views import all_views
from gatehouse.config.access_point import AccessPointConfig
from gatehouse.config.loader import validate as validate_model
from gatehouse.errors import ConfigError
from gatehouse.internal.config_agent import (
    Accepted,
    AdminUnavailable,
    AgentStatus,
    Backoff,
    CaMismatch,
    ConfigAgent,
    JoinTokenRefused,
    LastKnownGoodInvalid,
    NotRegistered,
    Refused,
    SigningKeyChanged,
    describe,
    judge,
    one_line,
    poll_path,
)
from gatehouse.internal.hosting import server_config
from gatehouse.internal.lkg import StateError
from gatehouse.internal.peer import scope_peer
from gatehouse.trust.ca import DEFAULT_LIFETIME, CertificateAuthority
from gatehouse.trust.identity import ADMINISTRATION, Identity
from gatehouse.trust.tls import Credentials, write_credentials
from tests.support.admin import RealAdmin, real_admin
from tests.support.processes import free_port

FIXTURES = (real_admin,)

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]

KEY = generate_private_key()
PEM = public_key_pem(KEY)
CREATED = "2030-01-02T03:04:05Z"
VIEW: dict[str, Any] = {"resources": [{"id": "wiki"}]}
FAST = Backoff(first=0.05, cap=0.3)


def signed(
    version: int, service: str = "ap1", view: dict[str, Any] | None = None, key: Any = KEY
) -> bytes:
    return orjson.dumps(sign_view(key, version, service, CREATED, view or VIEW))


def edited(body: bytes, **changes: Any) -> bytes:
    data = orjson.loads(body)
    data.update(changes)
    return orjson.dumps(data)


# pure logic ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "delay"),
    [
        (-1, 0.0),
        (0, 0.0),
        (1, 0.5),
        (2, 1.0),
        (3, 2.0),
        (4, 4.0),
        (5, 8.0),
        (6, 10.0),
        (7, 10.0),
        (1000, 10.0),
        (10**9, 10.0),
    ],
)
def test_backoff_schedule(failures: int, delay: float) -> None:
    assert Backoff().delay(failures) == delay


def test_backoff_is_configurable() -> None:
    delays = [Backoff(0.1, 1.0, 3.0).delay(n) for n in range(1, 5)]
    assert delays == pytest.approx([0.1, 0.3, 0.9, 1.0])


BAD_SIG = base64.b64encode(b"\0" * 64).decode()

JUDGEMENTS: list[tuple[str, bytes, int, Accepted | Refused]] = [
    ("first version", signed(1), 0, Accepted(1, VIEW)),
    ("newer version", signed(8), 7, Accepted(8, VIEW)),
    ("same version again", signed(7), 7, Refused(7, "version 7 is not newer than")),
    ("older version replayed", signed(3), 7, Refused(3, "version 3 is not newer than")),
    ("view altered", edited(signed(8), view={"resources": []}), 7, Refused(8, "does not verify")),
    ("version altered", edited(signed(8), version=9), 7, Refused(9, "does not verify")),
    ("signature zeroed", edited(signed(8), signature=BAD_SIG), 7, Refused(8, "does not verify")),
    ("another key", signed(8, key=generate_private_key()), 7, Refused(8, "does not verify")),
    ("another service", signed(8, service="ap2"), 7, Refused(8, "addressed to 'ap2'")),
    ("not JSON", b"<html>", 7, Refused(7, "envelope is not JSON")),
    ("not JSON, nothing running", b"", 0, Refused(None, "envelope is not JSON")),
    ("no version", b'{"view": {}}', 7, Refused(7, "envelope fields")),
    ("bool version", edited(signed(8), version=True), 7, Refused(7, "")),
    ("a list", b"[1]", 0, Refused(None, "not a JSON object")),
]


@pytest.mark.parametrize(
    ("body", "running", "expected"),
    [case[1:] for case in JUDGEMENTS],
    ids=[case[0] for case in JUDGEMENTS],
)
def test_judge(body: bytes, running: int, expected: Accepted | Refused) -> None:
    result = judge(body, KEY.public_key(), "ap1", running)
    if isinstance(expected, Accepted):
        assert result == expected
    else:
        assert isinstance(result, Refused)
        assert result.version == expected.version
        assert expected.error in result.error
        assert "\n" not in result.error


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("one", 500, "one"),
        ("a: x\nb: y\n", 500, "a: x; b: y"),
        ("  a\n\n  b  ", 500, "a; b"),
        ("abcdef", 4, "abc…"),
        ("", 500, ""),
    ],
)
def test_one_line(text: str, limit: int, expected: str) -> None:
    assert one_line(text, limit) == expected


def test_describe() -> None:
    problems = [("resources[0].id", "bad id"), ("access_point.x", "unknown field")]
    assert (
        describe(ConfigError(problems)) == "resources[0].id: bad id; access_point.x: unknown field"
    )
    assert describe(KeyError("k")) == "KeyError: 'k'"
    assert len(describe(ValueError("x" * 2000))) == 500


def test_poll_path() -> None:
    assert poll_path("ap1", 7, 30.0) == "/api/v1/config/ap1?after=7&wait=30"
    assert poll_path("ps-2", 0, 0.5) == "/api/v1/config/ps-2?after=0&wait=0.5"


# a stand-in Admin ----------------------------------------------------------------------------


def installation(*resources: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A small installation whose ``ap1`` view lists ``resources``."""
    return {
        "services": [
            {
                "id": "ap1",
                "role": "access_point",
                "endpoint": "http://127.0.0.1:8080",
                "node": "n1",
            },
            {"id": "ps1", "role": "policy", "endpoint": "http://127.0.0.1:8101", "node": "n1"},
            {
                "id": "auth1",
                "role": "authentication",
                "endpoint": "http://127.0.0.1:8201",
                "node": "n1",
            },
        ],
        "access_points": [{"id": "ap1", "policy_services": ["ps1"], **(extra or {})}],
        "policy_services": [{"id": "ps1", "authentication": ["auth1"]}],
        "resources": [
            {"id": name, "path_prefix": f"/{name}", "backends": ["http://127.0.0.1:8000"]}
            for name in resources
        ],
    }


@dataclass
class Served:
    """What the stand-in answers for a service: ``body`` to anyone polling after < version."""

    version: int
    body: bytes


@dataclass
class FakeAdmin:
    """CA, register, long-poll, ack and renew as in the contract, over TLS with a CA of its
    own, with state that survives restarts."""

    key: Ed25519PrivateKey = field(default_factory=generate_private_key)
    ca: CertificateAuthority = field(default_factory=CertificateAuthority.create)
    port: int = field(default_factory=free_port)
    version: int = 0
    tokens: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: Serials whose calls are refused (403).
    revoked: set[int] = field(default_factory=set)
    renewals: int = 0
    lifetime: timedelta = DEFAULT_LIFETIME
    served: dict[str, Served] = field(default_factory=dict)
    acks: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    polls: list[tuple[str, int, float]] = field(default_factory=list)
    #: Answer this many registrations 503 (busy) first, using no token.
    busy_registrations: int = 0
    registrations: int = 0
    #: Answer every poll with this error (status, code, message) instead.
    poll_error: tuple[int, str, str] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    server: uvicorn.Server | None = None
    task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    # what tests drive
    def join_token(self, role: str = "access_point", service_id: str = "ap1") -> str:
        token = f"ghj1.{self.ca.fingerprint.removeprefix('sha256:')}.{secrets.token_urlsafe(16)}"
        self.tokens[token] = (role, service_id)
        return token

    def publish(self, config: dict[str, Any]) -> int:
        views = all_views(parse_config(yaml.safe_dump(config)))
        self.version += 1
        version = sign_version(self.key, self.version, timestamp(), views)
        for service, envelope in version.envelopes.items():
            self.serve(service, self.version, orjson.dumps(envelope))
        return self.version

    def serve(self, service: str, version: int, body: bytes) -> None:
        self.served[service] = Served(version, body)
        self.changed.set()
        self.changed = asyncio.Event()

    def acks_of(self, service: str = "ap1") -> list[dict[str, Any]]:
        return [body for who, body in self.acks if who == service]

    # the endpoints
    async def ca_pem(self, request: Request) -> Response:
        return Response(self.ca.certificate_pem, media_type="application/x-pem-file")

    def answer(self, certificate: Any) -> dict[str, str]:
        from cryptography.hazmat.primitives import serialization

        return {
            "certificate": certificate.public_bytes(serialization.Encoding.PEM).decode(),
            "ca": self.ca.certificate_pem.decode(),
        }

    async def register(self, request: Request) -> Response:
        self.registrations += 1
        if self.busy_registrations > 0:
            self.busy_registrations -= 1
            return error(503, "unavailable", "database unavailable: database is locked")
        data = await request.json()
        made_for = self.tokens.pop(data["token"], None)
        if made_for is None:
            return error(401, "unauthorized", "join token unknown, expired or already used")
        if made_for != (data["role"], data["service_id"]):
            return error(401, "unauthorized", f"the token is for {made_for}")
        certificate = self.ca.issue(data["csr"], Identity(*made_for), lifetime=self.lifetime)
        return JSONResponse({**self.answer(certificate), "public_key": public_key_pem(self.key)})

    def authorised(self, request: Request) -> bool:
        peer = scope_peer(request.scope)[1]
        return (
            peer is not None
            and peer.service_id == request.path_params["service_id"]
            and peer.serial not in self.revoked
        )

    async def renew(self, request: Request) -> Response:
        peer = scope_peer(request.scope)[1]
        if peer is None or peer.serial in self.revoked:
            return error(403, "forbidden", "no certificate, or a revoked one")
        self.renewals += 1
        data = await request.json()
        return JSONResponse(self.answer(self.ca.issue(data["csr"], peer.identity)))

    async def config(self, request: Request) -> Response:
        service = request.path_params["service_id"]
        if not self.authorised(request):
            return error(403, "forbidden", "the certificate is revoked")
        after = int(request.query_params.get("after", "0"))
        wait = float(request.query_params.get("wait", "30"))
        self.polls.append((service, after, time.monotonic()))
        if self.poll_error is not None:
            return error(*self.poll_error)
        deadline = time.monotonic() + min(wait, 60.0)
        while True:
            served = self.served.get(service)
            if served is not None and served.version > after:
                return Response(served.body, media_type="application/json")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return Response(status_code=204)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)

    async def ack(self, request: Request) -> Response:
        if not self.authorised(request):
            return error(403, "forbidden", "the certificate is revoked")
        self.acks.append((request.path_params["service_id"], await request.json()))
        return JSONResponse({"ok": True})

    # life
    async def start(self) -> FakeAdmin:
        app = Starlette(
            routes=[
                Route("/api/v1/ca", self.ca_pem),
                Route("/api/v1/register", self.register, methods=["POST"]),
                Route("/api/v1/certificates/renew", self.renew, methods=["POST"]),
                Route("/api/v1/config/{service_id}", self.config),
                Route("/api/v1/config/{service_id}/ack", self.ack, methods=["POST"]),
            ]
        )
        directory = Path(tempfile.mkdtemp()) / "tls"
        key, cert = self.ca.issue_key_pair(Identity(ADMINISTRATION, "admin"))
        write_credentials(directory, self.ca.certificate_pem, cert, key)
        context = Credentials(directory).optional_client_server_context()
        self.server = uvicorn.Server(server_config(app, "127.0.0.1", self.port, tls=context))
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self.task.done():
                await self.task
            await asyncio.sleep(0.005)
        return self

    async def kill(self) -> None:
        """Stop as a killed process would: every connection reset, no answer finished."""
        server, task = self.server, self.task
        if server is None or task is None:
            return
        self.server = self.task = None
        server.force_exit = server.should_exit = True
        for listener in server.servers:
            listener.close()  # no new connection from here on
        for connection in list(server.server_state.connections):
            if connection.transport is not None:
                connection.transport.abort()
        for handler in list(server.server_state.tasks):
            handler.cancel()
        await task


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


# harness --------------------------------------------------------------------------------------


@pytest.fixture
def run() -> Run[Any]:
    def runner(coro: Coroutine[Any, Any, T]) -> T:
        async def guarded() -> T:
            async with asyncio.timeout(30):  # a hung scenario fails instead of hanging
                return await coro

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(guarded())

    return runner


async def eventually(check: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout}s: {check}")
        await asyncio.sleep(0.01)


async def acked(admin: FakeAdmin, version: int, service: str = "ap1") -> None:
    """Wait until ``service`` reports it runs ``version`` (applied and saved)."""
    await eventually(lambda: {"version": version, "error": None} in admin.acks_of(service))


def ap_model(view: dict[str, Any]) -> object:
    """The Access Point's own check, plus a rule the stand-in Admin does not know."""
    config = validate_model(AccessPointConfig, view, "ap1 view")
    for index, resource in enumerate(config.resources):
        if resource.id == "refuse-me":
            raise ConfigError([(f"resources[{index}].id", "refused by this service")])
    return config


@dataclass
class Service:
    """What a service does with its configuration: swap it, remember it."""

    applied: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    fail_apply: bool = False
    is_async: bool = True

    @property
    def version(self) -> int:
        return self.applied[-1][0] if self.applied else 0

    def resources(self) -> list[str]:
        return [r["id"] for r in self.applied[-1][1]["resources"]] if self.applied else []

    def apply(self, version: int, view: dict[str, Any]) -> Awaitable[None] | None:
        if self.fail_apply:
            raise RuntimeError("listener cannot move")
        self.applied.append((version, view))
        return asyncio.sleep(0) if self.is_async else None


@contextlib.asynccontextmanager
async def following(agent: ConfigAgent, service: Service | None = None) -> AsyncIterator[Service]:
    service = service or Service()
    task = asyncio.create_task(agent.run(service.apply, ap_model))
    try:
        yield service
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def registered_agent(admin: FakeAdmin, state: Path, **options: Any) -> ConfigAgent:
    agent = ConfigAgent(state, wait=options.pop("wait", 5.0), backoff=FAST, **options)
    await agent.register(
        [admin.url], admin.join_token(), "ap1", "access_point", "n1", "http://127.0.0.1:8080"
    )
    return agent


# end to end against the real Administration service --------------------------------------------


class Relay:
    """The network between the agent and Admin: a TCP relay on loopback that a test can cut
    (connections reset, new ones refused) and that can rewrite what Admin sends."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.rewrite: Callable[[bytes], bytes] | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Relay:
        self._server = await asyncio.start_server(self._connected, "127.0.0.1", self.port)
        return self

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, downstream: bool
        ) -> None:
            try:
                while data := await source.read(65536):
                    if downstream and self.rewrite is not None:
                        data = self.rewrite(data)
                    sink.write(data)
                    await sink.drain()
            except OSError:
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))
        self._writers.difference_update((writer, up_writer))


async def joined_agent(
    admin: RealAdmin, state: Path, url: str | None = None, **options: Any
) -> ConfigAgent:
    agent = ConfigAgent(state, backoff=FAST, **options)
    token = await admin.join_token()
    await agent.register(
        [url or admin.url], token, "ap1", "access_point", "n1", "http://127.0.0.1:8080"
    )
    return agent


def test_register_pull_apply_save_and_ack(
    run: Run[None], tmp_path: Path, real_admin: RealAdmin
) -> None:
    async def scenario() -> None:
        first = await real_admin.publish(installation("wiki"))
        agent = await joined_agent(real_admin, tmp_path / "state")
        assert agent.state is not None
        assert agent.state.admin_urls == (real_admin.url,)
        assert agent.status() == AgentStatus(0, False, "", "")
        async with following(agent) as service:
            row = await real_admin.reported(first)
            assert (row["role"], row["node"], row["endpoint"]) == (
                "access_point",
                "n1",
                "http://127.0.0.1:8080",
            )
            assert service.version == first
            assert service.resources() == ["wiki"]
            view = service.applied[-1][1]
            assert view["access_point"]["id"] == "ap1"
            assert agent.status() == AgentStatus(first, True, "", "")
        # What was applied is saved, signed, as Admin sent it: a restart starts from it.
        restarted = ConfigAgent(tmp_path / "state")
        assert restarted.load_last_known_good() == (first, view)
        lkg = orjson.loads(agent.state_dir.read_lkg() or b"")
        assert (lkg["version"], lkg["service"], lkg["view"]) == (first, "ap1", view)

    run(scenario())


def test_a_publish_wakes_the_agent_at_once(
    run: Run[None], tmp_path: Path, real_admin: RealAdmin
) -> None:
    async def scenario() -> None:
        agent = await joined_agent(real_admin, tmp_path / "state")
        async with following(agent) as service:
            await eventually(lambda: agent.status().connected)
            await asyncio.sleep(0.1)  # in its long poll
            for names in (("wiki",), ("wiki", "docs"), ("docs",)):
                draft = {"text": yaml.safe_dump(installation(*names))}
                await real_admin.call("PUT", "/api/v1/draft", draft)
                started = time.monotonic()
                version = (await real_admin.call("POST", "/api/v1/publish", {"comment": ""}))[
                    "version"
                ]
                await eventually(lambda v=version: service.version == v, timeout=0.5)  # type: ignore[misc]
                assert time.monotonic() - started < 0.5
                assert service.resources() == list(names)
            await real_admin.reported(service.version)

    run(scenario())


def test_traffic_tampered_in_transit_never_reaches_the_service(
    run: Run[None], tmp_path: Path, real_admin: RealAdmin
) -> None:
    """TLS: a changed byte on the way from Admin breaks the connection; nothing is applied,
    and the agent catches up once the path is clean."""

    async def scenario() -> None:
        relay = await Relay(real_admin.port).start()
        try:
            first = await real_admin.publish(installation("wiki"))
            agent = await joined_agent(real_admin, tmp_path / "state", relay.url)
            async with following(agent) as service:
                await real_admin.reported(first)
                lkg = agent.state_dir.read_lkg()
                relay.rewrite = lambda data: data[:-1] + bytes([data[-1] ^ 1])
                second = await real_admin.publish(installation("wiki", "docs"))
                await eventually(lambda: not agent.status().connected)
                assert service.version == first
                assert len(service.applied) == 1
                assert agent.state_dir.read_lkg() == lkg
                relay.rewrite = None
                await real_admin.reported(second)
                assert service.resources() == ["wiki", "docs"]
        finally:
            await relay.cut()

    run(scenario())


def test_an_admin_with_another_ca_is_refused(
    run: Run[None], tmp_path: Path, real_admin: RealAdmin
) -> None:
    """The join token pins the CA: an Administration service showing another is refused
    before anything is sent to it (no trust on first use)."""
    impostor = RealAdmin(tmp_path / "impostor").start()
    try:

        async def scenario() -> None:
            token = await real_admin.join_token()
            agent = ConfigAgent(tmp_path / "state", backoff=FAST)
            args = ("ap1", "access_point", "n1", "http://127.0.0.1:8080")
            with pytest.raises(CaMismatch) as caught:
                await agent.register([impostor.url], token, *args)
            message = str(caught.value)
            assert f"the Administration service at {impostor.url} shows the CA sha256:" in message
            assert f"but the join token names sha256:{token.split('.')[1]}" in message
            assert agent.state is None
            assert agent.credentials is None
            assert not (tmp_path / "state" / "admin.json").exists()
            assert (await impostor.call("GET", "/api/v1/services")) == []  # nothing reached it
            # The token is still good for the real one.
            await agent.register([real_admin.url], token, *args)
            assert agent.credentials is not None

        run(scenario())
    finally:
        impostor.stop()


def test_the_certificate_is_renewed_and_new_handshakes_use_it_without_a_restart(
    run: Run[None], tmp_path: Path
) -> None:
    """A short certificate lifetime: the agent renews at about two thirds, keeps following,
    and a new connection presents the new certificate."""
    from starlette.routing import Route as StarletteRoute

    from gatehouse.administration.credentials import load_ca
    from gatehouse.internal.client import FailoverClient
    from gatehouse.trust.identity import POLICY
    from gatehouse.trust.tls import ClientTLS

    admin = RealAdmin(tmp_path / "admin", certificate_lifetime=4).start()
    try:

        async def who(request: Request) -> Response:
            peer = scope_peer(request.scope)[1]
            return JSONResponse({"serial": f"{peer.serial:x}" if peer else None})

        async def scenario() -> None:
            # A server of the installation the agent's service calls (a Policy service).
            ca = load_ca(admin.home)
            key, cert = ca.issue_key_pair(Identity(POLICY, "ps1"))
            write_credentials(tmp_path / "ps1", ca.certificate_pem, cert, key)
            port = free_port()
            app = Starlette(routes=[StarletteRoute("/who", who)])
            context = Credentials(tmp_path / "ps1").server
            server = uvicorn.Server(server_config(app, "127.0.0.1", port, tls=context))
            served = asyncio.create_task(server.serve())

            async def serial_seen() -> int:
                assert agent.credentials is not None
                tls = ClientTLS(agent.credentials.client, frozenset({POLICY}))
                async with FailoverClient([f"https://127.0.0.1:{port}"], tls=tls) as client:
                    answer = await client.call("GET", "/who", retry_safe=True)
                    return int(answer.json()["serial"], 16)

            try:
                first = await admin.publish(installation("wiki"))
                agent = await joined_agent(admin, tmp_path / "state", wait=1.0)
                assert agent.credentials is not None
                original = agent.credentials.info
                while not server.started:
                    await asyncio.sleep(0.01)
                assert await serial_seen() == original.serial
                async with following(agent) as service:
                    await admin.reported(first)
                    await eventually(
                        lambda: (
                            agent.credentials is not None
                            and agent.credentials.info.serial != original.serial
                        ),
                        timeout=6.0,
                    )
                    renewed = agent.credentials.info
                    assert renewed.not_after > original.not_after
                    assert await serial_seen() == renewed.serial
                    row = await admin.service("ap1")
                    assert row["certificate"]["serial"] == f"{renewed.serial:x}"
                    # Still following Admin, with no restart.
                    second = await admin.publish(installation("wiki", "docs"))
                    await admin.reported(second)
                    assert service.version == second
                    assert agent.status().connected
            finally:
                server.should_exit = True
                await served

        run(scenario())
    finally:
        admin.stop()


def test_a_revoked_service_is_refused_and_its_serial_reaches_the_others_at_once(
    run: Run[None], tmp_path: Path, real_admin: RealAdmin
) -> None:
    async def scenario() -> None:
        first = await real_admin.publish(installation("wiki"))
        ap = await joined_agent(real_admin, tmp_path / "ap1")
        ps = ConfigAgent(tmp_path / "ps1", backoff=FAST)
        await ps.register(
            [real_admin.url],
            await real_admin.join_token("policy"),
            "ps1",
            "policy",
            "n1",
            "http://127.0.0.1:8101",
        )
        assert ps.credentials is not None
        serial = ps.credentials.info.serial
        ap_service, ps_service = Service(), Service()
        ap_task = asyncio.create_task(ap.run(ap_service.apply, ap_model))
        ps_task = asyncio.create_task(ps.run(ps_service.apply, lambda view: None))
        try:
            await real_admin.reported(first)
            await real_admin.reported(first, service_id="ps1")
            await asyncio.sleep(0.2)  # both in their long polls
            revoked_at = time.monotonic()
            answer = await real_admin.revoke("ps1")
            assert answer["revoked"] == [f"{serial:x}"]
            await eventually(lambda: serial in ap.revocations.serials, timeout=1.0)
            assert time.monotonic() - revoked_at < 1.0
            assert ap.version == answer["version"]
            await eventually(lambda: "403 forbidden" in ps.status().admin_error)
            assert "is revoked" in ps.status().admin_error
            assert ps.version == first  # it never got the version that revokes it
            assert serial not in ps.revocations.serials
        finally:
            for task in (ap_task, ps_task):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    run(scenario())


def test_a_view_failing_the_services_validation_is_refused_and_the_running_one_kept(
    run: Run[None], tmp_path: Path, real_admin: RealAdmin
) -> None:
    async def scenario() -> None:
        first = await real_admin.publish(installation("wiki"))
        agent = await joined_agent(real_admin, tmp_path / "state")
        async with following(agent) as service:
            await real_admin.reported(first)
            lkg = agent.state_dir.read_lkg()
            second = await real_admin.publish(installation("wiki", "refuse-me"))
            row = await real_admin.reported(first, f"version {second} is invalid")
            assert row["last_error"] == (
                f"version {second} is invalid: resources[1].id: refused by this service"
            )
            assert service.version == first
            assert agent.state_dir.read_lkg() == lkg
            third = await real_admin.publish(installation("wiki", "docs"))
            await real_admin.reported(third)  # the error is cleared by the next good version
            assert service.version == third

    run(scenario())


def test_admin_killed_then_back_with_a_version_published_meanwhile(
    run: Run[None], tmp_path: Path, real_admin: RealAdmin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "gatehouse.config_agent")

    async def scenario() -> None:
        relay = await Relay(real_admin.port).start()
        try:
            first = await real_admin.publish(installation("wiki"))
            agent = await joined_agent(real_admin, tmp_path / "state", relay.url)
            async with following(agent) as service:
                await real_admin.reported(first)
                await eventually(lambda: agent.status().connected)
                real_admin.kill()
                await eventually(lambda: not agent.status().connected)
                assert "Admin unreachable, keeping version 1" in agent.status().admin_error
                await asyncio.sleep(0.5)  # retrying, still serving version 1
                assert service.version == first
                assert agent.version == first
                # Admin comes back and publishes before the agent can reach it again.
                await relay.cut()
                await asyncio.to_thread(real_admin.start)
                second = await real_admin.publish(installation("wiki", "docs"))
                await relay.start()
                started = time.monotonic()
                await real_admin.reported(second)  # caught up by pulling
                assert time.monotonic() - started < FAST.cap + 1.0
                assert service.version == second
                assert agent.status() == AgentStatus(second, True, "", "")
        finally:
            await relay.cut()
        messages = [r.getMessage() for r in caplog.records]
        # A warning when the outage starts (and when its cause changes), not one per retry.
        retries = sum("Admin unreachable" in m for m in messages)
        assert 1 <= retries <= 3, messages
        assert any("Admin reachable again, running version 1" in m for m in messages)

    run(scenario())


def test_start_from_last_known_good_while_admin_is_down(
    run: Run[None], tmp_path: Path, real_admin: RealAdmin
) -> None:
    async def scenario() -> None:
        first = await real_admin.publish(installation("wiki"))
        agent = await joined_agent(real_admin, tmp_path / "state")
        async with following(agent) as service:
            await real_admin.reported(first)
        view = service.applied[-1][1]
        real_admin.kill()

        # The service restarts while Admin is down: it starts from its snapshot.
        restarted = ConfigAgent(tmp_path / "state", backoff=FAST)
        assert restarted.load_last_known_good() == (first, view)
        assert restarted.version == first
        async with following(restarted) as again:
            await asyncio.sleep(0.5)
            assert again.applied == []  # nothing new: it keeps what it started from
            status = restarted.status()
            assert status.version == first
            assert not status.connected
            assert "Admin unreachable" in status.admin_error
            # Admin returns: the agent reports what it runs and follows again.
            await asyncio.to_thread(real_admin.start)
            await eventually(lambda: restarted.status().connected)
            second = await real_admin.publish(installation("docs"))
            await real_admin.reported(second)
            assert again.version == second

    run(scenario())


def test_a_first_start_waits_for_admins_first_version(
    run: Run[None], tmp_path: Path, real_admin: RealAdmin
) -> None:
    async def scenario() -> None:
        agent = await joined_agent(real_admin, tmp_path / "state")
        starting = asyncio.create_task(agent.initial(ap_model))
        await asyncio.sleep(0.3)
        assert not starting.done()  # nothing published: nothing to start from
        first = await real_admin.publish(installation("wiki"))
        version, view = await asyncio.wait_for(starting, 2.0)
        assert version == first
        assert [r["id"] for r in view["resources"]] == ["wiki"]
        assert agent.state_dir.load_last_known_good() == (first, view)
        # The service is built from it, then follows Admin: that reports the version.
        async with following(agent) as service:
            await real_admin.reported(first)
            assert service.applied == []
            second = await real_admin.publish(installation("docs"))
            await real_admin.reported(second)

    run(scenario())


def test_a_start_skips_a_last_known_good_the_service_now_refuses(
    run: Run[None], tmp_path: Path, real_admin: RealAdmin, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        first = await real_admin.publish(installation("wiki"))
        agent = await joined_agent(real_admin, tmp_path / "state")
        assert await agent.initial(ap_model) == (first, ANY)
        second = await real_admin.publish(installation("docs"))

        def upgraded_model(view: dict[str, Any]) -> object:
            if any(r["id"] == "wiki" for r in view["resources"]):
                raise ConfigError([("resources[0].id", "wiki is not supported any more")])
            return ap_model(view)

        # A snapshot the service accepts is what it starts from.
        restarted = ConfigAgent(tmp_path / "state", backoff=FAST)
        assert await restarted.initial(ap_model) == (first, ANY)
        # After an upgrade the old snapshot is refused: Admin's current version is used.
        upgraded = ConfigAgent(tmp_path / "state", backoff=FAST)
        version, view = await upgraded.initial(upgraded_model)
        assert version == second
        assert [r["id"] for r in view["resources"]] == ["docs"]
        assert upgraded.state_dir.load_last_known_good() == (second, view)

    run(scenario())
    assert any(
        "last-known-good version 1 is refused by this service" in r.getMessage()
        and "wiki is not supported any more" in r.getMessage()
        for r in caplog.records
    )


def test_a_tampered_last_known_good_file_is_refused(
    run: Run[None], tmp_path: Path, real_admin: RealAdmin
) -> None:
    async def scenario() -> None:
        first = await real_admin.publish(installation("wiki"))
        agent = await joined_agent(real_admin, tmp_path / "state")
        async with following(agent):
            await real_admin.reported(first)

    run(scenario())
    path = tmp_path / "state" / "lkg.json"
    path.write_bytes(path.read_bytes().replace(b'"/wiki"', b'"/evil"'))
    restarted = ConfigAgent(tmp_path / "state")
    with pytest.raises(LastKnownGoodInvalid, match="must not start from it") as caught:
        restarted.load_last_known_good()
    assert "does not verify with Admin's key" in str(caught.value)
    assert restarted.version == 0


def test_join_token_reuse_is_refused(run: Run[None], tmp_path: Path, real_admin: RealAdmin) -> None:
    async def scenario() -> None:
        token = await real_admin.join_token()
        args = ("ap1", "access_point", "n1", "http://127.0.0.1:8080")
        await ConfigAgent(tmp_path / "one").register([real_admin.url], token, *args)
        agent = ConfigAgent(tmp_path / "two")
        with pytest.raises(JoinTokenRefused) as caught:
            await agent.register([real_admin.url], token, *args)
        text = str(caught.value)
        assert "join token unknown, expired or already used" in text
        assert "make a new one (gatehouse nodes token --role access_point --id ap1)" in text
        assert agent.state is None
        assert not (tmp_path / "two" / "admin.json").exists()
        # A token made for another role.
        policy_token = await real_admin.join_token("policy")
        with pytest.raises(JoinTokenRefused, match="made for a policy service 'ps1'"):
            await agent.register([real_admin.url], policy_token, *args)

    run(scenario())


# against the stand-in: what a real Admin never sends -----------------------------------------


def test_sync_apply_works_too(run: Run[None], tmp_path: Path) -> None:
    async def scenario() -> None:
        admin = await FakeAdmin().start()
        try:
            version = admin.publish(installation("wiki"))
            agent = await registered_agent(admin, tmp_path / "state")
            async with following(agent, Service(is_async=False)) as service:
                await eventually(lambda: service.version == version)
        finally:
            await admin.kill()

    run(scenario())


def tamper_view(body: bytes) -> bytes:
    data = orjson.loads(body)
    data["view"]["resources"].append(
        {"id": "evil", "path_prefix": "/", "backends": ["http://203.0.113.9"]}
    )
    return orjson.dumps(data)


@pytest.mark.parametrize(
    ("forge", "message"),
    [
        (tamper_view, "does not verify with Admin's key"),
        (lambda body: edited(body, version=10**6), "does not verify"),
        (lambda body: b"<html>proxy error</html>", "envelope is not JSON"),
    ],
    ids=["view", "version", "garbage"],
)
def test_a_tampered_envelope_is_refused_and_reported(
    run: Run[None],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    forge: Callable[[bytes], bytes],
    message: str,
) -> None:
    async def scenario() -> None:
        admin = await FakeAdmin().start()
        try:
            first = admin.publish(installation("wiki"))
            agent = await registered_agent(admin, tmp_path / "state")
            async with following(agent) as service:
                await acked(admin, first)
                good = admin.served["ap1"].body
                # An attacker in the path changes what Admin sends.
                second = admin.publish(installation("wiki", "docs"))
                admin.serve("ap1", second, forge(admin.served["ap1"].body))
                await eventually(lambda: len(admin.acks_of()) >= 2)
                refusal = admin.acks_of()[1]
                assert refusal["version"] in (second, 10**6, first)
                assert message in refusal["error"]
                assert service.version == first
                assert len(service.applied) == 1
                assert agent.version == first
                assert agent.state_dir.read_lkg() == good
                assert message in agent.status().refused
                # It backs off instead of spinning on the same answer, and does not move
                # past a version nobody signed.
                polls = len(admin.polls)
                await asyncio.sleep(0.3)
                assert len(admin.polls) - polls <= 5
                assert all(after == first for _, after, _ in admin.polls[1:])
                # Admin's real next version gets through.
                third = admin.publish(installation("wiki", "docs"))
                await eventually(lambda: admin.acks_of()[-1] == {"version": third, "error": None})
                assert service.version == third
                assert agent.status().refused == ""
        finally:
            await admin.kill()
        assert any(
            "configuration refused, keeping version 1" in r.getMessage() for r in caplog.records
        )

    run(scenario())


def test_another_services_envelope_or_an_old_one_is_refused(run: Run[None], tmp_path: Path) -> None:
    async def scenario() -> None:
        admin = await FakeAdmin().start()
        try:
            first = admin.publish(installation("wiki"))
            second = admin.publish(installation("wiki", "docs"))
            agent = await registered_agent(admin, tmp_path / "state")
            async with following(agent) as service:
                await acked(admin, second)
                # Admin's signed envelope for ps1, or ap1's own old version 1, replayed.
                expected = [
                    (admin.served["ps1"].body, second, "addressed to 'ps1', not 'ap1'"),
                    (
                        signed(first, key=admin.key),
                        first,
                        "version 1 is not newer than the running version 2",
                    ),
                ]
                for body, version, message in expected:
                    admin.serve("ap1", 99, body)
                    await eventually(
                        lambda v=version, m=message: any(  # type: ignore[misc]
                            a["version"] == v and m in (a["error"] or "") for a in admin.acks_of()
                        )
                    )
                    assert service.version == second
                    assert len(service.applied) == 1
                    assert agent.version == second
        finally:
            await admin.kill()

    run(scenario())


def test_a_view_failing_validation_or_apply_is_refused_and_the_running_one_kept(
    run: Run[None], tmp_path: Path
) -> None:
    async def scenario() -> None:
        admin = await FakeAdmin().start()
        try:
            first = admin.publish(installation("wiki"))
            agent = await registered_agent(admin, tmp_path / "state")
            async with following(agent) as service:
                await acked(admin, first)
                lkg = agent.state_dir.read_lkg()

                # The service's own model refuses it (Admin's checks passed).
                second = admin.publish(installation("wiki", "refuse-me"))
                await eventually(lambda: len(admin.acks_of()) == 2)
                assert admin.acks_of()[1] == {
                    "version": second,
                    "error": f"version {second} is invalid: resources[1].id: "
                    "refused by this service",
                }
                # A field this service's model does not know (a newer Admin).
                third = admin.publish(installation("wiki"))
                body = orjson.loads(admin.served["ap1"].body)
                body["view"]["access_point"]["new_feature"] = True
                admin.serve("ap1", third, orjson.dumps(sign_view(admin.key, **_fields(body))))
                await eventually(lambda: len(admin.acks_of()) == 3)
                assert "access_point.new_feature: unknown field" in admin.acks_of()[2]["error"]

                # The service cannot apply it.
                service.fail_apply = True
                fourth = admin.publish(installation("wiki", "docs"))
                await eventually(lambda: len(admin.acks_of()) == 4)
                assert admin.acks_of()[3] == {
                    "version": fourth,
                    "error": f"version {fourth} could not be applied: "
                    "RuntimeError: listener cannot move",
                }
                assert service.version == first
                assert agent.version == first
                assert agent.state_dir.read_lkg() == lkg
                # Refused versions are not asked for again: the poll moves past them.
                await eventually(lambda: admin.polls[-1][1] == fourth)
                await asyncio.sleep(0.2)
                assert len(admin.acks_of()) == 4

                service.fail_apply = False
                fifth = admin.publish(installation("wiki", "docs"))
                await acked(admin, fifth)
                assert admin.acks_of()[-1] == {"version": fifth, "error": None}
        finally:
            await admin.kill()

    run(scenario())


def _fields(envelope: dict[str, Any]) -> dict[str, Any]:
    return {k: envelope[k] for k in ("version", "service", "created_at", "view")}


def test_registration_errors(run: Run[None], tmp_path: Path) -> None:
    async def scenario() -> None:
        agent = ConfigAgent(tmp_path / "state", connect_timeout=0.2, registration_wait=0.0)
        args = ("access_point", "n1", "http://127.0.0.1:8080")
        token = f"ghj1.{'A' * 43}.{'b' * 22}"
        with pytest.raises(AdminUnavailable, match="Admin unreachable"):
            await agent.register([f"https://127.0.0.1:{free_port()}"], token, "ap1", *args)
        with pytest.raises(JoinTokenRefused, match=r"not a join token: it is ghj1\."):
            await agent.register(["https://127.0.0.1:1"], "ghj_old", "ap1", *args)
        with pytest.raises(ValueError, match="not a service id"):
            await agent.register(["http://127.0.0.1:1"], "t", "AP 1", *args)
        with pytest.raises(ValueError, match="role 'dist' is not one of"):
            await agent.register(["http://127.0.0.1:1"], "t", "ap1", "dist", "n1", "x")
        with pytest.raises(NotRegistered, match="holds no registration"):
            agent.load_last_known_good()
        with pytest.raises(NotRegistered):
            await agent.run(Service().apply, ap_model)

    run(scenario())


def test_registering_again_keeps_the_snapshot_but_never_a_new_signing_key(
    run: Run[None], tmp_path: Path
) -> None:
    async def scenario() -> None:
        admin = await FakeAdmin().start()
        # The same CA, another configuration-signing key (a restored or rebuilt Admin).
        rekeyed = await FakeAdmin(ca=admin.ca).start()
        try:
            version = admin.publish(installation("wiki"))
            agent = await registered_agent(admin, tmp_path / "state")
            async with following(agent):
                await acked(admin, version)
            first_serial = agent.credentials.info.serial if agent.credentials else 0
            # The same Admin again: a new certificate, the snapshot stays valid and kept.
            await agent.register(
                [admin.url], admin.join_token(), "ap1", "access_point", "n1", "http://x:1"
            )
            assert agent.credentials is not None
            assert agent.credentials.info.serial != first_serial
            assert agent.version == version
            assert agent.state_dir.load_last_known_good() is not None
            state = (tmp_path / "state" / "admin.json").read_bytes()
            with pytest.raises(SigningKeyChanged) as caught:
                await agent.register(
                    [rekeyed.url], rekeyed.join_token(), "ap1", "access_point", "n1", "http://x"
                )
            message = str(caught.value)
            assert "configuration-signing key is not the one 'ap1' registered with" in message
            assert "does not trust a new key silently" in message
            assert f"move {tmp_path / 'state'} aside" in message
            assert (tmp_path / "state" / "admin.json").read_bytes() == state
            assert agent.load_last_known_good() is not None
        finally:
            await admin.kill()
            await rekeyed.kill()

    run(scenario())


def test_a_renewal_loads_the_new_certificate_and_a_revoked_one_is_refused(
    run: Run[None], tmp_path: Path
) -> None:
    async def scenario() -> None:
        admin = await FakeAdmin().start()
        try:
            version = admin.publish(installation("wiki"))
            agent = await registered_agent(admin, tmp_path / "state", wait=0.2)
            assert agent.credentials is not None
            before = agent.credentials.info.serial
            renewed: list[int] = []
            agent.renewal_listeners.append(lambda: renewed.append(1))
            not_after = await agent.renew()
            assert agent.credentials.info.serial != before
            assert agent.credentials.info.not_after == not_after
            assert renewed == [1]
            on_disk = Credentials(tmp_path / "state" / "tls")
            assert on_disk.info.serial == agent.credentials.info.serial
            async with following(agent):
                await acked(admin, version)
                admin.revoked.add(agent.credentials.info.serial)
                await eventually(lambda: agent.status().admin_error)
                status = agent.status()
                assert "403 forbidden: the certificate is revoked" in status.admin_error
                assert status.connected  # Admin answers: it refuses, it is not unreachable
        finally:
            await admin.kill()

    run(scenario())


def test_an_error_answer_is_logged_as_what_it_is_not_as_unreachable(
    run: Run[None], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Admin answering the poll with an error status (here 404 not_found) is reachable: no
    "unreachable" and, once it accepts the poll again, no "reachable again"."""
    caplog.set_level(logging.INFO, "gatehouse.config_agent")

    async def scenario() -> None:
        admin = await FakeAdmin().start()
        try:
            first = admin.publish(installation("wiki"))
            agent = await registered_agent(admin, tmp_path / "state", wait=0.2)
            async with following(agent) as service:
                await acked(admin, first)
                admin.poll_error = (404, "not_found", "no service 'ap1'")
                await eventually(lambda: agent.status().admin_error)
                polls = len(admin.polls)
                await eventually(lambda: len(admin.polls) >= polls + 2)  # retried, backing off
                error = "Admin answered the poll with 404 not_found: no service 'ap1'"
                assert agent.status() == AgentStatus(first, True, error, "")
                admin.poll_error = None
                second = admin.publish(installation("wiki", "docs"))
                await acked(admin, second)
                assert service.version == second
                assert agent.status() == AgentStatus(second, True, "", "")
        finally:
            await admin.kill()
        messages = [r.getMessage() for r in caplog.records]
        answered = [m for m in messages if "Admin answered the poll with 404 not_found" in m]
        assert len(answered) == 1, messages  # when it starts, not on every retry
        assert "keeping version 1" in answered[0]
        assert not [m for m in messages if "unreachable" in m or "reachable again" in m]
        assert any("Admin accepts the poll again, running version 1" in m for m in messages)

    run(scenario())


def test_unusable_state_is_a_clear_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "admin.json").write_text("{}")
    (state / "admin.json").chmod(0o600)
    with pytest.raises(StateError, match=r"admin\.json: service_id is missing"):
        ConfigAgent(state)


def test_a_registration_from_before_certificates_is_told_how_to_enrol(
    run: Run[None], tmp_path: Path, real_admin: RealAdmin
) -> None:
    """A state directory with admin.json but no tls/ (registered with a service secret):
    without --join the start names the command; with a --replace token it enrols again and
    keeps its last-known-good."""
    from gatehouse.errors import GatehouseError
    from gatehouse.internal.managed import Joining, start_managed

    async def scenario() -> None:
        first = await real_admin.publish(installation("wiki"))
        agent = await joined_agent(real_admin, tmp_path / "state")
        assert await agent.initial(ap_model) == (first, ANY)
        # As it was before internal TLS: no certificate in the state directory.
        for name in ("ca.pem", "cert.pem", "key.pem"):
            (tmp_path / "state" / "tls" / name).unlink()
        with pytest.raises(GatehouseError) as caught:
            await start_managed(tmp_path / "state", "access_point", None, ap_model)
        assert str(caught.value) == (
            f"{tmp_path / 'state'}/tls holds no certificate of 'ap1' (it registered before "
            "internal TLS, or the directory was removed): make a join token with 'gatehouse "
            "nodes token --role access_point --id ap1 --replace' and start once with --join "
            "ADMIN_URL --token TOKEN --id ID --endpoint URL"
        )
        token = await real_admin.join_token(replace=True)
        joining = Joining((real_admin.url,), token, "ap1", "http://127.0.0.1:8080", "n1")
        managed = await start_managed(tmp_path / "state", "access_point", joining, ap_model)
        assert managed.version == first  # from its last-known-good
        assert managed.agent.credentials is not None

    run(scenario())


def test_registration_waits_for_an_admin_that_is_not_up_yet_or_busy(
    run: Run[None], tmp_path: Path
) -> None:
    """A whole installation started at once: a service asks before Admin listens, then Admin
    answers 503 twice (its database busy); the service registers, with its token used once."""

    async def scenario() -> None:
        admin = FakeAdmin(busy_registrations=2)
        agent = ConfigAgent(
            tmp_path / "state", connect_timeout=0.2, backoff=Backoff(first=0.1, cap=0.2)
        )
        token = admin.join_token()
        args = ("ap1", "access_point", "n1", "http://127.0.0.1:8080")
        registering = asyncio.create_task(agent.register([admin.url], token, *args))
        await asyncio.sleep(0.6)
        assert not registering.done()  # still trying: nothing listens yet
        await admin.start()
        try:
            state = await asyncio.wait_for(registering, 10)
            assert state.service_id == "ap1"
            assert admin.registrations == 3  # two 503s, then the registration
            assert admin.tokens == {}  # used once
        finally:
            await admin.kill()

    run(scenario())


def test_registration_gives_up_after_registration_wait(run: Run[None], tmp_path: Path) -> None:
    async def scenario() -> None:
        agent = ConfigAgent(
            tmp_path / "state",
            connect_timeout=0.1,
            backoff=Backoff(first=0.1, cap=0.1),
            registration_wait=0.5,
        )
        token = f"ghj1.{'A' * 43}.{'b' * 22}"
        started = time.monotonic()
        with pytest.raises(AdminUnavailable, match="Admin unreachable"):
            await agent.register(
                [f"https://127.0.0.1:{free_port()}"], token, "ap1", "access_point", "n1", "x:1"
            )
        assert 0.4 < time.monotonic() - started < 3

    run(scenario())
