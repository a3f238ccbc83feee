"""The build: the Access Point's request path compiled to C with mypyc.

Everything is declared in pyproject.toml; this file only adds the compiled modules: those
every proxied request runs through (docs/architecture.md, "Compiled modules").
mypyc turns their type-checked Python into C extension modules (as mypy and black ship
themselves); the same ``.py`` files are the source of truth and run as plain Python wherever
the compiler is not wanted or not there:

- ``GATEHOUSE_PURE_PYTHON=1`` builds without compiling;
- without mypyc importable in the build environment (pip's isolated build, which does not
  install it), the build is plain Python as well.

``make install`` installs the dependencies first, then builds again without build isolation,
so that mypyc (from the test extra) type-checks these modules against the real libraries,
with the same options as ``make lint``.
"""

from __future__ import annotations

import os
import runpy
import sys
from typing import Any

from setuptools import setup

#: The modules to compile: src/gatehouse/compiled.py lists them (stdlib only, run here as a
#: file, since nothing is installed yet).
COMPILED = runpy.run_path("src/gatehouse/compiled.py")["source_paths"]()


def ext_modules() -> list[Any]:
    if os.environ.get("GATEHOUSE_PURE_PYTHON", "") not in ("", "0"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("setup.py: mypyc is not installed; building plain Python", file=sys.stderr)
        return []
    # The shared runtime becomes one module, gatehouse__mypyc, next to the package.
    return list(mypycify(["--strict", *COMPILED], opt_level="3", group_name="gatehouse"))


setup(ext_modules=ext_modules())
