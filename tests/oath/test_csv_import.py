"""CSV seed lists: defaults, skipped lines, and errors that name the line and column."""

from __future__ import annotations

import pytest

from gatehouse.oath.csv_import import parse_csv
from gatehouse.oath.errors import OathImportError
from gatehouse.oath.token_spec import ImportedToken, TokenParams

HEX = "3132333435363738393031323334353637383930"
SECRET = b"12345678901234567890"
HEX32 = "3132333435363738393031323334353637383930313233343536373839303132"


def test_rows_with_defaults_comments_and_blank_lines() -> None:
    text = f"""# serial, seed, type, digits, period, algorithm
HW-0001,{HEX},hotp

  # indented comment
HW-0002, {HEX.upper()} , TOTP , 8 , 60 , SHA256
HW-0003,{HEX32},totp,,,sha512
"HW,0004",{HEX},hotp,8,,
HW-0005,{HEX},hotp,6,60,sha1
"""
    assert parse_csv(text) == [
        ImportedToken("HW-0001", SECRET, TokenParams("hotp", "sha1", 6, 30)),
        ImportedToken("HW-0002", SECRET, TokenParams("totp", "sha256", 8, 60)),
        ImportedToken("HW-0003", bytes.fromhex(HEX32), TokenParams("totp", "sha512", 6, 30)),
        ImportedToken("HW,0004", SECRET, TokenParams("hotp", "sha1", 8, 30)),
        ImportedToken("HW-0005", SECRET, TokenParams("hotp", "sha1", 6, 30)),  # period ignored
    ]


def test_an_empty_file_has_no_tokens() -> None:
    assert parse_csv("") == []
    assert parse_csv("# nothing here\n\n") == []


def test_windows_line_endings() -> None:
    assert [t.serial for t in parse_csv(f"a,{HEX},totp\r\nb,{HEX},hotp\r\n")] == ["a", "b"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"S1,{HEX}", "line 1: 2 columns; expected 3 to 6: serial, seed, type, digits, period, "
                      "algorithm"),
        (f"S1,{HEX},totp,6,30,sha1,extra", "line 1: 7 columns; expected 3 to 6"),
        (f",{HEX},totp", "line 1, column 1 (serial): empty"),
        ("serial,seed,type", "line 1, column 2 (seed): not hexadecimal (character 1) (a header "
                             "line must start with #)"),
        (f"# header\nS1,{HEX[:-1]}x,totp", "line 2, column 2 (seed): not hexadecimal "
                                            "(character 40)"),
        (f"S1,{HEX}0,totp", "line 1, column 2 (seed): an odd number (41) of hex digits"),
        ("S1,,totp", "line 1, column 2 (seed): not hexadecimal"),
        ("S1,00112233445566778899aabbccddee,totp", "line 1, column 2 (seed): seed is 120 bits; "
                                                  "at least 128 bits are needed"),
        (f"S1,{HEX},motp", "line 1, column 3 (type): must be hotp or totp, not 'motp'"),
        (f"S1,{HEX},", "line 1, column 3 (type): must be hotp or totp, not ''"),
        (f"S1,{HEX},totp,7", "line 1, column 4 (digits): must be 6 or 8, not '7'"),
        (f"S1,{HEX},totp,6,45", "line 1, column 5 (period): must be 30 or 60 (seconds), not '45'"),
        (f"S1,{HEX},totp,6,30,md5", "line 1, column 6 (algorithm): must be sha1, sha256 or "
                                    "sha512, not 'md5'"),
        (f"S1,{HEX},totp\n\nS1,{HEX},hotp", "line 3, column 1 (serial): serial 'S1' is also on "
                                             "line 1"),
    ],
)  # fmt: skip
def test_errors_name_line_and_column(text: str, message: str) -> None:
    with pytest.raises(OathImportError) as caught:
        parse_csv(text)
    assert str(caught.value).startswith(message)


def test_a_bad_seed_is_not_echoed() -> None:
    secret_looking = "deadbeefdeadbeefdeadbeefdeadbeefZZ"
    with pytest.raises(OathImportError) as caught:
        parse_csv(f"a,{HEX},totp\nb,{secret_looking},totp")
    assert "deadbeef" not in str(caught.value)
    assert str(caught.value) == "line 2, column 2 (seed): not hexadecimal (character 33)"


def test_one_bad_line_refuses_the_file() -> None:
    with pytest.raises(OathImportError, match="line 3"):
        parse_csv(f"a,{HEX},totp\nb,{HEX},totp\nc,{HEX},totp,9")
