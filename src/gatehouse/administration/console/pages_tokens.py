"""The console's OATH tokens: list them (all, or a user's), assign one to a user, disable or
enable, unlock, resynchronise with two consecutive codes; token invitations (a single-use
enrolment link e-mailed to the user) sent and withdrawn.

The operations are the token routes' (:mod:`gatehouse.administration.tokens_api`): the same
:class:`~gatehouse.oath.token_admin.TokenAdmin` and invitation backend of this
Administration service's home, with the request bodies checked by the same models.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.responses import Response

from gatehouse.administration.console.app import ConsoleRoute
from gatehouse.administration.console.context import ConsoleError, ConsolePage
from gatehouse.administration.console.page_support import (
    NotSetUp,
    guard_administrator,
    summary_of,
    tokens_backend,
)
from gatehouse.administration.tokens_api import (
    AssignIn,
    InvitationIn,
    ResyncIn,
    invitation_out,
    token_out,
)
from gatehouse.config.loader import validate
from gatehouse.errors import ConfigError, GatehouseError
from gatehouse.oath.invitation_admin import InvitationAdmin
from gatehouse.oath.token_admin import SessionsNotEnded, TokenAdmin

INVITE_LABELS = {"user": "User name", "lifetime": "The link works for"}
RESYNC_LABELS = {"code1": "First code", "code2": "Next code"}
ASSIGN_LABELS = {"user": "User name"}
LIFETIMES = (("24h", "1 day"), ("72h", "3 days"), ("168h", "7 days"), ("720h", "30 days"))


async def _tokens(page: ConsolePage) -> TokenAdmin:
    try:
        return await tokens_backend(page).admin()
    except NotSetUp as error:
        raise ConsoleError(404, "Not set up", str(error)) from None


async def _invitations(page: ConsolePage) -> InvitationAdmin:
    await _tokens(page)
    return await tokens_backend(page).invitations()


def _fields_of(error: ConfigError) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for path, message in error.problems:
        fields.setdefault(path.split(".", 1)[0] or "user", []).append(message)
    return fields


# --- the list -----------------------------------------------------------------------------------


async def tokens_page(
    page: ConsolePage,
    invite: dict[str, str] | None = None,
    errors: dict[str, list[str]] | None = None,
    status: int = 200,
) -> Response:
    user = page.request.query_params.get("user", "").strip()
    tokens = await _tokens(page)
    try:
        rows = await tokens.list_tokens(user or None)
        invitations = await (await _invitations(page)).list_invitations(user or None)
    except GatehouseError as error:
        rows, invitations = [], []
        errors = {"filter": [str(error)]}
    errors = errors or {}
    return page.render(
        "tokens.html",
        status_code=status,
        tokens=[token_out(t) for t in rows],
        invitations=[invitation_out(i) for i in invitations],
        user=user,
        invite=invite or {"user": user, "lifetime": "72h"},
        lifetimes=LIFETIMES,
        errors=errors,
        problems=summary_of(errors, {**INVITE_LABELS, "filter": "User"}),
        can_write=page.admin.can("tokens.write"),
    )


async def token_page(
    page: ConsolePage,
    errors: dict[str, list[str]] | None = None,
    fields: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    serial = page.request.path_params["serial"]
    tokens = await _tokens(page)
    try:
        token = await tokens.store.get(serial)
    except GatehouseError as error:
        raise ConsoleError(404, "No such token", str(error)) from None
    errors = errors or {}
    return page.render(
        "token.html",
        status_code=status,
        token=token_out(token),
        locked_until=token.locked_until,
        fields=fields or {},
        errors=errors,
        problems=summary_of(errors, {**ASSIGN_LABELS, **RESYNC_LABELS}),
        can_write=page.admin.can("tokens.write"),
    )


# --- actions ------------------------------------------------------------------------------------


async def _owner(page: ConsolePage, tokens: TokenAdmin, serial: str) -> str | None:
    try:
        return (await tokens.store.get(serial)).owner
    except GatehouseError:
        return None  # the operation itself says the token does not exist


async def _act(
    page: ConsolePage,
    work: Callable[[TokenAdmin, str, list[str]], Awaitable[Any]],
    done: str,
    guarded: bool = True,
) -> Response:
    serial = page.request.path_params["serial"]
    await page.form()
    tokens = await _tokens(page)
    if guarded:
        await guard_administrator(page, await _owner(page, tokens, serial))
    ended: list[str] = []
    try:
        await work(tokens, serial, ended)
        said = f"Token {serial} {done}." + (
            f" {ended[0][:1].upper()}{ended[0][1:]}." if ended else ""
        )
    except SessionsNotEnded as error:
        said = str(error)
    except GatehouseError as error:
        said = f"Nothing changed: {error}"
    return page.redirect(f"/tokens/{serial}", flash=said)


async def disable(page: ConsolePage) -> Response:
    return await _act(page, lambda t, s, e: t.disable(s, e), "disabled")


async def enable(page: ConsolePage) -> Response:
    return await _act(page, lambda t, s, _: t.enable(s), "enabled")


async def unlock(page: ConsolePage) -> Response:
    return await _act(page, lambda t, s, _: t.unlock(s), "unlocked", guarded=False)


async def unassign(page: ConsolePage) -> Response:
    return await _act(page, lambda t, s, e: t.unassign(s, e), "unassigned")


async def assign(page: ConsolePage) -> Response:
    serial = page.request.path_params["serial"]
    fields = await page.form()
    try:
        body = validate(AssignIn, {"user": fields.get("user", "").strip()})
        await guard_administrator(page, body.user)
        await (await _tokens(page)).assign(serial, body.user)
    except ConfigError as error:
        return await token_page(page, _fields_of(error), fields, 422)
    except GatehouseError as error:
        return await token_page(page, {"user": [str(error)]}, fields, 422)
    return page.redirect(f"/tokens/{serial}", flash=f"Token {serial} assigned to {body.user}.")


async def resync(page: ConsolePage) -> Response:
    serial = page.request.path_params["serial"]
    fields = await page.form()
    codes = {"code1": fields.get("code1", "").strip(), "code2": fields.get("code2", "").strip()}
    tokens = await _tokens(page)
    await guard_administrator(page, await _owner(page, tokens, serial))
    try:
        body = validate(ResyncIn, codes)
        await tokens.resync(serial, body.code1, body.code2)
    except ConfigError as error:
        return await token_page(page, _fields_of(error), fields, 422)
    except GatehouseError as error:
        return await token_page(page, {"code1": [str(error)]}, fields, 422)
    return page.redirect(f"/tokens/{serial}", flash=f"Token {serial} resynchronised.")


async def invite(page: ConsolePage) -> Response:
    fields = await page.form()
    given = {"user": fields.get("user", "").strip(), "lifetime": fields.get("lifetime", "72h")}
    try:
        body = validate(InvitationIn, given)
        invitations = await _invitations(page)
        row = await invitations.invite(body.user, body.lifetime, by=page.admin.name)
    except ConfigError as error:
        return await tokens_page(page, given, _fields_of(error), 422)
    except GatehouseError as error:
        return await tokens_page(page, given, {"user": [str(error)]}, 422)
    out = invitation_out(row)
    return page.redirect(
        "/tokens",
        flash=f"Invitation for {out.user} written; it is e-mailed to {out.to} within seconds.",
    )


async def revoke_invitation(page: ConsolePage) -> Response:
    invitation_id = page.request.path_params["id"]
    await page.form()
    try:
        row = await (await _invitations(page)).revoke(invitation_id)
        said = f"Invitation for {row.username} withdrawn."
    except GatehouseError as error:
        said = f"Nothing changed: {error}"
    return page.redirect("/tokens", flash=said)


ROUTES = [
    ConsoleRoute("/tokens", tokens_page, ("GET",), "tokens.read", nav="Tokens"),
    ConsoleRoute("/tokens/invitations", invite, ("POST",), "tokens.write"),
    ConsoleRoute("/tokens/invitations/{id}/revoke", revoke_invitation, ("POST",), "tokens.write"),
    ConsoleRoute("/tokens/{serial}", token_page, ("GET",), "tokens.read"),
    ConsoleRoute("/tokens/{serial}/assign", assign, ("POST",), "tokens.write"),
    ConsoleRoute("/tokens/{serial}/unassign", unassign, ("POST",), "tokens.write"),
    ConsoleRoute("/tokens/{serial}/disable", disable, ("POST",), "tokens.write"),
    ConsoleRoute("/tokens/{serial}/enable", enable, ("POST",), "tokens.write"),
    ConsoleRoute("/tokens/{serial}/unlock", unlock, ("POST",), "tokens.write"),
    ConsoleRoute("/tokens/{serial}/resync", resync, ("POST",), "tokens.write"),
]
