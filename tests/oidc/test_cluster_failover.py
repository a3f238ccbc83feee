"""The OpenID Provider in the HA cluster (``gatehouse cluster up``: a PostgreSQL primary and
its synchronous standby, Admin, two Authentication, two Policy services, two Access Points
behind HAProxy). The issuer is HAProxy's URL (published with ``gatehouse config``), a client
is registered with ``gatehouse oauth clients add``. A code is issued while only auth1 runs;
auth2 is started, auth1 is killed (SIGKILL) before the code is exchanged, and Authlib's client
exchanges it through HAProxy: auth2 serves it. Then ``gatehouse cluster failover-db`` kills the
PostgreSQL primary and promotes its synchronous standby, and a refresh keeps working."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest
import yaml
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
from joserfc import jwt
from joserfc.jwk import KeySet

from gatehouse.cluster.haproxy import find_haproxy
from gatehouse.cluster.runner import Cluster
from tests.oidc.support import PASSWORD, Callback, P, sign_in
from tests.support.cluster import cluster_home, free_topology
from tests.support.gateway import Browser, add_user, gatehouse_cli
from tests.support.postgres import missing, require_bindir
from tests.support.processes import GATEHOUSE

CLIENT = "ha-rp"


def cluster_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GATEHOUSE, "cluster", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def publish_issuer(home: Path, issuer: str) -> None:
    document = yaml.safe_load(ok(gatehouse_cli(home, "config", "export")))
    document["oauth"] = {**(document.get("oauth") or {}), "issuer": issuer}
    path = home.parent / "with-issuer.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    ok(gatehouse_cli(home, "config", "apply", str(path)))
    ok(gatehouse_cli(home, "config", "publish", "--comment", "the issuer is HAProxy's URL"))


async def retried(call: Any, what: str, seconds: float) -> Any:
    """``call()`` until it stops answering temporarily_unavailable (no service reached: the
    request was not presented) or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await call()
        except OAuthError as exc:
            if exc.error != "temporarily_unavailable" or time.monotonic() > deadline:
                raise AssertionError(f"{what}: {exc.error} {exc.description}") from exc
        await asyncio.sleep(0.5)


async def flow(home: Path, cluster: Cluster, issuer: str, secret: str, callback: Callback) -> None:
    host, _, port = cluster.url.removeprefix("http://").rstrip("/").rpartition(":")
    browser = Browser(host, int(port))
    target = SimpleNamespace(issuer=issuer, redirect_uri=callback.redirect_uri)
    async with AsyncOAuth2Client(
        client_id=CLIENT,
        client_secret=secret,
        scope="openid profile offline_access",
        redirect_uri=callback.redirect_uri,
        code_challenge_method="S256",
        timeout=15,
    ) as client:
        meta: dict[str, Any] = (
            await client.request(
                "GET", f"{issuer}/.well-known/openid-configuration", withhold_token=True
            )
        ).json()
        assert meta["issuer"] == issuer
        probe = f"{P}oauth2/authorize?" + urlencode(
            {"response_type": "code", "client_id": CLIENT, "redirect_uri": callback.redirect_uri}
        )
        deadline = time.monotonic() + 30
        while browser.get(probe).status in (400, 503):
            assert time.monotonic() < deadline, "the client never worked in the cluster"
            await asyncio.sleep(0.5)

        # Only auth1 runs: it issues the code.
        ok(cluster_cli(home, "kill", "auth2"))
        verifier, nonce = generate_token(48), generate_token(16)
        url, _ = client.create_authorization_url(
            meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce
        )
        back = await asyncio.to_thread(sign_in, target, browser, url, "hauser")  # type: ignore[arg-type]
        ok(cluster_cli(home, "start", "auth2"))
        ok(cluster_cli(home, "kill", "auth1"))

        token = await retried(
            lambda: client.fetch_token(
                meta["token_endpoint"], authorization_response=back, code_verifier=verifier
            ),
            "the code's exchange by auth2",
            20,
        )
        keys = KeySet.import_key_set(
            (await client.request("GET", meta["jwks_uri"], withhold_token=True)).json()
        )
        claims = jwt.decode(token["id_token"], keys).claims
        assert claims["sub"] == "hauser"
        assert claims["nonce"] == nonce
        assert parse_qs(urlsplit(back).query)["iss"] == [issuer]
        info = await client.get(meta["userinfo_endpoint"])
        assert info.status_code == 200
        assert info.json()["sub"] == "hauser"

        # The PostgreSQL primary is lost (SIGKILL) and its standby promoted: a refresh works.
        ok(cluster_cli(home, "failover-db"))
        old = token["refresh_token"]
        deadline = time.monotonic() + 60
        refreshed: dict[str, Any] | None = None
        seen: list[str] = []
        while refreshed is None and time.monotonic() < deadline:
            try:
                refreshed = dict(
                    await client.refresh_token(meta["token_endpoint"], refresh_token=old)
                )
            except OAuthError as exc:  # never invalid_grant: the token is good
                seen.append(exc.error)
                if exc.error not in ("temporarily_unavailable", "server_error"):
                    break
            except httpx2.HTTPStatusError as exc:  # 503 while the database fails over
                seen.append(str(exc.response.status_code))
                if exc.response.status_code != 503:
                    break
            if refreshed is None:
                await asyncio.sleep(1)
        assert refreshed is not None, f"no refresh after the failover: {seen[-5:]}"
        assert refreshed["refresh_token"] != old
        again = await client.get(meta["userinfo_endpoint"])
        assert again.status_code == 200


@pytest.mark.slow
def test_a_code_outlives_the_authentication_service_that_issued_it() -> None:
    if find_haproxy() is None:
        missing("HAProxy is not installed (apt-get install haproxy)")
    require_bindir()
    with cluster_home("gh-oidc-") as home:
        topology = free_topology(home.parent / "topology.yaml")
        ok(cluster_cli(home, "up", str(topology), "--no-fsync", "--no-demo-user"))
        cluster = Cluster.open(home)
        issuer = cluster.url.rstrip("/")
        publish_issuer(home, issuer)
        callback = Callback()
        try:
            added = ok(
                gatehouse_cli(
                    home,
                    *("oauth", "clients", "add", CLIENT),
                    *("--redirect-uri", callback.redirect_uri),
                    *("--scope", "openid profile offline_access"),
                    *("--wait", "30"),
                )
            )
            secret = added.splitlines()[0].strip()
            add_user(home, "hauser", PASSWORD)
            asyncio.run(flow(home, cluster, issuer, secret, callback))
        finally:
            callback.close()
