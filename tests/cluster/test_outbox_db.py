"""The cluster's outbox DB: ``cluster up`` makes it next to the user DB on the same PostgreSQL
pair, migrated by the Distribution role, which may connect to no other database; the other
service roles may not connect to it, the CLI role reads the outbox and retries a message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gatehouse.administration.model import InstallationConfig
from gatehouse.administration.views import view_for
from gatehouse.cluster.db_access import (
    ADMIN_ROLE,
    ALL_ROLES,
    AUTH_ROLE,
    CLI_ROLE,
    DIST_ROLE,
    POLICY_ROLE,
    oath_database,
    outbox_database,
    role_url,
)
from gatehouse.cluster.home import write_home
from gatehouse.cluster.runner import Cluster
from gatehouse.cluster.topology import load_topology
from gatehouse.config.loader import validate
from gatehouse.storage.home import database_urls
from gatehouse.storage.postgres_ha.node import SUPERUSER
from tests.cluster.test_db_access import Secured, denied, run_sql, secured
from tests.support.cluster import EXAMPLE

__all__ = ["secured"]

CONNECT_CHECK = (
    "import asyncio, sys\n"
    "from gatehouse.storage.engine import Database\n"
    "from sqlalchemy import text\n"
    "async def go():\n"
    "    db = Database(sys.argv[1])\n"
    "    async with db.connect() as conn:\n"
    "        await conn.execute(text('SELECT 1'))\n"
    "asyncio.run(go())\n"
)


def outbox_url(secured: Secured, role: str) -> str:
    return role_url(secured.home, secured.local, role, outbox_database(secured.local))


def refused(url: str) -> str:
    """The error of a real connection the server refuses (its stderr)."""
    done = subprocess.run(
        [sys.executable, "-c", CONNECT_CHECK, url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0, url
    return done.stderr


def test_the_outbox_db_is_made_and_migrated_by_the_distribution_role(secured: Secured) -> None:
    name = outbox_database(secured.local)
    assert name == "gatehouse_outbox"
    rows = secured.databases.primary().sql(
        "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public'", name
    )
    owners = {row[0]: row[1] for row in rows}
    assert owners == {"outbox_messages": DIST_ROLE, "alembic_version": SUPERUSER}
    heads = run_sql(outbox_url(secured, DIST_ROLE), "SELECT version_num FROM alembic_version")
    assert [str(row[0]).startswith("outbox_") for row in heads] == [True]
    assert any("outbox" in line for line in secured.said)


def test_only_the_distribution_and_cli_roles_connect_to_the_outbox_db(secured: Secured) -> None:
    name = outbox_database(secured.local)
    primary = secured.databases.primary()

    def may_connect(role: str, database: str) -> bool:
        query = f"SELECT has_database_privilege('{role}', '{database}', 'CONNECT')"
        return primary.sql(query)[0][0] == "t"

    assert {role: may_connect(role, name) for role in ALL_ROLES} == {
        ADMIN_ROLE: False,
        AUTH_ROLE: False,
        POLICY_ROLE: False,
        CLI_ROLE: True,
        DIST_ROLE: True,
    }
    # ... and the Distribution role to no other database of the installation.
    others = [secured.local.database, oath_database(secured.local)]
    assert {db: may_connect(DIST_ROLE, db) for db in others} == dict.fromkeys(others, False)
    for role in (AUTH_ROLE, POLICY_ROLE):
        assert f'permission denied for database "{name}"' in refused(outbox_url(secured, role))
    main = role_url(secured.home, secured.local, DIST_ROLE)
    assert f'permission denied for database "{secured.local.database}"' in refused(main)
    oath = role_url(secured.home, secured.local, DIST_ROLE, oath_database(secured.local))
    assert "permission denied for database" in refused(oath)


def test_the_cli_role_reads_and_retries_but_adds_and_deletes_nothing(secured: Secured) -> None:
    cli, owner = outbox_url(secured, CLI_ROLE), outbox_url(secured, DIST_ROLE)
    assert run_sql(cli, "SELECT count(*) FROM outbox_messages") == [(0,)]
    run_sql(cli, "UPDATE outbox_messages SET rounds = 0 WHERE false")
    denied(cli, "DELETE FROM outbox_messages")
    denied(cli, "CREATE TABLE cli_table (id int)")
    denied(cli, "DELETE FROM alembic_version")
    assert run_sql(owner, "SELECT count(*) FROM outbox_messages") == [(0,)]


def test_the_services_and_the_cli_are_handed_the_outbox_db_of_their_role(tmp_path: Path) -> None:
    home = tmp_path.absolute()
    cluster = Cluster(home, load_topology(EXAMPLE))
    local = cluster.topology.databases.local
    assert local is not None
    config = validate(InstallationConfig, cluster.installation_document(), "test")
    for dist in ("dist1", "dist2"):
        view = view_for(config, dist)["distribution"]
        assert view["outbox_db"] == role_url(home, local, DIST_ROLE, outbox_database(local))
    for auth in ("auth1", "auth2"):
        assert "outbox" not in str(view_for(config, auth))
    write_home(home, cluster.topology, stats_socket=home / "s.sock", source="test")
    assert database_urls(home).outbox_db == role_url(home, local, CLI_ROLE, outbox_database(local))
