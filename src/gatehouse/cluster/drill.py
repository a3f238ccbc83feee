"""Tools to drive a cluster in a drill: a topology on free ports, and a small keep-alive
HTTP/1.1 client that signs in through the portal the way a browser does.

The chaos tests (``tests/chaos``) and the failover benchmark (``bench/failover.py``) use them
against ``gatehouse cluster``; the client reads answers with a ``Content-Length`` only, which
is what the Access Point and the demo backend send.
"""

from __future__ import annotations

import asyncio
import re
import socket
import urllib.parse
from pathlib import Path
from typing import Any

import yaml

from gatehouse.cluster.topology_patroni import quiet_free_ports
from gatehouse.errors import GatehouseError

LOGIN = "/_gatehouse/login"
_CSRF = re.compile(rb'name="csrf" value="([^"]+)"')


class DrillError(GatehouseError):
    """A sign-in through the portal did not end in a session cookie."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def on_free_ports(source: Path, destination: Path) -> Path:
    """Write ``source`` (a topology on loopback, like examples/ha-cluster.yaml) to
    ``destination`` with every port replaced by a free one; return ``destination``."""
    data: dict[str, Any] = yaml.safe_load(source.read_text())

    # Free now, distinct, and outside the kernel's ephemeral range: a cluster's start makes
    # many outgoing connections (etcd's peers, Patroni, PostgreSQL clients), and any of them
    # could take a port from that range as its local port before its listener binds it.
    pool = iter(quiet_free_ports(64))

    def port() -> int:
        return next(pool)

    def free() -> str:
        return f"127.0.0.1:{port()}"

    data["administration"]["listen"] = free()
    if data["administration"].get("metrics_listen"):
        data["administration"]["metrics_listen"] = free()
    sections = ("access_points", "policy_services", "authentication_services")
    for section in (*sections, "distribution_services"):
        for service in data.get(section) or []:
            service["listen"] = free()
            if service.get("status_listen"):
                service["status_listen"] = free()
            if service.get("metrics_listen"):
                service["metrics_listen"] = free()
    data["load_balancer"]["listen"] = free()
    if data["load_balancer"].get("stats"):
        data["load_balancer"]["stats"] = free()
    data["databases"]["local"] = {
        "primary_port": port(),
        "standby_port": port(),
        "rest_ports": [port(), port()],  # Patroni's REST API
    }
    data["databases"]["etcd"] = [
        {"name": f"etcd{i}", "client_port": port(), "peer_port": port()} for i in (1, 2, 3)
    ]
    if data.get("demo_backend"):
        data["demo_backend"]["listen"] = free()
        if data["demo_backend"].get("smtp"):
            data["demo_backend"]["smtp"] = free()
    destination.write_text(yaml.safe_dump(data, sort_keys=False))
    return destination


def get_request(path: str, authority: str, cookie: str = "") -> bytes:
    """A GET request's bytes, with a ``Cookie`` field when ``cookie`` is given."""
    extra = f"Cookie: {cookie}\r\n" if cookie else ""
    return f"GET {path} HTTP/1.1\r\nHost: {authority}\r\n{extra}\r\n".encode()


class Connection:
    """One keep-alive connection, opened on the first request and again after a close."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        #: An answer has been read on the current connection (it is being reused).
        self.used = False

    def close(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
        self.reader = self.writer = None

    async def request(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        """Send one request; the status, headers (lower-case names; several ``Set-Cookie``
        fields are joined by newlines) and body."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.used = False
        assert self.reader is not None
        self.writer.write(raw)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        self.used = True
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                name, value = name.strip().lower(), value.strip()
                if name == "set-cookie" and name in headers:
                    value = headers[name] + "\n" + value  # one line per cookie set
                headers[name] = value
        length = int(headers.get("content-length", "0"))
        body = await self.reader.readexactly(length) if length else b""
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, body


async def login(host: str, port: int, username: str, password: str, rd: str = "/") -> str:
    """Sign in through the portal (GET the form, POST it); the ``Cookie`` value to send.

    Raises:
        DrillError: no form, or no session cookie at the end.
        OSError, asyncio.IncompleteReadError: the connection failed.
    """
    conn = Connection(host, port)
    try:
        authority = f"{host}:{port}"
        query = urllib.parse.quote(rd, safe="")
        status, headers, body = await conn.request(get_request(f"{LOGIN}?rd={query}", authority))
        if status != 200:
            raise DrillError(f"login page: HTTP {status}")
        match = _CSRF.search(body)
        if match is None:
            raise DrillError("login page without a CSRF token")
        csrf_cookie = cookie_header(headers.get("set-cookie", ""))
        form = urllib.parse.urlencode(
            {"username": username, "password": password, "csrf": match.group(1), "rd": rd}
        ).encode()
        raw = (
            f"POST {LOGIN} HTTP/1.1\r\nHost: {authority}\r\nCookie: {csrf_cookie}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(form)}\r\n\r\n"
        ).encode() + form
        status, headers, _ = await conn.request(raw)
        if status != 303 or "set-cookie" not in headers:
            raise DrillError(f"login: HTTP {status}, no session cookie")
        # As a browser would: every cookie set (the session's, a trusted device's).
        return cookie_header(headers["set-cookie"])
    finally:
        conn.close()


def cookie_header(set_cookies: str) -> str:
    """The ``Cookie`` value for the cookies of newline-joined ``Set-Cookie`` values, leaving
    out those they delete (empty, or ``Max-Age=0``)."""
    pairs = []
    for line in set_cookies.splitlines():
        pair, _, attributes = line.partition(";")
        name, _, value = pair.strip().partition("=")
        if name and value and "max-age=0" not in attributes.lower().replace(" ", ""):
            pairs.append(f"{name}={value}")
    return "; ".join(pairs)
