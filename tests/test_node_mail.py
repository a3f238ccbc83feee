"""The single node's demo mail, end to end through ``gatehouse up``: the demo backend's mail
server receives what the node's Distribution service sends, and anyone reads it through the
Access Point at ``/public/mail`` and ``/public/mail.json``: a code for ``/secure-email/``
(password + ``email_otp``) and a token invitation's link, each used from there."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from tests.support.gateway import Browser, echoed_headers
from tests.support.node import Node, node
from tests.test_readme_tour import follow, submit

__all__ = ["node"]

CODE = re.compile(r"\b(\d{6,8})\b")


def mails(node: Node) -> list[dict[str, Any]]:
    answer = Browser("127.0.0.1", node.port).get("/public/mail.json")
    assert answer.status == 200, answer.body[:300]
    assert answer.headers["content-type"] == "application/json"
    document: list[dict[str, Any]] = json.loads(answer.body)
    return document


def wait_for_mail(node: Node, count: int, timeout: float = 20.0) -> dict[str, Any]:
    """The newest mail once there are ``count``."""
    deadline = time.monotonic() + timeout
    while len(found := mails(node)) < count:
        assert time.monotonic() < deadline, f"{count} mails not received: {found}"
        time.sleep(0.1)
    return found[0]


def demo_password(node: Node) -> str:
    match = re.search(r"Sign in as demo with password (\S+) \(shown only", node.output())
    assert match, node.output()
    return match.group(1)


def test_codes_and_invitations_by_the_demo_mail(node: Node) -> None:
    node.wait_for("Gatehouse is up")
    password = demo_password(node)
    assert mails(node) == []

    # /secure-email/: the password, then a code the portal had sent to demo's address.
    demo = Browser("127.0.0.1", node.port)
    login = follow(demo, "/secure-email/")
    assert login.status == 200, login.body[:300]
    sent = submit(demo, login, "login", username="demo", password=password)
    assert sent.status == 303, sent.body[:500]
    page = follow(demo, sent.location)
    assert b"d***@example.org" in page.body, page.body[:2000]
    mail = wait_for_mail(node, 1)
    assert mail["recipient"] == "demo@example.org"
    code = CODE.search(mail["text"])
    assert code, mail
    let_in = submit(demo, page, "code", code=code.group(1))
    assert let_in.status == 303, let_in.body[:1000]
    headers = echoed_headers(demo.get("/secure-email/"))
    assert headers["remote-user"] == "demo"
    assert headers["remote-auth-methods"] == "password,email_otp"
    listed = Browser("127.0.0.1", node.port).get("/public/mail")
    assert listed.status == 200
    assert code.group(1).encode() in listed.body

    # A token invitation: the link in the mail points at this Access Point.
    invited = node.cli("tokens", "invite", "demo")
    assert invited.returncode == 0, invited.stderr
    mail = wait_for_mail(node, 2)
    assert mail["subject"] == "Set up your authenticator app"
    link = re.search(
        rf"http://127\.0\.0\.1:{node.port}(/_gatehouse/enrol/invite\?t=\S+)", mail["text"]
    )
    assert link, mail["text"]
    offer = demo.get(link.group(1))
    assert offer.status == 200, offer.body[:500]
    assert b'id="invited-user">demo<' in offer.body
