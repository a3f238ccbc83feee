#!/usr/bin/env python3
"""OTP validations per second: Gatehouse's Authentication service side by side with
privacyIDEA 3.14 (issue 15's benchmark), in one run on this machine.

Both sides validate HOTP codes (RFC 4226, SHA-1, 6 digits) of the same ``TOKENS`` seeds:

- **Gatehouse**: one ``gatehouse authentication`` process (the service runs one process) on
  mutual TLS, certificates from an internal CA made for the run; the load generator is a
  Policy-role client, as in production. ``POST /internal/v1/otp/verify`` with a JSON body;
  one user per token; OATH DB and user DB on SQLite (the single-node default).
- **privacyIDEA**: installed from PyPI into its own venv by this script (cached in
  ``bench/.privacyidea-venv``, ignored by git), SQLite, gunicorn with ``-w 1`` (the same
  number of worker processes), tokens without users validated by serial:
  ``POST /validate/check`` with ``serial`` and ``pass`` (no PIN), plain HTTP (gunicorn's sync
  worker closes the connection after each answer).

The same asyncio load generator (a small HTTP/1.1 client of its own, keep-alive where the
server allows it) drives both, ``CLIENTS`` callers at once, each caller owning its share of
the tokens so that one request per token is in flight and every fresh code is a real success.
Three paths, each at most ``--seconds`` or ``--requests`` per side, Gatehouse and privacyIDEA
in turn: **success** (the next counter of a token), **failure** (a wrong code: not one of the
token's next 32 codes) and **replay** (the code the token accepted last). Both sides lock a
token after 10 consecutive failures by default; the run raises that to 1000 on both
(Gatehouse ``otp.max_failures``, privacyIDEA ``DefaultMaxFailCount``) so the failure path
measures validation, not locked answers. Every answer is checked (ok / invalid as expected).

**Double acceptance**: ``--rounds`` rounds of one fresh code sent twice at once to two
processes sharing one database: two Gatehouse Authentication services on the same home, and
privacyIDEA under gunicorn ``-w 2``. A round where both answers are an acceptance is a code
accepted twice.

    .venv/bin/python bench/otp.py                  # prints the table
    .venv/bin/python bench/run.py --only otp       # the same, as a step of make bench

If privacyIDEA cannot be installed or started, the table has Gatehouse's rows and says why.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import protected
import yaml
from signals import terminate_on_signals

from gatehouse.oath.otp import hotp
from gatehouse.trust.ca import CertificateAuthority
from gatehouse.trust.identity import AUTHENTICATION, POLICY, Identity
from gatehouse.trust.tls import Credentials, check_server, write_credentials

REPO = Path(__file__).resolve().parent.parent
DOCS = ("<!-- bench:otp:start -->", "<!-- bench:otp:end -->")
HEADING = "## Latest results: OTP validation, Gatehouse vs privacyIDEA"
GOAL_RATIO = 5.0  # Gatehouse validations/s >= 5 x privacyIDEA's, at a lower p99
PI_REQUIREMENT = "privacyidea==3.14.*"
#: What is installed when 3.14 cannot be: the newest 3.x.
PI_FALLBACK = "privacyidea>=3,<4"
PI_VENV = REPO / "bench" / ".privacyidea-venv"
TOKENS = 128
CLIENTS = 8
MAX_FAILURES = 1000  # the most Gatehouse allows; > --requests / TOKENS
#: A wrong code is none of the token's next this many codes (both look ahead 10).
WRONG_AVOID = 32
PATHS = ("success", "failure", "replay")
EXPECTED = {"success": "ok", "failure": "invalid", "replay": "invalid"}
SIDES = ("Gatehouse", "privacyIDEA")


def log(message: str) -> None:
    print(f"[otp] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:4]} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:g} s")


# --------------------------------------------------------------------------- HTTP client


class Conn:
    """One HTTP/1.1 connection of the load generator: keep-alive while the server keeps it
    open, a new connection after an answer that says ``Connection: close``."""

    def __init__(self, port: int, tls: ssl.SSLContext | None) -> None:
        self.port = port
        self.tls = tls
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.connects = 0

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            "127.0.0.1", self.port, ssl=self.tls, server_hostname="" if self.tls else None
        )
        self.connects += 1
        if self.tls is not None:  # the server must be an Authentication service of the CA
            check_server(self.writer.get_extra_info("ssl_object"), frozenset({AUTHENTICATION}))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def post(self, path: str, content_type: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self._open()
        assert self.reader is not None
        assert self.writer is not None
        self.writer.write(
            b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: %s\r\n"
            b"Content-Length: %d\r\n\r\n%s"
            % (path.encode(), content_type.encode(), len(body), body)
        )
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.close()
            raise
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        data = await self.reader.readexactly(length)
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, data


# --------------------------------------------------------------------------- targets


@dataclass
class Token:
    seed: bytes
    name: str  # Gatehouse: the user; privacyIDEA: the serial
    counter: int = 0  # the next counter not accepted yet

    def code(self, counter: int) -> str:
        return hotp(self.seed, counter, 6, "sha1")

    def wrong(self) -> str:
        avoid = {self.code(self.counter + i) for i in range(WRONG_AVOID)}
        avoid.add(self.code(max(self.counter - 1, 0)))
        while True:
            candidate = f"{secrets.randbelow(1_000_000):06d}"
            if candidate not in avoid:
                return candidate


@dataclass
class Target:
    """One side: how to ask it to validate a code, and what its answer means."""

    side: str
    ports: list[int]
    tls: ssl.SSLContext | None
    tokens: list[Token]
    request: Callable[[Token, str], tuple[str, str, bytes]]
    result: Callable[[int, bytes], str]


def gatehouse_request(token: Token, code: str) -> tuple[str, str, bytes]:
    body = {
        "username": token.name,
        "code": code,
        "client_ip": "127.0.0.1",
        "attempt": secrets.token_urlsafe(16),
    }
    return "/internal/v1/otp/verify", "application/json", orjson.dumps(body)


def gatehouse_result(status: int, body: bytes) -> str:
    if status != 200:
        return f"HTTP {status}: {body[:120]!r}"
    return str(orjson.loads(body)["result"])


def pi_request(token: Token, code: str) -> tuple[str, str, bytes]:
    body = urllib.parse.urlencode({"serial": token.name, "pass": code}).encode()
    return "/validate/check", "application/x-www-form-urlencoded", body


def pi_result(status: int, body: bytes) -> str:
    if status != 200:
        return f"HTTP {status}: {body[:120]!r}"
    result = orjson.loads(body).get("result", {})
    if not result.get("status"):
        return f"error: {result.get('error')}"
    return "ok" if result.get("value") else "invalid"


# --------------------------------------------------------------------------- load


async def _path(target: Target, path: str, seconds: float, limit: int) -> protected.Latencies:
    """``CLIENTS`` callers, each owning every CLIENTS-th token, for ``seconds`` or ``limit``
    validations in all; answers other than the expected one are errors."""
    result = protected.Latencies()
    warmup = path == "warm-up"  # one success for every token, each caller's tokens once
    path = "success" if warmup else path
    expected = EXPECTED[path]
    sent = 0
    deadline = time.perf_counter() + seconds

    async def caller(index: int) -> None:
        nonlocal sent
        mine = target.tokens[index::CLIENTS]
        conn = Conn(target.ports[0], target.tls)
        turn = 0
        try:
            while sent < limit and time.perf_counter() < deadline:
                if warmup and turn >= len(mine):
                    break
                sent += 1
                token = mine[turn % len(mine)]
                turn += 1
                if path == "success":
                    code = token.code(token.counter)
                elif path == "failure":
                    code = token.wrong()
                else:
                    code = token.code(token.counter - 1)
                url, kind, body = target.request(token, code)
                started = time.perf_counter()
                try:
                    answer = target.result(*await conn.post(url, kind, body))
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    result.error(f"{type(exc).__name__}: {exc}")
                    continue
                elapsed = (time.perf_counter() - started) * 1000
                if path == "success" and answer == "ok":
                    token.counter += 1
                if answer == expected:
                    result.samples.append(elapsed)
                else:
                    result.error(f"{path}: answered {answer}, expected {expected}")
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(CLIENTS)))
    result.elapsed = time.perf_counter() - started
    return result


def measure(target: Target, path: str, seconds: float, limit: int) -> protected.Latencies:
    import uvloop

    return uvloop.run(_path(target, path, seconds, limit))


@dataclass
class Race:
    rounds: int = 0
    double: int = 0  # rounds where both answers were acceptances
    single: int = 0
    none: int = 0
    errors: int = 0
    first_error: str | None = None


async def _race(target: Target, rounds: int) -> Race:
    """Each round: one fresh code of a token, sent at once to two processes (the two
    ports), on two connections opened before."""
    race = Race()
    conns = [Conn(port, target.tls) for port in target.ports[:2]]
    try:
        for i in range(rounds):
            token = target.tokens[i % len(target.tokens)]
            code = token.code(token.counter)
            requests = [target.request(token, code) for _ in conns]
            answers = await asyncio.gather(
                *(c.post(*r) for c, r in zip(conns, requests, strict=True)),
                return_exceptions=True,
            )
            oks = 0
            for answer in answers:
                if isinstance(answer, BaseException):
                    race.errors += 1
                    race.first_error = race.first_error or f"{type(answer).__name__}: {answer}"
                    continue
                meaning = target.result(*answer)
                if meaning == "ok":
                    oks += 1
                elif meaning != "invalid":
                    race.errors += 1
                    race.first_error = race.first_error or meaning
            race.rounds += 1
            race.double += oks >= 2
            race.single += oks == 1
            race.none += oks == 0
            token.counter += 1
    finally:
        for conn in conns:
            conn.close()
    return race


def race(target: Target, rounds: int) -> Race:
    import uvloop

    return uvloop.run(_race(target, rounds))


# --------------------------------------------------------------------------- Gatehouse


@dataclass
class Gatehouse:
    workdir: Path
    python: str
    tokens: list[Token]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    client_tls: ssl.SSLContext | None = None

    def setup(self, ca: CertificateAuthority) -> None:
        self.home = self.workdir / "home"
        self.ca = ca
        policy_dir = self.workdir / "tls" / "bench-policy"
        key, cert = ca.issue_key_pair(Identity(POLICY, "bench-policy"))
        write_credentials(policy_dir, ca.certificate_pem, cert, key)
        self.client_tls = Credentials(policy_dir).client
        seeds = [[t.name, t.seed.hex()] for t in self.tokens]
        asyncio.run(_gatehouse_setup(str(self.home), seeds))

    def start(self, service_id: str) -> int:
        port = free_port()
        directory = self.workdir / "tls" / service_id
        key, cert = self.ca.issue_key_pair(Identity(AUTHENTICATION, service_id))
        write_credentials(directory, self.ca.certificate_pem, cert, key)
        config = self.workdir / f"{service_id}.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "authentication": {
                        "id": service_id,
                        "listen": f"127.0.0.1:{port}",
                        "otp": {"max_failures": MAX_FAILURES},
                    }
                }
            )
        )
        out = open(self.workdir / f"{service_id}.log", "wb")  # noqa: SIM115 - closed with the process
        args = ["authentication", "--config", str(config), "--home", str(self.home)]
        proc = subprocess.Popen(
            [self.python, "-m", "gatehouse", *args, "--tls", str(directory)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        wait_port(port, proc)
        self.ports.append(port)
        return port

    def target(self) -> Target:
        return Target(
            "Gatehouse",
            self.ports,
            self.client_tls,
            self.tokens,
            gatehouse_request,
            gatehouse_result,
        )

    def stop(self) -> None:
        stop_all(self.procs)
        self.procs.clear()


async def _gatehouse_setup(home: str, seeds: list[list[str]]) -> None:
    """Users and their HOTP tokens in a fresh installation home: what ``gatehouse users add``
    and ``gatehouse tokens add USER --type hotp --secret ...`` store, without a process each."""
    from gatehouse.oath.store import TokenStore
    from gatehouse.oath.tokens_commands import open_installation
    from gatehouse.storage import directory

    async with open_installation(Path(home)) as opened:
        async with opened.user_db.session() as session:
            for name, _ in seeds:
                await directory.add_user(session, name, None)
        store = TokenStore(opened.engine)
        for name, seed in seeds:
            serial = f"HOTP-{name}"
            key_id, blob = opened.keyring.encrypt(bytes.fromhex(seed), serial.encode())
            await store.add(
                serial, type="hotp", seed_key_id=key_id, seed_ciphertext=blob, owner=name
            )


# --------------------------------------------------------------------------- privacyIDEA

_PI_SETUP = """
import json, sys
from privacyidea.app import create_app
from privacyidea.lib.config import set_privacyidea_config
from privacyidea.lib.token import init_token
app = create_app(config_name="production", config_file=sys.argv[1], silent=True)
with app.app_context():
    set_privacyidea_config("DefaultMaxFailCount", sys.argv[2])
    for serial, seed in json.load(sys.stdin):
        init_token({"type": "hotp", "otpkey": seed, "serial": serial, "otplen": 6,
                    "hashlib": "sha1"})
"""

_PI_WSGI = """
from privacyidea.app import create_app
application = create_app(config_name="production", config_file={cfg!r}, silent=True)
"""


def pi_install(venv: Path) -> str:
    """privacyIDEA and gunicorn in ``venv`` (made if missing); its version."""
    python = venv / "bin" / "python"
    if not python.exists():
        log(f"installing {PI_REQUIREMENT} and gunicorn into {venv} (once; cached)")
        subprocess.run(
            [sys.executable, "-m", "venv", "--clear", str(venv)],
            check=True,
            capture_output=True,
            timeout=120,
        )
    probe = [str(python), "-c", "import importlib.metadata as m; print(m.version('privacyidea'))"]
    found = subprocess.run(probe, capture_output=True, text=True, check=False)
    if found.returncode != 0 or not (venv / "bin" / "gunicorn").exists():
        for requirement in (PI_REQUIREMENT, PI_FALLBACK):
            done = subprocess.run(
                [str(python), "-m", "pip", "install", "-q", requirement, "gunicorn"],
                capture_output=True,
                text=True,
                check=False,
                timeout=900,
            )
            if done.returncode == 0:
                break
            log(f"pip install {requirement} failed")
        if done.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"pip install {PI_REQUIREMENT} failed: {' / '.join(tail)}")
        found = subprocess.run(probe, capture_output=True, text=True, check=True)
    return found.stdout.strip()


@dataclass
class PrivacyIdea:
    workdir: Path
    venv: Path
    tokens: list[Token]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    version: str = ""

    def setup(self) -> None:
        self.version = pi_install(self.venv)
        work = self.workdir
        cfg = work / "pi.cfg"
        cfg.write_text(
            f"SQLALCHEMY_DATABASE_URI = 'sqlite:///{work / 'pi.sqlite'}'\n"
            f"SECRET_KEY = '{secrets.token_hex(24)}'\n"
            f"PI_PEPPER = '{secrets.token_hex(24)}'\n"
            f"PI_ENCFILE = '{work / 'enckey'}'\n"
            f"PI_AUDIT_KEY_PRIVATE = '{work / 'audit-private.pem'}'\n"
            f"PI_AUDIT_KEY_PUBLIC = '{work / 'audit-public.pem'}'\n"
            f"PI_LOGFILE = '{work / 'privacyidea.log'}'\n"
            "PI_LOGLEVEL = 30\n"
        )
        (work / "piwsgi.py").write_text(_PI_WSGI.format(cfg=str(cfg)))
        self.env = {**os.environ, "PRIVACYIDEA_CONFIGFILE": str(cfg)}
        manage = str(self.venv / "bin" / "pi-manage")
        for command in ("create_enckey", "create_audit_keys", "create_tables"):
            self._run([manage, "setup", command])
        seeds = [[t.name, t.seed.hex()] for t in self.tokens]
        self._run(
            [str(self.venv / "bin" / "python"), "-c", _PI_SETUP, str(cfg), str(MAX_FAILURES)],
            json.dumps(seeds).encode(),
        )

    def _run(self, args: list[str], stdin: bytes = b"") -> None:
        done = subprocess.run(
            args, input=stdin, capture_output=True, env=self.env, check=False, timeout=300
        )
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"{Path(args[0]).name} {args[1]} failed: {' / '.join(tail)}")

    def start(self, workers: int) -> int:
        port = free_port()
        out = open(self.workdir / f"gunicorn-{workers}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [
                str(self.venv / "bin" / "gunicorn"),
                "-w",
                str(workers),
                "-b",
                f"127.0.0.1:{port}",
                "--chdir",
                str(self.workdir),
                "piwsgi:application",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        self.procs.append(proc)
        wait_port(port, proc)
        self.ports = [port, port]  # the race: both requests to the one gunicorn
        return port

    def target(self) -> Target:
        return Target("privacyIDEA", self.ports, None, self.tokens, pi_request, pi_result)

    def stop(self) -> None:
        stop_all(self.procs)
        self.procs.clear()


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- the run


@dataclass
class Result:
    rows: dict[tuple[str, str], protected.Latencies]
    races: dict[str, Race]
    pi_version: str
    pi_failure: str | None
    seconds: float
    limit: int
    load_start: tuple[float, float, float]
    load_end: tuple[float, float, float] = (0.0, 0.0, 0.0)


def make_tokens(prefix: str, seeds: list[bytes]) -> list[Token]:
    return [Token(seed, f"{prefix}{i:03d}") for i, seed in enumerate(seeds)]


def run(
    python: str = sys.executable,
    seconds: float = 10.0,
    limit: int = 50_000,
    rounds: int = 200,
    venv: Path = PI_VENV,
    keep: bool = False,
) -> tuple[Result, str]:
    """Both sides, every path, then the race; (result, Markdown for docs/benchmarks.md)."""
    workdir = Path(tempfile.mkdtemp(prefix="gatehouse-otp-bench-"))
    seeds = [secrets.token_bytes(20) for _ in range(TOKENS)]
    gatehouse = Gatehouse(workdir / "gatehouse", python, make_tokens("otpuser", seeds))
    pi = PrivacyIdea(workdir / "privacyidea", venv, make_tokens("PIBENCH", seeds))
    result = Result({}, {}, "", None, seconds, limit, os.getloadavg())
    try:
        gatehouse.workdir.mkdir(parents=True)
        pi.workdir.mkdir(parents=True)
        gatehouse.setup(CertificateAuthority.create())
        gatehouse.start("auth1")
        log(f"Gatehouse Authentication service up (mTLS, port {gatehouse.ports[0]})")
        try:
            pi.setup()
            result.pi_version = pi.version
            pi.start(1)
            log(f"privacyIDEA {pi.version} up (gunicorn -w 1, port {pi.ports[0]})")
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            result.pi_failure = str(exc)
            log(f"privacyIDEA unavailable, Gatehouse only: {exc}")
            pi.stop()
        targets = [gatehouse.target()] + ([] if result.pi_failure else [pi.target()])
        for target in list(targets):  # warm-up: connections, caches, one success per token
            warm = measure(target, "warm-up", 120.0, TOKENS)
            if warm.errors or warm.count != TOKENS:
                why = f"{target.side} warm-up: {warm.count} ok, {warm.first_error}"
                if target.side == "Gatehouse":
                    raise RuntimeError(why)
                result.pi_failure = why
                log(why)
                targets.remove(target)
        for path in PATHS:
            for target in targets:
                measured = measure(target, path, seconds, limit)
                result.rows[(target.side, path)] = measured
                log(
                    f"{target.side} {path}: {measured.count} in {measured.elapsed:.1f} s, "
                    f"{measured.rate:,.0f}/s, {measured.errors} errors"
                    + (f" ({measured.first_error})" if measured.errors else "")
                )
        # The race: two processes on one database on each side.
        gatehouse.start("auth2")
        result.races["Gatehouse"] = race(gatehouse.target(), rounds)
        gatehouse.stop()
        pi.stop()
        if not result.pi_failure:
            pi.start(2)
            result.races["privacyIDEA"] = race(pi.target(), rounds)
            pi.stop()
        for side, r in result.races.items():
            log(f"{side} race: {r.double} double acceptances in {r.rounds} rounds")
        result.load_end = os.getloadavg()
        return result, render(result)
    finally:
        gatehouse.stop()
        pi.stop()
        if keep:
            log(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _load(values: tuple[float, float, float]) -> str:
    return " ".join(f"{x:.2f}" for x in values)


def render(result: Result) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    commit = subprocess.run(
        ["git", "rev-parse", "--short=10", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    ).stdout.strip()
    pi_name = f"privacyIDEA {result.pi_version}" if result.pi_version else "privacyIDEA"
    lines = [
        f"Measured {now} at commit `{commit}`; {os.cpu_count()} CPUs; load average "
        f"{_load(result.load_start)} at the start, {_load(result.load_end)} at the end.",
        "",
        f"HOTP validations ({TOKENS} tokens, SHA-1, 6 digits), {CLIENTS} concurrent callers "
        f"(one request per token in flight), at most {result.seconds:g} s or "
        f"{result.limit:,} validations per path and side, the two sides in turn per path. "
        "Gatehouse: one Authentication service process, mutual TLS (Policy-role client), "
        f"SQLite. {pi_name}: gunicorn -w 1 (sync worker), SQLite, `/validate/check` by "
        "serial, plain HTTP.",
        "",
    ]
    if result.pi_failure:
        lines += [f"**privacyIDEA could not be measured**: {result.pi_failure}", ""]
    lines += [
        "| path | system | validations | validations/s | p50 ms | p99 ms | errors |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for path in PATHS:
        for side in SIDES:
            r = result.rows.get((side, path))
            if r is None:
                continue
            lines.append(
                f"| {path} | {side} | {r.count:,} | {r.rate:,.0f} | {_ms(r.p(50))} | "
                f"{_ms(r.p(99))} | {r.errors} |"
            )
    lines.append("")
    for path in PATHS:
        g, p = result.rows.get(("Gatehouse", path)), result.rows.get(("privacyIDEA", path))
        if g is None or p is None or not p.rate:
            continue
        ratio = g.rate / p.rate
        g99, p99 = g.p(99), p.p(99)
        lower = g99 is not None and p99 is not None and g99 < p99
        met = ratio >= GOAL_RATIO and lower
        lines.append(
            f"- {path}: Gatehouse **{ratio:.1f}x** privacyIDEA's validations/s, p99 "
            f"{_ms(g99)} vs {_ms(p99)} ms: goal {'met ✓' if met else 'missed ✗'} "
            f"(≥ {GOAL_RATIO:g}x at a lower p99)"
        )
    if result.races:
        lines += [
            "",
            "**Double acceptance**: one fresh code sent twice at once, to two processes on one "
            "database (Gatehouse: two Authentication services on one home; privacyIDEA: "
            "gunicorn -w 2), one round per code",
            "",
            "| system | rounds | accepted twice | accepted once | accepted by neither | errors |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for side, r in result.races.items():
            lines.append(
                f"| {side} | {r.rounds} | {r.double} | {r.single} | {r.none} | {r.errors} |"
            )
        errors = [f"{s}: {r.first_error}" for s, r in result.races.items() if r.first_error]
        if errors:
            lines += ["", "First race errors: " + "; ".join(errors)]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per path and side")
    parser.add_argument("--requests", type=int, default=50_000, help="per path and side")
    parser.add_argument("--rounds", type=int, default=200, help="double-acceptance rounds")
    parser.add_argument("--venv", type=Path, default=PI_VENV, help="privacyIDEA's venv")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    with terminate_on_signals():
        _, table = run(
            seconds=args.seconds,
            limit=args.requests,
            rounds=args.rounds,
            venv=args.venv,
            keep=args.keep,
        )
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
