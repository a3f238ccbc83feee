#!/usr/bin/env python3
"""TLS at the edge: the Access Point's public resource over TLS against nginx over TLS, with
the same certificate (ECDSA P-256, made for the run), the same backend (an nginx answering
100 bytes) and the same number of workers.

Two measurements per system and worker count, with wrk:

- keep-alive requests/s (``wrk -c C`` over HTTPS: handshakes only at the start);
- new TLS handshakes/s: every request with ``Connection: close``, so each one is a new TCP
  connection and a new TLS handshake (wrk resumes the session of the connection before,
  through ``SSL_clear``: TLS 1.3 resumption with a fresh X25519 exchange, no certificate).

nginx and the AP run side by side and wrk loads them in turns, in short blocks (nginx, AP,
AP, nginx, ...); each figure is the median of its system's blocks. On a shared machine whose
speed moves by 10-20 % from one minute to the next, one 10 s run of each, one after the
other, gave one-worker keep-alive ratios from 0.34x to 0.60x within a quarter of an hour.

With each rate, the CPU time per request of the system under test (supervisor and workers,
from /proc), of wrk and of the backend: on a machine where the three share the cores, the
rates follow the sum of those, so the CPU figures say where a difference comes from even
when the machine is busy.

    .venv/bin/python bench/tls_edge.py                 # 1 and 2 workers, 4 blocks of 5 s
    .venv/bin/python bench/run.py --only tls           # the same, as a step of make bench
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from paired import pair_interval, verdict
from signals import terminate_on_signals

DOCS = ("<!-- bench:tls:start -->", "<!-- bench:tls:end -->")
HEADING = "## Latest results: TLS on the Access Point"
GOAL_RPS = 0.6  # keep-alive requests/s >= 0.6 x nginx over TLS
GOAL_HANDSHAKES = 0.6  # new TLS handshakes/s >= 0.6 x nginx over TLS
ROUNDS = 4  # blocks per system, worker count and kind of load
BODY = "x" * 99 + "\n"
_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_COUNT = re.compile(r"(\d+) requests in")
_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate for ``localhost``/127.0.0.1 it signs: (ca, cert, key)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "ca.pem", directory / "server.crt", directory / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths[2].chmod(0o600)
    return paths


def _nginx_head(workdir: Path, workers: int) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (
        f"{user}worker_processes {workers};\nworker_rlimit_nofile 16384;\n"
        f"error_log {workdir}/error.log warn;\nevents {{ worker_connections 8192; }}\n"
        f"http {{\n    access_log off;\n    keepalive_requests 1000000;\n"
        f"    client_body_temp_path {workdir}/cb;\n    proxy_temp_path {workdir}/px;\n"
    )


def backend_conf(workdir: Path, port: int) -> str:
    return _nginx_head(workdir, 1) + (
        f"    server {{\n        listen 127.0.0.1:{port} reuseport;\n"
        f'        location / {{ default_type text/plain; return 200 "{BODY.rstrip()}\\n"; }}\n'
        "    }\n}\n"
    )


def nginx_tls_conf(
    workdir: Path, port: int, workers: int, backend: int, cert: Path, key: Path
) -> str:
    """nginx as the TLS-terminating reverse proxy: the comparison for the AP."""
    return _nginx_head(workdir, workers) + (
        f"    upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; "
        "keepalive_requests 1000000; }\n"
        f"    server {{\n        listen 127.0.0.1:{port} ssl reuseport;\n"
        f"        ssl_certificate {cert};\n        ssl_certificate_key {key};\n"
        "        ssl_protocols TLSv1.2 TLSv1.3;\n"
        "        location / {\n            proxy_pass http://backend;\n"
        "            proxy_http_version 1.1;\n"
        '            proxy_set_header Connection "";\n        }\n    }\n}\n'
    )


def nginx_proxy_conf(workdir: Path, port: int, workers: int, backend: int) -> str:
    """nginx as a plaintext reverse proxy, as bench/run.py runs it (512 idle backend
    connections per worker)."""
    return _nginx_head(workdir, workers) + (
        f"    upstream backend {{ server 127.0.0.1:{backend}; keepalive 512; "
        "keepalive_requests 1000000; }\n"
        f"    server {{\n        listen 127.0.0.1:{port} reuseport;\n"
        "        location / {\n            proxy_pass http://backend;\n"
        "            proxy_http_version 1.1;\n"
        '            proxy_set_header Connection "";\n        }\n    }\n}\n'
    )


def wrk_latency(url: str, connections: int, seconds: int) -> tuple[int, float, float]:
    """One plain ``wrk -t1 --latency`` run: requests, requests/s and p99 in ms."""
    out = subprocess.run(
        ["/usr/bin/wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    requests = re.search(r"(\d+) requests in", out)
    rps = _RPS.search(out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    if not (requests and rps and p99):
        raise SystemExit(f"bench: wrk output not understood:\n{out}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return int(requests.group(1)), float(rps.group(1)), float(p99.group(1)) * scale


@dataclass
class Proc:
    name: str
    port: int
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)


def spawn(
    name: str, argv: list[str], workdir: Path, port: int, env: dict[str, str] | None = None
) -> Proc:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            argv,
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    return Proc(name, port, popen, log)


def wait_https(proc: Proc, ca: Path, timeout: float = 20.0) -> None:
    """Until ``GET /`` over TLS answers 200 (the backend reached through the proxy)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise SystemExit(f"bench: {proc.name} exited:\n{proc.log.read_text()[-2000:]}")
        try:
            with (
                socket.create_connection(("127.0.0.1", proc.port), timeout=1) as raw,
                ctx.wrap_socket(raw, server_hostname="localhost") as sock,
            ):
                sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
            if data.startswith(b"HTTP/1.1 200"):
                return
            last = data[:40].decode(errors="replace")
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise SystemExit(f"bench: {proc.name} not ready over TLS ({last})")


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def start_nginx(name: str, conf: str, workdir: Path, port: int) -> Proc:
    (workdir / f"{name}.conf").write_text(conf)
    argv = [
        nginx_binary(),
        "-p",
        f"{workdir}/",
        "-e",
        str(workdir / "error.log"),
        "-c",
        str(workdir / f"{name}.conf"),
        "-g",
        f"daemon off; pid {workdir / (name + '.pid')};",
    ]
    return spawn(name, argv, workdir, port)


def start_access_point(
    python: str,
    workdir: Path,
    port: int,
    workers: int,
    backend: int,
    cert: Path | None = None,
    key: Path | None = None,
    name: str = "",
    env: dict[str, str] | None = None,
) -> Proc:
    """An AP with one public resource (everything under ``/``) to ``backend``; over TLS
    with ``cert`` and ``key``, plain HTTP without; ``env`` for its process (default: ours)."""
    settings: dict[str, object] = {"listen": f"127.0.0.1:{port}", "workers": workers}
    if cert is not None and key is not None:
        settings["tls"] = {"certificates": [{"cert_file": str(cert), "key_file": str(key)}]}
    config = {
        "access_point": settings,
        "resources": [
            {
                "id": "bench",
                "path_prefix": "/",
                "backends": [f"http://127.0.0.1:{backend}"],
                "public": True,
            }
        ],
    }
    name = name or f"ap-{workers}"
    path = workdir / f"{name}.yaml"
    path.write_text(json.dumps(config, indent=2))
    return spawn(
        name,
        [python, "-m", "gatehouse", "access-point", "--config", str(path)],
        workdir,
        port,
        env,
    )


def session_cpu(proc: Proc) -> float:
    """CPU seconds (user + system) of the processes in ``proc``'s session: nginx's master
    and workers, the AP's supervisor and workers (each started in a session of its own)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[3]) == proc.popen.pid:
            total += int(fields[11]) + int(fields[12])
    return total / _TICKS


@dataclass
class Measure:
    rps: float = 0.0
    errors: int = 0
    command: str = ""
    #: CPU microseconds per request: the system under test, wrk, the backend (0: not measured).
    server_us: float = 0.0
    client_us: float = 0.0
    backend_us: float = 0.0
    requests: int = 0
    #: Over several blocks (:func:`combine`): the lowest and highest block's rate, and every
    #: block's rate in the order they ran.
    low: float = 0.0
    high: float = 0.0
    blocks: list[float] = field(default_factory=list)


@dataclass
class TLSRow:
    system: str
    workers: int
    keepalive: Measure = field(default_factory=Measure)
    handshakes: Measure = field(default_factory=Measure)


def wrk(
    binary: str,
    url: str,
    threads: int,
    connections: int,
    duration: int,
    close: bool,
    server: Proc | None = None,
    backend: Proc | None = None,
) -> Measure:
    """One wrk run; with ``server`` and ``backend``, their CPU time per request and wrk's."""
    argv = [binary, f"-t{threads}", f"-c{connections}", f"-d{duration}s"]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append(url)
    cpu_before = [session_cpu(p) for p in (server, backend) if p is not None]
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30, check=False)
    waited = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_after = [session_cpu(p) for p in (server, backend) if p is not None]
    found = _RPS.search(proc.stdout)
    if proc.returncode != 0 or not found:
        raise SystemExit(f"bench: wrk failed: {shlex.join(argv)}\n{proc.stdout}{proc.stderr}")
    errors = 0
    if m := _NON2XX.search(proc.stdout):
        errors += int(m.group(1))
    if m := _ERRORS.search(proc.stdout):
        # With Connection: close, wrk counts the server's close after the answer as a read
        # "error" on some versions; only connect errors and timeouts are failures here.
        errors += int(m.group(1)) + int(m.group(4))
    measure = Measure(float(found.group(1)), errors, shlex.join(argv))
    count = _COUNT.search(proc.stdout)
    measure.requests = int(count.group(1)) if count else 0
    if count and int(count.group(1)) and len(cpu_after) == 2:
        per = 1e6 / int(count.group(1))
        measure.server_us = (cpu_after[0] - cpu_before[0]) * per
        measure.backend_us = (cpu_after[1] - cpu_before[1]) * per
        used = waited.ru_utime + waited.ru_stime - children.ru_utime - children.ru_stime
        measure.client_us = used * per
    return measure


def combine(blocks: list[Measure]) -> Measure:
    """One side's blocks as one measure: the median rate, every error, CPU per request over
    all the blocks' requests."""
    total = sum(b.requests for b in blocks)
    out = Measure(statistics.median(b.rps for b in blocks), sum(b.errors for b in blocks))
    out.command = blocks[0].command if blocks else ""
    out.requests = total
    out.low = min((b.rps for b in blocks), default=0.0)
    out.high = max((b.rps for b in blocks), default=0.0)
    out.blocks = [b.rps for b in blocks]
    if total:
        for name in ("server_us", "client_us", "backend_us"):
            setattr(out, name, sum(getattr(b, name) * b.requests for b in blocks) / total)
    return out


def run(
    workers: tuple[int, ...] = (1, 2),
    duration: int = 10,
    connections: int = 50,
    threads: int = 2,
    warmup: int = 2,
    python: str = sys.executable,
    wrk_binary: str = "/usr/bin/wrk",
    rounds: int = ROUNDS,
) -> tuple[list[TLSRow], str]:
    """The measurements and their markdown table.

    For each worker count nginx and the AP run side by side and wrk loads them in turns, in
    blocks of ``duration`` / 2 seconds (nginx, AP, AP, nginx, ...), ``rounds`` blocks each
    for keep-alive and as many for new handshakes: the machine's other load falls on both
    alike, where one run after the other could catch one of them in a slow minute."""
    rows: list[TLSRow] = []
    block = max(1, duration // 2)
    with tempfile.TemporaryDirectory(prefix="gatehouse-tls-bench-") as tmp:
        workdir = Path(tmp)
        ca, cert, key = make_certificate(workdir)
        backend_port = free_port()
        backend = start_nginx("backend", backend_conf(workdir, backend_port), workdir, backend_port)
        started = [backend]
        try:
            for count in workers:
                procs: dict[str, Proc] = {}
                for system in ("nginx", "ap"):
                    port = free_port()
                    if system == "nginx":
                        conf = nginx_tls_conf(workdir, port, count, backend_port, cert, key)
                        proc = start_nginx(f"nginx-tls-{count}", conf, workdir, port)
                    else:
                        proc = start_access_point(
                            python, workdir, port, count, backend_port, cert, key
                        )
                    started.append(proc)
                    wait_https(proc, ca)
                    procs[system] = proc
                print(f"[tls] nginx and the AP, {count} worker(s), in turns", file=sys.stderr)
                blocks: dict[tuple[str, bool], list[Measure]] = {}
                urls = {system: f"https://127.0.0.1:{p.port}/" for system, p in procs.items()}
                for close in (False, True):
                    for url in urls.values():
                        wrk(wrk_binary, url, threads, connections, warmup, close=close)
                    for round_ in range(rounds):
                        order = ("nginx", "ap") if round_ % 2 == 0 else ("ap", "nginx")
                        for system in order:
                            measure = wrk(
                                wrk_binary,
                                urls[system],
                                threads,
                                connections,
                                block,
                                close,
                                procs[system],
                                backend,
                            )
                            blocks.setdefault((system, close), []).append(measure)
                for system, proc in procs.items():
                    row = TLSRow("nginx" if system == "nginx" else "Gatehouse AP", count)
                    row.keepalive = combine(blocks[system, False])
                    row.handshakes = combine(blocks[system, True])
                    print(
                        f"  {row.system}: keep-alive {row.keepalive.rps:.0f} req/s, "
                        f"new handshakes {row.handshakes.rps:.0f}/s",
                        file=sys.stderr,
                    )
                    rows.append(row)
                    proc.stop()
                    started.remove(proc)
        finally:
            for proc in started:
                proc.stop()
    return rows, render(rows, block, rounds, connections, threads)


def _spread(m: Measure) -> str:
    return f"({m.low:,.0f} to {m.high:,.0f})" if m.high else ""


def _against(ap: Measure, nginx: Measure, goal: float) -> tuple[str, str]:
    """The AP's ratio to nginx (medians), and its interval and verdict against ``goal``."""
    if not nginx.rps:
        return "n/a", "n/a"
    ratio = ap.rps / nginx.rps
    bounds = pair_interval(nginx.blocks, ap.blocks)
    interval = "" if bounds is None else f"{bounds[0]:.2f} to {bounds[1]:.2f}: "
    return f"{ratio:.2f}", interval + verdict(ratio, goal, bounds)


def render(rows: list[TLSRow], block: int, rounds: int, connections: int, threads: int) -> str:
    nginx = {r.workers: r for r in rows if r.system == "nginx"}
    lines = [
        f"**TLS on the Access Point** (the public resource over HTTPS; nginx over HTTPS with the "
        f"same ECDSA P-256 certificate, the same backend and workers, both running; wrk "
        f"-t{threads} -c{connections} loads them in turns, {rounds} blocks of {block} s each "
        f"per system (nginx, AP, AP, nginx, ...), medians of the blocks, the lowest and "
        f"highest block in brackets; new handshakes: every request with "
        f"`Connection: close`, a new TCP connection and a new handshake, which wrk resumes "
        f"from the connection before; goals: AP at least "
        f"{GOAL_RPS}x nginx for both)",
        "",
        "| system | workers | keep-alive req/s | x nginx | 95 % interval: goal "
        "| new handshakes/s | x nginx | 95 % interval: goal | errors |",
        "|---|---:|---:|---:|---|---:|---:|---|---:|",
    ]
    for r in rows:
        base = nginx.get(r.workers)
        ka = hs = ("—", "—")
        if base is not None and r.system != "nginx":
            ka = _against(r.keepalive, base.keepalive, GOAL_RPS)
            hs = _against(r.handshakes, base.handshakes, GOAL_HANDSHAKES)
        lines.append(
            f"| {r.system} | {r.workers} | {r.keepalive.rps:,.0f} {_spread(r.keepalive)} "
            f"| {ka[0]} | {ka[1]} | {r.handshakes.rps:,.0f} {_spread(r.handshakes)} "
            f"| {hs[0]} | {hs[1]} | {r.keepalive.errors + r.handshakes.errors} |"
        )
    lines += [
        "",
        "95 % interval: of the mean ratio of the pairs of blocks (each AP block over the nginx "
        "block that ran next to it; Student's t), and the goal's verdict: where the interval "
        "holds values on both sides of the goal, this run cannot tell whether it is met, "
        "whatever the medians say.",
        "",
        "**CPU time per request** (µs, user + system, from /proc and wrk's rusage; the system "
        "under test counts its supervisor and every worker; all three share the machine's "
        "cores, so the rate follows their sum once the cores are busy)",
        "",
        "| system | workers | keep-alive: server | wrk | backend | sum "
        "| new handshake: server | wrk | backend | sum |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cells = []
        for m in (r.keepalive, r.handshakes):
            total = m.server_us + m.client_us + m.backend_us
            cells += [f"{v:,.1f}" for v in (m.server_us, m.client_us, m.backend_us, total)]
        lines.append(f"| {r.system} | {r.workers} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration", type=int, default=10, help="twice the seconds of a block (10: 5 s blocks)"
    )
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="blocks per system and load")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--wrk", default=shutil.which("wrk") or "/usr/bin/wrk")
    args = parser.parse_args()
    with terminate_on_signals():
        _, table = run(
            tuple(int(w) for w in args.workers.split(",")),
            args.duration,
            args.connections,
            args.threads,
            wrk_binary=args.wrk,
            rounds=args.rounds,
        )
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
