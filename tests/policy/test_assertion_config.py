"""The identity assertion settings of the Policy configuration: errors name the field path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gatehouse.config.loader import load_file, validate
from gatehouse.config.policy import PolicyConfig
from gatehouse.errors import ConfigError
from tests.support.processes import write_config


def test_defaults_ask_for_no_assertion() -> None:
    config = PolicyConfig()
    assert config.identity_assertion == []
    assert config.identity_headers.assertion == "Gatehouse-Assertion"
    assert config.policy.assertion_ttl == 60.0


def test_an_assertion_lives_at_most_a_minute(tmp_path: Path) -> None:
    path = write_config(tmp_path / "policy.yaml", {"policy": {"assertion_ttl": 61}})
    with pytest.raises(ConfigError, match=r"policy\.yaml: policy\.assertion_ttl: at most 60s"):
        load_file(PolicyConfig, path)
    assert validate(PolicyConfig, {"policy": {"assertion_ttl": "1m"}}).policy.assertion_ttl == 60
    with pytest.raises(ConfigError, match=r"policy\.assertion_ttl"):
        validate(PolicyConfig, {"policy": {"assertion_ttl": 0}})


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {"resources": {"wiki": None}, "identity_assertion": ["wiki", "blog"]},
            r"identity_assertion\[1\]: no resource 'blog'",
        ),
        (
            {
                "resources": {"wiki": None},
                "identity_assertion": ["wiki"],
                "identity_headers": {"assertion": None},
            },
            r"identity_headers\.assertion: null, but identity_assertion lists resources",
        ),
        (
            {"identity_headers": {"assertion": "remote-user"}},
            r"identity_headers\.assertion: same header as 'user'",
        ),
        ({"identity_assertion": ["Not An Id"]}, r"identity_assertion\[0\]: .*not a resource id"),
    ],
)
def test_identity_assertion_errors(document: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(PolicyConfig, document)
