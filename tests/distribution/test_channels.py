"""Which channels a message tries, in which order; the backoff between rounds."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from gatehouse.distribution.channels import Kind, Outgoing, plan
from gatehouse.distribution.delivery import backoff


@dataclass
class Fake:
    name: str
    kind: Kind
    timeout: float = 1.0

    async def send(self, message: Outgoing) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


MAIL1, SMS1, MAIL2 = Fake("mail1", "email"), Fake("sms1", "sms"), Fake("mail2", "email")
CONFIGURED = [MAIL1, SMS1, MAIL2]
E, P = "jane@example.org", "+4915112345678"


def names(steps: list[tuple[Fake, str]]) -> list[tuple[str, str]]:
    return [(sender.name, to) for sender, to in steps]


@pytest.mark.parametrize(
    ("kinds", "email", "phone", "expected"),
    [
        (None, E, P, [("mail1", E), ("sms1", P), ("mail2", E)]),
        (None, E, None, [("mail1", E), ("mail2", E)]),
        (None, None, P, [("sms1", P)]),
        (["sms", "email"], E, P, [("sms1", P), ("mail1", E), ("mail2", E)]),
        (["sms"], E, P, [("sms1", P)]),
        (["email"], None, P, []),
    ],
)
def test_plan(
    kinds: list[str] | None, email: str | None, phone: str | None, expected: list[tuple[str, str]]
) -> None:
    assert names(plan(CONFIGURED, kinds, email, phone)) == expected  # type: ignore[arg-type]


def test_backoff_doubles_up_to_the_maximum() -> None:
    assert [backoff(r, 1, 60) for r in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff(10_000, 0.5, 30) == 30
