"""The console's users, groups and sessions: add a user (its password shown once), disable
or enable, reset the password, unlock, group membership, and a user's sessions; groups;
sessions searched and ended.

The operations are :class:`~.user_admin.HomeUsers`' (those of ``gatehouse users`` and
``gatehouse groups``) and :mod:`.session_admin`'s (the Policy services' session admin API),
on the installation home of this Administration service.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import TypeVar

from starlette.responses import Response

from gatehouse.administration.console.app import ConsoleRoute
from gatehouse.administration.console.context import ConsoleError, ConsolePage
from gatehouse.administration.console.page_support import (
    NotSetUp,
    guard_administrator,
    home_of,
    summary_of,
)
from gatehouse.administration.console.session_admin import (
    SessionView,
    list_sessions,
    revoke_session,
    search,
)
from gatehouse.administration.console.user_admin import HomeUsers, SessionsNotEnded
from gatehouse.errors import GatehouseError

T = TypeVar("T")
ADD_LABELS = {
    "username": "User name",
    "display_name": "Display name",
    "email": "E-mail address",
    "phone": "Phone number",
    "groups": "Groups",
}


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


async def _users(page: ConsolePage, work: Callable[[HomeUsers], Awaitable[T]]) -> T:
    try:
        backend = HomeUsers(home_of(page), page.service.store.record_audit)
    except NotSetUp as error:
        raise ConsoleError(404, "Not set up", str(error)) from None
    try:
        return await work(backend)
    finally:
        await backend.close()


def add_field_of(message: str) -> str:
    """Which field of the add form a refusal is about."""
    lowered = message.lower()
    for needle, name in (
        ("username", "username"),
        ("user '", "username"),
        ("e-mail", "email"),
        ("--email", "email"),
        ("phone", "phone"),
        ("display name", "display_name"),
        ("group", "groups"),
    ):
        if needle in lowered:
            return name
    return "username"


def split_groups(text: str) -> list[str]:
    return [g for g in re.split(r"[\s,]+", text.strip()) if g]


# --- users --------------------------------------------------------------------------------------


async def users_page(page: ConsolePage) -> Response:
    return await _render_users(page)


async def _render_users(
    page: ConsolePage,
    fields: dict[str, str] | None = None,
    errors: dict[str, list[str]] | None = None,
    status: int = 200,
) -> Response:
    query = page.request.query_params.get("q", "").strip()
    users = await _users(page, lambda b: b.users())
    wanted = query.lower()
    shown = [
        u
        for u in users
        if not wanted
        or wanted in u.username.lower()
        or wanted in u.display_name.lower()
        or wanted in (u.email or "").lower()
    ]
    errors = errors or {}
    return page.render(
        "users.html",
        status_code=status,
        users=shown,
        total=len(users),
        query=query,
        fields=fields or {},
        errors=errors,
        problems=summary_of(errors, ADD_LABELS),
        can_write=page.admin.can("users.write"),
    )


async def add_user(page: ConsolePage) -> Response:
    fields = await page.form()
    name = fields.get("username", "").strip()
    try:
        password = await _users(
            page,
            lambda b: b.add_user(
                page.admin.name,
                name,
                fields.get("display_name", "").strip(),
                fields.get("email", "").strip(),
                fields.get("phone", "").strip(),
                split_groups(fields.get("groups", "")),
            ),
        )
    except GatehouseError as error:
        message = str(error).removeprefix("--email: ").removeprefix("--phone: ")
        return await _render_users(page, fields, {add_field_of(str(error)): [message]}, 422)
    return page.render("users_password.html", username=name, password=password, added=True)


async def user_page(page: ConsolePage) -> Response:
    name = page.request.path_params["name"]
    try:
        user = await _users(page, lambda b: b.user(name))
    except GatehouseError as error:
        raise ConsoleError(404, "No such user", str(error)) from None
    groups = await _users(page, lambda b: b.groups())
    sessions: list[SessionView] = []
    source = ""
    if page.admin.can("sessions.read"):
        sessions, source = await list_sessions(home_of(page), name)
    return page.render(
        "user.html",
        user=user,
        other_groups=[g.name for g in groups if g.name not in user.groups],
        sessions=sessions,
        sessions_from=source,
        quoted=_quote(name),
        can_write=page.admin.can("users.write"),
        can_sessions=page.admin.can("sessions.read"),
        can_end=page.admin.can("sessions.write"),
    )


def _back(name: str) -> str:
    return f"/users/{_quote(name)}"


async def _user_action(
    page: ConsolePage,
    work: Callable[[HomeUsers, str, str], Awaitable[str]],
    guarded: bool = True,
) -> Response:
    name = page.request.path_params["name"]
    fields = await page.form()
    if guarded:
        await guard_administrator(page, name)
    try:
        said = await _users(page, lambda b: work(b, name, fields.get("group", "")))
    except SessionsNotEnded as error:
        said = str(error)
    except GatehouseError as error:
        said = f"Nothing changed: {error}"
    return page.redirect(_back(name), flash=said[:1].upper() + said[1:])


async def disable_user(page: ConsolePage) -> Response:
    return await _user_action(page, lambda b, n, _: b.set_enabled(page.admin.name, n, False))


async def enable_user(page: ConsolePage) -> Response:
    return await _user_action(page, lambda b, n, _: b.set_enabled(page.admin.name, n, True))


async def unlock_user(page: ConsolePage) -> Response:
    async def work(b: HomeUsers, name: str, _: str) -> str:
        await b.unlock(page.admin.name, name)
        return f"user {name!r} unlocked"

    return await _user_action(page, work, guarded=False)


async def add_to_group(page: ConsolePage) -> Response:
    return await _user_action(page, lambda b, n, g: b.add_member(page.admin.name, g, n))


async def remove_from_group(page: ConsolePage) -> Response:
    return await _user_action(page, lambda b, n, g: b.remove_member(page.admin.name, g, n))


async def end_user_sessions(page: ConsolePage) -> Response:
    return await _user_action(
        page, lambda b, n, _: b.end_sessions(page.admin.name, n), guarded=False
    )


async def reset_password(page: ConsolePage) -> Response:
    name = page.request.path_params["name"]
    await page.form()
    await guard_administrator(page, name)
    try:
        password, said = await _users(page, lambda b: b.reset_password(page.admin.name, name))
    except SessionsNotEnded as error:
        return page.redirect(_back(name), flash=f"The password was changed, but {error}")
    except GatehouseError as error:
        return page.redirect(_back(name), flash=f"Nothing changed: {error}")
    return page.render(
        "users_password.html", username=name, password=password, added=False, sessions=said
    )


# --- groups -------------------------------------------------------------------------------------


async def groups_page(page: ConsolePage) -> Response:
    return page.render(
        "groups.html",
        groups=await _users(page, lambda b: b.groups()),
        can_write=page.admin.can("users.write"),
        errors={},
        problems=[],
        name="",
    )


async def add_group(page: ConsolePage) -> Response:
    fields = await page.form()
    name = fields.get("name", "").strip()
    try:
        await _users(page, lambda b: b.add_group(page.admin.name, name))
    except GatehouseError as error:
        errors = {"name": [str(error)]}
        return page.render(
            "groups.html",
            status_code=422,
            groups=await _users(page, lambda b: b.groups()),
            can_write=True,
            errors=errors,
            problems=summary_of(errors, {"name": "Group name"}),
            name=name,
        )
    return page.redirect("/groups", flash=f"Group {name!r} added.")


async def delete_group(page: ConsolePage) -> Response:
    name = page.request.path_params["name"]
    await page.form()
    try:
        said = await _users(page, lambda b: b.delete_group(page.admin.name, name))
    except SessionsNotEnded as error:
        said = str(error)
    except GatehouseError as error:
        said = f"Nothing changed: {error}"
    return page.redirect("/groups", flash=said[:1].upper() + said[1:])


# --- sessions -----------------------------------------------------------------------------------


async def sessions_page(page: ConsolePage) -> Response:
    query = page.request.query_params.get("q", "").strip()
    try:
        listed, source = await list_sessions(home_of(page))
    except NotSetUp as error:
        raise ConsoleError(404, "Not set up", str(error)) from None
    return page.render(
        "sessions.html",
        sessions=search(listed, query),
        total=len(listed),
        query=query,
        source=source,
        can_end=page.admin.can("sessions.write"),
    )


def _safe_next(target: str, default: str) -> str:
    """A console page to go back to (never another site)."""
    if target.startswith("/console/") and "//" not in target and "\\" not in target:
        return target
    return default


async def revoke(page: ConsolePage) -> Response:
    id_hash = page.request.path_params["id_hash"]
    fields = await page.form()
    back = _safe_next(fields.get("next", ""), "/console/sessions")
    try:
        said = await revoke_session(home_of(page), id_hash)
    except (ValueError, GatehouseError) as error:
        said = f"Nothing changed: {error}"
    else:
        what = json.dumps({"session": id_hash, "result": said})
        await page.service.store.record_audit(page.admin.name, "session.revoke", what)
    return page.redirect(back, flash=said[:1].upper() + said[1:])


ROUTES = [
    ConsoleRoute("/users", users_page, ("GET",), "users.read", nav="Users"),
    ConsoleRoute("/users", add_user, ("POST",), "users.write"),
    ConsoleRoute("/users/{name}", user_page, ("GET",), "users.read"),
    ConsoleRoute("/users/{name}/disable", disable_user, ("POST",), "users.write"),
    ConsoleRoute("/users/{name}/enable", enable_user, ("POST",), "users.write"),
    ConsoleRoute("/users/{name}/password", reset_password, ("POST",), "users.write"),
    ConsoleRoute("/users/{name}/unlock", unlock_user, ("POST",), "users.write"),
    ConsoleRoute("/users/{name}/groups/add", add_to_group, ("POST",), "users.write"),
    ConsoleRoute("/users/{name}/groups/remove", remove_from_group, ("POST",), "users.write"),
    ConsoleRoute("/users/{name}/sessions/end", end_user_sessions, ("POST",), "sessions.write"),
    ConsoleRoute("/groups", groups_page, ("GET",), "users.read", nav="Groups"),
    ConsoleRoute("/groups", add_group, ("POST",), "users.write"),
    ConsoleRoute("/groups/{name}/delete", delete_group, ("POST",), "users.write"),
    ConsoleRoute("/sessions", sessions_page, ("GET",), "sessions.read", nav="Sessions"),
    ConsoleRoute("/sessions/{id_hash}/revoke", revoke, ("POST",), "sessions.write"),
]
