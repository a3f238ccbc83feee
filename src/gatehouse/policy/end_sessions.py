"""End a user's sessions from the command line: ``gatehouse users passwd|disable|delete`` and
every group change (``groups add-member|remove-member|delete``).

The running Policy service is asked first (its session admin API), because only it can tell
every Access Point to drop cached decisions at once. When no Policy service of the
installation answers, the sessions are deleted from the session DB directly; on PostgreSQL
the Policy services are told with NOTIFY as if one of them had done it, so Access Points still
drop their cached decisions at once; on SQLite they stop letting the sessions in when their
cached decisions expire (``decision_ttl``).

The call is ``END_SESSIONS`` (policy/calls.py), with the admin bearer token. Over mutual TLS
it also needs the operator's client certificate: ``end_user_sessions(..., tls=CONTEXT)`` takes
its client context (made from the operator credentials under HOME, by the command line); with
it the Policy service is called over HTTPS and must present a Policy certificate with the id
the configuration names. Without one, plaintext (development on one machine).
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from gatehouse.config.access_point import parse_listen
from gatehouse.config.loader import load_file, validate
from gatehouse.config.policy import PolicyConfig
from gatehouse.errors import GatehouseError
from gatehouse.internal.calls import Call, CallRefused
from gatehouse.internal.client import FailoverClient, InternalCallError
from gatehouse.internal.lkg import ADMIN_FILE, StateDir
from gatehouse.policy.admin_api import read_token
from gatehouse.policy.calls import END_SESSIONS
from gatehouse.policy.events import notify_revoked
from gatehouse.policy.service import resolve
from gatehouse.policy.sessions import END_REASONS, SessionRecord, SessionStore, Timeouts
from gatehouse.storage.engine import Database
from gatehouse.storage.home import database_urls
from gatehouse.storage.migrate import upgrade
from gatehouse.trust.identity import POLICY
from gatehouse.trust.tls import ClientTLS

A = TypeVar("A")

POLICY_CONFIG = "policy.yaml"
#: The ``from`` of the CLI's NOTIFY payloads: no Policy instance has this name.
CLI_INSTANCE = "gatehouse-cli"
#: Where ``gatehouse up`` keeps its services' state directories (node.STATE_DIR).
STATE_DIR = "state"
#: Seconds to connect to a Policy service, and for its answer.
CONNECT_TIMEOUT = 2.0
TIMEOUT = 5.0


def _policy_configs(home: Path) -> Iterator[tuple[PolicyConfig, Path]]:
    """The installation's Policy service configurations and the directory their relative
    paths start from: HOME/policy.yaml, then the last-known-good view of every Policy
    service that follows Admin from a state directory under HOME/state/."""
    path = home / POLICY_CONFIG
    if path.exists():
        try:
            yield load_file(PolicyConfig, path), path.parent
        except GatehouseError:
            pass
    for admin_file in sorted((home / STATE_DIR).glob(f"*/{ADMIN_FILE}")):
        state_dir = StateDir(admin_file.parent)
        try:
            state = state_dir.load_admin()
            if state is None or state.role != "policy":
                continue
            snapshot = state_dir.load_last_known_good(state)
            if snapshot is not None:
                yield validate(PolicyConfig, snapshot.view), home
        except GatehouseError:
            continue


async def _via_policy_service(
    home: Path, query: dict[str, str], tls: ssl.SSLContext | None = None
) -> int | None:
    """Revoke through one of the installation's Policy services; None when that is not
    possible."""
    for config, base in _policy_configs(home):
        revoked = await revoke_through(config, base, query, tls)
        if revoked is not None:
            return revoked
    return None


def policy_url(config: PolicyConfig, tls: bool) -> str:
    """Where this machine reaches the Policy service ``config`` describes."""
    host, port = parse_listen(config.policy.listen)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"{'https' if tls else 'http'}://{netloc}"


async def call_policy_admin(
    config: PolicyConfig,
    base: Path,
    call: Call[Any, A],
    query: dict[str, str],
    tls: ssl.SSLContext | None = None,
    params: dict[str, str] | None = None,
) -> A | None:
    """``call`` on the admin API of the Policy service ``config`` describes, with its admin
    token; None when it has no admin API or does not answer. ``tls``: the operator's client
    context (the server must then be that Policy service: its role and id are checked)."""
    token_file = config.policy.admin_token_file
    if not token_file:
        return None
    try:
        token = read_token(resolve(token_file, base))
    except ValueError:
        return None
    client_tls = None if tls is None else ClientTLS(tls, frozenset({POLICY}), (config.policy.id,))
    client = FailoverClient(
        [policy_url(config, tls is not None)],
        connect_timeout=CONNECT_TIMEOUT,
        timeout=TIMEOUT,
        bearer_token=token,
        tls=client_tls,
    )
    async with client:
        try:
            return await call.invoke(
                client, None, params=params, query=urllib.parse.urlencode(query)
            )
        except (InternalCallError, CallRefused, ValueError):
            return None


async def revoke_through(
    config: PolicyConfig,
    base: Path,
    query: dict[str, str],
    tls: ssl.SSLContext | None = None,
) -> int | None:
    """``END_SESSIONS`` on the Policy service ``config`` describes (:func:`call_policy_admin`)."""
    return await call_policy_admin(config, base, END_SESSIONS, query, tls)


def _session_db(home: Path) -> str:
    """The session DB the installation's Policy services use (as ``gatehouse policy`` picks
    it: ``policy.session_db``, else HOME's)."""
    for config, _base in _policy_configs(home):
        if config.policy.session_db:
            return config.policy.session_db
    return database_urls(home).session_db


async def _in_session_db(
    home: Path, username: str, reason: str, except_session: str | None
) -> tuple[int, bool]:
    """End the sessions in the session DB itself; on PostgreSQL tell the Policy services
    with NOTIFY, as one of them would. Returns the count and whether they were told."""
    url = _session_db(home)
    await upgrade(url, "session")
    database = Database(url)
    told = False

    async def tell(records: Sequence[SessionRecord], _reason: str) -> None:
        nonlocal told
        if url.startswith("postgresql"):
            told = await notify_revoked(url, CLI_INSTANCE, [r.id_hash for r in records])

    try:
        # Lifetimes do not matter for deleting sessions.
        store = SessionStore(database, Timeouts(idle=1.0, absolute=1.0), on_end=tell)
        ended = await store.end_sessions(username, reason=reason, except_session=except_session)
        return len(ended), told
    finally:
        await database.dispose()


def end_user_sessions(
    home: Path,
    username: str,
    reason: str = "revoked",
    except_session: str | None = None,
    *,
    tls: ssl.SSLContext | None = None,
) -> str:
    """End every session of ``username`` (but the one whose id hash is ``except_session``);
    return a line saying what happened. ``tls``: the operator's client context, for Policy
    services on mutual TLS (see the module docstring)."""
    if reason not in END_REASONS:
        raise ValueError(f"unknown reason {reason!r}")
    query = {"user": username, "reason": reason}
    if except_session is not None:
        query["except"] = except_session
    revoked = asyncio.run(_via_policy_service(home, query, tls))
    if revoked is not None:
        return f"ended {revoked} session(s) of {username!r}; every Access Point was told"
    count, told = asyncio.run(_in_session_db(home, username, reason, except_session))
    if told:
        return (
            f"ended {count} session(s) of {username!r} in the session database; every "
            "Policy service was told"
        )
    return (
        f"ended {count} session(s) of {username!r} in the session database (no Policy "
        "service answered: cached access decisions expire within the decision TTL)"
    )
