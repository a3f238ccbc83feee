"""Who is acting: the administrator behind the request being served.

The admin API and the console set it for the duration of a request (:func:`acting_as`);
everything audited while it runs names that person (:func:`actor_name`). Outside a request
(or with the home's admin token) it is the break-glass identity ``admin-token``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

#: The home's admin token: the local break-glass identity, audited under this name.
BREAK_GLASS = "admin-token"

Via = Literal["break-glass", "token", "console"]


@dataclass(frozen=True, slots=True)
class Actor:
    """An authenticated administrator: ``name`` (their user name, or ``admin-token``),
    ``role`` and how they came in."""

    name: str
    role: str
    via: Via

    @property
    def break_glass(self) -> bool:
        return self.via == "break-glass"


BREAK_GLASS_ACTOR = Actor(BREAK_GLASS, "superadmin", "break-glass")

_current: ContextVar[Actor | None] = ContextVar("gatehouse_admin_actor", default=None)


def current_actor() -> Actor:
    return _current.get() or BREAK_GLASS_ACTOR


def actor_name() -> str:
    """The name every audit event of this request is written under."""
    return current_actor().name


@contextlib.contextmanager
def acting_as(actor: Actor) -> Iterator[Actor]:
    token = _current.set(actor)
    try:
        yield actor
    finally:
        _current.reset(token)
