"""The commands that talk to the Administration service: ``gatehouse config ...`` and
``gatehouse nodes token|revoke``.

They find the service through ``--admin URL`` (default: the listen address in
HOME/administration.yaml, else 127.0.0.1:8001) and read the admin token from the home. They
speak HTTPS: the service must show a certificate of the installation's CA (HOME/ca/ca.pem)
naming the ``administration`` role, and the command presents the operator's certificate
(HOME/tls/operator, made from the CA on first use). Every failure is one line on stderr and
exit status 2; an invalid configuration is one line per problem
(``gatehouse: resources[2].backends[0]: not a URL``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from gatehouse.administration.credentials import operator_context
from gatehouse.administration.model import ROLE_NAMES, InstallationConfig
from gatehouse.administration.service import CONFIG_FILE, TOKEN_FILE, load_settings, read_token
from gatehouse.cli_tables import interactive, plain_table, print_table, progress
from gatehouse.errors import ConfigError, GatehouseError
from gatehouse.trust.ca import renew_at
from gatehouse.trust.identity import ADMINISTRATION
from gatehouse.trust.tls import PeerRefused, check_server

TIMEOUT = 15.0
POLL_INTERVAL = 0.1

Command = Callable[[argparse.Namespace], int]


class Invalid(GatehouseError):
    """The Administration service refused a configuration: every problem with its path."""

    def __init__(self, problems: Sequence[tuple[str, str]], source: str = "") -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """One ``SOURCE: path: message`` line per problem (parts that are unknown left out)."""
        where = f"{self.source}: " if self.source else ""
        return [f"{where}{p}: {m}" if p else f"{where}{m}" for p, m in self.problems]


class AdminClient:
    """JSON calls to the Administration service with the admin token.

    ``tls``: the operator's client context (:func:`operator_context`); an ``https`` URL
    needs it, and the server must then show an ``administration`` certificate of the CA.
    """

    def __init__(
        self,
        url: str,
        token: str,
        token_file: Path,
        timeout: float = TIMEOUT,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.token_file = token_file
        self.timeout = timeout
        self.tls = tls
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise GatehouseError(f"not an http(s) URL of the Administration service: {url!r}")
        if parts.scheme == "https" and tls is None:
            raise GatehouseError(f"{self.url}: HTTPS needs the operator's TLS context")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")

    def _connection(self, timeout: float | None = None) -> http.client.HTTPConnection:
        wait = self.timeout if timeout is None else timeout
        if not self._https:
            return http.client.HTTPConnection(self._host, self._port, timeout=wait)
        conn = http.client.HTTPSConnection(self._host, self._port, timeout=wait, context=self.tls)
        conn.connect()
        try:
            assert isinstance(conn.sock, ssl.SSLSocket)
            check_server(conn.sock, {ADMINISTRATION})
        except PeerRefused as exc:
            conn.close()
            raise GatehouseError(f"{self.url} is not the Administration service: {exc}") from None
        return conn

    def connect(self) -> http.client.HTTPConnection:
        """A connection to Admin (server checked) for callers that keep it open for many
        requests, with :meth:`headers` and the URL's path prefix (``prefix``)."""
        return self._connection()

    @property
    def prefix(self) -> str:
        return self._prefix

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}

    def call(
        self, method: str, path: str, body: object = None, timeout: float | None = None
    ) -> Any:
        """The decoded answer (None for 204); every failure as one :class:`GatehouseError`.
        ``timeout``: this call's, instead of the client's."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = self.headers()
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            conn = self._connection(timeout)
            try:
                conn.request(method, self._prefix + path, data, headers)
                response = conn.getresponse()
                status, raw = response.status, response.read()
            finally:
                conn.close()
        except ssl.SSLCertVerificationError as error:
            raise GatehouseError(
                f"the Administration service at {self.url} showed a certificate that is not "
                f"of this installation's CA: {error.verify_message}"
            ) from None
        except (OSError, http.client.HTTPException) as error:
            raise GatehouseError(
                f"cannot reach the Administration service at {self.url}: {_why(error)}"
            ) from None
        if status >= 400:
            raise self._refused(status, raw)
        if status == 204:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise GatehouseError(f"{self.url} answered {method} {path} with no JSON") from None

    def _refused(self, status: int, raw: bytes) -> GatehouseError:
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or not isinstance(answer.get("message"), str):
            return GatehouseError(f"the Administration service at {self.url} answered {status}")
        problems = answer.get("problems")
        if status in (409, 422) and isinstance(problems, list):
            return Invalid(
                [(str(p.get("path", "")), str(p.get("message", ""))) for p in problems]
                if all(isinstance(p, dict) for p in problems)
                else [("", answer["message"])]
            )
        if status == 401 and self.token_file.name != TOKEN_FILE:
            return GatehouseError(
                f"the Administration service at {self.url} refused the personal token from "
                f"{self.token_file} (expired or revoked?)"
            )
        if status == 401:
            return GatehouseError(
                f"the Administration service at {self.url} refused the admin token in "
                f"{self.token_file}"
            )
        return GatehouseError(answer["message"])


def _why(reason: object) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(reason, socket.gaierror):
        return "unknown host"
    if isinstance(reason, ssl.SSLError):
        return f"TLS: {reason.reason or reason}"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    if isinstance(reason, http.client.RemoteDisconnected):
        return "the connection was closed"
    return str(reason) or type(reason).__name__


def connect(args: argparse.Namespace) -> AdminClient:
    """The client for ``--admin`` (or the home's Admin) with the home's admin token."""
    home: Path = args.home
    config = home / CONFIG_FILE
    settings = load_settings(config if config.exists() else None, home)
    if args.admin:
        if args.admin.startswith("http://"):
            raise GatehouseError(
                f"--admin: the Administration service speaks HTTPS only: "
                f"{'https://' + args.admin.removeprefix('http://')!r}, not {args.admin!r}"
            )
        if not args.admin.startswith("https://"):
            raise GatehouseError(f"--admin: not an https URL: {args.admin!r}")
        url = args.admin
    else:
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(
            settings.host, settings.host
        )
        url = admin_url(host, settings.port)
    personal = personal_token()
    if personal is not None:
        token, source = personal
        return AdminClient(url, token, source, tls=operator_context(home))
    if not settings.token_file.exists():
        raise GatehouseError(
            f"no admin token at {settings.token_file}: the Administration service writes it "
            "when it first starts (is --home right?)"
        )
    try:
        token = read_token(settings.token_file)
    except ConfigError as error:
        raise GatehouseError(error.problems[0][1] + f" ({settings.token_file})") from None
    return AdminClient(url, token, settings.token_file, tls=operator_context(home))


#: An administrator's personal token (``gatehouse admins tokens create``), or the file that
#: holds it; without either, commands use the home's admin token (break-glass, audited as
#: ``admin-token``).
TOKEN_ENV = "GATEHOUSE_TOKEN"
TOKEN_FILE_ENV = "GATEHOUSE_TOKEN_FILE"


def personal_token() -> tuple[str, Path] | None:
    """``(token, where it came from)`` from $GATEHOUSE_TOKEN or the file
    $GATEHOUSE_TOKEN_FILE names; None when neither is set."""
    value = os.environ.get(TOKEN_ENV, "").strip()
    if value:
        return value, Path(f"${TOKEN_ENV}")
    name = os.environ.get(TOKEN_FILE_ENV, "").strip()
    if not name:
        return None
    path = Path(name).expanduser()
    try:
        lines = path.read_text(encoding="utf-8").strip().splitlines()
    except OSError as exc:
        raise GatehouseError(
            f"${TOKEN_FILE_ENV}: cannot read {path}: {(exc.strerror or str(exc)).lower()}"
        ) from None
    if not lines or not lines[0].strip():
        raise GatehouseError(f"${TOKEN_FILE_ENV}: {path} is empty")
    return lines[0].strip(), path


def admin_url(host: str, port: int) -> str:
    """The Administration service's URL (it speaks HTTPS only)."""
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def command(handler: Callable[[argparse.Namespace, AdminClient], int]) -> Command:
    """Connect, run; an invalid configuration becomes one stderr line per problem."""

    @wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args, connect(args))
        except Invalid as error:
            for line in error.lines():
                print(f"gatehouse: {line}", file=sys.stderr)
            return 2

    return run


# --- gatehouse config ... ------------------------------------------------------------------


@command
def apply(args: argparse.Namespace, admin: AdminClient) -> int:
    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        why = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise GatehouseError(f"cannot read {path}: {why}") from None
    try:
        admin.call("PUT", "/api/v1/draft", {"text": text, "allow_removal": args.allow_removal})
    except Invalid as error:
        raise Invalid(error.problems, str(path)) from None
    print(
        f"draft saved from {path}: 'gatehouse config diff' shows what it changes, "
        "'gatehouse config publish' publishes it"
    )
    return 0


@command
def diff(args: argparse.Namespace, admin: AdminClient) -> int:
    query = f"?from={args.since}" if args.since is not None else ""
    text = admin.call("GET", f"/api/v1/diff{query}")["diff"]
    print(text, end="") if text else print("no changes")
    return 0


@command
def publish(args: argparse.Namespace, admin: AdminClient) -> int:
    number = admin.call("POST", "/api/v1/publish", {"comment": args.comment})["version"]
    print(f"published version {number}", flush=True)
    return follow(admin, number, args.wait)


@command
def rollback(args: argparse.Namespace, admin: AdminClient) -> int:
    body = {"version": args.version, "comment": args.comment, "allow_removal": args.allow_removal}
    number = admin.call("POST", "/api/v1/rollback", body)["version"]
    print(f"published version {number}: the configuration of version {args.version}", flush=True)
    return follow(admin, number, args.wait)


def follow(admin: AdminClient, number: int, wait: float) -> int:
    """Print a line per service of version ``number`` as it acknowledges, for up to ``wait``
    seconds; 1 when one failed or stayed silent."""
    if wait <= 0:
        return 0
    targets: list[str] = admin.call("GET", f"/api/v1/versions/{number}")["services"]
    if not targets:
        print(f"no service is listed in version {number}")
        return 0
    deadline = time.monotonic() + wait
    settled: dict[str, bool] = {}
    services: dict[str, dict[str, Any]] = {}
    with progress(f"version {number}", len(targets)) as bar:
        while True:
            services = {s["id"]: s for s in admin.call("GET", "/api/v1/services")}
            for sid in targets:
                if sid in settled or sid not in services:
                    continue
                line, ok = _progress(services[sid], number)
                if line:
                    print(f"{sid}: {line}", flush=True)
                    settled[sid] = ok
                    bar.advance(len(settled), sid)
            pending = [sid for sid in targets if sid in services and sid not in settled]
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(POLL_INTERVAL)
    behind = [sid for sid, ok in settled.items() if not ok]
    for sid in targets:
        if sid in settled:
            continue
        if sid not in services:
            print(f"{sid}: not registered yet (it joins with 'gatehouse nodes token')")
            continue
        behind.append(sid)
        running = services[sid]["running_version"]
        print(f"{sid}: no acknowledgement within {wait:g}s (runs version {running or 'none'})")
    for sid, service in services.items():
        if sid not in targets and service["running_version"] is not None:
            print(f"{sid}: not in version {number} (removed; it can be stopped)")
    running = sum(settled.values())
    print(
        f"{running} of {len(targets)} service{'s' if len(targets) != 1 else ''} "
        f"run version {number}"
    )
    if behind:
        print(
            f"gatehouse: not every service runs version {number}: {', '.join(sorted(behind))}",
            file=sys.stderr,
        )
        return 1
    return 0


def _progress(service: dict[str, Any], number: int) -> tuple[str, bool]:
    """What a service says about version ``number``: ("", _) while it says nothing."""
    running = service.get("running_version")
    report = service.get("last_report") or {}
    reported = report.get("version")
    if report.get("error") and reported is not None and reported >= number:
        return f"failed to apply version {reported}: {report['error']}", False
    if isinstance(running, int) and running >= number:
        return f"running version {running}", True
    return "", False


@command
def status(args: argparse.Namespace, admin: AdminClient) -> int:
    return status_table(admin, datetime.now(UTC))


def status_table(admin: AdminClient, now: datetime) -> int:
    """Every service's row (a rich table on a terminal, plain columns otherwise; a terminal
    also gets each service's last acknowledgement), its errors and certificate warnings."""
    services = admin.call("GET", "/api/v1/services")
    newest = admin.call("GET", "/api/v1/versions?limit=1")
    rich = interactive()
    rows = []
    for s in services:
        row = [
            s["id"],
            s["role"],
            s["node"],
            str(s["running_version"]) if s["running_version"] is not None else "-",
            _ago(s["last_seen_at"], now),
            "yes" if s["healthy"] else "no",
            _expiry(s.get("certificate"), now),
        ]
        if rich:
            row.insert(5, _ack(s.get("last_report"), now))
        rows.append(row)
    headers = ["SERVICE", "ROLE", "NODE", "VERSION", "LAST SEEN", "HEALTHY", "CERTIFICATE"]
    if rich:
        headers.insert(5, "LAST ACK")
    newest_text = f"newest version: {newest[0]['version'] if newest else 'none published'}"
    print_table(headers, rows, title=newest_text if rich else "")
    for s in services:
        if s["last_error"]:
            print(f"{s['id']}: last error: {s['last_error']}")
    for s in services:
        warning = certificate_warning(s["id"], s.get("certificate"), now)
        if warning:
            print(f"gatehouse: warning: {warning}", file=sys.stderr)
    print(newest_text)
    return 0


def _ack(report: dict[str, Any] | None, now: datetime) -> str:
    """A service's last acknowledgement: ``v3 5s ago`` or ``failed v4: ...``."""
    if not report:
        return "-"
    version = report.get("version")
    when = _ago(report.get("at"), now)
    if report.get("error"):
        return f"failed v{version} {when}"
    return f"v{version} {when}" if version is not None else f"none {when}"


def _expiry(certificate: dict[str, Any] | None, now: datetime) -> str:
    """``expires 2030-01-02 03:04Z (in 6d 23h)``; ``revoked``; ``-`` without one."""
    if not certificate:
        return "-"
    if certificate.get("revoked"):
        return "revoked"
    not_after = datetime.fromisoformat(certificate["not_after"])
    when = not_after.strftime("%Y-%m-%d %H:%MZ")
    if not_after <= now:
        return f"expired {when}"
    return f"expires {when} (in {_span(not_after - now)})"


def certificate_warning(
    service_id: str, certificate: dict[str, Any] | None, now: datetime
) -> str | None:
    """What ``config status`` warns about a certificate: expired, or less than a third of
    its life left (its service renews it at about two thirds)."""
    if not certificate or certificate.get("revoked"):
        return None
    not_before = datetime.fromisoformat(certificate["not_before"])
    not_after = datetime.fromisoformat(certificate["not_after"])
    if not_after <= now:
        return (
            f"the certificate of {service_id} expired at {certificate['not_after']}: other "
            "services refuse it; enrol it again (gatehouse nodes token --id "
            f"{service_id} --replace)"
        )
    if now >= renew_at(not_before, not_after):
        return (
            f"the certificate of {service_id} expires at {certificate['not_after']} (in "
            f"{_span(not_after - now)}, less than a third of its life): it has not renewed "
            "it; is it running and able to reach the Administration service?"
        )
    return None


def _span(delta: Any) -> str:
    seconds = max(0, int(delta.total_seconds()))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
        if len(parts) == 2:
            break
    return " ".join(parts) or f"{seconds}s"


def _ago(when: str | None, now: datetime) -> str:
    if when is None:
        return "never"
    seconds = max(0, int((now - datetime.fromisoformat(when)).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain table with columns padded to their widest cell."""
    return plain_table(headers, rows)


@command
def export(args: argparse.Namespace, admin: AdminClient) -> int:
    number = args.version
    if number is None:
        newest = admin.call("GET", "/api/v1/versions?limit=1")
        if not newest:
            raise GatehouseError("nothing has been published yet")
        number = newest[0]["version"]
    text: str = admin.call("GET", f"/api/v1/versions/{number}")["text"]
    print(with_every_section(text), end="")
    return 0


def with_every_section(text: str) -> str:
    """``text`` (as published, comments kept) followed by every list or mapping section it
    does not set, empty, so that a person can add under ``rules:`` or ``resource_rules:``."""
    text = text if text.endswith("\n") else text + "\n"
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    present = document if isinstance(document, dict) else {}
    missing = []
    for name, field in InstallationConfig.model_fields.items():
        empty = field.get_default(call_default_factory=True)
        if name not in present and isinstance(empty, list | dict) and not empty:
            missing.append(f"{name}: {'[]' if isinstance(empty, list) else '{}'}\n")
    if not missing:
        return text
    return text + "# Not set in this version (empty); add to them here:\n" + "".join(missing)


# --- gatehouse nodes token|revoke ----------------------------------------------------------


def join_token(
    admin: AdminClient, role: str, service_id: str, ttl: float | str, replace: bool = False
) -> str:
    """A one-time join token for the service ``service_id`` (a ``role``)."""
    body = {"role": role, "service_id": service_id, "ttl": ttl, "replace": replace}
    token: str = admin.call("POST", "/api/v1/join-tokens", body)["token"]
    return token


@command
def nodes_token(args: argparse.Namespace, admin: AdminClient) -> int:
    body = {"role": args.role, "service_id": args.id, "ttl": args.ttl, "replace": args.replace}
    answer = admin.call("POST", "/api/v1/join-tokens", body)
    print(answer["token"])
    replacing = ", replacing its enrolment" if args.replace else ""
    print(
        f"one-time join token for {ROLE_NAMES[args.role]} {args.id!r}{replacing}, valid until "
        f"{answer['expires_at']} (CA {answer['ca_fingerprint']})",
        file=sys.stderr,
    )
    return 0


@command
def nodes_revoke(args: argparse.Namespace, admin: AdminClient) -> int:
    answer = admin.call("POST", f"/api/v1/services/{args.id}/revoke", {"reason": args.reason})
    serials = answer["revoked"]
    listed = ", ".join(serials) if serials else "none left to revoke"
    print(f"revoked the certificates of {args.id}: {listed}")
    if answer["version"]:
        print(
            f"published version {answer['version']}: every service refuses them from now on; "
            f"{args.id} can join again only with a new join token"
        )
    return 0
