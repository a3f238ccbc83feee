"""The Access Point's request path runs compiled (setup.py, src/gatehouse/compiled.py)."""

from __future__ import annotations

import importlib
import importlib.machinery
import os
from pathlib import Path

from gatehouse import compiled
from gatehouse.access_point.exchange import ProxyExchange
from tests.support.postgres import missing


def _require_compiled() -> None:
    if not compiled.is_compiled():
        missing(
            "the request path runs as plain Python: built with GATEHOUSE_PURE_PYTHON=1 or "
            "without mypyc; `make install` compiles it"
        )


def test_every_module_of_the_request_path_is_a_compiled_extension() -> None:
    _require_compiled()
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    for name in compiled.MODULES:
        module = importlib.import_module(name)
        assert module.__file__ is not None
        assert module.__file__.endswith(suffixes), name
    # A compiled class keeps its attributes in C fields: no per-instance dictionary (the
    # connections keep one for what asyncio.Protocol, their Python base, might add).
    assert ProxyExchange.__dictoffset__ == 0


def test_the_build_compiles_exactly_the_listed_sources() -> None:
    root = Path(__file__).resolve().parent.parent
    paths = compiled.source_paths()
    assert all((root / path).is_file() for path in paths), paths
    assert len(set(paths)) == len(compiled.MODULES)


def test_a_source_edited_after_the_build_is_reported_stale() -> None:
    _require_compiled()
    assert compiled.stale() == []  # conftest stops the run before this otherwise
    extension = Path(importlib.import_module(compiled.MODULES[0]).__file__ or "")
    source = extension.with_name(compiled.MODULES[0].rsplit(".", 1)[1] + ".py")
    before = source.stat()
    try:
        os.utime(source, (before.st_atime, extension.stat().st_mtime + 60))  # an edit
        assert compiled.stale() == [str(source)]
    finally:
        os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert compiled.stale() == []
