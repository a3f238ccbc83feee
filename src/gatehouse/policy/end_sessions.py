"""End a user's sessions from the command line (``gatehouse users disable|delete``).

The running Policy service is asked first (its session admin API), because only it can tell
every Access Point to drop cached decisions at once. When no Policy service of the
installation answers, the sessions are deleted from the session DB directly; Access Points
then stop letting them in when their cached decisions expire (``decision_ttl``).
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from gatehouse.config.access_point import parse_listen
from gatehouse.config.loader import load_file
from gatehouse.config.policy import PolicyConfig
from gatehouse.errors import GatehouseError
from gatehouse.policy.admin_api import read_token
from gatehouse.policy.service import resolve
from gatehouse.policy.sessions import SessionStore, Timeouts
from gatehouse.storage.engine import Database
from gatehouse.storage.home import database_urls
from gatehouse.storage.migrate import upgrade

POLICY_CONFIG = "policy.yaml"


def _via_policy_service(home: Path, username: str) -> int | None:
    """Revoke through the installation's Policy service; None when that is not possible."""
    path = home / POLICY_CONFIG
    if not path.exists():
        return None
    try:
        config = load_file(PolicyConfig, path)
    except GatehouseError:
        return None
    token_file = config.policy.admin_token_file
    if not token_file:
        return None
    try:
        token = read_token(resolve(token_file, path.parent))
    except ValueError:
        return None
    host, port = parse_listen(config.policy.listen)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    query = urllib.parse.urlencode({"user": username})
    request = urllib.request.Request(
        f"http://{netloc}/internal/v1/sessions?{query}",
        method="DELETE",
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            answer = json.loads(response.read())
    except (OSError, urllib.error.URLError, ValueError):
        return None
    revoked = answer.get("revoked") if isinstance(answer, dict) else None
    return revoked if isinstance(revoked, int) else None


async def _in_session_db(home: Path, username: str) -> int:
    url = database_urls(home).session_db
    await upgrade(url, "session")
    database = Database(url)
    try:
        # Lifetimes do not matter for deleting sessions.
        store = SessionStore(database, Timeouts(idle=1.0, absolute=1.0))
        return len(await store.revoke_user(username, reason="user disabled"))
    finally:
        await database.dispose()


def end_user_sessions(home: Path, username: str) -> str:
    """End every session of ``username``; return a line saying what happened."""
    revoked = _via_policy_service(home, username)
    if revoked is not None:
        return f"ended {revoked} session(s) of {username!r}; every Access Point was told"
    count = asyncio.run(_in_session_db(home, username))
    return (
        f"ended {count} session(s) of {username!r} in the session database (no Policy "
        "service answered: cached access decisions expire within the decision TTL)"
    )
