"""The admin API of named administrators and their personal tokens.

==========================================  ======  ============================================
``/api/v1/me``                              GET     who the token is: name, role, permissions
``/api/v1/me/tokens``                       GET     one's own personal tokens (never secrets)
``/api/v1/me/tokens``                       POST    ``{description, ttl}``: a new one, shown once
``/api/v1/me/tokens/{id}/revoke``           POST    revoke one's own
``/api/v1/admins``                          GET     the administrators (``admins.read``)
``/api/v1/admins``                          POST    ``{name, role, email?}`` (``admins.write``);
                                                    a new user gets a password and a TOTP token,
                                                    answered once
``/api/v1/admins/bootstrap``                POST    ``{name, email?}``: the first superadmin, with
                                                    the home's admin token, once
``/api/v1/admins/{name}/role``              PUT     ``{role}``
``/api/v1/admins/{name}``                   DELETE  the role goes, tokens are revoked, sessions end
``/api/v1/admins/tokens``                   GET     everyone's personal tokens
``/api/v1/admins/{name}/tokens``            POST    a token for another administrator
``/api/v1/admins/tokens/{id}/revoke``       POST    revoke anyone's
==========================================  ======  ============================================
"""

from __future__ import annotations

from datetime import datetime, timedelta

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gatehouse.administration.admins import current_actor
from gatehouse.administration.admins_accounts import Credentials, provision, user_exists
from gatehouse.administration.admins_models import (
    AdminIn,
    AdminOut,
    BootstrapIn,
    CredentialsOut,
    MeOut,
    NewPersonalTokenOut,
    PersonalTokenIn,
    PersonalTokenOut,
    RoleIn,
)
from gatehouse.administration.admins_roles import permissions_of
from gatehouse.administration.admins_store import (
    AdminConflict,
    AdminInvalid,
    NewToken,
    PersonalToken,
)
from gatehouse.administration.app import OK, _service, admin, answer, read_body
from gatehouse.administration.errors import Forbidden
from gatehouse.internal.errors import Code, ServiceError
from gatehouse.storage.directory import DirectoryError, valid_username


def token_out(token: PersonalToken, now: datetime) -> PersonalTokenOut:
    return PersonalTokenOut(
        id=token.id,
        name=token.name,
        description=token.description,
        state=token.state(now),
        created_at=token.created_at,
        expires_at=token.expires_at,
        last_used_at=token.last_used_at,
    )


def _new(made: NewToken, now: datetime) -> NewPersonalTokenOut:
    return NewPersonalTokenOut(token=token_out(made.token, now), secret=made.secret)


def _person(request: Request) -> str:
    actor = current_actor()
    if actor.break_glass:
        raise ServiceError(
            Code.BAD_REQUEST,
            "the home's admin token is no person and has no personal tokens; name the "
            "administrator (POST /api/v1/admins/{name}/tokens, 'gatehouse admins tokens "
            "create --for NAME')",
            400,
        )
    return actor.name


@admin
async def me(request: Request) -> Response:
    actor = current_actor()
    permissions = sorted(permissions_of(actor.role))
    return answer(MeOut(name=actor.name, role=actor.role, via=actor.via, permissions=permissions))


@admin
async def my_tokens(request: Request) -> Response:
    service = _service(request)
    now = service.clock()
    return answer([token_out(t, now) for t in await service.admins.tokens(_person(request))])


@admin
async def create_my_token(request: Request) -> Response:
    body = await read_body(request, PersonalTokenIn)
    return await _create_token(request, _person(request), body)


async def _create_token(request: Request, name: str, body: PersonalTokenIn) -> Response:
    service = _service(request)
    made = await service.admins.create_token(
        name, current_actor().name, body.description, timedelta(seconds=body.ttl)
    )
    return answer(_new(made, service.clock()))


@admin
async def revoke_my_token(request: Request) -> Response:
    service = _service(request)
    name = _person(request)
    await service.admins.revoke_token(request.path_params["id"], name, owner=name)
    return answer(OK)


@admin
async def admins(request: Request) -> Response:
    listed = await _service(request).admins.administrators()
    return answer(
        [
            AdminOut(name=a.name, role=a.role, created_at=a.created_at, created_by=a.created_by)
            for a in listed
        ]
    )


async def _add(request: Request, name: str, role: str, email: str | None, first: bool) -> Response:
    service = _service(request)
    if not valid_username(name):
        raise AdminInvalid(f"name: not a valid user name: {name!r}")
    backend = getattr(request.app.state, "tokens", None)
    if backend is None:
        raise ServiceError(Code.NOT_FOUND, "administrators cannot be made here (no home)", 404)
    who = current_actor().name
    credentials: Credentials | None = None
    if first and await service.admins.count():
        await service.admins.add(name, role, who, only_if_none=True)  # raises: done already
    tokens = await backend.admin()  # opens (and migrates) the user and OATH DBs
    if not await user_exists(backend.home, name):
        try:
            credentials = await provision(backend.home, tokens, name, who, email)
        except DirectoryError as exc:
            raise AdminInvalid(f"name: {exc}") from None
    elif first:
        # The bootstrap prints credentials to sign in with: it makes its own user.
        raise AdminConflict(
            f"name: a user {name!r} exists already; bootstrap with another name (--name)"
        )
    await service.admins.add(name, role, who, only_if_none=first)
    made = await service.admins.get(name)
    assert made is not None
    return answer(
        AdminOut(
            name=made.name,
            role=made.role,
            created_at=made.created_at,
            created_by=made.created_by,
            credentials=CredentialsOut(
                password=credentials.password,
                otpauth_uri=credentials.otpauth_uri,
                otp_secret=credentials.otp_secret,
                serial=credentials.serial,
            )
            if credentials
            else None,
        )
    )


@admin
async def add_admin(request: Request) -> Response:
    body = await read_body(request, AdminIn)
    return await _add(request, body.name, body.role, body.email, first=False)


@admin
async def bootstrap(request: Request) -> Response:
    if not current_actor().break_glass:
        raise Forbidden("the bootstrap is made with the home's admin token")
    body = await read_body(request, BootstrapIn)
    return await _add(request, body.name, "superadmin", body.email, first=True)


@admin
async def set_role(request: Request) -> Response:
    body = await read_body(request, RoleIn)
    service = _service(request)
    await service.admins.set_role(request.path_params["name"], body.role, current_actor().name)
    return answer(OK)


@admin
async def remove_admin(request: Request) -> Response:
    await _service(request).admins.remove(request.path_params["name"], current_actor().name)
    return answer(OK)


@admin
async def all_tokens(request: Request) -> Response:
    service = _service(request)
    now = service.clock()
    return answer([token_out(t, now) for t in await service.admins.tokens()])


@admin
async def create_token_for(request: Request) -> Response:
    body = await read_body(request, PersonalTokenIn)
    return await _create_token(request, request.path_params["name"], body)


@admin
async def revoke_token(request: Request) -> Response:
    service = _service(request)
    await service.admins.revoke_token(request.path_params["id"], current_actor().name)
    return answer(OK)


ROUTES = [
    Route("/api/v1/me", me, methods=["GET"]),
    Route("/api/v1/me/tokens", my_tokens, methods=["GET"]),
    Route("/api/v1/me/tokens", create_my_token, methods=["POST"]),
    Route("/api/v1/me/tokens/{id}/revoke", revoke_my_token, methods=["POST"]),
    Route("/api/v1/admins", admins, methods=["GET"]),
    Route("/api/v1/admins", add_admin, methods=["POST"]),
    Route("/api/v1/admins/bootstrap", bootstrap, methods=["POST"]),
    Route("/api/v1/admins/tokens", all_tokens, methods=["GET"]),
    Route("/api/v1/admins/tokens/{id}/revoke", revoke_token, methods=["POST"]),
    Route("/api/v1/admins/{name}/role", set_role, methods=["PUT"]),
    Route("/api/v1/admins/{name}", remove_admin, methods=["DELETE"]),
    Route("/api/v1/admins/{name}/tokens", create_token_for, methods=["POST"]),
]
