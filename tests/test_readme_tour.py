"""The README's five-minute tour, run as written.

The command blocks of the tour section are read from README.md itself and run in order by
bash, in a fresh directory where ``.venv`` is this virtual environment, against a real
``gatehouse up``; after each block the test checks what the tour promises. Only three things
are translated: ``make run`` becomes the Makefile's own ``run`` command (without the install
step) with free ports, the tour's port 8080 becomes the node's, and ``'KEY FROM THE PAGE'``
becomes the key the enrolment page showed (the test reads the pages a person would, with
the demo user's browser). Editing the README so that a step no longer works, or adding,
removing or reordering a command block, fails this test.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gatehouse.cluster.haproxy import find_haproxy
from gatehouse.cluster.runner import Cluster
from gatehouse.cluster.status import ClusterStatus
from gatehouse.oath import otp
from gatehouse.oath.keyuri import parse_uri
from tests.support.cluster import free_topology
from tests.support.gateway import Browser, Response, echoed_headers
from tests.support.postgres import missing, require_bindir
from tests.support.processes import free_port

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
TOUR_HEADING = "## A five-minute tour"
#: The step that leaves the single node for the HA cluster (a test of its own, slower).
HA_STEP = "**Break things**"
TOUR_PORT = "127.0.0.1:8080"
LOGOUT = "/_gatehouse/logout"
#: Where the tour says to paste the key the enrolment page shows.
KEY_FROM_THE_PAGE = "'KEY FROM THE PAGE'"
FORM = re.compile(r'<form method="post" action="([^"]+)"[^>]*>(.*?)</form>', re.S)
HIDDEN = re.compile(r'type="hidden" name="([^"]+)" value="([^"]*)"')
SECRET_SHOWN = re.compile(r'<code class="secret" id="secret">([A-Z2-7 ]+)</code>')


def tour_blocks(readme: str, ha: bool = False) -> list[str]:
    """The ``sh`` blocks of the tour section, dedented, in order: those of the single node,
    or (``ha``) those of the HA step."""
    start = readme.index(TOUR_HEADING)
    end = readme.find("\n## ", start + len(TOUR_HEADING))
    section = readme[start : end if end != -1 else len(readme)]
    single, _, cluster = section.partition(HA_STEP)
    assert cluster, f"the tour has no {HA_STEP} step"
    blocks = re.findall(
        r"^( *)```sh\n(.*?)^\1```$", cluster if ha else single, re.MULTILINE | re.DOTALL
    )
    return [textwrap.dedent(indent + body).strip() for indent, body in blocks]


def make_run_command() -> str:
    """What ``make run`` runs, from the Makefile (``$(BIN)`` is ``.venv/bin``)."""
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^run:.*\n\t(.+)$", makefile, re.MULTILINE)
    assert recipe, "the Makefile has no run target"
    return recipe.group(1).replace("$(BIN)", ".venv/bin")


def test_the_tour_is_read_from_the_readme() -> None:
    blocks = tour_blocks(README.read_text())
    assert blocks[0] == "make run"
    assert all(block for block in blocks)
    assert tour_blocks(README.read_text(), ha=True)[0] == ".venv/bin/gatehouse cluster up"
    assert make_run_command() == ".venv/bin/gatehouse up"


@dataclass
class Tour:
    """The tour's working directory, its node and what the steps learned."""

    cwd: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    passwords: dict[str, str] = field(default_factory=dict)
    demo: Browser | None = None
    log_path: Path | None = None
    #: The key the enrolment page showed, and that page.
    key: str | None = None
    enrol_page: Response | None = None
    #: The page asking for the code sent by e-mail.
    code_page: Response | None = None

    def browser(self) -> Browser:
        return Browser("127.0.0.1", self.port)

    def output(self) -> str:
        assert self.log_path is not None
        return self.log_path.read_text(errors="replace")

    def start_node(self, command: str) -> None:
        ports = [f"127.0.0.1:{free_port()}" for _ in range(4)]
        flags = ["--listen", f"127.0.0.1:{self.port}", "--backend-listen", ports[0]]
        flags += ["--policy-listen", ports[1], "--auth-listen", ports[2]]
        flags += ["--admin-listen", ports[3], "--status-listen", f"127.0.0.1:{free_port()}"]
        flags += ["--distribution-listen", f"127.0.0.1:{free_port()}"]
        flags += ["--smtp-listen", f"127.0.0.1:{free_port()}"]
        self.log_path = self.cwd / "up.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [*command.split(), *flags],
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )

    def wait_for(self, text: str, timeout: float = 90.0) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            assert self.proc is not None
            assert self.proc.poll() is None, self.output()
            assert time.monotonic() < deadline, f"no {text!r} after {timeout}s:\n{self.output()}"
            time.sleep(0.05)
        return self.output()

    def run(self, block: str) -> subprocess.CompletedProcess[str]:
        script = block.replace(TOUR_PORT, f"127.0.0.1:{self.port}")
        if self.key is not None:
            script = script.replace(KEY_FROM_THE_PAGE, f"'{self.key}'")
        return subprocess.run(
            ["bash", "-c", script],
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # Ctrl-C in the terminal
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def signed_in(tour: Tour, user: str, rd: str = "/hello") -> Browser:
    browser = tour.browser()
    answer = browser.login(user, tour.passwords[user], rd=rd)
    assert answer.status == 303, answer.body[:500]
    assert answer.location.endswith(rd)
    return browser


def submit(browser: Browser, page: Response, action: str, **fields: str) -> Response:
    """Post the form of ``page`` whose action ends with ``action``, with its hidden fields."""
    for url, inner in FORM.findall(page.body.decode()):
        if url.endswith(f"/{action}"):
            hidden = {k: html.unescape(v) for k, v in HIDDEN.findall(inner)}
            form = urllib.parse.urlencode(hidden | fields).encode()
            return browser.request(
                "POST", url, form, {"Content-Type": "application/x-www-form-urlencoded"}
            )
    raise AssertionError(f"no {action} form in {page.status}: {page.body[:2000]!r}")


def follow(browser: Browser, path: str) -> Response:
    """GET ``path`` and the redirects after it, as a browser does."""
    for _ in range(5):
        response = browser.get(path)
        if response.status not in (302, 303):
            return response
        parts = urllib.parse.urlsplit(response.location)
        path = urllib.parse.urlunsplit(("", "", parts.path, parts.query, ""))
    raise AssertionError(f"too many redirects at {path}")


# --- what each block of the tour promises ---------------------------------------------------


def after_start(tour: Tour, done: subprocess.CompletedProcess[str] | None) -> None:
    out = tour.wait_for(f"Gatehouse is up: open http://127.0.0.1:{tour.port}/\n")
    password = re.search(r"Sign in as demo with password (\S+) \(shown only", out)
    assert password, out
    tour.passwords["demo"] = password.group(1)
    assert "Locked out after wrong passwords? .venv/bin/gatehouse users unlock demo --home var" in (
        out
    )
    # The console's address and its first administrator, shown once (README step 1).
    assert re.search(r"Console: https://127\.0\.0\.1:\d+/console/ ", out), out
    assert re.search(r"Console administrator: admin  password: \S+  OTP secret: [A-Z2-7]+ ", out)
    # Step 2 in the browser: sent to the sign-in page, back with the identity, no cookie.
    demo = tour.browser()
    assert demo.get("/hello").status == 303
    answer = demo.login("demo", tour.passwords["demo"], rd="/hello")
    assert (answer.status, answer.location) == (303, "/hello")
    page = demo.get("/hello")
    assert page.status == 200
    headers = echoed_headers(page)
    assert headers["remote-user"] == "demo"
    assert "gatehouse_session" not in headers.get("cookie", "")
    assert tour.browser().get("/public/").status == 200
    tour.demo = demo


def after_redirect_curl(tour: Tour, done: subprocess.CompletedProcess[str] | None) -> None:
    assert done is not None
    status, _, location = done.stdout.strip().partition(" ")
    assert status == "303", done.stdout
    assert f"http://127.0.0.1:{tour.port}/_gatehouse/login?rd=" in location


def after_user_and_export(tour: Tour, done: subprocess.CompletedProcess[str] | None) -> None:
    assert done is not None
    assert done.stdout.startswith("group 'staff' added\nuser 'alice' added\n"), done.stdout
    password = re.search(r"^password: (\S+)$", done.stdout, re.MULTILINE)
    assert password, done.stdout
    tour.passwords["alice"] = password.group(1)
    exported = (tour.cwd / "mine.yaml").read_text()
    assert "\nrules: {}\n" in exported
    assert "\n  demo: authenticated\n" in exported


def after_edit(tour: Tour, done: subprocess.CompletedProcess[str] | None) -> None:
    edited = (tour.cwd / "mine.yaml").read_text()
    assert "\nrules: {staff: {groups_any: [staff]}}\n" in edited
    assert "\n  demo: {rule: staff}\n" in edited


def after_publish(tour: Tour, done: subprocess.CompletedProcess[str] | None) -> None:
    assert done is not None
    assert done.stdout.startswith("draft saved from mine.yaml"), done.stdout
    assert "+    rule: staff\n" in done.stdout  # the diff
    assert "published version 2\n" in done.stdout
    assert done.stdout.endswith("4 of 4 services run version 2\n")
    assert tour.demo is not None
    # demo's session now gets 403, with a way to sign out and in as someone else.
    until(lambda: tour.demo is not None and tour.demo.get("/hello").status == 403, "no 403")
    assert f'href="{LOGOUT}?rd=%2Fhello"'.encode() in tour.demo.get("/hello").body
    alice = signed_in(tour, "alice")
    page = alice.get("/hello")
    assert page.status == 200
    assert echoed_headers(page)["remote-user"] == "alice"


def after_status_and_rollback(tour: Tour, done: subprocess.CompletedProcess[str] | None) -> None:
    assert done is not None
    rows = [line.split() for line in done.stdout.splitlines()[1:5]]
    # SERVICE ROLE NODE VERSION LAST SEEN(2) HEALTHY CERTIFICATE (expires ...)
    assert all(row[7] == "expires" for row in rows), done.stdout
    assert sorted((row[0], row[3], row[6]) for row in rows) == [
        ("ap1", "2", "yes"),
        ("auth1", "2", "yes"),
        ("dist1", "2", "yes"),
        ("ps1", "2", "yes"),
    ], done.stdout
    assert "published version 3: the configuration of version 1\n" in done.stdout
    assert done.stdout.endswith("4 of 4 services run version 3\n")
    until(lambda: tour.demo is not None and tour.demo.get("/hello").status == 200, "no way back")


def before_unlock(tour: Tour) -> None:
    """Lock demo out the way a person would: five wrong passwords on the sign-in page."""
    browser = tour.browser()
    for _ in range(5):
        assert browser.login("demo", "not the password").status == 200
    page = browser.login("demo", tour.passwords["demo"])
    assert page.status == 200, "signed in while locked"
    text = page.body.decode()
    assert re.search(r"locked until <time datetime=\"[^\"]+\">\d\d:\d\d", text), text
    assert "an administrator can unlock your account" in text


def after_unlock(tour: Tour, done: subprocess.CompletedProcess[str] | None) -> None:
    assert done is not None
    assert done.stdout == "user 'demo' unlocked\n"
    signed_in(tour, "demo")


def before_oathtool(tour: Tour) -> None:
    """demo, signed in with the password, opens /secure/: the portal offers to set up an
    authenticator app and shows the key."""
    assert tour.demo is not None
    hello = tour.demo.get("/hello")
    assert echoed_headers(hello)["remote-auth-methods"] == "password"
    page = follow(tour.demo, "/secure/")
    assert page.status == 200, page.body[:500]
    if SECRET_SHOWN.search(page.body.decode()) is None:  # the offer: one button to set up
        page = submit(tour.demo, page, "otp/enrol")
    assert page.status == 200, page.body[:500]
    shown = SECRET_SHOWN.search(page.body.decode())
    assert shown, page.body[:2000]
    tour.key, tour.enrol_page = shown.group(1), page


def after_oathtool(tour: Tour, done: subprocess.CompletedProcess[str] | None) -> None:
    assert done is not None
    code = done.stdout.strip()
    assert re.fullmatch(r"\d{6}", code), done.stdout
    assert tour.demo is not None
    assert tour.enrol_page is not None
    let_in = submit(tour.demo, tour.enrol_page, "otp/confirm", code=code)
    assert let_in.status == 303, let_in.body[:1000]
    assert let_in.location.endswith("/secure/"), let_in.location
    page = tour.demo.get("/secure/")
    assert page.status == 200, page.body[:300]
    headers = echoed_headers(page)
    assert headers["remote-user"] == "demo"
    assert headers["remote-auth-methods"] == "password,otp"


def after_tokens_add(tour: Tour, done: subprocess.CompletedProcess[str] | None) -> None:
    assert done is not None
    added = re.match(
        r"token (\S+) added for 'alice'\nserial: (\S+)\nuri: (otpauth://totp/\S+)\n", done.stdout
    )
    assert added, done.stdout
    serial, uri = added.group(1), added.group(3)
    assert added.group(2) == serial
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith(serial)]
    assert [row[1:3] + row[6:7] for row in rows] == [["alice", "totp", "active"]], done.stdout
    # alice's app, given the URI, lets her into /secure/ after her password.
    token = parse_uri(uri)
    alice = tour.browser()
    login = follow(alice, "/secure/")
    assert login.status == 200, login.body[:300]
    code_page = submit(alice, login, "login", username="alice", password=tour.passwords["alice"])
    assert b"Enter your one-time code" in code_page.body, code_page.body[:1000]
    params = token.params
    code = otp.totp(token.secret, time.time(), params.period, params.digits, params.algorithm)
    let_in = submit(alice, code_page, "otp", code=code)
    assert let_in.status == 303, let_in.body[:1000]
    assert echoed_headers(alice.get("/secure/"))["remote-auth-methods"] == "password,otp"


def mails(tour: Tour) -> list[dict[str, str]]:
    """What the demo mail server received, newest first, read through the Access Point."""
    answer = tour.browser().get("/public/mail.json")
    assert answer.status == 200, answer.body[:300]
    document: list[dict[str, str]] = answer.json()
    return document


def before_mail_code(tour: Tour) -> None:
    """demo, signed in, opens /secure-email/ and has a code sent (the page's one button)."""
    assert tour.demo is not None
    offer = follow(tour.demo, "/secure-email/")
    assert offer.status == 200, offer.body[:500]
    assert b"a one-time code sent to your e-mail address" in offer.body, offer.body[:2000]
    sent = submit(tour.demo, offer, "code/send")
    assert sent.status == 303, sent.body[:1000]
    page = follow(tour.demo, sent.location)
    assert page.status == 200, page.body[:500]
    assert b"d***@example.org" in page.body, page.body[:2000]
    tour.code_page = page
    until(lambda: bool(mails(tour)), "no mail at /public/mail.json")


def after_mail_code(tour: Tour, done: subprocess.CompletedProcess[str] | None) -> None:
    assert done is not None
    code = re.fullmatch(r"code is (\d{6})", done.stdout.strip())
    assert code, done.stdout
    assert mails(tour)[0]["recipient"] == "demo@example.org"
    assert tour.demo is not None
    assert tour.code_page is not None
    let_in = submit(tour.demo, tour.code_page, "code", code=code.group(1))
    assert let_in.status == 303, let_in.body[:1000]
    assert let_in.location.endswith("/secure-email/"), let_in.location
    page = tour.demo.get("/secure-email/")
    assert page.status == 200, page.body[:300]
    headers = echoed_headers(page)
    assert headers["remote-user"] == "demo"
    assert "email_otp" in headers["remote-auth-methods"].split(","), headers


def after_invite(tour: Tour, done: subprocess.CompletedProcess[str] | None) -> None:
    assert done is not None
    assert re.match(r"invitation [0-9a-f]+ for 'demo' \(d\*\*\*@example\.org\) until ", done.stdout)
    link = re.compile(rf"http://127\.0\.0\.1:{tour.port}(/_gatehouse/enrol/invite\?t=[\w-]+)")

    def invitation() -> re.Match[str] | None:
        newest = mails(tour)[0]
        return link.search(newest["text"]) if newest["subject"] != "Your sign-in code" else None

    until(lambda: invitation() is not None, "no invitation at /public/mail.json")
    found = invitation()
    assert found is not None
    assert tour.demo is not None
    offer = tour.demo.get(found.group(1))
    assert offer.status == 200, offer.body[:500]
    assert b'id="invited-user">demo<' in offer.body


def after_spoof(tour: Tour, done: subprocess.CompletedProcess[str] | None) -> None:
    assert done is not None
    assert (done.returncode, done.stdout) == (1, "")  # grep found nothing
    # ...and the request did reach the backend.
    assert tour.browser().get("/public/").status == 200


def after_smuggle(tour: Tour, done: subprocess.CompletedProcess[str] | None) -> None:
    assert done is not None
    assert done.stdout.strip() == "HTTP/1.1 400 Bad Request"


def after_health_and_download(tour: Tour, done: subprocess.CompletedProcess[str] | None) -> None:
    assert done is not None
    lines = done.stdout.splitlines()
    health, status, download = lines[0], lines[1:-1], lines[-1]
    assert json.loads(health) == {"status": "ok"}  # up, and nothing more on the public port
    # The versions are in `gatehouse config status`: every service runs version 3.
    rows = [line.split() for line in status[1:5]]
    assert sorted((row[0], row[3]) for row in rows) == [
        ("ap1", "3"),
        ("auth1", "3"),
        ("dist1", "3"),
        ("ps1", "3"),
    ], status
    assert status[-1] == "newest version: 3", status
    assert download == "200 1000000000 bytes"


Check = Callable[[Tour, "subprocess.CompletedProcess[str] | None"], None]
#: A line each block starts with (its identity), what to do before it, and what it promises.
STEPS: list[tuple[str, Callable[[Tour], None] | None, Check]] = [
    ("make run", None, after_start),
    ("curl -s -o /dev/null -w '%{http_code} %{redirect_url}", None, after_redirect_curl),
    (".venv/bin/gatehouse groups add staff --home var", None, after_user_and_export),
    ("sed -i", None, after_edit),
    (".venv/bin/gatehouse config apply mine.yaml --home var", None, after_publish),
    (".venv/bin/gatehouse config status --home var", None, after_status_and_rollback),
    (".venv/bin/gatehouse users unlock demo --home var", before_unlock, after_unlock),
    ("oathtool --totp -b", before_oathtool, after_oathtool),
    (".venv/bin/gatehouse tokens add alice --home var", None, after_tokens_add),
    ("curl -s http://127.0.0.1:8080/public/mail.json", before_mail_code, after_mail_code),
    (".venv/bin/gatehouse tokens invite demo --home var", None, after_invite),
    ("curl -s -H 'Remote-User: admin'", None, after_spoof),
    ("printf 'POST / HTTP/1.1", None, after_smuggle),
    ("curl -s -w '\\n' http://127.0.0.1:8080/_gatehouse/health", None, after_health_and_download),
]


@pytest.fixture
def tour(tmp_path: Path) -> Iterator[Tour]:
    if shutil.which("curl") is None:
        missing("curl is not installed (apt-get install curl)")
    if shutil.which("oathtool") is None:
        missing("oathtool is not installed (apt-get install oathtool): the tour computes a code")
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    started = Tour(tmp_path, free_port())
    try:
        yield started
    finally:
        started.stop()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_the_readme_tour_works_as_written(tour: Tour) -> None:
    blocks = tour_blocks(README.read_text())
    starts = [block.splitlines()[0] for block in blocks]
    expected = [prefix for prefix, _, _ in STEPS]
    assert len(starts) == len(expected), f"the tour's command blocks changed: {starts}"
    for first_line, prefix in zip(starts, expected, strict=True):
        assert first_line.startswith(prefix), f"the tour's blocks changed: {first_line!r}"
    for block, (_, before, after) in zip(blocks, STEPS, strict=True):
        if before is not None:
            before(tour)
        if block == "make run":
            tour.start_node(make_run_command())
            after(tour, None)
            continue
        done = tour.run(block)
        assert "Traceback" not in done.stderr, done.stderr
        if after not in (after_spoof,):
            assert done.returncode == 0, f"{block}\n{done.stdout}\n{done.stderr}"
        after(tour, done)
    # Ctrl-C stops everything (step 10 begins with it).
    tour.stop()
    assert tour.proc is not None
    assert tour.proc.returncode == 0, tour.output()


# --- step 10: the HA cluster -----------------------------------------------------------------


@dataclass
class HATour:
    """The cluster step in a short directory (HAProxy's socket lives under it) where
    ``examples/ha-cluster.yaml`` — the default topology — is the example on free ports."""

    cwd: Path
    url: str = ""
    demo: Browser | None = None

    @property
    def home(self) -> Path:
        return self.cwd / "var" / "cluster"  # the default home, as the README uses it

    def run(self, block: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "GATEHOUSE_HOME"}
        return subprocess.run(
            ["bash", "-c", block],
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env=env,
        )

    def browser(self) -> Browser:
        host, _, port = self.url.removeprefix("http://").rstrip("/").rpartition(":")
        return Browser(host, int(port))

    def status(self) -> ClusterStatus:
        return Cluster.open(self.home).status()


def after_cluster_up(tour: HATour, done: subprocess.CompletedProcess[str]) -> None:
    up = re.search(r"^Gatehouse cluster is up: open (\S+)$", done.stdout, re.MULTILINE)
    password = re.search(r"^Demo user: demo  password: (\S+)", done.stdout, re.MULTILINE)
    assert up, done.stdout
    assert password, done.stdout
    tour.url = up.group(1)
    demo = tour.browser()
    assert demo.login("demo", password.group(1), rd="/hello").status == 303
    page = demo.get("/hello")
    assert page.status == 200, page.body[:300]
    assert echoed_headers(page)["remote-user"] == "demo"
    tour.demo = demo


def after_kill_ps1(tour: HATour, done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 1, done.stdout + done.stderr  # status: not everything healthy
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[1:] if line.strip()}
    assert " stopped " in rows["ps1"], done.stdout
    assert "ps2" in rows["ap1"].split(maxsplit=7)[-1], done.stdout  # ap1's detail: uses ps2
    assert tour.demo is not None
    assert [tour.demo.get(f"/hello/{i}").status for i in range(10)] == [200] * 10


def after_start_ps1(tour: HATour, done: subprocess.CompletedProcess[str]) -> None:
    deadline = time.monotonic() + 30
    while not ((status := tour.status()).healthy and status["ap1"].prefers == "ps1"):
        assert time.monotonic() < deadline, f"ap1 did not fail back to ps1:\n{status}"
        time.sleep(0.2)
    assert tour.demo is not None
    assert tour.demo.get("/hello").status == 200


def after_failover_db(tour: HATour, done: subprocess.CompletedProcess[str]) -> None:
    status = tour.status()
    assert status["pg2"].state == "primary", status
    assert tour.demo is not None
    # Still signed in: the session lives in the database the standby held too.
    deadline = time.monotonic() + 30
    while (answer := tour.demo.get("/hello")).status != 200:
        assert answer.status in (502, 503), answer.body[:300]  # during the switch only
        assert time.monotonic() < deadline, "the session did not survive the database failover"
        time.sleep(0.2)
    assert echoed_headers(answer)["remote-user"] == "demo"


def after_down(tour: HATour, done: subprocess.CompletedProcess[str]) -> None:
    assert Cluster.open(tour.home).running() == []


HA_STEPS: list[tuple[str, Callable[[HATour, subprocess.CompletedProcess[str]], None]]] = [
    (".venv/bin/gatehouse cluster up", after_cluster_up),
    (".venv/bin/gatehouse cluster kill ps1", after_kill_ps1),
    (".venv/bin/gatehouse cluster start ps1", after_start_ps1),
    (".venv/bin/gatehouse cluster failover-db", after_failover_db),
    (".venv/bin/gatehouse cluster down", after_down),
]


@pytest.fixture
def ha_tour() -> Iterator[HATour]:
    if find_haproxy() is None:
        missing("HAProxy is not installed (apt-get install haproxy)")
    require_bindir()
    cwd = Path(tempfile.mkdtemp(prefix="gh-tour-"))
    cwd.chmod(0o755)  # the postgres user traverses it
    (cwd / ".venv").symlink_to(Path(sys.prefix))
    (cwd / "examples").mkdir()
    free_topology(cwd / "examples" / "ha-cluster.yaml")
    tour = HATour(cwd)
    try:
        yield tour
    finally:
        if (tour.home / "topology.yaml").exists():
            Cluster.open(tour.home).down()
        shutil.rmtree(cwd, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_the_readme_ha_step_works_as_written(ha_tour: HATour) -> None:
    blocks = tour_blocks(README.read_text(), ha=True)
    expected = [prefix for prefix, _ in HA_STEPS]
    assert [block.splitlines()[0] for block in blocks] == expected, "the HA step's blocks changed"
    for block, (_, after) in zip(blocks, HA_STEPS, strict=True):
        done = ha_tour.run(block)
        assert "Traceback" not in done.stderr, done.stderr
        if after is not after_kill_ps1:
            assert done.returncode == 0, f"{block}\n{done.stdout}\n{done.stderr}"
        after(ha_tour, done)
