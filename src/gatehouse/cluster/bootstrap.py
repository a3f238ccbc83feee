"""Bringing a new cluster's installation in through its Administration service: the admin
client, the installation the first ``up`` publishes, the console's first administrator, a join
token for each service, and the demo user."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gatehouse.administration.config_cli import AdminClient
from gatehouse.administration.credentials import operator_context
from gatehouse.administration.document import render_yaml
from gatehouse.administration.service import TOKEN_FILE, read_token
from gatehouse.cluster import db_access
from gatehouse.cluster.errors import ClusterError
from gatehouse.cluster.installation import installation_document
from gatehouse.cluster.members import Kind
from gatehouse.cluster.topology import Topology
from gatehouse.errors import ConfigError, GatehouseError
from gatehouse.node import ADMIN_TOKEN_FILE, DEMO_EMAIL, bootstrap_admin, make_join_token

DEMO_USER = "demo"


def admin_client(home: Path, admin_url: str, timeout: float = 15.0) -> AdminClient:
    """A client of the Administration service at ``admin_url`` with the admin token of
    ``home``.

    Raises:
        ConfigError: no readable admin token (Admin never started in this home).
        GatehouseError: no internal CA in ``home`` (likewise).
    """
    token_file = home / TOKEN_FILE
    tls = operator_context(home) if admin_url.startswith("https://") else None
    return AdminClient(admin_url, read_token(token_file), token_file, timeout, tls=tls)


def answering_admin(home: Path, admin_url: str) -> AdminClient | None:
    """A client of the Administration service once it wrote its token and answers its health
    check; None before."""
    if not (home / TOKEN_FILE).exists():
        return None
    try:
        client = admin_client(home, admin_url, timeout=2.0)
        client.call("GET", "/api/v1/health")
    except (GatehouseError, ConfigError):
        return None
    return client


def cluster_installation(topology: Topology, home: Path) -> dict[str, Any]:
    """What the first ``up`` publishes: the topology's installation, each Policy service
    with the home's session admin token (so ``gatehouse users disable --home`` ends
    sessions through a running Policy service). With the cluster's own PostgreSQL, the
    Authentication services' user DB, OATH DB and OAuth2 DB, the Policy services' session DB and the
    Distribution services' outbox DB are URLs with their own roles (:mod:`.db_access`)."""
    document = installation_document(topology)
    token = str(home / ADMIN_TOKEN_FILE)
    local = topology.databases.local
    if local is not None:
        oath = db_access.oath_database(local)
        document["databases"] = {
            "user_db": db_access.role_url(home, local, db_access.AUTH_ROLE),
            "oath_db": db_access.role_url(home, local, db_access.AUTH_ROLE, oath),
            "outbox_db": db_access.role_url(
                home, local, db_access.DIST_ROLE, db_access.outbox_database(local)
            ),
            "oauth2_db": db_access.role_url(
                home, local, db_access.AUTH_ROLE, db_access.oauth2_database(local)
            ),
        }
    for entry in document["policy_services"]:
        entry.setdefault("admin_token_file", token)
        if local is not None:
            entry["session_db"] = db_access.role_url(home, local, db_access.POLICY_ROLE)
    return document


def publish(
    admin: AdminClient, document: dict[str, Any], source: str, say: Callable[[str], None]
) -> None:
    """Publish ``document`` as the installation when nothing is published yet.

    Args:
        source: the topology file's name, for the version's comment.
        say: called with a line saying what happened.
    """
    newest = admin.call("GET", "/api/v1/versions?limit=1")
    if newest:
        say(f"Admin publishes version {newest[0]['version']} (left as it is)")
        return
    admin.call("PUT", "/api/v1/draft", {"text": render_yaml(document)})
    comment = f"gatehouse cluster up {source}".rstrip()
    number = admin.call("POST", "/api/v1/publish", {"comment": comment})["version"]
    say(f"published the installation of the topology as version {number}")


def first_admin(admin: AdminClient, say: Callable[[str], None]) -> dict[str, Any] | None:
    """Make the console's first superadmin (``admin``) when there is no administrator yet, as
    ``gatehouse up`` does; its credentials (password, OTP secret, otpauth URI) to show once,
    else None. ``say`` is told that it was made (never the credentials), or why not."""
    made = bootstrap_admin(admin, say)
    if made is not None:
        say("made the console's first administrator (its credentials follow, once)")
    return made


def prepare_state(state: Path, kind: Kind, admin: Callable[[], AdminClient]) -> None:
    """A service's state directory (named after the service's id), with a join token for
    that service unless it enrolled before; ``admin`` is called only when a token is
    needed."""
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    make_join_token(state, admin, kind)


def add_demo_user(home: Path) -> str | None:
    """Create the demo user with a fresh password and return it; None when it exists.

    Raises:
        ClusterError: ``gatehouse users add`` failed.
    """
    password = secrets.token_urlsafe(12)
    result = subprocess.run(
        [
            *(sys.executable, "-m", "gatehouse", "users", "add", DEMO_USER),
            *("--password-stdin", "--display-name", "Demo User", "--home", str(home)),
            *("--email", DEMO_EMAIL),  # codes and invitations reach the demo mail server
        ],
        input=password + "\n",
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if result.returncode == 0:
        return password
    if "exists" in result.stderr:
        return None
    raise ClusterError(result.stderr.strip() or f"users add exited with {result.returncode}")
