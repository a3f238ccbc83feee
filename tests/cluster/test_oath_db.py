"""The cluster's OATH DB: ``cluster up`` makes it next to the user DB on the same PostgreSQL
pair, migrated by the Authentication role; only that role and the CLI's may connect (not
the Policy or Administration roles), and ``gatehouse tokens --home`` works as the CLI role."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from gatehouse.administration.model import InstallationConfig
from gatehouse.administration.views import view_for
from gatehouse.cluster import db_access
from gatehouse.cluster.db_access import (
    ADMIN_ROLE,
    AUTH_ROLE,
    CLI_ROLE,
    POLICY_ROLE,
    oath_database,
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
from tests.support.processes import GATEHOUSE

__all__ = ["secured"]


def oath_url(secured: Secured, role: str) -> str:
    return role_url(secured.home, secured.local, role, oath_database(secured.local))


def test_the_oath_db_is_made_and_migrated_by_the_authentication_role(secured: Secured) -> None:
    name = oath_database(secured.local)
    assert name == "gatehouse_oath"
    primary = secured.databases.primary()
    rows = primary.sql(
        "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public'", name
    )
    owners = {row[0]: row[1] for row in rows}
    assert owners["oath_tokens"] == AUTH_ROLE
    assert owners["alembic_version"] == SUPERUSER
    assert {owner for table, owner in owners.items() if table != "alembic_version"} == {AUTH_ROLE}
    heads = run_sql(oath_url(secured, CLI_ROLE), "SELECT version_num FROM alembic_version")
    assert [str(row[0]).startswith("oath_") for row in heads] == [True]
    # The user DB holds no OATH table, the OATH DB no user table.
    assert run_sql(secured.url(CLI_ROLE), "SELECT to_regclass('oath_tokens') IS NULL") == [(True,)]
    assert "users" not in owners
    assert any("OATH" in line for line in secured.said)


def test_only_the_authentication_and_cli_roles_connect_to_the_oath_db(secured: Secured) -> None:
    name = oath_database(secured.local)
    primary = secured.databases.primary()

    def may_connect(role: str) -> bool:
        query = f"SELECT has_database_privilege('{role}', '{name}', 'CONNECT')"
        return primary.sql(query)[0][0] == "t"

    assert {role: may_connect(role) for role in db_access.SERVICE_ROLES} == {
        ADMIN_ROLE: False,
        AUTH_ROLE: True,
        POLICY_ROLE: False,
        CLI_ROLE: True,
    }
    # A real connection of the Policy role is refused by the server.
    check = (
        "import asyncio, sys\n"
        "from gatehouse.storage.engine import Database\n"
        "from sqlalchemy import text\n"
        "async def go():\n"
        "    db = Database(sys.argv[1])\n"
        "    async with db.connect() as conn:\n"
        "        await conn.execute(text('SELECT 1'))\n"
        "asyncio.run(go())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", check, oath_url(secured, POLICY_ROLE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert f'permission denied for database "{name}"' in done.stderr
    for role in (AUTH_ROLE, CLI_ROLE):
        assert run_sql(oath_url(secured, role), "SELECT count(*) FROM oath_tokens") == [(0,)]


def test_the_cli_role_writes_tokens_but_creates_nothing(secured: Secured) -> None:
    cli = oath_url(secured, CLI_ROLE)
    run_sql(
        cli,
        "INSERT INTO oath_tokens (serial, type, algorithm, digits, period, seed_key_id, "
        "seed_ciphertext, counter, last_step, drift, failures, state, description, created_at) "
        "VALUES ('T1', 'totp', 'sha1', 6, 30, 'k', '\\x00', 0, -1, 0, 0, 'active', '', now())",
    )
    assert run_sql(oath_url(secured, AUTH_ROLE), "SELECT serial FROM oath_tokens") == [("T1",)]
    run_sql(cli, "DELETE FROM oath_tokens")
    denied(cli, "CREATE TABLE cli_table (id int)")
    denied(cli, "DELETE FROM alembic_version")


def test_gatehouse_tokens_works_as_the_cli_role(secured: Secured, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    urls = {"user_db": secured.url(CLI_ROLE), "oath_db": oath_url(secured, CLI_ROLE)}
    (home / "databases.yaml").write_text(yaml.safe_dump(urls))

    def gatehouse(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*GATEHOUSE, *args, "--home", str(home)],
            input="a-long-enough-password-1\n",
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    assert gatehouse("users", "add", "tokenuser", "--password-stdin").returncode == 0
    added = gatehouse("tokens", "add", "tokenuser")
    assert added.returncode == 0, added.stderr
    serial = added.stdout.split("serial: ")[1].split()[0]
    listed = gatehouse("tokens", "list", "--user", "tokenuser")
    assert serial in listed.stdout
    rows = run_sql(
        oath_url(secured, AUTH_ROLE), f"SELECT owner FROM oath_tokens WHERE serial = '{serial}'"
    )
    assert rows == [("tokenuser",)]
    assert gatehouse("tokens", "delete", serial).returncode == 0
    assert gatehouse("users", "delete", "tokenuser").returncode == 0


def test_the_services_and_the_cli_are_handed_the_oath_db_of_their_role(tmp_path: Path) -> None:
    home = tmp_path.absolute()
    cluster = Cluster(home, load_topology(EXAMPLE))
    local = cluster.topology.databases.local
    assert local is not None
    config = validate(InstallationConfig, cluster.installation_document(), "test")
    assert config.databases is not None
    assert config.databases.oath_db == role_url(home, local, AUTH_ROLE, oath_database(local))
    for auth in ("auth1", "auth2"):
        view = view_for(config, auth)["authentication"]
        assert view["oath_db"] == role_url(home, local, AUTH_ROLE, oath_database(local))
    write_home(home, cluster.topology, stats_socket=home / "s.sock", source="test")
    assert database_urls(home).oath_db == role_url(home, local, CLI_ROLE, oath_database(local))
    assert str(db_access.ca_file(home)) in database_urls(home).oath_db
