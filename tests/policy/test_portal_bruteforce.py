"""The portal against brute force and forced sign-ins: trusted-device cookies, CSRF values
bound to the client, and the page for an overloaded Authentication service.

Real processes on loopback (harness in ``test_service.py``). The stack's lockout: 3 failures
per account lock it for 120 s.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from tests.policy.test_portal import FORM, attributes, cookie_header
from tests.policy.test_service import (
    PASSWORD,
    PREFIX,
    Browser,
    Policy,
    Stack,
    add_user,
    ps,
    stack,
)
from tests.support.processes import Service, free_port, write_config

__all__ = ["ps", "stack"]

LOCKED = "Too many failed attempts. This account is locked until"


def at(ip: str) -> dict[str, str]:
    """Headers of a request the trusted Access Point relays from ``ip``."""
    return {"X-Forwarded-For": ip}


def test_a_browser_that_signed_in_before_is_not_locked_out(stack: Stack, ps: Policy) -> None:
    add_user(stack.home, "erin")
    add_user(stack.home, "frank")
    trusted = Browser(ps)
    assert trusted.login("erin", headers=at("198.51.100.20")).status == 303
    header = cookie_header(trusted, "gatehouse_device")
    assert {"httponly", "path", "samesite", "max-age"} <= attributes(header)
    assert f"Path={PREFIX};" in header
    assert "SameSite=Strict" in header
    assert "Max-Age=7776000" in header  # 90 days
    # Someone else guesses erin's password from elsewhere until the account locks...
    attacker = Browser(ps)
    for n in range(3):
        reply = attacker.login("erin", "guess", headers=at(f"203.0.113.{n}"))
        assert "Wrong user name or password." in reply.body
    assert LOCKED in attacker.login("erin", PASSWORD, headers=at("203.0.113.9")).body
    # ...and a new browser is refused too, even with the right password...
    newcomer = Browser(ps)
    assert LOCKED in newcomer.login("erin", PASSWORD, headers=at("198.51.100.20")).body
    assert newcomer.session is None
    # ...but erin's own browser signs in, from any address.
    assert trusted.login("erin", headers=at("192.0.2.77")).status == 303
    # The cookie is bound to erin: with frank's name it counts for nothing.
    for n in range(3):
        attacker.login("frank", "guess", headers=at(f"203.0.113.{n}"))
    borrowed = Browser(ps, cookies={"gatehouse_device": trusted.cookies["gatehouse_device"]})
    assert LOCKED in borrowed.login("frank", PASSWORD, headers=at("198.51.100.20")).body
    # A forged or altered cookie is just no cookie.
    forged = Browser(ps, cookies={"gatehouse_device": "AAAAAAAAAAA.99999999999." + "A" * 43})
    assert LOCKED in forged.login("erin", PASSWORD).body


def test_a_planted_csrf_pair_from_another_browser_is_refused(ps: Policy) -> None:
    attacker = Browser(ps)
    value = attacker.login_form("/app", headers=at("203.0.113.66"))
    planted = attacker.cookies["gatehouse_csrf"]
    victim = Browser(ps, cookies={"gatehouse_csrf": planted})
    form = {"username": "bob", "password": PASSWORD, "csrf": value, "rd": "/app"}
    reply = victim.post(FORM, form, headers=at("198.51.100.5"))
    assert reply.status == 403
    assert "This form has expired" in reply.body
    assert victim.session is None
    # The pair works only where it was fetched (which is the attacker's own browser).
    assert attacker.post(FORM, form, headers=at("203.0.113.66")).status == 303
    # A browser that says the form came from another site is refused, whatever it carries.
    own = Browser(ps)
    good = own.login_form("/app", headers=at("198.51.100.5"))
    cross = {**at("198.51.100.5"), "Sec-Fetch-Site": "cross-site"}
    assert own.post(FORM, {**form, "csrf": good}, headers=cross).status == 403
    same = {**at("198.51.100.5"), "Sec-Fetch-Site": "same-origin"}
    assert own.post(FORM, {**form, "csrf": good}, headers=same).status == 303


def test_an_overloaded_authentication_service_gets_a_503_page(stack: Stack) -> None:
    port = free_port()
    config = {
        "authentication": {
            "id": "busy",
            "listen": f"127.0.0.1:{port}",
            "verify_queue": 0,
            "lockout": {
                "insecure_no_rate_cap": True,
                "account_max_failures": 1000,
                "ip_max_failures": 100_000,
            },
        }
    }
    busy = Service(
        [
            "authentication",
            "--config",
            str(write_config(stack.tmp / "busy.yaml", config)),
            "--home",
            str(stack.home),
        ],
        stack.tmp / "busy.log",
        "127.0.0.1",
        port,
    ).wait_ready()
    try:
        policy = stack.start_policy({"authentication": [f"http://127.0.0.1:{port}"]})
        browsers = [Browser(policy) for _ in range(40)]
        values = [b.login_form("/app") for b in browsers]
        go = threading.Barrier(len(browsers))

        def post(n: int) -> tuple[int, str]:
            form = {"username": "bob", "password": "guess", "csrf": values[n], "rd": "/app"}
            go.wait()
            reply = browsers[n].post(FORM, form)
            return reply.status, reply.body

        with ThreadPoolExecutor(len(browsers)) as pool:
            replies = list(pool.map(post, range(len(browsers))))
        statuses = {status for status, _ in replies}
        assert statuses <= {200, 503}, statuses
        refused = [body for status, body in replies if status == 503]
        assert refused, "the flood never filled the queue"
        assert all(
            "Too many sign-ins right now. Please try again in a moment." in b for b in refused
        )
        # Once the flood is over, signing in works at once.
        assert Browser(policy).login("bob").status == 303
    finally:
        busy.stop()
