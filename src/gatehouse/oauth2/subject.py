"""Who a code or token is for, as the grants see it (Authlib wants a truthy user object)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Subject:
    """A signed-in user as the Policy service describes the session: ``sid`` is the
    session's hash (never its id), ``auth_time`` in epoch seconds, ``amr`` the methods run."""

    username: str
    auth_time: int
    amr: tuple[str, ...] = ()
    sid: str | None = None


__all__ = ["Subject"]
