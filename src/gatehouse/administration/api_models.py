"""The bodies of the Administration API: what each request carries and each answer holds.

Requests are validated with these models (unknown fields are refused); answers are built
from them; :mod:`.openapi` describes both from the same models, so the document cannot drift
from the wire. Times are ISO 8601 UTC to the second, ending in ``Z``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from gatehouse.administration.model import NodeName, Role, ServiceId
from gatehouse.config.policy import EndpointURL
from gatehouse.config.units import parse_duration

#: Join tokens live between a second and 30 days.
MAX_TTL = 30 * 24 * 3600.0
MAX_ERROR_TEXT = 4096
MAX_COMMENT = 1000

Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
TTL = Annotated[
    float,
    BeforeValidator(parse_duration),
    Field(ge=1, le=MAX_TTL),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 1, "maximum": MAX_TTL},
                {"type": "string", "examples": ["30m", "1h", "24h"]},
            ],
            "description": "seconds, or a duration such as '30m' or '1h'",
        },
        mode="validation",
    ),
]
Comment = Annotated[str, Field(max_length=MAX_COMMENT)]


class Request(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Answer(BaseModel):
    model_config = ConfigDict(frozen=True)


# Requests


AllowRemoval = Annotated[
    list[ServiceId],
    Field(
        max_length=1000,
        description="ids of registered services (or of resources) that this configuration "
        "removes on purpose; without them such a configuration is refused with 409",
    ),
]


class DraftIn(Request):
    text: str = Field(description="the whole installation configuration as YAML (or JSON)")
    allow_removal: AllowRemoval = Field(default_factory=list)


class PublishIn(Request):
    comment: Comment = ""


class RollbackIn(Request):
    version: int = Field(ge=1, description="the version whose configuration to publish again")
    comment: Comment = ""
    allow_removal: AllowRemoval = Field(default_factory=list)


class JoinTokenIn(Request):
    role: Role
    ttl: TTL = 3600.0


class RegisterIn(Request):
    token: str = Field(min_length=1, max_length=256, description="a join token, used once")
    service_id: ServiceId
    role: Role
    node: NodeName
    endpoint: EndpointURL


class AckIn(Request):
    version: int | None = Field(ge=1, description="the version applied (or that failed)")
    error: Annotated[str, Field(max_length=MAX_ERROR_TEXT)] | None = Field(
        default=None, description="null: the version runs; else why it could not be applied"
    )


# Answers


class Problem(Answer):
    path: str = Field(description="where in the configuration, e.g. resources[2].backends[0]")
    message: str


class ErrorOut(Answer):
    error: Literal[
        "bad_request", "unauthorized", "not_found", "conflict", "unavailable", "internal"
    ]
    message: str
    problems: list[Problem] | None = Field(
        default=None,
        description="every problem of an invalid configuration (status 422), or every "
        "removal that was not allowed (status 409)",
    )


class HealthOut(Answer):
    status: Literal["ok"]
    role: Literal["administration"]
    version: int = Field(description="the newest published version; 0 before the first")


class OkOut(Answer):
    ok: Literal[True]


class DraftOut(Answer):
    text: str
    updated_at: Timestamp
    updated_by: str


class DiffOut(Answer):
    diff: str = Field(description="unified diff of what the configurations mean; '' when equal")


class VersionNumberOut(Answer):
    version: int


class VersionSummary(Answer):
    version: int
    created_at: Timestamp
    created_by: str
    comment: str
    rollback_of: int | None = Field(description="the version a rollback published again")


class VersionOut(VersionSummary):
    text: str = Field(description="the configuration as it was written")
    services: list[str] = Field(description="ids of the services this version configures")


class Report(Answer):
    version: int | None
    error: str | None
    at: Timestamp


class ServiceOut(Answer):
    id: str
    role: Role
    node: str
    endpoint: str
    running_version: int | None
    last_seen_at: Timestamp | None = Field(description="last acknowledgement or config request")
    last_error: str | None
    healthy: bool = Field(
        description="runs the newest version without error and was seen in the last 90 s"
    )
    last_report: Report | None = Field(
        description="the last acknowledgement this Administration service received since it "
        "started (says which version an error is about)"
    )


class JoinTokenOut(Answer):
    token: str = Field(description="shown once; only its hash is stored")
    expires_at: Timestamp


class AuditOut(Answer):
    id: int
    at: Timestamp
    who: str
    action: str
    what: str
    diff: str


class RegisterOut(Answer):
    public_key: str = Field(description="PEM of the Ed25519 key that signs every envelope")
    service_secret: str = Field(description="Bearer secret of this service's own calls")


class EnvelopeOut(Answer):
    version: int
    service: str
    created_at: Timestamp
    view: dict[str, Any] = Field(description="the configuration this service loads")
    signature: str = Field(
        description="base64 Ed25519 signature (gatehouse.administration.signing)"
    )


REQUEST_MODELS: tuple[type[Request], ...] = (
    DraftIn,
    PublishIn,
    RollbackIn,
    JoinTokenIn,
    RegisterIn,
    AckIn,
)
ANSWER_MODELS: tuple[type[Answer], ...] = (
    ErrorOut,
    HealthOut,
    OkOut,
    DraftOut,
    DiffOut,
    VersionNumberOut,
    VersionSummary,
    VersionOut,
    ServiceOut,
    JoinTokenOut,
    AuditOut,
    RegisterOut,
    EnvelopeOut,
)
