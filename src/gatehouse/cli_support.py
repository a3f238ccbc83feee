"""Argument types shared by the subcommands of ``gatehouse``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from gatehouse.config.access_point import parse_listen


def listen_arg(value: str) -> tuple[str, int]:
    try:
        return parse_listen(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {value!r}")
    return int(value)


def add_home(parser: argparse.ArgumentParser) -> None:
    """``--home DIR`` (or GATEHOUSE_HOME): the installation a command acts on."""
    parser.add_argument(
        "--home",
        type=Path,
        default=Path(os.environ.get("GATEHOUSE_HOME", "var")),
        metavar="DIR",
        help="installation directory (default: $GATEHOUSE_HOME or ./var)",
    )
