"""Errors of the Administration service: a wire code, a message and an HTTP status each.

GatehouseError
 ├── ConfigError              (gatehouse.errors) an invalid configuration, with field paths
 └── AdminError               code, message, status; rendered as JSON at the HTTP edge
      ├── UnknownService      no service with that id in the configuration     404
      ├── NoDraft             nothing saved to publish yet                     409
      ├── NothingChanged      the draft equals the newest version              409
      ├── RemovalRefused      it would remove running services, not allowed   409
      ├── VersionNotFound     no published version with that number            404
      ├── JoinTokenInvalid    unknown, expired or already used join token      401
      ├── AdminAlreadyRunning another Administration service holds the lock    409
      ├── AdminLockLost       this Admin no longer holds its lock              503
      ├── KeyFileError        the signing key file is missing, unsafe, broken  500
      ├── SignatureInvalid    a signed envelope is malformed or not Admin's    400
      ├── AlreadyEnrolled     enrolling an enrolled service without replace    409
      └── Forbidden           a certificate that is not the caller's, revoked  403
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from gatehouse.errors import GatehouseError
from gatehouse.internal.errors import Code


class AdminError(GatehouseError):
    """Base of the Administration service's errors; ``code`` and ``status`` go on the wire."""

    code: ClassVar[Code] = Code.INTERNAL
    status: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownService(AdminError):
    code = Code.NOT_FOUND
    status = 404


class NoDraft(AdminError):
    code = Code.CONFLICT
    status = 409


class NothingChanged(AdminError):
    code = Code.CONFLICT
    status = 409


class RemovalRefused(AdminError):
    """A configuration would remove what runs (see :mod:`.guard`); ``problems`` say what,
    each with its path, as for an invalid configuration."""

    code = Code.CONFLICT
    status = 409

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{p}: {m}" if p else m for p, m in self.problems))


class VersionNotFound(AdminError):
    code = Code.NOT_FOUND
    status = 404


class JoinTokenInvalid(AdminError):
    code = Code.UNAUTHORIZED
    status = 401


class AdminAlreadyRunning(AdminError):
    code = Code.CONFLICT
    status = 409


class AdminLockLost(AdminError):
    code = Code.UNAVAILABLE
    status = 503


class KeyFileError(AdminError):
    code = Code.INTERNAL
    status = 500


class SignatureInvalid(AdminError):
    code = Code.BAD_REQUEST
    status = 400


class AlreadyEnrolled(AdminError):
    """A join token without ``replace`` for a service that is enrolled (and not revoked)."""

    code = Code.CONFLICT
    status = 409


class Forbidden(AdminError):
    """A service call whose certificate is not that service's, or is revoked."""

    code = Code.FORBIDDEN
    status = 403
