"""Chaos for the second factor (issue 15, "HA and failure"): password + one-time password in the
example HA topology (``gatehouse cluster``: ap1, ap2, ps1, ps2, auth1, auth2, Admin, the
PostgreSQL pair with its synchronous standby, the demo backend), with parts of it killed
between the password and the code.

One cluster for the module. Through Admin it gets a resource ``/secure`` whose rule needs
``password`` and ``otp``; each test has its own user with its own TOTP token (``gatehouse
tokens add --secret`` against the cluster's home, so the OATH DB on PostgreSQL), so that no
test waits for a fresh 30 s time step: a test uses the code of the current step (and of the
next one, which the default window of one step accepts). Users sign in directly on an Access
Point (not through HAProxy), so which Policy and Authentication services a sign-in uses is
known from the cluster's status.

1. SIGKILL to the Policy service that served the password step; a second later (the user
   types) the code goes to the other one, which finishes the sign-in (the state between the
   two steps is in the session DB) and the user is let in.
2. SIGKILL to the Authentication service the code's check would go to first: the check fails
   over to the other instance and the user is let in at once; the same code in a new
   submission is then refused by both instances (the audit log holds one acceptance).
3. The PostgreSQL pair: replication checked to be synchronous (as the OATH DB's role sees
   it); the code checked while the standby's WAL receiver is stopped gets no answer until the
   standby takes WAL again (the consumed step is committed on both nodes before the user is
   told); right after the answer the primary is killed and the standby promoted: the step is
   consumed there, the same code in a new submission is refused, the next step's code is
   accepted. This test runs last: it leaves Admin stopped (its lock was on the old primary)
   and the pair without a standby, which the module's teardown does not mind.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import secrets
import shutil
import signal
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from gatehouse.cluster import db_access
from gatehouse.cluster.haproxy import find_haproxy
from gatehouse.cluster.runner import Cluster
from gatehouse.cluster.status import ClusterStatus
from gatehouse.oath.otp import hotp, time_step
from gatehouse.storage.postgres_ha.node import PgNode
from tests.cluster.test_db_access import run_sql
from tests.support.cluster import free_topology
from tests.support.gateway import Browser, Response, add_user, gatehouse_cli
from tests.support.postgres import missing, require_bindir

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc"),
]

PASSWORD = "a long otp chaos passphrase"
PREFIX = "/_gatehouse/"
SECURE = "/secure/report"
CODE_PAGE = "Enter your one-time code"
WRONG_CODE = "That code is not right"
PERIOD = 30
#: One user per test: a time step is accepted once per token.
USERS = ("otp-ps", "otp-auth", "otp-pg")
PUBLISH_TIMEOUT = 30.0
#: How long a user takes to type a code (after the Policy service was killed).
TYPING = 1.0
#: How long the code's answer must wait for a standby that takes no WAL.
HELD = 1.0


@dataclass
class Lab:
    cluster: Cluster
    secrets: dict[str, bytes]

    def browser(self, ap: str) -> Browser:
        address = self.cluster.member(ap).address
        assert address is not None
        return Browser(address[0], address[1])

    def code(self, user: str, step: int) -> str:
        return hotp(self.secrets[user], step, 6, "sha1")

    def oath_sql(self, statement: str) -> list[tuple[object, ...]]:
        """A statement on the OATH DB as the Authentication services' role (their view)."""
        local = self.cluster.topology.databases.local
        assert local is not None
        url = db_access.role_url(
            self.cluster.home, local, db_access.AUTH_ROLE, db_access.oath_database(local)
        )
        return run_sql(url, statement)

    def otp_events(self, user: str) -> list[str]:
        """The user's ``otp_*`` audit events in order (the user DB, on the current primary)."""
        local = self.cluster.topology.databases.local
        assert local is not None
        url = db_access.role_url(self.cluster.home, local, db_access.AUTH_ROLE)
        rows = run_sql(
            url,
            "SELECT event FROM audit_events WHERE event LIKE 'otp%' "
            f"AND username = '{user}' ORDER BY id",
        )
        return [str(row[0]) for row in rows]


def publish_secure(cluster: Cluster) -> None:
    """Publish the running configuration plus ``/secure`` (rule: password and otp) on the
    demo backend, and wait until every service it configures runs it."""
    admin = cluster.admin_client()
    newest = admin.call("GET", "/api/v1/versions?limit=1")[0]["version"]
    document = yaml.safe_load(admin.call("GET", f"/api/v1/versions/{newest}")["text"])
    demo = next(r for r in document["resources"] if r["id"] == "demo")
    document["resources"].append(
        {"id": "secure", "hosts": ["*"], "path_prefix": "/secure", "backends": demo["backends"]}
    )
    document["resource_rules"]["secure"] = {"auth_methods": ["password", "otp"]}
    admin.call("PUT", "/api/v1/draft", {"text": yaml.safe_dump(document, sort_keys=False)})
    comment = "tests/chaos/test_otp_failover.py: /secure needs otp"
    number = int(admin.call("POST", "/api/v1/publish", {"comment": comment})["version"])
    ids = set(admin.call("GET", f"/api/v1/versions/{number}")["services"])
    deadline = time.monotonic() + PUBLISH_TIMEOUT
    while True:
        rows = {row["id"]: row for row in admin.call("GET", "/api/v1/services")}
        running = {i for i in ids if i in rows and (rows[i]["running_version"] or 0) >= number}
        if running == ids:
            return
        refused = [rows[i] for i in ids if i in rows and rows[i].get("last_error")]
        assert not refused, f"version {number} refused: {refused}"
        assert time.monotonic() < deadline, f"version {number} not run by {ids - running}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if find_haproxy() is None:
        missing("HAProxy is not installed (apt-get install haproxy)")
    require_bindir()
    root = Path(tempfile.mkdtemp(prefix="gh-otp-chaos-"))
    root.chmod(0o755)  # the postgres user traverses it
    home = root / "home"
    cluster = Cluster.prepare(home, free_topology(root / "topology.yaml"), fsync=False)
    try:
        cluster.up()
        publish_secure(cluster)
        seeds: dict[str, bytes] = {}
        for user in USERS:
            add_user(home, user, PASSWORD)
            seeds[user] = secrets.token_bytes(20)
            secret = base64.b32encode(seeds[user]).decode()
            added = gatehouse_cli(home, "tokens", "add", user, "--secret", secret)
            assert added.returncode == 0, added.stderr
        yield Lab(cluster, seeds)
    finally:
        cluster.down()
        shutil.rmtree(root, ignore_errors=True)


# -- a browser on the portal -----------------------------------------------------------------


def text(response: Response) -> str:
    return response.body.decode("utf-8", "replace")


def local_path(location: str) -> str:
    """The path and query of a ``Location`` (absolute or not)."""
    parts = urllib.parse.urlsplit(location)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def submit(browser: Browser, page: Response, action: str, **fields: str) -> Response:
    """Post the form of ``page`` whose action is ``action``, with its hidden fields (the CSRF
    token, the return URL, the submission's ``attempt`` id) and ``fields``."""
    body = text(page)
    forms = re.findall(r'<form method="post" action="([^"]+)"[^>]*>(.*?)</form>', body, re.S)
    for url, inner in forms:
        if url == f"{PREFIX}{action}":
            hidden = dict(re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', inner))
            form = {k: html.unescape(v) for k, v in hidden.items()} | fields
            return browser.request(
                "POST",
                url,
                urllib.parse.urlencode(form).encode(),
                {"Content-Type": "application/x-www-form-urlencoded"},
            )
    raise AssertionError(f"no {action} form in HTTP {page.status}: {body[:2000]}")


def attempt_of(page: Response) -> str:
    match = re.search(r'name="attempt" value="([^"]+)"', text(page))
    assert match is not None, text(page)[:2000]
    return match.group(1)


def password_step(browser: Browser, user: str) -> Response:
    """Ask for the protected page, follow the Access Point to the portal, sign in with the
    password; the page that follows (the code form)."""
    first = browser.get(SECURE)
    assert first.status == 303, text(first)[:500]
    login = local_path(first.location)
    assert login.startswith(f"{PREFIX}login"), login
    assert "step=otp" in login, login  # the rule asks for a one-time password
    form = browser.get(login)
    assert form.status == 200, text(form)[:500]
    page = submit(browser, form, "login", username=user, password=PASSWORD)
    assert page.status == 200, text(page)[:2000]
    assert CODE_PAGE in text(page), text(page)[:2000]
    return page


def let_in(browser: Browser, done: Response, user: str) -> None:
    """The code was taken: back to the protected page, which the backend serves to ``user``
    signed in with both methods."""
    assert done.status == 303, f"HTTP {done.status}: {text(done)[:2000]}"
    assert local_path(done.location) == SECURE
    page = browser.get(SECURE)
    assert page.status == 200, text(page)[:500]
    seen = {k.lower(): v for k, v in json.loads(page.body)["headers"]}
    assert seen["remote-user"] == user
    assert seen["remote-auth-methods"] == "password,otp"


def refused(page: Response) -> None:
    """The code form again, saying the code is wrong (not an error page)."""
    assert page.status == 200, f"HTTP {page.status}: {text(page)[:2000]}"
    assert WRONG_CODE in text(page), text(page)[:2000]


# -- the cluster ------------------------------------------------------------------------------


def wait_status(lab: Lab, check: Callable[[ClusterStatus], bool], what: str) -> ClusterStatus:
    deadline = time.monotonic() + 30
    while True:
        status = lab.cluster.status()
        if check(status):
            return status
        assert time.monotonic() < deadline, f"not within 30s: {what}\n{status}"
        time.sleep(0.2)


def within_window(step: int) -> None:
    """``step``'s code is still inside the default one-step window, so a refusal of it is a
    refusal as a replay, not as a code too old."""
    now = time_step(time.time(), PERIOD)
    assert now <= step + 1, f"step {step} left the window (now {now}): the test ran too slow"


# -- the tests --------------------------------------------------------------------------------


def test_a_policy_service_killed_after_the_password_step(lab: Lab) -> None:
    user = "otp-ps"
    status = wait_status(lab, lambda s: s.healthy and s["ap1"].prefers == "ps1", "ap1 on ps1")
    assert status["ap2"].prefers == "ps2"
    browser = lab.browser("ap1")
    page = password_step(browser, user)  # ps1 served it: ap1's first Policy service
    lab.cluster.kill("ps1")  # SIGKILL
    try:
        # The user types the code. (A POST that reaches ap1 in the same few milliseconds as
        # the kill, before ap1 read the end of its pooled connections to ps1, can still go out
        # on one of them, and a POST is not retried: a 502, after which a resubmission of the
        # same form works. That is a request in flight at the crash, not this test's question.
        # Nor can the test wait for ap1 to say it left ps1: idle, it may not notice for long.)
        time.sleep(TYPING)
        step = time_step(time.time(), PERIOD)
        let_in(browser, submit(browser, page, "otp", code=lab.code(user, step)), user)
        assert lab.otp_events(user) == ["otp_ok"]
    finally:
        lab.cluster.start("ps1")
    # Fail-back, so that the next test finds ap1 on ps1 again.
    wait_status(lab, lambda s: s.healthy and s["ap1"].prefers == "ps1", "ap1 back on ps1")


def test_an_authentication_service_killed_before_the_code(lab: Lab) -> None:
    user = "otp-auth"

    # Through ap2, which no test used before: its portal goes to ps2 (ap1's may still keep
    # away from ps1, killed in the test before), and ps2 checks with auth2 first.
    def on_auth2(s: ClusterStatus) -> bool:
        return s.healthy and s["ap2"].prefers == "ps2" and s["ps2"].prefers == "auth2"

    wait_status(lab, on_auth2, "ap2 on ps2, ps2 on auth2")
    browser = lab.browser("ap2")
    page = password_step(browser, user)
    lab.cluster.kill("auth2")  # the one ps2 would check the code with first
    step = time_step(time.time(), PERIOD)
    code = lab.code(user, step)
    try:
        began = time.monotonic()
        done = submit(browser, page, "otp", code=code)
        took = time.monotonic() - began
        let_in(browser, done, user)  # auth1 took it: the user noticed nothing
        assert took < 5.0, f"the code took {took:.1f}s"
        # ps2 met the dead auth2 with this check and went on to auth1.
        ps2 = lab.cluster.status()["ps2"]
        assert ps2.detail.startswith("uses auth1 "), ps2  # its own answer, not a guess
        # The same code in a new submission, on auth1, which took it: refused.
        again = lab.browser("ap2")
        replay = password_step(again, user)
        refused(submit(again, replay, "otp", code=code))
    finally:
        lab.cluster.start("auth2")
    # And on auth2, back and ps2's first choice again: refused as well.
    wait_status(lab, on_auth2, "ps2 back on auth2")
    within_window(step)
    third = lab.browser("ap2")
    replay = password_step(third, user)
    refused(submit(third, replay, "otp", code=code))
    assert lab.otp_events(user) == ["otp_ok", "otp_replay", "otp_replay"]


def walreceiver(node: PgNode) -> int:
    """The pid of a standby's WAL receiver (a child of its postmaster)."""
    postmaster = node.postmaster_pid()
    assert postmaster is not None, f"{node.name} is not running"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == postmaster and b"walreceiver" in command:
            return int(entry.name)
    raise AssertionError(f"{node.name} has no WAL receiver")


def test_the_database_primary_lost_after_a_code_was_taken(lab: Lab) -> None:
    user = "otp-pg"
    cluster = lab.cluster
    databases = cluster.databases
    assert databases is not None
    primary, standby = databases.primary(), databases.standby()
    # The pair replicates synchronously, for the OATH DB's own role as well.
    replicas = primary.sql("SELECT application_name, sync_state FROM pg_stat_replication")
    assert [standby.name, "sync"] in replicas, replicas
    commit = lab.oath_sql("SHOW synchronous_commit")[0][0]
    assert commit in ("remote_apply", "on", "remote_write"), commit
    assert lab.oath_sql("SHOW synchronous_standby_names")[0][0] == standby.name

    browser = lab.browser("ap1")
    page = password_step(browser, user)
    step = time_step(time.time(), PERIOD)
    code = lab.code(user, step)
    # The standby stops taking WAL while the code is checked: the answer must wait for it
    # (the consumed step is committed on both nodes before the user is told it was right).
    receiver = walreceiver(standby)
    answers: list[Response | BaseException] = []

    def send() -> None:
        try:
            answers.append(submit(browser, page, "otp", code=code))
        except BaseException as exc:
            answers.append(exc)

    os.kill(receiver, signal.SIGSTOP)
    try:
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        sender.join(HELD)
        held = not answers
    finally:
        os.kill(receiver, signal.SIGCONT)
    sender.join(10)
    assert held, f"answered while the standby had not got the step: {answers}"
    assert len(answers) == 1, "no answer once the standby took WAL again"
    done = answers[0]
    assert isinstance(done, Response), done
    assert done.status == 303, f"HTTP {done.status}: {text(done)[:2000]}"
    began = time.monotonic()
    promoted = cluster.failover_db(kill=True)  # at once; SIGKILL: no WAL handed over
    assert promoted == standby.name
    # On the promoted node the step is consumed: the commit was there before the answer.
    last = lab.oath_sql(f"SELECT last_step FROM oath_tokens WHERE owner = '{user}'")
    assert last == [(step,)], last

    # A new sign-in once the services found the new primary, then the same code again.
    deadline = time.monotonic() + 30
    while True:
        again = lab.browser("ap1")
        try:
            replay = password_step(again, user)
            break
        except (AssertionError, OSError):
            assert time.monotonic() < deadline, "no sign-in within 30s of the promotion"
            time.sleep(0.25)
    back = time.monotonic() - began
    within_window(step)
    second = submit(again, replay, "otp", code=code)
    refused(second)
    # The next step's code, on the form that refused the first (a new attempt): accepted.
    assert attempt_of(second) != attempt_of(replay)
    let_in(again, submit(again, second, "otp", code=lab.code(user, step + 1)), user)
    assert lab.otp_events(user) == ["otp_ok", "otp_replay", "otp_ok"]
    last = lab.oath_sql(f"SELECT last_step FROM oath_tokens WHERE owner = '{user}'")
    assert last == [(step + 1,)], last
    # The first sign-in's session outlived the failover too.
    let_in(browser, done, user)
    print(f"database failover: a sign-in again {back:.1f}s after the kill")
