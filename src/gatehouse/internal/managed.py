"""Where a service's configuration comes from: a file, or the Administration service.

Every service command (``gatehouse access-point``, ``policy``, ``authentication``,
``distribution``) takes one of

- ``--config FILE``: the service reads its configuration from a file it owns (the AP re-reads
  it on SIGHUP), as on a node without Admin;
- ``--state DIR``: the service follows Admin through a
  :class:`~gatehouse.internal.config_agent.ConfigAgent`. The first start enrols with a
  one-time join token made for this service (``gatehouse nodes token --role policy --id
  ps1``)::

      gatehouse policy --state /var/lib/gatehouse/ps1 \\
          --join https://admin:8001 --token TOKEN --id ps1 --endpoint http://10.0.1.11:8101

  and stores Admin's public key, its certificate (DIR/tls, renewed by the agent) and, from
  then on, its last-known-good configuration in DIR. Later starts need only ``--state DIR``
  (a ``--join``/``--token`` given again is ignored once enrolled, so one command line works
  for every start).

The service then starts from its last-known-good version, or waits for Admin's first version,
and runs :meth:`ConfigAgent.run` next to its work to apply each new version.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from gatehouse.cli_support import add_home, listen_arg
from gatehouse.config.loader import load_file, validate
from gatehouse.errors import GatehouseError
from gatehouse.internal.config_agent import Apply, ConfigAgent, Validate
from gatehouse.internal.lkg import ROLES, check_service_id
from gatehouse.internal.service_tls import add_tls_argument
from gatehouse.logs import setup_logging
from gatehouse.trust.tls import Credentials

__all__ = [
    "Joining",
    "Managed",
    "add_service_arguments",
    "add_source_arguments",
    "credentials_of_agent",
    "default_node",
    "follow_admin",
    "joining_of",
    "load_configuration",
    "model_check",
    "start_managed",
]

log = logging.getLogger("gatehouse.managed")

M = TypeVar("M", bound=BaseModel)

TOKEN_ENV = "GATEHOUSE_JOIN_TOKEN"
_NODE_CHARS = re.compile(r"[^a-z0-9_.-]+")


def default_node() -> str:
    """This machine's host name as a node name (lowercase letters, digits, ``._-``)."""
    name = _NODE_CHARS.sub("-", socket.gethostname().lower()).strip("-._")[:63]
    return name or "node"


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` or ``--state DIR`` (with ``--join ... --token ...`` to register)."""
    source = parser.add_argument_group(
        "configuration source", "--config FILE, or --state DIR to follow the Administration service"
    )
    source.add_argument("--config", metavar="FILE", help="YAML configuration file")
    source.add_argument(
        "--state",
        type=Path,
        metavar="DIR",
        help="state directory: registration with Admin and the last-known-good configuration",
    )
    source.add_argument(
        "--join",
        action="append",
        metavar="URL",
        help="Admin URL to register with on the first start (repeat or comma-separate for several)",
    )
    source.add_argument(
        "--token",
        metavar="TOKEN",
        help=f"one-time join token (or ${TOKEN_ENV}, or --token-file)",
    )
    source.add_argument("--token-file", type=Path, metavar="FILE", help="file holding the token")
    source.add_argument("--id", dest="service_id", metavar="ID", help="this service's id")
    source.add_argument(
        "--endpoint", metavar="URL", help="URL where the other services reach this one"
    )
    source.add_argument("--node", metavar="NAME", help="node name (default: the host name)")


@dataclass(frozen=True, slots=True)
class Joining:
    """How to register on the first start."""

    admin_urls: tuple[str, ...]
    token: str
    service_id: str
    endpoint: str
    node: str


def joining_of(args: argparse.Namespace) -> Joining | None:
    """Check the source options together; the registration to make, if any.

    Raises:
        GatehouseError: a one-line message naming the options that do not fit.
    """
    if (args.config is None) == (args.state is None):
        raise GatehouseError("give either --config FILE or --state DIR (exactly one)")
    join_only = ("join", "token", "token_file", "service_id", "endpoint", "node")
    if args.config is not None:
        given = [name for name in join_only if getattr(args, name) is not None]
        if given:
            flag = "--" + given[0].replace("service_id", "id").replace("_", "-")
            raise GatehouseError(f"{flag} needs --state DIR (it is for following Admin)")
        return None
    if not args.join:
        return None
    urls = tuple(u.strip() for part in args.join for u in part.split(",") if u.strip())
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise GatehouseError(f"--join: not an http(s) URL: {url!r}")
    token = _token(args)
    if args.service_id is None:
        raise GatehouseError("--join needs --id ID (this service's id in the configuration)")
    try:
        check_service_id(args.service_id)
    except ValueError as exc:
        raise GatehouseError(f"--id: {exc}") from None
    if args.endpoint is None or not args.endpoint.startswith(("http://", "https://")):
        raise GatehouseError("--join needs --endpoint URL (where other services reach this one)")
    return Joining(urls, token, args.service_id, args.endpoint, args.node or default_node())


def _token(args: argparse.Namespace) -> str:
    if args.token is not None:
        token = str(args.token)
    elif args.token_file is not None:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise GatehouseError(
                f"--token-file: cannot read {args.token_file}: {exc.strerror}"
            ) from None
    else:
        token = os.environ.get(TOKEN_ENV, "")
    if not token.strip():
        raise GatehouseError(f"--join needs a join token: --token, --token-file or ${TOKEN_ENV}")
    return token.strip()


def model_check(model: type[M]) -> Callable[[dict[str, Any]], M]:
    """A view check for the agent: the service's own model, errors with field paths."""

    def check(view: dict[str, Any]) -> M:
        return validate(model, view, "the published configuration")

    return check


async def follow_admin(agent: ConfigAgent, apply: Apply, check: Validate) -> None:
    """Run ``agent`` for the life of the service (a task next to it). The agent never raises
    because of Admin or a bad version; should it fail anyway, the service keeps serving its
    running version and says so."""
    try:
        await agent.run(apply, check)
    except Exception:
        log.exception("the config agent stopped: no new configuration will be applied")


@dataclass(frozen=True, slots=True)
class Managed:
    """A service started from Admin: its agent and the version it starts with."""

    agent: ConfigAgent
    version: int
    view: dict[str, Any]


async def start_managed(
    state_dir: Path, role: str, joining: Joining | None, check: Validate
) -> Managed:
    """Register if need be, then the version to start from (last-known-good, else Admin's
    first version, waited for).

    Raises:
        GatehouseError: not registered and no ``--join``; registered as another role; the
            join token refused; Admin unreachable for the registration; the state unusable.
    """
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
    agent = ConfigAgent(state_dir)
    state = agent.state
    if state is None or agent.credentials is None:
        if joining is None:
            if state is not None:
                raise GatehouseError(
                    f"{state_dir}/tls holds no certificate of {state.service_id!r} (it "
                    "registered before internal TLS, or the directory was removed): make a "
                    f"join token with 'gatehouse nodes token --role {state.role} --id "
                    f"{state.service_id} --replace' and start once with --join ADMIN_URL "
                    "--token TOKEN --id ID --endpoint URL"
                )
            raise GatehouseError(
                f"{state_dir} holds no registration with Admin: start once with "
                "--join ADMIN_URL --token TOKEN --id ID --endpoint URL"
            )
        state = await agent.register(
            joining.admin_urls,
            joining.token,
            joining.service_id,
            role,
            joining.node,
            joining.endpoint,
        )
    elif joining is not None:
        log.info("already registered as %r; --join and --token are not used", state.service_id)
    if state.role != role:
        raise GatehouseError(
            f"{state_dir} is the state of {state.role} {state.service_id!r}, not of a {role} "
            "service: give this service a state directory of its own"
        )
    if agent.state_dir.lkg_path.exists():
        log.info("starting %s %r from its last-known-good configuration", role, state.service_id)
    else:
        log.info("waiting for Admin's first configuration version for %r", state.service_id)
    snapshot = await agent.initial(check)
    return Managed(agent, snapshot.version, snapshot.view)


def add_service_arguments(parser: argparse.ArgumentParser) -> None:
    """What every internal service's command takes: the configuration source, ``--tls``,
    ``--listen`` (overriding the configuration's) and ``--home``."""
    add_source_arguments(parser)
    add_tls_argument(parser)
    parser.add_argument("--listen", type=listen_arg, metavar="HOST:PORT", help="override listen")
    add_home(parser)


def load_configuration(
    args: argparse.Namespace, role: str, check: Callable[[dict[str, Any]], M], model: type[M]
) -> tuple[M, ConfigAgent | None]:
    """The service's configuration document and, when it follows Admin (``--state``), its
    agent: from Admin's version to start from (registering first with ``--join``), else
    from ``--config FILE``.

    Raises:
        GatehouseError: the source options do not fit, or the registration failed.
        ConfigError: the file is not a valid configuration (the message names the field).
    """
    joining = joining_of(args)
    if args.state is None:
        return load_file(model, args.config), None
    setup_logging()
    managed = asyncio.run(start_managed(args.state, role, joining, check))
    return check(managed.view), managed.agent


def credentials_of_agent(agent: ConfigAgent) -> Credentials:
    """The agent's credentials (after :func:`start_managed` it always has them)."""
    if agent.credentials is None:  # pragma: no cover - start_managed enrolled it
        raise GatehouseError(f"{agent.state_dir.tls_path} holds no certificate")
    return agent.credentials
