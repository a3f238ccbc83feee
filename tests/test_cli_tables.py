"""Command-line tables: plain columns when the output is not a terminal (what scripts read),
a rich table on one; progress only on a terminal."""

from __future__ import annotations

import io

from gatehouse.cli_tables import plain_table, print_table, progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


ROWS = [["ap1", "yes", "expires 2030-01-01"], ["ps1", "no", "-"]]


def test_not_a_terminal_gets_the_plain_columns() -> None:
    out = io.StringIO()
    print_table(("SERVICE", "HEALTHY", "CERTIFICATE"), ROWS, title="ignored", stream=out)
    assert out.getvalue() == plain_table(("SERVICE", "HEALTHY", "CERTIFICATE"), ROWS)
    assert out.getvalue().splitlines() == [
        "SERVICE  HEALTHY  CERTIFICATE",
        "ap1      yes      expires 2030-01-01",
        "ps1      no       -",
    ]


def test_a_terminal_gets_a_table_and_a_progress_bar() -> None:
    out = Terminal()
    print_table(("SERVICE", "HEALTHY"), [["ap1", "yes"]], title="Services", stream=out)
    text = out.getvalue()
    assert "Services" in text
    assert "┏━" in text  # a drawn table
    assert "SERVICE" in text
    assert "\x1b[32myes" in text  # healthy in green
    err = Terminal()
    with progress("version 2", 3, stream=err) as bar:
        bar.advance(2, "ps1")
    quiet = io.StringIO()
    with progress("version 2", 3, stream=quiet) as bar:
        bar.advance(3)
    assert quiet.getvalue() == ""
