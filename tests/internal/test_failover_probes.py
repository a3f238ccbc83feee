"""Active health probes and fail-back of the failover client, against real servers on loopback.

Endpoints die for real (the listening socket closed and its connections aborted, or a uvicorn
process killed) and come back on the same port; probes run every few tens of milliseconds and
the tests poll with deadlines. Also the settings model the client is built from.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
import uvloop
from pydantic import ValidationError

from gatehouse.config.failover import FailoverSettings
from gatehouse.errors import ConfigError
from gatehouse.internal.client import (
    DEFAULT_HEALTH_PATH,
    AllEndpointsFailed,
    ClientClosed,
    FailoverClient,
    RequestNotRetried,
)
from tests.internal.test_client import Process, Req, Server, answer, unresponsive_url
from tests.support.processes import free_port

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]

HEALTH = DEFAULT_HEALTH_PATH
RISE = 3
INTERVAL = 0.02
# retry_after=0: without probes, every call would try a down primary again at once, so a
# call reaching it early would show.
FAST = FailoverSettings(
    connect_timeout=0.5,
    timeout=1.0,
    probe_interval=INTERVAL,
    probe_timeout=0.5,
    rise=RISE,
    retry_after=0,
)


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run[Any]:
    """Run a scenario to completion on a fresh event loop of the given kind."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def runner(coro: Coroutine[Any, Any, T]) -> T:
        async def guarded() -> T:
            async with asyncio.timeout(30):
                return await coro

        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(guarded())

    return runner


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


class Node:
    """A service instance: answers calls with its name, and health probes with the next
    status of ``health`` (200 once that is used up). ``failing`` calls answer 503."""

    def __init__(self, name: str, health: list[int] | None = None, failing: bool = False) -> None:
        self.name = name
        self.health = list(health or [])
        self.failing = failing
        self.calls: list[str] = []
        self.probes: list[int] = []

    async def __call__(self, req: Req, w: asyncio.StreamWriter) -> bool:
        if req.path == HEALTH:
            status = self.health.pop(0) if self.health else 200
            self.probes.append(status)
            answer(w, status, {"status": "ok" if status == 200 else "unavailable"})
        else:
            self.calls.append(req.path)
            answer(w, 503 if self.failing else 200, {"name": self.name})
        return True


async def who(client: FailoverClient) -> str:
    response = await client.call("GET", "/who", retry_safe=True)
    return str(response.json()["name"])


def counts(
    *, down: int = 0, up: int = 0, failovers: int = 0, passed: int = 0, failed: int = 0
) -> dict[str, int]:
    return {
        "transitions": down + up,
        "down": down,
        "up": up,
        "failovers": failovers,
        "probes_passed": passed,
        "probes_failed": failed,
    }


# fail-over and fail-back --------------------------------------------------------------------


def test_killed_primary_fails_over_in_the_call_and_comes_back_after_rise_probes(
    run: Run[None], caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        first_node, second_node = Node("ps1"), Node("ps2")
        async with Server(second_node) as second:
            first = Server(first_node)
            await first.__aenter__()
            port = first.port
            async with FailoverClient.from_settings(
                [first.url, second.url], FAST, name="policy"
            ) as client:
                primary = client.endpoints.all[0]
                assert client.start_probing()
                assert [await who(client) for _ in range(3)] == ["ps1"] * 3

                await first.stop()  # killed: listener closed, connections aborted
                assert await who(client) == "ps2"  # the same call moved on
                assert client.endpoints.counters == counts(down=1, failovers=1)
                # While it is down, calls go straight to the secondary: no attempt on the
                # primary, so no further failover.
                assert [await who(client) for _ in range(5)] == ["ps2"] * 5
                assert client.endpoints.counters["failovers"] == 1
                await eventually(lambda: client.endpoints.counters["probes_failed"] >= 2)
                assert not client.endpoints.is_up(primary)
                assert client.endpoints.status()[0].reason.startswith("probe: connection refused")

                restarted = Node("ps1")
                async with Server(restarted, port=port):
                    # Until rise probes in a row passed, calls stay on the secondary even
                    # though retry_after is 0.
                    while not client.endpoints.is_up(primary):
                        assert await who(client) == "ps2"
                        await asyncio.sleep(0.005)
                    assert restarted.probes == [200] * RISE
                    assert restarted.calls == []
                    assert [await who(client) for _ in range(3)] == ["ps1"] * 3
                    assert restarted.calls == ["/who"] * 3
                    failed = client.endpoints.counters["probes_failed"]
                    assert client.endpoints.counters == counts(
                        down=1, up=1, failovers=1, passed=RISE, failed=failed
                    )
                    await asyncio.sleep(5 * INTERVAL)
                    assert restarted.probes == [200] * RISE  # up: no longer probed

        changes = [
            (r.levelname, r.getMessage())
            for r in caplog.records
            if r.name == "gatehouse.internal" and r.levelno >= logging.INFO
        ]
        assert len(changes) == 2
        assert changes[0][0] == "WARNING"
        assert changes[0][1].startswith(f"policy endpoint {primary.url} is down: ")
        assert changes[1][0] == "INFO"
        assert changes[1][1].startswith(
            f"policy endpoint {primary.url} is up again after {RISE} passed probes (down for "
        )

    with caplog.at_level(logging.INFO, logger="gatehouse.internal"):
        run(scenario())


def test_a_flapping_primary_needs_rise_passes_in_a_row(run: Run[None]) -> None:
    # Pass, fail, pass, pass, fail, then three passes: only the last run of three counts.
    script = [200, 503, 200, 200, 503, 200, 200, 200]

    async def scenario() -> None:
        first_node = Node("ps1", health=script, failing=True)
        async with (
            Server(first_node) as first,
            Server(Node("ps2")) as second,
            FailoverClient.from_settings([first.url, second.url], FAST, name="policy") as client,
        ):
            primary = client.endpoints.all[0]
            client.start_probing()
            assert await who(client) == "ps2"  # the primary answered 503: moved on
            assert client.endpoints.status()[0].reason == "answered 503"
            first_node.failing = False  # calls would work now; its health still flaps
            seen_passes: list[int] = []
            while not client.endpoints.is_up(primary):
                assert await who(client) == "ps2"
                seen_passes.append(client.endpoints.status()[0].passes)
                await asyncio.sleep(0.002)
            assert first_node.probes == script
            assert first_node.calls == ["/who"]  # only the first call, which failed
            assert max(seen_passes) == RISE - 1
            assert await who(client) == "ps1"
            assert client.endpoints.counters == counts(
                down=1, up=1, failovers=1, passed=6, failed=2
            )
            status = client.endpoints.status()[0]
            assert (status.went_down, status.came_up, status.probes_passed) == (1, 1, 6)

    run(scenario())


def test_a_blackholed_primary_costs_one_connect_timeout_and_probes_do_not_pile_up(
    run: Run[None],
) -> None:
    settings = FAST.model_copy(update={"connect_timeout": 0.3})

    async def scenario() -> None:
        with unresponsive_url() as blackhole:
            async with (
                Server(Node("ps2")) as second,
                FailoverClient.from_settings([blackhole, second.url], settings) as client,
            ):
                client.start_probing()
                started = time.monotonic()
                assert await who(client) == "ps2"
                down_at = time.monotonic()
                assert 0.29 <= down_at - started < 1.5
                # Down: calls do not wait on it any more.
                started = time.monotonic()
                assert [await who(client) for _ in range(10)] == ["ps2"] * 10
                assert time.monotonic() - started < 0.25
                # Probes every 20 ms, but one at a time, each waiting out the connect timeout.
                in_flight_seen = False
                while time.monotonic() - down_at < 0.8:
                    row = client.metrics()["endpoints"][0]
                    in_flight_seen = in_flight_seen or row["probe_in_flight"]
                    await asyncio.sleep(0.01)
                failed = client.endpoints.counters["probes_failed"]
                assert in_flight_seen
                assert 1 <= failed <= math.ceil(0.8 / 0.3) + 1
                assert client.endpoints.status()[0].reason.startswith("probe: connect timeout")

    run(scenario())


def test_probes_replace_retry_after_trials_until_they_stop(run: Run[None]) -> None:
    async def scenario() -> None:
        port = free_port()
        async with Server(Node("ps2")) as second:
            urls = [f"http://127.0.0.1:{port}", second.url]
            async with FailoverClient.from_settings(urls, FAST) as client:
                client.start_probing()
                assert await who(client) == "ps2"  # refused: moved on
                unhealthy = Node("ps1", health=[503] * 1000)
                async with Server(unhealthy, port=port):
                    await eventually(lambda: len(unhealthy.probes) >= 2)
                    # It would answer calls, but it fails its probes: retry_after=0 brings
                    # no call to it while probes decide.
                    assert [await who(client) for _ in range(5)] == ["ps2"] * 5
                    assert unhealthy.calls == []
                    assert client.endpoints.status()[0].reason == "probe answered 503"
                    await client.stop_probing()
                    assert not client.probing
                    # Without probes, the next call makes a retry_after trial again.
                    assert await who(client) == "ps1"
                    assert client.endpoints.is_up(client.endpoints.all[0])

    run(scenario())


def test_when_every_endpoint_is_down_calls_still_try_them(run: Run[None]) -> None:
    async def scenario() -> None:
        ports = [free_port(), free_port()]
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        async with FailoverClient.from_settings(urls, FAST) as client:
            client.start_probing()
            with pytest.raises(AllEndpointsFailed):
                await who(client)
            assert client.endpoints.down() == list(client.endpoints.all)
            with pytest.raises(AllEndpointsFailed) as info:
                await who(client)
            assert [f.endpoint for f in info.value.failures] == urls  # last resort, in order
            async with Server(Node("ps2"), port=ports[1]):
                # A last-resort call that gets through needs no probes.
                assert await who(client) == "ps2"
                assert client.endpoints.is_up(client.endpoints.all[1])
                assert not client.endpoints.is_up(client.endpoints.all[0])

    run(scenario())


def test_a_call_that_is_not_retry_safe_is_not_resent_while_probing(run: Run[None]) -> None:
    async def dies(req: Req, w: asyncio.StreamWriter) -> bool:
        if req.path == HEALTH:
            answer(w, 200)
            return True
        w.transport.abort()  # the request arrived: the server may have acted on it
        return False

    async def scenario() -> None:
        second_node = Node("ps2")
        async with (
            Server(dies) as first,
            Server(second_node) as second,
            FailoverClient.from_settings([first.url, second.url], FAST) as client,
        ):
            client.start_probing()
            with pytest.raises(RequestNotRetried):
                await client.call("POST", "/password/verify", {"p": "x"}, retry_safe=False)
            assert second_node.calls == []
            assert not client.endpoints.is_up(client.endpoints.all[0])
            # Its health passes: probes bring it back.
            await eventually(lambda: client.endpoints.is_up(client.endpoints.all[0]))

    run(scenario())


# cost and lifecycle -------------------------------------------------------------------------


def test_nothing_is_probed_and_the_prober_sleeps_while_everything_is_up(run: Run[None]) -> None:
    async def scenario() -> None:
        nodes = [Node("ps1"), Node("ps2")]
        async with (
            Server(nodes[0]) as first,
            Server(nodes[1]) as second,
            FailoverClient.from_settings([first.url, second.url], FAST) as client,
        ):
            looks = 0
            down = client.endpoints.down

            def counting_down() -> list[Any]:
                nonlocal looks
                looks += 1
                return down()

            client.endpoints.down = counting_down  # type: ignore[method-assign]
            client.start_probing()
            for _ in range(5):
                assert await who(client) == "ps1"
            await asyncio.sleep(10 * INTERVAL)
            assert client.probing
            assert looks == 1  # looked once, then slept until something goes down
            assert nodes[0].probes == nodes[1].probes == []
            assert client.endpoints.counters == counts()

    run(scenario())


def test_aclose_stops_the_probes_and_leaves_no_task(
    run: Run[None], caplog: pytest.LogCaptureFixture
) -> None:
    settings = FAST.model_copy(update={"connect_timeout": 5.0})

    async def scenario() -> None:
        with unresponsive_url() as blackhole:
            async with Server(Node("ps2")) as second:
                client = FailoverClient.from_settings([blackhole, second.url], settings)
                assert client.start_probing()
                assert client.start_probing()  # again: nothing more
                client.endpoints.failed(client.endpoints.all[0], "test")
                # A probe hangs on the connect (5 s timeout) when the client closes.
                await eventually(lambda: client.metrics()["endpoints"][0]["probe_in_flight"])
                probe = asyncio.create_task(client.probe())
                await asyncio.sleep(0.01)
                before = dict(client.endpoints.counters)
                started = time.monotonic()
                await client.aclose()
                assert time.monotonic() - started < 1.0
                # Gone at once, not after the connect timeout.
                assert asyncio.all_tasks() <= {asyncio.current_task(), probe}
                assert not client.probing
                assert not client.endpoints.probed
                with pytest.raises(ClientClosed):
                    async with asyncio.timeout(1.0):
                        await probe
                assert asyncio.all_tasks() == {asyncio.current_task()}
                assert client.endpoints.counters == before  # the cancelled probe says nothing
                assert client.metrics()["endpoints"][0]["probe_in_flight"] is False
                with pytest.raises(RuntimeError, match="closed"):
                    client.start_probing()
                with pytest.raises(ClientClosed):
                    await client.probe()

    with caplog.at_level(logging.WARNING):
        run(scenario())
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_metrics_snapshot(run: Run[None]) -> None:
    async def scenario() -> None:
        dead = f"http://127.0.0.1:{free_port()}"
        async with (
            Server(Node("ps2")) as second,
            FailoverClient.from_settings([dead, second.url], FAST, name="auth") as client,
        ):
            before = client.metrics()
            assert client.routing()["using"] == dead  # nothing known yet: the preferred one
            assert before["probing"] is False
            assert before["endpoints"][0]["since"] is None
            client.start_probing()
            await who(client)
            await eventually(lambda: client.endpoints.counters["probes_failed"] >= 1)
            snapshot = client.metrics()
            routing = client.routing()
            down_since = routing["endpoints"][0]["since"]
            assert isinstance(down_since, float)
            assert abs(down_since - snapshot["endpoints"][0]["since"]) < 0.01
            assert routing == {
                "using": second.url,
                "endpoints": [
                    {"url": dead, "up": False, "since": down_since},
                    {"url": second.url, "up": True, "since": None},
                ],
                "counters": snapshot["counters"],
            }
            assert routing["counters"]["failovers"] == 1
            assert orjson.loads(orjson.dumps(snapshot)) == snapshot  # JSON as it is
            assert (snapshot["service"], snapshot["probing"], snapshot["rise"]) == (
                "auth",
                True,
                RISE,
            )
            first, other = snapshot["endpoints"]
            assert first["url"] == dead
            assert (first["up"], first["went_down"], first["came_up"]) == (False, 1, 0)
            assert first["failovers"] == 1
            assert first["probes_failed"] >= 1
            assert first["reason"].startswith("probe: connection refused")
            assert 0 <= first["state_seconds"] < 5
            assert abs(first["since"] + first["state_seconds"] - time.time()) < 1
            assert (other["url"], other["up"], other["since"], other["failovers"]) == (
                second.url,
                True,
                None,
                0,
            )
            assert snapshot["counters"]["down"] == 1
            assert snapshot["counters"]["failovers"] == 1

    run(scenario())


# construction and settings ------------------------------------------------------------------


def test_from_settings_builds_a_tuned_client() -> None:
    settings = FailoverSettings(
        connect_timeout="250ms", timeout="3s", probe_interval="1s", rise=4, retry_after=7
    )
    client = FailoverClient.from_settings(
        ["http://10.0.0.1:8200", "http://10.0.0.2:8200"],
        settings,
        name="administration",
        health_path="/api/v1/health",
        bearer_token="t0ken",
    )
    assert (client.connect_timeout, client.timeout) == (0.25, 3.0)
    assert (client.probe_interval, client.probe_timeout) == (1.0, 1.0)
    assert client.health_path == "/api/v1/health"
    assert (client.endpoints.name, client.endpoints.rise, client.endpoints.retry_after) == (
        "administration",
        4,
        7.0,
    )
    assert not client.probing
    assert FailoverClient(["http://10.0.0.1:1"]).probe_interval is None  # opt-in

    with pytest.raises(ConfigError, match=r"endpoints\[1\]: must start with https://"):
        FailoverClient.from_settings(["http://a:1", "b:1"], settings)
    with pytest.raises(ValueError, match="path must start with '/'"):
        FailoverClient.from_settings(["http://a:1"], settings, health_path="health")
    with pytest.raises(ValueError, match="timeout must be a positive"):
        FailoverClient(["http://a:1"], timeout=0)


def test_without_a_probe_interval_start_probing_does_nothing(run: Run[None]) -> None:
    async def scenario() -> None:
        off = FAST.model_copy(update={"probe_interval": None})
        async with FailoverClient.from_settings(["http://127.0.0.1:1"], off) as client:
            assert client.start_probing() is False
            assert not client.probing
            assert not client.endpoints.probed  # retry_after trials stay on

    run(scenario())


def test_settings_defaults() -> None:
    settings = FailoverSettings()
    assert settings.model_dump() == {
        "connect_timeout": 0.5,
        "timeout": 2.0,
        "probe_interval": 1.0,
        "probe_timeout": 1.0,
        "rise": 2,
        "fall": 2,
        "retry_after": 2.0,
    }
    client = FailoverClient(["http://10.0.0.1:1"])
    assert (client.connect_timeout, client.timeout, client.probe_timeout) == (0.5, 2.0, 1.0)


def test_settings_accept_durations_and_null_probe_interval() -> None:
    settings = FailoverSettings.model_validate(
        {"connect_timeout": "200ms", "timeout": 1, "probe_interval": None, "retry_after": "0s"}
    )
    assert (settings.connect_timeout, settings.timeout) == (0.2, 1.0)
    assert settings.probe_interval is None
    assert settings.retry_after == 0.0


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"connect_timeout": 0}, "connect_timeout", "greater than 0"),
        ({"timeout": "-1s"}, "timeout", "not a duration"),
        ({"timeout": float("inf")}, "timeout", "finite"),
        ({"probe_interval": "0ms"}, "probe_interval", "greater than 0"),
        ({"probe_timeout": 0}, "probe_timeout", "greater than 0"),
        ({"rise": 0}, "rise", "greater than or equal to 1"),
        ({"rise": True}, "rise", "valid integer"),
        ({"rise": 1.5}, "rise", "valid integer"),
        ({"retry_after": -1}, "retry_after", "greater than or equal to 0"),
        ({"fall": 0}, "fall", "greater than or equal to 1"),
        ({"fail": 3}, "fail", "Extra inputs"),
    ],
)
def test_settings_refuse(data: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        FailoverSettings.model_validate(data)
    (error,) = info.value.errors()
    assert error["loc"][0] == field
    assert message in error["msg"]


def test_settings_are_frozen() -> None:
    with pytest.raises(ValidationError):
        FailoverSettings().rise = 5  # type: ignore[misc]


# a real process killed ----------------------------------------------------------------------

SERVICE = """
import os
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

async def who(request):
    return JSONResponse({"name": os.environ["NAME"]})

async def health(request):
    return JSONResponse({"status": "ok"})

app = Starlette(routes=[Route("/who", who), Route("/internal/v1/health", health)])
"""


def test_killed_primary_process_fails_over_and_back_after_probes(
    run: Run[None], tmp_path: Path
) -> None:
    (tmp_path / "service.py").write_text(SERVICE)
    ports = [free_port(), free_port()]
    primary = Process(tmp_path, "ps1", ports[0])
    secondary = Process(tmp_path, "ps2", ports[1])
    urls = [f"http://127.0.0.1:{port}" for port in ports]

    async def scenario() -> None:
        nonlocal primary
        async with FailoverClient.from_settings(urls, FAST, name="policy") as client:
            client.start_probing()
            assert [await who(client) for _ in range(3)] == ["ps1"] * 3
            primary.kill()
            assert await who(client) == "ps2"  # in the same call
            assert not client.endpoints.is_up(client.endpoints.all[0])
            assert [await who(client) for _ in range(3)] == ["ps2"] * 3
            primary = Process(tmp_path, "ps1", ports[0])
            await eventually(lambda: client.endpoints.is_up(client.endpoints.all[0]), 10)
            assert [await who(client) for _ in range(3)] == ["ps1"] * 3
            counters = client.endpoints.counters
            assert (counters["down"], counters["up"], counters["failovers"]) == (1, 1, 1)
            assert counters["probes_passed"] == RISE

    try:
        run(scenario())
    finally:
        primary.kill()
        secondary.kill()
