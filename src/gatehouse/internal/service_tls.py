"""Which internal TLS credentials a service runs with, from its command line.

- Following the Administration service (``--state DIR``): the certificate its config agent
  enrolled and renews, in ``DIR/tls/``. Every internal listener and client is mutual TLS.
- From a file (``--config FILE``): ``--tls DIR`` names a credentials directory
  (``gatehouse.trust.tls`` layout: ``ca.pem``, ``cert.pem``, ``key.pem``). Without it the
  service is in development mode: plaintext, and only on a loopback address, so nothing
  beyond this machine can reach an unauthenticated internal listener.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from gatehouse.config.access_point import is_loopback
from gatehouse.errors import GatehouseError
from gatehouse.trust.revocation import Revocations
from gatehouse.trust.tls import Credentials

__all__ = ["TLS_DIR", "add_tls_argument", "credentials_of", "revocations_of", "state_credentials"]

log = logging.getLogger("gatehouse.internal")

#: The credentials directory inside a service's state directory.
TLS_DIR = "tls"


def add_tls_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tls",
        type=Path,
        metavar="DIR",
        help="internal TLS credentials (ca.pem, cert.pem, key.pem) for --config; with --state "
        "the enrolled ones in DIR/tls are used",
    )


def state_credentials(state_dir: Path) -> Credentials | None:
    """The credentials a managed service enrolled, None before enrolment: those its config
    agent keeps (and reloads when it renews the certificate) when it runs in this process."""
    from gatehouse.internal.config_agent import agent_credentials

    directory = Path(state_dir) / TLS_DIR
    if not (directory / "cert.pem").exists():
        return None
    return agent_credentials(directory) or Credentials(directory)


def credentials_of(args: argparse.Namespace, host: str) -> Credentials | None:
    """The credentials for this start; refuses a plaintext listener off loopback.

    Raises:
        GatehouseError: ``--tls`` with ``--state``, an unusable directory, or a plaintext
            internal listener on an address other machines can reach.
    """
    given: Path | None = getattr(args, "tls", None)
    if args.state is not None:
        if given is not None:
            raise GatehouseError("--tls is for --config: with --state DIR the service uses DIR/tls")
        credentials = state_credentials(args.state)
    else:
        credentials = None if given is None else Credentials(given)
    if credentials is None:
        if not is_loopback(host):
            raise GatehouseError(
                f"an internal listener on {host} needs mutual TLS: follow the Administration "
                "service (--state DIR) or give --tls DIR; without TLS a service listens on "
                "loopback only"
            )
        log.warning("internal listener on %s without TLS (development mode)", host)
    return credentials


def revocations_of(agent: object) -> Revocations:
    """The revocation list a managed service's config agent keeps current (an empty one for
    a service started from a file)."""
    revocations = getattr(agent, "revocations", None)
    return revocations if isinstance(revocations, Revocations) else Revocations()
