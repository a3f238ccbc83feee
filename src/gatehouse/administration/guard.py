"""What a new configuration would take away from a running installation.

A configuration that no longer lists a registered service stops it (it is "not in version N"
and keeps running its old version, unhealthy); one with Access Points and no resources makes
every request to them a 404; an empty file is almost always a failed ``export > file``. Each
is refused before it is saved or published, unless the operator names what goes
(``gatehouse config apply FILE --allow-removal ID…``): a removal is then on purpose, and
audited as such.

Pure: the caller reads the newest version and the registered services.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gatehouse.administration.model import ROLE_NAMES

Problem = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Registered:
    """A service that joined the installation, as far as removing it is concerned."""

    id: str
    role: str
    last_seen_at: datetime | None


@dataclass(frozen=True, slots=True)
class Removals:
    """What a new configuration removes that is guarded, and what the operator allowed."""

    services: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    problems: tuple[Problem, ...] = ()

    @property
    def removed(self) -> tuple[str, ...]:
        return (*self.services, *self.resources)


def _ids(document: Mapping[str, Any] | None, section: str) -> list[str]:
    entries = (document or {}).get(section) or []
    return [e["id"] for e in entries if isinstance(e, dict) and isinstance(e.get("id"), str)]


def _ago(when: datetime | None, now: datetime) -> str:
    if when is None:
        return "never seen"
    seconds = max(0, int((now - when).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"last seen {seconds // size}{unit} ago"
    return f"last seen {seconds}s ago"


def _flag(ids: Iterable[str]) -> str:
    return "--allow-removal " + " ".join(ids)


def check_removals(
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any],
    registered: Mapping[str, Registered],
    allowed: Collection[str],
    now: datetime,
) -> Removals:
    """Compare the newest published document ``old`` (None: nothing published) with the valid
    document ``new`` (as written, defaults left out).

    Guarded: services of ``old`` that are registered and missing from ``new``; resources of
    ``old`` missing from ``new`` when that leaves ``new``'s Access Points with none; an empty
    ``new``, which is refused even when allowed. ``problems`` is empty when the change may go
    ahead (a removal named in ``allowed`` is not a problem).
    """
    if not new:
        message = (
            "the configuration is empty: it would remove every service and resource; "
            "nothing was saved (did 'gatehouse config export > FILE' fail?)"
        )
        return Removals(problems=(("top level", message),))
    problems: list[Problem] = []
    kept = set(_ids(new, "services"))
    gone = [sid for sid in _ids(old, "services") if sid not in kept and sid in registered]
    refused = [sid for sid in gone if sid not in allowed]
    if refused:
        described = ", ".join(
            f"{sid} ({ROLE_NAMES.get(registered[sid].role, registered[sid].role)}, "
            f"{_ago(registered[sid].last_seen_at, now)})"
            for sid in refused
        )
        problems.append(
            (
                "services",
                f"removes registered service{'s' if len(refused) > 1 else ''} {described}: "
                "removed services stop following the configuration and report unhealthy; "
                f"to remove on purpose, add {_flag(refused)}",
            )
        )
    resources: list[str] = []
    access_points = _ids(new, "access_points")
    if access_points and not _ids(new, "resources"):
        resources = _ids(old, "resources")
        refused = [rid for rid in resources if rid not in allowed]
        if refused:
            which = ", ".join(access_points)
            problems.append(
                (
                    "resources",
                    f"leaves access point{'s' if len(access_points) > 1 else ''} {which} with "
                    f"no resources (removes {', '.join(refused)}): every request to "
                    f"{'them' if len(access_points) > 1 else 'it'} would get 404; "
                    f"to remove on purpose, add {_flag(refused)}",
                )
            )
    return Removals(tuple(gone), tuple(resources), tuple(problems))
