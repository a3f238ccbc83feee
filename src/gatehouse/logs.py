"""Logging set-up shared by every Gatehouse process."""

from __future__ import annotations

import logging
import os
import sys


def setup_logging(level: str | None = None) -> None:
    """Plain one-line records on stderr; ``GATEHOUSE_LOG_LEVEL`` sets the level."""
    level = level or os.environ.get("GATEHOUSE_LOG_LEVEL", "INFO")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
