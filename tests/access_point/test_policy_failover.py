"""An Access Point with two Policy services, preferred one first: the preferred one killed
with SIGKILL costs no request (decisions move to the other within the request), the AP's
health details (on its status listener) say which one it uses, and once the killed one is
back and has passed ``rise`` probes in a row, decisions go to it again (fail-back). Real
processes on loopback."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.support.ap_status import ap_status
from tests.support.gateway import add_user, start_gateway
from tests.support.processes import Service, free_port, write_config

PASSWORD = "correct horse battery staple"


def health(ap: Service) -> dict[str, Any]:
    """The AP's health details, from its status listener."""
    return ap_status(ap)


def eventually(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.02)


def test_decisions_fail_over_to_the_next_policy_service_and_back(tmp_path: Path) -> None:
    gw = start_gateway(
        tmp_path,
        {"resources": {"demo": "authenticated"}},
        [{"id": "demo"}],
        # No decision cache: every request asks a Policy service.
        ap_settings={
            "decision_cache_entries": 0,
            "failover": {"probe_interval": "50ms", "rise": 3},
        },
    )
    second: Service | None = None
    try:
        add_user(gw.home, "alice", PASSWORD)
        # A second Policy service on the same databases, second in the AP's order.
        policy_doc: dict[str, Any] = yaml.safe_load((tmp_path / "policy.yaml").read_text())
        port = free_port()
        policy_doc["policy"]["listen"] = f"127.0.0.1:{port}"
        config = write_config(tmp_path / "policy2.yaml", policy_doc)
        second = Service(
            ["policy", "--config", str(config), "--home", str(gw.home)],
            tmp_path / "policy2.log",
            "127.0.0.1",
            port,
        ).wait_ready(30)
        ap_doc: dict[str, Any] = yaml.safe_load(gw.ap_configs[0].read_text())
        first_url = ap_doc["access_point"]["policy_services"][0]
        ap_doc["access_point"]["policy_services"] = [first_url, second.url]
        write_config(gw.ap_configs[0], ap_doc)
        gw.ap.signal(signal.SIGHUP)
        eventually(lambda: len(health(gw.ap)["policy"]["endpoints"]) == 2, "reloaded")
        assert health(gw.ap)["policy"]["using"] == first_url

        browser = gw.browser()
        assert browser.login("alice", PASSWORD, rd="/demo/").status == 303
        assert browser.get("/demo/").status == 200

        os.killpg(gw.policy.pid, signal.SIGKILL)
        gw.policy.proc.wait(10)
        # Every request is answered: the first one after the kill moves to the second
        # Policy service within itself, the next ones go there directly.
        statuses = [browser.get("/demo/").status for _ in range(50)]
        assert statuses == [200] * 50
        routing = health(gw.ap)["policy"]
        assert routing["using"] == second.url
        assert routing["endpoints"][0]["url"] == first_url
        assert routing["endpoints"][0]["up"] is False
        assert time.time() - 30 < routing["endpoints"][0]["since"] <= time.time()  # when
        assert routing["counters"]["down"] == 1  # counted in the worker's metrics

        # The preferred one back: decisions return to it after `rise` passed probes.
        gw.policy.stop()
        gw.policy = Service(gw.policy.args, tmp_path / "policy1b.log", "127.0.0.1", gw.policy.port)
        gw.policy.wait_ready(30)
        eventually(lambda: health(gw.ap)["policy"]["using"] == first_url, "fail-back")
        assert browser.get("/demo/").status == 200
        # The AP logs each transition once.
        log = gw.ap.output()
        assert f"policy endpoint {first_url} is down" in log
        assert f"policy endpoint {first_url} is up again after 3 passed probes" in log
    finally:
        if second is not None:
            second.stop()
        gw.stop()
