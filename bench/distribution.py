#!/usr/bin/env python3
"""Distribution service: messages per second and accept-to-delivered latency with two
Distribution services, beside a bare aiosmtplib loop sending as many messages to the same SMTP
sink in the same run (the limit; issue 16's benchmark).

- **Sink**: an aiosmtpd SMTP server in a process of its own, writing each message's
  Message-ID and arrival time (``time.time()``) to a file.
- **Bare loop**: one aiosmtplib connection, ``--messages`` messages one after the other, each
  made as the SMTP channel makes it (``email_bytes``).
- **Gatehouse**: two ``gatehouse distribution`` processes on one outbox: a throwaway
  PostgreSQL database (the HA setup) when PostgreSQL is installed, else one SQLite file (the
  single node's default; ``--sqlite`` / ``--postgres`` choose), one SMTP channel to the sink,
  plaintext internal listeners, ``WORKERS`` (8) delivery workers each (the default is 4;
  more workers let more of the messages accepted at once go straight to a worker without a
  claim). ``--clients`` callers submit ``--messages`` messages as fast as they are accepted
  (each a commit), alternating the two services, on kept-alive connections.
- **'Send code'**: the whole path of a one-time code by e-mail, as the Policy service asks
  for it: a ``gatehouse authentication`` process (its user DB in the same PostgreSQL cluster,
  else a SQLite file; ``--code-sends`` users with e-mail addresses) handing codes to the two
  Distribution services. The bench, in the Policy service's place, calls CODE_SEND
  (``POST /internal/v1/codes/send``: username, ``email_otp``, a fresh key) ``--code-sends``
  times at ``--code-rate`` per second, each for another user (one code per user per 30 s is
  the throttle), on kept-alive connections; latency from the call sent to the arrival of the
  mail whose Message-ID is the message id CODE_SEND answered. Plaintext loopback listeners,
  as tests/authentication/test_codes_process.py runs them (mutual TLS, which checks the
  caller's Policy role, is not in this measure).
- **Kill**: one of the two services killed (-9) halfway through ``--kill-messages`` messages;
  the callers send what it does not answer to the other (same key).
  Messages/s: messages over the time from the first submission to the last arrival.
  Latency: a second, paced run (``--rate`` per second, ``--paced`` messages): from the moment
  a submission was sent (``send``) or answered (``accept``) to the mail's arrival.

    .venv/bin/python bench/distribution.py
    .venv/bin/python bench/run.py --only distribution
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiosmtplib
import yaml

from gatehouse.distribution.templates import email_bytes

REPO = Path(__file__).resolve().parent.parent
DOCS = ("<!-- bench:distribution:start -->", "<!-- bench:distribution:end -->")
HEADING = "## Latest results: Distribution service (outbox to SMTP)"
GOAL_RATIO = 0.7
GOAL_P99_MS = 500.0
#: Seconds of a delivery lease in the run (the default is 30): how long the messages a killed
#: service held wait for the other.
LEASE = 8.0
#: Delivery workers per service (the default is 4).
WORKERS = int(os.environ.get("BENCH_DISTRIBUTION_WORKERS", "8"))

SINK = r"""
import asyncio, sys, time
from aiosmtpd.smtp import SMTP

out = open(sys.argv[2], "a", buffering=1)

class Handler:
    async def handle_DATA(self, server, session, envelope):
        arrived = time.time()
        for line in envelope.content.split(b"\r\n"):
            if line.lower().startswith(b"message-id:"):
                out.write(f"{line.split(b':', 1)[1].strip().decode()} {arrived}\n")
                break
            if not line:
                break
        return "250 OK"

async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(Handler()), "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def _cpu(pid: int) -> float:
    """Seconds of CPU the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def arrivals(path: Path) -> dict[str, float]:
    seen: dict[str, float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            mid, _, at = line.rpartition(" ")
            seen.setdefault(mid, float(at))
    return seen


def wait_arrivals(path: Path, ids: set[str], timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        seen = arrivals(path)
        if ids <= seen.keys() or time.monotonic() > deadline:
            return seen
        time.sleep(0.05)


# -- the bare loop --------------------------------------------------------------------------


async def bare_loop(port: int, count: int) -> tuple[float, set[str]]:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=10)
    await smtp.connect()
    ids: set[str] = set()
    started = time.time()
    for n in range(count):
        # The same message made the same way as the SMTP channel makes it.
        name = f"bare{n}-{secrets.token_hex(4)}"
        mail = email_bytes(
            name,
            "Gatehouse <noreply@example.org>",
            "jane@example.org",
            "Your sign-in code",
            f"Your code is {n:06d}",
        )
        await smtp.sendmail("noreply@example.org", ["jane@example.org"], mail)
        ids.add(f"<{name}@gatehouse>")
    await smtp.quit()
    return started, ids


# -- the load on Gatehouse ------------------------------------------------------------------


class Conn:
    """One kept-alive HTTP/1.1 connection to a Distribution (or Authentication) service."""

    def __init__(self, port: int, path: str = "/internal/v1/messages") -> None:
        self.port = port
        self.path = path
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> dict[str, object]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        if not status_line:  # the service went away
            raise ConnectionResetError("connection closed before an answer")
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        data = await self.reader.readexactly(length)
        if b" 200 " not in status_line:
            raise RuntimeError(f"submit refused: {status_line!r} {data[:200]!r}")
        answer: dict[str, object] = json.loads(data)
        return answer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def message(n: int) -> bytes:
    return json.dumps(
        {
            "key": secrets.token_urlsafe(16),
            "purpose": "code",
            "email": "jane@example.org",
            "subject": "Your sign-in code",
            "text": f"Your code is {n:06d}",
            "ttl": 300,
        }
    ).encode()


@dataclass
class Sent:
    sent: dict[str, float] = field(default_factory=dict)
    accepted: dict[str, float] = field(default_factory=dict)


async def submit_all(
    ports: list[int],
    count: int,
    clients: int,
    rate: float | None,
    halfway: Callable[[], None] | None = None,
) -> Sent:
    """Submit ``count`` messages; ``halfway`` is called once half of them were accepted (the
    kill). A submission whose service fails is sent again, with the same key, to the next
    one, as the callers' failover client does."""
    result = Sent()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(count):
        queue.put_nowait(n)
    start = time.time()
    dead: set[int] = set()

    async def client(index: int) -> None:
        conns = [Conn(port) for port in ports]
        while not queue.empty():
            n = queue.get_nowait()
            if rate is not None:
                delay = start + n / rate - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            sent = time.time()
            body = message(n)
            for attempt in range(len(conns)):
                which = (n + attempt) % len(conns)
                if which in dead and attempt + 1 < len(conns):
                    continue
                try:
                    answer = await conns[which].post(body)
                    break
                except (OSError, asyncio.IncompleteReadError):
                    dead.add(which)
                    conns[which] = Conn(ports[which])
            else:
                raise RuntimeError(f"message {n}: no service accepted it")
            mid = f"<{answer['id']}@gatehouse>"
            result.sent[mid] = sent
            result.accepted[mid] = time.time()
            if halfway is not None and len(result.accepted) == count // 2:
                halfway()
        for conn in conns:
            if conn.writer is not None:
                conn.writer.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    return result


# -- 'send code': CODE_SEND through an Authentication service -------------------------------

CODE_PATH = "/internal/v1/codes/send"
#: Seconds the bench waits for one CODE_SEND answer (the Policy service gives a send 8 s).
CODE_TIMEOUT = 10.0
#: Sends before the measured ones (other users): the service's connections opened, as a
#: running service has them.
CODE_WARMUP = 3


def code_user(n: int) -> str:
    return f"bench{n:04d}"


def add_code_users(url: str, count: int) -> None:
    """A migrated user DB with ``count`` users with e-mail addresses (no password)."""
    from gatehouse.storage import directory
    from gatehouse.storage.engine import Database
    from gatehouse.storage.migrate import upgrade

    async def go() -> None:
        await upgrade(url, "user")
        db = Database(url)
        try:
            async with db.session() as session:
                for n in range(count):
                    name = code_user(n)
                    await directory.add_user(session, name, None, email=f"{name}@example.org")
        finally:
            await db.dispose()

    asyncio.run(go())


def start_authentication(
    root: Path, python: str, user_db: str, dist_ports: list[int], logs: list[Path]
) -> tuple[subprocess.Popen[bytes], int]:
    """One ``gatehouse authentication`` handing codes to the Distribution services."""
    port = free_port()
    config = root / "auth1.yaml"
    settings = {
        "id": "auth1",
        "listen": f"127.0.0.1:{port}",
        "user_db": user_db,
        "distribution": [f"http://127.0.0.1:{p}" for p in dist_ports],
    }
    config.write_text(yaml.safe_dump({"authentication": settings}))
    logs.append(root / "auth1.log")
    with logs[-1].open("ab") as out:
        proc = subprocess.Popen(
            [
                python,
                "-m",
                "gatehouse",
                "authentication",
                "--config",
                str(config),
                "--home",
                str(root / "auth-home"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc, port


@dataclass
class CodeSends:
    #: Message-ID -> when its CODE_SEND was sent, and when it was answered ``accepted``.
    sent: dict[str, float] = field(default_factory=dict)
    answered: dict[str, float] = field(default_factory=dict)
    #: Sends not answered ``accepted`` (user: what came instead).
    failed: list[str] = field(default_factory=list)


async def send_codes(port: int, users: range, clients: int, rate: float | None) -> CodeSends:
    """CODE_SEND once for each user number in ``users``, ``rate`` per second."""
    result = CodeSends()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in users:
        queue.put_nowait(n)
    start = time.time()

    async def client() -> None:
        conn = Conn(port, CODE_PATH)
        try:
            while not queue.empty():
                n = queue.get_nowait()
                if rate is not None:
                    delay = start + (n - users.start) / rate - time.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                body = json.dumps(
                    {
                        "username": code_user(n),
                        "method": "email_otp",
                        "key": f"bench-send-{n:04d}-{secrets.token_hex(8)}",
                        "client_ip": "192.0.2.40",
                    }
                ).encode()
                sent = time.time()
                try:
                    answer = await asyncio.wait_for(conn.post(body), CODE_TIMEOUT)
                except (OSError, RuntimeError, asyncio.IncompleteReadError, TimeoutError) as exc:
                    result.failed.append(f"{code_user(n)}: {type(exc).__name__} {exc}"[:300])
                    conn.close()
                    conn = Conn(port, CODE_PATH)
                    continue
                if answer.get("result") != "accepted":
                    result.failed.append(f"{code_user(n)}: {answer}"[:300])
                    continue
                mid = f"<{answer['id']}@gatehouse>"
                result.sent[mid] = sent
                result.answered[mid] = time.time()
        finally:
            conn.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return result


@dataclass
class CodeLatency:
    """The 'send code' phase: CODE_SEND to mail received."""

    sends: int
    rate: float
    user_db: str
    p50: float
    p99: float
    answer_p50: float
    answer_p99: float
    #: Sends not answered ``accepted``; accepted ones whose mail did not arrive.
    failed: int
    lost: int


def code_phase(
    root: Path,
    python: str,
    dist_ports: list[int],
    procs: list[subprocess.Popen[bytes]],
    logs: list[Path],
    arrived: Path,
    user_db: str,
    sends: int,
    rate: float,
    clients: int,
) -> CodeLatency:
    add_code_users(user_db, sends + CODE_WARMUP)
    auth, port = start_authentication(root, python, user_db, dist_ports, logs)
    procs.append(auth)  # stopped with the others, also on failure
    wait_port(port, auth)
    warm = asyncio.run(send_codes(port, range(sends, sends + CODE_WARMUP), 1, None))
    if warm.failed:
        raise RuntimeError(f"'send code' warm-up failed: {warm.failed[0]}")
    wait_arrivals(arrived, set(warm.sent), 30)
    log(f"[distribution] 'send code': {sends} CODE_SEND calls at {rate:g}/s, one per user")
    result = asyncio.run(send_codes(port, range(sends), clients, rate))
    for failure in result.failed[:3]:
        log(f"[distribution] 'send code' failed: {failure}")
    ids = set(result.sent)
    seen = wait_arrivals(arrived, ids, 60)
    missing = float("inf")  # a send not accepted or its mail not arrived: no latency met
    failed = [missing] * len(result.failed)
    to_mail = [(seen[i] - result.sent[i]) * 1000 if i in seen else missing for i in ids]
    answered = [(result.answered[i] - result.sent[i]) * 1000 for i in ids]
    to_mail += failed
    answered += failed
    return CodeLatency(
        sends=sends,
        rate=rate,
        user_db="PostgreSQL" if user_db.startswith("postgresql") else "SQLite",
        p50=statistics.median(to_mail) if to_mail else float("nan"),
        p99=percentile(to_mail, 99),
        answer_p50=statistics.median(answered) if answered else float("nan"),
        answer_p99=percentile(answered, 99),
        failed=len(result.failed),
        lost=len(ids - seen.keys()),
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


@dataclass
class Killed:
    """One of the services killed (-9) in the middle of a run."""

    messages: int
    rate: float
    lost: int
    duplicates: int
    #: Messages the killed service had accepted and not delivered: delivered by the other
    #: once their lease ran out.
    waited_for_lease: int
    #: Seconds from the kill to the last arrival.
    last_after_kill: float


@dataclass
class Result:
    messages: int
    bare_rate: float
    gatehouse_rate: float
    lost: int
    duplicates: int
    paced: int
    rate: float
    send_p50: float
    send_p99: float
    accept_p50: float
    accept_p99: float
    load: str
    services: int = 2
    outbox: str = "SQLite"
    killed: Killed | None = None
    code: CodeLatency | None = None
    bare_rates: list[float] = field(default_factory=list)
    gatehouse_rates: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.gatehouse_rate / self.bare_rate if self.bare_rate else 0.0


def start_services(
    root: Path,
    python: str,
    sink_port: int,
    logs: list[Path],
    count: int = 2,
    outbox_db: str | None = None,
) -> tuple[list[subprocess.Popen[bytes]], list[int]]:
    home = root / "home"
    procs, ports = [], []
    for name in [f"dist{n + 1}" for n in range(count)]:
        port = free_port()
        config = root / f"{name}.yaml"
        channel = {
            "type": "smtp",
            "name": "mail",
            "host": "127.0.0.1",
            "port": sink_port,
            "security": "none",
            "sender": "Gatehouse <noreply@example.org>",
            # A local sink: 2 s is plenty, and LEASE is more than twice that plus 1 s (a
            # shorter lease is lengthened before each attempt: a write per message).
            "timeout": 2,
        }
        settings = {
            "id": name,
            "listen": f"127.0.0.1:{port}",
            "channels": [channel],
            "delivery": {"workers": WORKERS, "poll_interval": 1, "lease": LEASE},
        }
        if outbox_db is not None:
            settings["outbox_db"] = outbox_db
        config.write_text(yaml.safe_dump({"distribution": settings}))
        logs.append(root / f"{name}.log")
        with logs[-1].open("ab") as out:
            proc = subprocess.Popen(
                [
                    python,
                    "-m",
                    "gatehouse",
                    "distribution",
                    "--config",
                    str(config),
                    "--home",
                    str(home),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        procs.append(proc)
        ports.append(port)
        wait_port(port, proc)
    return procs, ports


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run(
    python: str = sys.executable,
    messages: int = 1000,
    clients: int = 8,
    paced: int = 200,
    rate: float = 50.0,
    keep: bool = False,
    services: int = 2,
    postgres: bool | None = None,
    kill_messages: int = 500,
    kill_rate: float = 200.0,
    rounds: int = 3,
    code_sends: int = 200,
    code_rate: float = 20.0,
) -> tuple[Result, str]:
    root = Path(tempfile.mkdtemp(prefix="gatehouse-bench-distribution-"))
    arrived = root / "arrivals.txt"
    sink_port = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    cleanups: list[Callable[[], None]] = []
    try:
        sink = subprocess.Popen(
            [python, "-c", SINK, str(sink_port), str(arrived)],
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        procs.append(sink)
        wait_port(sink_port, sink)

        outbox_db = None
        sys.path.insert(0, str(REPO))
        from tests.support.postgres import PostgresCluster, find_bindir

        bindir = find_bindir()
        if postgres is None:  # the HA setup when PostgreSQL is installed, else one SQLite file
            postgres = bindir is not None
        if postgres:
            if bindir is None:
                raise RuntimeError("--postgres: PostgreSQL server binaries not found")
            cluster = PostgresCluster(bindir)
            cleanups.append(cluster.destroy)
            outbox_db = cluster.url(cluster.create_database())
        started_services, ports = start_services(root, python, sink_port, logs, services, outbox_db)
        procs.extend(started_services)
        time.sleep(1.0)  # both migrated and delivering

        # Bare loop and Distribution services in turn, ``rounds`` times: the machine's other
        # load falls on both alike; the medians are compared.
        bare_rates: list[float] = []
        gatehouse_rates: list[float] = []
        lost = duplicates = 0
        for turn in range(rounds):
            log(f"[distribution] round {turn + 1}: bare aiosmtplib loop, {messages} messages")
            started, bare_ids = asyncio.run(bare_loop(sink_port, messages))
            seen = wait_arrivals(arrived, bare_ids, 60)
            bare_rates.append(messages / (max(seen[i] for i in bare_ids) - started))

            log(f"[distribution] round {turn + 1}: {services} services, {clients} callers")
            cpu_before = {proc.pid: _cpu(proc.pid) for proc in procs}
            began = time.time()
            sent = asyncio.run(submit_all(ports, messages, clients, None))
            ids = set(sent.sent)
            seen = wait_arrivals(arrived, ids, 120)
            if os.environ.get("BENCH_CPU"):
                for proc in procs:
                    used = _cpu(proc.pid) - cpu_before[proc.pid]
                    log(
                        f"[distribution] pid {proc.pid} cpu {used * 1000 / messages:.2f} ms/message"
                    )
                accepted = max(sent.accepted.values()) - began
                log(f"[distribution] all accepted after {accepted:.3f} s")
            got = ids & seen.keys()
            gatehouse_rates.append(len(got) / (max(seen[i] for i in got) - began) if got else 0.0)
            raw = [line.rpartition(" ")[0] for line in arrived.read_text().splitlines()]
            duplicates += sum(1 for mid in raw if mid in ids) - len(got)
            lost += len(ids - got)
        bare_rate = statistics.median(bare_rates)
        gatehouse_rate = statistics.median(gatehouse_rates)

        log(f"[distribution] paced: {paced} messages at {rate:g}/s")
        paced_sent = asyncio.run(submit_all(ports, paced, clients, rate))
        paced_ids = set(paced_sent.sent)
        seen = wait_arrivals(arrived, paced_ids, 60)
        from_send = [(seen[i] - paced_sent.sent[i]) * 1000 for i in paced_ids if i in seen]
        from_accept = [
            max(0.0, seen[i] - paced_sent.accepted[i]) * 1000 for i in paced_ids if i in seen
        ]
        lost += len(paced_ids - seen.keys())

        code = None
        if code_sends:
            if postgres:
                user_db = cluster.url(cluster.create_database())
            else:
                user_db = f"sqlite+aiosqlite:///{root / 'users.db'}"
            code = code_phase(
                root, python, ports, procs, logs, arrived, user_db, code_sends, code_rate, clients
            )

        killed = None
        if services >= 2 and kill_messages:
            log(
                f"[distribution] kill -9 one service after {kill_messages // 2} of "
                f"{kill_messages} messages at {kill_rate:g}/s"
            )
            victim = started_services[-1]
            killed_at: list[float] = []

            def kill() -> None:
                os.killpg(victim.pid, signal.SIGKILL)
                killed_at.append(time.time())

            kill_sent = asyncio.run(submit_all(ports, kill_messages, clients, kill_rate, kill))
            kill_ids = set(kill_sent.sent)
            seen = wait_arrivals(arrived, kill_ids, LEASE * 4 + 30)
            raw = [line.rpartition(" ")[0] for line in arrived.read_text().splitlines()]
            arrived_ids = kill_ids & seen.keys()
            after = [seen[i] for i in arrived_ids if seen[i] > killed_at[0]]
            late = [
                seen[i] - kill_sent.accepted[i]
                for i in arrived_ids
                if kill_sent.accepted[i] < killed_at[0] and seen[i] > killed_at[0] + 1
            ]
            killed = Killed(
                messages=kill_messages,
                rate=kill_rate,
                lost=len(kill_ids - seen.keys()),
                duplicates=sum(1 for mid in raw if mid in kill_ids) - len(arrived_ids),
                waited_for_lease=len(late),
                last_after_kill=(max(after) - killed_at[0]) if after else 0.0,
            )
    finally:
        stop(procs)
        for cleanup in cleanups:
            cleanup()
        if keep:
            log(f"[distribution] kept {root}")
        else:
            import shutil

            shutil.rmtree(root, ignore_errors=True)
    result = Result(
        messages=messages,
        bare_rate=bare_rate,
        gatehouse_rate=gatehouse_rate,
        lost=lost,
        duplicates=duplicates,
        paced=paced,
        rate=rate,
        send_p50=statistics.median(from_send) if from_send else float("nan"),
        send_p99=percentile(from_send, 99),
        accept_p50=statistics.median(from_accept) if from_accept else float("nan"),
        accept_p99=percentile(from_accept, 99),
        load=" ".join(f"{x:.2f}" for x in os.getloadavg()),
        services=services,
        outbox="PostgreSQL" if postgres else "SQLite",
        killed=killed,
        code=code,
        bare_rates=bare_rates,
        gatehouse_rates=gatehouse_rates,
    )
    return result, render(result)


def render(r: Result) -> str:
    ratio_ok = "yes" if r.ratio >= GOAL_RATIO else "no"
    p99_ok = "yes" if r.send_p99 < GOAL_P99_MS else "no"
    return "\n".join(
        [
            f"{r.messages} messages a round to one local SMTP sink (aiosmtpd), {WORKERS} delivery "
            f"workers per service; load average at the end {r.load}.",
            "",
            f"Messages/s: the median of {len(r.bare_rates)} rounds, each sender in turn "
            "(every round's figure in brackets).",
            "",
            "| sender | messages/s | ratio | lost | duplicates |",
            "|---|---|---|---|---|",
            f"| bare aiosmtplib loop (one connection) | {r.bare_rate:,.0f} "
            f"({_rates(r.bare_rates)}) | 1.00x | 0 | 0 |",
            f"| {r.services} Distribution services ({r.outbox} outbox) | "
            f"{r.gatehouse_rate:,.0f} ({_rates(r.gatehouse_rates)}) | "
            f"{r.ratio:.2f}x (goal >= {GOAL_RATIO}x: {ratio_ok}) | {r.lost} | "
            f"{r.duplicates} |",
            "",
            f"Latency, {r.paced} messages at {r.rate:g}/s:",
            "",
            "| from | p50 | p99 |",
            "|---|---|---|",
            f"| submission sent to mail received | {r.send_p50:.1f} ms | {r.send_p99:.1f} ms "
            f"(goal < {GOAL_P99_MS:.0f} ms: {p99_ok}) |",
            f"| submission accepted to mail received | {r.accept_p50:.1f} ms | "
            f"{r.accept_p99:.1f} ms |",
            *code_rows(r.code),
            "",
            *code_note(r.code),
            *killed_lines(r.killed),
        ]
    )


def code_rows(c: CodeLatency | None) -> list[str]:
    if c is None:
        return []
    ok = "yes" if c.p99 < GOAL_P99_MS else "no"
    return [
        f"| 'send code' (CODE_SEND) to mail received | {c.p50:.1f} ms | {c.p99:.1f} ms "
        f"(goal < {GOAL_P99_MS:.0f} ms: {ok}) |",
        f"| 'send code' (CODE_SEND) answered accepted | {c.answer_p50:.1f} ms | "
        f"{c.answer_p99:.1f} ms |",
    ]


def code_note(c: CodeLatency | None) -> list[str]:
    if c is None:
        return []
    return [
        f"'send code': {c.sends} CODE_SEND calls (email_otp) at {c.rate:g}/s, each for another "
        f"user, to one Authentication service ({c.user_db} user DB) handing the codes to the "
        f"Distribution services, plaintext loopback; {c.failed} not accepted, {c.lost} mails "
        "missing (either counts as over the goal).",
        "",
    ]


def _rates(rates: list[float]) -> str:
    return ", ".join(f"{rate:,.0f}" for rate in rates)


def killed_lines(k: Killed | None) -> list[str]:
    if k is None:
        return []
    return [
        f"One service killed (-9) after half of {k.messages} messages sent at {k.rate:g}/s "
        f"(a caller whose service fails sends again to the other, same key; lease {LEASE:g} s):",
        "",
        "| messages | lost | duplicates | delivered after their lease | last mail after the kill |",
        "|---|---|---|---|---|",
        f"| {k.messages} | {k.lost} | {k.duplicates} | {k.waited_for_lease} | "
        f"{k.last_after_kill:.1f} s |",
        "",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--paced", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--services", type=int, default=2)
    parser.add_argument("--kill-messages", type=int, default=500, help="0: no kill phase")
    parser.add_argument("--rounds", type=int, default=3, help="bare loop and services in turn")
    parser.add_argument(
        "--code-sends", type=int, default=200, help="'send code' calls, one per user; 0: none"
    )
    parser.add_argument("--code-rate", type=float, default=20.0, help="'send code' calls/s")
    outbox = parser.add_mutually_exclusive_group()
    outbox.add_argument(
        "--postgres",
        action="store_true",
        default=None,
        help="a throwaway PostgreSQL outbox (the default when PostgreSQL is installed)",
    )
    outbox.add_argument(
        "--sqlite", dest="postgres", action="store_false", help="one SQLite outbox file"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    _, table = run(
        services=args.services,
        postgres=args.postgres,
        kill_messages=args.kill_messages,
        rounds=args.rounds,
        code_sends=args.code_sends,
        code_rate=args.code_rate,
        messages=args.messages,
        clients=args.clients,
        paced=args.paced,
        rate=args.rate,
        keep=args.keep,
    )
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
