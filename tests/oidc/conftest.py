"""One running provider for the relying parties of a test module: ``gatehouse up`` (a single
node) with the clients registered by ``gatehouse oauth clients add``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.oidc.support import Provider, start_node_provider


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    started = start_node_provider(tmp_path_factory.mktemp("oidc"))
    try:
        yield started
    finally:
        started.stop()
