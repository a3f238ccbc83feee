"""``gatehouse up``: a single node on this machine.

Every service runs as a child process of this one, which restarts any that exits (with a
growing delay), and stops them all on SIGTERM or Ctrl-C. The Administration service starts
first and owns the configuration: ``up`` publishes the single node's configuration through it
the first time, then starts the Distribution, Authentication, Policy and Access Point services
of the published configuration, each following Admin from its state directory (HOME/state/ID).
The demo backend also runs the demo mail server (an SMTP sink) that the Distribution service
delivers codes to; it lists what it received at ``/public/mail``.
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
from typing import Any

import yaml

from gatehouse.administration.config_cli import AdminClient, Invalid, admin_url, join_token
from gatehouse.administration.credentials import operator_context
from gatehouse.administration.document import parse_config, render_yaml
from gatehouse.administration.model import ROLE_NAMES, InstallationConfig
from gatehouse.administration.service import CONFIG_FILE, TOKEN_FILE, read_token
from gatehouse.administration.views import view_for
from gatehouse.config.access_point import parse_listen
from gatehouse.errors import ConfigError, GatehouseError
from gatehouse.internal.lkg import ADMIN_FILE, TLS_DIR, atomic_write
from gatehouse.internal.managed import default_node

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

    def start(self) -> subprocess.Popen[bytes]:
        self.proc = proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=_die_with_parent(),  # safe: this process runs no threads
        )
        self.started_at = time.monotonic()
        self.restart_at = None
        return proc

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
    banner: str,
    policy: RestartPolicy,
    stop: _StopRequest,
) -> int:
    # In dependency order, each once the one before listens (or has had its chance), so no
    # service starts by failing to reach the next.
    for child, address in zip(children, ready, strict=True):
        if child.proc is not None:
            continue  # started before (Admin, to publish the configuration)
        proc = child.start()
        deadline = time.monotonic() + _START_GRACE
        while not _answers(address) and time.monotonic() < deadline:
            if stop.wait(_POLL_INTERVAL) or proc.poll() is not None:
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
            print(banner, end="", flush=True)
            announced = True
    return 0


#: Where ``gatehouse up`` puts its metrics listeners by default: this port and the next four.
METRICS_LISTEN = ("127.0.0.1", 9461)
#: The order of the metrics ports from ``--metrics-listen`` on.
METRICS_ORDER = ("administration", "access_point", "policy", "authentication", "distribution")


def _metrics(addresses: NodeAddresses, role: str) -> dict[str, object]:
    listen = addresses.metrics_listen(METRICS_ORDER.index(role))
    return {} if listen is None else {"metrics": {"listen": listen}}


@dataclass(frozen=True, slots=True)
class NodeAddresses:
    """Where each service of the single node listens."""

    listen: tuple[str, int]
    backend: tuple[str, int]
    policy: tuple[str, int]
    authentication: tuple[str, int]
    admin: tuple[str, int] = ("127.0.0.1", 8001)
    #: The Access Point's status listener (its version and Policy routing; mutual TLS for
    #: operator certificates once enrolled): the public health says only up or down.
    status: tuple[str, int] = ("127.0.0.1", 8090)
    distribution: tuple[str, int] = ("127.0.0.1", 8301)
    #: The demo mail server (in the demo backend's process): the Distribution service's channel.
    smtp: tuple[str, int] = ("127.0.0.1", 8025)
    #: The first of five metrics listeners (Admin, AP, Policy, Authentication, Distribution,
    #: on consecutive ports); None: no metrics.
    metrics: tuple[str, int] | None = METRICS_LISTEN

    def metrics_listen(self, offset: int) -> str | None:
        """The ``metrics.listen`` of the service at ``offset`` (:data:`METRICS_ORDER`)."""
        if self.metrics is None:
            return None
        host, port = self.metrics
        return host_port(host, port + offset)


DEMO_USER = "demo"
#: The demo user's address: its codes by e-mail arrive in the demo mail server.
DEMO_EMAIL = "demo@example.org"
#: The sender of the codes the single node sends.
DEMO_SENDER = "Gatehouse <gatehouse@localhost>"
#: The Policy service's session admin token, in the home directory (used by the users CLI).
ADMIN_TOKEN_FILE = "policy-admin.token"
#: The services' state directories (registration, last-known-good), one per service id.
STATE_DIR = "state"
#: Where each role's command and its state directory come from, in start order.
ROLE_ORDER = ("distribution", "authentication", "policy", "access_point")
_COMMANDS = {
    "distribution": "distribution",
    "authentication": "authentication",
    "policy": "policy",
    "access_point": "access-point",
}
JOIN_TOKEN_TTL = 3600


def _ensure_admin_token(home: Path) -> None:
    path = home / ADMIN_TOKEN_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")


def _shown(home: Path) -> Path:
    """``home`` as a person would type it here: relative to the working directory if inside."""
    try:
        return home.relative_to(Path.cwd())
    except ValueError:
        return home


def _url(address: tuple[str, int]) -> str:
    return f"http://{host_port(*_dialable(address))}"


def installation(addresses: NodeAddresses, home: Path, node: str) -> dict[str, object]:
    """The single node as one installation configuration, published through Admin.

    The demo backend is reachable at ``/public/`` by anyone, at ``/secure/`` by a user signed
    in with a password and a one-time password (``otp``: the portal offers to enrol an
    authenticator app), at ``/secure-email/`` with a password and a code sent by e-mail
    (``email_otp``: the Distribution service delivers it to the demo mail server, whose
    inbox is ``/public/mail``), and everywhere else by any signed-in user; identity headers
    tell it who that is and how they signed in.
    """
    backend = _url(addresses.backend)
    return {
        "services": [
            {"id": "ap1", "role": "access_point", "endpoint": _url(addresses.listen), "node": node},
            {"id": "ps1", "role": "policy", "endpoint": _url(addresses.policy), "node": node},
            {
                "id": "auth1",
                "role": "authentication",
                "endpoint": _url(addresses.authentication),
                "node": node,
            },
            {
                "id": "dist1",
                "role": "distribution",
                "endpoint": _url(addresses.distribution),
                "node": node,
            },
        ],
        "access_points": [
            {
                "id": "ap1",
                "listen": host_port(*addresses.listen),
                "status_listen": host_port(*addresses.status),
                "policy_services": ["ps1"],
                **_metrics(addresses, "access_point"),
            }
        ],
        "policy_services": [
            {
                "id": "ps1",
                "listen": host_port(*addresses.policy),
                "authentication": ["auth1"],
                "admin_token_file": str(home / ADMIN_TOKEN_FILE),
                **_metrics(addresses, "policy"),
                # No trusted_proxies: the AP relays the portal over mutual TLS, and its
                # X-Forwarded-For is believed because its certificate says it is an AP.
            }
        ],
        "authentication_services": [
            {
                "id": "auth1",
                "listen": host_port(*addresses.authentication),
                **_metrics(addresses, "authentication"),
            }
        ],
        "distribution_services": [
            {
                "id": "dist1",
                "listen": host_port(*addresses.distribution),
                **_metrics(addresses, "distribution"),
            }
        ],
        # Invitation links point at the Access Point.
        "authentication": {"invitations": {"base_url": _url(addresses.listen)}},
        "distribution": {
            "channels": [
                {
                    "type": "smtp",
                    "name": "demo-mail",
                    "host": _dialable(addresses.smtp)[0],
                    "port": addresses.smtp[1],
                    "security": "none",
                    "sender": DEMO_SENDER,
                }
            ]
        },
        "resources": [
            {"id": "demo", "hosts": ["*"], "path_prefix": "/", "backends": [backend]},
            {"id": "demo-public", "hosts": ["*"], "path_prefix": "/public", "backends": [backend]},
            {"id": "demo-secure", "hosts": ["*"], "path_prefix": "/secure", "backends": [backend]},
            {
                "id": "demo-secure-email",
                "hosts": ["*"],
                "path_prefix": "/secure-email",
                "backends": [backend],
            },
        ],
        "global_rule": "public",
        "resource_rules": {
            "demo": "authenticated",
            "demo-public": "public",
            "demo-secure": {"auth_methods": ["password", "otp"]},
            "demo-secure-email": {"auth_methods": ["password", "email_otp"]},
        },
        # The OpenID Provider's issuer is the Access Point: discovery at
        # http://127.0.0.1:8080/.well-known/openid-configuration out of the box; clients
        # with 'gatehouse oauth clients add'.
        "oauth": {"issuer": _url(addresses.listen)},
    }


#: The first administrator ``gatehouse up`` makes (once) for the console.
FIRST_ADMIN = "admin"
#: How long the bootstrap call may take: the first one opens and migrates the user and OATH
#: databases and hashes a password. Its credentials are shown only in its answer, so a
#: client that gave up while Admin went on would lose them for good.
BOOTSTRAP_TIMEOUT = 120.0


def bootstrap_admin(
    admin: AdminClient, say: Callable[[str], None] | None = None
) -> dict[str, Any] | None:
    """Make the first superadmin (``admin``) the first time; its credentials (password,
    OTP secret, otpauth URI), or None when there are administrators already. ``gatehouse up``
    and ``gatehouse cluster up`` both call it; ``say`` tells why none was made (default:
    ``up``'s log)."""
    try:
        answer: dict[str, Any] = admin.call(
            "POST",
            "/api/v1/admins/bootstrap",
            {"name": FIRST_ADMIN},
            timeout=max(admin.timeout, BOOTSTRAP_TIMEOUT),
        )
    except GatehouseError as exc:
        if "bootstrap is done" not in str(exc):
            # The node runs all the same; 'gatehouse admins bootstrap --name N' can make one.
            (say or _log)(f"no console administrator made: {exc}")
        return None
    credentials: dict[str, Any] | None = answer.get("credentials")
    return credentials


def console_lines(console_url: str, home: Path, first: dict[str, Any] | None) -> str:
    """The console's part of the "up" block: its URL and how to sign in."""
    lines = f"  Console: {console_url} (HTTPS with the installation's CA: {home}/ca/ca.pem)\n"
    if first is not None:
        lines += (
            f"  Console administrator: {FIRST_ADMIN}  password: {first['password']}  "
            f"OTP secret: {first['otp_secret']} (shown only at this first start)\n"
            f"    add it to an authenticator app: {first['otpauth_uri']}\n"
        )
    else:
        lines += (
            f"  Console administrators sign in with their password and one-time password "
            f"({FIRST_ADMIN}'s were shown at the first start); more with "
            f"'{_command()} admins add NAME --role ROLE --home {home}'\n"
        )
    return lines


def up_banner(url: str, home: Path, password: str | None, console: str = "") -> str:
    """What ``up`` prints once every service answers: where to go and how to sign in."""
    if password is not None:
        sign_in = (
            f"Sign in as {DEMO_USER} with password {password} (shown only at this first start)."
        )
    else:
        sign_in = f"Sign in as {DEMO_USER} with the password shown at the first start."
    command = _command()
    return (
        f"Gatehouse is up: open {url}\n"
        f"  {sign_in}\n"
        f"  Forgot it? {command} users passwd {DEMO_USER} --home {home}\n"
        f"  Locked out after wrong passwords? {command} users unlock {DEMO_USER} --home {home}\n"
        "  /public/ needs no sign-in; /secure-email/ asks for a code by e-mail, which arrives at "
        f"{url}public/mail.\n"
        f"{console}"
        "  Ctrl-C stops everything.\n"
    )


def _command() -> str:
    """How this ``gatehouse`` was started (``.venv/bin/gatehouse`` under ``make run``)."""
    started = Path(sys.argv[0])
    return str(_shown(started.absolute())) if started.name == "gatehouse" else "gatehouse"


def _ensure_demo_user(home: Path) -> str | None:
    """Create the demo user with a fresh password, printed once, and return the password;
    None when the user exists already.

    Raises:
        GatehouseError: the user could not be created.
    """
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
            "--email",
            DEMO_EMAIL,
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
        return password
    if "exists" in result.stderr:
        print(f"Demo user: {DEMO_USER} (already created; its password was shown then)", flush=True)
        return None
    message = result.stderr.strip().removeprefix("gatehouse: ")
    raise GatehouseError(message or f"could not create the demo user (exit {result.returncode})")


# --- Admin: the node's configuration -------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise GatehouseError(f"--config: cannot read {path}: {why}") from None


def _admin_url(address: tuple[str, int]) -> str:
    """The Administration service's URL: it speaks HTTPS only."""
    return admin_url(*_dialable(address))


def _admin_client(home: Path, address: tuple[str, int]) -> AdminClient:
    """The operator's client: the admin token, and the operator certificate from the CA."""
    token_file = home / TOKEN_FILE
    return AdminClient(
        _admin_url(address), read_token(token_file), token_file, tls=operator_context(home)
    )


def make_join_token(state: Path, admin: Callable[[], AdminClient], role: str) -> None:
    """``state/join.token`` for the service ``state.name`` unless it is enrolled; a service
    registered before internal TLS (``admin.json`` without a certificate) is enrolled again
    (``replace``), as the operator who runs this for it would."""
    token_file = state / "join.token"
    enrolled = (state / TLS_DIR / "cert.pem").exists()
    registered = (state / ADMIN_FILE).exists()
    if enrolled or (token_file.exists() and not registered):
        return
    token = join_token(admin(), role, state.name, JOIN_TOKEN_TTL, replace=registered)
    atomic_write(token_file, (token + "\n").encode())


def _wait_for_admin(
    child: _Child, home: Path, address: tuple[str, int], stop: _StopRequest
) -> AdminClient | None:
    """Admin's client once it answers its health check; None if it exited or we stop."""
    deadline = time.monotonic() + _START_GRACE * 2
    while time.monotonic() < deadline:
        if child.proc is not None and child.proc.poll() is not None:
            return None
        if (home / TOKEN_FILE).exists() and _answers(address):
            try:
                client = _admin_client(home, address)
                client.call("GET", "/api/v1/health")
            except (GatehouseError, ConfigError):
                pass
            else:
                return client
        if stop.wait(_POLL_INTERVAL):
            return None
    return None


def publish_node_config(
    admin: AdminClient, built_in: dict[str, object], config_path: str | None
) -> InstallationConfig:
    """Publish the node's configuration when it is new, and return what is published.

    The built-in configuration is published once, when nothing is; from then on it is
    Admin's to change (``gatehouse config apply|publish``). ``--config FILE`` is applied as
    the draft at every start and published when it differs from the newest version.

    Raises:
        GatehouseError: Admin refused (an :class:`Invalid` names every field).
    """
    newest = admin.call("GET", "/api/v1/versions?limit=1")
    if config_path is not None:
        admin.call("PUT", "/api/v1/draft", {"text": _read(config_path)})
        if not newest or admin.call("GET", "/api/v1/diff")["diff"]:
            comment = f"gatehouse up --config {config_path}"
            admin.call("POST", "/api/v1/publish", {"comment": comment})
    elif not newest:
        admin.call("PUT", "/api/v1/draft", {"text": render_yaml(built_in)})
        admin.call("POST", "/api/v1/publish", {"comment": "gatehouse up: the single node"})
    newest = admin.call("GET", "/api/v1/versions?limit=1")
    number = newest[0]["version"]
    text = admin.call("GET", f"/api/v1/versions/{number}")["text"]
    return parse_config(text, f"version {number}")


@dataclass(frozen=True, slots=True)
class _Planned:
    """One Gatehouse service of the published configuration, as a child to run."""

    child: _Child
    address: tuple[str, int]


def _service_children(
    admin: AdminClient, config: InstallationConfig, home: Path, admin_url: str
) -> list[_Planned]:
    """A child per service of the configuration, in dependency order, each with its state
    directory; a join token for each one not registered yet."""
    planned = []
    services = sorted(config.services, key=lambda s: ROLE_ORDER.index(s.role))
    for service in services:
        state = home / STATE_DIR / service.id
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
        token_file = state / "join.token"
        make_join_token(state, lambda: admin, service.role)
        args = [_COMMANDS[service.role], "--state", str(state)]
        args += ["--join", admin_url, "--token-file", str(token_file), "--id", service.id]
        args += ["--endpoint", service.endpoint, "--node", service.node]
        if service.role != "access_point":
            args += ["--home", str(home)]
        view = view_for(config, service.id)
        listen = next(iter(view.values()))["listen"]
        planned.append(_Planned(_Child(ROLE_NAMES[service.role], args), parse_listen(listen)))
    return planned


def write_node_scrape_config(
    home: Path, config: InstallationConfig, addresses: NodeAddresses, node: str
) -> Path:
    """``HOME/prometheus.yml`` listing the metrics listener of Admin and of every service of
    the published configuration (those with ``metrics.listen``)."""
    from gatehouse.metrics.scrape_config import Target, write_scrape_config

    targets = []
    admin = addresses.metrics_listen(METRICS_ORDER.index("administration"))
    if admin is not None:
        targets.append(Target("admin", "administration", node, *parse_listen(admin)))
    for service in config.services:
        settings = next(iter(view_for(config, service.id).values()))
        listen = (settings.get("metrics") or {}).get("listen")
        if listen:
            targets.append(Target(service.id, service.role, service.node, *parse_listen(listen)))
    return write_scrape_config(home, targets, "gatehouse up")


def run_up(
    config_path: str | None,
    listen: tuple[str, int],
    backend_listen: tuple[str, int],
    policy: RestartPolicy | None = None,
    *,
    home: Path | None = None,
    policy_listen: tuple[str, int] = ("127.0.0.1", 8101),
    auth_listen: tuple[str, int] = ("127.0.0.1", 8201),
    admin_listen: tuple[str, int] = ("127.0.0.1", 8001),
    status_listen: tuple[str, int] = ("127.0.0.1", 8090),
    distribution_listen: tuple[str, int] = ("127.0.0.1", 8301),
    smtp_listen: tuple[str, int] = ("127.0.0.1", 8025),
    metrics_listen: tuple[str, int] | None = METRICS_LISTEN,
) -> int:
    """Run the node until SIGTERM or Ctrl-C; return the exit code.

    Admin starts first; the node's configuration is published through it (see
    :func:`publish_node_config`); then every service of the published configuration starts
    from its own state directory, registering with a one-time join token the first time.
    """
    if config_path is not None:
        parse_config(_read(config_path), config_path)  # fail now, with field paths
    home = (home or Path("var")).resolve()
    from gatehouse.storage.home import prepare_home  # 0700; an existing home is tightened

    prepare_home(home)
    addresses = NodeAddresses(
        listen,
        backend_listen,
        policy_listen,
        auth_listen,
        admin_listen,
        status_listen,
        distribution_listen,
        smtp_listen,
        metrics_listen,
    )
    built_in = installation(addresses, home, default_node())
    admin_config = home / CONFIG_FILE
    admin_config.write_text(
        "# Written by 'gatehouse up' at every start.\n"
        + yaml.safe_dump(
            {
                "administration": {
                    "listen": host_port(*admin_listen),
                    **_metrics(addresses, "administration"),
                }
            }
        ),
        encoding="utf-8",
    )
    _ensure_admin_token(home)
    try:
        password = _ensure_demo_user(home)
    except GatehouseError as exc:
        _log(str(exc))
        return 2
    with _StopRequest().installed() as stop:
        backend = _Child(
            "demo backend",
            [
                "demo-backend",
                "--listen",
                host_port(*backend_listen),
                "--smtp",
                host_port(*smtp_listen),
            ],
        )
        admin = _Child(
            "administration",
            ["administration", "--config", str(admin_config), "--home", str(home)],
        )
        children = [backend, admin]
        try:
            backend.start()
            admin.start()
            client = _wait_for_admin(admin, home, admin_listen, stop)
            if client is None:
                if stop.wait(0):
                    return 0
                _log("the Administration service did not start; see its messages above")
                return 1
            try:
                config = publish_node_config(client, built_in, config_path)
                first_admin = bootstrap_admin(client)
                planned = _service_children(client, config, home, _admin_url(admin_listen))
                scrape = write_node_scrape_config(home, config, addresses, default_node())
                _log(f"Prometheus scrape configuration: {_shown(scrape)}")
            except Invalid as exc:
                for path, message in exc.problems:
                    _log(f"{path}: {message}" if path else message)
                return 2
            except GatehouseError as exc:
                _log(str(exc))
                return 2
            children += [p.child for p in planned]
            entry = next(
                (p.address for p in planned if p.child.name == ROLE_NAMES["access_point"]), listen
            )
            url = f"http://{host_port(*_dialable(entry))}/"
            ready = [backend_listen, admin_listen, *(p.address for p in planned)]
            console = console_lines(
                f"{_admin_url(admin_listen)}/console/", _shown(home), first_admin
            )
            banner = up_banner(url, _shown(home), password, console)
            return _supervise(children, ready, banner, policy or RestartPolicy(), stop)
        finally:
            # The Access Point first, so requests in flight can still reach the backend.
            for child in reversed(children):
                child.stop(STOP_TIMEOUT)
