"""The commands that talk to the Administration service: ``gatehouse config ...`` and
``gatehouse nodes token``.

They find the service through ``--admin URL`` (default: the listen address in
HOME/administration.yaml, else 127.0.0.1:8001) and read the admin token from the home. Every
failure is one line on stderr and exit status 2; an invalid configuration is one line per
problem (``gatehouse: resources[2].backends[0]: not a URL``).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Any

import yaml

from gatehouse.administration.model import ROLE_NAMES, InstallationConfig
from gatehouse.administration.service import CONFIG_FILE, load_settings, read_token
from gatehouse.errors import ConfigError, GatehouseError

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
    """JSON calls to the Administration service with the admin token."""

    def __init__(self, url: str, token: str, token_file: Path, timeout: float = TIMEOUT) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.token_file = token_file
        self.timeout = timeout

    def call(self, method: str, path: str, body: object = None) -> Any:
        """The decoded answer (None for 204); every failure as one :class:`GatehouseError`."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            with error:
                raise self._refused(error.code, error.read()) from None
        except (urllib.error.URLError, OSError) as error:
            reason = error.reason if isinstance(error, urllib.error.URLError) else error
            raise GatehouseError(
                f"cannot reach the Administration service at {self.url}: {_why(reason)}"
            ) from None
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
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason)


def connect(args: argparse.Namespace) -> AdminClient:
    """The client for ``--admin`` (or the home's Admin) with the home's admin token."""
    home: Path = args.home
    config = home / CONFIG_FILE
    settings = load_settings(config if config.exists() else None, home)
    if args.admin:
        if not args.admin.startswith(("http://", "https://")):
            raise GatehouseError(f"--admin: not an http(s) URL: {args.admin!r}")
        url = args.admin
    else:
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(
            settings.host, settings.host
        )
        url = (
            f"http://[{host}]:{settings.port}" if ":" in host else f"http://{host}:{settings.port}"
        )
    if not settings.token_file.exists():
        raise GatehouseError(
            f"no admin token at {settings.token_file}: the Administration service writes it "
            "when it first starts (is --home right?)"
        )
    try:
        token = read_token(settings.token_file)
    except ConfigError as error:
        raise GatehouseError(error.problems[0][1] + f" ({settings.token_file})") from None
    return AdminClient(url, token, settings.token_file)


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
    while True:
        services = {s["id"]: s for s in admin.call("GET", "/api/v1/services")}
        for sid in targets:
            if sid in settled or sid not in services:
                continue
            line, ok = _progress(services[sid], number)
            if line:
                print(f"{sid}: {line}", flush=True)
                settled[sid] = ok
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
    services = admin.call("GET", "/api/v1/services")
    newest = admin.call("GET", "/api/v1/versions?limit=1")
    now = datetime.now(UTC)
    rows = [
        (
            s["id"],
            s["role"],
            s["node"],
            str(s["running_version"]) if s["running_version"] is not None else "-",
            _ago(s["last_seen_at"], now),
            "yes" if s["healthy"] else "no",
        )
        for s in services
    ]
    print(table(("SERVICE", "ROLE", "NODE", "VERSION", "LAST SEEN", "HEALTHY"), rows), end="")
    for s in services:
        if s["last_error"]:
            print(f"{s['id']}: last error: {s['last_error']}")
    print(f"newest version: {newest[0]['version'] if newest else 'none published'}")
    return 0


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
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=False)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]
    return "\n".join(lines) + "\n"


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


# --- gatehouse nodes token -----------------------------------------------------------------


@command
def nodes_token(args: argparse.Namespace, admin: AdminClient) -> int:
    answer = admin.call("POST", "/api/v1/join-tokens", {"role": args.role, "ttl": args.ttl})
    print(answer["token"])
    print(
        f"one-time join token for {ROLE_NAMES[args.role]}s, valid until {answer['expires_at']}",
        file=sys.stderr,
    )
    return 0
