"""The OTP calls of an in-process Authentication service (ASGI, no sockets), on SQLite unless
said: RFC vectors through the endpoint, single use, retries of one attempt, failures and locks,
malformed codes, self-enrolment, the seed key file, and the OATH DB holding no seed."""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from gatehouse.authentication.calls import (
    OTP_CONFIRM,
    OTP_ENROL,
    OTP_STATUS,
    OTP_VERIFY,
    VERIFY,
)
from gatehouse.oath.otp import hotp, time_step, totp
from tests.authentication.conftest import add_user
from tests.authentication.test_otp_support import (
    SHA1_SEED,
    SHA256_SEED,
    SHA512_SEED,
    App,
    Clock,
    running,
    sqlite,
)

IP = "192.0.2.7"
ATTEMPTS = iter(range(10**9))


def attempt() -> str:
    return f"attempt-{next(ATTEMPTS):012d}"


async def verify(app: App, user: str, code: str, attempt_id: str | None = None) -> Any:
    status, body = await app.call(
        OTP_VERIFY,
        {"username": user, "code": code, "client_ip": IP, "attempt": attempt_id or attempt()},
    )
    assert status == 200, body
    return body


def code_now(app: App, seed: bytes, digits: int = 6, algorithm: str = "sha1") -> str:
    return totp(seed, app.clock.now, 30, digits, algorithm)


def run(tmp: Path, body: Any, **settings: Any) -> None:
    async def go() -> None:
        async with running(tmp, **settings) as app:
            await body(app)

    asyncio.run(go())


# -- RFC vectors -----------------------------------------------------------------------------

RFC6238 = [
    (59, "94287082", "46119246", "90693936"),
    (1111111109, "07081804", "68084774", "25091201"),
    (1111111111, "14050471", "67062674", "99943326"),
    (1234567890, "89005924", "91819424", "93441116"),
    (2000000000, "69279037", "90698825", "38618901"),
    (20000000000, "65353130", "77737706", "47863826"),
]
RFC4226 = ["755224", "287082", "359152", "969429", "338314"]
RFC4226 += ["254676", "287922", "162583", "399871", "520489"]


def test_rfc_6238_vectors_through_the_endpoint(tmp_path: Path) -> None:
    async def body(app: App) -> None:
        seeds = {"sha1": SHA1_SEED, "sha256": SHA256_SEED, "sha512": SHA512_SEED}
        for algorithm, seed in seeds.items():
            await app.add_token(f"T-{algorithm}", algorithm, seed, algorithm=algorithm, digits=8)
        for moment, *codes in RFC6238:
            app.clock.now = moment
            for algorithm, code in zip(seeds, codes, strict=True):
                answer = await verify(app, algorithm, code)
                assert answer == {"result": "ok", "serial": f"T-{algorithm}"}, (moment, algorithm)
                # The same code again, by another submission: a replay.
                assert (await verify(app, algorithm, code)) == {"result": "invalid"}
        token = await app.store.get("T-sha1")
        assert token.last_step == time_step(20000000000, 30)
        assert token.failures == 0

    run(tmp_path, body)


def test_rfc_4226_vectors_and_the_look_ahead(tmp_path: Path) -> None:
    async def body(app: App) -> None:
        await app.add_token("H1", "alice", SHA1_SEED, type="hotp")
        for counter, code in enumerate(RFC4226):
            assert await verify(app, "alice", code) == {"result": "ok", "serial": "H1"}, counter
        assert (await app.store.get("H1")).counter == 10
        assert await verify(app, "alice", RFC4226[9]) == {"result": "invalid"}  # replay
        await app.add_token("H2", "bob", SHA1_SEED, type="hotp")
        assert await verify(app, "bob", RFC4226[2]) == {"result": "ok", "serial": "H2"}
        assert await verify(app, "bob", RFC4226[1]) == {"result": "invalid"}  # behind now
        assert (await app.store.get("H2")).counter == 3
        # Past the look-ahead window (2 here): not accepted, counted as a failure.
        await app.add_token("H3", "carol", SHA1_SEED, type="hotp")
        assert await verify(app, "carol", RFC4226[3]) == {"result": "invalid"}
        assert (await app.store.get("H3")).failures == 1
        assert await verify(app, "carol", RFC4226[2]) == {"result": "ok", "serial": "H3"}

    run(tmp_path, body, otp={"hotp_look_ahead": 2})


# -- single use and retries ----------------------------------------------------------------


def test_a_code_is_used_once_and_a_retry_of_its_attempt_is_ok_again(tmp_path: Path) -> None:
    async def body(app: App) -> None:
        await app.add_token("T1", "alice", SHA1_SEED)
        code, first = code_now(app, SHA1_SEED), attempt()
        assert await verify(app, "alice", code, first) == {"result": "ok", "serial": "T1"}
        consumed = await app.store.get("T1")
        # The same submission again (its answer was lost): ok, nothing consumed twice.
        assert await verify(app, "alice", code, first) == {"result": "ok", "serial": "T1"}
        again = await app.store.get("T1")
        assert (again.last_step, again.last_attempt) == (consumed.last_step, first)
        # Any other submission of that code is a replay.
        assert await verify(app, "alice", code) == {"result": "invalid"}
        assert (await app.store.get("T1")).failures == 0  # a replay is not a guess
        # The next step's code is fresh; then the first attempt cannot come back.
        app.clock.now += 30
        assert (await verify(app, "alice", code_now(app, SHA1_SEED)))["result"] == "ok"
        assert await verify(app, "alice", code, first) == {"result": "invalid"}
        events = [(e, d.get("retry"), d.get("serial")) for e, _, d in await app.events()]
        assert events == [
            ("otp_ok", None, "T1"),
            ("otp_ok", True, "T1"),
            ("otp_replay", None, "T1"),
            ("otp_ok", None, "T1"),
            ("otp_replay", None, "T1"),
        ]

    run(tmp_path, body)


def test_the_other_service_answers_a_retried_attempt_ok_once_consumed(tmp_path: Path) -> None:
    """Two services on one OATH DB: the first consumed the code and died before answering;
    the retry of the same attempt on the second is ok, another attempt is not."""

    async def go() -> None:
        clock = Clock()
        shared = {"oath_db": sqlite(tmp_path / "oath.db"), "clock": clock}
        async with running(tmp_path / "a", **shared) as first:
            (tmp_path / "b").mkdir()
            keyring = first.service.otp.keys.path  # type: ignore[union-attr]
            async with running(tmp_path / "b", keyring=keyring, **shared) as second:
                await first.add_token("T1", "alice", SHA1_SEED)
                code, submission = code_now(first, SHA1_SEED), attempt()
                assert (await verify(first, "alice", code, submission))["result"] == "ok"
                assert (await verify(second, "alice", code, submission))["result"] == "ok"
                assert (await verify(second, "alice", code)) == {"result": "invalid"}
                assert (await verify(first, "alice", code)) == {"result": "invalid"}

    (tmp_path / "a").mkdir()
    asyncio.run(go())


def test_the_code_of_an_earlier_step_is_never_accepted(tmp_path: Path) -> None:
    async def body(app: App) -> None:
        await app.add_token("T1", "alice", SHA1_SEED)
        earlier = code_now(app, SHA1_SEED)
        app.clock.now += 30
        later = code_now(app, SHA1_SEED)
        assert (await verify(app, "alice", later))["result"] == "ok"
        # Within the ±1 window, but before the step accepted: a replay, not a guess.
        assert await verify(app, "alice", earlier) == {"result": "invalid"}
        assert [e for e, _, _ in await app.events()] == ["otp_ok", "otp_replay"]

    run(tmp_path, body)


# -- failures, locks, malformed codes, no token ---------------------------------------------


def test_a_token_locks_after_max_failures_until_the_time_out(tmp_path: Path) -> None:
    async def body(app: App) -> None:
        await app.add_token("T1", "alice", SHA1_SEED)
        wrong = "000000" if code_now(app, SHA1_SEED) != "000000" else "111111"
        assert await verify(app, "alice", wrong) == {"result": "invalid"}
        assert await verify(app, "alice", wrong) == {"result": "invalid"}
        assert await verify(app, "alice", wrong) == {"result": "locked", "retry_after": 60}
        token = await app.store.get("T1")
        assert (token.state, token.failures) == ("locked", 3)
        # The right code does not open a locked token.
        assert (await verify(app, "alice", code_now(app, SHA1_SEED)))["result"] == "locked"
        app.clock.now += 61
        answer = await verify(app, "alice", code_now(app, SHA1_SEED))
        assert answer == {"result": "ok", "serial": "T1"}
        token = await app.store.get("T1")
        assert (token.state, token.failures) == ("active", 0)
        events = [e for e, _, _ in await app.events()]
        assert events == ["otp_failed"] * 2 + ["otp_locked"] + ["otp_failed"] * 2 + ["otp_ok"]

    run(tmp_path, body, otp={"max_failures": 3, "lock_seconds": 60})


def test_a_lock_without_time_out_lasts_until_an_unlock(tmp_path: Path) -> None:
    async def body(app: App) -> None:
        await app.add_token("T1", "alice", SHA1_SEED)
        assert await verify(app, "alice", "abcdef") == {"result": "locked"}
        app.clock.now += 10**6
        assert await verify(app, "alice", code_now(app, SHA1_SEED)) == {"result": "locked"}
        await app.store.unlock("T1")
        assert (await verify(app, "alice", code_now(app, SHA1_SEED)))["result"] == "ok"

    run(tmp_path, body, otp={"max_failures": 1, "lock_seconds": 0})


@pytest.mark.parametrize(
    "code",
    [
        "",
        "abcdef",
        "12345",
        "1234567",
        "12 345",
        "\uff11\uff12\uff13\uff14\uff15\uff16",
        "12345678",
        "-12345",
    ],
)
def test_malformed_codes_are_failures_like_any_other(tmp_path: Path, code: str) -> None:
    async def body(app: App) -> None:
        await app.add_token("T1", "alice", SHA1_SEED)
        assert await verify(app, "alice", code) == {"result": "invalid"}
        assert (await app.store.get("T1")).failures == 1
        [(event, user, detail)] = await app.events()
        assert (event, user, detail["malformed"]) == ("otp_failed", "alice", True)

    run(tmp_path, body)


def test_every_token_of_the_user_counts_the_failure(tmp_path: Path) -> None:
    async def body(app: App) -> None:
        await app.add_token("T1", "alice", SHA1_SEED)
        await app.add_token("H1", "alice", SHA256_SEED, type="hotp")
        await app.add_token("T2", "alice", SHA512_SEED, state="disabled")
        await app.add_token("B1", "bob", SHA1_SEED)
        assert await verify(app, "alice", "99999999") == {"result": "invalid"}
        failures = {t.serial: t.failures for t in await app.store.list_tokens()}
        assert failures == {"T1": 1, "H1": 1, "T2": 0, "B1": 0}
        # Any token of the user may answer; success resets only its own count.
        code = hotp(SHA256_SEED, 0, 6, "sha1")
        assert await verify(app, "alice", code) == {"result": "ok", "serial": "H1"}
        assert (await app.store.get("T1")).failures == 1

    run(tmp_path, body)


def test_no_token_is_answered_and_nothing_counted(tmp_path: Path) -> None:
    async def body(app: App) -> None:
        await app.add_token("T1", "bob", SHA1_SEED, state="disabled")
        await app.add_token("P1", "carol", SHA1_SEED, state="pending")
        for user in ("nobody", "bob", "carol", "not a valid name!"):
            assert await verify(app, user, code_now(app, SHA1_SEED)) == {"result": "no_token"}
        assert {t.failures for t in await app.store.list_tokens()} == {0}
        reasons = [d["reason"] for e, _, d in await app.events() if e == "otp_failed"]
        assert reasons == ["no_token"] * 4

    run(tmp_path, body)


def test_audit_events_never_hold_the_code(tmp_path: Path) -> None:
    async def body(app: App) -> None:
        await app.add_token("T1", "alice", SHA1_SEED)
        code = code_now(app, SHA1_SEED)
        await verify(app, "alice", code)
        await verify(app, "alice", code)
        await verify(app, "alice", "314159")
        events = await app.events()
        assert len(events) == 3
        assert code not in repr(events)
        assert "314159" not in repr(events)

    run(tmp_path, body)


# -- enrolment -------------------------------------------------------------------------------


async def enrol(app: App, user: str = "alice") -> dict[str, Any]:
    status, body = await app.call(OTP_ENROL, {"username": user, "issuer": "Gatehouse"})
    assert status == 200, body
    return dict(body)


async def confirm(app: App, serial: str, code: str, attempt_id: str | None = None) -> Any:
    body = {
        "username": "alice",
        "serial": serial,
        "code": code,
        "client_ip": IP,
        "attempt": attempt_id or attempt(),
    }
    status, answer = await app.call(OTP_CONFIRM, body)
    assert status == 200, answer
    return answer


async def status_of(app: App, user: str = "alice") -> Any:
    status, answer = await app.call(OTP_STATUS, {"username": user})
    assert status == 200, answer
    return answer


def secret_of(enrolled: dict[str, Any]) -> bytes:
    text = enrolled["secret"]
    return base64.b32decode(text + "=" * (-len(text) % 8))


def test_enrol_confirm_verify(tmp_path: Path) -> None:
    async def body(app: App) -> None:
        assert await status_of(app) == {"active": 0, "pending": None, "enrol_required": False}
        await app.store.require_enrolment("alice", True)
        first = await enrol(app)
        enrolled = await enrol(app)  # replaces the first
        assert await app.store.find(first["serial"]) is None
        assert await status_of(app) == {
            "active": 0,
            "pending": enrolled["serial"],
            "enrol_required": True,
        }
        uri = urlsplit(enrolled["uri"])
        query = parse_qs(uri.query)
        assert (uri.scheme, uri.netloc, uri.path) == ("otpauth", "totp", "/Gatehouse:alice")
        assert query["secret"] == [enrolled["secret"]]
        assert (query["algorithm"], query["digits"], query["period"]) == (["SHA1"], ["6"], ["30"])
        seed = secret_of(enrolled)
        assert len(seed) == 20
        # A pending token answers no verification.
        assert await verify(app, "alice", code_now(app, seed)) == {"result": "no_token"}
        serial = enrolled["serial"]
        wrong = "000000" if code_now(app, seed) != "000000" else "111111"
        assert await confirm(app, serial, wrong) == {"result": "invalid"}
        submission = attempt()
        code = code_now(app, seed)
        assert await confirm(app, serial, code, submission) == {"result": "ok", "serial": serial}
        assert await confirm(app, serial, code, submission) == {"result": "ok", "serial": serial}
        assert await confirm(app, serial, code) == {"result": "invalid"}
        assert await status_of(app) == {"active": 1, "pending": None, "enrol_required": False}
        # The confirming code's step is consumed; the next one signs in.
        assert await verify(app, "alice", code) == {"result": "invalid"}
        app.clock.now += 30
        assert await verify(app, "alice", code_now(app, seed)) == {"result": "ok", "serial": serial}
        events = [e for e, _, _ in await app.events()]
        assert events[:4] == ["otp_enrolled", "otp_enrolled", "otp_failed", "otp_failed"]
        assert "otp_confirmed" in events
        assert enrolled["secret"] not in repr(await app.events())

    run(tmp_path, body)


def test_a_pending_token_is_refused_after_max_failures(tmp_path: Path) -> None:
    async def body(app: App) -> None:
        enrolled = await enrol(app)
        seed = secret_of(enrolled)
        wrong = "000000" if code_now(app, seed) != "000000" else "111111"
        assert await confirm(app, enrolled["serial"], wrong) == {"result": "invalid"}
        assert await confirm(app, enrolled["serial"], wrong) == {"result": "locked"}
        assert await confirm(app, enrolled["serial"], code_now(app, seed)) == {"result": "locked"}
        again = await enrol(app)  # a new enrolment starts over
        code = code_now(app, secret_of(again))
        assert (await confirm(app, again["serial"], code))["result"] == "ok"

    run(tmp_path, body, otp={"max_failures": 2})


def test_a_token_of_someone_else_is_not_confirmed(tmp_path: Path) -> None:
    async def body(app: App) -> None:
        enrolled = await enrol(app, "bob")
        code = code_now(app, secret_of(enrolled))
        assert await confirm(app, enrolled["serial"], code) == {"result": "invalid"}
        assert await confirm(app, "NOSUCHSERIAL", code) == {"result": "invalid"}
        assert (await app.store.get(enrolled["serial"])).state == "pending"

    run(tmp_path, body)


def test_enrolment_refused_when_the_configuration_disallows_it(tmp_path: Path) -> None:
    async def body(app: App) -> None:
        status, answer = await app.call(OTP_ENROL, {"username": "alice", "issuer": "G"})
        assert status == 403
        assert answer == {
            "error": "forbidden",
            "message": "self-enrolment is disabled (otp.self_enrolment: false)",
        }
        assert await app.store.list_tokens() == []
        status, answer = await app.call(OTP_ENROL, {"username": "a b", "issuer": "G"})
        assert status == 403  # refused before anything else is looked at

    run(tmp_path, body, otp={"self_enrolment": False})


def test_bad_requests_name_the_field(tmp_path: Path) -> None:
    async def body(app: App) -> None:
        good = {"username": "alice", "code": "123456", "client_ip": IP, "attempt": attempt()}
        for change, message in [
            ({"attempt": "short"}, "attempt: must be 16-64 URL-safe characters"),
            ({"attempt": "x" * 65}, "attempt: must be 16-64"),
            ({"client_ip": "here"}, "client_ip: not an IP address"),
            ({"username": ""}, "username: empty"),
            ({"code": 123456}, "code: must be a string"),
        ]:
            status, answer = await app.call(OTP_VERIFY, {**good, **change})
            assert (status, answer["error"]) == (400, "bad_request"), change
            assert answer["message"].startswith(message), answer
        status, answer = await app.call(OTP_ENROL, {"username": "a b", "issuer": "G"})
        assert (status, answer["message"]) == (400, "username: not a valid username")
        status, answer = await app.call(OTP_ENROL, {"username": "alice", "issuer": "a:b"})
        assert status == 400
        assert answer["message"].startswith("issuer:")

    run(tmp_path, body)


# -- the seed key file and the OATH DB -------------------------------------------------------


def test_the_oath_db_holds_no_seed(tmp_path: Path) -> None:
    seeds: list[bytes] = [SHA1_SEED, SHA256_SEED, SHA512_SEED]

    async def body(app: App) -> None:
        for index, seed in enumerate(seeds):
            await app.add_token(f"T{index}", "alice", seed)
        seeds.append(secret_of(await enrol(app, "bob")))
        seeds.append(secret_of(await enrol(app, "carol")))
        assert len(await app.store.list_tokens()) == 5

    run(tmp_path, body)
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("oath.db*"))
    assert raw, "no OATH DB file"
    for seed in seeds:
        encodings = [seed, seed.hex().encode(), seed.hex().upper().encode()]
        encodings.append(base64.b32encode(seed).rstrip(b"="))
        encodings.append(base64.b64encode(seed).rstrip(b"="))
        for encoded in encodings:
            assert encoded not in raw
        assert seed[:16] not in raw


def test_the_keyring_is_created_private(tmp_path: Path) -> None:
    async def body(app: App) -> None:
        await enrol(app)

    run(tmp_path, body)
    path = tmp_path / "home" / "oath-seeds.key"
    assert path.stat().st_mode & 0o777 == 0o600


def test_an_unusable_keyring_stops_otp_and_not_passwords(tmp_path: Path) -> None:
    user_db = sqlite(tmp_path / "gatehouse.db")
    keyring = tmp_path / "keys" / "oath-seeds.key"
    keyring.parent.mkdir()
    keyring.write_text("not a keyring\n")
    keyring.chmod(0o600)

    async def go() -> None:
        async with running(tmp_path, user_db=user_db, keyring=keyring) as app:
            for call, request in [
                (
                    OTP_VERIFY,
                    {"username": "alice", "code": "1", "client_ip": IP, "attempt": attempt()},
                ),
                (OTP_ENROL, {"username": "alice", "issuer": "G"}),
            ]:
                status, answer = await app.call(call, request)
                assert status == 503
                assert answer["error"] == "unavailable"
                assert "seed key file" in answer["message"]
                assert "not JSON" in answer["message"]
            password = {"username": "alice", "password": "correct horse", "client_ip": IP}
            status, answer = await app.call(VERIFY, password)
            assert (status, answer["result"]) == (200, "ok")
            # Repaired: the next OTP call loads it, no restart.
            keyring.unlink()
            assert (await status_of(app)) == {"active": 0, "pending": None, "enrol_required": False}
            assert (await enrol(app))["serial"]
            assert keyring.stat().st_mode & 0o777 == 0o600

    from gatehouse.storage.migrate import upgrade

    asyncio.run(upgrade(user_db, "user"))
    add_user(user_db, "alice", "correct horse")
    asyncio.run(go())


def test_a_keyring_others_may_read_is_refused(tmp_path: Path) -> None:
    keyring = tmp_path / "home" / "oath-seeds.key"

    async def first(app: App) -> None:
        await enrol(app)

    run(tmp_path, first)
    os.chmod(keyring, 0o644)

    async def second(app: App) -> None:
        status, answer = await app.call(OTP_STATUS, {"username": "alice"})
        assert status == 200  # status needs no seed
        status, answer = await app.call(OTP_ENROL, {"username": "alice", "issuer": "G"})
        assert (status, answer["error"]) == (503, "unavailable")
        assert "readable by others" in answer["message"]

    run(tmp_path, second)


# -- the same work whatever the code or the user -----------------------------------------------


def test_wrong_malformed_and_tokenless_checks_do_the_same_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each path computes as many HMACs and decrypts as many seeds: their time tells nothing
    the answer does not."""
    from gatehouse.oath import otp, seeds

    counts = {"hmac": 0, "decrypt": 0}
    real_code = otp._code
    real_decrypt = seeds.Keyring.decrypt

    def counting_code(*args: Any) -> str:
        counts["hmac"] += 1
        return real_code(*args)

    def counting_decrypt(self: seeds.Keyring, *args: Any) -> bytes:
        counts["decrypt"] += 1
        return real_decrypt(self, *args)

    monkeypatch.setattr(otp, "_code", counting_code)
    monkeypatch.setattr(seeds.Keyring, "decrypt", counting_decrypt)

    async def body(app: App) -> None:
        await app.add_token("T1", "alice", SHA1_SEED)
        await app.add_token("T2", "bob", SHA1_SEED)
        app.clock.now += 30
        assert (await verify(app, "bob", code_now(app, SHA1_SEED)))["result"] == "ok"
        await verify(app, "nobody", "000000")  # the dummy token made once, beforehand
        wrong = "000000" if code_now(app, SHA1_SEED) != "000000" else "111111"
        work = {}
        for label, user, typed in [
            ("wrong", "alice", wrong),
            ("malformed", "alice", "abc"),
            ("empty", "alice", ""),
            ("used token, wrong", "bob", wrong),
            ("no token", "nobody", wrong),
            ("no token, malformed", "nobody", "x"),
        ]:
            counts.update(hmac=0, decrypt=0)
            await verify(app, user, typed)
            work[label] = dict(counts)
        assert {str(w) for w in work.values()} == {str({"hmac": 6, "decrypt": 1})}, work

    run(tmp_path, body)


def test_an_answer_lost_after_the_commit_is_ok_on_the_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first service consumes the code and fails before answering (here: its audit write
    finds the user DB gone, so it answers 503 and the caller retries elsewhere); the retry of
    the same attempt on the second service is ok, and the code is still used once."""
    from gatehouse.authentication import audit
    from gatehouse.storage.errors import DatabaseUnavailable

    real_record = audit.record
    failing = {"left": 1}

    async def flaky_record(*args: Any, **kwargs: Any) -> None:
        if failing["left"]:
            failing["left"] -= 1
            raise DatabaseUnavailable("database unavailable: connection lost")
        await real_record(*args, **kwargs)

    async def go() -> None:
        clock = Clock()
        shared: dict[str, Any] = {"oath_db": sqlite(tmp_path / "oath.db"), "clock": clock}
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
        async with running(tmp_path / "a", **shared) as first:
            keyring = first.service.otp.keys.path  # type: ignore[union-attr]
            async with running(tmp_path / "b", keyring=keyring, **shared) as second:
                await first.add_token("T1", "alice", SHA1_SEED)
                code, submission = code_now(first, SHA1_SEED), attempt()
                body = {"username": "alice", "code": code, "client_ip": IP, "attempt": submission}
                monkeypatch.setattr(audit, "record", flaky_record)
                status, answer = await first.call(OTP_VERIFY, body)
                assert (status, answer["error"]) == (503, "unavailable")
                consumed = await first.store.get("T1")
                assert consumed.last_attempt == submission
                assert await verify(second, "alice", code, submission) == {
                    "result": "ok",
                    "serial": "T1",
                }
                assert await verify(second, "alice", code) == {"result": "invalid"}
                assert (await first.store.get("T1")).last_step == consumed.last_step

    asyncio.run(go())
