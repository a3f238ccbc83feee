"""The cluster's OAuth2 DB (``<database>_oauth2``): ``cluster up`` makes it next to the user DB
on the same PostgreSQL pair, migrated by the Authentication role (its owner); the CLI role may
read, revoke and prune but not add rows or tables; the Policy, Administration and
Distribution roles may not connect; the installation names it for the Authentication
services only."""

from __future__ import annotations

from pathlib import Path

from gatehouse.administration.model import InstallationConfig
from gatehouse.administration.views import view_for
from gatehouse.cluster import db_access
from gatehouse.cluster.bootstrap import cluster_installation
from gatehouse.cluster.db_access import (
    ADMIN_ROLE,
    AUTH_ROLE,
    CLI_ROLE,
    DIST_ROLE,
    POLICY_ROLE,
    oauth2_database,
    role_url,
)
from gatehouse.cluster.topology import load_topology
from gatehouse.config.loader import validate
from gatehouse.storage.postgres_ha.node import SUPERUSER
from tests.cluster.test_db_access import Secured, denied, run_sql, secured
from tests.support.cluster import EXAMPLE

__all__ = ["secured"]


def oauth2_url(secured: Secured, role: str) -> str:
    return role_url(secured.home, secured.local, role, oauth2_database(secured.local))


def test_the_oauth2_db_is_made_and_migrated_by_the_authentication_role(secured: Secured) -> None:
    name = oauth2_database(secured.local)
    assert name == "gatehouse_oauth2"
    primary = secured.databases.primary()
    rows = primary.sql(
        "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public'", name
    )
    owners = {row[0]: row[1] for row in rows}
    assert {"oauth2_codes", "oauth2_tokens", "oauth2_consents"} <= set(owners)
    assert owners["alembic_version"] == SUPERUSER
    assert {owner for table, owner in owners.items() if table != "alembic_version"} == {AUTH_ROLE}
    heads = run_sql(oauth2_url(secured, CLI_ROLE), "SELECT version_num FROM alembic_version")
    assert [str(row[0]).startswith("oauth2_") for row in heads] == [True]
    # The user DB holds no OAuth2 table.
    assert run_sql(secured.url(CLI_ROLE), "SELECT to_regclass('oauth2_codes') IS NULL") == [(True,)]
    assert any("OAuth2" in line for line in secured.said)

    def may_connect(role: str) -> bool:
        query = f"SELECT has_database_privilege('{role}', '{name}', 'CONNECT')"
        return primary.sql(query)[0][0] == "t"

    assert {role: may_connect(role) for role in db_access.ALL_ROLES} == {
        ADMIN_ROLE: False,
        AUTH_ROLE: True,
        POLICY_ROLE: False,
        CLI_ROLE: True,
        DIST_ROLE: False,
    }
    for role in (POLICY_ROLE, ADMIN_ROLE):
        message = denied(oauth2_url(secured, role), "SELECT 1")
        assert f'database "{name}"' in message

    cli = oauth2_url(secured, CLI_ROLE)
    assert run_sql(cli, "SELECT count(*) FROM oauth2_tokens") == [(0,)]
    run_sql(cli, "DELETE FROM oauth2_codes")  # prune
    run_sql(cli, "UPDATE oauth2_consents SET revoked_at = now()")
    denied(cli, "INSERT INTO oauth2_consents (username) VALUES ('x')")
    denied(cli, "CREATE TABLE cli_table (id int)")
    denied(cli, "DELETE FROM alembic_version")


def test_the_installation_gives_the_oauth2_db_to_the_authentication_services(
    tmp_path: Path,
) -> None:
    topology = load_topology(EXAMPLE)
    assert topology.databases.local is not None
    document = cluster_installation(topology, tmp_path)
    url = document["databases"]["oauth2_db"]
    assert url.startswith(f"postgresql+asyncpg://{AUTH_ROLE}@/gatehouse_oauth2?")
    config = validate(InstallationConfig, document)
    for service in config.services:
        view = view_for(config, service.id)
        if service.role == "authentication":
            assert view["authentication"]["oauth2_db"] == url
        else:
            assert "gatehouse_oauth2" not in str(view), service.id
