"""The modules the build compiles with mypyc, and whether this process runs them compiled.

Every proxied request runs through these modules, so they are compiled to C extension
modules when the package is built (``setup.py``; docs/architecture.md, "Compiled modules").
Their ``.py`` files stay the source: a build without mypyc, or with
``GATEHOUSE_PURE_PYTHON=1``, runs them as plain Python, with the same behaviour.

The standard library only: ``setup.py`` reads :data:`MODULES` from this file before the
package or its dependencies are installed.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
from pathlib import Path

#: The Access Point's request path and its counters, each after the modules it imports.
MODULES = (
    "gatehouse.metrics.timing",
    "gatehouse.access_point.request",
    "gatehouse.access_point.routing",
    "gatehouse.access_point.headers",
    "gatehouse.access_point.decisions",
    "gatehouse.access_point.authorize",
    "gatehouse.access_point.upstream",
    "gatehouse.access_point.exchange",
    "gatehouse.access_point.connection",
    "gatehouse.metrics.access_point",
)


def source_paths(root: str = "src") -> list[str]:
    """The modules' source files, relative to the repository (what setup.py compiles)."""
    return [f"{root}/{name.replace('.', '/')}.py" for name in MODULES]


def _extension(name: str) -> Path | None:
    """Where ``name`` would be imported from if it is a compiled extension, else None."""
    spec = importlib.util.find_spec(name)
    if spec is None or not isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
        return None
    return Path(spec.loader.path)


@functools.cache
def is_compiled() -> bool:
    """Whether every module of :data:`MODULES` is imported from a compiled extension."""
    return all(_extension(name) is not None for name in MODULES)


def stale() -> list[str]:
    """The compiled modules whose source was changed after they were built: the process
    would run the old code. ``make install`` (or ``make test``) builds them again."""
    found = []
    for name in MODULES:
        extension = _extension(name)
        if extension is None:
            continue
        source = extension.parent / (name.rsplit(".", 1)[1] + ".py")
        if source.exists() and source.stat().st_mtime > extension.stat().st_mtime:
            found.append(str(source))
    return found
