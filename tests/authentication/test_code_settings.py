"""The ``distribution`` and ``codes`` settings: checked, and applied live by a running
service (a new Distribution list gets a new failover client; the same list keeps it)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gatehouse.authentication.app import Service
from gatehouse.authentication.config import AuthenticationConfig, AuthenticationSettings
from gatehouse.config.loader import validate
from gatehouse.errors import ConfigError


def test_defaults() -> None:
    settings = AuthenticationSettings()
    assert settings.distribution == []
    codes = settings.codes
    assert (codes.length, codes.lifetime, codes.max_attempts) == (6, 300.0, 5)
    assert (codes.resend_interval, codes.resend_max, codes.resend_window) == (30.0, 5, 900.0)


@pytest.mark.parametrize(
    ("section", "path"),
    [
        ({"distribution": ["ftp://dist1:8301"]}, "authentication.distribution[0]"),
        ({"distribution": "https://dist1:8301"}, "authentication.distribution"),
        ({"codes": {"lifetime": "11m"}}, "authentication.codes.lifetime"),
        ({"codes": {"length": 4}}, "authentication.codes.length"),
        ({"codes": {"max_attempts": 0}}, "authentication.codes.max_attempts"),
        ({"codes": {"resend": 1}}, "authentication.codes.resend"),
    ],
)
def test_bad_values_name_the_field(section: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(AuthenticationConfig, {"authentication": section}, "auth.yaml")
    assert path in str(info.value)


def test_codes_and_distribution_apply_live(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'g.db'}"

    async def go() -> None:
        settings = AuthenticationSettings(distribution=["http://127.0.0.1:9"])
        service = Service(
            settings,
            url,
            oath_db=f"sqlite+aiosqlite:///{tmp_path / 'oath.db'}",
            oath_keyring=tmp_path / "oath-seeds.key",
        )
        assert service.codes is not None
        first = service.distribution
        assert first is not None
        assert service.codes.distribution is first
        service.apply(2, {"authentication": {"distribution": ["http://127.0.0.1:9"]}})
        assert service.distribution is first  # the same list: the same client
        view = {"distribution": ["http://127.0.0.1:10"], "codes": {"length": 8}}
        service.apply(3, {"authentication": view})
        assert service.distribution is not first
        assert service.codes.distribution is service.distribution
        assert service.codes.settings.length == 8
        service.apply(4, {"authentication": {"distribution": []}})
        assert service.codes.distribution is None
        await service.stop()

    asyncio.run(go())
