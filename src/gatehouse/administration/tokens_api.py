"""The Administration service's token routes: ``gatehouse tokens ...`` over its REST API.

Every route needs the admin token (``Authorization: Bearer``), like every other admin route
of :mod:`.app`. The operations are :class:`~gatehouse.oath.token_admin.TokenAdmin`'s, on the
OATH DB, seed keyring and user DB of Admin's home (``HOME/databases.yaml``,
``HOME/oath-seeds.key``): what ``gatehouse tokens --home`` uses on the same machine. Each
change is in Admin's audit log (``GET /api/v1/audit``, under the administrator's name, or
``admin-token``) and in the user DB's audit events (``by: admin-api``, ``admin``: the
administrator's name). No answer carries a seed, except the otpauth:// URI of a token whose
secret the call itself generated.

Disabling, unassigning or deleting a token ends its owner's sessions on every Access Point
(:func:`~gatehouse.oath.token_admin.home_session_ender`, as ``gatehouse tokens`` does); when
they cannot be ended the change stays made and the answer is 503 saying so and how to retry.

==========================================  ======  =============================================
``/api/v1/tokens``                          GET     every token (``?user=U``: U's)
``/api/v1/tokens``                          POST    add one: ``{user, type, secret?, algorithm,
                                                    digits, period?, description}``
``/api/v1/tokens/import``                   POST    ``{content, format?, psk?, assign?}``
``/api/v1/tokens/rekey``                    POST    new seed key, every seed re-encrypted
``/api/v1/tokens/{serial}``                 GET     one token
``/api/v1/tokens/{serial}``                 DELETE  delete it
``/api/v1/tokens/{serial}/assign``          POST    ``{user}``
``/api/v1/tokens/{serial}/{action}``        POST    unassign, disable, enable, unlock
``/api/v1/tokens/{serial}/resync``          POST    ``{code1, code2}``
``/api/v1/token-enrolment/{user}``          GET     must the user enrol a token at next login
``/api/v1/token-enrolment/{user}``          PUT     ``{required}``: set or clear that
``/api/v1/token-invitations``               GET     invitations (``?user=U``: U's), never links
``/api/v1/token-invitations``               POST    ``{user, lifetime?}``: e-mail U a single-use
                                                    link to enrol a TOTP token (default 72h)
``/api/v1/token-invitations/{id}/revoke``   POST    withdraw an open invitation
==========================================  ======  =============================================

An invitation is written to the OATH DB (:mod:`gatehouse.oath.invitation_admin`); an
Authentication service hands its link to the Distribution service within seconds (Admin does
not call Distribution). No answer carries the link or its secret.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gatehouse.administration.admins import actor_name, current_actor
from gatehouse.administration.admins_roles import allows
from gatehouse.administration.app import OK, admin, answer, read_body
from gatehouse.administration.errors import Forbidden
from gatehouse.authentication import audit
from gatehouse.config.base import Strict
from gatehouse.config.units import Seconds
from gatehouse.distribution.calls import mask_email
from gatehouse.errors import GatehouseError
from gatehouse.internal.errors import Code, ServiceError
from gatehouse.oath.errors import KeyringError, OathError
from gatehouse.oath.invitation_admin import DEFAULT_LIFETIME, InvitationAdmin, InvitationError
from gatehouse.oath.invitations import InvitationRow, InvitationStore
from gatehouse.oath.seeds import KEYRING_FILE, Keyring
from gatehouse.oath.store import (
    TokenAssigned,
    TokenExists,
    TokenNotFound,
    TokenRow,
    TokenStore,
    TokenStoreError,
)
from gatehouse.oath.token_admin import (
    SessionsNotEnded,
    TokenAdmin,
    TokenAdminError,
    UnknownUser,
    home_session_ender,
    parse_import,
    parse_psk,
    parse_secret,
)
from gatehouse.oath.token_spec import TokenParams
from gatehouse.storage import directory
from gatehouse.storage.engine import Database, create_engine
from gatehouse.storage.home import database_urls
from gatehouse.storage.migrate import upgrade

#: Admin's audit action of each token event.
ACTIONS = {
    "token_added": "token.add",
    "tokens_imported": "token.import",
    "token_assigned": "token.assign",
    "token_unassigned": "token.unassign",
    "token_disabled": "token.disable",
    "token_enabled": "token.enable",
    "token_unlocked": "token.unlock",
    "token_resynced": "token.resync",
    "token_deleted": "token.delete",
    "tokens_rekeyed": "token.rekey",
    "enrolment_required": "token.require_enrolment",
    "enrolment_not_required": "token.require_enrolment_off",
    "token_invitation_created": "token.invite",
    "token_invitation_revoked": "token.revoke_invitation",
}


# -- bodies and answers ----------------------------------------------------------------------


class TokenIn(Strict):
    user: str
    type: Literal["totp", "hotp"] = "totp"
    secret: str | None = Field(default=None, description="base32; else 160 bits are generated")
    algorithm: Literal["sha1", "sha256", "sha512"] = "sha1"
    digits: Literal[6, 8] = 6
    period: Literal[30, 60] | None = Field(default=None, description="TOTP only; default 30")
    description: str = Field(default="", max_length=1000)


class ImportIn(Strict):
    content: str = Field(description="the file: PSKC XML, CSV, or otpauth:// URIs, one a line")
    format: Literal["pskc", "csv", "uri"] | None = None
    psk: str | None = Field(default=None, description="a protected PSKC file's key, in hex")
    assign: str | None = None
    name: str = Field(default="", max_length=200, description="the file's name, for the audit")


class AssignIn(Strict):
    user: str


class InvitationIn(Strict):
    user: str
    lifetime: Seconds = Field(
        default=DEFAULT_LIFETIME, description="how long the link works (5m to 720h)"
    )


class InvitationOut(Strict):
    id: str
    user: str
    to: str = Field(description="the e-mail address, masked")
    state: str = Field(description="unsent, sent, used, expired or revoked")
    created_at: datetime
    expires_at: datetime
    sent_at: datetime | None
    used_at: datetime | None
    serial: str | None = Field(description="the token enrolled with it")


def invitation_out(row: InvitationRow) -> InvitationOut:
    now = datetime.now(UTC)
    return InvitationOut(
        id=row.id,
        user=row.username,
        to=mask_email(row.email),
        state="expired" if row.link_state(now) == "expired" else row.state,
        created_at=row.created_at,
        expires_at=row.expires_at,
        sent_at=row.sent_at,
        used_at=row.used_at,
        serial=row.serial,
    )


class EnrolmentIn(Strict):
    required: bool = True


class EnrolmentOut(Strict):
    user: str
    required: bool


class ResyncIn(Strict):
    code1: str = Field(max_length=16)
    code2: str = Field(max_length=16)


class TokenOut(Strict):
    serial: str
    owner: str | None
    type: str
    algorithm: str
    digits: int
    period: int | None
    state: str
    failures: int
    counter: int | None
    drift: int | None
    description: str
    seed_key_id: str
    created_at: datetime
    last_used_at: datetime | None


class AddedOut(Strict):
    token: TokenOut
    uri: str | None = None


class ImportedOut(Strict):
    serials: list[str]


class RekeyOut(Strict):
    key_id: str
    rekeyed: int
    current: int
    changed: int
    failed: list[str]


def token_out(token: TokenRow) -> TokenOut:
    totp = token.type == "totp"
    return TokenOut(
        serial=token.serial,
        owner=token.owner,
        type=token.type,
        algorithm=token.algorithm,
        digits=token.digits,
        period=token.period if totp else None,
        state=token.state,
        failures=token.failures,
        counter=None if totp else token.counter,
        drift=token.drift if totp else None,
        description=token.description,
        seed_key_id=token.seed_key_id,
        created_at=token.created_at,
        last_used_at=token.last_used_at,
    )


# -- the backend: Admin's home ---------------------------------------------------------------


class HomeTokens:
    """The token operations on the databases and keyring of one installation home, opened
    (and the OATH and user DBs migrated) at first use."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._admin: TokenAdmin | None = None
        self._user_db: Database | None = None
        self._engine: AsyncEngine | None = None
        self._lock = asyncio.Lock()
        self.audit_log: Callable[[str, str, str], Awaitable[None]] | None = None
        self._invitations: InvitationAdmin | None = None

    async def admin(self) -> TokenAdmin:
        async with self._lock:
            if self._admin is None:
                self._admin = await self._open()
            return self._admin

    async def _open(self) -> TokenAdmin:
        urls = database_urls(self.home)
        await upgrade(urls.user_db, "user")
        await upgrade(urls.oath_db, "oath")
        keyring = Keyring.load_or_create(self.home / KEYRING_FILE)
        user_db = self._user_db = Database(urls.user_db)
        engine = self._engine = create_engine(urls.oath_db)

        async def user_exists(username: str) -> bool:
            async with user_db.session() as session:
                return await directory.find_user(session, username) is not None

        async def record(event: str, username: str | None, detail: dict[str, object]) -> None:
            await audit.record(
                user_db, event, username, None, {**detail, "by": "admin-api", "admin": actor_name()}
            )
            if self.audit_log is not None:
                what = json.dumps({"user": username, **detail}, sort_keys=True)
                await self.audit_log(actor_name(), ACTIONS.get(event, event), what)

        return TokenAdmin(
            TokenStore(engine),
            keyring,
            user_exists,
            record,
            end_sessions=home_session_ender(self.home),
        )

    async def invitations(self) -> InvitationAdmin:
        """Token invitations on the same databases and keyring (opened with :meth:`admin`)."""
        tokens = await self.admin()
        async with self._lock:
            if self._invitations is None:
                user_db, engine = self._user_db, self._engine
                assert user_db is not None
                assert engine is not None

                async def contact(username: str) -> tuple[bool, str | None]:
                    async with user_db.session() as session:
                        user = await directory.find_user(session, username)
                    return (False, None) if user is None else (True, user.email)

                async def record(
                    event: str, username: str | None, detail: dict[str, object]
                ) -> None:
                    await audit.record(
                        user_db,
                        event,
                        username,
                        None,
                        {**detail, "by": "admin-api", "admin": actor_name()},
                    )
                    if self.audit_log is not None:
                        what = json.dumps({"user": username, **detail}, sort_keys=True)
                        await self.audit_log(actor_name(), ACTIONS.get(event, event), what)

                self._invitations = InvitationAdmin(
                    InvitationStore(engine), tokens.keyring, contact, record
                )
            return self._invitations

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
        if self._user_db is not None:
            await self._user_db.dispose()


# -- routes ----------------------------------------------------------------------------------


async def _tokens(request: Request) -> TokenAdmin:
    backend: HomeTokens | None = getattr(request.app.state, "tokens", None)
    if backend is None:
        raise ServiceError(Code.NOT_FOUND, "token administration is not set up here", 404)
    if backend.audit_log is None:
        backend.audit_log = request.app.state.service.store.record_audit
    try:
        return await backend.admin()
    except KeyringError as exc:
        raise ServiceError(Code.INTERNAL, str(exc), 500) from None


async def _guard_owner(request: Request, username: str | None) -> None:
    """A token change for a user who is an administrator needs ``admins.write``: otherwise
    whoever may manage tokens (helpdesk) could give a superadmin's account a token whose
    seed they know, or take theirs away. The console checks the same
    (``console.page_support.guard_administrator``)."""
    actor = current_actor()
    if not username or allows(actor.role, "admins.write"):
        return
    administrator = await request.app.state.service.admins.get(username)
    if administrator is not None:
        raise Forbidden(
            f"{actor.name} ({actor.role}) lacks the permission admins.write: {username} is "
            f"an administrator ({administrator.role}), and changing their tokens needs it"
        )


async def _guard_token(request: Request, tokens: TokenAdmin, serial: str) -> None:
    await _guard_owner(request, (await tokens.store.get(serial)).owner)


def _errors(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """The token errors as their status: unknown token or user 404, taken serial or
    another's token 409, bad input 400, the owner's sessions not ended (the change made)
    503."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except (TokenNotFound, UnknownUser) as exc:
            raise ServiceError(Code.NOT_FOUND, str(exc), 404) from None
        except (TokenExists, TokenAssigned) as exc:
            raise ServiceError(Code.CONFLICT, str(exc), 409) from None
        except KeyringError as exc:
            raise ServiceError(Code.INTERNAL, str(exc), 500) from None
        except SessionsNotEnded as exc:
            raise ServiceError(Code.UNAVAILABLE, str(exc), 503) from None
        except (TokenStoreError, TokenAdminError, OathError, directory.DirectoryError) as exc:
            raise ServiceError(Code.BAD_REQUEST, str(exc), 400) from None

    wrapped.__name__ = handler.__name__
    return wrapped


def _user(name: str) -> str:
    try:
        return directory.check_username(name)
    except GatehouseError as exc:
        raise ServiceError(Code.BAD_REQUEST, f"user: {exc}", 400) from None


@admin
@_errors
async def list_tokens(request: Request) -> Response:
    user = request.query_params.get("user")
    tokens = await (await _tokens(request)).list_tokens(_user(user) if user else None)
    return answer([token_out(t) for t in tokens])


@admin
@_errors
async def add_token(request: Request) -> Response:
    body = await read_body(request, TokenIn)
    if body.type == "hotp" and body.period is not None:
        raise ServiceError(Code.BAD_REQUEST, "period: applies to TOTP tokens only", 400)
    params = TokenParams(body.type, body.algorithm, body.digits, body.period or 30)
    secret = parse_secret(body.secret) if body.secret is not None else None
    await _guard_owner(request, _user(body.user) if body.user else None)
    tokens = await _tokens(request)
    added = await tokens.add(_user(body.user), params, secret, body.description)
    return answer(AddedOut(token=token_out(added.token), uri=added.uri))


@admin
@_errors
async def import_tokens(request: Request) -> Response:
    body = await read_body(request, ImportIn)
    psk = parse_psk(body.psk) if body.psk is not None else None
    owner = _user(body.assign) if body.assign else None
    await _guard_owner(request, owner)
    try:
        parsed = parse_import(body.content.encode("utf-8"), body.format, psk)
    except OathError as exc:
        raise ServiceError(Code.BAD_REQUEST, f"{exc}; nothing was imported", 400) from None
    serials = await (await _tokens(request)).import_tokens(parsed, owner, body.name)
    return answer(ImportedOut(serials=serials))


@admin
@_errors
async def rekey(request: Request) -> Response:
    result = await (await _tokens(request)).rekey()
    return answer(
        RekeyOut(
            key_id=result.key_id,
            rekeyed=result.rekeyed,
            current=result.current,
            changed=result.changed,
            failed=list(result.failed),
        )
    )


@admin
@_errors
async def get_token(request: Request) -> Response:
    tokens = await _tokens(request)
    return answer(token_out(await tokens.store.get(request.path_params["serial"])))


@admin
@_errors
async def delete_token(request: Request) -> Response:
    tokens = await _tokens(request)
    await _guard_token(request, tokens, request.path_params["serial"])
    await tokens.delete(request.path_params["serial"])
    return answer(OK)


@admin
@_errors
async def assign(request: Request) -> Response:
    body = await read_body(request, AssignIn)
    tokens = await _tokens(request)
    await _guard_owner(request, _user(body.user))
    await _guard_token(request, tokens, request.path_params["serial"])
    return answer(token_out(await tokens.assign(request.path_params["serial"], _user(body.user))))


@admin
@_errors
async def resync(request: Request) -> Response:
    body = await read_body(request, ResyncIn)
    tokens = await _tokens(request)
    await _guard_token(request, tokens, request.path_params["serial"])
    token = await tokens.resync(request.path_params["serial"], body.code1, body.code2)
    return answer(token_out(token))


@admin
@_errors
async def state_action(request: Request) -> Response:
    tokens = await _tokens(request)
    serial = request.path_params["serial"]
    actions = {
        "unassign": tokens.unassign,
        "disable": tokens.disable,
        "enable": tokens.enable,
        "unlock": tokens.unlock,
    }
    action = actions.get(request.path_params["action"])
    if action is None:
        name = request.path_params["action"]
        raise ServiceError(Code.NOT_FOUND, f"no token action {name!r}", 404)
    if action != tokens.unlock:  # unlocking gives no one a factor: helpdesk may
        await _guard_token(request, tokens, serial)
    return answer(token_out(await action(serial)))


@admin
@_errors
async def enrolment(request: Request) -> Response:
    user = _user(request.path_params["user"])
    tokens = await _tokens(request)
    if request.method == "PUT":
        body = await read_body(request, EnrolmentIn)
        await tokens.require_enrolment(user, body.required)
    else:
        await tokens.check_user(user)
    required = await tokens.store.enrolment_required(user)
    return answer(EnrolmentOut(user=user, required=required))


async def _invitations(request: Request) -> InvitationAdmin:
    await _tokens(request)  # set up, and the same errors
    backend: HomeTokens = request.app.state.tokens
    return await backend.invitations()


def _invitation_errors(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """Unknown user or invitation 404, the rest of the refusals 400."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except InvitationError as exc:
            status = 404 if "does not exist" in str(exc) or "no invitation" in str(exc) else 400
            code = Code.NOT_FOUND if status == 404 else Code.BAD_REQUEST
            raise ServiceError(code, str(exc), status) from None

    wrapped.__name__ = handler.__name__
    return wrapped


@admin
@_errors
@_invitation_errors
async def list_invitations(request: Request) -> Response:
    user = request.query_params.get("user")
    invitations = await _invitations(request)
    rows = await invitations.list_invitations(_user(user) if user else None)
    return answer([invitation_out(row) for row in rows])


@admin
@_errors
@_invitation_errors
async def invite(request: Request) -> Response:
    body = await read_body(request, InvitationIn)
    await _guard_owner(request, _user(body.user))
    invitations = await _invitations(request)
    row = await invitations.invite(_user(body.user), body.lifetime, by="admin-api")
    return answer(invitation_out(row))


@admin
@_errors
@_invitation_errors
async def revoke_invitation(request: Request) -> Response:
    invitations = await _invitations(request)
    return answer(invitation_out(await invitations.revoke(request.path_params["id"])))


ROUTES = [
    Route("/api/v1/token-invitations", list_invitations, methods=["GET"]),
    Route("/api/v1/token-invitations", invite, methods=["POST"]),
    Route("/api/v1/token-invitations/{id}/revoke", revoke_invitation, methods=["POST"]),
    Route("/api/v1/token-enrolment/{user}", enrolment, methods=["GET", "PUT"]),
    Route("/api/v1/tokens", list_tokens, methods=["GET"]),
    Route("/api/v1/tokens", add_token, methods=["POST"]),
    Route("/api/v1/tokens/import", import_tokens, methods=["POST"]),
    Route("/api/v1/tokens/rekey", rekey, methods=["POST"]),
    Route("/api/v1/tokens/{serial}", get_token, methods=["GET"]),
    Route("/api/v1/tokens/{serial}", delete_token, methods=["DELETE"]),
    Route("/api/v1/tokens/{serial}/assign", assign, methods=["POST"]),
    Route("/api/v1/tokens/{serial}/resync", resync, methods=["POST"]),
    Route("/api/v1/tokens/{serial}/{action}", state_action, methods=["POST"]),
]
