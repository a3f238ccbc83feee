"""Errors shared by every Gatehouse service.

GatehouseError
 └── ConfigError        a configuration file or value is invalid; carries the field path
"""

from __future__ import annotations


class GatehouseError(Exception):
    """Base of every error Gatehouse raises on purpose."""


class ConfigError(GatehouseError):
    """A configuration problem, reported as ``path: message`` lines."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "") -> None:
        self.problems = problems
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        where = f"{self.source}: " if self.source else ""
        lines = [
            f"{where}{path}: {msg}" if path else f"{where}{msg}" for path, msg in self.problems
        ]
        return "\n".join(lines)
