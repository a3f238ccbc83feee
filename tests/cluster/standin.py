"""A stand-in Access Point for load balancer tests: a tiny HTTP/1.1 server in its own process.

It answers ``GET /_gatehouse/health`` with 200, and every other request with 200 naming
itself (``X-Served-By``) and echoing the request's header lines as the body. It prints one
line per request it received (``METHOD TARGET``), so a test can count what reached it. With
``--drop`` it reads each non-health request and closes the connection without answering (an
AP that fails after the request was sent). Being a real process, a test kills it with
SIGKILL, as a crash would.

    python -m tests.cluster.standin --name ap1 --port 8081 [--drop]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.processes import wait_port

HEALTH = b"/_gatehouse/health"
ROOT = Path(__file__).resolve().parents[2]


async def _handle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: bytes, drop: bool
) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            lines = head.split(b"\r\n")
            method, target, _ = lines[0].split(b" ", 2)
            headers = {}
            for line in lines[1:]:
                if b":" in line:
                    key, value = line.split(b":", 1)
                    headers[key.strip().lower()] = value.strip()
            length = int(headers.get(b"content-length", b"0"))
            if length:
                await reader.readexactly(length)
            if target == HEALTH:
                body = b'{"status":"ok"}'
            else:
                sys.stdout.write(f"{method.decode()} {target.decode()}\n")
                sys.stdout.flush()
                if drop:
                    return
                body = name + b" " + method + b" " + target + b"\n" + b"\r\n".join(lines[1:])
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Served-By: "
                + name
                + b"\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + (b"" if method == b"HEAD" else body)
            )
            await writer.drain()
            if headers.get(b"connection", b"").lower() == b"close":
                return
    except (ConnectionError, ValueError):
        return
    finally:
        writer.close()


async def _serve(name: str, port: int, drop: bool) -> None:
    server = await asyncio.start_server(
        lambda r, w: _handle(r, w, name.encode(), drop), "127.0.0.1", port, reuse_address=True
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--drop", action="store_true")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    asyncio.run(_serve(args.name, args.port, args.drop))


class StandIn:
    """A running stand-in, from the test's side."""

    def __init__(self, name: str, port: int, log: Path, drop: bool = False) -> None:
        self.name = name
        self.port = port
        self.log = log
        self.drop = drop
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> StandIn:
        argv = [sys.executable, "-m", "tests.cluster.standin", "--name", self.name]
        argv += ["--port", str(self.port), *(["--drop"] if self.drop else [])]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_port("127.0.0.1", self.port, 10.0, self.proc)
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash: the kernel closes its sockets, nothing is answered."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def received(self) -> list[str]:
        """``METHOD TARGET`` of every non-health request it has read, over all its runs."""
        return self.log.read_text().splitlines() if self.log.exists() else []


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
