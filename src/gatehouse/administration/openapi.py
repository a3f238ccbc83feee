"""The OpenAPI 3.1 document of the Administration API (``GET /api/v1/openapi.json``).

Operations are listed here by hand: summary, who may call, parameters, body and answers.
The schemas come from :mod:`.api_models`, the same models that validate requests and build
answers. A test checks that every route of the app is described, and nothing more.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from gatehouse import __version__
from gatehouse.administration import admins_models as am
from gatehouse.administration import api_models as api

Who = Literal["anyone", "admin", "service"]
REF = "#/components/schemas/{model}"


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    where: Literal["path", "query"]
    schema: dict[str, Any]
    description: str


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    summary: str
    who: Who
    answer: type[BaseModel] | tuple[type[BaseModel]] | None
    body: type[BaseModel] | None = None
    params: tuple[Param, ...] = ()
    errors: tuple[int, ...] = ()
    description: str = ""
    extra: dict[int, str] = field(default_factory=dict)
    #: What an error status means here, where the general text (``_ERROR_TEXT``) says too little.
    error_text: dict[int, str] = field(default_factory=dict)


_VERSION = {"type": "integer", "minimum": 1}
_SERVICE_ID = {"type": "string", "pattern": "^[a-z0-9][a-z0-9_.-]{0,62}$"}
_LIMIT = Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000}, "at most")

OPERATIONS: tuple[Operation, ...] = (
    Operation("get", "/api/v1/health", "Is the service up", "anyone", api.HealthOut, errors=(503,)),
    Operation(
        "get", "/api/v1/openapi.json", "This document", "anyone", None, extra={200: "OpenAPI 3.1"}
    ),
    Operation(
        "get",
        "/api/v1/ca",
        "The installation's internal CA certificate (PEM)",
        "anyone",
        None,
        extra={200: "application/x-pem-file"},
        description="A joining service fetches it first and checks its fingerprint against "
        "the one in its join token.",
    ),
    Operation("get", "/api/v1/draft", "The draft", "admin", api.DraftOut, errors=(409,)),
    Operation(
        "put",
        "/api/v1/draft",
        "Replace the draft",
        "admin",
        api.OkOut,
        body=api.DraftIn,
        errors=(400, 422),
        description="A configuration with problems is refused (422) and changes nothing.",
    ),
    Operation(
        "get",
        "/api/v1/diff",
        "What publishing the draft would change",
        "admin",
        api.DiffOut,
        params=(Param("from", "query", _VERSION, "the version to compare with (default newest)"),),
        errors=(400, 404, 409, 422),
    ),
    Operation(
        "post",
        "/api/v1/publish",
        "Publish the draft as the next version",
        "admin",
        api.VersionNumberOut,
        body=api.PublishIn,
        errors=(400, 409, 422),
        description="409: no draft, or the draft says what the newest version says. "
        "Every waiting config request is answered at once.",
    ),
    Operation(
        "post",
        "/api/v1/rollback",
        "Publish an earlier version's configuration again, as a new version",
        "admin",
        api.VersionNumberOut,
        body=api.RollbackIn,
        errors=(400, 404, 409, 422),
    ),
    Operation(
        "get",
        "/api/v1/versions",
        "Published versions, newest first",
        "admin",
        (api.VersionSummary,),
        params=(_LIMIT,),
        errors=(400,),
    ),
    Operation(
        "get",
        "/api/v1/versions/{number}",
        "One published version",
        "admin",
        api.VersionOut,
        params=(Param("number", "path", _VERSION, "version number"),),
        errors=(404,),
    ),
    Operation(
        "get", "/api/v1/services", "Registered services and their state", "admin", (api.ServiceOut,)
    ),
    Operation(
        "post",
        "/api/v1/join-tokens",
        "A one-time token for a service to join with",
        "admin",
        api.JoinTokenOut,
        body=api.JoinTokenIn,
        errors=(400,),
        description="The token names one service (role and id), works once and expires "
        "(default 1 h, at most 24 h); it carries the CA's fingerprint.",
    ),
    Operation(
        "post",
        "/api/v1/services/{service_id}/revoke",
        "Revoke every certificate of a service and publish the list at once",
        "admin",
        api.RevokeOut,
        body=api.RevokeIn,
        params=(Param("service_id", "path", _SERVICE_ID, "the service"),),
        errors=(404,),
    ),
    Operation(
        "get",
        "/api/v1/audit",
        "The audit log, newest first",
        "admin",
        (api.AuditOut,),
        params=(
            _LIMIT,
            Param("before", "query", {"type": "integer", "minimum": 1}, "entries older than id"),
        ),
        errors=(400,),
    ),
    Operation(
        "post",
        "/api/v1/register",
        "Enrol with a join token and a CSR; answers the certificate, the CA and Admin's public key",
        "anyone",
        api.RegisterOut,
        body=api.RegisterIn,
        errors=(400, 401, 409),
        description="The token works once, before it expires, for the service it was made for; "
        "the certificate names that service. 409: the service is enrolled and the token was "
        "not made with `replace`.",
    ),
    Operation(
        "post",
        "/api/v1/certificates/renew",
        "A new certificate for the calling service's new key",
        "service",
        api.RenewOut,
        body=api.RenewIn,
        errors=(400, 403),
    ),
    Operation(
        "get",
        "/api/v1/config/{service_id}",
        "The service's signed configuration, once newer than `after` (long poll)",
        "service",
        api.EnvelopeOut,
        params=(
            Param("service_id", "path", _SERVICE_ID, "the calling service"),
            Param("after", "query", {"type": "integer", "minimum": 0}, "the version it runs"),
            Param(
                "wait",
                "query",
                {"type": "number", "minimum": 0, "maximum": 60},
                "seconds to wait for a newer version (default 0)",
            ),
        ),
        errors=(400, 403, 404, 409),
        extra={204: "no newer version within `wait` seconds"},
        description="409: `after` is above every published version (another installation's, "
        "or a restored database). 404: the service is not in the newest version.",
    ),
    Operation(
        "post",
        "/api/v1/config/{service_id}/ack",
        "Report the version the service runs, or why it could not apply one",
        "service",
        api.OkOut,
        body=api.AckIn,
        params=(Param("service_id", "path", _SERVICE_ID, "the calling service"),),
        errors=(400, 403, 404),
    ),
)

_CLIENT_ID = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._~-]{0,127}$"}
_CLIENT = Param("client_id", "path", _CLIENT_ID, "the client's id")

#: The OpenID Provider's routes (gatehouse.administration.oauth_api).
OAUTH_OPERATIONS: tuple[Operation, ...] = (
    Operation("get", "/api/v1/oauth/clients", "The OAuth clients", "admin", (api.ClientOut,)),
    Operation(
        "post",
        "/api/v1/oauth/clients",
        "Register an OAuth client and publish the next version",
        "admin",
        api.ClientChangeOut,
        body=api.ClientIn,
        errors=(400, 409, 422),
        description="A confidential client's secret is made here and answered this once; only "
        "its hash is published.",
    ),
    Operation(
        "delete",
        "/api/v1/oauth/clients/{client_id}",
        "Remove an OAuth client and publish the next version",
        "admin",
        api.ClientChangeOut,
        params=(_CLIENT,),
        errors=(404,),
    ),
    Operation(
        "post",
        "/api/v1/oauth/clients/{client_id}/secret",
        "A new secret for a confidential client (answered once); publishes the next version",
        "admin",
        api.ClientChangeOut,
        body=api.EmptyIn,
        params=(_CLIENT,),
        errors=(400, 404),
    ),
    Operation("get", "/api/v1/oauth/keys", "The signing keys", "admin", (api.KeyOut,)),
    Operation(
        "post",
        "/api/v1/oauth/keys/rotate",
        "A new signing key per algorithm (published now, signing after publish_before)",
        "admin",
        api.RotateOut,
        body=api.EmptyIn,
    ),
    Operation(
        "get",
        "/api/v1/oauth/signing-keys",
        "The private signing keys, for authentication services only",
        "service",
        api.SigningKeysOut,
        params=(Param("kid", "query", {"type": "string"}, "a key id (repeatable)"),),
        errors=(400, 403),
        description="Only an authentication service's certificate (mutual TLS) is answered.",
    ),
)

_SERIAL = Param("serial", "path", {"type": "string"}, "the token's serial")
_USER_QUERY = Param("user", "query", {"type": "string"}, "only this user's")
_USER = Param("user", "path", {"type": "string"}, "the user")
#: Every token route answers 404 where token administration is not set up, and 500 when the
#: seed keyring cannot be read.
_NO_TOKENS = "token administration is not set up here"
_TOKEN_404 = {404: f"no such token or user, or {_NO_TOKENS}"}
_USER_404 = {404: f"no such user, or {_NO_TOKENS}"}
_SESSIONS_503 = {
    503: "the change is made, but the owner's sessions could not all be ended: the message "
    "says how to retry"
}
_ENDS_SESSIONS = "Ends the owner's sessions on every Access Point; 503 when they cannot be ended."

#: The OATH token and token invitation routes (gatehouse.administration.tokens_api).
TOKEN_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "get",
        "/api/v1/tokens",
        "The OATH tokens",
        "admin",
        (api.TokenOut,),
        params=(_USER_QUERY,),
        errors=(400, 404),
        error_text=_USER_404,
    ),
    Operation(
        "post",
        "/api/v1/tokens",
        "Add a token for a user (with its seed, or one generated)",
        "admin",
        api.TokenAddedOut,
        body=api.TokenIn,
        errors=(400, 404, 409),
        error_text=_USER_404,
        description="The answer carries an otpauth:// URI (with the seed) only when the seed "
        "was generated by this call; no answer carries a seed otherwise.",
    ),
    Operation(
        "post",
        "/api/v1/tokens/import",
        "Import tokens from a PSKC, CSV or otpauth:// URI file: all or none",
        "admin",
        api.TokensImportedOut,
        body=api.TokenImportIn,
        errors=(400, 404, 409),
        error_text={**_USER_404, 409: "a serial in the file is taken"},
    ),
    Operation(
        "post",
        "/api/v1/tokens/rekey",
        "A new seed key; every seed is re-encrypted with it",
        "admin",
        api.RekeyOut,
        body=api.EmptyIn,
        errors=(404,),
        error_text={404: _NO_TOKENS},
    ),
    Operation(
        "get",
        "/api/v1/tokens/{serial}",
        "One token",
        "admin",
        api.TokenOut,
        params=(_SERIAL,),
        errors=(400, 404),
        error_text=_TOKEN_404,
    ),
    Operation(
        "delete",
        "/api/v1/tokens/{serial}",
        "Delete a token",
        "admin",
        api.OkOut,
        params=(_SERIAL,),
        errors=(400, 404, 503),
        error_text={**_TOKEN_404, **_SESSIONS_503},
        description=_ENDS_SESSIONS,
    ),
    Operation(
        "post",
        "/api/v1/tokens/{serial}/assign",
        "Give an unassigned token to a user",
        "admin",
        api.TokenOut,
        body=api.TokenAssignIn,
        params=(_SERIAL,),
        errors=(400, 404, 409),
        error_text={**_TOKEN_404, 409: "the token is another user's"},
    ),
    Operation(
        "post",
        "/api/v1/tokens/{serial}/resync",
        "Resynchronise a token with two consecutive codes",
        "admin",
        api.TokenOut,
        body=api.TokenResyncIn,
        params=(_SERIAL,),
        errors=(400, 404),
        error_text=_TOKEN_404,
    ),
    Operation(
        "post",
        "/api/v1/tokens/{serial}/{action}",
        "Unassign, disable, enable or unlock a token",
        "admin",
        api.TokenOut,
        body=api.EmptyIn,
        params=(
            _SERIAL,
            Param(
                "action",
                "path",
                {"type": "string", "enum": ["unassign", "disable", "enable", "unlock"]},
                "what to do",
            ),
        ),
        errors=(400, 404, 503),
        error_text={
            404: f"no such token or action, or {_NO_TOKENS}",
            **_SESSIONS_503,
        },
        description="unassign and disable end the owner's sessions on every Access Point; 503 "
        "when they cannot be ended.",
    ),
    Operation(
        "get",
        "/api/v1/token-enrolment/{user}",
        "Must the user enrol a token at next login",
        "admin",
        api.EnrolmentOut,
        params=(_USER,),
        errors=(400, 404),
        error_text=_USER_404,
    ),
    Operation(
        "put",
        "/api/v1/token-enrolment/{user}",
        "Require (or no longer require) the user to enrol a token at next login",
        "admin",
        api.EnrolmentOut,
        body=api.EnrolmentIn,
        params=(_USER,),
        errors=(400, 404),
        error_text=_USER_404,
    ),
    Operation(
        "get",
        "/api/v1/token-invitations",
        "Token invitations (never their links)",
        "admin",
        (api.InvitationOut,),
        params=(_USER_QUERY,),
        errors=(400, 404),
        error_text=_USER_404,
    ),
    Operation(
        "post",
        "/api/v1/token-invitations",
        "E-mail a user a single-use link to enrol a TOTP token",
        "admin",
        api.InvitationOut,
        body=api.InvitationIn,
        errors=(400, 404),
        error_text=_USER_404,
        description="The invitation is written to the OATH DB; an Authentication service "
        "hands its link to the Distribution service within seconds. 400: a lifetime out of "
        "5m to 720h, or a user without a usable e-mail address. The answer never carries the "
        "link.",
    ),
    Operation(
        "post",
        "/api/v1/token-invitations/{id}/revoke",
        "Withdraw an open invitation",
        "admin",
        api.InvitationOut,
        body=api.EmptyIn,
        params=(Param("id", "path", {"type": "string"}, "the invitation's id"),),
        errors=(400, 404),
        error_text={404: f"no such invitation, or {_NO_TOKENS}", 400: "not open any more"},
    ),
)

_NAME = Param("name", "path", {"type": "string"}, "the administrator's user name")
_TOKEN_ID = Param("id", "path", {"type": "string"}, "the personal token's id")

#: Named administrators and their personal tokens (gatehouse.administration.admins_api).
ADMINS_OPERATIONS: tuple[Operation, ...] = (
    Operation("get", "/api/v1/me", "Who the token is: name, role, permissions", "admin", am.MeOut),
    Operation(
        "get",
        "/api/v1/me/tokens",
        "One's own personal tokens",
        "admin",
        (am.PersonalTokenOut,),
        errors=(400,),
        error_text={400: "the home's admin token is no person"},
    ),
    Operation(
        "post",
        "/api/v1/me/tokens",
        "A new personal token (its secret shown once)",
        "admin",
        am.NewPersonalTokenOut,
        body=am.PersonalTokenIn,
        errors=(400,),
    ),
    Operation(
        "post",
        "/api/v1/me/tokens/{id}/revoke",
        "Revoke one's own personal token",
        "admin",
        api.OkOut,
        body=api.EmptyIn,
        params=(_TOKEN_ID,),
        errors=(400, 404),
    ),
    Operation("get", "/api/v1/admins", "The administrators", "admin", (am.AdminOut,)),
    Operation(
        "post",
        "/api/v1/admins",
        "Make a user an administrator",
        "admin",
        am.AdminOut,
        body=am.AdminIn,
        errors=(400, 404, 409),
        description="A user that does not exist is created with a random password and an "
        "active TOTP token, answered once in ``credentials``.",
    ),
    Operation(
        "post",
        "/api/v1/admins/bootstrap",
        "The first superadmin (once, with the home's admin token)",
        "admin",
        am.AdminOut,
        body=am.BootstrapIn,
        errors=(400, 409),
        error_text={409: "there are administrators already, or the user exists"},
    ),
    Operation(
        "get",
        "/api/v1/admins/tokens",
        "Every administrator's personal tokens",
        "admin",
        (am.PersonalTokenOut,),
    ),
    Operation(
        "post",
        "/api/v1/admins/tokens/{id}/revoke",
        "Revoke a personal token",
        "admin",
        api.OkOut,
        body=api.EmptyIn,
        params=(_TOKEN_ID,),
        errors=(404,),
    ),
    Operation(
        "put",
        "/api/v1/admins/{name}/role",
        "Give an administrator another role",
        "admin",
        api.OkOut,
        body=am.RoleIn,
        params=(_NAME,),
        errors=(400, 404, 409),
        error_text={409: "the last superadmin keeps the role"},
    ),
    Operation(
        "delete",
        "/api/v1/admins/{name}",
        "Take the role away (tokens revoked, sessions ended)",
        "admin",
        api.OkOut,
        params=(_NAME,),
        errors=(404, 409),
        error_text={409: "the last superadmin stays"},
    ),
    Operation(
        "post",
        "/api/v1/admins/{name}/tokens",
        "A personal token for an administrator",
        "admin",
        am.NewPersonalTokenOut,
        body=am.PersonalTokenIn,
        params=(_NAME,),
        errors=(400, 404),
    ),
)

_ERROR_TEXT = {
    400: "malformed request",
    401: "missing or wrong credentials",
    403: "a client certificate that is not the service's, or is revoked",
    404: "not found",
    409: "conflict",
    422: "invalid configuration: every problem with its path",
    503: "the database is unavailable",
}
#: A personal token's administrator whose role lacks the route's permission
#: (gatehouse.administration.admins_roles.rest_permission).
_ADMIN_403 = "the token's administrator lacks the permission this route needs (named)"
_SECURITY: dict[Who, list[dict[str, list[str]]]] = {
    "admin": [{"adminToken": []}],
    "service": [{"serviceCertificate": []}],
    "anyone": [],
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": REF.format(model=model.__name__)}


def _operation(op: Operation) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    if isinstance(op.answer, tuple):
        responses["200"] = _json({"type": "array", "items": _ref(op.answer[0])}, "OK")
    elif op.answer is not None:
        responses["200"] = _json(_ref(op.answer), "OK")
    for status, text in op.extra.items():
        if status == 200:
            responses["200"] = _json({"type": "object"}, text)
        else:
            responses[str(status)] = {"description": text}
    errors = set(op.errors) | ({401, 403} if op.who == "admin" else set()) | {500}
    for status in sorted(errors):
        text = op.error_text.get(status) or (
            _ADMIN_403 if status == 403 and op.who == "admin" else _ERROR_TEXT.get(status, "error")
        )
        responses[str(status)] = _json(_ref(api.ErrorOut), text)
    result: dict[str, Any] = {
        "operationId": f"{op.method}_{op.path.removeprefix('/api/v1/')}".replace("/", "_")
        .replace("{", "")
        .replace("}", "")
        .replace("-", "_")
        .replace(".", "_"),
        "summary": op.summary,
        "security": _SECURITY[op.who],
        "responses": responses,
    }
    if op.description:
        result["description"] = op.description
    if op.params:
        result["parameters"] = [
            {
                "name": p.name,
                "in": p.where,
                "required": p.where == "path",
                "description": p.description,
                "schema": p.schema,
            }
            for p in op.params
        ]
    if op.body is not None:
        result["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(op.body)}},
        }
    return result


@functools.cache
def _document() -> dict[str, Any]:
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (m, "validation") for m in api.REQUEST_MODELS
    ]
    models += [(m, "validation") for m in am.REQUEST_MODELS]
    models += [(m, "serialization") for m in api.ANSWER_MODELS]
    models += [(m, "serialization") for m in am.ANSWER_MODELS]
    _, schemas = models_json_schema(models, ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for op in (*OPERATIONS, *OAUTH_OPERATIONS, *TOKEN_OPERATIONS, *ADMINS_OPERATIONS):
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Gatehouse Administration API",
            "version": __version__,
            "description": "Configuration drafts, signed versions, registered services, join "
            "tokens, OAuth clients and keys, OATH tokens and token invitations, named "
            "administrators and their personal tokens, and the audit log of a Gatehouse "
            "installation.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an administrator's personal token (gha1_...), or the "
                    "token in the Administration service's admin token file (break-glass)",
                },
                "serviceCertificate": {
                    "type": "mutualTLS",
                    "description": "the client certificate a service was issued by the "
                    "installation's internal CA when it registered (or renewed)",
                },
            },
        },
    }


def openapi_document() -> dict[str, Any]:
    """The document (a fresh copy: callers may change it)."""
    return copy.deepcopy(_document())
