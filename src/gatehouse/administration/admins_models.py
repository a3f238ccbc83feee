"""The bodies and answers of the named administrators' API (:mod:`.admins_api`): a leaf
module, so that the OpenAPI document (:mod:`.openapi`) shows the models the routes use."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from gatehouse.administration.admins_store import DEFAULT_TOKEN_TTL
from gatehouse.config.base import Strict
from gatehouse.config.units import Seconds


class MeOut(Strict):
    name: str
    role: str
    via: str
    permissions: list[str]


class PersonalTokenIn(Strict):
    description: str = Field(default="", max_length=200)
    ttl: Seconds = Field(default=DEFAULT_TOKEN_TTL.total_seconds(), description="5m to 366d")


class PersonalTokenOut(Strict):
    id: str
    name: str
    description: str
    state: str
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None


class NewPersonalTokenOut(Strict):
    token: PersonalTokenOut
    secret: str = Field(description="shown once; only its hash is kept")


class AdminIn(Strict):
    name: str
    role: str
    email: str | None = None


class BootstrapIn(Strict):
    name: str = "admin"
    email: str | None = None


class RoleIn(Strict):
    role: str


class CredentialsOut(Strict):
    password: str
    otpauth_uri: str
    otp_secret: str
    serial: str


class AdminOut(Strict):
    name: str
    role: str
    created_at: datetime
    created_by: str
    credentials: CredentialsOut | None = Field(
        default=None, description="only when the user was created now: shown once"
    )


REQUEST_MODELS = (PersonalTokenIn, AdminIn, BootstrapIn, RoleIn)
ANSWER_MODELS = (MeOut, PersonalTokenOut, NewPersonalTokenOut, AdminOut, CredentialsOut)
