"""The signed double-submit token of the portal's forms."""

from __future__ import annotations

import stat
from pathlib import Path

from gatehouse.policy.csrf import CsrfGuard, load_or_create_key

KEY = b"k" * 32


def test_form_value_signs_the_cookie_token() -> None:
    guard = CsrfGuard(KEY)
    token = guard.new_token()
    assert guard.well_formed(token)
    assert guard.check(token, guard.form_value(token))


def test_refuses_missing_wrong_and_foreign_values() -> None:
    guard = CsrfGuard(KEY)
    token = guard.new_token()
    other = guard.new_token()
    assert not guard.check(None, guard.form_value(token))
    assert not guard.check(token, None)
    assert not guard.check(token, "")
    assert not guard.check(token, guard.form_value(other))
    # Plain double submit (the token itself in the form) is not enough: it must be signed.
    assert not guard.check(token, token)
    # A value signed under another key (another installation) is refused.
    assert not guard.check(token, CsrfGuard(b"x" * 32).form_value(token))
    # A planted cookie that is not a token of ours is refused even with its own "signature".
    assert not guard.check("short", guard.form_value("short"))


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
