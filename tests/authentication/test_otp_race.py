"""Single use across Authentication services on one PostgreSQL OATH DB: the same fresh code
sent to two services at once is accepted by exactly one, every round — two in-process apps
over two engines (200 TOTP rounds, the clock moved a step each round) and two real
``gatehouse authentication`` processes (200 HOTP rounds, and 200 TOTP rounds on the real
clock, one fresh token each)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gatehouse.authentication.calls import OTP_VERIFY
from gatehouse.oath.otp import hotp, totp
from gatehouse.oath.seeds import Keyring
from gatehouse.oath.store import TokenStore
from gatehouse.storage.engine import Database
from gatehouse.storage.migrate import upgrade
from tests.authentication.conftest import StartAuth
from tests.authentication.http import call
from tests.authentication.test_otp_support import SHA1_SEED, App, Clock, running, sqlite
from tests.support.processes import Service

ROUNDS = 200
IP = "192.0.2.9"


def test_two_apps_on_postgresql_accept_each_fresh_code_once(
    tmp_path: Path, postgres_url: str
) -> None:
    async def go() -> None:
        clock = Clock(1_900_000_000.0)
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
        keyring = tmp_path / "oath-seeds.key"
        shared: dict[str, Any] = {"oath_db": postgres_url, "keyring": keyring, "clock": clock}
        async with (
            running(tmp_path / "a", **shared) as first,
            running(tmp_path / "b", **shared) as second,
        ):
            assert first.store.engine is not second.store.engine
            await first.add_token("T1", "alice", SHA1_SEED)
            outcomes: list[tuple[str, str]] = []
            for round_ in range(ROUNDS):
                clock.now += 30
                code = totp(SHA1_SEED, clock.now, 30, 6, "sha1")
                calls = [
                    _verify(first, code, f"round-{round_:05d}-first"),
                    _verify(second, code, f"round-{round_:05d}-second"),
                ]
                if round_ % 2:  # either may start first
                    calls.reverse()
                answers = await asyncio.gather(*calls)
                if round_ % 2:
                    answers.reverse()
                outcomes.append((answers[0]["result"], answers[1]["result"]))
            per_round = Counter(tuple(sorted(o)) for o in outcomes)
            assert per_round == {("invalid", "ok"): ROUNDS}, per_round
            # Both services won some rounds: the race was real.
            winners = Counter("first" if a == "ok" else "second" for a, _ in outcomes)
            assert len(winners) == 2, winners
            events = [e for e, _, _ in await first.events() + await second.events()]
            assert Counter(events) == {"otp_ok": ROUNDS, "otp_replay": ROUNDS}

    asyncio.run(go())


async def _verify(app: App, code: str, attempt: str) -> dict[str, Any]:
    status, body = await app.call(
        OTP_VERIFY, {"username": "alice", "code": code, "client_ip": IP, "attempt": attempt}
    )
    assert status == 200, body
    return dict(body)


# -- two real processes ----------------------------------------------------------------------


def _add_tokens(url: str, keyring: Path, tokens: list[tuple[str, str, str, bytes]]) -> None:
    """(serial, owner, type, seed) tokens, straight into the OATH DB."""

    async def go() -> None:
        await upgrade(url, "oath")
        ring = Keyring.load_or_create(keyring)
        db = Database(url)
        try:
            store = TokenStore(db.engine)
            for serial, owner, kind, seed in tokens:
                key_id, blob = ring.encrypt(seed, serial.encode())
                await store.add(
                    serial,
                    type=kind,  # type: ignore[arg-type]
                    seed_key_id=key_id,
                    seed_ciphertext=blob,
                    owner=owner,
                )
        finally:
            await db.dispose()

    asyncio.run(go())


def _at_once(services: list[Service], bodies: list[dict[str, str]]) -> list[str]:
    """Send each body to its service at the same moment; the results."""
    barrier = threading.Barrier(len(services))
    results: list[str] = [""] * len(services)

    def one(index: int) -> None:
        raw = json.dumps(bodies[index]).encode()
        barrier.wait()
        status, body, data = call(services[index], "POST", "/internal/v1/otp/verify", raw)
        assert status == 200, body
        results[index] = data["result"]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(services))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _two_services(
    tmp_path: Path, postgres_url: str, start_auth: StartAuth
) -> tuple[list[Service], Path]:
    keyring = tmp_path / "shared" / "oath-seeds.key"
    Keyring.load_or_create(keyring)
    settings = {"oath_db": postgres_url, "oath_keyring": str(keyring)}
    services = [
        start_auth(sqlite(tmp_path / f"{name}.db"), name=name, **settings)
        for name in ("auth1", "auth2")
    ]
    return services, keyring


def _rounds(
    services: list[Service], rounds: int, body: Callable[[int], tuple[str, str]]
) -> Counter[tuple[str, ...]]:
    outcomes: Counter[tuple[str, ...]] = Counter()
    for round_ in range(rounds):
        user, code = body(round_)
        bodies = [
            {
                "username": user,
                "code": code,
                "client_ip": IP,
                "attempt": f"round-{round_:05d}-{name}",
            }
            for name in ("first", "second")
        ]
        outcomes[tuple(sorted(_at_once(services, bodies)))] += 1
    return outcomes


def test_two_processes_on_postgresql_accept_each_hotp_code_once(
    tmp_path: Path, postgres_url: str, start_auth: StartAuth
) -> None:
    services, keyring = _two_services(tmp_path, postgres_url, start_auth)
    _add_tokens(postgres_url, keyring, [("H1", "alice", "hotp", SHA1_SEED)])
    outcomes = _rounds(services, ROUNDS, lambda i: ("alice", hotp(SHA1_SEED, i, 6, "sha1")))
    assert outcomes == {("invalid", "ok"): ROUNDS}, outcomes


def test_two_processes_on_postgresql_accept_each_totp_code_once(
    tmp_path: Path, postgres_url: str, start_auth: StartAuth
) -> None:
    """On the real clock: one fresh TOTP token per round (each user's first code)."""
    rounds = ROUNDS
    services, keyring = _two_services(tmp_path, postgres_url, start_auth)
    seeds = [bytes([i]) * 20 for i in range(1, rounds + 1)]
    _add_tokens(
        postgres_url,
        keyring,
        [(f"T{i}", f"user{i}", "totp", seed) for i, seed in enumerate(seeds)],
    )
    outcomes = _rounds(
        services,
        rounds,
        lambda i: (f"user{i}", totp(seeds[i], time.time(), 30, 6, "sha1")),
    )
    assert outcomes == {("invalid", "ok"): rounds}, outcomes
