"""What the console's pages (config, users, tokens, nodes) share: the installation home the
Administration service runs in, problems as the error summary shows them, and the answers of
a page that must not be cached (a password or a join token shown once)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.responses import Response

from gatehouse.administration.admins_roles import allows
from gatehouse.administration.console.config_forms import line_of, syntax_line
from gatehouse.administration.console.context import ConsoleError

if TYPE_CHECKING:
    from gatehouse.administration.console.context import ConsolePage
    from gatehouse.administration.tokens_api import HomeTokens


class NotSetUp(Exception):
    """This Administration service has no installation home (user and token
    administration need one)."""


@dataclass(frozen=True, slots=True)
class ShownProblem:
    """One problem of the error summary: its field path, message, the id of the field it
    links to, and the draft line it is on (YAML editor)."""

    path: str
    message: str
    anchor: str
    line: int | None = None


def tokens_backend(page: ConsolePage) -> HomeTokens:
    backend: HomeTokens | None = getattr(page.request.app.state, "tokens", None)
    if backend is None:
        raise NotSetUp("user and token administration is not set up on this Administration service")
    if backend.audit_log is None:
        backend.audit_log = page.service.store.record_audit
    return backend


def home_of(page: ConsolePage) -> Path:
    """The installation home: the one the token routes use (``gatehouse up`` and
    ``gatehouse admin --home``)."""
    home: Path | None = getattr(page, "home", None)
    return home if home is not None else tokens_backend(page).home


def can(page: ConsolePage, permission: str) -> bool:
    return allows(page.admin.role, permission)


def no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


def field_id(name: str) -> str:
    return "field-" + re.sub(r"[^a-z0-9_-]", "-", name.lower())


def summary_of(
    fields: Mapping[str, Iterable[str]],
    labels: Mapping[str, str],
    other: Iterable[tuple[str, str]] = (),
) -> list[ShownProblem]:
    """Field problems first (in the form's order, as ``labels`` lists the fields), each
    linking to its field; then the rest of the draft's with their paths."""
    shown = [
        ShownProblem(labels.get(name, name), message, field_id(name))
        for name in labels
        for message in fields.get(name, ())
    ]
    shown += [
        ShownProblem(name, message, field_id(name))
        for name, messages in fields.items()
        if name not in labels
        for message in messages
    ]
    shown += [ShownProblem(path or "the draft", message, "") for path, message in other]
    return shown


def draft_problems(
    text: str, problems: Iterable[tuple[str, str]], anchor: str
) -> list[ShownProblem]:
    """The YAML editor's problems: each with its path and the line it is on."""
    return [
        ShownProblem(
            path or "the draft", message, anchor, line_of(text, path) or syntax_line(message)
        )
        for path, message in problems
    ]


_ALLOW = re.compile(r"--allow-removal ([a-z0-9_. -]+?)(?:$|[;,)])")


def removal_ids(problems: Iterable[tuple[str, str]]) -> list[str]:
    """The ids a refused removal names (``... add --allow-removal ps2 ap2``)."""
    ids: list[str] = []
    for _, message in problems:
        for match in _ALLOW.finditer(message):
            ids += [i for i in match.group(1).split() if i not in ids]
    return ids


async def guard_administrator(page: ConsolePage, username: str | None) -> None:
    """Refuse (403) a change to the account or tokens of a user who is an administrator
    unless the acting administrator may manage administrators (``admins.write``):
    otherwise whoever may reset passwords and assign tokens (helpdesk) could take over a
    superadmin's sign-in."""
    if not username or page.admin.can("admins.write"):
        return
    admin = await page.service.admins.get(username)
    if admin is not None:
        raise ConsoleError(
            403,
            "Not allowed",
            f"{username} is an administrator ({admin.role}): changing their account or "
            "tokens needs the permission admins.write.",
        )
