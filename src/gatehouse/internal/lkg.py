"""A service's state directory for following Administration: who Admin is, and the last
configuration it applied (its last-known-good snapshot, the one it starts from when Admin is down).

::

    STATE_DIR/            mode 0700
      admin.json          0600  Admin's URLs, this service's id and role, Admin's public key
                                (the one that signs configurations, pinned at registration)
      lkg.json            0600  the last applied signed envelope, byte for byte as received
      tls/                0700  this service's internal TLS credentials (gatehouse.trust.tls):
        ca.pem            0644  the installation's CA, pinned by the join token's fingerprint
        cert.pem          0644  the certificate Admin issued (role and id), renewed at 2/3
        key.pem           0600  its key, made here and never sent

``lkg.json`` is mode 0600 because a Policy or Authentication view holds database URLs with
passwords. Every write is atomic: a temporary file in the same directory, fsync, rename,
fsync of the directory, so a crash leaves the old file or the new one, never a mix. The
snapshot is verified with Admin's key every time it is read: a file altered on disk is refused
rather than started from.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from gatehouse.administration.errors import AdminError
from gatehouse.administration.signing import VerifiedView, load_public_key, verify
from gatehouse.errors import GatehouseError

__all__ = [
    "ADMIN_FILE",
    "LKG_FILE",
    "ROLES",
    "TLS_DIR",
    "AdminState",
    "LastKnownGoodInvalid",
    "NotRegistered",
    "Snapshot",
    "StateDir",
    "StateError",
    "atomic_write",
    "check_service_id",
]

ADMIN_FILE = "admin.json"
LKG_FILE = "lkg.json"
#: The internal TLS credentials directory inside a state directory.
TLS_DIR = "tls"
ROLES = ("access_point", "policy", "authentication", "distribution")
# As Admin's model spells ids (administration/model.py); the id goes into URL paths.
_SERVICE_ID = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}\Z")


class StateError(GatehouseError):
    """The state directory or a file in it cannot be used; the message says which and why."""


class NotRegistered(StateError):
    """The state directory holds no registration: run the registration first."""


class LastKnownGoodInvalid(StateError):
    """The last-known-good file is damaged or was not signed by Admin: never start from it."""


class Snapshot(NamedTuple):
    """A verified configuration: ``version, view = snapshot``."""

    version: int
    view: dict[str, Any]


def check_service_id(service_id: str) -> str:
    if not isinstance(service_id, str) or not _SERVICE_ID.match(service_id):
        raise ValueError(
            f"not a service id: {service_id!r} (lowercase letters, digits, '.', '_', '-')"
        )
    return service_id


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``: after a crash the file is the old one or the new one.

    The temporary file is created 0600 in the same directory (so the rename cannot cross file
    systems and a secret is never readable on the way); the directory is synced after the
    rename so the new name itself survives a power cut.
    """
    directory = path.parent
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            os.fchmod(handle.fileno(), mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@dataclass(frozen=True, slots=True)
class AdminState:
    """What a service knows about its Admin, as stored in ``admin.json``."""

    admin_urls: tuple[str, ...]
    service_id: str
    role: str
    node: str
    endpoint: str
    public_key: str
    registered_at: str

    def to_json(self) -> bytes:
        data = {
            "admin_urls": list(self.admin_urls),
            "service_id": self.service_id,
            "role": self.role,
            "node": self.node,
            "endpoint": self.endpoint,
            "public_key": self.public_key,
            "registered_at": self.registered_at,
        }
        return orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n"

    @classmethod
    def from_json(cls, text: bytes, source: str = ADMIN_FILE) -> AdminState:
        """Parse and check ``admin.json``; :class:`StateError` names the problem."""
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise StateError(f"{source}: not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise StateError(f"{source}: not a JSON object")
        # (A "service_secret" of a registration made before certificates is ignored.)
        strings = ("service_id", "role", "node", "endpoint", "public_key")
        for name in (*strings, "registered_at"):
            if not isinstance(data.get(name), str) or (name in strings and not data[name]):
                raise StateError(f"{source}: {name} is missing or not a non-empty string")
        urls = data.get("admin_urls")
        if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
            raise StateError(f"{source}: admin_urls is not a non-empty list of URLs")
        try:
            check_service_id(data["service_id"])
        except ValueError as exc:
            raise StateError(f"{source}: service_id: {exc}") from None
        if data["role"] not in ROLES:
            raise StateError(f"{source}: role: {data['role']!r} is not one of {', '.join(ROLES)}")
        try:
            load_public_key(data["public_key"])
        except AdminError as exc:
            raise StateError(f"{source}: public_key: {exc}") from None
        return cls(
            admin_urls=tuple(urls),
            service_id=data["service_id"],
            role=data["role"],
            node=data["node"],
            endpoint=data["endpoint"],
            public_key=data["public_key"],
            registered_at=data["registered_at"],
        )


class StateDir:
    """The files of one service's state directory. Methods do blocking file I/O: call them
    at start-up or from a thread (``asyncio.to_thread``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.admin_path = self.path / ADMIN_FILE
        self.lkg_path = self.path / LKG_FILE
        self.tls_path = self.path / TLS_DIR

    def __repr__(self) -> str:
        return f"StateDir({str(self.path)!r})"

    def create(self) -> None:
        """Create the directory (mode 0700) if it does not exist."""
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create state directory {self.path}: {exc.strerror}") from None

    # admin.json ----------------------------------------------------------------------------
    def load_admin(self) -> AdminState | None:
        """The registration, or ``None`` when there is none yet.

        A file that group or others may read is refused: the state directory is private.
        """
        data = self._read_private(self.admin_path)
        return None if data is None else AdminState.from_json(data, str(self.admin_path))

    def require_admin(self) -> AdminState:
        state = self.load_admin()
        if state is None:
            raise NotRegistered(
                f"{self.path} holds no registration ({ADMIN_FILE} missing): register the "
                "service with Admin first (it needs a join token)"
            )
        return state

    def save_admin(self, state: AdminState) -> None:
        self.create()
        self._write(self.admin_path, state.to_json())

    # lkg.json ------------------------------------------------------------------------------
    def read_lkg(self) -> bytes | None:
        """The stored envelope's bytes, unverified; ``None`` when there is none."""
        return self._read_private(self.lkg_path)

    def write_lkg(self, envelope: bytes) -> None:
        self.create()
        self._write(self.lkg_path, envelope)

    def remove_lkg(self) -> None:
        try:
            self.lkg_path.unlink(missing_ok=True)
        except OSError as exc:
            raise StateError(f"cannot remove {self.lkg_path}: {exc.strerror}") from None

    def load_last_known_good(self, state: AdminState | None = None) -> Snapshot | None:
        """The verified last-known-good snapshot, or ``None`` when there is none.

        Raises:
            NotRegistered: no ``admin.json`` (and no ``state`` given).
            LastKnownGoodInvalid: the file is not an envelope signed by Admin for this service.
        """
        verified = self.load_verified(state)
        return None if verified is None else Snapshot(verified.version, verified.view)

    def load_verified(self, state: AdminState | None = None) -> VerifiedView | None:
        """:meth:`load_last_known_good` with all the envelope says (its revocations too).
        An envelope written before revocations were published loads with none."""
        state = state or self.require_admin()
        data = self.read_lkg()
        if data is None:
            return None
        try:
            return verify(state.public_key, data, service=state.service_id)
        except AdminError as exc:
            raise LastKnownGoodInvalid(
                f"{self.lkg_path} refused, the service must not start from it: {exc}. "
                "Remove the file to start from Admin's current version instead."
            ) from None

    # helpers -------------------------------------------------------------------------------
    def _read_private(self, path: Path) -> bytes | None:
        try:
            with path.open("rb") as handle:
                mode = os.fstat(handle.fileno()).st_mode
                data = handle.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read {path}: {exc.strerror}") from None
        if mode & 0o077:
            raise StateError(
                f"{path} is readable by others (mode {mode & 0o777:o}) and holds secrets; "
                "chmod 600 it"
            )
        return data

    def _write(self, path: Path, data: bytes) -> None:
        try:
            atomic_write(path, data, 0o600)
        except OSError as exc:
            raise StateError(f"cannot write {path}: {exc.strerror or exc}") from None
