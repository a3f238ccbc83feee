"""Every internal call of the installation, declared once each
(:class:`gatehouse.internal.calls.Call`): what docs/internal-api.md's role table is made of
(a test checks it is), and what the role-matrix test walks.

``python -m gatehouse.internal.catalog [FILE]`` rewrites the table in FILE (default
docs/internal-api.md) between its markers; ``--check`` only says whether it is current.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from gatehouse.authentication import calls as authentication
from gatehouse.authentication import invitation_calls, oauth_calls
from gatehouse.distribution import calls as distribution
from gatehouse.internal.calls import Call, roles_table
from gatehouse.policy import calls as policy

__all__ = ["ALL", "BEGIN", "END", "render", "with_table"]

ALL: tuple[Call[Any, Any], ...] = (
    *policy.ALL,
    *authentication.ALL,
    *invitation_calls.ALL,
    *oauth_calls.ALL,
    *distribution.ALL,
)

BEGIN = "<!-- calls:begin (made by python -m gatehouse.internal.catalog) -->"
END = "<!-- calls:end -->"
DOC = Path(__file__).resolve().parents[3] / "docs" / "internal-api.md"


def render() -> str:
    return roles_table(ALL)


def with_table(text: str) -> str:
    """``text`` with the role table between its markers replaced by the current one.

    Raises:
        ValueError: the markers are missing or out of order.
    """
    start = text.find(BEGIN)
    end = text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"no {BEGIN!r} ... {END!r} markers")
    return f"{text[: start + len(BEGIN)]}\n{render()}{text[end:]}"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    paths = [a for a in argv if a != "--check"]
    path = Path(paths[0]) if paths else DOC
    text = path.read_text(encoding="utf-8")
    updated = with_table(text)
    if updated == text:
        print(f"{path}: the role table is current")
        return 0
    if check:
        print(f"{path}: the role table is out of date (python -m gatehouse.internal.catalog)")
        return 1
    path.write_text(updated, encoding="utf-8")
    print(f"{path}: role table rewritten")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
