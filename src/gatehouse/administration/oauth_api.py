"""The Administration API of the OpenID Provider (:mod:`.oauth_admin`).

=============================================== ====== ==========================================
``/api/v1/oauth/clients``                        GET    the clients (no secret hash)
``/api/v1/oauth/clients``                        POST   add one; a confidential client's secret
                                                        is answered once; publishes a version
``/api/v1/oauth/clients/{client_id}``            DELETE remove it; publishes a version
``/api/v1/oauth/clients/{client_id}/secret``     POST   a new secret (answered once); publishes
``/api/v1/oauth/keys``                           GET    the signing keys (public facts only)
``/api/v1/oauth/keys/rotate``                    POST   a new key per algorithm
``/api/v1/oauth/signing-keys?kid=K``             GET    the private JWKs: an Authentication
                                                        service's certificate only (mutual TLS)
=============================================== ====== ==========================================

Every route but the last needs the admin token.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gatehouse.administration.api_models import (
    ClientChangeOut,
    ClientIn,
    ClientOut,
    KeyOut,
    RotateOut,
    SigningKeysOut,
)
from gatehouse.administration.app import _peer, _service, admin, answer, endpoint, read_body
from gatehouse.administration.canonical import timestamp
from gatehouse.administration.errors import Forbidden
from gatehouse.administration.oauth_admin import (
    SigningKeyKeeper,
    add_client,
    list_clients,
    new_client,
    remove_client,
    rotate_secret,
)
from gatehouse.config.oauth import ClientSettings
from gatehouse.errors import ConfigError
from gatehouse.internal.endpoint import bad_request
from gatehouse.internal.errors import Code, ServiceError, json_response
from gatehouse.trust.identity import AUTHENTICATION

MAX_KIDS = 16


def client_out(client: ClientSettings) -> ClientOut:
    return ClientOut.model_validate(client.model_dump(mode="json", exclude={"secret_hash"}))


def _when(moment: datetime | None) -> str | None:
    return None if moment is None else timestamp(moment)


def _keeper(request: Request) -> SigningKeyKeeper:
    keeper = _service(request).oauth_keys
    if keeper is None:
        raise ServiceError(Code.UNAVAILABLE, "this service makes no OAuth signing keys", 503)
    return keeper


@admin
async def clients(request: Request) -> Response:
    return answer([client_out(c) for c in await list_clients(_service(request))])


@admin
async def post_client(request: Request) -> Response:
    body = await read_body(request, ClientIn)
    data: dict[str, Any] = body.model_dump(exclude_none=True)
    try:
        client, secret = new_client(data)
    except ValidationError as error:
        problems = [
            (".".join(str(p) for p in e["loc"]), str(e["msg"]).removeprefix("Value error, "))
            for e in error.errors()
        ]
        raise ConfigError(problems, "client") from None
    change = await add_client(_service(request), client, secret)
    return answer(ClientChangeOut(version=change.version, client=client_out(client), secret=secret))


@admin
async def delete_client(request: Request) -> Response:
    change = await remove_client(_service(request), request.path_params["client_id"])
    return answer(ClientChangeOut(version=change.version))


@admin
async def new_secret(request: Request) -> Response:
    change = await rotate_secret(_service(request), request.path_params["client_id"])
    client = client_out(change.client) if change.client else None
    return answer(ClientChangeOut(version=change.version, client=client, secret=change.secret))


@admin
async def keys(request: Request) -> Response:
    states = await _keeper(request).states()
    return answer(
        [
            KeyOut(
                kid=s.kid,
                alg=s.alg,
                state=s.state,  # type: ignore[arg-type]
                created_at=timestamp(s.created_at),
                signs_from=timestamp(s.signs_from),
                drop_at=_when(s.drop_at),
            )
            for s in states
        ]
    )


@admin
async def rotate(request: Request) -> Response:
    made, number = await _keeper(request).rotate()
    return answer(RotateOut(made=[r.kid for r in made], version=number))


@endpoint
async def signing_keys(request: Request) -> Response:
    """The private keys, for an Authentication service (its certificate, not revoked)."""
    peer = await _service(request).authorize_service(None, _peer(request))
    if peer.role != AUTHENTICATION:
        raise Forbidden(
            f"the signing keys are for authentication services only, not {peer.identity}"
        )
    kids = request.query_params.getlist("kid")
    if len(kids) > MAX_KIDS or any(not 0 < len(k) <= 64 for k in kids):
        raise bad_request(f"kid: at most {MAX_KIDS}, each 1 to 64 characters")
    private = await _keeper(request).private_keys(kids)
    response = json_response(SigningKeysOut(keys=private).model_dump(mode="json"))
    response.headers["Cache-Control"] = "no-store"
    return response


ROUTES = [
    Route("/api/v1/oauth/clients", clients, methods=["GET"]),
    Route("/api/v1/oauth/clients", post_client, methods=["POST"]),
    Route("/api/v1/oauth/clients/{client_id}", delete_client, methods=["DELETE"]),
    Route("/api/v1/oauth/clients/{client_id}/secret", new_secret, methods=["POST"]),
    Route("/api/v1/oauth/keys", keys, methods=["GET"]),
    Route("/api/v1/oauth/keys/rotate", rotate, methods=["POST"]),
    Route("/api/v1/oauth/signing-keys", signing_keys, methods=["GET"]),
]

__all__ = ["ROUTES", "client_out"]
