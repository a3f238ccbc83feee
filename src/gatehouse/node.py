"""``gatehouse up``: a single node on this machine.

The demo backend and an Access Point run as child processes of this one, which restarts any
that exits (with a growing delay), and stops them all on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import yaml

from gatehouse.config.access_point import AccessPointConfig
from gatehouse.config.loader import load_file, validate

STOP_TIMEOUT = 10.0
_POLL_INTERVAL = 0.1
#: How long a child may take to listen before the next one is started anyway.
_START_GRACE = 15.0
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """When to restart a child that exited, and when to stop trying."""

    first_delay: float = 0.25
    max_delay: float = 4.0
    healthy_after: float = 10.0
    """A run at least this long was healthy: the next failure counts as the first."""
    max_failures: int = 5
    """Consecutive short runs after which the node gives up (e.g. the port is taken)."""

    def after_exit(self, failures: int, uptime: float) -> tuple[int, float | None]:
        """Given the consecutive failures so far and how long the child just ran, return the
        new failure count and the delay before restarting it, or None to give up."""
        failures = 1 if uptime >= self.healthy_after else failures + 1
        if failures > self.max_failures:
            return failures, None
        return failures, min(self.max_delay, self.first_delay * 2 ** (failures - 1))


def host_port(host: str, port: int) -> str:
    """``HOST:PORT``, with IPv6 addresses in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def default_config(listen: tuple[str, int], backend: tuple[str, int]) -> dict[str, object]:
    """The built-in config: every host and path goes to the demo backend, no login needed.

    It is examples/access-point.yaml with the addresses filled in.
    """
    return {
        "access_point": {"listen": host_port(*listen)},
        "resources": [
            {
                "id": "demo",
                "hosts": ["*"],
                "path_prefix": "/",
                "backends": [f"http://{host_port(*_dialable(backend))}"],
                "public": True,
            }
        ],
    }


def _dialable(address: tuple[str, int]) -> tuple[str, int]:
    """Where to connect to reach a server listening on ``address``."""
    host, port = address
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host), port


def _log(message: str) -> None:
    print(f"gatehouse up: {message}", file=sys.stderr, flush=True)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _answers(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(_dialable(address), timeout=0.2):
            return True
    except OSError:
        return False


def _die_with_parent() -> Callable[[], None] | None:
    """On Linux, make children get SIGTERM if this process dies without stopping them."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def set_parent_death_signal() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return set_parent_death_signal


class _Child:
    """One supervised ``gatehouse`` subprocess; its output goes to ours."""

    def __init__(self, name: str, args: Sequence[str]) -> None:
        self.name = name
        self.argv = [sys.executable, "-m", "gatehouse", *args]
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.failures = 0
        self.restart_at: float | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=_die_with_parent(),  # safe: this process runs no threads
        )
        self.started_at = time.monotonic()
        self.restart_at = None

    def stop(self, timeout: float) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _log(f"{self.name} did not stop within {timeout:g}s; killing it")
            self.proc.kill()
            self.proc.wait()


class _StopRequest:
    """Set by SIGTERM or SIGINT while installed."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._event.set()

    @contextmanager
    def installed(self) -> Iterator[_StopRequest]:
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self._handle) for sig in handled}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)


def _supervise(
    children: list[_Child],
    ready: list[tuple[str, int]],
    url: str,
    policy: RestartPolicy,
    stop: _StopRequest,
) -> int:
    # In dependency order, each once the one before listens (or has had its chance), so no
    # service starts by failing to reach the next.
    for child, address in zip(children, ready, strict=True):
        child.start()
        deadline = time.monotonic() + _START_GRACE
        while not _answers(address) and time.monotonic() < deadline:
            if stop.wait(_POLL_INTERVAL) or (child.proc and child.proc.poll() is not None):
                break
    announced = False
    while not stop.wait(_POLL_INTERVAL):
        now = time.monotonic()
        for child in children:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.start()
                continue
            assert child.proc is not None
            code = child.proc.poll()
            if code is None:
                continue
            child.failures, delay = policy.after_exit(child.failures, now - child.started_at)
            if delay is None:
                exited = _describe_exit(code)
                _log(f"{child.name} {exited}, {child.failures} times in a row; giving up")
                return 1
            _log(f"{child.name} {_describe_exit(code)}; restarting it in {delay:g}s")
            child.restart_at = now + delay
        if not announced and all(_answers(address) for address in ready):
            print(f"Gatehouse is up: open {url}", flush=True)
            print(
                "Sign in as the demo user to see the demo backend; /public/ needs no sign-in.",
                flush=True,
            )
            announced = True
    return 0


@dataclass(frozen=True, slots=True)
class NodeAddresses:
    """Where each service of the single node listens."""

    listen: tuple[str, int]
    backend: tuple[str, int]
    policy: tuple[str, int]
    authentication: tuple[str, int]


DEMO_USER = "demo"
#: The Policy service's session admin token, in the home directory (used by the users CLI).
ADMIN_TOKEN_FILE = "policy-admin.token"


def _ensure_admin_token(home: Path) -> None:
    path = home / ADMIN_TOKEN_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")


def node_configs(addresses: NodeAddresses) -> dict[str, dict[str, object]]:
    """The single node's configuration files: one per service.

    The demo backend is reachable at ``/public/`` by anyone and everywhere else by any
    signed-in user; identity headers tell it who that is.
    """
    backend = f"http://{host_port(*_dialable(addresses.backend))}"
    policy_url = f"http://{host_port(*_dialable(addresses.policy))}"
    auth_url = f"http://{host_port(*_dialable(addresses.authentication))}"
    return {
        "authentication": {
            "authentication": {"id": "auth1", "listen": host_port(*addresses.authentication)}
        },
        "policy": {
            "policy": {
                "id": "ps1",
                "listen": host_port(*addresses.policy),
                "authentication": [auth_url],
                "admin_token_file": ADMIN_TOKEN_FILE,
            },
            "global_rule": "public",
            "resources": {"demo": "authenticated", "demo-public": "public"},
        },
        "access-point": {
            "access_point": {
                "id": "ap1",
                "listen": host_port(*addresses.listen),
                "policy_services": [policy_url],
            },
            "resources": [
                {"id": "demo", "hosts": ["*"], "path_prefix": "/", "backends": [backend]},
                {
                    "id": "demo-public",
                    "hosts": ["*"],
                    "path_prefix": "/public",
                    "backends": [backend],
                    "public": True,
                },
            ],
        },
    }


def _ensure_demo_user(home: Path) -> bool:
    """Create the demo user with a fresh password, printed once; False on a real error."""
    password = secrets.token_urlsafe(12)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gatehouse",
            "users",
            "add",
            DEMO_USER,
            "--password-stdin",
            "--display-name",
            "Demo User",
            "--home",
            str(home),
        ],
        input=password + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode == 0:
        print(
            f"Demo user: {DEMO_USER}  password: {password}  (shown once; change it with "
            f"'gatehouse users passwd {DEMO_USER} --home {home}')",
            flush=True,
        )
        return True
    if "exists" in result.stderr:
        print(f"Demo user: {DEMO_USER} (already created; its password was shown then)", flush=True)
        return True
    _log(result.stderr.strip() or f"could not create the demo user (exit {result.returncode})")
    return False


def run_up(
    config_path: str | None,
    listen: tuple[str, int],
    backend_listen: tuple[str, int],
    policy: RestartPolicy | None = None,
    *,
    home: Path | None = None,
    policy_listen: tuple[str, int] = ("127.0.0.1", 8101),
    auth_listen: tuple[str, int] = ("127.0.0.1", 8201),
) -> int:
    """Run the node until SIGTERM or Ctrl-C; return the exit code."""
    if config_path is not None:
        load_file(AccessPointConfig, config_path)  # fail now, with field paths, not in a loop
    home = (home or Path("var")).resolve()
    home.mkdir(parents=True, exist_ok=True)
    addresses = NodeAddresses(listen, backend_listen, policy_listen, auth_listen)
    paths = {}
    for name, document in node_configs(addresses).items():
        path = home / f"{name}.yaml"
        path.write_text(
            "# Written by 'gatehouse up' at every start; edit the generator, not this file.\n"
            + yaml.safe_dump(document, sort_keys=False),
            encoding="utf-8",
        )
        paths[name] = str(path)
    validate(AccessPointConfig, node_configs(addresses)["access-point"], "built-in config")
    if config_path is not None:
        paths["access-point"] = config_path
    _ensure_admin_token(home)
    if not _ensure_demo_user(home):
        return 2
    with _StopRequest().installed() as stop:
        h = ["--home", str(home)]
        children = [
            _Child("demo backend", ["demo-backend", "--listen", host_port(*backend_listen)]),
            _Child("authentication", ["authentication", "--config", paths["authentication"], *h]),
            _Child("policy", ["policy", "--config", paths["policy"], *h]),
            _Child(
                "access point",
                ["access-point", "--config", paths["access-point"], "--listen", host_port(*listen)],
            ),
        ]
        url = f"http://{host_port(*_dialable(listen))}/"
        ready = [backend_listen, auth_listen, policy_listen, listen]
        try:
            return _supervise(children, ready, url, policy or RestartPolicy(), stop)
        finally:
            # The Access Point first, so requests in flight can still reach the backend.
            for child in reversed(children):
                child.stop(STOP_TIMEOUT)
