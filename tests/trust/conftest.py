"""An internal CA and credentials directories made at test time."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from gatehouse.trust.ca import CertificateAuthority
from gatehouse.trust.identity import Identity
from gatehouse.trust.tls import Credentials, write_credentials

MakeCredentials = Callable[..., Credentials]


def on_uvloop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on a fresh uvloop, bounded in time (a hung one fails)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        async def bounded() -> None:
            async with asyncio.timeout(120):
                await test(*args, **kwargs)

        uvloop.run(bounded())

    return run


@pytest.fixture(scope="session")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create()


@pytest.fixture
def make_credentials(tmp_path: Path, ca: CertificateAuthority) -> MakeCredentials:
    """``make_credentials(role, id, ca=...)``: a credentials directory for that identity."""

    def make(
        role: str, service_id: str, authority: CertificateAuthority | None = None
    ) -> Credentials:
        authority = authority or ca
        directory = tmp_path / f"{role}-{service_id}-{id(authority)}"
        key, cert = authority.issue_key_pair(Identity(role, service_id))
        write_credentials(directory, authority.certificate_pem, cert, key)
        return Credentials(directory)

    return make
