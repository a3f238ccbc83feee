"""The bodies of the Administration API: what each request carries and each answer holds.

Requests are validated with these models (unknown fields are refused); answers are built
from them; :mod:`.openapi` describes both from the same models, so the document cannot drift
from the wire. Times are ISO 8601 UTC to the second, ending in ``Z``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)

from gatehouse.administration.model import NodeName, Role, ServiceId
from gatehouse.config.policy import EndpointURL
from gatehouse.config.units import parse_duration
from gatehouse.oath.invitation_admin import DEFAULT_LIFETIME, MAX_LIFETIME, MIN_LIFETIME
from gatehouse.storage.models import USERNAME_LENGTH

#: Join tokens live between a second and 24 hours (default: one hour).
MAX_TTL = 24 * 3600.0
DEFAULT_TTL = 3600.0
MAX_PEM = 16 * 1024
MAX_ERROR_TEXT = 4096
MAX_COMMENT = 1000

Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
Comment = Annotated[str, Field(max_length=MAX_COMMENT)]


def _at_most_a_day(seconds: float) -> float:
    if seconds > MAX_TTL:
        raise ValueError(f"a join token lives at most 24h, not {seconds:g} seconds")
    return seconds


#: How long a join token lives (the limit said in words when it is too long).
JoinTTL = Annotated[
    float,
    BeforeValidator(parse_duration),
    Field(ge=1),
    AfterValidator(_at_most_a_day),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 1, "maximum": MAX_TTL},
                {"type": "string", "examples": ["30m", "1h", "24h"]},
            ],
            "description": "seconds, or a duration such as '30m' or '1h'; at most 24h",
        },
        mode="validation",
    ),
]


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


Pem = Annotated[str, Field(min_length=1, max_length=MAX_PEM)]


class JoinTokenIn(Request):
    role: Role
    service_id: ServiceId = Field(description="the one service that may join with it")
    ttl: JoinTTL = DEFAULT_TTL
    replace: bool = Field(
        default=False,
        description="the service may enrol again although it is enrolled (its old "
        "certificates are revoked); without it such an enrolment is refused",
    )


class RegisterIn(Request):
    token: str = Field(min_length=1, max_length=256, description="a join token, used once")
    service_id: ServiceId
    role: Role
    node: NodeName
    endpoint: EndpointURL
    csr: Pem = Field(
        description="PEM certificate signing request for the key the service made; only "
        "the key is used: the certificate names the role and id of the join token"
    )


class RevokeIn(Request):
    reason: Comment = Field(default="", description="why, for the audit log")


class RenewIn(Request):
    csr: Pem = Field(description="PEM certificate signing request for the service's new key")


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
        "bad_request",
        "unauthorized",
        "forbidden",
        "not_found",
        "conflict",
        "unavailable",
        "internal",
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


class CertificateOut(Answer):
    serial: str = Field(description="hexadecimal serial number")
    not_before: Timestamp
    not_after: Timestamp
    revoked: bool


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
    certificate: CertificateOut | None = Field(
        default=None, description="the newest certificate issued to the service"
    )


class JoinTokenOut(Answer):
    token: str = Field(
        description="shown once; only its hash is stored. ghj1.<CA fingerprint>.<secret>: "
        "the joining service refuses an Administration service with another CA"
    )
    expires_at: Timestamp
    ca_fingerprint: str = Field(description="sha256: and the base64url SHA-256 of the CA")


class AuditOut(Answer):
    id: int
    at: Timestamp
    who: str
    action: str
    what: str
    diff: str


class RegisterOut(Answer):
    certificate: str = Field(description="PEM: the service's certificate (its role and id)")
    ca: str = Field(description="PEM: the installation's internal CA certificate")
    public_key: str = Field(description="PEM of the Ed25519 key that signs every envelope")


class RenewOut(Answer):
    certificate: str = Field(description="PEM: the new certificate (same role and id)")
    ca: str = Field(description="PEM: the installation's internal CA certificate")


class RevokeOut(Answer):
    revoked: list[str] = Field(description="hexadecimal serials revoked now")
    version: int = Field(description="the version published with them")


class EnvelopeOut(Answer):
    version: int
    service: str
    created_at: Timestamp
    view: dict[str, Any] = Field(description="the configuration this service loads")
    signature: str = Field(
        description="base64 Ed25519 signature (gatehouse.administration.signing)"
    )


# OAuth (gatehouse.administration.oauth_api)


class ClientIn(Request):
    """A client to register; no secret: a confidential client's is made by Admin."""

    client_id: str
    name: str = ""
    public: bool = False
    redirect_uris: list[str] = Field(default_factory=list)
    post_logout_redirect_uris: list[str] = Field(default_factory=list)
    grant_types: list[str] | None = None
    scopes: list[str] | None = None
    token_endpoint_auth_method: str | None = None
    consent: bool = True


class EmptyIn(Request):
    """No fields: ``{}``."""


class ClientOut(Answer):
    """A registered client (never its secret hash)."""

    client_id: str
    name: str
    public: bool
    redirect_uris: list[str]
    post_logout_redirect_uris: list[str]
    grant_types: list[str]
    scopes: list[str]
    token_endpoint_auth_method: str
    consent: bool


class ClientChangeOut(Answer):
    version: int
    client: ClientOut | None = None
    secret: str | None = Field(
        default=None,
        description="a confidential client's new secret: answered this once, never stored",
    )


class KeyOut(Answer):
    kid: str
    alg: str
    state: Literal["upcoming", "current", "retired"]
    created_at: Timestamp
    signs_from: Timestamp
    drop_at: Timestamp | None = Field(description="when it leaves the published key set")


class RotateOut(Answer):
    made: list[str]
    version: int | None


class SigningKeysOut(Answer):
    keys: list[dict[str, Any]] = Field(description="private JWKs (kid, alg, use: sig)")


# OATH tokens and token invitations (gatehouse.administration.tokens_api). The handlers
# validate with their own models (tokens_api.TokenIn, ...); these have the same fields,
# types and defaults (a test compares them) and say more in the document.

#: A user of the user DB (400 naming the field when the name is malformed, 404 when unknown).
Username = str
_NAMED = f"1-{USERNAME_LENGTH} letters, digits, '.', '_', '@' or '-'"

#: How long an invitation's link works: seconds or a duration, 5m to 720h (checked by the
#: handler: 400 naming ``lifetime`` otherwise).
InvitationLifetime = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": MIN_LIFETIME, "maximum": MAX_LIFETIME},
                {"type": "string", "examples": ["30m", "72h", "720h"]},
            ],
            "description": "how long the link works: seconds, or a duration such as '72h'; "
            "5m to 720h",
        },
        mode="validation",
    ),
]


class TokenIn(Request):
    """A token to add (the ``POST /api/v1/tokens`` body)."""

    user: Username = Field(description=f"its owner ({_NAMED})")
    type: Literal["totp", "hotp"] = "totp"
    secret: str | None = Field(
        default=None,
        description="the seed in base32, at least 128 bits; without it 160 bits are generated "
        "and the answer carries the otpauth:// URI, this once",
    )
    algorithm: Literal["sha1", "sha256", "sha512"] = "sha1"
    digits: Literal[6, 8] = 6
    period: Literal[30, 60] | None = Field(
        default=None, description="TOTP only (400 for HOTP); default 30"
    )
    description: str = Field(default="", max_length=1000)


class TokenImportIn(Request):
    """Tokens to import from a file (``POST /api/v1/tokens/import``); all or nothing."""

    content: str = Field(description="the file: PSKC XML, CSV, or otpauth:// URIs, one a line")
    format: Literal["pskc", "csv", "uri"] | None = Field(
        default=None, description="default: guessed from the content"
    )
    psk: str | None = Field(
        default=None, description="a protected PSKC file's AES key in hex (16, 24 or 32 bytes)"
    )
    assign: Username | None = Field(default=None, description="a user to own every imported token")
    name: str = Field(default="", max_length=200, description="the file's name, for the audit")


class TokenAssignIn(Request):
    user: Username = Field(description=f"the token's new owner ({_NAMED})")


class TokenResyncIn(Request):
    code1: str = Field(max_length=16, description="a code the token shows")
    code2: str = Field(max_length=16, description="the next code it shows")


class EnrolmentIn(Request):
    required: bool = Field(
        default=True, description="true: the user must enrol a token at next login"
    )


class InvitationIn(Request):
    user: Username = Field(description=f"whom to e-mail, at the address in the user DB ({_NAMED})")
    lifetime: InvitationLifetime = DEFAULT_LIFETIME


class TokenOut(Answer):
    """A token (never its seed)."""

    serial: str
    owner: str | None = Field(description="its user; null: unassigned")
    type: str = Field(description="totp or hotp")
    algorithm: str = Field(description="sha1, sha256 or sha512")
    digits: int
    period: int | None = Field(description="seconds; null for HOTP")
    state: str = Field(description="active, disabled, locked or pending")
    failures: int = Field(description="wrong codes in a row")
    counter: int | None = Field(description="HOTP's counter; null for TOTP")
    drift: int | None = Field(description="TOTP's clock drift in steps; null for HOTP")
    description: str
    seed_key_id: str = Field(description="the seed key its seed is encrypted with")
    created_at: datetime
    last_used_at: datetime | None


class TokenAddedOut(Answer):
    token: TokenOut
    uri: str | None = Field(
        default=None,
        description="otpauth:// URI with the seed, only when the call generated it: shown once",
    )


class TokensImportedOut(Answer):
    serials: list[str] = Field(description="the serials imported")


class RekeyOut(Answer):
    key_id: str = Field(description="the new seed key")
    rekeyed: int
    current: int
    changed: int
    failed: list[str] = Field(description="serials whose seed could not be re-encrypted")


class EnrolmentOut(Answer):
    user: str
    required: bool = Field(description="must the user enrol a token at next login")


class InvitationOut(Answer):
    """An invitation (never its link or secret)."""

    id: str
    user: str
    to: str = Field(description="the e-mail address, masked")
    state: str = Field(description="unsent, sent, used, expired or revoked")
    created_at: datetime
    expires_at: datetime
    sent_at: datetime | None
    used_at: datetime | None
    serial: str | None = Field(description="the token enrolled with it")


REQUEST_MODELS: tuple[type[Request], ...] = (
    DraftIn,
    PublishIn,
    RollbackIn,
    JoinTokenIn,
    RegisterIn,
    RenewIn,
    RevokeIn,
    AckIn,
    ClientIn,
    EmptyIn,
    TokenIn,
    TokenImportIn,
    TokenAssignIn,
    TokenResyncIn,
    EnrolmentIn,
    InvitationIn,
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
    RenewOut,
    RevokeOut,
    CertificateOut,
    EnvelopeOut,
    ClientOut,
    ClientChangeOut,
    KeyOut,
    RotateOut,
    SigningKeysOut,
    TokenOut,
    TokenAddedOut,
    TokensImportedOut,
    RekeyOut,
    EnrolmentOut,
    InvitationOut,
)
