"""The Distribution service's configuration file (``gatehouse distribution --config``).

::

    distribution:
      id: dist1
      listen: 127.0.0.1:8301
      outbox_db: postgresql+asyncpg://...   # optional: else the installation's (HOME/outbox.db)
      outbox_keyring: /etc/gatehouse/outbox.key   # optional: else HOME/outbox.key (relative:
                                                  # to HOME); created 0600 if missing
      channels:                 # tried in this order (a message's own order of kinds first)
        - type: smtp
          name: mail
          host: smtp.example.org
          port: 587
          security: starttls    # none | starttls | tls (implicit)
          username: gatehouse
          password_file: smtp-password      # never the password itself
          sender: Gatehouse <noreply@example.org>
        - type: http_sms
          name: sms
          url: https://sms.example.org/api/send
          body_template: '{"to": "{to}", "text": "{text}", "ref": "{id}"}'
          auth: bearer
          token_file: sms-token
      delivery: {workers: 4, lease: 30s, backoff_initial: 1s, backoff_max: 60s,
                 poll_interval: 1s}

Credentials are never inline: ``password_file`` and ``token_file`` name files on the
Distribution node (relative to HOME), read at start and on every configuration version, so the
Administration DB, the views and the last-known-good files hold no channel secret.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, field_validator, model_validator

from gatehouse.config.access_point import parse_listen
from gatehouse.config.base import Strict
from gatehouse.config.database import DatabaseSettings
from gatehouse.config.units import Seconds
from gatehouse.metrics.settings import MetricsSettings
from gatehouse.storage.home import DatabaseURL

__all__ = [
    "Channel",
    "DeliverySettings",
    "DistributionConfig",
    "DistributionSettings",
    "HttpSmsChannel",
    "SmtpChannel",
]

_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
PLACEHOLDERS = ("to", "text", "id")


def _listen(value: str) -> str:
    parse_listen(value)
    return value


def _name(value: str) -> str:
    if not _ID.match(value):
        raise ValueError("use lowercase letters, digits, '.', '_' or '-' (max 63)")
    return value


Name = Annotated[str, AfterValidator(_name)]


class SmtpChannel(Strict):
    """An SMTP server (aiosmtplib) for messages with an e-mail recipient."""

    type: Literal["smtp"]
    name: Name
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    #: ``none``: plain SMTP; ``starttls``: upgrade (required, refused if not offered);
    #: ``tls``: implicit TLS from the first byte (usually port 465).
    security: Literal["none", "starttls", "tls"]
    username: str | None = None
    #: A file holding the password (relative: to HOME). Needed with ``username``.
    password_file: str | None = None
    #: The From address (``Name <addr@example.org>`` or ``addr@example.org``).
    sender: str = Field(min_length=3)
    timeout: Seconds = Field(default=10.0, gt=0, le=300)
    verify_tls: bool = True
    #: CA certificates (PEM) to verify the server with, instead of the system's.
    ca_file: str | None = None

    @model_validator(mode="after")
    def _credentials(self) -> SmtpChannel:
        if (self.username is None) != (self.password_file is None):
            raise ValueError("username and password_file: give both (AUTH) or neither")
        if self.username is not None and self.security == "none":
            raise ValueError("username: AUTH needs security starttls or tls (never in clear)")
        return self

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str) -> str:
        if re.search(r"[\x00-\x1f\x7f]", value) or "@" not in value:
            raise ValueError("an address (addr@example.org or Name <addr@example.org>)")
        return value


class HttpSmsChannel(Strict):
    """An HTTP SMS gateway for messages with a phone number."""

    type: Literal["http_sms"]
    name: Name
    url: str
    method: Literal["POST", "PUT", "GET"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    #: The request body (or, for GET, the query string) with the placeholders ``{to}``,
    #: ``{text}`` and ``{id}``; values are JSON-escaped when ``content_type`` is JSON,
    #: form-encoded when it is ``application/x-www-form-urlencoded`` (and for GET).
    body_template: str
    content_type: str = "application/json"
    auth: Literal["none", "basic", "bearer"] = "none"
    username: str | None = None
    password_file: str | None = None
    token_file: str | None = None
    success_status: list[int] = Field(default_factory=lambda: [200, 201, 202], min_length=1)
    #: A regular expression the first 64 KiB of the response must match for success.
    success_pattern: str | None = None
    timeout: Seconds = Field(default=10.0, gt=0, le=300)
    ca_file: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username or parts.password:
            raise ValueError("no credentials in the URL: use auth with password_file/token_file")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, header in value.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r}: not a header name")
            if re.search(r"[\r\n\x00]", header):
                raise ValueError(f"{name}: line breaks in the value")
            if name.lower() in ("authorization", "content-length", "host", "idempotency-key"):
                raise ValueError(f"{name}: set by the channel (auth, the idempotency key)")
        return value

    @field_validator("body_template")
    @classmethod
    def _template(cls, value: str) -> str:
        unknown = {p for p in _PLACEHOLDER.findall(value) if p not in PLACEHOLDERS}
        if unknown:
            raise ValueError(
                f"unknown placeholders {sorted(unknown)}: use {{to}}, {{text}} and {{id}}"
            )
        if "{to}" not in value or "{text}" not in value:
            raise ValueError("must contain {to} and {text}")
        return value

    @field_validator("success_status")
    @classmethod
    def _statuses(cls, value: list[int]) -> list[int]:
        if any(not 100 <= status <= 599 for status in value):
            raise ValueError("HTTP statuses are 100-599")
        return value

    @field_validator("success_pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"not a regular expression: {error}") from None
        return value

    @model_validator(mode="after")
    def _credentials(self) -> HttpSmsChannel:
        if self.auth == "basic" and (self.username is None or self.password_file is None):
            raise ValueError("auth basic: needs username and password_file")
        if self.auth == "bearer" and self.token_file is None:
            raise ValueError("auth bearer: needs token_file")
        return self


Channel = Annotated[SmtpChannel | HttpSmsChannel, Field(discriminator="type")]


class DeliverySettings(Strict):
    """How the delivery workers go about it (applied live)."""

    #: Messages delivered at once by this service.
    workers: int = Field(default=4, ge=1, le=256)
    #: How long a claimed message is this service's: if it dies, another delivers the message
    #: once the lease has run out. A lease with less than twice a channel's timeout left is
    #: lengthened (to that plus 1 s, at least ``lease``) before the channel is tried.
    lease: Seconds = Field(default=30.0, ge=1, le=3600)
    #: The wait before the first retry once every channel failed; doubles with each round.
    backoff_initial: Seconds = Field(default=1.0, gt=0, le=3600)
    backoff_max: Seconds = Field(default=60.0, gt=0, le=86400)
    #: How often the outbox is looked at for messages other services accepted or left.
    poll_interval: Seconds = Field(default=1.0, gt=0, le=60)

    @model_validator(mode="after")
    def _order(self) -> DeliverySettings:
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max: must not be shorter than backoff_initial")
        return self


class DistributionSettings(Strict):
    id: Name = "dist1"
    listen: Annotated[str, AfterValidator(_listen)] = "127.0.0.1:8301"
    #: The metrics listener (``GET /metrics``); read at start.
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    #: The outbox; None: the installation's (``HOME/outbox.db`` or databases.yaml's outbox_db).
    outbox_db: DatabaseURL | None = None
    #: The message body key file (relative: to HOME); None: ``HOME/outbox.key``. Every
    #: Distribution service sharing an outbox DB needs the same one.
    outbox_keyring: str | None = None
    channels: list[Channel] = Field(default_factory=list)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    #: How long outbox writes wait for the outbox DB through a failover; read at start.
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)

    @field_validator("channels")
    @classmethod
    def _unique(
        cls, value: list[SmtpChannel | HttpSmsChannel]
    ) -> list[SmtpChannel | HttpSmsChannel]:
        names = [channel.name for channel in value]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"channel names given twice: {', '.join(twice)}")
        return value


class DistributionConfig(Strict):
    """A whole Distribution service configuration file."""

    distribution: DistributionSettings = Field(default_factory=DistributionSettings)
