"""The Access Point relays the two OAuth discovery paths to the portal (the Policy service),
exactly those paths, as it relays its reserved prefix; with ``relay_discovery: false`` they
are ordinary paths of the resources. Real processes: AP, Policy, Authentication, backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gatehouse.access_point.runtime import WELL_KNOWN, OriginRegistry, compile_config
from gatehouse.config.access_point import AccessPointConfig
from tests.support.gateway import Gateway, start_gateway

DISCOVERY = "/.well-known/openid-configuration"
METADATA = "/.well-known/oauth-authorization-server"


def _gateway(tmp: Path, relay: bool) -> Gateway:
    return start_gateway(
        tmp,
        {"resources": {"site": "public"}},
        [{"id": "site", "path_prefix": "/"}],
        ap_settings={"relay_discovery": relay},
    )


@pytest.fixture(scope="module")
def relaying(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = _gateway(tmp_path_factory.mktemp("relay-on"), True)
    try:
        yield gw
    finally:
        gw.stop()


def test_the_discovery_paths_reach_the_portal(relaying: Gateway) -> None:
    browser = relaying.browser()
    for path in (DISCOVERY, METADATA):
        answer = browser.get(path)
        assert answer.status == 200, answer.body[:200]
        meta = answer.json()
        assert "path" not in meta  # not the demo backend's echo
        assert meta["issuer"] == "http://127.0.0.1:8080"
        assert meta["token_endpoint"].endswith("/_gatehouse/oauth2/token")
    # Only those exact paths: anything else under /.well-known/ is the resource's.
    for path in (DISCOVERY + "/", DISCOVERY + "x", "/.well-known/security.txt"):
        answer = browser.get(path)
        assert answer.status == 200
        assert answer.json()["path"] == path  # the demo backend's echo


def test_switched_off_they_are_the_resource_paths(tmp_path: Path) -> None:
    gw = _gateway(tmp_path, False)
    try:
        answer = gw.browser().get(DISCOVERY)
        assert answer.status == 200
        assert answer.json()["path"] == DISCOVERY
    finally:
        gw.stop()


def test_the_runtime_relays_them_only_with_policy_services() -> None:
    registry = OriginRegistry()
    settings = {"policy_services": ["http://127.0.0.1:1"]}
    on = compile_config(AccessPointConfig.model_validate({"access_point": settings}), registry, 1)
    assert on.well_known == WELL_KNOWN == {DISCOVERY, METADATA}
    off = compile_config(
        AccessPointConfig.model_validate({"access_point": {**settings, "relay_discovery": False}}),
        registry,
        2,
    )
    assert off.well_known == frozenset()
    alone = compile_config(AccessPointConfig.model_validate({}), registry, 3)
    assert alone.well_known == frozenset()
