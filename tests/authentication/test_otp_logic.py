"""The pure parts of the OTP checks (authentication/otp.py), from tables and properties, and
the ``otp`` settings in the service's config and in the view Admin publishes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatehouse.administration.model import InstallationConfig
from gatehouse.administration.views import view_for
from gatehouse.authentication.app import check_view, restart_only_changes
from gatehouse.authentication.config import AuthenticationConfig, AuthenticationSettings
from gatehouse.authentication.otp import (
    Fresh,
    Replay,
    Rules,
    choose,
    examine,
    new_serial,
    retry_after,
    well_formed,
)
from gatehouse.config.loader import validate
from gatehouse.errors import ConfigError
from gatehouse.oath.otp import hotp, time_step
from gatehouse.oath.store import TokenRow, check_serial
from tests.administration.samples import ha

SEED = b"12345678901234567890"
NOW = 1_800_000_000.0
STEP = time_step(NOW, 30)
WHEN = datetime(2030, 1, 1, tzinfo=UTC)
A, B = "attempt-aaaaaaaaaa", "attempt-bbbbbbbbbb"


def token(**change: Any) -> TokenRow:
    base = TokenRow(
        id=1,
        serial="T1",
        owner="alice",
        type="totp",
        algorithm="sha1",
        digits=6,
        period=30,
        seed_key_id="k",
        seed_ciphertext=b"",
        counter=0,
        last_step=-1,
        drift=0,
        failures=0,
        state="active",
        locked_until=None,
        description="",
        created_at=WHEN,
        last_used_at=None,
    )
    return replace(base, **change)


def code(step: int, digits: int = 6) -> str:
    return hotp(SEED, step, digits, "sha1")


@given(offset=st.integers(-3, 3), window=st.integers(0, 3))
def test_a_totp_code_within_the_window_is_fresh_with_its_drift(offset: int, window: int) -> None:
    found = examine(token(), SEED, code(STEP + offset), A, NOW, Rules(window=window))
    if abs(offset) <= window:
        assert found == Fresh(token(), STEP + offset, offset)
    else:
        assert found is None


@given(last=st.integers(STEP - 2, STEP + 2), offset=st.integers(-1, 1))
def test_a_step_at_or_before_the_last_accepted_is_never_fresh(last: int, offset: int) -> None:
    used = token(last_step=last, last_attempt=B)
    found = examine(used, SEED, code(STEP + offset), A, NOW, Rules())
    if STEP + offset > last:
        assert isinstance(found, Fresh)
        assert not found.retry
    else:
        assert found == Replay(used)


def test_only_the_attempt_that_consumed_a_step_is_a_retry() -> None:
    used = token(last_step=STEP, last_attempt=A)
    assert examine(used, SEED, code(STEP), A, NOW, Rules()) == Fresh(used, STEP, 0, retry=True)
    assert examine(used, SEED, code(STEP), B, NOW, Rules()) == Replay(used)
    # An earlier step, even by the same attempt, is a replay.
    assert examine(used, SEED, code(STEP - 1), A, NOW, Rules()) == Replay(used)


def test_hotp_look_ahead_replay_and_retry() -> None:
    fresh = token(type="hotp", counter=5)
    rules = Rules(look_ahead=3)
    assert examine(fresh, SEED, code(5), A, NOW, rules) == Fresh(fresh, 5)
    assert examine(fresh, SEED, code(8), A, NOW, rules) == Fresh(fresh, 8)
    assert examine(fresh, SEED, code(9), A, NOW, rules) is None
    assert examine(fresh, SEED, code(4), B, NOW, rules) == Replay(fresh)  # the last one used
    assert examine(fresh, SEED, code(3), B, NOW, rules) is None  # older: just wrong
    retried = token(type="hotp", counter=5, last_attempt=A)
    assert examine(retried, SEED, code(4), A, NOW, rules) == Fresh(retried, 4, retry=True)
    assert examine(token(type="hotp"), SEED, code(0), A, NOW, rules) == Fresh(token(type="hotp"), 0)


@pytest.mark.parametrize("typed", ["", "abcdef", "12345", "1234567", " 12345", "12345\n"])
def test_malformed_codes_match_nothing(typed: str) -> None:
    assert examine(token(), SEED, typed, A, NOW, Rules(window=3)) is None
    assert examine(token(type="hotp"), SEED, typed, A, NOW, Rules()) is None
    assert not well_formed(typed, [token()])


def test_eight_digit_tokens() -> None:
    eight = token(digits=8)
    assert examine(eight, SEED, code(STEP, 8), A, NOW, Rules()) == Fresh(eight, STEP, 0)
    assert well_formed("12345678", [eight])
    assert not well_formed("123456", [eight])


def test_choose_prefers_a_fresh_match_then_a_replay() -> None:
    one, two = token(serial="T1"), token(serial="T2")
    assert choose([None, Replay(one), Fresh(two, 5)]) == Fresh(two, 5)
    assert choose([None, Replay(one), Replay(two)]) == Replay(one)
    assert choose([None, None]) is None
    assert choose([]) is None


def test_retry_after_is_the_first_lock_to_run_out() -> None:
    soon = token(state="locked", locked_until=WHEN + timedelta(seconds=30.2))
    later = token(state="locked", locked_until=WHEN + timedelta(seconds=300))
    forever = token(state="locked", locked_until=None)
    assert retry_after([later, soon, token()], WHEN) == 31
    assert retry_after([soon, forever], WHEN) is None
    assert retry_after([token(state="disabled")], WHEN) is None
    assert retry_after([token(state="locked", locked_until=WHEN)], WHEN) is None


def test_serials_are_valid_and_distinct() -> None:
    serials = {new_serial() for _ in range(1000)}
    assert len(serials) == 1000
    for serial in serials:
        assert check_serial(serial) == serial


# -- settings ------------------------------------------------------------------------------


def test_otp_defaults_and_their_rules() -> None:
    settings = AuthenticationSettings()
    assert settings.oath_db is None
    assert settings.oath_keyring is None
    assert Rules.of(settings.otp) == Rules(
        window=1, look_ahead=10, max_failures=10, lock_seconds=300.0, self_enrolment=True
    )
    custom = validate(
        AuthenticationConfig,
        {"authentication": {"otp": {"lock_seconds": "0", "totp_window": 3}}},
    )
    assert Rules.of(custom.authentication.otp).lock_seconds is None
    assert Rules.of(custom.authentication.otp).window == 3
    five = validate(AuthenticationConfig, {"authentication": {"otp": {"lock_seconds": "5m"}}})
    assert five.authentication.otp.lock_seconds == 300.0


@pytest.mark.parametrize(
    ("otp", "field"),
    [
        ({"totp_window": 4}, "authentication.otp.totp_window"),
        ({"max_failures": 0}, "authentication.otp.max_failures"),
        ({"hotp_look_ahead": -1}, "authentication.otp.hotp_look_ahead"),
        ({"self_enrolment": "maybe"}, "authentication.otp.self_enrolment"),
        ({"lock_seconds": -5}, "authentication.otp.lock_seconds"),
        ({"issuer": "x"}, "authentication.otp.issuer"),
    ],
)
def test_bad_otp_settings_name_the_field(otp: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        validate(AuthenticationConfig, {"authentication": {"otp": otp}})


def test_the_published_view_carries_the_otp_settings_and_the_oath_db() -> None:
    doc = ha()
    oath = "postgresql+asyncpg://gatehouse@db1/oath"
    doc["databases"]["oath_db"] = oath
    doc["authentication"] = {"otp": {"self_enrolment": False, "max_failures": 5}}
    entries = [e for e in doc["authentication_services"] if e["id"] != "auth2"]
    doc["authentication_services"] = [*entries, {"id": "auth2", "oath_keyring": "/etc/g/k"}]
    config = validate(InstallationConfig, doc)
    first = check_view(view_for(config, "auth1")).authentication
    second = check_view(view_for(config, "auth2")).authentication
    assert (first.oath_db, first.oath_keyring) == (oath, None)
    assert (second.oath_db, second.oath_keyring) == (oath, "/etc/g/k")
    assert (first.otp.self_enrolment, first.otp.max_failures) == (False, 5)
    # Which DB and key file a service uses is read at start; the otp rules apply live.
    moved = first.model_copy(update={"oath_keyring": "/k", "oath_db": "sqlite+aiosqlite:///x"})
    assert restart_only_changes(first, moved) == [
        "authentication.oath_db",
        "authentication.oath_keyring",
    ]
    assert restart_only_changes(first, first.model_copy(update={"otp": second.otp})) == []


def test_a_sqlite_oath_db_for_services_on_several_nodes_is_refused() -> None:
    doc = ha()
    doc["databases"]["oath_db"] = "sqlite+aiosqlite:///oath.db"
    with pytest.raises(
        ConfigError,
        match=r"databases\.oath_db: SQLite cannot be shared across "
        r"nodes \(auth1 on int1, auth2 on int2\); use PostgreSQL",
    ):
        validate(InstallationConfig, doc)
    # One node each: fine (each its own file); PostgreSQL: fine.
    doc["databases"]["oath_db"] = "postgresql+asyncpg://gatehouse@db1/oath"
    validate(InstallationConfig, doc)
    entries = [e for e in doc["authentication_services"] if e["id"] != "auth2"]
    doc["authentication_services"] = [
        *entries,
        {"id": "auth2", "oath_db": "sqlite+aiosqlite:///o.db"},
    ]
    validate(InstallationConfig, doc)
