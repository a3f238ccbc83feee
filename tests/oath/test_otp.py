"""HOTP/TOTP against every published vector, and the searches that accept a typed code."""

from __future__ import annotations

import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatehouse.oath import otp
from gatehouse.oath.errors import ParamsError
from gatehouse.oath.otp import hotp, match_hotp, match_totp, resync_hotp, time_step, totp
from gatehouse.oath.token_spec import TokenParams

RFC4226_SECRET = b"12345678901234567890"
RFC4226_CODES = [
    "755224", "287082", "359152", "969429", "338314",
    "254676", "287922", "162583", "399871", "520489",
]  # fmt: skip
SEEDS = {
    "sha1": b"12345678901234567890",
    "sha256": b"12345678901234567890123456789012",
    "sha512": b"1234567890123456789012345678901234567890123456789012345678901234",
}
RFC6238 = [
    (59, "94287082", "46119246", "90693936"),
    (1111111109, "07081804", "68084774", "25091201"),
    (1111111111, "14050471", "67062674", "99943326"),
    (1234567890, "89005924", "91819424", "93441116"),
    (2000000000, "69279037", "90698825", "38618901"),
    (20000000000, "65353130", "77737706", "47863826"),
]
TOTP_VECTORS = [
    (now, algorithm, code)
    for now, *codes in RFC6238
    for algorithm, code in zip(("sha1", "sha256", "sha512"), codes, strict=True)
]


@pytest.mark.parametrize(("counter", "code"), list(enumerate(RFC4226_CODES)))
def test_rfc4226_appendix_d(counter: int, code: str) -> None:
    assert hotp(RFC4226_SECRET, counter, 6, "sha1") == code


@pytest.mark.parametrize(("now", "algorithm", "code"), TOTP_VECTORS)
def test_rfc6238_appendix_b(now: int, algorithm: str, code: str) -> None:
    assert totp(SEEDS[algorithm], now, 30, 8, algorithm) == code


def test_all_eighteen_totp_vectors_are_checked() -> None:
    assert len(TOTP_VECTORS) == 18


@pytest.mark.parametrize(
    ("now", "period", "step"),
    [(0, 30, 0), (29.999, 30, 0), (59, 30, 1), (60, 60, 1), (1111111109, 30, 0x23523EC),
     (2000000000, 30, 0x3F940AA), (20000000000, 30, 0x27BC86AA), (1234567890, 60, 20576131)],
)  # fmt: skip
def test_time_step(now: float, period: int, step: int) -> None:
    assert time_step(now, period) == step


def test_codes_keep_leading_zeros() -> None:
    assert totp(SEEDS["sha1"], 1111111109, 30, 8, "sha1") == "07081804"
    assert hotp(RFC4226_SECRET, 1, 8, "sha1") == "94287082"  # same step as T=59


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: hotp(RFC4226_SECRET, 0, 7, "sha1"), "digits: must be 6 or 8"),
        (lambda: hotp(RFC4226_SECRET, 0, 6, "md5"), "algorithm: must be sha1, sha256 or sha512"),
        (lambda: hotp(RFC4226_SECRET, 0, 6, "SHA1"), "algorithm: must be"),
        (lambda: hotp(RFC4226_SECRET, -1, 6, "sha1"), "counter must be between 0 and 2**64-1"),
        (lambda: hotp(RFC4226_SECRET, 2**64, 6, "sha1"), "counter must be between"),
        (lambda: time_step(100, 0), "period must be a positive"),
        (lambda: time_step(-1, 30), "before 1970"),
        (lambda: match_hotp(RFC4226_SECRET, "755224", 0, -1, 6, "sha1"), "look_ahead must not"),
        (lambda: match_totp(RFC4226_SECRET, "755224", 5, -1, None, 6, "sha1"), "window must not"),
    ],
)
def test_bad_arguments_are_refused(call: object, message: str) -> None:
    assert callable(call)
    with pytest.raises(ValueError, match=message.replace("*", r"\*")):
        call()


def test_token_params_refuse_values_outside_the_issue() -> None:
    assert TokenParams() == TokenParams("totp", "sha1", 6, 30)
    for kwargs, message in [
        ({"type": "motp"}, "type: must be hotp or totp, not 'motp'"),
        ({"algorithm": "SHA256"}, "algorithm: must be sha1, sha256 or sha512, not 'SHA256'"),
        ({"digits": 7}, "digits: must be 6 or 8, not 7"),
        ({"digits": True}, "digits: must be 6 or 8, not True"),
        ({"period": 45}, "period: must be 30 or 60 (seconds), not 45"),
    ]:
        with pytest.raises(ParamsError) as caught:
            TokenParams(**kwargs)  # type: ignore[arg-type]
        assert str(caught.value) == message


# HOTP look-ahead


def test_match_hotp_returns_the_counter_within_the_look_ahead() -> None:
    assert match_hotp(RFC4226_SECRET, "755224", 0, 10, 6, "sha1") == 0
    assert match_hotp(RFC4226_SECRET, "520489", 0, 10, 6, "sha1") == 9
    assert match_hotp(RFC4226_SECRET, "520489", 0, 9, 6, "sha1") == 9
    assert match_hotp(RFC4226_SECRET, "520489", 0, 8, 6, "sha1") is None
    assert match_hotp(RFC4226_SECRET, "338314", 4, 0, 6, "sha1") == 4
    # a counter before the next one was used already
    assert match_hotp(RFC4226_SECRET, "755224", 1, 10, 6, "sha1") is None
    assert match_hotp(RFC4226_SECRET, "000000", 0, 10, 6, "sha1") is None


def test_match_hotp_picks_the_lowest_counter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(otp, "_code", lambda secret, counter, digits, algorithm: "123456")
    assert match_hotp(RFC4226_SECRET, "123456", 7, 10, 6, "sha1") == 7


# TOTP window

STEP = time_step(1111111109, 30)


def _code_at(step: int) -> str:
    return hotp(SEEDS["sha1"], step, 6, "sha1")


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_match_totp_accepts_one_step_either_side(offset: int) -> None:
    assert match_totp(SEEDS["sha1"], _code_at(STEP + offset), STEP, 1, None, 6, "sha1") == (
        STEP + offset
    )


@pytest.mark.parametrize("offset", [-3, -2, 2, 3])
def test_match_totp_refuses_codes_outside_the_window(offset: int) -> None:
    assert match_totp(SEEDS["sha1"], _code_at(STEP + offset), STEP, 1, None, 6, "sha1") is None
    assert match_totp(SEEDS["sha1"], _code_at(STEP + offset), STEP, 3, None, 6, "sha1") == (
        STEP + offset
    )


def test_match_totp_window_zero_is_the_current_step_only() -> None:
    assert match_totp(SEEDS["sha1"], _code_at(STEP), STEP, 0, None, 6, "sha1") == STEP
    assert match_totp(SEEDS["sha1"], _code_at(STEP - 1), STEP, 0, None, 6, "sha1") is None


def test_match_totp_never_accepts_a_step_at_or_before_the_last_one() -> None:
    code = _code_at(STEP)
    assert match_totp(SEEDS["sha1"], code, STEP, 1, STEP, 6, "sha1") is None  # replay
    assert match_totp(SEEDS["sha1"], code, STEP, 1, STEP + 1, 6, "sha1") is None
    assert match_totp(SEEDS["sha1"], code, STEP, 1, STEP - 1, 6, "sha1") == STEP
    earlier = _code_at(STEP - 1)  # an older code after a newer one was accepted
    assert match_totp(SEEDS["sha1"], earlier, STEP, 1, STEP, 6, "sha1") is None
    # how a caller tells a replay from a wrong code: ask again without last_step
    assert match_totp(SEEDS["sha1"], code, STEP, 1, None, 6, "sha1") == STEP


def test_match_totp_tries_the_nearest_step_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(otp, "_code", lambda secret, step, digits, algorithm: "123456")
    assert match_totp(SEEDS["sha1"], "123456", 100, 2, None, 6, "sha1") == 100
    assert match_totp(SEEDS["sha1"], "123456", 100, 2, 99, 6, "sha1") == 100
    assert match_totp(SEEDS["sha1"], "123456", 100, 2, 100, 6, "sha1") == 101
    assert match_totp(SEEDS["sha1"], "123456", 100, 2, 101, 6, "sha1") == 102
    assert match_totp(SEEDS["sha1"], "123456", 100, 2, 102, 6, "sha1") is None


def test_match_totp_prefers_the_earlier_step_at_equal_distance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    codes = {99: "111111", 101: "111111"}
    monkeypatch.setattr(otp, "_code", lambda secret, step, digits, algorithm: codes.get(step, "x"))
    assert match_totp(SEEDS["sha1"], "111111", 100, 1, None, 6, "sha1") == 99
    assert match_totp(SEEDS["sha1"], "111111", 100, 1, 99, 6, "sha1") == 101


def test_match_totp_with_other_hashes_and_eight_digits() -> None:
    for algorithm, seed in SEEDS.items():
        code = totp(seed, 1234567890, 30, 8, algorithm)
        step = time_step(1234567890, 30)
        assert match_totp(seed, code, step + 1, 1, None, 8, algorithm) == step
        assert match_totp(seed, code[:6], step, 1, None, 6, algorithm) is None


# Malformed input

FULLWIDTH = "\uff17\uff15\uff15\uff12\uff12\uff14"  # 755224 in full-width digits
ARABIC_INDIC = "\u0667\u0665\u0665\u0662\u0662\u0664"  # str.isdigit() is true for both
MALFORMED = ["", "12345", "1234567", "12345a", "abcdef", " 55224", "755224 ", "+55224",
             FULLWIDTH, ARABIC_INDIC, "75522\x00"]  # fmt: skip


@pytest.mark.parametrize("code", MALFORMED)
def test_malformed_codes_are_refused_without_raising(code: str) -> None:
    assert match_hotp(RFC4226_SECRET, code, 0, 10, 6, "sha1") is None
    assert match_totp(RFC4226_SECRET, code, 0, 1, None, 6, "sha1") is None
    assert resync_hotp(RFC4226_SECRET, code, "287082", 0, 10, digits=6, algorithm="sha1") is None
    assert resync_hotp(RFC4226_SECRET, "755224", code, 0, 10, digits=6, algorithm="sha1") is None


def test_a_code_that_is_not_a_string_is_refused() -> None:
    assert match_hotp(RFC4226_SECRET, None, 0, 10, 6, "sha1") is None  # type: ignore[arg-type]


@pytest.mark.parametrize("code", ["", "abcdef", "12345678", ARABIC_INDIC])
def test_malformed_codes_cost_the_same_work_as_wrong_ones(
    monkeypatch: pytest.MonkeyPatch, code: str
) -> None:
    """The similar-time guarantee, counted: as many HMACs and comparisons for either."""
    calls: list[str] = []
    real_code, real_compare = otp._code, hmac.compare_digest

    def counting_code(secret: bytes, counter: int, digits: int, algorithm: str) -> str:
        calls.append("hmac")
        return real_code(secret, counter, digits, algorithm)

    def counting_compare(a: str, b: str) -> bool:
        calls.append("compare")
        return bool(real_compare(a, b))

    monkeypatch.setattr(otp, "_code", counting_code)
    monkeypatch.setattr(hmac, "compare_digest", counting_compare)
    work = {}
    for label, typed in (("wrong", "000000"), ("malformed", code)):
        calls.clear()
        assert match_totp(RFC4226_SECRET, typed, 1000, 2, None, 6, "sha1") is None
        assert match_hotp(RFC4226_SECRET, typed, 0, 10, 6, "sha1") is None
        work[label] = list(calls)
    assert work["malformed"] == work["wrong"]
    assert work["wrong"].count("hmac") == 5 + 11


# Resync


def test_resync_finds_two_consecutive_codes_beyond_the_window() -> None:
    codes = [hotp(RFC4226_SECRET, c, 6, "sha1") for c in range(600)]
    assert match_hotp(RFC4226_SECRET, codes[500], 0, 10, 6, "sha1") is None
    assert resync_hotp(RFC4226_SECRET, codes[500], codes[501], 0, digits=6, algorithm="sha1") == 501
    assert resync_hotp(RFC4226_SECRET, codes[500], codes[501], 200, digits=6, algorithm="sha1") == (
        501
    )
    assert resync_hotp(RFC4226_SECRET, codes[0], codes[1], 0, digits=6, algorithm="sha1") == 1


def test_resync_refuses_codes_that_are_not_consecutive_or_too_far() -> None:
    codes = [hotp(RFC4226_SECRET, c, 6, "sha1") for c in range(1200)]
    assert (
        resync_hotp(RFC4226_SECRET, codes[500], codes[502], 0, digits=6, algorithm="sha1") is None
    )
    assert (
        resync_hotp(RFC4226_SECRET, codes[501], codes[500], 0, digits=6, algorithm="sha1") is None
    )
    assert (
        resync_hotp(RFC4226_SECRET, codes[500], codes[501], 0, 400, digits=6, algorithm="sha1")
        is None
    )
    assert (
        resync_hotp(RFC4226_SECRET, codes[1100], codes[1101], 0, digits=6, algorithm="sha1") is None
    )
    # the search bound is inclusive of code1's counter
    assert (
        resync_hotp(RFC4226_SECRET, codes[500], codes[501], 0, 500, digits=6, algorithm="sha1")
        == 501
    )
    # codes before the next counter were used already
    assert resync_hotp(RFC4226_SECRET, codes[5], codes[6], 6, digits=6, algorithm="sha1") is None


# Properties


@given(
    secret=st.binary(min_size=16, max_size=64),
    step_now=st.integers(min_value=0, max_value=2**40),
    window=st.integers(min_value=0, max_value=3),
    offset=st.integers(min_value=-5, max_value=5),
    last_back=st.one_of(st.none(), st.integers(min_value=-5, max_value=5)),
    algorithm=st.sampled_from(["sha1", "sha256", "sha512"]),
)
def test_totp_window_properties(
    secret: bytes,
    step_now: int,
    window: int,
    offset: int,
    last_back: int | None,
    algorithm: str,
) -> None:
    target = step_now + offset
    if target < 0:
        return
    last_step = None if last_back is None else step_now + last_back
    found = match_totp(
        secret, hotp(secret, target, 6, algorithm), step_now, window, last_step, 6, algorithm
    )
    if found is not None:
        assert abs(found - step_now) <= window
        assert last_step is None or found > last_step
    if abs(offset) <= window and (last_step is None or target > last_step):
        assert found is not None


@given(
    secret=st.binary(max_size=80),
    counter=st.integers(min_value=0, max_value=2**64 - 1),
    digits=st.sampled_from([6, 8]),
    algorithm=st.sampled_from(["sha1", "sha256", "sha512"]),
)
def test_hotp_codes_are_fixed_width_digits(
    secret: bytes, counter: int, digits: int, algorithm: str
) -> None:
    code = hotp(secret, counter, digits, algorithm)
    assert len(code) == digits
    assert code.isascii()
    assert code.isdigit()
