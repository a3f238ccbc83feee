"""Trusted-device cookies: signed for one user name, with an expiry, under the portal's key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gatehouse.authentication import lockout
from gatehouse.policy.devices import LIFETIME, DeviceCookies

KEY = b"k" * 32
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
DEVICE = "AbCdEfGhIj_"


def test_a_cookie_gives_back_its_device_for_its_user_until_it_expires() -> None:
    cookies = DeviceCookies(KEY)
    value = cookies.issue("alice", DEVICE, NOW)
    assert cookies.device(value, "alice", NOW) == DEVICE
    assert cookies.device(value, "alice", NOW + LIFETIME - timedelta(seconds=1)) == DEVICE
    assert cookies.device(value, "alice", NOW + LIFETIME) is None
    # The cookie lives as long as the Authentication service trusts the id.
    assert lockout.DEVICE_LIFETIME == LIFETIME


@pytest.mark.parametrize(
    "tamper",
    [
        lambda v: v.replace(DEVICE, "ZZZZZZZZZZZ"),  # another device id
        lambda v: v.replace(v.split(".")[1], str(int(v.split(".")[1]) + 86400)),  # longer life
        lambda v: v[:-1] + ("A" if v[-1] != "A" else "B"),  # another signature
        lambda v: v + ".x",
        lambda v: "",
        lambda v: "garbage",
    ],
)
def test_altered_cookies_are_ignored(tamper: object) -> None:
    cookies = DeviceCookies(KEY)
    value = cookies.issue("alice", DEVICE, NOW)
    assert callable(tamper)
    assert cookies.device(tamper(value), "alice", NOW) is None


def test_a_cookie_is_bound_to_its_user_and_key() -> None:
    value = DeviceCookies(KEY).issue("alice", DEVICE, NOW)
    assert DeviceCookies(KEY).device(value, "mallory", NOW) is None
    assert DeviceCookies(b"x" * 32).device(value, "alice", NOW) is None
    assert DeviceCookies(KEY).device(None, "alice", NOW) is None
