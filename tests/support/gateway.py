"""A whole single-node gateway for end-to-end tests: Authentication, Policy, Access Point(s)
and the demo backend as real processes on loopback, plus a small cookie-keeping browser."""

from __future__ import annotations

import http.client
import json
import re
import ssl
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatehouse.trust.ca import CertificateAuthority
from gatehouse.trust.identity import Identity
from gatehouse.trust.tls import write_credentials
from tests.support.processes import GATEHOUSE, Service, free_port, write_config

LOGIN = "/_gatehouse/login"


def gatehouse_cli(
    home: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GATEHOUSE, *args, "--home", str(home)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def add_user(home: Path, name: str, password: str, groups: tuple[str, ...] = ()) -> None:
    for group in groups:
        gatehouse_cli(home, "groups", "add", group)  # may exist already
    args = ["users", "add", name, "--password-stdin"]
    for group in groups:
        args += ["--group", group]
    result = gatehouse_cli(home, *args, stdin=password + "\n")
    assert result.returncode == 0, result.stderr


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    set_cookies: list[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def location(self) -> str:
        return self.headers.get("location", "")


@dataclass
class Browser:
    """Keeps cookies per name (no domain logic: everything is on one loopback host)."""

    host: str
    port: int
    cookies: dict[str, str] = field(default_factory=dict)
    cookie_attributes: dict[str, str] = field(default_factory=dict)
    #: Connect from this loopback address (to play a trusted load balancer, say).
    source: str | None = None
    #: Speak HTTPS, verifying the server with this context (``host`` is the name checked).
    tls: ssl.SSLContext | None = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        port: int | None = None,
    ) -> Response:
        source = (self.source, 0) if self.source else None
        conn = (
            http.client.HTTPSConnection(
                self.host, port or self.port, timeout=10, source_address=source, context=self.tls
            )
            if self.tls is not None
            else http.client.HTTPConnection(
                self.host, port or self.port, timeout=10, source_address=source
            )
        )
        try:
            sent = dict(headers or {})
            if self.cookies:
                sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            conn.request(method, path, body, sent)
            raw = conn.getresponse()
            data = raw.read()
            set_cookies = raw.headers.get_all("Set-Cookie") or []
            response = Response(
                raw.status, {k.lower(): v for k, v in raw.getheaders()}, set_cookies, data
            )
        finally:
            conn.close()
        for cookie in set_cookies:
            pair, _, attributes = cookie.partition(";")
            name, _, value = pair.strip().partition("=")
            self.cookie_attributes[name] = attributes
            if value and "max-age=0" not in attributes.lower():
                self.cookies[name] = value
            else:
                self.cookies.pop(name, None)
        return response

    def get(self, path: str, **kwargs: Any) -> Response:
        return self.request("GET", path, **kwargs)

    def login(
        self, username: str, password: str, rd: str = "/", port: int | None = None
    ) -> Response:
        page = self.get(f"{LOGIN}?rd={urllib.parse.quote(rd, safe='')}", port=port)
        assert page.status == 200, page.body[:300]
        token = csrf_token(page.body)
        form = urllib.parse.urlencode(
            {"username": username, "password": password, "csrf": token, "rd": rd}
        ).encode()
        return self.request(
            "POST",
            LOGIN,
            form,
            {"Content-Type": "application/x-www-form-urlencoded"},
            port=port,
        )


def csrf_token(page: bytes) -> str:
    match = re.search(rb'name="csrf" value="([^"]+)"', page)
    assert match, page[:500]
    return match.group(1).decode()


@dataclass
class Gateway:
    home: Path
    auth: Service
    policy: Service
    backend: Service
    aps: list[Service]
    ap_configs: list[Path]

    @property
    def ap(self) -> Service:
        return self.aps[0]

    def browser(self, ap: int = 0) -> Browser:
        return Browser("127.0.0.1", self.aps[ap].port)

    def stop(self) -> None:
        for svc in [*self.aps, self.policy, self.auth, self.backend]:
            svc.stop()


def start_gateway(
    tmp: Path,
    rules: dict[str, Any],
    resources: list[dict[str, Any]],
    *,
    aps: int = 1,
    policy_extra: dict[str, Any] | None = None,
    sessions: dict[str, Any] | None = None,
    auth_extra: dict[str, Any] | None = None,
    ap_settings: dict[str, Any] | None = None,
    internal_tls: CertificateAuthority | None = None,
    ap_ports: list[int] | None = None,
    more_authentication: list[str] | None = None,
) -> Gateway:
    """Start Auth, Policy, ``aps`` Access Points and the demo backend on free ports.

    ``rules`` is the Policy config's ``resources`` mapping (resource id → rule) plus optional
    ``rules``/``global_rule``/``identity_assertion``/``oauth`` keys; ``resources`` are the AP's
    resources (``backends`` filled in with the demo backend when absent). With ``internal_tls`` (a
    CA), every internal link is mutual TLS with certificates from it (``--tls DIR``).
    ``ap_ports``: the Access Points' ports, when a setting must name them (else free ones).
    ``more_authentication``: URLs of more Authentication services (started by the caller) the
    Policy service knows after the gateway's own.
    """
    home = tmp / "home"
    home.mkdir(exist_ok=True)

    def tls_args(role: str, service_id: str) -> list[str]:
        if internal_tls is None:
            return []
        directory = tmp / "tls" / service_id
        key, cert = internal_tls.issue_key_pair(Identity(role, service_id))
        write_credentials(directory, internal_tls.certificate_pem, cert, key)
        return ["--tls", str(directory)]

    backend_port, auth_port, policy_port = free_port(), free_port(), free_port()
    backend = Service(
        ["demo-backend", "--listen", f"127.0.0.1:{backend_port}"],
        tmp / "backend.log",
        "127.0.0.1",
        backend_port,
    )
    auth_cfg = write_config(
        tmp / "auth.yaml",
        {"authentication": {"listen": f"127.0.0.1:{auth_port}", **(auth_extra or {})}},
    )
    auth = Service(
        [
            "authentication",
            *("--config", str(auth_cfg), "--home", str(home)),
            *tls_args("authentication", "auth1"),
        ],
        tmp / "auth.log",
        "127.0.0.1",
        auth_port,
    )
    policy_doc: dict[str, Any] = {
        "policy": {
            "listen": f"127.0.0.1:{policy_port}",
            "authentication": [f"http://127.0.0.1:{auth_port}", *(more_authentication or [])],
            # Plaintext on loopback: the APs' forwarded fields are believed by address (over
            # mutual TLS an AP's are believed because of its certificate).
            "trusted_proxies": ["127.0.0.0/8"],
            **(policy_extra or {}),
        },
        **{
            k: v
            for k, v in rules.items()
            if k in ("rules", "global_rule", "identity_assertion", "oauth")
        },
        "resources": rules.get("resources", {}),
    }
    if sessions:
        policy_doc["sessions"] = sessions
    policy_cfg = write_config(tmp / "policy.yaml", policy_doc)
    policy = Service(
        [
            "policy",
            *("--config", str(policy_cfg), "--home", str(home)),
            *tls_args("policy", "ps1"),
        ],
        tmp / "policy.log",
        "127.0.0.1",
        policy_port,
    )
    ap_resources = [{"backends": [f"http://127.0.0.1:{backend_port}"], **r} for r in resources]
    started_aps: list[Service] = []
    configs: list[Path] = []
    for i in range(aps):
        port, status_port = (ap_ports[i] if ap_ports else free_port()), free_port()
        cfg = write_config(
            tmp / f"ap{i + 1}.yaml",
            {
                "access_point": {
                    "id": f"ap{i + 1}",
                    "listen": f"127.0.0.1:{port}",
                    # The details (version, Policy routing): tests.support.ap_status.
                    "status_listen": f"127.0.0.1:{status_port}",
                    "policy_services": [f"http://127.0.0.1:{policy_port}"],
                    **(ap_settings or {}),
                },
                "resources": ap_resources,
            },
        )
        configs.append(cfg)
        ap = Service(
            ["access-point", "--config", str(cfg), *tls_args("access_point", f"ap{i + 1}")],
            tmp / f"ap{i + 1}.log",
            "127.0.0.1",
            port,
        )
        ap.status_port = status_port  # type: ignore[attr-defined]
        started_aps.append(ap)
    gateway = Gateway(home, auth, policy, backend, started_aps, configs)
    try:
        for svc in [backend, auth, policy, *started_aps]:
            svc.wait_ready(30)
        wait_events(gateway)
    except BaseException:
        gateway.stop()
        raise
    return gateway


def wait_events(gateway: Gateway, timeout: float = 10.0) -> None:
    """Wait until every AP answers its (public) health check, then a moment for it to follow
    the Policy event stream (its decision cache is live)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ok = 0
        for ap in gateway.aps:
            conn = http.client.HTTPConnection(ap.host, ap.port, timeout=2)
            try:
                conn.request("GET", "/_gatehouse/health")
                body = conn.getresponse().read()
                if b'"ok"' in body:
                    ok += 1
            except OSError:
                pass
            finally:
                conn.close()
        if ok == len(gateway.aps):
            time.sleep(0.3)  # the event stream's hello
            return
        time.sleep(0.1)
    raise TimeoutError("access points not ready")


def echoed_headers(response: Response) -> dict[str, str]:
    """The headers the demo backend received, lowercase names."""
    return dict(response.json()["headers"])


__all__ = ["Browser", "Gateway", "add_user", "echoed_headers", "start_gateway", "sys"]
