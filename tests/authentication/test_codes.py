"""The pure parts of one-time codes: generation, the keyed hash, the message key and text,
and the resend throttle (a table of cases)."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from gatehouse.authentication.codes import (
    CHANNELS,
    code_hash,
    hash_key,
    matches,
    message_key,
    message_text,
    new_code,
    throttle,
    well_formed,
)
from gatehouse.authentication.config import CodeSettings
from gatehouse.distribution.calls import KEY

SETTINGS = CodeSettings(resend_interval=30, resend_max=5, resend_window=900)


@pytest.mark.parametrize("length", [6, 7, 8])
def test_codes_are_digits_of_the_length_asked(length: int) -> None:
    codes = [new_code(length) for _ in range(2000)]
    assert all(len(c) == length and c.isdigit() for c in codes)
    assert len(set(codes)) > 1990  # random, not a counter or a constant
    # Leading zeros are kept, and every digit turns up in every place.
    for place in range(length):
        assert set(Counter(c[place] for c in codes)) == set("0123456789")


def test_lengths_outside_6_to_8_are_refused() -> None:
    with pytest.raises(ValueError, match="6-8"):
        new_code(5)
    with pytest.raises(ValueError, match="6-8"):
        new_code(9)


def test_the_hash_is_keyed_and_bound_to_user_and_method() -> None:
    key = hash_key(b"k" * 32)
    assert key != b"k" * 32
    assert len(key) == 32
    stored = code_hash(key, "alice", "email_otp", "123456")
    assert len(stored) == 32
    assert matches(key, "alice", "email_otp", "123456", stored)
    assert not matches(key, "alice", "email_otp", "123457", stored)
    assert not matches(key, "bob", "email_otp", "123456", stored)
    assert not matches(key, "alice", "sms_otp", "123456", stored)
    assert not matches(hash_key(b"j" * 32), "alice", "email_otp", "123456", stored)
    assert b"123456" not in stored


def test_the_message_key_is_stable_per_send_and_a_valid_distribution_key() -> None:
    first = message_key("send-key-000000000001")
    assert first == message_key("send-key-000000000001")
    assert first != message_key("send-key-000000000002")
    assert "send-key" not in first
    assert KEY.match(first)


def test_the_message_says_the_code_and_its_lifetime() -> None:
    text = message_text("042042", 300)
    assert "042042" in text
    assert "5 minutes" in text
    assert "1 minute." in message_text("1", 45)


def test_well_formed() -> None:
    assert well_formed("012345", 6)
    assert not well_formed("12345", 6)
    assert not well_formed("12345a", 6)
    assert not well_formed("١٢٣٤٥٦", 6)  # digits, but not ASCII


def test_channel_order_per_method() -> None:
    assert CHANNELS == {"email_otp": ["email", "sms"], "sms_otp": ["sms", "email"]}


@pytest.mark.parametrize(
    ("sends", "now", "allowed", "retry_after"),
    [
        ([], 1000.0, True, 0.0),
        ([990.0], 1000.0, False, 20.0),  # 10 s after the last: 20 s to go
        ([970.0], 1000.0, True, 0.0),  # exactly the interval
        ([150.0, 200.0, 300.0, 400.0, 500.0], 1000.0, False, 50.0),  # 5 in 15 min
        ([150.0, 200.0, 300.0, 400.0, 500.0], 1050.0, True, 0.0),  # the first slid out
        ([150.0, 160.0, 200.0, 300.0, 400.0, 500.0], 1000.0, False, 60.0),
        ([-5000.0, 1.0], 1000.0, True, 0.0),  # old sends forgotten
    ],
)
def test_the_throttle(sends: list[float], now: float, allowed: bool, retry_after: float) -> None:
    decision = throttle(sends, now, SETTINGS)
    assert decision.allowed is allowed
    if allowed:
        assert decision.sends[-1] == now
        assert len(decision.sends) <= SETTINGS.resend_max
    else:
        # Until the interval has passed and the oldest of the last five left the window.
        assert decision.retry_after == retry_after


def test_the_throttle_never_allows_more_than_max_in_any_window() -> None:
    sent: list[float] = []
    t = 0.0
    while t < 4 * 3600:
        decision = throttle(sent, t, SETTINGS)
        if decision.allowed:
            sent.append(t)
        t += 7.0
    for start in sent:
        assert sum(1 for s in sent if start <= s < start + 900) <= 5
    assert all(b - a >= 30 for a, b in itertools.pairwise(sent))
    assert len(sent) >= 4 * 3600 / 900 * 5 - 5  # and it does allow that many


def test_the_settings_cap_the_lifetime_at_ten_minutes() -> None:
    with pytest.raises(ValueError, match="600"):
        CodeSettings(lifetime=601)
    with pytest.raises(ValueError, match="less than or equal to 8"):
        CodeSettings(length=9)
    assert CodeSettings(lifetime="10m").lifetime == 600.0  # type: ignore[arg-type]
