"""One running provider (a single node's services on loopback) for the relying parties."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.oidc.support import Provider, start_provider


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    started = start_provider(tmp_path_factory.mktemp("oidc"))
    try:
        yield started
    finally:
        started.stop()
