"""Sessions follow the account (issue 13), end to end through real Access Points.

A password change, a group change and a disable end the user's sessions on every Access
Point within a second, cached decisions included: on PostgreSQL with two Policy services
(the browser's AP asks ps2, the CLI reaches ps1, or no Policy service at all and the CLI
tells them with NOTIFY) and on the SQLite single-node path. A request that names the session
cookie twice is refused by the AP and by the portal, so sign-out can never end a session
other than the one that is enforced.
"""

from __future__ import annotations

import http.client
import json
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gatehouse.policy.sessions import hash_session_id
from tests.support.gateway import (
    Browser,
    Gateway,
    add_user,
    echoed_headers,
    gatehouse_cli,
    start_gateway,
    wait_events,
)
from tests.support.postgres import postgres_cluster, postgres_url
from tests.support.processes import Service, free_port, write_config

FIXTURES = (postgres_cluster, postgres_url)

PASSWORD = "carol's first password"
NEW_PASSWORD = "carol's second password"
TOKEN = "sessions-follow-admin-token-0123"
RULES: dict[str, Any] = {
    "resources": {"app": "authenticated", "admin": {"groups_any": ["admins"]}},
}
RESOURCES = [
    {"id": "app", "path_prefix": "/app"},
    {"id": "admin", "path_prefix": "/admin"},
]
#: How long a change may take to reach every AP (the requirement).
WITHIN = 1.0


class Installation:
    """A gateway (ps1 and ap1) and, on PostgreSQL, a second Policy service ps2 with its own
    Access Point ap2; the CLI finds ps1 through HOME/policy.yaml."""

    def __init__(self, tmp: Path, session_db: str | None) -> None:
        token = tmp / "admin-token"
        token.write_text(TOKEN + "\n")
        extra: dict[str, Any] = {"admin_token_file": str(token), "decision_ttl": 60}
        if session_db:
            extra["session_db"] = session_db
        self.gw: Gateway = start_gateway(tmp, RULES, RESOURCES, policy_extra=extra)
        self.home = self.gw.home
        self.extra: list[Service] = []
        # The policy.yaml of ps1, where `gatehouse users ...` looks for a Policy service.
        shutil.copy(tmp / "policy.yaml", self.home / "policy.yaml")
        self.ports = [self.gw.ap.port]
        if session_db:
            try:
                self._second_policy_service(tmp)
            except BaseException:
                self.stop()
                raise
        add_user(self.home, "carol", PASSWORD, ("admins",))
        add_user(self.home, "dave", PASSWORD, ("admins",))

    def _second_policy_service(self, tmp: Path) -> None:
        doc = yaml.safe_load((tmp / "policy.yaml").read_text())
        port = free_port()
        doc["policy"]["listen"] = f"127.0.0.1:{port}"
        doc["policy"]["id"] = "ps2"
        config = write_config(tmp / "policy2.yaml", doc)
        ps2 = Service(
            ["policy", "--config", str(config), "--home", str(self.home)],
            tmp / "policy2.log",
            "127.0.0.1",
            port,
        )
        self.extra.append(ps2)
        ap_doc = yaml.safe_load((tmp / "ap1.yaml").read_text())
        ap_doc["access_point"].pop("status_listen", None)  # ap1's port
        ap_port = free_port()
        ap_doc["access_point"].update(
            id="ap2", listen=f"127.0.0.1:{ap_port}", policy_services=[ps2.url]
        )
        ap2 = Service(
            ["access-point", "--config", str(write_config(tmp / "ap2.yaml", ap_doc))],
            tmp / "ap2.log",
            "127.0.0.1",
            ap_port,
        )
        self.extra.append(ap2)
        ps2.wait_ready(30)
        ap2.wait_ready(30)
        self.gw.aps.append(ap2)
        wait_events(self.gw)
        self.ports.append(ap_port)

    def cli(self, *args: str, stdin: str | None = None) -> str:
        done = gatehouse_cli(self.home, *args, stdin=stdin)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        return done.stdout

    def stop(self) -> None:
        for service in self.extra:
            service.stop()
        self.gw.stop()


def signed_in(port: int, user: str = "carol", password: str = PASSWORD) -> Browser:
    browser = Browser("127.0.0.1", port)
    assert browser.login(user, password).status == 303
    return browser


def groups_seen(browser: Browser, path: str = "/app/") -> str | None:
    """The Remote-Groups the backend got; None when the request did not reach it."""
    response = browser.get(path)
    if response.status != 200:
        return None
    return echoed_headers(response).get("remote-groups", "")


def assert_signed_out_within(browsers: list[Browser], what: str) -> None:
    """Within WITHIN seconds of now (the command has returned), every browser is sent to the
    login page: its session is gone from the session DB and from every cache."""
    deadline = time.monotonic() + WITHIN
    for browser in browsers:
        while True:
            response = browser.get("/app/")
            if response.status == 303:
                break
            assert time.monotonic() < deadline, f"still signed in {WITHIN} s after {what}"
            time.sleep(0.02)
        # And it stays so: the session is gone, not just a cache entry.
        assert browser.get("/admin/").status == 303


def cached_everywhere(browsers: list[Browser]) -> None:
    """Each browser's decisions are in its AP's cache (asked twice, the second a hit)."""
    for browser in browsers:
        for _ in range(2):
            assert groups_seen(browser) == "admins"
            assert browser.get("/admin/").status == 200


@pytest.fixture
def postgres_installation(tmp_path: Path, postgres_url: str) -> Iterator[Installation]:
    installation = Installation(tmp_path, postgres_url)
    try:
        yield installation
    finally:
        installation.stop()


@pytest.fixture
def sqlite_installation(tmp_path: Path) -> Iterator[Installation]:
    installation = Installation(tmp_path, None)
    try:
        yield installation
    finally:
        installation.stop()


def check_changes(inst: Installation) -> None:
    """remove-member, then passwd, then add-member; each ends carol's sessions on every AP
    (every browser signed in through each AP), never dave's."""
    ports = inst.ports
    browsers = [signed_in(port) for port in ports]
    dave = signed_in(ports[-1], "dave")
    cached_everywhere([*browsers, dave])

    out = inst.cli("groups", "remove-member", "admins", "carol")
    assert "every Access Point was told" in out, out
    assert_signed_out_within(browsers, "groups remove-member")
    # Signing in again gives the groups of now.
    again = [signed_in(port) for port in ports]
    assert [groups_seen(b) for b in again] == [""] * len(ports)
    assert all(b.get("/admin/").status == 403 for b in again)

    out = inst.cli("users", "passwd", "carol", "--password-stdin", stdin=NEW_PASSWORD + "\n")
    assert "every Access Point was told" in out, out
    assert_signed_out_within(again, "users passwd")
    assert Browser("127.0.0.1", ports[0]).login("carol", PASSWORD).status != 303
    fresh = [signed_in(port, password=NEW_PASSWORD) for port in ports]

    inst.cli("groups", "add-member", "admins", "carol")
    assert_signed_out_within(fresh, "groups add-member")
    back = signed_in(ports[-1], password=NEW_PASSWORD)
    assert groups_seen(back) == "admins"

    # dave was never touched.
    assert groups_seen(dave) == "admins"


def test_postgresql_changes_reach_every_policy_service_and_access_point(
    postgres_installation: Installation,
) -> None:
    check_changes(postgres_installation)


def test_postgresql_group_deleted_without_a_policy_service_answering(
    postgres_installation: Installation,
) -> None:
    """No Policy service reachable from the CLI: it ends the sessions in the session DB and
    tells every Policy service with NOTIFY, so the APs still drop them at once."""
    inst = postgres_installation
    browsers = [signed_in(port) for port in inst.ports]
    dave = signed_in(inst.ports[0], "dave")
    cached_everywhere([*browsers, dave])
    # ps1 stopped answering where the CLI looks for it (its config still names the DB).
    config = inst.home / "policy.yaml"
    doc = yaml.safe_load(config.read_text())
    doc["policy"]["listen"] = f"127.0.0.1:{free_port()}"
    write_config(config, doc)
    out = inst.cli("groups", "delete", "admins")
    assert "in the session database; every Policy service was told" in out, out
    assert_signed_out_within([*browsers, dave], "groups delete")
    assert groups_seen(signed_in(inst.ports[-1])) == ""


def test_sqlite_single_node_changes(sqlite_installation: Installation) -> None:
    check_changes(sqlite_installation)


def test_sqlite_disable_and_group_delete(sqlite_installation: Installation) -> None:
    inst = sqlite_installation
    carol, dave = signed_in(inst.ports[0]), signed_in(inst.ports[0], "dave")
    cached_everywhere([carol, dave])
    inst.cli("users", "disable", "carol")
    assert_signed_out_within([carol], "users disable")
    assert groups_seen(dave) == "admins"
    inst.cli("groups", "delete", "admins")
    assert_signed_out_within([dave], "groups delete")


# --- one session cookie ------------------------------------------------------------------


def two_cookies(browser: Browser, other: str) -> dict[str, str]:
    return {"Cookie": f"gatehouse_session={browser.cookies['gatehouse_session']}; {other}"}


def test_two_session_cookies_are_refused_by_the_ap_and_the_portal(
    sqlite_installation: Installation,
) -> None:
    inst = sqlite_installation
    carol, dave = signed_in(inst.ports[0]), signed_in(inst.ports[0], "dave")
    both = f"gatehouse_session={dave.cookies['gatehouse_session']}"
    plain = Browser("127.0.0.1", inst.ports[0])  # sends only the headers given
    # The AP: a protected resource, both orders, one field or two.
    for headers in (
        two_cookies(carol, both),
        two_cookies(dave, f"gatehouse_session={carol.cookies['gatehouse_session']}"),
    ):
        refused = plain.get("/app/", headers=headers)
        assert refused.status == 400
        assert b"sign-in cookie more than once" in refused.body
    # The portal: the sign-out page and the sign-out itself.
    page = plain.get("/_gatehouse/logout", headers=two_cookies(carol, both))
    assert page.status == 400
    assert b"sign-in cookie more than once" in page.body
    form = carol.get("/_gatehouse/logout")
    assert form.status == 200
    csrf = form.body.split(b'name="csrf" value="')[1].split(b'"')[0].decode()
    headers = two_cookies(carol, f"{both}; gatehouse_csrf={carol.cookies['gatehouse_csrf']}")
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    logout = plain.request("POST", "/_gatehouse/logout", f"csrf={csrf}".encode(), headers)
    assert logout.status == 400
    assert b"sign-in cookie more than once" in logout.body
    # Nothing was ended by the refused sign-out: both sessions still work, one at a time.
    assert groups_seen(carol) == "admins"
    assert groups_seen(dave) == "admins"
    # A real sign-out with one cookie ends exactly the session the AP enforced.
    out = carol.request(
        "POST",
        "/_gatehouse/logout",
        f"csrf={csrf}".encode(),
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert out.status == 200
    assert "gatehouse_session" not in carol.cookies
    assert groups_seen(dave) == "admins"


# --- the admin API's reason and exception --------------------------------------------------


def admin_delete(inst: Installation, query: str) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", inst.gw.policy.port, timeout=10)
    try:
        conn.request(
            "DELETE",
            f"/internal/v1/sessions?{query}",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_admin_api_ends_all_but_one_session_with_a_reason(
    sqlite_installation: Installation,
) -> None:
    inst = sqlite_installation
    keep, end = signed_in(inst.ports[0]), signed_in(inst.ports[0])
    cached_everywhere([keep, end])
    kept = hash_session_id(keep.cookies["gatehouse_session"])
    for query, message in (
        ("user=carol&reason=because", "reason: one of groups_changed, password_changed, "),
        ("user=carol&except=not-a-hash", "except: not a session hash"),
    ):
        status, answer = admin_delete(inst, query)
        assert status == 400
        assert answer["message"].startswith(message), answer
    status, answer = admin_delete(inst, f"user=carol&reason=password_changed&except={kept}")
    assert (status, answer) == (200, {"revoked": 1})
    assert_signed_out_within([end], "the admin API's DELETE")
    assert groups_seen(keep) == "admins", "the excepted session stays"
    with sqlite3.connect(inst.home / "gatehouse.db") as db:
        rows = db.execute(
            "SELECT detail FROM audit_events WHERE event = 'session_revoked'"
        ).fetchall()
    assert [json.loads(detail)["reason"] for (detail,) in rows] == ["password_changed"]
