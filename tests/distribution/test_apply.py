"""A Distribution service following the Administration service applies each version's
channels and delivery settings live: the next message goes over the new channels, the
credential files are read again, and a version it refuses leaves the running one in place."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gatehouse.config.loader import validate
from gatehouse.distribution.calls import SubmitRequest
from gatehouse.distribution.config import DistributionConfig
from gatehouse.distribution.service import Service
from gatehouse.errors import ConfigError
from tests.distribution.support import MailSink, new_key, smtp_channel


def view(*channels: dict[str, Any], **delivery: Any) -> dict[str, Any]:
    return {
        "distribution": {
            "id": "dist1",
            "channels": list(channels),
            "delivery": {"poll_interval": 0.2, **delivery},
        }
    }


def request(text: str) -> SubmitRequest:
    return SubmitRequest(
        key=new_key(),
        purpose="code",
        email="jane@example.org",
        phone=None,
        subject="Your code",
        text=text,
        ttl=60,
    )


def test_channels_and_delivery_apply_without_a_restart(tmp_path: Path) -> None:
    first, second = MailSink().start(), MailSink().start()
    try:
        settings = validate(DistributionConfig, view(smtp_channel(first.port)), "test")

        async def go() -> None:
            service = Service(
                settings.distribution,
                f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}",
                tmp_path / "outbox.key",
                tmp_path,
            )
            await service.start()
            try:
                await asyncio.wait_for(service.ready.wait(), 10)
                await service.submit(request("Code 100001"))
                await asyncio.to_thread(first.wait_for, 1)

                service.apply(2, view(smtp_channel(second.port, name="other"), workers=2))
                assert [s.name for s in service.deliverer.senders] == ["other"]
                assert service.deliverer.settings.workers == 2
                await service.submit(request("Code 100002"))
                (mail,) = await asyncio.to_thread(second.wait_for, 1)
                assert mail.text.strip() == "Code 100002"

                # A channel whose password file is missing is left out, and said why.
                broken = smtp_channel(
                    first.port,
                    name="broken",
                    security="starttls",
                    username="u",
                    password_file="missing-password",
                )
                service.apply(3, view(broken, smtp_channel(second.port, name="other")))
                assert [s.name for s in service.deliverer.senders] == ["other"]
                assert "missing-password" in service.channel_problems["broken"]

                with pytest.raises(ConfigError, match="channels"):
                    service.apply(4, view({"type": "smtp", "name": "x"}))
                assert [s.name for s in service.deliverer.senders] == ["other"]
            finally:
                await service.stop()

        asyncio.run(go())
        assert len(first.mails()) == 1
    finally:
        first.stop()
        second.stop()
