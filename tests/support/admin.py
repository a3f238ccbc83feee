"""``gatehouse administration`` as a real process on loopback, for tests of the services that
follow it (config agent, Access Point, Policy and Authentication services, ``gatehouse up``)."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gatehouse.administration.credentials import load_ca, operator_context
from gatehouse.internal.client import FailoverClient
from gatehouse.trust.identity import ADMINISTRATION, Identity
from gatehouse.trust.tls import ClientTLS, Credentials, write_credentials
from tests.support.processes import Service as Process
from tests.support.processes import free_port, write_config

#: The service id a join token names by default, per role.
DEFAULT_IDS = {"access_point": "ap1", "policy": "ps1", "authentication": "auth1"}


class RealAdmin:
    """``gatehouse administration`` as a process on loopback, driven through its API over
    HTTPS with the admin token it writes under its home and the operator's certificate.

    ``settings``: more of its ``administration:`` settings (``certificate_lifetime``)."""

    def __init__(self, directory: Path, **settings: Any) -> None:
        directory.mkdir()
        self.directory = directory
        self.port = free_port()
        listen = {"administration": {"listen": f"127.0.0.1:{self.port}", **settings}}
        self.config = write_config(directory / "administration.yaml", listen)
        self.home = directory / "home"
        self.process: Process | None = None
        self.token = ""

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> RealAdmin:
        args = ["administration", "--config", str(self.config), "--home", str(self.home)]
        log = self.directory / "admin.log"
        self.process = Process(args, log, "127.0.0.1", self.port).wait_ready()
        self.token = (self.home / "admin.token").read_text().split()[0]
        return self

    def kill(self) -> None:
        """SIGKILL: no answer is finished, no connection closed politely."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.proc.wait(5)
            self.process.stop()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def client(
        self, context: ssl.SSLContext | None = None, bearer_token: str | None = None
    ) -> FailoverClient:
        """A client of this Admin, with the operator's TLS context unless ``context`` is given.

        One endpoint, and no failover to speed up: the connection (its TLS handshake
        included, slow on a loaded CI machine just after the Admin started) may take 5 s,
        not the failover default of 0.5 s."""
        tls = ClientTLS(context or operator_context(self.home), frozenset({ADMINISTRATION}))
        return FailoverClient(
            [self.url], bearer_token=bearer_token, connect_timeout=5.0, timeout=10.0, tls=tls
        )

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.client(bearer_token=self.token) as client:
            response = await client.call(method, path, body, retry_safe=method == "GET")
        assert response.status == 200, f"{method} {path}: {response.status} {response.body!r}"
        return response.json()

    async def join_token(
        self, role: str = "access_point", service_id: str | None = None, replace: bool = False
    ) -> str:
        """A join token for ``service_id`` (default: ap1, ps1 or auth1 by ``role``)."""
        body = {
            "role": role,
            "service_id": service_id or DEFAULT_IDS[role],
            "ttl": 600,
            "replace": replace,
        }
        answer = await self.call("POST", "/api/v1/join-tokens", body)
        return str(answer["token"])

    def client_context(self, role: str, service_id: str) -> ssl.SSLContext:
        """A client TLS context with a certificate of ``role`` from this Admin's CA, to call
        an enrolled service's mutual-TLS listener as one of its callers would."""
        directory = self.directory / "callers" / f"{role}-{service_id}"
        ca = load_ca(self.home)
        key, cert = ca.issue_key_pair(Identity(role, service_id))
        write_credentials(directory, ca.certificate_pem, cert, key)
        return Credentials(directory).client

    async def revoke(self, service_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self.call(
            "POST", f"/api/v1/services/{service_id}/revoke", {}
        )
        return answer

    async def publish(self, config: dict[str, Any]) -> int:
        await self.call("PUT", "/api/v1/draft", {"text": yaml.safe_dump(config)})
        return int((await self.call("POST", "/api/v1/publish", {"comment": "test"}))["version"])

    async def service(self, service_id: str = "ap1") -> dict[str, Any]:
        rows = await self.call("GET", "/api/v1/services")
        return next(row for row in rows if row["id"] == service_id)

    async def reported(
        self, version: int, error: str | None = None, service_id: str = "ap1"
    ) -> dict[str, Any]:
        """Wait until Admin's services table says ``service_id`` runs ``version`` with
        ``error`` (a part of the error text) as its latest report; return the row."""
        deadline = time.monotonic() + 5.0
        while True:
            row = await self.service(service_id)
            found = row["last_error"]
            if row["running_version"] == version and (
                found is None if error is None else found is not None and error in found
            ):
                return row
            if time.monotonic() > deadline:
                raise AssertionError(f"Admin reports {row}, not version {version} / {error!r}")
            await asyncio.sleep(0.02)


@pytest.fixture
def real_admin(tmp_path: Path) -> Iterator[RealAdmin]:
    admin = RealAdmin(tmp_path / "admin").start()
    try:
        yield admin
    finally:
        admin.stop()
