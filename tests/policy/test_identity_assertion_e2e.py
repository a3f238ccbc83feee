"""End to end, real processes: a resource with ``identity_assertion`` behind an Access Point,
its backend the demo backend checking every request against the key set the Policy services
publish under the portal prefix (``--jwks-url http://AP/_gatehouse/jwks.json``).

An Access Point that was taken over can send the backend anything; what it cannot do is sign
a token with a Policy service's key. So: a signed-in user's request arrives with verified
claims; a client's own copy of the header never reaches the backend; a token signed with
another key is refused by the backend itself; and two Policy services on one session DB
publish both their keys, so a token from either is accepted.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import time
from pathlib import Path
from typing import Any

from gatehouse.policy.assertions import SigningKey, sign
from tests.support.gateway import Gateway, add_user, echoed_headers, start_gateway
from tests.support.processes import Service, free_port, write_config

PASSWORD = "correct horse battery staple"
HEADER = "Gatehouse-Assertion"


def direct(port: int, path: str, headers: dict[str, str]) -> tuple[int, Any]:
    """A request straight to a backend or service, as an owned Access Point could send it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def decide(port: int, cookie: str) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = {
        "session": cookie,
        "resource": "signed",
        "method": "GET",
        "path": "/signed/",
        "client_ip": "127.0.0.1",
        "ap": "ap1",
    }
    try:
        conn.request(
            "POST", "/internal/v1/decide", json.dumps(body), {"Content-Type": "application/json"}
        )
        answer: dict[str, Any] = json.loads(conn.getresponse().read())
        return answer
    finally:
        conn.close()


def forged(key: SigningKey, kid: str | None = None, audience: str = "signed") -> str:
    now = int(time.time())
    claims = {"iss": "gatehouse", "sub": "root", "aud": audience, "iat": now, "exp": now + 60}
    token = sign(claims, key)
    if kid is None:
        return token
    # The same token claiming to be signed by ``kid``.
    header = sign({}, SigningKey(key.private, {**key.jwk, "kid": kid})).split(".")[0]
    return ".".join([header, *token.split(".")[1:]])


def start(tmp_path: Path) -> tuple[Gateway, Service]:
    signed_port = free_port()
    gw = start_gateway(
        tmp_path,
        {
            "resources": {"signed": "authenticated", "open": "public"},
            "identity_assertion": ["signed", "open"],
        },
        [
            {
                "id": "signed",
                "path_prefix": "/signed",
                "backends": [f"http://127.0.0.1:{signed_port}"],
            },
            {"id": "open", "path_prefix": "/open", "backends": [f"http://127.0.0.1:{signed_port}"]},
        ],
    )
    backend = Service(
        [
            "demo-backend",
            "--listen",
            f"127.0.0.1:{signed_port}",
            "--jwks-url",
            f"http://127.0.0.1:{gw.ap.port}/_gatehouse/jwks.json",
            "--audience",
            "signed",
        ],
        tmp_path / "signed-backend.log",
        "127.0.0.1",
        signed_port,
    )
    try:
        backend.wait_ready(30)
    except BaseException:
        backend.stop()
        gw.stop()
        raise
    return gw, backend


def test_identity_assertions_reach_a_checking_backend(tmp_path: Path) -> None:
    gw, backend = start(tmp_path)
    second: Service | None = None
    try:
        add_user(gw.home, "alice", PASSWORD, groups=("staff",))
        browser = gw.browser()

        # The key set: public, cacheable, one key (this Policy service's).
        keys = browser.get("/_gatehouse/jwks.json")
        assert keys.status == 200, keys.body[:300]
        assert "max-age=300" in keys.headers["cache-control"]
        [jwk] = keys.json()["keys"]
        assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("EC", "P-256", "ES256")
        assert "d" not in jwk

        # Signed in: the backend verified the assertion and echoes its claims.
        assert browser.login("alice", PASSWORD, rd="/signed/").status == 303
        cookie = browser.cookies["gatehouse_session"]
        response = browser.get("/signed/")
        assert response.status == 200, response.body[:300]
        claims = response.json()["assertion"]
        assert (claims["sub"], claims["aud"], claims["iss"]) == ("alice", "signed", "gatehouse")
        assert claims["groups"] == ["staff"]
        assert claims["amr"] == ["password"]
        assert 0 < claims["exp"] - claims["iat"] <= 60
        assert claims["sid"] == hashlib.sha256(cookie.encode()).hexdigest()[:32]
        assert cookie not in response.body.decode()
        assert echoed_headers(response)["remote-user"] == "alice"

        # A client's own assertion never reaches the backend: the AP replaces it...
        stranger = SigningKey.generate()
        mine = forged(stranger, jwk["kid"])
        replaced = browser.get("/signed/", headers={HEADER: mine})
        assert replaced.status == 200
        assert echoed_headers(replaced)[HEADER.lower()] != mine
        assert replaced.json()["assertion"]["sub"] == "alice"
        # ...or strips it (no session: no assertion), so the backend refuses the request.
        anonymous = gw.browser().get("/open/", headers={HEADER: mine})
        assert anonymous.status == 401
        assert anonymous.json() == {"error": "assertion", "message": "no identity assertion"}

        # An owned AP talking to the backend directly cannot make one up.
        port = backend.port
        status, answer = direct(port, "/", {HEADER: forged(stranger)})
        assert (status, answer["error"]) == (401, "assertion")
        assert "unknown key" in answer["message"]
        status, answer = direct(port, "/", {HEADER: mine})
        assert (status, answer["message"]) == (401, "bad signature")
        genuine = echoed_headers(response)[HEADER.lower()]
        status, answer = direct(port, "/", {HEADER: genuine})
        assert status == 200
        assert answer["assertion"]["sub"] == "alice"
        status, answer = direct(port, "/", {})
        assert status == 401

        # The decision may be cached for at most half the token's life.
        ps1 = decide(gw.policy.port, cookie)
        assert ps1["decision"] == "allow"
        assert 0 < ps1["ttl"] <= 30

        # A second Policy service on the same session DB: its own key, published by both.
        second = start_second_policy(tmp_path, gw)
        kids = {jwk["kid"]}
        deadline = time.monotonic() + 15
        while len(kids) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
            kids = {k["kid"] for k in browser.get("/_gatehouse/jwks.json").json()["keys"]}
        assert len(kids) == 2
        _, from_second = direct(second.port, "/_gatehouse/jwks.json", {})
        assert {k["kid"] for k in from_second["keys"]} == kids

        # The backend accepts the second service's tokens (it fetches the key set again
        # on an unknown key, at most once per 10 s).
        token = decide(second.port, cookie)["headers"][HEADER]
        deadline = time.monotonic() + 15
        status = 0
        while status != 200 and time.monotonic() < deadline:
            status, answer = direct(port, "/", {HEADER: token})
            if status != 200:
                time.sleep(1)
        assert status == 200, answer
        assert answer["assertion"]["sub"] == "alice"
    finally:
        if second is not None:
            second.stop()
        backend.stop()
        gw.stop()


def start_second_policy(tmp_path: Path, gw: Gateway) -> Service:
    home = tmp_path / "home2"
    home.mkdir()
    port = free_port()
    config = write_config(
        tmp_path / "policy2.yaml",
        {
            "policy": {
                "id": "ps2",
                "listen": f"127.0.0.1:{port}",
                "authentication": [gw.auth.url],
                "session_db": f"sqlite+aiosqlite:///{gw.home / 'gatehouse.db'}",
            },
            "resources": {"signed": "authenticated", "open": "public"},
            "identity_assertion": ["signed", "open"],
        },
    )
    service = Service(
        ["policy", "--config", str(config), "--home", str(home)],
        tmp_path / "policy2.log",
        "127.0.0.1",
        port,
    )
    return service.wait_ready(30)
