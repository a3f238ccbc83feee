"""The signed double-submit token of the portal's forms."""

from __future__ import annotations

import stat
from pathlib import Path

from gatehouse.policy.csrf import CsrfGuard, load_or_create_key

KEY = b"k" * 32


IP = "198.51.100.4"


def test_form_value_signs_the_cookie_token_for_the_client() -> None:
    guard = CsrfGuard(KEY)
    token = guard.new_token()
    assert guard.well_formed(token)
    assert guard.check(token, guard.form_value(token, IP), IP)


def test_refuses_missing_wrong_and_foreign_values() -> None:
    guard = CsrfGuard(KEY)
    token = guard.new_token()
    other = guard.new_token()
    assert not guard.check(None, guard.form_value(token, IP), IP)
    assert not guard.check(token, None, IP)
    assert not guard.check(token, "", IP)
    assert not guard.check(token, guard.form_value(other, IP), IP)
    # Plain double submit (the token itself in the form) is not enough: it must be signed.
    assert not guard.check(token, token, IP)
    # A value signed under another key (another installation) is refused.
    assert not guard.check(token, CsrfGuard(b"x" * 32).form_value(token, IP), IP)
    # A planted cookie that is not a token of ours is refused even with its own "signature".
    assert not guard.check("short", guard.form_value("short", IP), IP)


def test_a_pair_fetched_by_another_client_is_refused() -> None:
    """A forced sign-in: the attacker fetches a form (cookie token and value) with their own
    browser and plants both in the victim's. The value was signed for the attacker's
    address, so the victim's POST does not carry a valid one."""
    guard = CsrfGuard(KEY)
    planted = guard.new_token()
    value = guard.form_value(planted, "203.0.113.66")
    assert guard.check(planted, value, "203.0.113.66")
    assert not guard.check(planted, value, IP)
    # The binding is not a prefix trick either.
    assert guard.form_value(planted, "1.2.3.4") != guard.form_value(planted, "1.2.3.45")


def test_a_refusal_says_why_without_the_secrets() -> None:
    guard = CsrfGuard(KEY)
    token = guard.new_token()
    value = guard.form_value(token, "203.0.113.66")
    assert guard.refusal(None, value, IP) == "the browser sent no CSRF cookie"
    assert guard.refusal("short", value, IP) == "the browser's CSRF cookie is malformed"
    assert guard.refusal(token, None, IP) == "the form has no CSRF field"
    assert guard.refusal(token, value, "203.0.113.66") is None
    wrong = guard.refusal(token, value, IP)
    assert wrong == f"the form's CSRF field does not sign the browser's cookie for address {IP}"
    assert token not in wrong
    assert value not in wrong


def test_token_for_keeps_a_sound_cookie_and_replaces_junk() -> None:
    guard = CsrfGuard(KEY)
    token = guard.new_token()
    assert guard.token_for(token) == token
    assert guard.token_for("junk") != "junk"
    assert guard.well_formed(guard.token_for(None))


def test_key_file_is_created_once_private(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "csrf.key"
    first = load_or_create_key(path)
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == first
    assert list(path.parent.iterdir()) == [path]
