"""A configuration that would take running services down is refused unless the operator says
so (``--allow-removal``): the rules in-process, then ``gatehouse config`` against a real
Administration service with registered services."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gatehouse.administration.guard import Registered, check_removals
from tests.administration.test_api import Admin, admin, join, single_node
from tests.administration.test_config_cli import CLI, cli, config_file

FIXTURES = (admin, cli)

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
OLD = single_node()
REGISTERED = {
    "ap1": Registered("ap1", "access_point", NOW - timedelta(seconds=3)),
    "ps1": Registered("ps1", "policy", NOW - timedelta(minutes=5)),
}


def without_resources(config: dict[str, Any]) -> dict[str, Any]:
    return {**config, "resources": [], "resource_rules": {}}


# --- the rules ------------------------------------------------------------------------------


def test_an_empty_configuration_is_refused_even_when_everything_is_allowed() -> None:
    removals = check_removals(OLD, {}, REGISTERED, {"ap1", "ps1", "auth1"}, NOW)
    assert [path for path, _ in removals.problems] == ["top level"]
    assert "the configuration is empty" in removals.problems[0][1]


def test_removing_registered_services_names_each_with_its_role_and_last_contact() -> None:
    removals = check_removals(OLD, {"resources": []}, REGISTERED, (), NOW)
    assert removals.services == ("ap1", "ps1")  # auth1 never registered: not guarded
    assert removals.problems == (
        (
            "services",
            "removes registered services ap1 (access point, last seen 3s ago), ps1 (policy "
            "service, last seen 5m ago): removed services stop following the configuration "
            "and report unhealthy; to remove on purpose, add --allow-removal ap1 ps1",
        ),
    )


def test_access_points_left_without_resources_are_refused() -> None:
    removals = check_removals(OLD, without_resources(OLD), REGISTERED, (), NOW)
    assert removals.problems == (
        (
            "resources",
            "leaves access point ap1 with no resources (removes demo, demo-public): every "
            "request to it would get 404; to remove on purpose, add "
            "--allow-removal demo demo-public",
        ),
    )


def test_named_removals_are_allowed_and_reported() -> None:
    allowed = check_removals(OLD, without_resources(OLD), REGISTERED, ("demo", "demo-public"), NOW)
    assert allowed.problems == ()
    assert allowed.removed == ("demo", "demo-public")
    partly = check_removals(OLD, {"resources": []}, REGISTERED, ("ap1",), NOW)
    assert "ps1 (policy service" in partly.problems[0][1]
    assert "ap1 (" not in partly.problems[0][1]


@pytest.mark.parametrize(
    "old",
    [None, {"services": OLD["services"]}],  # nothing published / the AP had no resources
)
def test_what_was_not_there_cannot_be_removed(old: dict[str, Any] | None) -> None:
    assert check_removals(old, without_resources(OLD), REGISTERED, (), NOW).problems == ()


def test_ordinary_changes_pass() -> None:
    changed = single_node("http://127.0.0.1:9001")
    changed["resources"] = changed["resources"][:1]  # one resource of two goes: fine
    changed["resource_rules"] = {"demo": "authenticated"}
    removals = check_removals(OLD, changed, REGISTERED, (), NOW)
    assert (removals.problems, removals.removed) == ((), ())


# --- gatehouse config against a real Administration service ---------------------------------


def published_and_registered(cli: CLI, tmp_path: Path) -> None:
    """Version 1 is the single node; its three services have registered."""
    cli.ok("config", "apply", config_file(tmp_path, single_node()))
    cli.ok("config", "publish", "--wait", "0")
    for sid, role in (("ap1", "access_point"), ("ps1", "policy"), ("auth1", "authentication")):
        join(cli.admin, sid, role)


def audit_lines(admin: Admin) -> list[str]:
    return [entry["what"] for entry in admin.ok("GET", "/api/v1/audit")]


def test_apply_refuses_an_empty_file_and_keeps_the_draft(cli: CLI, tmp_path: Path) -> None:
    published_and_registered(cli, tmp_path)
    empty = tmp_path / "mine.yaml"
    empty.write_text("# exported nothing\n")
    code, out, err = cli("config", "apply", str(empty), "--allow-removal", "ap1", "ps1", "auth1")
    assert (code, out) == (2, "")
    assert err == (
        f"gatehouse: {empty}: top level: the configuration is empty: it would remove every "
        "service and resource; nothing was saved (did 'gatehouse config export > FILE' fail?)\n"
    )
    assert cli.ok("config", "diff") == "no changes\n"


def test_apply_refuses_a_file_that_removes_running_services(cli: CLI, tmp_path: Path) -> None:
    published_and_registered(cli, tmp_path)
    path = tmp_path / "mine.yaml"
    path.write_text("resources: []\n")
    code, out, err = cli("config", "apply", str(path))
    assert (code, out) == (2, "")
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"gatehouse: {path}: services: removes registered services ap1 (")
    assert lines[0].endswith("to remove on purpose, add --allow-removal ap1 ps1 auth1")
    assert cli.ok("config", "diff") == "no changes\n"
    assert not any("removal allowed" in line for line in audit_lines(cli.admin))


def test_allowed_removals_are_saved_published_and_audited(cli: CLI, tmp_path: Path) -> None:
    published_and_registered(cli, tmp_path)
    bare = without_resources(single_node())
    file = config_file(tmp_path, bare)
    refused = cli.fails("config", "apply", file)
    assert f"{file}: resources: leaves access point ap1 with no resources" in refused
    out = cli.ok("config", "apply", file, "--allow-removal", "demo", "demo-public")
    assert out.startswith("draft saved from ")
    code, out, err = cli("config", "publish", "--wait", "0")
    assert (code, out, err) == (0, "published version 2\n", "")
    audit = audit_lines(cli.admin)
    assert audit[0] == "published version 2 (removal allowed: demo, demo-public)"
    assert audit[1] == "saved the draft (removal allowed: demo, demo-public)"


def test_publish_checks_again_against_what_registered_since(cli: CLI, tmp_path: Path) -> None:
    """A draft saved while a service had not joined yet cannot remove it once it has."""
    cli.ok("config", "apply", config_file(tmp_path, single_node()))
    cli.ok("config", "publish", "--wait", "0")  # version 1: nothing registered
    reduced = single_node()
    reduced["services"] = [s for s in reduced["services"] if s["id"] != "ap1"]
    reduced["access_points"] = []
    cli.ok("config", "apply", config_file(tmp_path, reduced))  # ap1 has not joined: allowed
    join(cli.admin, "ap1", "access_point")
    code, out, err = cli("config", "publish", "--wait", "0")
    assert (code, out) == (2, "")
    assert err.startswith("gatehouse: services: removes registered service ap1 (access point")
    assert [v["version"] for v in cli.admin.ok("GET", "/api/v1/versions")] == [1]


def test_rollback_that_would_remove_a_service_needs_allowing(cli: CLI, tmp_path: Path) -> None:
    published_and_registered(cli, tmp_path)
    grown = single_node()
    grown["services"].append(
        {"id": "ap2", "role": "access_point", "endpoint": "http://127.0.0.1:8090", "node": "b"}
    )
    grown["access_points"].append({"id": "ap2", "policy_services": ["ps1"]})
    cli.ok("config", "apply", config_file(tmp_path, grown))
    cli.ok("config", "publish", "--wait", "0")  # version 2
    join(cli.admin, "ap2", "access_point")
    refused = cli.fails("config", "rollback", "1", "--wait", "0")
    assert refused.startswith("gatehouse: services: removes registered service ap2 (access ")
    code, out, err = cli("config", "rollback", "1", "--wait", "0", "--allow-removal", "ap2")
    assert (code, err) == (0, "")
    assert out == "published version 3: the configuration of version 1\n"
    assert audit_lines(cli.admin)[0] == (
        "published version 3: rollback to version 1 (removal allowed: ap2)"
    )
