"""Fixtures for the cluster tests.

Without HAProxy installed the tests that need it are skipped, unless
``GATEHOUSE_REQUIRE_ALL=1`` (CI), where that is a failure.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.support import find_haproxy
from tests.support.postgres import missing


@pytest.fixture
def haproxy_bin() -> str:
    binary = find_haproxy()
    if binary is None:
        missing("HAProxy is not installed (apt-get install haproxy)")
    assert binary is not None
    return binary


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: Unix socket paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="gh-lb-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
