"""The demo mail sink: real SMTP into a real demo backend process, read back over HTTP."""

from __future__ import annotations

import http.client
import json
import smtplib
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from gatehouse.demo_backend.mail_sink import MailBox, linked, parse_mail
from tests.support.processes import Service, free_port, wait_port


class Backend:
    def __init__(self, svc: Service, smtp_port: int) -> None:
        self.svc = svc
        self.smtp_port = smtp_port

    def get(self, path: str) -> tuple[int, http.client.HTTPResponse, bytes]:
        conn = http.client.HTTPConnection(self.svc.host, self.svc.port, timeout=10)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp, resp.read()
        finally:
            conn.close()

    def mail(self, path: str = "/mail.json") -> list[dict[str, Any]]:
        status, resp, body = self.get(path)
        assert status == 200
        assert resp.headers["Content-Type"] == "application/json"
        document: list[dict[str, Any]] = json.loads(body)
        return document

    def send(self, to: str, subject: str, text: str, message_id: str | None = None) -> None:
        message = EmailMessage()
        message["From"] = "gatehouse@example.org"
        message["To"] = to
        message["Subject"] = subject
        if message_id is not None:
            message["Message-ID"] = message_id
        message.set_content(text)
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=10) as client:
            client.send_message(message)


def start(tmp_path: Path, *more: str) -> Backend:
    port, smtp_port = free_port(), free_port()
    listen = ["--listen", f"127.0.0.1:{port}", "--smtp", f"127.0.0.1:{smtp_port}"]
    svc = Service(
        ["demo-backend", *listen, *more],
        tmp_path / "backend.log",
        "127.0.0.1",
        port,
    )
    svc.wait_ready()
    wait_port("127.0.0.1", smtp_port, proc=svc.proc)
    return Backend(svc, smtp_port)


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    started = start(tmp_path)
    try:
        yield started
    finally:
        assert started.svc.stop() == 0


def test_mail_sent_over_smtp_is_listed_newest_first(backend: Backend) -> None:
    assert backend.mail() == []
    before = datetime.now(UTC)
    backend.send("alice@example.org", "Your code", "Your code is 123456.\n", "<m1@gatehouse>")
    backend.send("bob@example.org", "Invitation", "Open http://x/enrol/invite?t=abc\n")
    listed = backend.mail()
    assert [m["recipient"] for m in listed] == ["bob@example.org", "alice@example.org"]
    alice = listed[1]
    assert alice["subject"] == "Your code"
    assert alice["text"] == "Your code is 123456.\n"
    assert alice["message_id"] == "<m1@gatehouse>"
    assert listed[0]["message_id"] is None
    received = datetime.fromisoformat(alice["time"])
    assert before.replace(microsecond=0) <= received <= datetime.now(UTC)
    # The same list behind any prefix, as the AP's /public route forwards it.
    assert backend.mail("/public/mail.json") == listed

    status, resp, body = backend.get("/public/mail")
    assert status == 200
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    page = body.decode()
    assert page.index("bob@example.org") < page.index("alice@example.org")
    assert "Your code is 123456." in page
    assert 'Open <a href="http://x/enrol/invite?t=abc">http://x/enrol/invite?t=abc</a>' in page
    assert "Invitation" in page
    assert alice["time"] in page


def test_hostile_subject_and_text_are_escaped(backend: Backend) -> None:
    hostile = '<script>alert("x")</script>'
    backend.send("mallory@example.org", hostile, f"<img src=x onerror=alert(1)> & {hostile}")
    assert backend.mail()[0]["subject"] == hostile
    status, resp, body = backend.get("/mail")
    assert status == 200
    page = body.decode()
    assert "<script>" not in page
    assert "<img" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt; &amp; " in page
    # A browser would not run an inline script even if one slipped through.
    assert "default-src 'none'" in resp.headers["Content-Security-Policy"]


def test_urls_in_the_text_are_links_and_nothing_else_is_markup() -> None:
    text = 'Open http://gw.test/_gatehouse/enrol/invite?t=a-b_c&x=1 now. <b>"javascript:x"</b>'
    assert linked(text) == (
        'Open <a href="http://gw.test/_gatehouse/enrol/invite?t=a-b_c&amp;x=1">'
        "http://gw.test/_gatehouse/enrol/invite?t=a-b_c&amp;x=1</a> now. "
        "&lt;b&gt;&quot;javascript:x&quot;&lt;/b&gt;"
    )
    assert linked('see https://a.test/"onmouseover=x') == (
        'see <a href="https://a.test/">https://a.test/</a>&quot;onmouseover=x'
    )


def test_other_paths_still_echo(backend: Backend) -> None:
    status, _, body = backend.get("/secure-email/page?x=1")
    assert status == 200
    assert json.loads(body)["path"] == "/secure-email/page"


def test_keeps_only_the_newest(tmp_path: Path) -> None:
    backend = start(tmp_path, "--mail-keep", "3")
    try:
        for number in range(5):
            backend.send(f"u{number}@example.org", f"m{number}", "text")
        assert [m["subject"] for m in backend.mail()] == ["m4", "m3", "m2"]
    finally:
        assert backend.svc.stop() == 0


def test_without_smtp_the_mail_paths_echo(demo_backend: Service) -> None:
    conn = http.client.HTTPConnection(demo_backend.host, demo_backend.port, timeout=10)
    try:
        conn.request("GET", "/mail.json")
        document = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    assert document["path"] == "/mail.json"


def test_busy_smtp_port_is_a_clear_startup_failure(tmp_path: Path, backend: Backend) -> None:
    port = free_port()
    listen = ["--listen", f"127.0.0.1:{port}", "--smtp", f"127.0.0.1:{backend.smtp_port}"]
    svc = Service(
        ["demo-backend", *listen],
        tmp_path / "second.log",
        "127.0.0.1",
        port,
    )
    try:
        assert svc.proc.wait(15) != 0
        output = svc.output()
    finally:
        svc.stop()
    assert f"demo mail sink: cannot listen on 127.0.0.1:{backend.smtp_port}" in output


def test_parse_mail_takes_the_plain_part_of_a_multipart_message() -> None:
    message = EmailMessage()
    message["Subject"] = "Grüße"
    message.set_content("Käse: 42\n")
    message.add_alternative("<p>Käse: <b>42</b></p>", subtype="html")
    mail = parse_mail(
        message.as_bytes(), ["a@example.org", "b@example.org"], datetime(2026, 1, 2, tzinfo=UTC)
    )
    assert mail.recipient == "a@example.org, b@example.org"
    assert mail.subject == "Grüße"
    assert mail.text == "Käse: 42\n"
    assert mail.time == "2026-01-02T00:00:00.000Z"
    box = MailBox(keep=1)
    box.add(mail)
    assert box.newest_first() == [mail]
